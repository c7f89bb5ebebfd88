"""The Helm chart renders, lints and refuses bad values, with the real helm binary."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from harness.binaries import REPO_ROOT
from tests.unit.chart.helm import CHART, VALUES_EXAMPLES, by_kind, render, run_helm, template_args

pytestmark = pytest.mark.unit

VALUE_SETS = [pytest.param([], id="defaults")] + [
    pytest.param([p], id=p.stem) for p in VALUES_EXAMPLES
]


@pytest.mark.parametrize("values", VALUE_SETS)
def test_lint_passes(values: list[Path], tmp_path: Path) -> None:
    args = ["lint", str(CHART), "--strict", "--kube-version", "1.34.4"]
    for v in values:
        args += ["--values", str(v)]
    out = run_helm(args, tmp_path)
    assert "1 chart(s) linted, 0 chart(s) failed" in out.stdout


def test_template_and_lint_need_no_kube_version(tmp_path: Path) -> None:
    """`helm template charts/kubetune` and `helm lint` with no cluster and no --kube-version:
    the helm that hack/build-control-plane.sh builds assumes the Kubernetes it was built with
    (not helm's fallback v1.20, which the chart's kubeVersion >=1.30 refuses)."""
    out = run_helm(["template", "kt", str(CHART)], tmp_path, check=False)
    assert out.returncode == 0, (
        f"{out.stderr}\n(a stale helm? run hack/build-control-plane.sh helm)"
    )
    assert "kind: Deployment" in out.stdout
    lint = run_helm(["lint", str(CHART), "--strict"], tmp_path, check=False)
    assert lint.returncode == 0, lint.stdout + lint.stderr


@pytest.mark.parametrize("values", VALUE_SETS)
def test_template_renders_operator_objects(values: list[Path], tmp_path: Path) -> None:
    docs = render(tmp_path, values)
    kinds = {d["kind"] for d in docs}
    assert {"Deployment"} <= kinds
    deployment = by_kind(docs, "Deployment")[0]
    pod = deployment["spec"]["template"]["spec"]
    assert pod["serviceAccountName"]
    container = pod["containers"][0]
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["KUBETUNE_TRAINER_IMAGE"].startswith(("ghcr.io/", "registry.example.com/"))


def test_default_checkpoint_store_reaches_the_operator(tmp_path: Path) -> None:
    """trainer.defaultCheckpoint becomes the settings the operator reads (OperatorSettings)."""
    from kubetune_operator.reconcile.plan import DefaultCheckpointStore, OperatorSettings

    values = tmp_path / "ckpt.yaml"
    values.write_text(
        "trainer:\n  defaultCheckpoint:\n    uri: s3://platform-ckpt/kubetune\n"
        "    endpoint: http://minio:9000\n    credentialsSecret: ckpt-keys\n"
    )
    docs = render(tmp_path, [values])
    container = by_kind(docs, "Deployment")[0]["spec"]["template"]["spec"]["containers"][0]
    env = {e["name"]: e["value"] for e in container["env"] if "value" in e}
    with pytest.MonkeyPatch.context() as mp:
        for name, value in env.items():
            mp.setenv(name, value)
        settings = OperatorSettings.from_env()
    assert settings.default_checkpoint == DefaultCheckpointStore(
        "s3://platform-ckpt/kubetune", endpoint="http://minio:9000", credentials_secret="ckpt-keys"
    )
    plain = by_kind(render(tmp_path, []), "Deployment")[0]["spec"]["template"]["spec"]
    assert "KUBETUNE_DEFAULT_CHECKPOINT_URI" not in str(plain)


def test_typo_in_values_is_refused(tmp_path: Path) -> None:
    bad = tmp_path / "typo.yaml"
    bad.write_text("metrics:\n  serviceMonitr:\n    enabled: true\n")
    out = run_helm(template_args([bad]), tmp_path, check=False)
    assert out.returncode != 0
    assert "serviceMonitr" in out.stderr and "not allowed" in out.stderr


@pytest.mark.parametrize(
    "override, complaint",
    [
        ("replicas: 2\n", "replicas"),
        ("operator:\n  logLevel: verbose\n", "logLevel"),
        ("rbac:\n  scope: namespaced\n", "namespaces"),
        ("image:\n  digest: latest\n", "digest"),
        ("trainer:\n  defaultCheckpoint:\n    uri: https://bucket/x\n", "uri"),
    ],
)
def test_bad_values_name_the_field(override: str, complaint: str, tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(override)
    out = run_helm(template_args([bad]), tmp_path, check=False)
    assert out.returncode != 0
    assert complaint in out.stderr


def test_defaults_are_cluster_wide_with_restricted_security(tmp_path: Path) -> None:
    docs = render(tmp_path, [])
    assert len(by_kind(docs, "ClusterRole")) == 1
    assert not by_kind(docs, "Role")
    pod = by_kind(docs, "Deployment")[0]["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
    sc = pod["containers"][0]["securityContext"]
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["capabilities"]["drop"] == ["ALL"]
    args = pod["containers"][0]["args"]
    assert "--all-namespaces" in args and "--peering=kubetune" in args
    assert {d["kind"] for d in docs} >= {
        "ServiceAccount",
        "ClusterRoleBinding",
        "Service",
        "PodDisruptionBudget",
        "ClusterKopfPeering",
    }


def test_namespaced_mode_grants_roles_only_in_listed_namespaces(tmp_path: Path) -> None:
    docs = render(tmp_path, [CHART / "values-examples" / "namespaced.yaml"])
    assert not by_kind(docs, "ClusterRole") and not by_kind(docs, "ClusterRoleBinding")
    assert sorted(r["metadata"]["namespace"] for r in by_kind(docs, "Role")) == ["team-a", "team-b"]
    assert sorted(r["metadata"]["namespace"] for r in by_kind(docs, "RoleBinding")) == [
        "team-a",
        "team-b",
    ]
    assert sorted(p["metadata"]["namespace"] for p in by_kind(docs, "KopfPeering")) == [
        "team-a",
        "team-b",
    ]
    args = by_kind(docs, "Deployment")[0]["spec"]["template"]["spec"]["containers"][0]["args"]
    assert "--namespace=team-a" in args and "--namespace=team-b" in args
    assert "--all-namespaces" not in args


def finalizer_grants(role: dict[str, Any]) -> list[list[str]]:
    """The verbs of each rule of a (Cluster)Role on finetunejobs/finalizers."""
    return [
        r["verbs"]
        for r in role["rules"]
        if "kubetune.dev" in r["apiGroups"] and "finetunejobs/finalizers" in r["resources"]
    ]


@pytest.mark.parametrize(
    "values, kind",
    [([], "ClusterRole"), ([CHART / "values-examples" / "namespaced.yaml"], "Role")],
    ids=["cluster", "namespaced"],
)
def test_operator_may_update_finalizers_to_block_owner_deletion(
    values: list[Path], kind: str, tmp_path: Path
) -> None:
    """OwnerReferencesPermissionEnforcement (OpenShift) refuses blockOwnerDeletion on a child
    unless its creator may update the owner's finalizers."""
    roles = by_kind(render(tmp_path, values), kind)
    assert roles and all(finalizer_grants(r) == [["update"]] for r in roles)


