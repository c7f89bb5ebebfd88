"""Render a Plan into the child objects of one attempt (plain dicts, ready for server-side apply).

Pure builders: same Plan, same objects, byte for byte. Every object carries the job's labels
and a controller owner reference, so deleting the job garbage-collects all of it.
"""

from __future__ import annotations

from typing import Any

from kubetune_operator.api import constants as c
from kubetune_operator.reconcile import gang, names, workload
from kubetune_operator.reconcile.env import pod_command, secret_env, torchrun_env, user_env
from kubetune_operator.reconcile.plan import (
    CONFIG_DIR,
    HOME_DIR,
    PVC_MOUNT_ROOT,
    SCRATCH_DIR,
    TRAINER_UID,
    Plan,
)

GPU_RESOURCE = "nvidia.com/gpu"
# Caches the trainer (torch, DeepSpeed, Triton, Hugging Face) writes, all on writable emptyDirs:
# the container's root filesystem is read-only.
CACHE_ENV = {
    "HOME": HOME_DIR,
    "XDG_CACHE_HOME": f"{HOME_DIR}/.cache",
    "TORCH_EXTENSIONS_DIR": f"{HOME_DIR}/.cache/torch_extensions",
    "TRITON_CACHE_DIR": f"{HOME_DIR}/.cache/triton",
    "MPLCONFIGDIR": f"{HOME_DIR}/.config/matplotlib",
    "HF_HOME": f"{SCRATCH_DIR}/hf",
}


def owner_reference(plan: Plan) -> dict[str, Any]:
    """Controller reference to the FineTuneJob (garbage collection follows it)."""
    return {
        "apiVersion": c.API_VERSION,
        "kind": c.KIND,
        "name": plan.name,
        "uid": plan.uid or "",
        "controller": True,
        "blockOwnerDeletion": True,
    }


def job_labels(plan: Plan) -> dict[str, str]:
    """Labels every child carries."""
    return {c.LABEL_JOB: plan.name, c.LABEL_MANAGED_BY: c.MANAGED_BY}


def metadata(plan: Plan, name: str, extra_labels: dict[str, str] | None = None) -> dict[str, Any]:
    """Object metadata with labels and the owner reference."""
    return {
        "name": name,
        "namespace": plan.namespace,
        "labels": {**job_labels(plan), **(extra_labels or {})},
        "ownerReferences": [owner_reference(plan)],
    }


def service_account(plan: Plan) -> dict[str, Any]:
    """The per-job identity of the workers."""
    return {
        "apiVersion": "v1",
        "kind": "ServiceAccount",
        "metadata": metadata(plan, names.trainer_identity(plan.name)),
    }


def role(plan: Plan) -> dict[str, Any]:
    """May read this job, patch only its status and post events (rank 0 announces downloads,
    checkpoints, evaluations and the export on the job): nothing else, no other job."""
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "Role",
        "metadata": metadata(plan, names.trainer_identity(plan.name)),
        "rules": [
            {
                "apiGroups": [c.GROUP],
                "resources": [c.PLURAL, f"{c.PLURAL}/status"],
                "resourceNames": [plan.name],
                "verbs": ["get"],
            },
            {
                "apiGroups": [c.GROUP],
                "resources": [f"{c.PLURAL}/status"],
                "resourceNames": [plan.name],
                "verbs": ["patch"],
            },
            {"apiGroups": [""], "resources": ["events"], "verbs": ["create"]},
        ],
    }


def role_binding(plan: Plan) -> dict[str, Any]:
    """Binds the per-job Role to the per-job ServiceAccount."""
    ident = names.trainer_identity(plan.name)
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "RoleBinding",
        "metadata": metadata(plan, ident),
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": ident},
        "subjects": [{"kind": "ServiceAccount", "name": ident, "namespace": plan.namespace}],
    }


def config_map(plan: Plan) -> dict[str, Any]:
    """The TrainerConfig of this attempt (no secrets: those come from secretKeyRef env)."""
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": metadata(
            plan, names.config_map(plan.name, plan.attempt), {c.LABEL_ATTEMPT: str(plan.attempt)}
        ),
        "data": {plan.config_path.rsplit("/", 1)[-1]: plan.trainer_config.to_json()},
    }


def service(plan: Plan) -> dict[str, Any]:
    """Headless Service: DNS for rank 0's <pod>.<service> before it is ready (rendezvous).

    It selects only worker 0, the one address every worker dials (MASTER_ADDR): selecting
    the whole gang would make the EndpointSlice controller rewrite the slice on every worker's
    state change, work for the API server that grows with the pod count and serves nobody.
    """
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": metadata(plan, names.service(plan.name)),
        "spec": {
            "clusterIP": "None",
            "publishNotReadyAddresses": True,
            "selector": {
                c.LABEL_JOB: plan.name,
                c.LABEL_ROLE: "worker",
                c.LABEL_WORKER_INDEX: "0",
            },
            "ports": [{"name": "rendezvous", "port": plan.master_port, "protocol": "TCP"}],
        },
    }


