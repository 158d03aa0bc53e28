"""Suite-wide setup and the one Ray cluster of the session.

Imported before any test module, so before Ray is imported: a local Ray cluster
stays on loopback. The ``world`` fixture is the whole stack on a real Ray cluster
of two nodes on this machine (the Serve ingress, the recorder, the pool, the media
edge; calls on both nodes) against both
emulators, each in a child process of its own (``sim/processes.py``), once per
session, for ``tests/integration`` and ``tests/console``.
"""

from __future__ import annotations

import os

# Keep a local Ray cluster entirely on loopback: with this, Ray takes 127.0.0.1 as
# the node address instead of the machine's outward-facing one.
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")

import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from ray.cluster_utils import Cluster
from twilio.rest import Client

from actors.ray_wiring import CALL_SLOT
from serve.client import SwitchboardClient
from serve.local import LocalStack, bind_public, local_stack
from sim.processes import EmulatorProcesses
from sim.scenario import Scenario, parse_scenario

ACCOUNT = "AC" + "7" * 32
SECOND_NODE = "127.0.0.2"  # the world's second Ray node (all of 127.0.0.0/8 is this machine)
BUSY, NO_ANSWER, FAILED = "+15550000002", "+15550000003", "+15550000004"

SCENARIO: Scenario = parse_scenario(
    {
        "numbers": {
            "default": {"outcome": "human", "answer_after_s": 0.5},
            BUSY: {"outcome": "busy"},
            NO_ANSWER: {"outcome": "no-answer"},
            FAILED: {"outcome": "failed"},
        },
        "caller": [
            {"say": "Hello? Who is this?", "clip": "caller_hello.ulaw", "after_agent_ms": 300},
            {
                "say": "Wait, sorry, can I ask something first?",
                "clip": "caller_interrupt.ulaw",
                "barge_in_ms": 1500,
            },
            {"say": "Yes, four o'clock works for me.", "clip": "caller_yes.ulaw"},
            {"hangup": True, "after_agent_ms": 500},
        ],
        "assistant": [
            {
                "say": "Hello! This is Ava calling from Bright Smiles Dental.",
                "clip": "agent_greeting.ulaw",
            },
            {
                "say": "We have openings on Monday at four, Tuesday at three thirty, and "
                "Thursday at five. Which one would you prefer?",
                "clip": "agent_reply_long.ulaw",
            },
            {"say": "Sure, I can help with that.", "clip": "agent_reply_short.ulaw"},
            {
                "say": "Perfect, you are booked for Monday at four. Goodbye!",
                "clip": "agent_confirm.ulaw",
            },
        ],
        "max_call_s": 120,
    }
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Tests with a Ray cluster of their own (``make run``'s) go first, before ``world``
    starts the session's: two clusters on one machine would share ports."""
    items.sort(key=lambda item: item.get_closest_marker("own_cluster") is None)


@dataclass
class World:
    stack: LocalStack
    emulators: EmulatorProcesses  # each in a process of its own, as the real services are
    api_token: str
    auth_token: str
    outcomes: dict[str, str]  # status -> a number that ends that way
    nodes: tuple[str, ...] = ("127.0.0.1", SECOND_NODE)  # the Ray nodes' addresses

    def client(self, token: str | None = None) -> SwitchboardClient:
        return SwitchboardClient(self.stack.public_url, token or self.api_token, timeout=60.0)

    def twilio_rest(self) -> Client:
        client = Client(ACCOUNT, self.auth_token, environment={})
        client.api.base_url = self.emulators.twilio_url
        return client


@pytest.fixture(scope="session")
async def world(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[World]:
    auth_token, api_token = secrets.token_hex(16), secrets.token_hex(16)
    database = Path(tmp_path_factory.mktemp("db")) / "calls.db"
    async with EmulatorProcesses(
        SCENARIO,
        account_sid=ACCOUNT,
        auth_token=auth_token,
        api_key="sk-integration",
        validate=True,
    ) as emulators:
        # Held from now: Ray's processes, starting next, take ports of their own choosing.
        listener = bind_public("127.0.0.1", 0)
        public_port = listener.getsockname()[1]
        settings = {
            "TWILIO_ACCOUNT_SID": ACCOUNT,
            "TWILIO_AUTH_TOKEN": auth_token,
            "TWILIO_API_BASE_URL": emulators.twilio_url,
            "TWILIO_FROM_NUMBER": "+15005550006",
            "OPENAI_API_KEY": "sk-integration",
            "OPENAI_BASE_URL": emulators.realtime_url,
            "PUBLIC_URL": f"http://127.0.0.1:{public_port}",
            "SWITCHBOARD_API_TOKEN": api_token,
            "DATABASE_URL": f"sqlite:///{database}",
            "RECORDER_SHARDS": "2",  # every live test crosses shards; one is the same code
        }
        # The Ray nodes start with these (their workers inherit a node's environment) and
        # the stack reads them as it starts; then they go, so no other test sees them.
        patch = pytest.MonkeyPatch()
        for name, value in settings.items():
            patch.setenv(name, value)
        try:
            cluster = two_node_cluster()
        except BaseException:
            patch.undo()
            listener.close()
            raise
        try:
            async with local_stack(
                public_port=public_port,
                warm_actors=4,
                ray_address=cluster.address,
                listener=listener,
            ) as stack:
                patch.undo()
                outcomes = {"busy": BUSY, "no-answer": NO_ANSWER, "failed": FAILED}
                yield World(stack, emulators, api_token, auth_token, outcomes)
        finally:
            cluster.shutdown()
            patch.undo()


def two_node_cluster() -> Cluster:
    """A Ray cluster of two nodes on this machine, at 127.0.0.1 (the head) and 127.0.0.2,
    each with call slots: Ray may place a call on either, as in a real cluster, and each
    node's call actors must listen on its own address. The workers inherit this
    process's environment as it is now."""
    cluster = Cluster(
        initialize_head=True,
        head_node_args={
            "node_ip_address": "127.0.0.1",
            "num_cpus": 2,
            "resources": {CALL_SLOT: 50},
            "include_dashboard": True,
            "dashboard_host": "127.0.0.1",
        },
    )
    try:
        cluster.add_node(node_ip_address=SECOND_NODE, num_cpus=1, resources={CALL_SLOT: 50})
    except BaseException:
        cluster.shutdown()
        raise
    return cluster