def test_monitoring_objects_render_when_enabled(tmp_path: Path) -> None:
    docs = render(tmp_path, [CHART / "values-examples" / "monitoring.yaml"])
    kinds = {d["kind"] for d in docs}
    assert {"ServiceMonitor", "PodMonitor", "PrometheusRule", "ConfigMap"} <= kinds
    dashboard = by_kind(docs, "ConfigMap")[0]
    assert json.loads(dashboard["data"]["kubetune.json"])["panels"]
    alerts = {
        r["alert"] for g in by_kind(docs, "PrometheusRule")[0]["spec"]["groups"] for r in g["rules"]
    }
    assert {"KubetuneJobFailed", "KubetuneJobStalled", "KubetuneJobRestartsRising"} <= alerts


def scraped_ports(endpoint: dict[str, Any], pod: dict[str, Any]) -> set[int]:
    """The container ports of `pod` that Prometheus scrapes for a PodMonitor endpoint: pod
    discovery makes one target per declared port, the Prometheus Operator keeps those named
    `port` when the endpoint sets it, then the endpoint's keep/drop relabelings apply (regexes
    anchored at both ends, as in Prometheus)."""
    kept = set()
    for container in pod["spec"]["containers"]:
        for port in container.get("ports", []):
            labels = {
                "__meta_kubernetes_pod_container_port_name": port.get("name", ""),
                "__meta_kubernetes_pod_container_port_number": str(port["containerPort"]),
            }
            rules = [
                {"sourceLabels": ["__meta_kubernetes_pod_container_port_name"],
                 "regex": endpoint["port"], "action": "keep"}
            ] if endpoint.get("port") else []  # fmt: skip
            rules += endpoint.get("relabelings", [])
            if all(_keeps(rule, labels) for rule in rules):
                kept.add(int(port["containerPort"]))
    return kept