def worker_selector(plan: Plan) -> dict[str, Any]:
    """The job's worker pods, every attempt."""
    return {"matchLabels": {c.LABEL_JOB: plan.name, c.LABEL_ROLE: "worker"}}


def network_policy(plan: Plan) -> dict[str, Any]:
    """Ingress to the workers only from the job's own workers (rendezvous, NCCL and gloo use
    ports chosen at run time, so any port) and, when a metrics namespace is set, scrapes of
    the metrics port from there. Egress stays open: stores and hubs are outside the cluster."""
    ingress: list[dict[str, Any]] = [{"from": [{"podSelector": worker_selector(plan)}]}]
    if plan.metrics_namespace:
        ingress.append(
            {
                "from": [
                    {
                        "namespaceSelector": {
                            "matchLabels": {"kubernetes.io/metadata.name": plan.metrics_namespace}
                        }
                    }
                ],
                "ports": [{"port": c.TRAINER_METRICS_PORT, "protocol": "TCP"}],
            }
        )
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": metadata(plan, names.network_policy(plan.name)),
        "spec": {
            "podSelector": worker_selector(plan),
            "policyTypes": ["Ingress"],
            "ingress": ingress,
        },
    }


def resources(plan: Plan) -> dict[str, Any]:
    """Requests and limits; GPUs go in both (extended resources need requests == limits)."""
    r = plan.spec.resources
    requests: dict[str, Any] = {k: str(v) for k, v in (r.requests or {}).items()}
    limits: dict[str, Any] = {k: str(v) for k, v in (r.limits or {}).items()}
    if r.gpus_per_node > 0:
        requests[GPU_RESOURCE] = str(r.gpus_per_node)
        limits[GPU_RESOURCE] = str(r.gpus_per_node)
    out: dict[str, Any] = {}
    if requests:
        out["requests"] = requests
    if limits:
        out["limits"] = limits
    return out


def shm_size(plan: Plan) -> str:
    """/dev/shm size: spec.resources.sharedMemory, or 1Gi per trainer process."""
    return plan.spec.resources.shared_memory or f"{plan.processes_per_node}Gi"


def volumes(plan: Plan) -> list[dict[str, Any]]:
    """Config, /dev/shm, scratch (/tmp), home (caches), and one volume per pvc:// claim."""
    vols: list[dict[str, Any]] = [
        {"name": "config", "configMap": {"name": names.config_map(plan.name, plan.attempt)}},
        {"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": shm_size(plan)}},
        {"name": "scratch", "emptyDir": {}},
        {"name": "home", "emptyDir": {}},
    ]
    for i, claim in enumerate(plan.pvc_claims):
        vols.append({"name": f"pvc-{i}", "persistentVolumeClaim": {"claimName": claim}})
    return vols


def volume_mounts(plan: Plan) -> list[dict[str, Any]]:
    """Mount points matching `volumes`."""
    mounts: list[dict[str, Any]] = [
        {"name": "config", "mountPath": CONFIG_DIR, "readOnly": True},
        {"name": "dshm", "mountPath": "/dev/shm"},
        {"name": "scratch", "mountPath": SCRATCH_DIR},
        {"name": "home", "mountPath": HOME_DIR},
    ]
    for i, claim in enumerate(plan.pvc_claims):
        mounts.append({"name": f"pvc-{i}", "mountPath": f"{PVC_MOUNT_ROOT}/{claim}"})
    return mounts


