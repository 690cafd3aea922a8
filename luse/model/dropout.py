"""Dropout with a cheap mask on CPUs: the same regulariser, a fraction of the cost.

Dropout views are the core of unsupervised SimCSE and LUSE, so every training step runs dropout
on every layer's activations.  torch's CPU dropout draws one Bernoulli sample per element
(``bernoulli_``), and m3e-small runs 26 dropouts in a training step of 64 sentences x 2 views.
Here the mask comes from 64-bit random words cut into four 16-bit lanes (``random_`` draws 64 bits
at a time, a quarter of the draws), and a lane keeps its element when it is at or above
``round(p * 2**16)``.  What that saves per step: ``benchmarks/results/throughput.md``, the
``--explore`` table.

So ``p`` is rounded to a multiple of 2**-16 (0.1 becomes 0.100006) and the kept elements are scaled
by ``1 / (1 - p_rounded)``: the expectation is exact, as with torch's dropout.  The random numbers
come from torch's default generator, so ``torch.manual_seed`` makes runs repeatable.  On other
devices (GPUs) torch's fused dropout is already cheap and runs as is.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

LANE_BITS = 16
LANE_VALUES = 1 << LANE_BITS
LANES_PER_WORD = 64 // LANE_BITS


def keep_mask(shape: torch.Size | tuple[int, ...], p: float, device: torch.device | str = "cpu") -> tuple[torch.Tensor, float]:
    """A boolean mask that keeps each element with probability ``1 - p_rounded``, and the scale
    ``1 / (1 - p_rounded)`` for the kept ones."""
    threshold = round(p * LANE_VALUES)
    if threshold >= LANE_VALUES:
        return torch.zeros(shape, dtype=torch.bool, device=device), 0.0
    count = math.prod(shape)
    words = torch.empty(-(-count // LANES_PER_WORD), dtype=torch.int64, device=device)
    words.random_(-(1 << 63), (1 << 63) - 1)  # the full 64 bits (plain random_() leaves the top bit 0)
    lanes = words.view(torch.int16)[:count].view(shape)  # signed: uniform over [-2**15, 2**15)
    return lanes >= threshold - LANE_VALUES // 2, LANE_VALUES / (LANE_VALUES - threshold)


class _MaskedScale(torch.autograd.Function):
    """``x * mask * scale`` with the boolean mask saved for the backward pass (as torch's dropout
    saves it: one byte an element)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, mask: torch.Tensor, scale: float) -> torch.Tensor:
        ctx.save_for_backward(mask)
        ctx.scale = scale
        return torch.ops.aten.native_dropout_backward(x, mask, scale)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (mask,) = ctx.saved_tensors
        return torch.ops.aten.native_dropout_backward(grad, mask, ctx.scale), None, None


def dropout(x: torch.Tensor, p: float, training: bool = True) -> torch.Tensor:
    """``F.dropout(x, p, training)``, with the cheap mask on CPU tensors."""
    if not training or p <= 0 or x.device.type != "cpu":
        return F.dropout(x, p, training)
    mask, scale = keep_mask(x.shape, p, x.device)
    return _MaskedScale.apply(x, mask, scale)


class FastDropout(nn.Dropout):
    """An ``nn.Dropout`` (same ``p``, same ``isinstance``) that uses :func:`dropout`."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.inplace:
            return super().forward(x)
        return dropout(x, self.p, self.training)


def set_dropout(model: nn.Module, p: float) -> int:
    """Set the rate of every ``nn.Dropout`` in ``model`` (attention dropout included: BERT's attention
    reads its module's ``p``) to ``p``, in place; the model's config is left as it was. Returns how many."""
    if not 0 <= p < 1:
        raise ValueError(f"dropout rate must be in [0, 1), got {p}")
    modules = [m for m in model.modules() if isinstance(m, nn.Dropout)]
    for module in modules:
        module.p = p
    return len(modules)


def use_fast_dropout(model: nn.Module) -> int:
    """Swap every plain ``nn.Dropout`` in ``model`` for a :class:`FastDropout` with the same ``p``
    (in place: dropout holds no weights, so checkpoints are unchanged). Returns how many."""
    swapped = 0
    for module in list(model.modules()):
        for name, child in list(module.named_children()):
            if type(child) is nn.Dropout:
                setattr(module, name, FastDropout(child.p, child.inplace))
                swapped += 1
    return swapped
