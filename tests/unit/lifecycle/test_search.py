"""Trial N's parameter values are a pure function of the spec and N: grid in order, random
fixed by the seed, every value valid for its field."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from kubetune_operator.api.sweep import FineTuneSweepSpec
from kubetune_operator.lifecycle import search
from tests.unit.lifecycle_cases import valid_sweep

pytestmark = pytest.mark.unit


def spec(**changes: Any) -> FineTuneSweepSpec:
    raw = copy.deepcopy(valid_sweep()["spec"])
    raw.update(changes)
    return FineTuneSweepSpec.model_validate(raw)


def test_grid_runs_every_combination_first_parameter_slowest() -> None:
    s = spec()
    assert search.total_trials(s) == 4
    points = [search.trial_parameters(s, i) for i in range(4)]
    assert points == [
        {"training.learningRate": 0.0003, "method.lora.r": 4},
        {"training.learningRate": 0.0003, "method.lora.r": 16},
        {"training.learningRate": 0.003, "method.lora.r": 4},
        {"training.learningRate": 0.003, "method.lora.r": 16},
    ]
    assert all(type(p["method.lora.r"]) is int for p in points)  # 4, not 4.0: the field is int


def test_grid_is_capped_by_max_trials_and_refuses_a_huge_grid_without_it() -> None:
    assert search.total_trials(spec(maxTrials=3)) == 3
    huge = [{"path": p, "values": list(range(1, 12))} for p in
            ("method.lora.r", "method.lora.alpha", "training.seed")]  # fmt: skip
    with pytest.raises(ValueError, match=r"1331 combinations, more than 1000: set spec\.maxTrials"):
        search.total_trials(spec(parameters=huge))


@pytest.mark.parametrize(
    "parameter, check",
    [
        ({"path": "training.learningRate", "min": 1e-5, "max": 1e-2, "scale": "log"},
         lambda v: isinstance(v, float) and 1e-5 <= v <= 1e-2),
        ({"path": "method.lora.r", "min": 2, "max": 64},
         lambda v: type(v) is int and 2 <= v <= 64),
        ({"path": "training.warmupRatio", "min": 0.0, "max": 0.2},
         lambda v: 0.0 <= v <= 0.2),
        ({"path": "training.scheduler", "choices": ["cosine", "linear"]},
         lambda v: v in ("cosine", "linear")),
        ({"path": "training.gradientCheckpointing", "choices": ["true", "false"]},
         lambda v: v in (True, False)),
    ],
)  # fmt: skip
def test_random_draws_stay_in_the_space_and_repeat_for_the_same_seed(
    parameter: dict[str, Any], check: Any
) -> None:
    s = spec(algorithm="random", maxTrials=50, parameters=[parameter])
    draws = [search.trial_parameters(s, i)[parameter["path"]] for i in range(50)]
    assert all(check(v) for v in draws), draws
    assert draws == [search.trial_parameters(s, i)[parameter["path"]] for i in range(50)]
    assert len({str(v) for v in draws}) > 1
    other = spec(algorithm="random", maxTrials=50, parameters=[parameter], seed=7)
    if "min" in parameter:
        assert draws != [search.trial_parameters(other, i)[parameter["path"]] for i in range(50)]


def test_log_scale_spreads_over_orders_of_magnitude() -> None:
    s = spec(algorithm="random", maxTrials=200,
             parameters=[{"path": "training.learningRate", "min": 1e-5, "max": 1e-1, "scale": "log"}])  # fmt: skip
    draws = [search.trial_parameters(s, i)["training.learningRate"] for i in range(200)]
    below = sum(v < 1e-3 for v in draws)
    assert 70 < below < 130, below  # half the log range lies below 1e-3
