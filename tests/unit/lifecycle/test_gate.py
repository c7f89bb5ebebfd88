"""The quality gate: promote unless the candidate is worse than the current model by more than
the stated margins; the reason says what was compared."""

from __future__ import annotations

import pytest

from kubetune_operator.api.schedule import Gate
from kubetune_operator.lifecycle.gate import current_scores, judge

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    "gate, candidate, current, promote, words",
    [
        ({}, {"evalLoss": 0.5}, {"evalLoss": 0.9}, True, "0.5000 vs 0.9000"),
        ({}, {"evalLoss": 0.9}, {"evalLoss": 0.9}, True, "not worse"),
        ({}, {"evalLoss": 0.91}, {"evalLoss": 0.9}, False, "worse by 0.0100, more than the margin 0"),
        ({"maxEvalLossIncrease": 0.02}, {"evalLoss": 0.91}, {"evalLoss": 0.9}, True, "not worse"),
        ({"exactMatch": True}, {"evalLoss": 0.5, "exactMatch": 0.6}, {"evalLoss": 0.9, "exactMatch": 0.7},
         False, "exact match lower by 10.0%"),
        ({"exactMatch": True, "maxExactMatchDecrease": 0.15}, {"evalLoss": 0.5, "exactMatch": 0.6},
         {"evalLoss": 0.9, "exactMatch": 0.7}, True, "exact match 60.0% vs 70.0%"),
        ({"exactMatch": True}, {"evalLoss": 0.5}, {"evalLoss": 0.9}, False, "exact match was not measured"),
        ({}, None, {"evalLoss": 0.9}, False, "reported no benchmark score"),
        ({}, {"evalLoss": 0.5}, None, False, "no score of the current model"),
    ],
)  # fmt: skip
def test_judge(
    gate: dict, candidate: dict | None, current: dict | None, promote: bool, words: str
) -> None:
    verdict = judge(
        Gate.model_validate({"benchmark": "s3://bench/bench.jsonl", **gate}), candidate, current
    )
    assert verdict.promote is promote
    assert words in verdict.reason, verdict.reason


def test_current_model_score_is_the_runs_own_measurement_when_it_continued_the_promoted_model() -> (
    None
):
    promoted = {
        "run": "s-r1",
        "uri": "s3://o/s-r1",
        "scores": {"evalLoss": 0.8},
        "benchmarkSha256": "aa",
    }
    before = {"evalLoss": 0.81}
    assert current_scores("s3://o/s-r1", before, promoted, "aa")[0] == before
    assert current_scores("s3://base", before, None, "aa")[0] == before  # the first run: the base
    # Another run was promoted while this one ran (Allow): compare with that model's score.
    scores, source = current_scores("s3://o/s-r0", before, promoted, "aa")
    assert scores == {"evalLoss": 0.8} and "recorded when s-r1 was promoted" in source
    assert current_scores("s3://o/s-r0", before, promoted, "bb")[0] is None  # another benchmark
