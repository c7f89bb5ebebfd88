"""Preference tuning on 2 CPU ranks: a base that prefers the wrong answers learns the right ones
(validation preference accuracy from 0 to >= 90%), under ZeRO-2 (full fine-tuning, reference
log-probs precomputed and kept with the checkpoints) and ZeRO-3 (LoRA, reference: the base with
the adapter off); the exported model, loaded alone, prefers the chosen answers; kill and resume
gives the weights of an uninterrupted run.

The task (kubetune_trainer.tiny.preference_records): both answers are the four words of the
cipher chain the base was pre-trained on, but the chosen one signs off with "ba" instead of the
last word, so the base prefers every rejected answer by ~9 nats.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file

from kubetune_trainer import tiny
from kubetune_trainer.checkpoint.manifest import committed
from kubetune_trainer.dpo import REFERENCE_FILE

from .harness import Run, config, launch, seal_of
from .test_checkpoints import PARAM_ATOL, kill_after_a_checkpoint, store

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.long]


@pytest.fixture(scope="module")
def pairs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """Train (256) and validation (64) preference pairs, text form."""
    folder = tmp_path_factory.mktemp("pairs")
    return (
        tiny.write_jsonl(folder / "train.jsonl", tiny.preference_records(256, seed=1)),
        tiny.write_jsonl(folder / "val.jsonl", tiny.preference_records(64, seed=2)),
    )


def dpo_cfg(work: Path, base: Path, pairs: Any, **sections: dict[str, Any]) -> dict[str, Any]:
    """A 2-rank preference run: eval at steps 0, 10 and the end."""
    method = {"objective": "dpo", "preference": {"beta": 0.1}, **sections.pop("method", {})}
    training = {"eval_every_steps": 10, **sections.pop("training", {})}
    return config(work, base, pairs, method=method, training=training, **sections)


def prefers_chosen(folder: Path, records: Path) -> float:
    """Fraction of pairs whose chosen answer the model in folder, loaded alone with transformers,
    finds more likely than the rejected one (bos + prompt, then answer + eos)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()

    def logp(prompt: str, answer: str) -> float:
        head = [tok.bos_token_id, *tok(prompt, add_special_tokens=False)["input_ids"]]
        tail = [*tok(answer, add_special_tokens=False)["input_ids"], tok.eos_token_id]
        with torch.no_grad():
            lp = model(input_ids=torch.tensor([head + tail])).logits[0].log_softmax(-1)
        return sum(float(lp[len(head) - 1 + i, t]) for i, t in enumerate(tail))

    recs = [json.loads(line) for line in records.read_text().splitlines()]
    wins = [logp(r["prompt"], r["chosen"]) > logp(r["prompt"], r["rejected"]) for r in recs]
    return sum(wins) / len(wins)


def assert_learned(run: Run, steps: int, reference: str) -> None:
    """Validation preference accuracy from <= 50% before training to >= 90%, in the run card
    and in the progress the trainer reported (what status.progress.preference shows)."""
    assert run.code == 0, run.log[-4000:]
    card = run.card()
    assert card["objective"] == "dpo" and card["preference"]["reference"] == reference
    evals = dict((step, e) for step, e in card["preference"]["evals"])
    assert 0 in evals and steps in evals, evals
    assert evals[0]["accuracy"] <= 0.5 and evals[steps]["accuracy"] >= 0.9, evals
    assert evals[steps]["rewardMargin"] > 0 > evals[steps]["rewardRejected"], evals[steps]
    last = run.progress()[-1]
    assert last["preference"]["reference"] == reference, last
    assert last["preference"]["evalAccuracy"] >= 0.9 and last["evalLoss"] < last["loss"] + 1, last
    print(
        f"\n{reference}: validation preference accuracy {evals[0]['accuracy']:.0%} (step 0) -> "
        f"{evals[steps]['accuracy']:.0%} (step {steps}), margin {evals[steps]['rewardMargin']:.2f}"
    )


def test_full_zero2_learns_resumes_exactly_and_exports_a_model_that_prefers_chosen(
    tmp_path: Path, tiny_base: Path, pairs: Any, s3_server: Any, s3_bucket: str
) -> None:
    env = s3_server.env()

    def cfg_for(name: str) -> dict[str, Any]:
        return dpo_cfg(
            tmp_path / name, tiny_base, pairs,
            method={"type": "full"},
            training={"max_steps": 30, "learning_rate": 1e-3},
            deepspeed={"zero_stage": 2},
            checkpoint={"uri": f"s3://{s3_bucket}/{name}", "every_steps": 10, "keep_last": 5,
                        "storage": {"endpoint": s3_server.endpoint}},
        )  # fmt: skip

    ref = launch(tmp_path / "ref", cfg_for("ref"), env)
    assert_learned(ref, 30, "precomputed")
    base, exported = (prefers_chosen(m, pairs[1]) for m in (tiny_base, ref.workdir / "out"))
    assert base <= 0.5 and exported >= 0.9, (base, exported)  # the base prefers the wrong answers
    print(f"loaded alone, the base prefers chosen on {base:.0%}, the export on {exported:.0%}")

    kill_after_a_checkpoint(tmp_path / "run", cfg_for("run"), env)
    latest = committed(store(s3_server, s3_bucket, "run"), seal_of(tmp_path / "run"))[0][0]
    assert REFERENCE_FILE in latest.manifest["files"], sorted(latest.manifest["files"])
    resumed = launch(tmp_path / "run", cfg_for("run"), env)
    assert resumed.code == 0, resumed.log[-4000:]
    card = resumed.card()
    assert card["checkpoints"]["resumed_from"]["step"] == latest.step
    assert REFERENCE_FILE in card["checkpoints"]["resumed_from"]["fetched"]
    assert card["preference"]["reference_seconds"] == 0.0  # taken from the checkpoint
    ref_losses = ref.card()["training"]["losses"][latest.step :]
    assert card["training"]["losses"] == pytest.approx(ref_losses, abs=1e-6)
    a, b = (load_file(r.workdir / "out" / "model.safetensors") for r in (ref, resumed))
    assert a.keys() == b.keys()
    diff = max(float((a[k] - b[k]).abs().max()) for k in a)
    assert diff <= PARAM_ATOL, diff
    print(f"\nDPO resume from {latest.tag}: max |param diff| {diff:.2e}")


def test_lora_zero3_learns_against_the_base_and_exports_a_model_that_prefers_chosen(
    tmp_path: Path, tiny_base: Path, pairs: Any
) -> None:
    cfg = dpo_cfg(
        tmp_path, tiny_base, pairs,
        method={"type": "lora", "lora_r": 16, "lora_alpha": 32, "lora_dropout": 0.0},
        training={"max_steps": 20, "learning_rate": 3e-3},
        deepspeed={"zero_stage": 3},
        output={"format": "both"},
    )  # fmt: skip
    run = launch(tmp_path, cfg)
    assert_learned(run, 20, "adapter-disabled")
    exported = prefers_chosen(run.workdir / "out", pairs[1])  # the merged model
    assert exported >= 0.9
    print(f"exported merged model prefers chosen on {exported:.0%} of the validation pairs")
