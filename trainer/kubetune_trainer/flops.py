"""Model FLOPs per token and MFU: the one formula the trainer's gauge and the GPU benchmark share.

No torch import here, so the benchmark and the operator side can import it cheaply.
"""

from __future__ import annotations


def flops_per_token(
    params: int, trainable: int, layers: int, hidden: int, seq: int, method: str
) -> float:
    """6N + 12·L·d·s for full fine-tuning; 4N + 2N_trainable (+ the same attention term) otherwise.

    Every weight costs 2 FLOPs forward and 2 for the input gradient; only trainable weights
    also cost 2 for their own gradient, so frozen weights count 4 and trained ones 6.
    """
    attention = 12 * layers * hidden * seq
    if method == "full":
        return 6 * params + attention
    return 4 * params + 2 * trainable + attention


def mfu(tokens_per_s: float, flops_token: float, peak: float) -> float:
    """Model FLOPs utilisation: achieved model FLOP/s over the peak of the devices used."""
    return tokens_per_s * flops_token / peak
