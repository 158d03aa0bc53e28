"""The monitoring and KubeRay files parse and agree with the code they deploy.

Every YAML and JSON file under monitoring/ and docker/ is read; then each name one
of them shares with the code is checked against the code: the call_slot resource,
the Serve application and its ports, the settings' environment variables, the
edge's command line, and every metric a dashboard panel or alert queries.
"""

from __future__ import annotations

import importlib
import json
import os
import re
import shlex
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import ray
import yaml
from ray._private import ray_constants
from ray.serve.schema import ServeDeploySchema

from actors.call_metrics import METRICS
from actors.ray_metrics import exported_names
from actors.ray_wiring import CALL_SLOT
from switchboard.cli import _parser
from switchboard.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
MONITORING = ROOT / "monitoring"
DOCKER = ROOT / "docker"
KUBERAY = DOCKER / "kuberay"
SETTINGS = {name.upper() for name in Settings.model_fields}
# Ray core metrics the dashboard and alerts use (seen on a node's endpoint, Ray 2.60).
RAY_CORE_METRICS = {"ray_resources", "ray_actors", "ray_node_cpu_utilization", "ray_node_mem_used"}


def load_yaml(path: Path) -> list[Any]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc is not None]


def manifests() -> list[dict[str, Any]]:
    return [doc for path in sorted(KUBERAY.glob("*.yaml")) for doc in load_yaml(path)]


