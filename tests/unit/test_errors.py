from __future__ import annotations

import pytest

from switchboard import errors
from switchboard.errors import (
    PeerProtocolError,
    RealtimeProtocolError,
    SwitchboardError,
    TwilioProtocolError,
)


def test_every_public_error_belongs_to_the_one_tree() -> None:
    for name in errors.__all__:
        assert issubclass(getattr(errors, name), SwitchboardError)


def test_peer_errors_compare_by_kind_reason_and_message() -> None:
    a = TwilioProtocolError("invalid_json", "frame is not JSON")
    assert a == TwilioProtocolError("invalid_json", "frame is not JSON")
    assert a != RealtimeProtocolError("invalid_json", "frame is not JSON")
    assert a != TwilioProtocolError("invalid_json", "other")
    assert a != "invalid_json"
    assert len({a, TwilioProtocolError("invalid_json", "frame is not JSON")}) == 1
    assert repr(a) == "TwilioProtocolError('invalid_json', 'frame is not JSON')"
    assert str(a) == "frame is not JSON"
    with pytest.raises(PeerProtocolError) as info:
        raise a
    assert info.value.reason == "invalid_json"


def test_illegal_transition_names_the_state_and_the_event() -> None:
    error = errors.IllegalTransition("ringing", "answer")
    assert (error.state, error.event) == ("ringing", "answer")
    assert "'answer'" in str(error)
    assert "'ringing'" in str(error)
