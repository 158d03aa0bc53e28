"""The ingress's decisions about the Ray side: readiness, what the recorders are given."""

from __future__ import annotations

import inspect

import pytest

from actors.pool import CallPool
from actors.ray_recorder import RayCallRecorder, database_url_digest
from serve.control import SLOT_WAIT_S, pool_ready
from serve.deployment import url_for_recorder
from switchboard.errors import ConfigError
from switchboard.settings import load_settings


def test_the_pool_is_ready_once_it_has_shown_it_can_run_calls() -> None:
    booting = {"ready": 0, "live": 0, "starting": 2, "recycled": 0, "size": 2}
    assert not pool_ready(booting)  # no actor has started yet: maybe none can
    assert pool_ready(booting | {"ready": 1})
    assert pool_ready(booting | {"live": 40})  # a burst drained it, or every slot is taken
    assert pool_ready(booting | {"starting": 0, "size": 0})  # WARM_CALL_ACTORS=0: on demand


@pytest.mark.parametrize(
    "url",
    [
        "postgresql+psycopg://sb:s3cret@db:5432/calls",
        "postgresql+psycopg://sb@db/calls?password=s3cret",  # libpq takes it there too
    ],
)
def test_a_database_secret_does_not_travel_through_ray(
    url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    given = url_for_recorder(url)
    assert "s3cret" not in given and given == database_url_digest(url)
    # The recorder's process reads its own DATABASE_URL: the same one, or it refuses.
    monkeypatch.setenv("DATABASE_URL", url.replace("s3cret", "other"))  # a password apart
    assert database_url_digest(load_settings(None).database_url) == given
    monkeypatch.setenv("DATABASE_URL", url.replace("/calls", "/elsewhere"))
    with pytest.raises(ConfigError, match="DATABASE_URL differs"):
        RayCallRecorder.__ray_actor_class__(given)  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    "url", ["sqlite:////var/lib/switchboard/calls.db", "postgresql+psycopg://sb@db/calls"]
)
def test_a_database_url_without_a_secret_is_given_as_it_is(url: str) -> None:
    assert url_for_recorder(url) == url


@pytest.mark.parametrize("url", ["not a url", "postgresql://sb:s3cret@db:54x2/calls"])
def test_a_malformed_database_url_is_a_config_error_before_any_recorder_starts(url: str) -> None:
    # Not SQLAlchemy's own error: `switchboard run` says what is wrong in one line.
    with pytest.raises(ConfigError, match="database URL is malformed") as info:
        url_for_recorder(url)
    assert "s3cret" not in str(info.value)


def test_the_wait_for_a_free_call_slot_named_to_clients_is_the_pools() -> None:
    # RayCallPool makes its CallPool with the default create_timeout_s.
    assert inspect.signature(CallPool).parameters["create_timeout_s"].default == SLOT_WAIT_S
