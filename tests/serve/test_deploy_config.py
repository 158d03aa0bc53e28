"""The deploy config: the Serve config file points at an application that exists and is an
ingress, and the probes of the KubeRay and monitoring manifests check what they say.

The Ray containers set no probe, so KubeRay injects its own (raylet, GCS, the Serve proxy on
the port named ``serve``); the media edge's probes name its own ports and never reach Serve,
and its liveness command, run here against a real ``MediaEdge``, gets the edge's own answer
and fails when the edge's loop is hung; the blackbox probe's paths are open routes of the
app that answer 2xx only when ready, and the alert watches that probe.
"""

from __future__ import annotations

import asyncio
import importlib
import re
import socket
import subprocess
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
import yaml
from ray.serve.schema import ServeDeploySchema

from serve.api import READY_TIMEOUT_S, build_app
from serve.events import EventHub
from serve.media_edge import MediaEdge
from serve.ports import AppDeps
from serve.testing import FakeCallControl
from switchboard.settings import Settings
from switchboard.store import CallStore

ROOT = Path(__file__).resolve().parents[2]
CONFIG = ROOT / "serve" / "serve_config.yaml"
KUBERAY = ROOT / "docker" / "kuberay"
MONITORING = ROOT / "monitoring"
PROBE_KINDS = ("startupProbe", "readinessProbe", "livenessProbe")
# KubeRay injects a Ray container's liveness and readiness probes only when the spec sets
# neither (initLivenessAndReadinessProbe in ray-operator/controllers/ray/common/pod.go); a
# RayService worker's readiness GETs the Serve proxy on the port named `serve` (else 8000).
KUBERAY_SERVE_PORT_NAME = "serve"
# KubeRay's liveness of a Ray container: 30 s initial delay, then 120 failures 5 s apart.
KUBERAY_LIVENESS_BUDGET_S = 30 + 120 * 5
TOKEN = "test-token"


def test_serve_config_validates_and_its_import_path_resolves() -> None:
    config = ServeDeploySchema.model_validate(yaml.safe_load(CONFIG.read_text()))
    (application,) = config.applications
    module_name, attribute = application.import_path.split(":")
    app = getattr(importlib.import_module(module_name), attribute)
    assert type(app).__name__ == "Application"
    assert application.route_prefix == "/"


def test_a_two_core_node_budgets_cpu_for_sixty_calls_beside_the_services() -> None:
    """Serve gives a replica a whole CPU unless told: on 2 cores that left 40 calls."""
    from actors.ray_wiring import CALL_CPUS
    from serve.deployment import SERVICE_CPUS, SwitchboardIngress

    replica = SwitchboardIngress.ray_actor_options["num_cpus"]
    (application,) = yaml.safe_load(CONFIG.read_text())["applications"]
    (deployed,) = application["deployments"]
    assert deployed["ray_actor_options"]["num_cpus"] == replica  # `serve deploy` asks the same
    services = replica + 2 * SERVICE_CPUS  # the ingress replica, the pool, one recorder
    assert services + 60 * CALL_CPUS <= 2


# -- reading the manifests --------------------------------------------------------------


def load_yaml(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc is not None]


def one(path: Path, kind: str) -> dict[str, Any]:
    (found,) = [doc for doc in load_yaml(path) if doc["kind"] == kind]
    return found


def rayservice() -> dict[str, Any]:
    return one(KUBERAY / "rayservice.yaml", "RayService")


def groups() -> list[dict[str, Any]]:
    cluster = rayservice()["spec"]["rayClusterConfig"]
    return [cluster["headGroupSpec"], *cluster["workerGroupSpecs"]]


def containers(group: dict[str, Any]) -> list[dict[str, Any]]:
    return list(group["template"]["spec"]["containers"])


def edge(group: dict[str, Any]) -> dict[str, Any]:
    (found,) = [c for c in containers(group) if c["name"] == "media-edge"]
    return found


def ports(container: dict[str, Any]) -> dict[str, int]:
    return {p["name"]: int(p["containerPort"]) for p in container.get("ports", [])}


def serve_port() -> int:
    return int(yaml.safe_load(rayservice()["spec"]["serveConfigV2"])["http_options"]["port"])


def public_host() -> str:
    (head, *_) = groups()
    env = {e["name"]: e.get("value") for e in containers(head)[0]["env"]}
    return str(urlsplit(env["PUBLIC_URL"]).hostname)