def _keeps(rule: dict[str, Any], labels: dict[str, str]) -> bool:
    action = rule.get("action", "replace")
    if action not in ("keep", "drop"):
        return True
    value = ";".join(labels.get(s, "") for s in rule["sourceLabels"])
    matched = re.fullmatch(rule.get("regex", "(.*)"), value) is not None
    return matched if action == "keep" else not matched


def test_podmonitor_scrapes_every_trainer_process(tmp_path: Path) -> None:
    """A pod of 4 trainer processes serves metrics on 4 ports; the PodMonitor scrapes each one
    (not only local rank 0), and not the rendezvous port."""
    from kubetune_operator.reconcile.plan import OperatorSettings, resolve
    from kubetune_operator.reconcile.render import render as render_children
    from tests.unit.operator.helpers import job

    docs = render(tmp_path, [CHART / "values-examples" / "monitoring.yaml"])
    (endpoint,) = by_kind(docs, "PodMonitor")[0]["spec"]["podMetricsEndpoints"]
    children = render_children(resolve(job(), 1, OperatorSettings()))
    pod = by_kind(children, "Pod")[0]
    env = {e["name"]: e.get("value") for e in pod["spec"]["containers"][0]["env"]}
    assert env["NPROC_PER_NODE"] == "4"
    assert scraped_ports(endpoint, pod) == {9400, 9401, 9402, 9403}


def test_standalone_mode_has_no_peering(tmp_path: Path) -> None:
    docs = render(tmp_path, [CHART / "values-examples" / "minimal.yaml"])
    kinds = {d["kind"] for d in docs}
    assert not kinds & {"ClusterKopfPeering", "KopfPeering", "Service", "PodDisruptionBudget"}
    args = by_kind(docs, "Deployment")[0]["spec"]["template"]["spec"]["containers"][0]["args"]
    assert "--standalone" in args and "--verbose" in args
    assert "--priority" not in args[0]


def test_chart_crds_equal_generated_crds() -> None:
    generated = sorted(p.name for p in (REPO_ROOT / "crds").glob("*.yaml"))
    assert generated, "crds/ is empty"
    for name in generated:
        copy = CHART / "crds" / name
        assert copy.exists(), f"{copy} missing: run `make chart`"
        assert copy.read_text() == (REPO_ROOT / "crds" / name).read_text(), (
            f"{copy} is stale: run `make chart`"
        )


def undocumented_keys(values_text: str, schema: dict[str, Any]) -> list[str]:
    """Chart-defined keys of values.yaml without a comment line right above them.

    Blocks the schema describes key by key need no comment of their own (their keys have one);
    leaves and free-form Kubernetes objects (resources, affinity, ...) do.
    """
    lines = values_text.splitlines()
    stack: list[tuple[int, str]] = []
    missing = []
    for i, line in enumerate(lines):
        m = re.match(r"^(\s*)([A-Za-z][\w.-]*):(\s|$)", line)
        if not m:
            continue
        indent, key = len(m.group(1)), m.group(2)
        while stack and stack[-1][0] >= indent:
            stack.pop()
        parent: dict[str, Any] | None = schema
        for _, k in stack:
            parent = (parent or {}).get("properties", {}).get(k)
        stack.append((indent, key))
        if parent is None or "properties" not in parent:
            continue  # inside a free-form object: documented by its parent's comment
        node = parent["properties"].get(key, {})
        has_children = line.rstrip().endswith(":")
        if has_children and "properties" in node:
            continue
        if not (i and lines[i - 1].strip().startswith("#")):
            missing.append(f"values.yaml:{i + 1}: {'.'.join(k for _, k in stack)}")
    return missing


