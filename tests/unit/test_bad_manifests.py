"""Every generated bad manifest (tests/bad_manifests.py) is refused by `kubetune validate`:
the message names the field, nothing crashes, each in under a second of CPU time. The table is printed
(and kept as bad-manifests-offline.md under pytest's temporary folder)."""

from __future__ import annotations

import time
from collections import defaultdict
from pathlib import Path

import pytest

from kubetune_operator.cli import main
from tests.bad_manifests import BadCase, Stats, all_cases, table

pytestmark = pytest.mark.unit

CASES = all_cases()


def test_the_generator_makes_at_least_a_thousand_distinct_cases() -> None:
    assert len(CASES) >= 1000
    assert len({c.id for c in CASES}) == len(CASES)
    assert len({c.category for c in CASES}) >= 10


def validate(
    case: BadCase, folder: Path, capsys: pytest.CaptureFixture[str]
) -> tuple[int, str, float]:
    path = folder / "job.yaml"
    path.write_text(case.text())
    start = time.process_time()  # the validation's own work: what other processes do meanwhile
    try:  # on this machine is not its cost
        rc = main(["validate", str(path)])
    except BaseException as err:  # a crash: counted, shown
        return -1, f"{type(err).__name__}: {err}", time.process_time() - start
    seconds = time.process_time() - start
    return rc, capsys.readouterr().err, seconds


def test_every_bad_manifest_is_refused_offline_naming_the_field(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], tmp_path_factory: pytest.TempPathFactory
) -> None:
    stats: dict[str, Stats] = defaultdict(Stats)
    failures, slowest = [], (0.0, "")
    for case in CASES:
        s = stats[case.category]
        s.cases += 1
        rc, err, seconds = validate(case, tmp_path, capsys)
        slowest = max(slowest, (seconds, case.id))
        crashed = rc == -1 or "Traceback" in err
        s.crashes += crashed
        if rc == 1 and not crashed:
            s.refused += 1
            if case.field in err:
                s.named += 1
            else:
                failures.append(f"{case.id}: does not name {case.field}: {err.strip()[:300]}")
        elif not crashed:
            s.accepted.append(case.id)
            failures.append(f"{case.id}: accepted offline")
        else:
            failures.append(f"{case.id}: crashed: {err[-300:]}")
        if seconds >= 1.0:
            failures.append(f"{case.id}: took {seconds:.2f}s")
    report = table(stats)
    out = tmp_path_factory.getbasetemp() / "bad-manifests-offline.md"
    out.write_text(report + f"\n\nslowest: {slowest[1]} {slowest[0]:.3f}s\n")
    print(f"\nkubetune validate, {len(CASES)} bad manifests:\n{report}\nslowest {slowest}")
    assert not failures, f"{len(failures)} of {len(CASES)}:\n" + "\n".join(failures[:80])