def liveness_script(container: dict[str, Any]) -> str:
    command = container["livenessProbe"]["exec"]["command"]
    assert command[:2] == ["/bin/bash", "-c"] and len(command) == 3
    return str(command[2])


def script_port(script: str) -> int:
    (port,) = re.findall(r"/dev/tcp/127\.0\.0\.1/(\d+)\b", script)
    return int(port)


def on_port(script: str, port: int) -> list[str]:
    """The liveness command, aimed at ``port`` instead of the container's."""
    return [
        "/bin/bash",
        "-c",
        script.replace(f"/127.0.0.1/{script_port(script)}", f"/127.0.0.1/{port}"),
    ]


def seconds(duration: str) -> float:
    value, unit = re.fullmatch(r"(\d+)(ms|s|m)", duration).groups()  # type: ignore[union-attr]
    return int(value) * {"ms": 0.001, "s": 1.0, "m": 60.0}[unit]


def closed_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# -- the RayService's probes ----------------------------------------------------------------


def test_ray_containers_leave_their_probes_to_kuberay() -> None:
    for group in groups():
        ray = containers(group)[0]  # KubeRay: the first container is the Ray node
        assert ray["name"].startswith("ray-")
        # Any liveness or readiness probe here would replace KubeRay's (and its Serve check).
        assert not {"livenessProbe", "readinessProbe"} & set(ray), ray["name"]
        # KubeRay's worker readiness probe finds the Serve proxy by this port name; without
        # it, it would ask port 8000, where the proxy is not.
        assert ports(ray)[KUBERAY_SERVE_PORT_NAME] == serve_port()


def test_every_probe_names_a_port_of_its_own_container() -> None:
    checked = 0
    for group in groups():
        for container in containers(group):
            named = ports(container)
            for kind in PROBE_KINDS:
                probe = container.get(kind) or {}
                for action in ("tcpSocket", "httpGet", "grpc"):
                    if action not in probe:
                        continue
                    port = probe[action]["port"]
                    assert (port in named) if isinstance(port, str) else (port in named.values())
                    checked += 1
                if "exec" in probe:  # a command can name only a number: the container's own
                    assert script_port(liveness_script(container)) in named.values()
                    checked += 1
    assert checked >= 3 * len(groups())  # every edge: startup, readiness, liveness


def test_the_edge_is_probed_alone_and_given_its_nodes_start_up_time() -> None:
    edges = [edge(group) for group in groups()]
    assert all(e == edges[0] for e in edges)  # one definition, head and workers
    sidecar = edges[0]
    edge_port = ports(sidecar)["edge"]
    assert sidecar["startupProbe"]["tcpSocket"]["port"] == "edge"
    assert sidecar["readinessProbe"]["tcpSocket"]["port"] == "edge"
    for kind in PROBE_KINDS:
        # Anything but a media upgrade the edge forwards to Serve: an HTTP GET would
        # probe Serve, and restart the edge and its calls whenever Serve is down.
        assert "httpGet" not in sidecar[kind]
    # It listens once its node is up: as long as KubeRay lets the Ray container take.
    startup = sidecar["startupProbe"]
    assert startup["periodSeconds"] * startup["failureThreshold"] >= KUBERAY_LIVENESS_BUDGET_S - 30
    liveness = sidecar["livenessProbe"]
    script = liveness_script(sidecar)
    assert script_port(script) == edge_port
    (read_timeout,) = re.findall(r"read -r -t (\d+)", script)
    assert int(read_timeout) < liveness["timeoutSeconds"]  # the script gives up first


@pytest.mark.timeout(30)
async def test_the_edge_liveness_command_gets_the_edges_own_answer() -> None:
    asked: list[str] = []

    class Resolver:
        async def resolve(self, call_id: str) -> tuple[str, int] | None:
            asked.append(call_id)
            return None

    script = liveness_script(edge(groups()[0]))
    # No Serve behind it: the answer must be the edge's own.
    media_edge = MediaEdge(Resolver(), ("127.0.0.1", closed_port()))
    await media_edge.start("127.0.0.1", 0)
    try:
        probe = await asyncio.create_subprocess_exec(*on_port(script, media_edge.port))
        assert await asyncio.wait_for(probe.wait(), 10) == 0
        stats = media_edge.stats()
    finally:
        await media_edge.stop()
    assert asked == []  # no Ray call
    assert (stats.default_total, stats.media_total) == (0, 0)  # nothing forwarded
    assert dict(stats.refusals) == {"bad_call_id": 1}