def test_every_value_is_documented() -> None:
    schema = json.loads((CHART / "values.schema.json").read_text())
    missing = undocumented_keys((CHART / "values.yaml").read_text(), schema)
    assert not missing, "\n".join(missing)


def test_documentation_check_catches_a_bare_key() -> None:
    schema = json.loads((CHART / "values.schema.json").read_text())
    assert undocumented_keys("# -- documented\nreplicaCount: 1\nnameOverride: x\n", schema) == [
        "values.yaml:3: nameOverride"
    ]


def test_schema_forbids_unknown_keys_at_every_level() -> None:
    schema = json.loads((CHART / "values.schema.json").read_text())
    loose = []

    def walk(node: dict, path: str) -> None:
        if node.get("type") == "object" and "properties" in node:
            if node.get("additionalProperties") is not False:
                loose.append(path or "/")
            for key, sub in node["properties"].items():
                walk(sub, f"{path}/{key}")

    walk(schema, "")
    assert not loose, f"objects that accept unknown keys: {loose}"
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    assert set(values) <= set(schema["properties"])


def test_every_setting_the_chart_passes_is_read_by_the_operator(tmp_path: Path) -> None:
    """Each KUBETUNE_* variable of the operator container is read somewhere in the operator."""
    source = "\n".join(
        p.read_text() for p in (REPO_ROOT / "operator" / "kubetune_operator").rglob("*.py")
    )
    container = by_kind(render(tmp_path, []), "Deployment")[0]["spec"]["template"]["spec"][
        "containers"
    ][0]
    names = [e["name"] for e in container["env"] if e["name"].startswith("KUBETUNE_")]
    unread = [n for n in names if n != "KUBETUNE_OPERATOR_MODULE" and n not in source]
    assert names and not unread, f"set by the chart but read by no operator code: {unread}"
    assert "$KUBETUNE_OPERATOR_MODULE" in container["args"][0]


def grants(role: dict[str, Any]) -> dict[tuple[str, str], set[str]]:
    """(API group, resource) -> verbs of a (Cluster)Role."""
    out: dict[tuple[str, str], set[str]] = {}
    for rule in role["rules"]:
        for group in rule["apiGroups"]:
            for res in rule["resources"]:
                out.setdefault((group, res), set()).update(rule["verbs"])
    return out


def test_queued_and_gang_jobs_are_granted_their_workloads_and_pod_groups(tmp_path: Path) -> None:
    """Cluster scope: Workloads (and their status), PodGroups of both gang schedulers, and the
    cluster-scoped objects a Kueue admission names, read only."""
    (role,) = by_kind(render(tmp_path, []), "ClusterRole")
    g = grants(role)
    assert g[("kueue.x-k8s.io", "workloads")] >= {"list", "watch", "create", "patch"}
    assert g[("kueue.x-k8s.io", "workloads/status")] == {"patch"}
    assert g[("scheduling.x-k8s.io", "podgroups")] == {"create", "get", "patch"}
    assert g[("scheduling.volcano.sh", "podgroups")] == {"create", "get", "patch"}
    for read in [("kueue.x-k8s.io", "resourceflavors"), ("scheduling.k8s.io", "priorityclasses")]:
        assert g[read] == {"get"}


def values_file(tmp_path: Path, values: dict[str, Any]) -> Path:
    path = tmp_path / "values.yaml"
    path.write_text(yaml.safe_dump(values))
    return path


