"""Data: format detection, line-numbered errors, loss masks, packing, splits, batch order."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import pytest

from kubetune_trainer import data, tiny
from kubetune_trainer.config import DataConfig
from kubetune_trainer.errors import BadInputError

pytestmark = pytest.mark.unit


@pytest.fixture(scope="module")
def tok():  # type: ignore[no-untyped-def]
    recs = list(tiny.synthetic_records(64, "B")) + list(tiny.synthetic_records(16, "B", "chat"))
    return tiny.build_tokenizer(tiny.corpus_texts(recs))


def test_malformed_json_names_file_and_line(tmp_path: Path) -> None:
    f = tmp_path / "d.jsonl"
    f.write_text('{"text": "a"}\n\n{"text": oops}\n')
    with pytest.raises(BadInputError, match=rf"{f}:3: not valid JSON"):
        data.read_records(f)


def test_wrong_field_type_names_line_and_field(tmp_path: Path) -> None:
    f = tmp_path / "d.jsonl"
    f.write_text('{"prompt": "a", "completion": "b"}\n{"prompt": "a", "completion": 3}\n')
    recs = data.read_records(f)
    data.check_record(recs[0], "prompt-completion")
    with pytest.raises(BadInputError, match=rf"{f}:2: field 'completion' must be a string"):
        data.check_record(recs[1], "prompt-completion")


@pytest.mark.parametrize(
    ("record", "fmt"),
    [
        ({"messages": []}, "chat"),
        ({"prompt": "p", "completion": "c"}, "prompt-completion"),
        ({"text": "t"}, "text"),
    ],
)
def test_detect_format(record: dict, fmt: str) -> None:
    assert data.detect_format(data.Record(record, "x:1")) == fmt


def test_unknown_keys_are_an_error() -> None:
    with pytest.raises(BadInputError, match="x:4: cannot tell the format"):
        data.detect_format(data.Record({"input": "a"}, "x:4"))


def test_chat_without_assistant_is_an_error() -> None:
    with pytest.raises(BadInputError, match="no assistant turn"):
        data.check_record(
            data.Record({"messages": [{"role": "user", "content": "hi"}]}, "x:1"), "chat"
        )


def test_prompt_completion_loss_only_on_completion(tok) -> None:  # type: ignore[no-untyped-def]
    ex = data.tokenize_record(
        tok, data.Record({"prompt": "map ba", "completion": " be bi"}, "x:1"), "prompt-completion"
    )
    learned = [i for i, lab in zip(ex.ids, ex.labels, strict=True) if lab != data.IGNORE]
    assert tok.decode(learned) == " be bi" + tiny.EOS
    assert ex.ids[0] == tok.bos_token_id and ex.labels[0] == data.IGNORE


def test_chat_loss_only_on_assistant_turns(tok) -> None:  # type: ignore[no-untyped-def]
    msgs = [
        {"role": "user", "content": "map ba"},
        {"role": "assistant", "content": "be bi"},
        {"role": "user", "content": "map ko"},
        {"role": "assistant", "content": "ku"},
    ]
    ex = data.tokenize_chat(tok, msgs)
    assert ex.ids == data.render_chat(tok, msgs, generation_prompt=False)
    learned = tok.decode(
        [i for i, lab in zip(ex.ids, ex.labels, strict=True) if lab != data.IGNORE]
    )
    assert learned == "be bi<|end|>ku<|end|>"


def test_pack_makes_full_sequences_and_keeps_every_token() -> None:
    exs = [
        data.Example([1, 2, 3], [1, 2, 3]),
        data.Example([4, 5], [-100, 5]),
        data.Example([6, 7, 8, 9], [6, 7, 8, 9]),
    ]
    packed = data.pack(exs, 4, pad_id=0)
    assert [e.ids for e in packed] == [[1, 2, 3, 4], [5, 6, 7, 8], [9, 0, 0, 0]]
    assert packed[2].labels == [9, -100, -100, -100]


def test_pad_truncates_and_pads() -> None:
    out = data.pad_to([data.Example([1, 2, 3], [1, 2, 3]), data.Example([4], [4])], 2, pad_id=0)
    assert [e.ids for e in out] == [[1, 2], [4, 0]] and out[1].labels == [4, -100]


def test_split_is_seeded_and_disjoint() -> None:
    recs = [data.Record({"text": str(i)}, f"x:{i}") for i in range(100)]
    a_train, a_val = data.split(recs, 0.1, seed=3)
    _b_train, b_val = data.split(recs, 0.1, seed=3)
    assert [r.where for r in a_val] == [r.where for r in b_val] and len(a_val) == 10
    assert not {r.where for r in a_val} & {r.where for r in a_train}
    assert [r.where for r in data.split(recs, 0.1, seed=4)[1]] != [r.where for r in a_val]


def test_batches_are_deterministic_and_ranks_disjoint_per_epoch() -> None:
    n, micro, world = 40, 4, 2
    per_epoch = data.micro_batches_per_epoch(n, micro, world)
    seen = [
        i
        for r in range(world)
        for k in range(per_epoch)
        for i in data.micro_batch_indices(n, micro, r, world, 7, k)
    ]
    assert sorted(seen) == list(range(n))
    assert data.micro_batch_indices(n, micro, 1, world, 7, 12) == data.micro_batch_indices(
        n, micro, 1, world, 7, 12
    )
    assert data.micro_batch_indices(n, micro, 0, world, 7, 0) != data.micro_batch_indices(
        n, micro, 0, world, 7, per_epoch
    )


def test_build_dataset_from_parquet_folder_with_split(tmp_path: Path, tok) -> None:  # type: ignore[no-untyped-def]
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = list(tiny.synthetic_records(50, "B", "text"))
    (tmp_path / "d").mkdir()
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "d" / "part-0.parquet")
    cfg = DataConfig(
        train=f"file://{tmp_path / 'd'}", validation_split=0.2, max_seq_length=32, packing=True
    )
    ds = data.build_dataset(tok, cfg, seed=1, cache_dir=tmp_path / "cache")
    assert ds.format == "text" and ds.train and ds.validation
    assert all(len(e.ids) == 32 for e in ds.train + ds.validation)
    assert ds.sources[0].records == 50 and len(ds.sources[0].sha256) == 64


def test_synthetic_task_is_a_chain_under_the_cipher() -> None:
    rec = next(tiny.synthetic_records(1, "B", seed=5))
    words = [rec["prompt"].split()[-1], *rec["completion"].split()]
    mapping = tiny.cipher("B")
    assert all(mapping[a] == b for a, b in itertools.pairwise(words))
    assert list(tiny.synthetic_records(3, "B", seed=5)) == list(
        tiny.synthetic_records(3, "B", seed=5)
    )
    assert tiny.cipher("A") != mapping


def test_jsonl_round_trip(tmp_path: Path) -> None:
    path = tiny.write_jsonl(tmp_path / "x.jsonl", tiny.synthetic_records(3, "B", "chat"))
    assert [json.loads(line)["messages"][0]["role"] for line in path.read_text().splitlines()] == [
        "system"
    ] * 3
