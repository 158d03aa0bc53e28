from __future__ import annotations

import asyncio
import os
import socket
import stat
from io import StringIO
from pathlib import Path
from typing import Any

import pytest

from serve.call_command import describe
from serve.runner import dotenv_settings, ensure_api_token
from switchboard.cli import main
from switchboard.errors import ConfigError
from switchboard.settings import Settings, load_settings
from switchboard.transcript import heard_prefix


@pytest.mark.parametrize("service", ["twilio", "realtime"])
def test_sim_subcommands_hand_their_flags_to_the_emulator(
    service: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as info:
        main(["sim", service, "--help"])
    assert info.value.code == 0
    assert "--port" in capsys.readouterr().out


def test_a_new_api_token_is_kept_in_a_private_env_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("SWITCHBOARD_API_TOKEN", raising=False)  # other tests export one
    env = tmp_path / ".env"
    out = StringIO()
    token = ensure_api_token(Settings(_env_file=None), env, out)  # type: ignore[call-arg]
    assert env.read_text() == f"SWITCHBOARD_API_TOKEN={token}\n"
    assert stat.S_IMODE(env.stat().st_mode) == 0o600
    assert token not in out.getvalue()  # the file is named, the secret is not printed
    again = Settings(_env_file=env)  # type: ignore[call-arg]
    assert ensure_api_token(again, env, out) == token


def test_a_new_api_token_does_not_run_into_a_last_line_with_no_newline(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("SWITCHBOARD_API_TOKEN", raising=False)
    env = tmp_path / ".env"
    env.write_text("LOG_LEVEL=info")  # an editor or `echo -n` left no newline
    token = ensure_api_token(Settings(_env_file=None), env, StringIO())  # type: ignore[call-arg]
    assert env.read_text() == f"LOG_LEVEL=info\nSWITCHBOARD_API_TOKEN={token}\n"


@pytest.mark.parametrize("existing", [None, "LOG_LEVEL=info\n"])
def test_the_env_file_is_private_before_the_token_is_written_to_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, existing: str | None
) -> None:
    # Another user who opens it before a late chmod keeps reading through the handle.
    monkeypatch.delenv("SWITCHBOARD_API_TOKEN", raising=False)
    env = tmp_path / ".env"
    if existing is not None:
        env.write_text(existing)
        env.chmod(0o644)
    modes: list[int] = []
    real_fdopen = os.fdopen

    class Watched:  # the file the token goes to: its mode at each write
        def __init__(self, file: Any) -> None:
            self.file = file

        def __enter__(self) -> Watched:
            self.file.__enter__()
            return self

        def __exit__(self, *exc: object) -> None:
            self.file.__exit__(*exc)

        def __getattr__(self, name: str) -> Any:
            return getattr(self.file, name)

        def write(self, data: bytes) -> int:
            modes.append(stat.S_IMODE(os.fstat(self.file.fileno()).st_mode))
            return int(self.file.write(data))

    monkeypatch.setattr(os, "fdopen", lambda *a, **kw: Watched(real_fdopen(*a, **kw)))
    old_umask = os.umask(0o022)
    try:
        ensure_api_token(Settings(_env_file=None), env, StringIO())  # type: ignore[call-arg]
    finally:
        os.umask(old_umask)
    assert modes and set(modes) == {0o600}
    assert stat.S_IMODE(env.stat().st_mode) == 0o600


def test_the_first_of_several_api_tokens_is_used_and_blank_ones_are_not_tokens(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    env, out = tmp_path / ".env", StringIO()
    for raw, first in ((" , tokA, tokB", "tokA"), ("tokA, ", "tokA")):
        monkeypatch.setenv("SWITCHBOARD_API_TOKEN", raw)
        assert ensure_api_token(Settings(_env_file=None), env, out) == first  # type: ignore[call-arg]
    monkeypatch.setenv("SWITCHBOARD_API_TOKEN", " , ")
    with pytest.raises(ConfigError, match=r"SWITCHBOARD_API_TOKEN: .*tokens of visible ASCII"):
        ensure_api_token(load_settings(None), env, out)
    assert not env.exists()  # nothing made up behind the setting's back


def test_settings_from_the_env_file_reach_the_ray_workers_through_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = tmp_path / ".env"
    env.write_text(
        f"TWILIO_ACCOUNT_SID=AC{'5' * 32}\nTWILIO_AUTH_TOKEN=from-the-file\n"
        "RECORDER_SHARDS=3\nMAX_CALL_DURATION_S=60\n"
    )
    for name in ("TWILIO_ACCOUNT_SID", "TWILIO_AUTH_TOKEN", "RECORDER_SHARDS"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("MAX_CALL_DURATION_S", "90")  # the environment wins, as in load_settings
    exported = dotenv_settings(env)
    assert set(exported) == {"TWILIO_ACCOUNT_SID", "TWILIO_AUTH_TOKEN", "RECORDER_SHARDS"}
    for name, value in exported.items():
        monkeypatch.setenv(name, value)
    worker, driver = load_settings(None), load_settings(env)  # a Ray worker reads no file
    assert worker == driver
    assert worker.twilio_auth_token is not None
    assert worker.twilio_auth_token.get_secret_value() == "from-the-file"
    assert (worker.recorder_shards, worker.max_call_duration_s) == (3, 90.0)
    assert dotenv_settings(tmp_path / "missing.env") == {}


@pytest.mark.parametrize(
    ("event", "line"),
    [
        ({"type": "transcript.caller", "text": "Hi"}, "caller: Hi"),
        ({"type": "transcript.agent_done", "text": "Hello"}, "agent:  Hello"),
        (
            {"type": "transcript.agent_interrupted", "heard_ms": 640, "generated_ms": 3000},
            "agent:  (cut off after 640 ms of 3000 ms)",  # its words came before we joined
        ),
        ({"type": "tool.called", "name": "lookup", "arguments": "{}"}, "tool:   lookup({})"),
        ({"type": "call.status", "status": "ringing"}, "status: ringing"),
        ({"type": "call.ended", "reason": "api"}, "ended:  api"),
        ({"type": "transcript.agent_delta", "delta": "He"}, None),
    ],
)
def test_live_events_read_as_a_transcript(event: dict[str, object], line: str | None) -> None:
    assert describe(event) == line


def test_a_cut_reply_shows_what_the_caller_heard_of_it() -> None:
    # The reply's words come before it is heard: a cut after its end says what was heard.
    said: dict[str, str] = {}
    text = "We have openings on Monday at four and Tuesday at ten."
    for offset, delta in (
        (0, "We have openings"),
        (16, " on Monday at four"),
        (16, " on Monday at four"),
    ):
        event = {
            "type": "transcript.agent_delta",
            "item_id": "a1",
            "delta": delta,
            "offset": offset,
        }
        assert describe(event, said) is None  # the repeat lands where it did
    assert said["a1"] == "We have openings on Monday at four"
    done = {"type": "transcript.agent_done", "item_id": "a1", "text": text}
    assert describe(done, said) == f"agent:  {text}"
    cut = {
        "type": "transcript.agent_interrupted",
        "item_id": "a1",
        "heard_ms": 1500,
        "generated_ms": 4500,
    }
    heard = heard_prefix(text, 1500, 4500)
    assert heard and heard != text
    assert describe(cut, said) == (
        f"agent:  (cut off after 1500 ms of 4500 ms; the caller heard: {heard})"
    )


def test_the_edge_names_a_ray_address_where_nothing_answers(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    with socket.socket() as probe:  # a port nothing listens on: bound, closed
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    assert main(["edge", "--ray-address", f"127.0.0.1:{port}", "--ray-wait", "0.2"]) == 2
    err = capsys.readouterr().err
    assert f":{port} after 0.2 s" in err and "no Ray cluster answers" in err
    assert main(["edge", "--ray-address", "not an address", "--ray-wait", "0"]) == 2
    assert "--ray-address 'not an address'" in capsys.readouterr().err


def test_the_edge_refuses_bad_ports_in_one_line_before_joining_ray(
    capsys: pytest.CaptureFixture[str],
) -> None:
    for flag in ("--port", "--serve-port"):
        for bad in ("99999", "http"):
            with pytest.raises(SystemExit) as exited:  # argparse's usage error
                main(["edge", flag, bad])
            assert exited.value.code == 2
            assert f"argument {flag}:" in capsys.readouterr().err
    # Ray's address is read before anything is asked of it; the port before Ray is joined.
    assert main(["edge", "--ray-address", "10.0.0.1:abc", "--ray-wait", "0"]) == 2
    assert "--ray-address '10.0.0.1:abc': 'abc' is not a port number" in capsys.readouterr().err
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        argv = ["edge", "--host", "127.0.0.1", "--port", str(port), "--ray-address", "10.0.0.1:abc"]
        assert main(argv) == 2
    err = capsys.readouterr().err
    assert f"port {port} on 127.0.0.1 is in use" in err and "Set --port" in err
    assert "Traceback" not in err


async def test_the_edge_goes_on_once_the_cluster_answers() -> None:
    from serve.edge_command import await_ray

    server = await asyncio.start_server(lambda r, w: w.close(), "127.0.0.1", 0)
    async with server:
        port = server.sockets[0].getsockname()[1]
        await await_ray(f"127.0.0.1:{port}", wait_s=0)  # no ConfigError: it answered


@pytest.mark.parametrize(
    ("host", "url"),
    [("0.0.0.0", "http://127.0.0.1:8123"), ("10.1.2.3", "http://10.1.2.3:8123")],
)
def test_the_clients_find_the_api_where_run_listens(
    monkeypatch: pytest.MonkeyPatch, host: str, url: str
) -> None:
    from argparse import Namespace

    from switchboard.cli import _api

    monkeypatch.setenv("HOST", host)
    monkeypatch.setenv("PORT", "8123")
    monkeypatch.setenv("SWITCHBOARD_API_TOKEN", "tok")
    assert _api(Namespace(url=None)) == (url, "tok")
