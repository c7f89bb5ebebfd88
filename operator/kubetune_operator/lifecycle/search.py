"""The search space of a sweep: trial N's parameter values, a pure function of the spec and N.

No trial list is ever materialised: grid trial N is N written in the mixed radix of the value
counts (the first parameter varies slowest), and random trial N draws from a generator seeded
by (seed, N). An operator that restarts, or a second replica, computes the same values.
"""

from __future__ import annotations

import math
import random
from typing import Any

from kubetune_operator.api.sweep import MAX_TRIALS, FineTuneSweepSpec, SweepParameter
from kubetune_operator.api.template import is_integer_field


def grid_size(spec: FineTuneSweepSpec) -> int:
    """Combinations of the grid (product of the value counts)."""
    return math.prod(len(p.options()) for p in spec.parameters)


def total_trials(spec: FineTuneSweepSpec) -> int:
    """Trials the sweep runs: maxTrials, capped by the grid's size for grid search."""
    if spec.algorithm == "grid":
        size = grid_size(spec)
        if spec.max_trials is None and size > MAX_TRIALS:
            raise ValueError(
                f"spec.parameters: the grid has {size} combinations, more than {MAX_TRIALS}: "
                "set spec.maxTrials"
            )
        return min(size, spec.max_trials or size)
    assert spec.max_trials is not None  # a CEL rule and the model require it
    return spec.max_trials


def grid_point(spec: FineTuneSweepSpec, index: int) -> dict[str, Any]:
    """The values of grid trial `index` by path, first parameter varying slowest."""
    out: dict[str, Any] = {}
    rest = index
    for p in reversed(spec.parameters):
        options = p.options()
        rest, pick = divmod(rest, len(options))
        out[p.path] = options[pick]
    return {p.path: out[p.path] for p in spec.parameters}


def draw(p: SweepParameter, rng: random.Random) -> Any:
    """One random value of a parameter: one of its values or choices, or a point of its range
    (uniform, or uniform in the log; whole numbers for integer fields)."""
    if p.listed:
        return rng.choice(p.options())
    assert p.min is not None and p.max is not None
    if p.scale == "log":
        value = math.exp(rng.uniform(math.log(p.min), math.log(p.max)))
    else:
        value = rng.uniform(p.min, p.max)
    if is_integer_field(p.path):
        return min(max(round(value), math.ceil(p.min)), math.floor(p.max))
    return float(f"{value:.6g}")


def random_point(spec: FineTuneSweepSpec, index: int) -> dict[str, Any]:
    """The values of random trial `index`, fixed by (seed, index)."""
    rng = random.Random(f"kubetune-sweep-{spec.seed}-{index}")
    return {p.path: draw(p, rng) for p in spec.parameters}


def trial_parameters(spec: FineTuneSweepSpec, index: int) -> dict[str, Any]:
    """Parameter values of trial `index` (0-based) by path."""
    if spec.algorithm == "grid":
        return grid_point(spec, index)
    return random_point(spec, index)
