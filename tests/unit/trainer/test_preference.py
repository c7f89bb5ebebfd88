"""Preference records (text and chat) become pairs with labels on the answers only, bad records
are refused naming file:line and the field, and the rewards reach status, Prometheus and the
`kubetune run` summary."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import generate_latest

from kubetune_operator.local.report import read_curve, summary
from kubetune_trainer import data, preference, progress, tiny
from kubetune_trainer.config import DataConfig, PreferenceConfig
from kubetune_trainer.dpo import REFERENCE_FILE, Dpo
from kubetune_trainer.errors import BadInputError
from kubetune_trainer.metrics import Metrics

pytestmark = pytest.mark.unit


@pytest.fixture(scope="module")
def tok() -> Any:
    records = list(tiny.preference_records(8)) + list(tiny.synthetic_records(8, "B", "chat"))
    texts = tiny.corpus_texts([{"text": r["prompt"] + r["rejected"]} for r in records[:8]])
    return tiny.build_tokenizer(texts + tiny.corpus_texts(records[8:]))


def pairs_of(tok: Any, tmp: Path, records: list[Any], length: int = 64) -> data.Dataset:
    train = tiny.write_jsonl(tmp / "pairs.jsonl", records)
    cfg = DataConfig(train=str(train), max_seq_length=length)
    return data.build_dataset(tok, cfg, 0, tmp / "cache")


def test_text_pair_is_chosen_then_rejected_with_loss_on_answers(tok: Any, tmp_path: Path) -> None:
    ds = pairs_of(tok, tmp_path, [{"prompt": "map ba", "chosen": " ke", "rejected": " do du"}])
    assert ds.format == "preference"
    (chosen_ids, _), (rejected_ids, rejected_labels) = preference.halves(ds.train[0])
    prompt = [tok.bos_token_id, *tok("map ba", add_special_tokens=False)["input_ids"]]
    answer = [*tok(" do du", add_special_tokens=False)["input_ids"], tok.eos_token_id]
    assert rejected_ids == prompt + answer
    assert rejected_labels == [data.IGNORE] * len(prompt) + answer
    assert chosen_ids[: len(prompt)] == prompt and chosen_ids[-1] == tok.eos_token_id
    assert ds.train[0].positions == [*range(len(chosen_ids)), *range(len(rejected_ids))]


def test_chat_pair_renders_the_template_and_learns_only_the_answers(
    tok: Any, tmp_path: Path
) -> None:
    (record,) = tiny.preference_records(1, form="chat")
    ds = pairs_of(tok, tmp_path, [record])
    (c_ids, c_labels), (r_ids, r_labels) = preference.halves(ds.train[0])
    prompt = tok.apply_chat_template(record["prompt"], tokenize=False, add_generation_prompt=True)
    whole = tok.apply_chat_template(record["prompt"] + record["rejected"], tokenize=False)
    assert tok.decode(r_ids) == whole
    start = r_labels.index(next(x for x in r_labels if x != data.IGNORE))
    assert tok.decode(r_ids[:start]) == prompt  # every prompt token is masked
    assert tok.decode(c_labels[start:]) == record["chosen"][0]["content"] + "<|end|>"
    assert c_ids[:start] == r_ids[:start]


def test_an_answer_cut_away_by_max_seq_length_drops_the_pair(tok: Any, tmp_path: Path) -> None:
    long_prompt = "map " + " ".join(["ba"] * 30)
    ds = pairs_of(
        tok,
        tmp_path,
        [
            {"prompt": long_prompt, "chosen": " ke", "rejected": " do"},
            {"prompt": "map ba", "chosen": " ke ki ko", "rejected": " do du da de"},
        ],
        length=16,
    )
    assert len(ds.train) == 1 and ds.train[0].chosen_length is not None
    assert all(len(s) <= 16 for s, _ in preference.halves(ds.train[0]))


@pytest.mark.parametrize(
    ("record", "message"),
    [
        ({"prompt": "map ba", "chosen": 3, "rejected": " do"}, "field 'chosen' must be a string"),
        ({"chosen": " ke", "rejected": " do"}, "field 'prompt' must be a string or a list"),
        (
            {"prompt": "map ba", "chosen": " ke", "rejected": [{"role": "assistant"}]},
            "field 'rejected' must be a string, as the prompt is",
        ),
        (
            {"prompt": [{"role": "user", "content": "map ba"}], "chosen": [], "rejected": "do"},
            "field 'chosen' must be a non-empty list",
        ),
        (
            {"prompt": [{"role": "user"}], "chosen": "ke", "rejected": "do"},
            "prompt[0] needs string 'role' and 'content'",
        ),
    ],
)
def test_bad_pair_names_file_line_and_field(
    tok: Any, tmp_path: Path, record: dict[str, Any], message: str
) -> None:
    good = {"prompt": "map ba", "chosen": " ke", "rejected": " do"}
    with pytest.raises(BadInputError) as err:
        pairs_of(tok, tmp_path, [good, good, record])
    assert f"{tmp_path / 'pairs.jsonl'}:3: {message}" in str(err.value)


def test_objective_and_records_must_agree() -> None:
    with pytest.raises(BadInputError, match="objective dpo needs preference records"):
        preference.check_objective("dpo", "chat")
    with pytest.raises(BadInputError, match="need spec\\.method\\.objective dpo"):
        preference.check_objective("sft", "preference")
    preference.check_objective("dpo", "preference")


@pytest.mark.parametrize(
    ("method", "loss", "continued", "reference"),
    [
        ("full", "sigmoid", False, "precomputed"),
        ("partial", "ipo", False, "precomputed"),
        ("lora", "sigmoid", False, "adapter-disabled"),
        ("qlora", "robust", False, "adapter-disabled"),
        ("lora", "sigmoid", True, "precomputed"),  # the adapter it continues is the reference
        ("full", "simpo", False, "none"),
        ("lora", "simpo", True, "none"),
    ],
)
def test_reference_by_method(method: str, loss: str, continued: bool, reference: str) -> None:
    assert preference.reference_mode(method, loss, continued) == reference


def dpo_after_a_step(method: str = "full") -> Dpo:
    """A Dpo whose last step and last evaluation are known: 3 pairs, the third a tie."""
    import torch

    dpo = Dpo(
        PreferenceConfig(), method, data.Dataset([], [], "preference"), 0, True, False, 1, 0, 1
    )
    step, val = preference.Totals(), preference.Totals()
    loss = torch.tensor([0.1, 0.2, 0.3])
    step.add(loss, torch.tensor([1.0, 0.5, 0.0]), torch.tensor([-1.0, 0.0, 0.0]))
    val.add(loss, torch.tensor([2.0, 1.0, 0.5]), torch.tensor([0.0, 0.0, 1.0]))
    dpo.train_summary, dpo.eval_summary = step.summary(), val.summary()
    return dpo


def test_preference_progress_fits_the_status_schema() -> None:
    from kubetune_operator.api.status import Progress

    snap = progress.Progress(
        step=5, total_steps=10, epoch=0.5, preference=dpo_after_a_step().progress()
    )
    parsed = Progress.model_validate(progress.status_progress(snap)).preference
    assert parsed is not None and parsed.reference == "precomputed"
    assert parsed.accuracy == pytest.approx(2 / 3) and parsed.eval_accuracy == pytest.approx(2 / 3)
    assert parsed.reward_margin == pytest.approx(2.5 / 3)
    assert parsed.eval_reward_chosen == pytest.approx(3.5 / 3)


def test_prometheus_shows_rewards_and_accuracy_by_split() -> None:
    m = Metrics("job-a", 0)
    dpo = dpo_after_a_step()
    m.preference("train", dpo.train_summary)
    m.preference("eval", dpo.eval_summary)
    text = generate_latest(m.registry).decode()
    assert 'kubetune_trainer_preference_accuracy{job="job-a",rank="0",split="eval"} 0.666' in text
    assert 'kubetune_trainer_reward_margin{job="job-a",rank="0",split="train"} 0.833' in text
    assert 'kubetune_trainer_reward_rejected{job="job-a",rank="0",split="train"} -0.333' in text


def test_sft_metrics_show_no_preference_series() -> None:
    text = generate_latest(Metrics("job-a", 0).registry).decode()
    assert "kubetune_trainer_reward_margin{" not in text


def test_kubetune_run_summary_shows_accuracy_margin_and_reference(tmp_path: Path) -> None:
    """What the trainer's progress file holds, as `kubetune run` sums it up."""
    sink = progress.FileSink(str(tmp_path / "progress.jsonl"))
    dpo = dpo_after_a_step("lora")
    before = {"reference": "adapter-disabled", "evalAccuracy": 0.0, "evalRewardMargin": 0.0,
              "evalRewardChosen": 0.0, "evalRewardRejected": 0.0}  # fmt: skip
    sink.report(progress.Progress(1, 2, 0.5, 0.69, 0.69, eval_step=0, preference=before))
    sink.report(
        progress.Progress(2, 2, 1.0, 0.2, 0.3, eval_step=2, preference=dpo.progress()), force=True
    )
    lines = summary(read_curve(tmp_path / "progress.jsonl"))
    assert "preference accuracy (validation): 0% (step 0) -> 67% (step 2)" in lines
    assert any(x.startswith("reward margin (validation): 0.0000 -> 0.8333") for x in lines), lines
    assert any(x.startswith("reference: adapter-disabled: the base model") for x in lines), lines


def test_checkpointed_reference_must_cover_the_pairs(tmp_path: Path) -> None:
    import torch
    from safetensors.torch import save

    pairs = [data.Example([1, 2], [data.IGNORE, 2], [0, 1], chosen_length=1)] * 3
    dpo = Dpo(
        PreferenceConfig(), "full", data.Dataset(pairs, pairs[:1], "preference"), 0, True, False, 1, 0, 1
    )  # fmt: skip
    body = save({"train": torch.zeros(2, 2, dtype=torch.float64), "validation": torch.zeros(1, 2)})
    with pytest.raises(BadInputError, match="cover 2 train pairs, the data has 3"):
        dpo.prepare(None, {REFERENCE_FILE: body})
    with pytest.raises(BadInputError, match=f"has no {REFERENCE_FILE}"):
        dpo.prepare(None, {})
    good = save({"train": torch.ones(3, 2, dtype=torch.float64), "validation": torch.ones(1, 2)})
    dpo.prepare(None, {REFERENCE_FILE: good})
    assert json.loads(json.dumps(dpo.card()))["reference"] == "precomputed"
    assert set(dpo.attachments()) == {REFERENCE_FILE}
