"""Each example manifest says how to run it and is a valid FineTuneJob offline."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from harness.binaries import REPO_ROOT
from kubetune_operator.api.schedule import FineTuneSchedule
from kubetune_operator.api.spec import FineTuneJob
from kubetune_operator.api.sweep import FineTuneSweep
from kubetune_operator.cli import KINDS, check_document

pytestmark = pytest.mark.unit

EXAMPLES = sorted((REPO_ROOT / "examples").glob("*.yaml"))
EXPECTED = {
    "lora-2x8-s3",
    "full-zero3-offload",
    "qlora-single-gpu",
    "kueue-queued",
    "gang-coscheduling",
    "pvc-model-cache",
    "dpo-lora",
    "sweep-lr-rank",
    "schedule-new-data",
}


def header(path: Path) -> str:
    """The leading comment block of a file."""
    lines = []
    for line in path.read_text().splitlines():
        if not line.startswith("#"):
            break
        lines.append(line)
    return "\n".join(lines)


def test_every_scenario_has_an_example() -> None:
    assert {p.stem for p in EXAMPLES} >= EXPECTED


@pytest.mark.parametrize("example", EXAMPLES, ids=[p.stem for p in EXAMPLES])
def test_example_starts_with_how_to_run_it(example: Path) -> None:
    text = header(example)
    assert text, f"{example.name}: no comment on top"
    assert f"examples/{example.name}" in text and (
        "kubectl apply" in text or "kubetune run" in text
    )


@pytest.mark.parametrize("example", EXAMPLES, ids=[p.stem for p in EXAMPLES])
def test_example_validates_offline(example: Path) -> None:
    """One job, sweep or schedule per example; valid, and so is every job it makes."""
    docs = [d for d in yaml.safe_load_all(example.read_text()) if d and d.get("kind") in KINDS]
    assert len(docs) == 1
    assert check_document(docs[0]) == []


def test_scenarios_are_what_their_names_say() -> None:
    def spec(stem: str) -> FineTuneJob:
        docs = yaml.safe_load_all((REPO_ROOT / "examples" / f"{stem}.yaml").read_text())
        return FineTuneJob.model_validate(next(d for d in docs if d.get("kind") == "FineTuneJob"))

    lora = spec("lora-2x8-s3").spec
    assert (lora.method.type, lora.resources.nodes, lora.resources.gpus_per_node) == ("lora", 2, 8)
    assert lora.model.source.startswith("s3://")
    full = spec("full-zero3-offload").spec
    assert full.method.type == "full" and full.deepspeed.zero_stage == 3
    assert full.deepspeed.offload is not None and full.deepspeed.offload.optimizer == "cpu"
    qlora = spec("qlora-single-gpu").spec
    assert qlora.method.type == "qlora" and qlora.world_size == 1
    assert spec("kueue-queued").spec.queue is not None
    gang = spec("gang-coscheduling").spec.resources.gang
    assert gang is not None and gang.scheduler == "coscheduling"
    assert spec("pvc-model-cache").spec.model.source.startswith("pvc://")
    dpo = spec("dpo-lora").spec
    assert dpo.method.objective == "dpo" and dpo.dataset.format == "preference"


def test_every_example_runs_end_to_end_with_listed_substitutions() -> None:
    """Each example is run by the e2e suite: locally as written, or in the cluster with only
    the fields tests/e2e/examples.py lists patched; the patched objects are still valid (the
    jobs of sweeps and schedules too) and run on CPU for a few steps."""
    from tests.e2e.examples import (
        LIFECYCLE_SUBSTITUTIONS,
        LOCAL_EXAMPLES,
        SUBSTITUTIONS,
        patched,
    )

    listed = set(SUBSTITUTIONS) | set(LOCAL_EXAMPLES) | set(LIFECYCLE_SUBSTITUTIONS)
    assert {p.stem for p in EXAMPLES} == listed
    here = {"s3": "http://127.0.0.1:9000", "hub": "http://127.0.0.1:9001"}
    models = {"FineTuneJob": FineTuneJob, "FineTuneSweep": FineTuneSweep}
    models["FineTuneSchedule"] = FineTuneSchedule
    for example in [*SUBSTITUTIONS, *LIFECYCLE_SUBSTITUTIONS]:
        docs = [d for d in patched(example, here) if d.get("kind") in models]
        obj = models[docs[0]["kind"]].model_validate(docs[0])
        spec = obj.spec.template.spec if hasattr(obj.spec, "template") else obj.spec
        assert spec.resources.gpus_per_node == 0 and spec.training.max_steps, example


def test_lifecycle_examples_are_what_their_names_say() -> None:
    def doc(stem: str) -> dict[str, object]:
        return dict(yaml.safe_load((REPO_ROOT / "examples" / f"{stem}.yaml").read_text()))

    sweep = FineTuneSweep.model_validate(doc("sweep-lr-rank")).spec
    assert [p.path for p in sweep.parameters] == ["training.learningRate", "method.lora.r"]
    assert sweep.algorithm == "grid" and sweep.early_termination is not None
    schedule = FineTuneSchedule.model_validate(doc("schedule-new-data")).spec
    assert schedule.trigger is not None and schedule.gate.exact_match
