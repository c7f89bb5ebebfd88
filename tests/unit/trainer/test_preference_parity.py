"""Preference losses and rewards equal TRL's on a fixed batch (TRL is a test-only dependency).

Each variant, for full fine-tuning (reference: a frozen copy of the start weights, which the
trainer precomputes) and for LoRA (reference: the base with the adapter switched off): the same
records go through kubetune's preference format and TRL's own tokenization (checked equal), then
kubetune's log-probs, loss and rewards are compared with what TRL's DPOTrainer (or CPOTrainer, for
SimPO) computes and logs, in padded and in packed batches.
"""

from __future__ import annotations

import copy
import logging
from pathlib import Path
from typing import Any

import pytest
import torch

from kubetune_trainer import data, preference, tiny
from kubetune_trainer.config import DataConfig, MethodConfig, PreferenceConfig
from kubetune_trainer.model import apply_method

pytestmark = pytest.mark.unit

ATOL = 1e-5
TEXT = [
    {"prompt": "map ba", "chosen": " ke ki", "rejected": " do du da"},
    {"prompt": "map ke", "chosen": " la", "rejected": " mo mu"},
    {"prompt": "map zi", "chosen": " po pa pe", "rejected": " fo"},
    {"prompt": "map go", "chosen": " ta ti", "rejected": " ta tu"},
]
CHAT = [
    {
        "prompt": [{"role": "system", "content": "cipher"}, {"role": "user", "content": r["prompt"]}],
        "chosen": [{"role": "assistant", "content": r["chosen"].strip()}],
        "rejected": [{"role": "assistant", "content": r["rejected"].strip()}],
    }
    for r in TEXT
]  # fmt: skip
# (loss, label smoothing, sft weight): every variant, smoothing where it applies, RPO's NLL term
DPO_VARIANTS = [
    ("sigmoid", 0.0, 0.0),
    ("sigmoid", 0.1, 0.0),
    ("ipo", 0.0, 0.0),
    ("hinge", 0.0, 0.0),
    ("robust", 0.1, 0.0),
    ("sigmoid", 0.0, 0.5),
]


@pytest.fixture(scope="module")
def tok() -> Any:
    texts = tiny.corpus_texts([{"text": r["prompt"] + r["chosen"] + r["rejected"]} for r in TEXT])
    return tiny.build_tokenizer(texts)


@pytest.fixture(scope="module")
def models(tok: Any) -> dict[str, tuple[Any, Any]]:
    """(policy, reference) for full fine-tuning and for LoRA, the policy moved off the start."""
    torch.manual_seed(0)
    ref = tiny.build_model(len(tok), seed=1, hidden=64).eval()
    full = copy.deepcopy(ref)
    lora = apply_method(
        copy.deepcopy(ref), MethodConfig(type="lora", lora_r=4, lora_dropout=0.0), 0, False
    ).eval()
    with torch.no_grad():
        for p in full.parameters():
            p.add_(0.05 * torch.randn_like(p))
        for n, p in lora.named_parameters():
            if "lora_B" in n:
                p.copy_(0.2 * torch.randn_like(p))
    return {"full": (full, ref), "lora": (lora, None)}