def test_namespaced_scope_with_kueue_adds_only_a_read_only_cluster_role(tmp_path: Path) -> None:
    rbac = {"rbac": {"scope": "namespaced", "namespaces": ["team-a"]}}
    docs = render(tmp_path, [values_file(tmp_path, rbac)])
    (cluster_role,) = by_kind(docs, "ClusterRole")
    assert {frozenset(v) for v in grants(cluster_role).values()} == {frozenset({"get"})}
    assert ("kueue.x-k8s.io", "workloads") in grants(by_kind(docs, "Role")[0])
    off = render(tmp_path, [values_file(tmp_path, {**rbac, "queueing": {"kueue": False}})])
    assert not by_kind(off, "ClusterRole")
    assert ("kueue.x-k8s.io", "workloads") not in grants(by_kind(off, "Role")[0])


def test_gang_scheduler_names_reach_the_operator(tmp_path: Path) -> None:
    names = {"queueing": {"coschedulingSchedulerName": "gang-scheduler"}}
    docs = render(tmp_path, [values_file(tmp_path, names)])
    env = by_kind(docs, "Deployment")[0]["spec"]["template"]["spec"]["containers"][0]["env"]
    values = {e["name"]: e.get("value") for e in env}
    assert values["KUBETUNE_COSCHEDULING_SCHEDULER"] == "gang-scheduler"
    assert values["KUBETUNE_VOLCANO_SCHEDULER"] == "volcano"


def test_status_guard_covers_every_operator_owned_status_field(tmp_path: Path) -> None:
    """The admission policy and the operator's list of the status fields it owns are one list."""
    from kubetune_operator.reconcile.decision import OPERATOR_OWNED

    policy = by_kind(render(tmp_path, []), "ValidatingAdmissionPolicy")[0]
    guarded = [
        v["message"].split()[0].removeprefix("status.") for v in policy["spec"]["validations"]
    ]
    assert guarded == list(OPERATOR_OWNED)
    condition = policy["spec"]["matchConditions"][0]["expression"]
    assert "system:serviceaccount:kubetune:kt-kubetune" in condition


def operator_env(text: str) -> dict[str, str]:
    """The literal env of the operator container in rendered chart text."""
    docs = [d for d in yaml.safe_load_all(text) if d]
    container = by_kind(docs, "Deployment")[0]["spec"]["template"]["spec"]["containers"][0]
    return {e["name"]: e["value"] for e in container["env"] if "value" in e}


@pytest.mark.parametrize(
    "extra, expected",
    [
        ([], "false"),  # no sign of a plugin that enforces NetworkPolicies
        (["--api-versions", "cilium.io/v2"], "true"),
        (["--api-versions", "crd.projectcalico.org/v1"], "true"),
        (["--set", "networkPolicy.enabled=true"], "true"),
        (["--api-versions", "cilium.io/v2", "--set", "networkPolicy.enabled=false"], "false"),
    ],
)
def test_job_network_policies_are_on_where_the_cluster_enforces_them(
    extra: list[str], expected: str, tmp_path: Path
) -> None:
    out = run_helm([*template_args([]), *extra], tmp_path)
    env = operator_env(out.stdout)
    assert env["KUBETUNE_NETWORK_POLICY"] == expected
    assert env["KUBETUNE_METRICS_NAMESPACE"] == "monitoring"


def test_policy_values_reach_the_operator_as_a_valid_policy(tmp_path: Path) -> None:
    from kubetune_operator.api.platform import PlatformPolicy

    default = PlatformPolicy.model_validate_json(
        operator_env(run_helm(template_args([]), tmp_path).stdout)["KUBETUNE_POLICY"]
    )
    assert default == PlatformPolicy()  # allows anything
    args = [
        *template_args([]),
        "--set-json", 'policy.allowedImages=["registry.example.com/ml/*"]',
        "--set-json", 'policy.allowedEndpoints.checkpoint=["https://minio.storage:9000"]',
        "--set", "policy.allowTrustRemoteCode=false",
    ]  # fmt: skip
    env = operator_env(run_helm(args, tmp_path).stdout)
    policy = PlatformPolicy.from_env(env)
    assert policy.allowed_images == ["registry.example.com/ml/*"]
    assert policy.allowed_endpoints.checkpoint == ["https://minio.storage:9000"]
    assert policy.allow_trust_remote_code is False
