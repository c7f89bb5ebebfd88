"""One table of FineTuneSweep and FineTuneSchedule manifests for both validators: the apiserver
(tests/k8s/test_lifecycle_crds.py) and the offline models behind `kubetune validate`
(tests/unit/lifecycle/test_lifecycle_api.py)."""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from tests.unit.api_cases import _drop, _set

Manifest = dict[str, Any]


def job_spec() -> dict[str, Any]:
    """A small valid FineTuneJob spec: LoRA on CPU, validation held out, evaluations every 5."""
    return {
        "model": {"source": "s3://models/base"},
        "dataset": {"train": "s3://data/train.jsonl", "validationSplit": 0.1},
        "method": {"type": "lora", "lora": {"r": 8}},
        "training": {"maxSteps": 20, "evalEverySteps": 5},
        "resources": {"gpusPerNode": 0},
        "output": {"uri": "s3://models/out"},
    }


def valid_sweep(name: str = "valid-sweep") -> Manifest:
    """A 2x2 grid over learning rate and LoRA rank with early termination."""
    return {
        "apiVersion": "kubetune.dev/v1alpha1",
        "kind": "FineTuneSweep",
        "metadata": {"name": name},
        "spec": {
            "template": {"spec": job_spec()},
            "parameters": [
                {"path": "training.learningRate", "values": [0.0003, 0.003]},
                {"path": "method.lora.r", "values": [4, 16]},
            ],
            "parallelism": 2,
            "earlyTermination": {"minEvals": 2, "minCompletedTrials": 2},
        },
    }


def valid_schedule(name: str = "valid-schedule") -> Manifest:
    """A nightly retraining with a gate on a benchmark."""
    return {
        "apiVersion": "kubetune.dev/v1alpha1",
        "kind": "FineTuneSchedule",
        "metadata": {"name": name},
        "spec": {
            "schedule": "0 3 * * *",
            "template": {"spec": job_spec()},
            "gate": {"benchmark": "s3://data/bench.jsonl", "maxEvalLossIncrease": 0.01},
        },
    }


@dataclass(frozen=True)
class Case:
    """A manifest one edit away from valid, and what both validators must name."""

    id: str
    base: Callable[[str], Manifest]
    edits: tuple[Callable[[Manifest], None], ...]
    field: str

    def manifest(self, name: str = "invalid") -> Manifest:
        m = copy.deepcopy(self.base(name))
        for edit in self.edits:
            edit(m)
        return m


def sweep_case(id: str, field: str, *edits: Callable[[Manifest], None]) -> Case:
    return Case(id, valid_sweep, edits, field)


def schedule_case(id: str, field: str, *edits: Callable[[Manifest], None]) -> Case:
    return Case(id, valid_schedule, edits, field)


def _param(index: int, value: dict[str, Any]) -> Callable[[Manifest], None]:
    def apply(m: Manifest) -> None:
        m["spec"]["parameters"][index] = value

    return apply