def with_bos(tok: Any, records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Text records as TRL must see them to tokenize as kubetune does (bos first; TRL adds eos)."""
    return [{**r, "prompt": tok.bos_token + r["prompt"]} for r in records]


def ours(
    tok: Any,
    records: list[dict[str, Any]],
    cfg: PreferenceConfig,
    policy: Any,
    ref: Any,
    packed: bool,
) -> dict[str, Any]:
    """kubetune's pairs, loss and rewards of the batch."""
    recs = [data.Record(r, f"batch:{i + 1}") for i, r in enumerate(records)]
    pairs = data.to_sequences(tok, recs, "preference", DataConfig(train="-", max_seq_length=64))
    batch = preference.collate_pairs(pairs, tok.pad_token_id, packed)
    with torch.no_grad():
        logps, counts = preference.batch_logps(policy, batch)
        if cfg.loss == "simpo":
            reference = None
        elif ref is None:
            with policy.disable_adapter():
                reference = preference.batch_logps(policy, batch)[0]
        else:
            reference = preference.batch_logps(ref, batch)[0]
    loss, chosen, rejected = preference.pair_losses(cfg, logps, counts, reference)
    return {
        "pairs": [preference.halves(p) for p in pairs],
        "loss": float(loss.mean()),
        "chosen": float(chosen.mean()),
        "rejected": float(rejected.mean()),
        "accuracy": float((chosen > rejected).float().mean()),
    }


def trl_dpo(
    tok: Any,
    records: list[dict[str, Any]],
    loss: str,
    eps: float,
    policy: Any,
    ref: Any,
    tmp: Path,
    sft: float = 0.0,
) -> dict[str, Any]:
    """TRL's DPOTrainer on the same batch: its token ids, loss and logged rewards.

    LoRA: TRL wraps the base itself (its reference is then the base with the adapter disabled,
    as kubetune's) and gets the policy's adapter weights after."""
    from datasets import Dataset
    from trl import DPOConfig, DPOTrainer

    args = DPOConfig(
        output_dir=str(tmp), report_to="none", use_cpu=True, bf16=False, beta=0.1,
        loss_type=[loss, "sft"] if sft else [loss], loss_weights=[1.0, sft] if sft else None,
        label_smoothing=eps, per_device_train_batch_size=len(records),
        dataset_num_proc=None, max_length=64,
    )  # fmt: skip
    lora = hasattr(policy, "peft_config")
    trainer = DPOTrainer(
        model=copy.deepcopy(policy.get_base_model() if lora else policy),
        ref_model=copy.deepcopy(ref) if ref is not None else None,
        args=args,
        train_dataset=Dataset.from_list(records),
        processing_class=tok,
        peft_config=copy.deepcopy(policy.peft_config["default"]) if lora else None,
    )
    if lora:
        adapter = {k: v for k, v in policy.state_dict().items() if "lora_" in k}
        assert not trainer.model.load_state_dict(adapter, strict=False).unexpected_keys
    rows = [trainer.train_dataset[i] for i in range(len(records))]
    trainer.model.eval()
    with torch.no_grad():
        value = trainer.compute_loss(trainer.model, trainer.data_collator(rows))
    logged = trainer._metrics["eval"]
    return {
        "ids": [(r["prompt_ids"], r["chosen_ids"], r["rejected_ids"]) for r in rows],
        "loss": float(value),
        "chosen": logged["rewards/chosen"][-1],
        "rejected": logged["rewards/rejected"][-1],
        "accuracy": logged["rewards/accuracies"][-1],
    }


def trl_simpo(
    tok: Any, records: list[dict[str, Any]], eps: float, sft: float, policy: Any, tmp: Path
) -> dict[str, Any]:
    """TRL's CPOTrainer with loss simpo on the same batch (cpo_alpha 0: SimPO proper; else CPO's
    NLL term on the chosen answers)."""
    from datasets import Dataset
    from trl.experimental.cpo import CPOConfig, CPOTrainer

    args = CPOConfig(
        output_dir=str(tmp), report_to="none", use_cpu=True, bf16=False, beta=2.0,
        loss_type="simpo", cpo_alpha=sft, simpo_gamma=0.5, label_smoothing=eps,
        per_device_train_batch_size=len(records), max_length=64,
    )  # fmt: skip
    trainer = CPOTrainer(
        model=copy.deepcopy(policy),
        args=args,
        train_dataset=Dataset.from_list(records),
        processing_class=tok,
    )
    rows = [trainer.train_dataset[i] for i in range(len(records))]
    trainer.model.eval()
    with torch.no_grad():
        value, metrics = trainer.get_batch_loss_metrics(
            trainer.model, trainer.data_collator(rows), "eval"
        )
    n = [len(r["prompt_input_ids"]) for r in rows]
    return {
        "ids": [
            (r["prompt_input_ids"], r["chosen_input_ids"][k:], r["rejected_input_ids"][k:])
            for r, k in zip(rows, n, strict=True)
        ],
        "loss": float(value),
        "chosen": metrics["eval_rewards/chosen"],
        "rejected": metrics["eval_rewards/rejected"],
        "accuracy": metrics["eval_rewards/accuracies"],
    }


def same_ids(mine: list[Any], theirs: list[Any]) -> None:
    """kubetune's pairs are TRL's prompt + response ids, sequence by sequence."""
    for ((c_ids, c_lab), (r_ids, r_lab)), (prompt, chosen, rejected) in zip(
        mine, theirs, strict=True
    ):
        assert c_ids == list(prompt) + list(chosen) and r_ids == list(prompt) + list(rejected)
        assert c_lab[len(prompt) :] == list(chosen) and r_lab[len(prompt) :] == list(rejected)
        assert set(c_lab[: len(prompt)]) == {data.IGNORE}


def close(mine: dict[str, Any], theirs: dict[str, Any]) -> None:
    for key in ("loss", "chosen", "rejected", "accuracy"):
        assert mine[key] == pytest.approx(theirs[key], abs=ATOL), (key, mine, theirs)


@pytest.fixture(autouse=True)
def quiet() -> None:
    logging.getLogger("trl").setLevel(logging.ERROR)


@pytest.mark.parametrize("method", ["full", "lora"])
@pytest.mark.parametrize(("loss", "eps", "sft"), DPO_VARIANTS)
def test_dpo_variants_equal_trl(
    method: str, loss: str, eps: float, sft: float, tok: Any, models: Any, tmp_path: Path
) -> None:
    policy, ref = models[method]
    cfg = PreferenceConfig(beta=0.1, loss=loss, label_smoothing=eps, sft_weight=sft)  # type: ignore[arg-type]
    mine = ours(tok, TEXT, cfg, policy, ref, packed=False)
    if loss == "sigmoid" and eps:
        # TRL's sigmoid has no smoothing; conservative DPO is (1-eps) x the loss of the pairs
        # plus eps x the loss of the pairs swapped, rewards unchanged.
        swapped = [{**r, "chosen": r["rejected"], "rejected": r["chosen"]} for r in TEXT]
        plain = trl_dpo(tok, with_bos(tok, TEXT), "sigmoid", 0.0, policy, ref, tmp_path / "a")
        flip = trl_dpo(tok, with_bos(tok, swapped), "sigmoid", 0.0, policy, ref, tmp_path / "b")
        theirs = {**plain, "loss": (1 - eps) * plain["loss"] + eps * flip["loss"]}
    else:
        theirs = trl_dpo(tok, with_bos(tok, TEXT), loss, eps, policy, ref, tmp_path, sft)
    same_ids(mine["pairs"], theirs["ids"])
    close(mine, theirs)
    close(ours(tok, TEXT, cfg, policy, ref, packed=True), theirs)


@pytest.mark.parametrize("method", ["full", "lora"])
@pytest.mark.parametrize(("eps", "sft"), [(0.0, 0.0), (0.1, 0.0), (0.0, 0.5)])
def test_simpo_equals_trl(
    method: str, eps: float, sft: float, tok: Any, models: Any, tmp_path: Path
) -> None:
    policy, _ = models[method]
    cfg = PreferenceConfig(
        beta=2.0, loss="simpo", label_smoothing=eps, simpo_gamma=0.5, sft_weight=sft
    )
    mine = ours(tok, TEXT, cfg, policy, None, packed=True)
    theirs = trl_simpo(tok, TEXT, eps, sft, policy, tmp_path)
    same_ids(mine["pairs"], theirs["ids"])
    close(mine, theirs)


@pytest.mark.parametrize("method", ["full", "lora"])
def test_chat_pairs_equal_trl(method: str, tok: Any, models: Any, tmp_path: Path) -> None:
    """Chat messages: the chat template renders prompt and responses as TRL renders them."""
    policy, ref = models[method]
    cfg = PreferenceConfig(beta=0.1, loss="sigmoid")
    mine = ours(tok, CHAT, cfg, policy, ref, packed=True)
    theirs = trl_dpo(tok, CHAT, "sigmoid", 0.0, policy, ref, tmp_path)
    same_ids(mine["pairs"], theirs["ids"])
    close(mine, theirs)