def container_env(plan: Plan, index: int) -> list[dict[str, Any]]:
    """Rendezvous env, pod identity, secrets (by reference) and the user's env last."""
    base = torchrun_env(
        plan, index, names.master_host(plan.name, plan.attempt, plan.namespace), plan.master_port
    )
    env: list[dict[str, Any]] = [{"name": k, "value": v} for k, v in base.items()]
    env.extend({"name": k, "value": v} for k, v in CACHE_ENV.items())
    env.append({"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}})
    env.extend(secret_env(plan))
    env.extend(user_env(plan))
    return env


def gang_marks(plan: Plan) -> tuple[dict[str, str], dict[str, str]]:
    """(labels, annotations) putting a worker into the job's PodGroup, if it has a gang."""
    g = plan.spec.resources.gang
    if g is None:
        return {}, {}
    return gang.worker_marks(g.scheduler, names.gang(plan.name))


def pod_labels(plan: Plan, index: int) -> dict[str, str]:
    """Worker labels, plus the gang scheduler's group label when the job has a gang.

    No Kueue label: a queued job is admitted through its Workload, and a queue-name label
    would make Kueue's pod integration (where enabled) count the workers a second time.
    """
    return {
        c.LABEL_ATTEMPT: str(plan.attempt),
        c.LABEL_ROLE: "worker",
        c.LABEL_WORKER_INDEX: str(index),
        **gang_marks(plan)[0],
    }


def pod_security() -> dict[str, Any]:
    """Pod-level part of the 'restricted' Pod Security Standard, as the image's user."""
    return {
        "runAsNonRoot": True,
        "runAsUser": TRAINER_UID,
        "runAsGroup": TRAINER_UID,
        "fsGroup": TRAINER_UID,
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def container_security() -> dict[str, Any]:
    """Container-level part of the 'restricted' Pod Security Standard, and a read-only root
    (the trainer writes only to its emptyDirs: /tmp, HOME, /dev/shm)."""
    return {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "runAsNonRoot": True,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def metrics_ports(processes: int) -> list[dict[str, Any]]:
    """One container port per trainer process: each rank serves its own metrics on
    TRAINER_METRICS_PORT + its local rank, and the PodMonitor scrapes every port named metrics
    or metrics-<local rank>."""
    return [
        {
            "name": c.TRAINER_METRICS_PORT_NAME + (f"-{r}" if r else ""),
            "containerPort": c.TRAINER_METRICS_PORT + r,
        }
        for r in range(processes)
    ]


def worker_pod(plan: Plan, index: int) -> dict[str, Any]:
    """Worker `index` of the attempt: stable hostname under the headless Service."""
    r = plan.spec.resources
    name = names.worker_pod(plan.name, plan.attempt, index)
    meta = metadata(plan, name, pod_labels(plan, index))
    annotations = gang_marks(plan)[1]
    if annotations:
        meta["annotations"] = annotations
    container: dict[str, Any] = {
        "name": "trainer",
        "image": plan.image,
        "command": pod_command(plan),
        "env": container_env(plan, index),
        "ports": [
            {"name": "rendezvous", "containerPort": plan.master_port},
            *metrics_ports(plan.processes_per_node),
        ],
        "resources": resources(plan),
        "volumeMounts": volume_mounts(plan),
        "securityContext": container_security(),
    }
    if plan.image_pull_policy:
        container["imagePullPolicy"] = plan.image_pull_policy
    spec: dict[str, Any] = {
        "hostname": name,
        "subdomain": names.service(plan.name),
        "restartPolicy": "Never",
        "serviceAccountName": r.service_account_name or names.trainer_identity(plan.name),
        "automountServiceAccountToken": True,  # rank 0 reports progress with it
        "enableServiceLinks": False,  # no env var per Service in the namespace
        "terminationGracePeriodSeconds": plan.grace_seconds,
        "securityContext": pod_security(),
        "containers": [container],
        "volumes": volumes(plan),
    }
    optional = {
        "nodeSelector": plan.node_selector,
        "tolerations": list(plan.tolerations),
        "affinity": r.affinity,
        "priorityClassName": r.priority_class_name,
        "schedulerName": plan.scheduler_name,
    }
    spec.update({k: v for k, v in optional.items() if v})
    if r.image_pull_secrets:
        spec["imagePullSecrets"] = [{"name": s} for s in r.image_pull_secrets]
    return {"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": spec}


def pod_group(plan: Plan) -> dict[str, Any] | None:
    """The PodGroup of the job's gang scheduler (minMember = the workers), if it has a gang."""
    r = plan.spec.resources
    if r.gang is None:
        return None
    return gang.pod_group(
        scheduler=r.gang.scheduler,
        name=names.gang(plan.name),
        metadata=metadata(plan, names.gang(plan.name)),
        workers=plan.nodes,
        requests=resources(plan).get("requests", {}),
        timeout_seconds=r.gang.schedule_timeout_seconds,
        volcano_queue=r.gang.volcano_queue,
        priority_class=r.priority_class_name,
    )


def shared_children(plan: Plan) -> list[dict[str, Any]]:
    """Objects every attempt needs before its pods: identity, config, DNS, the gang's group."""
    out = []
    if plan.spec.resources.service_account_name is None:
        out += [service_account(plan), role(plan), role_binding(plan)]
    if plan.network_policy:
        out.append(network_policy(plan))
    group = pod_group(plan)
    return [*out, config_map(plan), service(plan), *([group] if group else [])]


def kueue_workload(
    plan: Plan, queue: str, active: bool, priority: workload.Priority | None
) -> dict[str, Any]:
    """The Kueue Workload of a queued job: one pod set shaped like its workers."""
    return workload.workload(
        name=names.workload(plan.name, plan.uid),
        namespace=plan.namespace,
        job_uid=plan.uid or "",
        owner=owner_reference(plan),
        labels=job_labels(plan),
        queue=queue,
        workers=plan.nodes,
        worker_spec=worker_pod(plan, 0)["spec"],
        active=active,
        priority=priority,
    )


def render(plan: Plan) -> list[dict[str, Any]]:
    """All child objects of the attempt, in the order they should be applied."""
    return [*shared_children(plan), *(worker_pod(plan, i) for i in range(plan.nodes))]
