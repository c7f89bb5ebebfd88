"""What differs between each manifest in examples/ and the job the e2e suite runs from it.

This is the one place that says it: SUBSTITUTIONS lists, per example, every field that is
patched and why; everything not listed runs exactly as a user copies it (method, LoRA settings,
ZeRO stage and offload, data format and packing, micro-batch size, URIs, secrets, run policy,
and every non-FineTuneJob document, such as the PersistentVolumeClaims).

What cannot exist here: GPUs (so CPU workers, and LoRA where the example uses 4-bit QLoRA, which
needs CUDA; the CPU trainer image also lacks DeepSpeed's compiled CPU Adam, so optimizer offload
is off while parameter offload stays), the public Hugging Face Hub and AWS S3 (so
tests/fixtures/hub.py and MinIO on the test node's address, reached through the endpoint fields
a user of a private hub or MinIO sets), multi-billion parameter checkpoints (so a tiny model of
the same architecture family is what the hub, bucket or claim holds under the example's name),
and hours of training (so a few steps). Everything else runs as in a cluster: the operator
installed by helm, trainer pods from the built CPU trainer image (uid 65532, read-only root) on
a real kubelet, claims bound to hostPath PersistentVolumes.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from kubetune_operator.api import constants as c

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "examples"
DROP = object()  # a Patch value: remove the field
KUBETUNE_KINDS = (c.KIND, c.SWEEP_KIND, c.SCHEDULE_KIND)


@dataclass(frozen=True)
class Patch:
    """One field of the FineTuneJob changed, and why.

    `path` is dotted under the FineTuneJob (spec.model.endpoint); a trailing `[+]` appends to a
    list. A string value may name what only exists at run time: {s3} (the S3 endpoint) or
    {hub} (the Hub endpoint).
    """

    path: str
    value: Any
    why: str


STEPS = 2
SEQ = 64
# Where the job spec is: in a FineTuneJob, and in the template of a sweep or a schedule.
JOB = "spec"
TEMPLATE = "spec.template.spec"

NO_GPU = "no GPUs here: CPU workers"
NO_ROOM = "this node has 2 CPUs and a few GiB, far less than the GPU node the example sizes for"


def on_cpu(root: str = JOB) -> list[Patch]:
    """CPU workers on a small node."""
    return [
        Patch(f"{root}.resources.gpusPerNode", 0, NO_GPU),
        Patch(f"{root}.resources.requests", DROP, NO_ROOM),
        Patch(f"{root}.resources.limits", DROP, NO_ROOM),
    ]


def few_steps(root: str = JOB, steps: int = STEPS) -> list[Patch]:
    """maxSteps instead of epochs (the API takes one of the two)."""
    short = f"{steps} steps instead of hours"
    return [
        Patch(f"{root}.training.epochs", DROP, short),
        Patch(f"{root}.training.maxSteps", steps, short),
    ]


def s3_here(*stores: str, root: str = JOB) -> list[Patch]:
    """The S3 server here for these stores (a MinIO user sets the same field)."""
    return [
        Patch(f"{root}.{s}.endpoint", "{s3}", "MinIO on the test node's address instead of AWS S3")
        for s in stores
    ]


def hub_here(*stores: str) -> list[Patch]:
    """The local Hub for these hf:// stores, the way docs/concepts.md says to reach a private
    hub or a mirror."""
    return [
        Patch(
            f"spec.{s}.endpoint",
            "{hub}",
            "tests/fixtures/hub.py on the node's address, not huggingface.co",
        )
        for s in stores
    ]


def short_sequences(length: int = SEQ, root: str = JOB) -> list[Patch]:
    """Sequences the tiny data fills: its records are ~25 tokens."""
    return [
        Patch(
            f"{root}.dataset.maxSeqLength",
            length,
            "the tiny data's records are ~25 tokens; packed to the example's length there would "
            "be fewer sequences than one micro-batch",
        )
    ]


# examples/<name>.yaml -> the patches its e2e run applies (quickstart is a local example:
# tests/e2e/test_quickstart.py runs it unchanged with `kubetune run`).
SUBSTITUTIONS: dict[str, list[Patch]] = {
    "lora-2x8-s3": [
        *s3_here("model", "dataset", "checkpoint"),
        *on_cpu(),
        *few_steps(),
        *short_sequences(),
    ],
    "full-zero3-offload": [
        *hub_here("model"),
        *s3_here("dataset", "checkpoint"),
        *on_cpu(),
        Patch(
            "spec.deepspeed.offload.optimizer",
            "none",
            "the CPU trainer image has no compiled DeepSpeed CPU Adam (the release image has; "
            "trainer/Dockerfile); ZeRO-3 parameter offload to CPU stays",
        ),
        Patch("spec.training.maxSteps", STEPS, f"{STEPS} steps instead of hours"),
        Patch(
            "spec.training.globalBatchSize",
            4,
            "64 sequences a step is 32 accumulation steps on one CPU process",
        ),
        *short_sequences(),
    ],
    "pvc-model-cache": [
        *on_cpu(),
        *few_steps(),
        *short_sequences(),
    ],
    "qlora-single-gpu": [
        *hub_here("model", "dataset"),
        Patch("spec.method.type", "lora", "4-bit QLoRA needs CUDA (tests/gpu runs qlora)"),
        *on_cpu(),
        *few_steps(),
        *short_sequences(),
    ],
    "kueue-queued": [
        *hub_here("model"),
        *s3_here("dataset", "checkpoint"),
        *on_cpu(),
        *few_steps(),
        *short_sequences(),
    ],
    "gang-coscheduling": [
        *hub_here("model"),
        *s3_here("dataset", "checkpoint"),
        *on_cpu(),
        Patch(
            "spec.resources.nodes",
            2,
            "one 2-CPU node holds two workers: a gang of 2, bound together or not at all",
        ),
        *few_steps(),
        *short_sequences(),
    ],
}

# Sweeps and schedules: run by the long e2e tests (make test-long) of tests/e2e/test_examples.py.
LIFECYCLE_SUBSTITUTIONS: dict[str, list[Patch]] = {
    "sweep-lr-rank": [
        *s3_here("model", "dataset", "checkpoint", root=TEMPLATE),
        *on_cpu(TEMPLATE),
        *few_steps(TEMPLATE, steps=8),
        Patch(
            f"{TEMPLATE}.training.evalEverySteps",
            2,
            "the median rule needs minEvals (3) evaluations before a trial's last step",
        ),
        *short_sequences(root=TEMPLATE),
    ],
    "schedule-new-data": [
        *s3_here("model", "dataset", "checkpoint", root=TEMPLATE),
        *on_cpu(TEMPLATE),
        *few_steps(TEMPLATE, steps=8),
        *short_sequences(root=TEMPLATE),
        Patch("spec.trigger.newData.pollInterval", "5s", "the test waits seconds, not minutes"),
    ],
}

# Examples whose workers a gang scheduler binds -> the scheduler their comment says runs in the
# cluster (spec.resources.gang.scheduler); the e2e run starts it beside the default one.
GANG_SCHEDULER = {"gang-coscheduling": "coscheduling"}

# Examples that queue through Kueue -> the platform objects their comment tells the user to
# apply first (examples/<file>.yaml), applied unchanged but for the flavor's node labels.
KUEUE_PLATFORM = {"kueue-queued": "kueue/gpu-queue"}
FLAVOR_NODE_LABELS_WHY = (
    "the test node has no instance-type label: the GPU flavor selects it by its hostname label"
)

# Run with `kubetune run`, unchanged: by tests/e2e/test_quickstart.py and
# tests/e2e/test_dpo_example.py.
LOCAL_EXAMPLES = ("quickstart", "dpo-lora")


def documents(example: str) -> list[dict[str, Any]]:
    """Every YAML document of examples/<example>.yaml."""
    return [d for d in yaml.safe_load_all((EXAMPLES / f"{example}.yaml").read_text()) if d]


def _fill(value: Any, here: dict[str, str]) -> Any:
    """Run-time values ({s3}, {hub}) put into a patch value."""
    if isinstance(value, str):
        return value.format(**here)
    if isinstance(value, dict):
        return {k: _fill(v, here) for k, v in value.items()}
    return value


def apply_patch(doc: dict[str, Any], patch: Patch, here: dict[str, str]) -> None:
    """Set, append to or remove the field `patch.path` of doc."""
    *parents, leaf = patch.path.split(".")
    node = doc
    for key in parents:
        node = node.setdefault(key, {})
    if leaf.endswith("[+]"):
        node.setdefault(leaf[:-3], []).append(_fill(patch.value, here))
    elif patch.value is DROP:
        node.pop(leaf, None)
    else:
        node[leaf] = _fill(patch.value, here)


def substitutions(example: str) -> list[Patch]:
    """What the e2e run of an example patches."""
    return (SUBSTITUTIONS | LIFECYCLE_SUBSTITUTIONS)[example]


def patched(example: str, here: dict[str, str]) -> list[dict[str, Any]]:
    """The example's documents with its kubetune object patched as the substitutions say."""
    docs = copy.deepcopy(documents(example))
    for doc in docs:
        if doc.get("kind") in KUBETUNE_KINDS:
            for patch in substitutions(example):
                apply_patch(doc, patch, here)
    return docs


def substituted_fields(example: str) -> str:
    """The patched fields, short, for the results table."""
    seen: list[str] = []
    for patch in substitutions(example):
        field = patch.path.removeprefix("spec.").removesuffix("[+]")
        if patch.path.endswith("[+]"):
            field += f" += {patch.value['name']}"
        elif patch.value is DROP:
            field = f"-{field}"
        elif not str(patch.value).startswith("{"):
            field += f"={patch.value}"
        if field not in seen:
            seen.append(field)
    if example in KUEUE_PLATFORM:
        seen.append(f"{KUEUE_PLATFORM[example]}.yaml: ResourceFlavor nodeLabels")
    return ", ".join(seen)


def platform_documents(example: str, node_labels: dict[str, str]) -> list[dict[str, Any]]:
    """The Kueue platform objects an example queues through, its ResourceFlavor selecting
    nodes by `node_labels` (FLAVOR_NODE_LABELS_WHY); [] for an example without Kueue."""
    if example not in KUEUE_PLATFORM:
        return []
    docs = documents(KUEUE_PLATFORM[example])
    for doc in docs:
        if doc["kind"] == "ResourceFlavor":
            doc["spec"]["nodeLabels"] = dict(node_labels)
    return docs
