"""The median stopping rule: a running trial is stopped only when it is worse than the median
of enough completed trials at the same step, after enough evaluations of its own."""

from __future__ import annotations

import pytest

from kubetune_operator.api.sweep import EarlyTermination
from kubetune_operator.lifecycle.early_stop import eval_history, median_stop, running_average

pytestmark = pytest.mark.unit

RULE = EarlyTermination(min_evals=2, min_completed_trials=2)
GOOD = [(5, 2.0), (10, 0.8), (15, 0.5), (20, 0.4)]
BETTER = [(5, 1.8), (10, 0.7), (15, 0.45), (20, 0.35)]


@pytest.mark.parametrize(
    "trial, completed, stops",
    [
        ([(5, 3.0), (10, 2.95)], [GOOD, BETTER], True),  # a bad learning rate: far above
        ([(5, 3.0)], [GOOD, BETTER], False),  # one evaluation is too early to judge
        ([(5, 3.0), (10, 2.95)], [GOOD], False),  # one completed trial is not enough
        ([(5, 1.9), (10, 0.75)], [GOOD, BETTER], False),  # as good as the others: runs on
        (
            [(5, 2.5), (10, 1.3)],
            [GOOD, BETTER],
            False,
        ),  # best 1.3 vs averages 1.4, 1.25: median 1.325
        ([(5, 2.5), (10, 1.36)], [GOOD, BETTER], True),  # best 1.36 > 1.325
        ([(5, 3.0), (10, 2.95)], [[(5, 2.0)], [(5, 1.8)]], True),  # peers ended before step 10
    ],
)
def test_median_rule(
    trial: list[tuple[int, float]], completed: list[list[tuple[int, float]]], stops: bool
) -> None:
    why = median_stop(trial, completed, RULE)
    assert (why is not None) == stops, why
    if why:
        assert f"by step {trial[-1][0]}" in why and "median of 2 completed trials" in why


def test_maximising_flips_the_comparison() -> None:
    assert median_stop([(5, 3.0), (10, 2.95)], [GOOD, BETTER], RULE, minimize=False) is None
    assert median_stop([(5, 0.1), (10, 0.2)], [GOOD, BETTER], RULE, minimize=False) is not None


def test_history_comes_from_progress_evals_without_step_0_or_gaps() -> None:
    job = {"status": {"progress": {"evals": [
        {"step": 0, "loss": 7.0}, {"step": 10, "loss": 1.0}, {"step": 5, "loss": 2.0}, {"step": 15},
    ]}}}  # fmt: skip
    assert eval_history(job) == [(5, 2.0), (10, 1.0)]
    assert eval_history(None) == [] and eval_history({"status": {}}) == []
    assert running_average([(5, 2.0), (10, 1.0), (15, 0.0)], 10) == 1.5