INVALID_CASES: list[Case] = [
    sweep_case("sweep-unknown-path", "training.batchSize",
               _param(0, {"path": "training.batchSize", "values": [8]})),
    sweep_case("sweep-path-is-a-uri", "model.source",
               _param(0, {"path": "model.source", "values": ["s3://bkt/b"]})),
    sweep_case("sweep-learning-rate-above-1", "training.learningRate takes numbers > 0 and <= 1",
               _param(0, {"path": "training.learningRate", "values": [0.001, 5]})),
    sweep_case("sweep-rank-not-whole", "method.lora.r takes whole numbers",
               _param(1, {"path": "method.lora.r", "values": [4, 8.5]})),
    sweep_case("sweep-scheduler-unknown", "training.scheduler takes one of",
               _param(0, {"path": "training.scheduler", "choices": ["cosine", "step"]})),
    sweep_case("sweep-numbers-for-enum", "training.scheduler takes one of",
               _param(0, {"path": "training.scheduler", "values": [1, 2]})),
    sweep_case("sweep-choices-for-number", "training.learningRate takes numbers",
               _param(0, {"path": "training.learningRate", "choices": ["0.1"]})),
    sweep_case("sweep-values-not-numbers", "values",
               _param(0, {"path": "training.learningRate", "values": ["fast"]})),
    sweep_case("sweep-range-on-enum", "training.precision takes one of",
               _set("spec.algorithm", "random"), _set("spec.maxTrials", 4),
               _param(0, {"path": "training.precision", "min": 0, "max": 1})),
    sweep_case("sweep-range-out-of-bounds", "training.warmupRatio takes numbers >= 0 and < 1",
               _set("spec.algorithm", "random"), _set("spec.maxTrials", 4),
               _param(0, {"path": "training.warmupRatio", "min": 0.1, "max": 1.5})),
    sweep_case("sweep-values-and-range", "set exactly one of values, choices, or min and max",
               _param(0, {"path": "training.learningRate", "values": [0.1], "min": 0.1, "max": 0.2})),
    sweep_case("sweep-min-above-max", "min must be less than max",
               _set("spec.algorithm", "random"), _set("spec.maxTrials", 4),
               _param(0, {"path": "training.learningRate", "min": 0.1, "max": 0.01})),
    sweep_case("sweep-log-from-zero", "scale log needs min > 0",
               _set("spec.algorithm", "random"), _set("spec.maxTrials", 4),
               _param(0, {"path": "training.warmupRatio", "min": 0, "max": 0.5, "scale": "log"})),
    sweep_case("sweep-grid-with-range", "algorithm grid needs values or choices",
               _param(0, {"path": "training.learningRate", "min": 0.0001, "max": 0.01})),
    sweep_case("sweep-random-without-max-trials", "spec.maxTrials is required",
               _set("spec.algorithm", "random")),
    sweep_case("sweep-duplicate-path", "each path may appear once",
               _param(1, {"path": "training.learningRate", "values": [0.01]})),
    sweep_case("sweep-termination-without-evals", "spec.template.spec.training.evalEverySteps",
               _drop("spec.template.spec.training.evalEverySteps")),
    sweep_case("sweep-termination-on-train-loss", "spec.objective.metric evalLoss",
               _set("spec.objective", {"metric": "loss"})),
    sweep_case("sweep-eval-loss-without-validation", "needs validation data",
               _drop("spec.template.spec.dataset.validationSplit"),
               _drop("spec.earlyTermination")),
    sweep_case("sweep-no-parameters", "spec.parameters", _set("spec.parameters", [])),
    sweep_case("sweep-parallelism-0", "spec.parallelism", _set("spec.parallelism", 0)),
    sweep_case("sweep-max-trials-above-1000", "spec.maxTrials", _set("spec.maxTrials", 1001)),
    sweep_case("sweep-template-invalid", "set either epochs or maxSteps",
               _set("spec.template.spec.training.epochs", 2)),
    sweep_case("sweep-template-unknown-field", "batchSize",
               _set("spec.template.spec.training.batchSize", 8)),
    sweep_case("sweep-name-too-long", "metadata.name", _set("metadata.name", "s" * 41)),
    schedule_case("schedule-and-trigger", "set exactly one of schedule and trigger.newData",
                  _set("spec.trigger", {"newData": {"prefix": "s3://data/incoming/"}})),
    schedule_case("schedule-neither", "set exactly one of schedule and trigger.newData",
                  _drop("spec.schedule")),
    schedule_case("schedule-cron-four-fields", "spec.schedule", _set("spec.schedule", "0 3 * *")),
    schedule_case("schedule-deadline-without-cron", "spec.startingDeadlineSeconds needs spec.schedule",
                  _drop("spec.schedule"), _set("spec.startingDeadlineSeconds", 60),
                  _set("spec.trigger", {"newData": {"prefix": "s3://data/incoming/"}})),
    schedule_case("schedule-prefix-not-s3", "spec.trigger.newData.prefix",
                  _drop("spec.schedule"),
                  _set("spec.trigger", {"newData": {"prefix": "file:///data/incoming/"}})),
    schedule_case("schedule-poll-interval-words", "spec.trigger.newData.pollInterval",
                  _drop("spec.schedule"),
                  _set("spec.trigger", {"newData": {"prefix": "s3://data/in/", "pollInterval": "5 minutes"}})),
    schedule_case("schedule-concurrency-unknown", "spec.concurrencyPolicy",
                  _set("spec.concurrencyPolicy", "Queue")),
    schedule_case("schedule-gate-without-benchmark", "spec.gate.benchmark",
                  _drop("spec.gate.benchmark")),
    schedule_case("schedule-negative-margin", "spec.gate.maxEvalLossIncrease",
                  _set("spec.gate.maxEvalLossIncrease", -0.1)),
    schedule_case("schedule-exact-match-margin-alone", "spec.gate.maxExactMatchDecrease needs",
                  _set("spec.gate.maxExactMatchDecrease", 0.05)),
    schedule_case("schedule-template-invalid", "spec.method.type qlora needs GPUs",
                  _set("spec.template.spec.method.type", "qlora")),
    schedule_case("schedule-name-too-long", "metadata.name", _set("metadata.name", "s" * 38)),
]  # fmt: skip
