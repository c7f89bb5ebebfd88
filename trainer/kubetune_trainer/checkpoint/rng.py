"""Each rank's random number generator states, saved with a checkpoint and restored on resume.

Dropout masks come from these generators; a resumed run that reseeded them would draw different
masks than the uninterrupted run and end elsewhere. The file holds only tensors, ints and None,
so it loads with torch.load(weights_only=True): nothing from the store is unpickled as code.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any


def capture() -> dict[str, Any]:
    """Python's, NumPy's, torch's CPU and (with CUDA) the current device's generator states."""
    import numpy as np
    import torch

    version, internal, gauss = random.getstate()
    kind, keys, pos, has_gauss, cached = np.random.get_state(legacy=True)
    return {
        "python": {
            "version": version,
            "state": torch.tensor(internal, dtype=torch.int64),
            "gauss": gauss,
        },
        "numpy": {
            "kind": kind,
            "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached": float(cached),
        },
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state() if torch.cuda.is_available() else None,
    }


def restore(state: dict[str, Any]) -> None:
    """Set the generators to a captured state (CUDA's only where both sides have it)."""
    import numpy as np
    import torch

    py = state["python"]
    random.setstate((py["version"], tuple(int(x) for x in py["state"].tolist()), py["gauss"]))
    n = state["numpy"]
    np.random.set_state(
        (n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached"])
    )
    torch.set_rng_state(state["torch"])
    if state.get("cuda") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])


def save(path: Path) -> None:
    """Write this process's generator states, as they are now, to path."""
    import torch

    torch.save(capture(), path)


def load(path: Path) -> None:
    """Restore this process's generator states from a file written by save()."""
    import torch

    restore(torch.load(path, weights_only=True))
