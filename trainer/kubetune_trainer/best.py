"""The weights of the best evaluation so far, kept to be exported instead of the last ones when
training.earlyStopping is set (by then the last `patience` evaluations were worse).

Only what trains is kept (the adapter for LoRA), as each rank holds it: the whole tensors without
ZeRO-3, where rank 0's copy is the one exported; this rank's partition under ZeRO-3, where every
rank keeps its own. It is a file in the job's local staging folder, which a local run keeps
across attempts; a worker pod's scratch space does not survive a restart, and a resumed attempt
then exports its last weights and says so.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

FILE = "best-weights.safetensors"


def local_view(param: Any) -> Any:
    """What this rank holds of a parameter: its ZeRO-3 partition, else the whole tensor."""
    return param.ds_tensor if hasattr(param, "ds_tensor") else param.data


def is_partitioned(module: Any) -> bool:
    """Whether ZeRO-3 partitions the parameters (then every rank keeps its own share)."""
    return any(hasattr(p, "ds_tensor") for p in module.parameters())


class BestWeights:
    """Save and restore one rank's share of the trainable weights of the best evaluation."""

    def __init__(self, folder: Path, enabled: bool) -> None:
        self.path = folder / FILE
        self.enabled = enabled

    def save(self, module: Any, step: int) -> None:
        """Keep the trainable weights as they are at `step` (replacing the previous best)."""
        if not self.enabled:
            return
        from safetensors.torch import save_file

        tensors = {
            name: local_view(p).detach().cpu().clone()
            for name, p in module.named_parameters()
            if p.requires_grad
        }
        self.path.parent.mkdir(parents=True, exist_ok=True)
        partial = self.path.with_name(self.path.name + ".partial")
        save_file(tensors, str(partial), metadata={"step": str(step)})
        partial.replace(self.path)

    def step(self) -> int | None:
        """The step of the kept weights, if any are kept."""
        if not self.enabled or not self.path.is_file():
            return None
        from safetensors import safe_open

        with safe_open(str(self.path), framework="pt") as f:
            meta = f.metadata() or {}
        return int(meta["step"]) if "step" in meta else None

    def restore(self, module: Any) -> None:
        """Put the kept weights back into the module (where export reads them)."""
        import torch
        from safetensors.torch import load_file

        kept = load_file(str(self.path))
        with torch.no_grad():
            for name, p in module.named_parameters():
                if name in kept:
                    view = local_view(p)
                    view.copy_(kept[name].to(view.device, view.dtype))