@pytest.mark.timeout(30)
async def test_the_edge_liveness_command_fails_when_the_edge_does_not_answer() -> None:
    script = liveness_script(edge(groups()[0]))
    gone = subprocess.run(on_port(script, closed_port()), capture_output=True, timeout=10)
    assert gone.returncode != 0

    class Resolver:
        async def resolve(self, call_id: str) -> tuple[str, int] | None:
            return None

    media_edge = MediaEdge(Resolver(), ("127.0.0.1", closed_port()))
    await media_edge.start("127.0.0.1", 0)
    try:
        # This loop runs the edge; a blocking call here is an edge whose loop is hung.
        # The kernel still accepts for it, so a TCP probe would pass; the command does not.
        socket.create_connection(("127.0.0.1", media_edge.port), timeout=2).close()
        hung = subprocess.run(on_port(script, media_edge.port), capture_output=True, timeout=10)
        assert hung.returncode != 0
    finally:
        await media_edge.stop()


# -- /readyz and /healthz, watched from outside --------------------------------------------


def blackbox_probe() -> dict[str, Any]:
    return one(MONITORING / "kubernetes" / "probe.yaml", "Probe")


def probe_targets() -> list[str]:
    return list(blackbox_probe()["spec"]["targets"]["staticConfig"]["static"])


def test_the_blackbox_probe_asks_the_public_url_for_readyz_and_healthz() -> None:
    probe = blackbox_probe()
    spec = probe["spec"]
    targets = [urlsplit(url) for url in probe_targets()]
    assert {t.path for t in targets} == {"/readyz", "/healthz"}
    for target in targets:  # the origin Twilio and the API's clients use
        assert target.scheme == "https" and target.hostname == public_host()
    ingress = one(KUBERAY / "ingress.yaml", "Ingress")
    assert {rule["host"] for rule in ingress["spec"]["rules"]} == {public_host()}
    assert spec["module"] == "http_2xx"
    # /readyz runs its two checks in turn, each given READY_TIMEOUT_S.
    assert seconds(spec["scrapeTimeout"]) > 2 * READY_TIMEOUT_S
    assert seconds(spec["scrapeTimeout"]) < seconds(spec["interval"])
    assert probe["metadata"]["namespace"] == rayservice()["metadata"]["namespace"]
    monitor = one(MONITORING / "kubernetes" / "podmonitor.yaml", "PodMonitor")
    assert probe["metadata"]["labels"]["release"] == monitor["metadata"]["labels"]["release"]


def test_the_not_ready_alert_watches_the_probes_readyz_target() -> None:
    (rules,) = load_yaml(MONITORING / "alerts.yml")
    (rule,) = [
        r
        for group in rules["groups"]
        for r in group["rules"]
        if r["alert"] == "SwitchboardNotReady"
    ]
    expr = rule["expr"]
    assert expr.startswith("probe_success{") and expr.endswith("== 0")
    (job,) = re.findall(r'job="([^"]+)"', expr)
    assert job == blackbox_probe()["spec"]["jobName"]
    (instance,) = re.findall(r'instance=~"([^"]+)"', expr)
    watched = [url for url in probe_targets() if re.fullmatch(instance, url)]  # PromQL anchors
    assert [urlsplit(url).path for url in watched] == ["/readyz"]
    assert rule["labels"]["severity"] == "critical" and seconds(rule["for"]) >= 60


async def test_the_probes_paths_are_open_routes_that_answer_2xx_only_when_ready(
    store: CallStore,
) -> None:
    settings = Settings.model_validate(
        {"twilio_auth_token": "twilio-secret", "public_url": f"https://{public_host()}"}
    )
    control = FakeCallControl()
    app = build_app(AppDeps(settings, store, control, EventHub(), (TOKEN,)))
    # Routes of their own (the console's mount at `/` would answer other paths too), open:
    # the prober has no bearer token.
    operations = app.openapi()["paths"]
    paths = [urlsplit(url).path for url in probe_targets()]
    for path in paths:
        assert "security" not in operations[path]["get"], path
    transport = httpx.ASGITransport(app)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        for path in paths:
            assert (await client.get(path)).status_code == 200, path
        control.is_ready = False  # the call pool does not answer ready
        answers = {path: (await client.get(path)).status_code for path in paths}
    assert answers == {"/readyz": 503, "/healthz": 200}