def one(kind: str, docs: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    (found,) = [doc for doc in (docs or manifests()) if doc["kind"] == kind]
    return found


def rayservice() -> dict[str, Any]:
    return one("RayService")


def groups() -> list[dict[str, Any]]:
    cluster = rayservice()["spec"]["rayClusterConfig"]
    return [cluster["headGroupSpec"], *cluster["workerGroupSpecs"]]


def ray_container(group: dict[str, Any]) -> dict[str, Any]:
    return dict(group["template"]["spec"]["containers"][0])  # KubeRay: the first one


def sidecar(group: dict[str, Any], name: str = "media-edge") -> dict[str, Any]:
    (found,) = [c for c in group["template"]["spec"]["containers"] if c["name"] == name]
    return dict(found)


def port(container: dict[str, Any], name: str) -> int:
    (number,) = [p["containerPort"] for p in container.get("ports", []) if p["name"] == name]
    return int(number)


def ray_temp_volumes(container: dict[str, Any]) -> set[str]:
    return {m["name"] for m in container.get("volumeMounts", []) if m["mountPath"] == "/tmp/ray"}


def serve_config() -> dict[str, Any]:
    return dict(yaml.safe_load(rayservice()["spec"]["serveConfigV2"]))


def dashboard() -> dict[str, Any]:
    return dict(json.loads((MONITORING / "grafana/dashboards/switchboard.json").read_text()))


def dashboard_exprs() -> Iterator[str]:
    for panel in dashboard()["panels"]:
        for target in panel.get("targets", []):
            yield target["expr"]


def alert_exprs() -> Iterator[str]:
    for group in load_yaml(MONITORING / "alerts.yml")[0]["groups"]:
        for rule in group["rules"]:
            yield rule["expr"]


def metric_names(expr: str) -> set[str]:
    """Metric names in a PromQL expression (not label names such as ray_io_cluster=~)."""
    return set(re.findall(r"\b(ray_[a-z0-9_]+)\b(?!\s*[!=])", expr))


def ray_serve_metrics() -> set[str]:
    """Every metric name Ray Serve defines, as exported (read from its installed source)."""
    serve_dir = Path(importlib.import_module("ray.serve").__file__ or "").parent
    names: set[str] = set()
    for source in serve_dir.rglob("*.py"):
        for name in re.findall(r"""f?["'](serve_[a-z_{}]+)["']""", source.read_text()):
            names |= {name.replace("{protocol_name}", p) for p in ("http", "grpc")}
    suffixes = ("", "_total", "_bucket", "_sum", "_count")
    return {f"ray_{name}{suffix}" for name in names if "{" not in name for suffix in suffixes}


# -- every file parses ----------------------------------------------------------


@pytest.mark.parametrize(
    "path",
    sorted(
        p
        for folder in (MONITORING, DOCKER)
        for p in folder.rglob("*")
        if p.suffix in {".yml", ".yaml", ".json"}
    ),
    ids=lambda p: str(p.relative_to(ROOT)),
)
def test_every_config_file_parses(path: Path) -> None:
    docs = [json.loads(path.read_text())] if path.suffix == ".json" else load_yaml(path)
    assert docs and all(isinstance(doc, dict) for doc in docs)


# -- KubeRay ----------------------------------------------------------------------


def test_workers_advertise_the_call_slot_resource_the_call_actors_ask_for() -> None:
    head, *workers = groups()
    assert workers
    for group in workers:
        quoted = group["rayStartParams"]["resources"]
        # KubeRay's form: a shell-quoted JSON string ('"{\"call_slot\": 100}"' in YAML).
        (unquoted,) = shlex.split(quoted)
        slots = json.loads(unquoted)
        assert set(slots) == {CALL_SLOT}
        assert slots[CALL_SLOT] > 0
    assert "resources" not in head["rayStartParams"]  # calls run on workers


def test_serve_config_v2_is_the_serve_config_file_and_imports() -> None:
    inline = serve_config()
    assert inline == yaml.safe_load((ROOT / "serve/serve_config.yaml").read_text())
    config = ServeDeploySchema.model_validate(inline)
    (application,) = config.applications
    module_name, attribute = application.import_path.split(":")
    app = getattr(importlib.import_module(module_name), attribute)
    assert type(app).__name__ == "Application"
    serve_port = inline["http_options"]["port"]
    for group in groups():  # KubeRay's Serve Service and readiness probe use `serve`
        assert port(ray_container(group), "serve") == serve_port


def test_ray_and_python_versions_match_the_image_and_the_pins() -> None:
    assert rayservice()["spec"]["rayClusterConfig"]["rayVersion"] == ray.__version__
    dockerfile = (DOCKER / "Dockerfile").read_text()
    (image,) = re.findall(r"^ARG RAY_IMAGE=(\S+)$", dockerfile, re.M)
    assert image == f"rayproject/ray:{ray.__version__}-py311"
    images = {c["image"] for g in groups() for c in g["template"]["spec"]["containers"]}
    assert len(images) == 1  # one image for the Ray nodes and their edges


def test_the_image_installs_every_package_the_project_ships() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    packages = {p.rstrip("*") for p in project["tool"]["setuptools"]["packages"]["find"]["include"]}
    copied = set(re.findall(r"^COPY \S+ (\w+) \./\1$", (DOCKER / "Dockerfile").read_text(), re.M))
    assert copied == packages
    ignored = (DOCKER / "Dockerfile.dockerignore").read_text().split()
    assert {".env", "*.db", ".venv"} <= set(ignored)


def test_every_environment_variable_is_a_setting_and_every_secret_is_provided() -> None:
    template = (KUBERAY / "secret.example.env").read_text().splitlines()
    provided = {line.split("=", 1)[0] for line in template if line and not line.startswith("#")}
    assert provided <= SETTINGS
    envs = []
    for group in groups():
        env = ray_container(group)["env"]
        ours = [e for e in env if not e["name"].startswith("RAY_")]
        assert {e["name"] for e in ours} <= SETTINGS
        for entry in ours:
            if "valueFrom" in entry:
                ref = entry["valueFrom"]["secretKeyRef"]
                assert (ref["name"], ref["key"]) == ("switchboard", entry["name"])
        assert {e["name"] for e in ours if "valueFrom" in e} == provided
        envs.append(ours)
    assert all(env == envs[0] for env in envs)  # head and workers: the same settings


def test_rayservice_keeps_old_clusters_until_their_calls_can_have_ended() -> None:
    spec = rayservice()["spec"]
    assert spec["rayClusterDeletionDelaySeconds"] > Settings().max_call_duration_s
    env = {e["name"]: e.get("value") for e in ray_container(groups()[0])["env"]}
    assert float(env["MAX_CALL_DURATION_S"]) < spec["rayClusterDeletionDelaySeconds"]


def test_each_ray_pod_runs_a_media_edge_that_joins_its_node() -> None:
    serve_port = serve_config()["http_options"]["port"]
    for group in groups():
        edge = sidecar(group)
        script = edge["args"][0]
        (command,) = [line.split("exec ", 1)[1] for line in script.splitlines() if "exec " in line]
        argv = shlex.split(command)
        assert argv[0] == "switchboard"
        ns = _parser().parse_args(argv[1:])  # the real CLI accepts these flags
        assert ns.command == "edge"
        assert ns.host == "0.0.0.0"  # the Service reaches it on the pod's IP
        assert ns.port == port(edge, "edge")
        assert ns.serve_port == serve_port
        assert ns.ray_address == "auto"
        # The edge reaches its node through the shared Ray temp directory.
        shared = ray_temp_volumes(edge)
        assert shared == ray_temp_volumes(ray_container(group)) and len(shared) == 1
        assert group["template"]["metadata"]["labels"]["switchboard.io/media-edge"] == "true"


def test_the_ingress_sends_media_to_the_edges_and_the_rest_to_serve() -> None:
    docs = manifests()
    service, ingress, rs = one("Service", docs), one("Ingress", docs), one("RayService", docs)
    assert service["spec"]["selector"] == {"switchboard.io/media-edge": "true"}
    (service_port,) = service["spec"]["ports"]
    assert service_port["targetPort"] == "edge"
    (rule,) = ingress["spec"]["rules"]
    routes = {p["path"]: p["backend"]["service"] for p in rule["http"]["paths"]}
    assert routes["/media/"] == {"name": service["metadata"]["name"], "port": {"name": "edge"}}
    assert routes["/"]["name"] == f"{rs['metadata']['name']}-serve-svc"  # KubeRay's name
    assert routes["/"]["port"] == {"number": serve_config()["http_options"]["port"]}
    # Twilio signs against PUBLIC_URL: the Ingress must serve exactly that origin.
    public = urlsplit(
        next(e["value"] for e in ray_container(groups()[0])["env"] if e["name"] == "PUBLIC_URL")
    )
    assert public.scheme == "https" and public.path in ("", "/")
    assert rule["host"] == public.hostname
    assert public.hostname in ingress["spec"]["tls"][0]["hosts"]
    namespaces = {doc["metadata"]["namespace"] for doc in docs}
    namespaces |= {doc["metadata"]["namespace"] for doc in kubernetes_monitoring()}
    assert len(namespaces) == 1


# -- who can reach Ray -------------------------------------------------------------

# Every Ray pod holds every secret, and whoever runs code on Ray reads them: the cluster
# must demand Ray's token of every caller, and only its own pods may reach Ray's ports.

AUTH_TOKEN_KEY = "auth_token"  # the key KubeRay reads from authOptions.secretName
# What ray.init(address="auto") does about auth before it connects (ray/_private/worker.py).
DRIVER_AUTH_CHECK = """
from ray._private.authentication.authentication_token_setup import (
    ensure_token_if_auth_enabled, maybe_enable_token_auth_if_token_available)
from ray._private.authentication.authentication_utils import is_token_auth_enabled
from ray._raylet import AuthenticationTokenLoader
maybe_enable_token_auth_if_token_available(warn_if_disabled=False)
ensure_token_if_auth_enabled({}, create_token_if_missing=False)
print(is_token_auth_enabled(), AuthenticationTokenLoader.instance().get_token_for_http_header())
"""


def auth_secret() -> str:
    options = rayservice()["spec"]["rayClusterConfig"]["authOptions"]
    return str(options["secretName"])


def joins_ray(container: dict[str, Any]) -> bool:
    """A Ray driver: it shares its node's Ray temp directory or names a Ray address."""
    script = " ".join([*container.get("command", []), *container.get("args", [])])
    return bool(ray_temp_volumes(container)) or "--ray-address" in script


def ray_drivers() -> list[dict[str, Any]]:
    """The containers that join Ray besides the Ray node, which KubeRay gives the token."""
    return [c for g in groups() for c in g["template"]["spec"]["containers"][1:] if joins_ray(c)]


def policy_ports(rule: dict[str, Any]) -> set[str]:
    return {str(p["port"]) for p in rule.get("ports", [])}


def peer(rule: dict[str, Any]) -> tuple[str | None, str]:
    """(namespace, app name) of a rule's one source; namespace None: this namespace."""
    (source,) = rule["from"]
    namespace = source.get("namespaceSelector", {}).get("matchLabels", {})
    app = source["podSelector"]["matchLabels"]
    return namespace.get("kubernetes.io/metadata.name"), app.get("app.kubernetes.io/name", "")


def test_ray_demands_its_token_from_a_secret_every_cluster_of_the_service_shares() -> None:
    cluster = rayservice()["spec"]["rayClusterConfig"]
    # KubeRay (>= 1.6) then sets RAY_AUTH_MODE and RAY_AUTH_TOKEN in the Ray containers.
    assert cluster["authOptions"] == {"mode": "token", "secretName": auth_secret()}
    for group in groups():  # KubeRay skips any a Ray container sets itself (could disagree)
        env = {e["name"] for e in ray_container(group).get("env", [])}
        assert not {n for n in env if n.startswith("RAY_AUTH")}
    # The README's commands create that Secret with that key, and apply every manifest.
    readme = (DOCKER / "README.md").read_text()
    assert f"create secret generic {auth_secret()}" in readme
    assert f"--from-literal={AUTH_TOKEN_KEY}=" in readme
    for path in KUBERAY.glob("*.yaml"):
        assert f"-f docker/kuberay/{path.name}" in readme, path.name


def test_every_container_that_joins_ray_carries_the_token() -> None:
    drivers = ray_drivers()
    assert {c["name"] for c in drivers} == {"media-edge"}  # the edges, in every pod
    assert len(drivers) == len(groups())
    for container in drivers:
        env = {e["name"]: e for e in container.get("env", [])}
        assert env["RAY_AUTH_MODE"]["value"] == "token"
        ref = env["RAY_AUTH_TOKEN"]["valueFrom"]["secretKeyRef"]
        assert ref == {"name": auth_secret(), "key": AUTH_TOKEN_KEY}


def test_the_edges_environment_gives_ray_init_the_token(tmp_path: Path) -> None:
    """Ray's own pre-connect checks, run in the edge's environment (Secret filled in)."""
    token = "0123abcd"
    env: dict[str, str] = {}
    for entry in sidecar(groups()[0]).get("env", []):
        if entry["name"].startswith("RAY_"):
            env[entry["name"]] = entry.get("value", token)  # valueFrom: the Secret's token
    ran = subprocess.run(
        [sys.executable, "-c", DRIVER_AUTH_CHECK],
        env={"PATH": os.environ["PATH"], "HOME": str(tmp_path), **env},  # no ~/.ray token
        capture_output=True,
        text=True,
        check=False,
    )
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout.split(" ", 1) == ["True", f"{{'authorization': 'Bearer {token}'}}\n"]


def test_only_the_rayservices_own_pods_reach_rays_ports() -> None:
    policy = one("NetworkPolicy")
    spec = policy["spec"]
    selector = spec["podSelector"]["matchLabels"]
    assert selector == {"switchboard.io/rayservice": rayservice()["metadata"]["name"]}
    for group in groups():  # head and workers alike
        assert selector.items() <= group["template"]["metadata"]["labels"].items()
    assert spec["policyTypes"] == ["Ingress"]  # egress open: Twilio, OpenAI, the database
    rules = spec["ingress"]
    assert all(rule.get("from") for rule in rules)  # no rule admits every source
    # Ray between nodes, and edges splicing to call actors on kernel-chosen ports: any port.
    own = [r for r in rules if r["from"] == [{"podSelector": {"matchLabels": selector}}]]
    assert own == [{"from": own[0]["from"]}]
    others = {peer(rule): policy_ports(rule) for rule in rules if rule not in own}
    assert len(others) == len(rules) - 1
    # Every named port exists on the pods, and no one else reaches GCS or the client server.
    named = {
        p["name"]
        for g in groups()
        for c in g["template"]["spec"]["containers"]
        for p in c.get("ports", [])
    }
    assert set().union(*others.values()) <= named - {"gcs-server", "client"}
    # The Ingress's backends (ingress.yaml) from ingress-nginx: the edges and Serve.
    assert one("Service")["spec"]["ports"][0]["targetPort"] == "edge"
    assert port(ray_container(groups()[0]), "serve") == serve_config()["http_options"]["port"]
    assert others[("ingress-nginx", "ingress-nginx")] == {"edge", "serve"}
    # The operator: serveConfigV2 and Serve's status on the dashboard, the head's proxy.
    assert others[("kuberay-system", "kuberay-operator")] == {"dashboard", "serve"}
    assert [p for p, ports in others.items() if "dashboard" in ports] == [
        ("kuberay-system", "kuberay-operator")
    ]
    # Prometheus, where the RayService's RAY_PROMETHEUS_HOST says it is, on the PodMonitor's port.
    (monitor,) = [d for d in kubernetes_monitoring() if d["kind"] == "PodMonitor"]
    (endpoint,) = monitor["spec"]["podMetricsEndpoints"]
    env = {e["name"]: e.get("value") for e in ray_container(groups()[0])["env"]}
    prometheus_namespace = str(urlsplit(env["RAY_PROMETHEUS_HOST"]).hostname).split(".")[1]
    assert others[(prometheus_namespace, "prometheus")] == {endpoint["port"]}
    assert len(others) == 3


def test_the_dashboard_listens_beyond_its_pod_only_behind_the_token_and_the_policy() -> None:
    head = groups()[0]
    # The operator reaches the dashboard from its own pod: it must not be 127.0.0.1 ...
    assert head["rayStartParams"]["dashboard-host"] == "0.0.0.0"
    # ... so the tests above must hold: the token on, and the port closed to the rest.
    assert rayservice()["spec"]["rayClusterConfig"]["authOptions"]["mode"] == "token"
    assert port(ray_container(head), "dashboard") == 8265
    assert one("NetworkPolicy")["metadata"]["namespace"] == rayservice()["metadata"]["namespace"]


# -- monitoring -------------------------------------------------------------------


def kubernetes_monitoring() -> list[dict[str, Any]]:
    return [d for p in sorted((MONITORING / "kubernetes").glob("*.yaml")) for d in load_yaml(p)]


def test_prometheus_reads_the_service_discovery_file_ray_writes() -> None:
    (config,) = load_yaml(MONITORING / "prometheus.yml")
    (job,) = config["scrape_configs"]
    (sd,) = job["file_sd_configs"]
    (path,) = sd["files"]
    # Ray writes it to each session directory and links the latest into its temp dir.
    assert Path(path) == Path("/tmp/ray") / ray_constants.PROMETHEUS_SERVICE_DISCOVERY_FILE
    for rules in config["rule_files"]:
        assert (MONITORING / rules).is_file()


def test_the_prometheus_rule_is_alerts_yml() -> None:
    (rule,) = [d for d in kubernetes_monitoring() if d["kind"] == "PrometheusRule"]
    assert rule["spec"] == load_yaml(MONITORING / "alerts.yml")[0]


def test_the_pod_monitor_scrapes_the_ray_nodes_metrics_port() -> None:
    (monitor,) = [d for d in kubernetes_monitoring() if d["kind"] == "PodMonitor"]
    (endpoint,) = monitor["spec"]["podMetricsEndpoints"]
    for group in groups():
        port(ray_container(group), endpoint["port"])  # the named port exists
    assert monitor["spec"]["namespaceSelector"]["matchNames"] == [
        rayservice()["metadata"]["namespace"]
    ]


def test_dashboards_and_alerts_query_only_metrics_that_exist() -> None:
    ours = {name for spec in METRICS for name in exported_names(spec)}
    known = ours | ray_serve_metrics() | RAY_CORE_METRICS
    exprs = [*dashboard_exprs(), *alert_exprs()]
    queried = set().union(*(metric_names(expr) for expr in exprs))
    assert queried - known == set()
    # And every metric the code defines is on the dashboard.
    shown = set().union(*(metric_names(expr) for expr in dashboard_exprs()))
    for spec in METRICS:
        assert shown & set(exported_names(spec)), f"{spec.name} is on no panel"


def test_label_values_in_queries_are_the_codes_names() -> None:
    exprs = "\n".join([*dashboard_exprs(), *alert_exprs()])
    (application,) = serve_config()["applications"]
    assert set(re.findall(r'application="([^"]+)"', exprs)) == {application["name"]}
    deployments = {d["name"] for d in application["deployments"]}
    assert set(re.findall(r'deployment="([^"]+)"', exprs)) <= deployments
    assert set(re.findall(r'Name="([^"]+)"', exprs)) == {CALL_SLOT}
    tags = {tag for spec in METRICS for tag in spec.tags}
    for expr in exprs.splitlines():
        if "switchboard_" in expr:
            grouped = re.findall(r"by \(([^)]*)\)", expr)
            for label in {g.strip() for group in grouped for g in group.split(",")}:
                assert label in tags | {"le"}, f"{label!r} is not a label of ours: {expr}"


def test_every_panel_says_what_it_shows_and_uses_the_datasource_variable() -> None:
    board = dashboard()
    variables = {v["name"]: v for v in board["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    panels = board["panels"]
    assert len({p["id"] for p in panels}) == len(panels)
    for panel in panels:
        if panel["type"] == "row":
            continue
        assert panel["description"], panel["title"]
        assert panel["datasource"]["uid"] == "${datasource}"
        refs = [t["refId"] for t in panel["targets"]]
        assert refs and len(set(refs)) == len(refs)
        for target in panel["targets"]:
            assert target["expr"].count("(") == target["expr"].count(")")


def test_grafana_provisioning_points_where_compose_mounts() -> None:
    (compose,) = load_yaml(MONITORING / "docker-compose.yml")
    mounts = {
        volume.split(":")[0]: volume.split(":")[1]
        for service in compose["services"].values()
        for volume in service.get("volumes", [])
    }
    (providers,) = load_yaml(MONITORING / "grafana/provisioning/dashboards/switchboard.yml")
    paths = {p["name"]: p["options"]["path"] for p in providers["providers"]}
    assert paths["switchboard"] == mounts["./grafana/dashboards"]
    assert paths["ray"].startswith(mounts["/tmp/ray"])
    (sources,) = load_yaml(MONITORING / "grafana/provisioning/datasources/prometheus.yml")
    (source,) = sources["datasources"]
    listen = next(
        arg.split("=", 1)[1]
        for arg in compose["services"]["prometheus"]["command"]
        if arg.startswith("--web.listen-address=")
    )
    assert urlsplit(source["url"]).netloc == listen


def promtool_succeeds(*args: str) -> None:
    ran = subprocess.run(["promtool", *args], capture_output=True, text=True, check=False)
    assert ran.returncode == 0, ran.stdout + ran.stderr
    assert "SUCCESS" in ran.stdout + ran.stderr


def test_promtool_accepts_the_prometheus_config_and_its_rules() -> None:
    promtool_succeeds("check", "config", str(MONITORING / "prometheus.yml"))


def test_the_alerts_fire_on_what_they_watch_new_counter_series_included() -> None:
    """promtool runs monitoring/alerts_test.yml: synthetic series through the real rules."""
    promtool_succeeds("test", "rules", str(MONITORING / "alerts_test.yml"))
