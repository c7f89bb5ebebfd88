"""The operator-trainer contract (kubetune_trainer.contract) is the only place its names and
numbers are spelled: a copy elsewhere in either package could drift from it unnoticed."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from kubetune_trainer import contract

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = [ROOT / "operator" / "kubetune_operator", ROOT / "trainer" / "kubetune_trainer"]
CONTRACT = Path(contract.__file__).resolve()

SPELLINGS = [
    repr(contract.GROUP).replace("'", '"'),
    '"v1alpha1"',
    '"finetunejobs"',
    '"/dev/termination-log"',
    '"trainer.json"',
    '"KUBETUNE_CONFIG"',
    '"KUBETUNE_ATTEMPT"',
    '"KUBETUNE_EXIT_DIR"',
    '"KUBETUNE_JOB_NAME"',
    '"KUBETUNE_NAMESPACE"',
    '"KUBETUNE_GRACE_SECONDS"',
    '"KUBETUNE_CHECKPOINT_KEY"',
    '"HF_TOKEN"',
    "29500",
    "9400",
]


def sources() -> list[Path]:
    return [p for pkg in PACKAGES for p in sorted(pkg.rglob("*.py")) if p.resolve() != CONTRACT]


@pytest.mark.parametrize("spelling", SPELLINGS)
def test_contract_names_are_spelled_only_in_the_contract(spelling: str) -> None:
    copies = [str(p.relative_to(ROOT)) for p in sources() if spelling in p.read_text()]
    assert not copies, f"{spelling} is spelled outside kubetune_trainer/contract.py: {copies}"


def test_no_exit_code_is_defined_outside_the_contract() -> None:
    defined = [
        f"{p.relative_to(ROOT)}: {line.strip()}"
        for p in sources()
        for line in p.read_text().splitlines()
        if re.match(r"\s*(EXIT_OK|EXIT_PREEMPTED|EXIT_BAD_INPUT|EXIT_GPU_OOM)\s*=", line)
    ]
    assert not defined, defined


def test_exit_codes_are_distinct_and_outside_signal_range() -> None:
    codes = [
        contract.EXIT_OK,
        contract.EXIT_PREEMPTED,
        contract.EXIT_BAD_INPUT,
        contract.EXIT_GPU_OOM,
    ]
    assert len(set(codes)) == len(codes)
    assert all(0 <= c < 128 for c in codes)  # 128+N means killed by signal N
