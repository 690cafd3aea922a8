"""Negatives from every process: an autograd-aware all-gather for contrastive losses.

In-batch contrastive losses get better with more negatives, and with data parallelism the
cheapest extra negatives are the embeddings the *other* processes just computed. Each loss in
:mod:`luse.losses` therefore scores its **local anchors against global candidates** (the
candidates of every process, gathered with :func:`gather_with_grad`).

Why the gradients come out exact
--------------------------------
Let ``P`` processes hold ``n_1 .. n_P`` anchors, ``N = sum(n_r)``, and let process ``r`` return
``L_r = P / N * sum(per-anchor losses of its anchors)`` (:func:`global_mean_share`; this is the plain
mean over local anchors whenever the processes hold equal shares). Then:

* the loss value averaged over processes, ``mean_r L_r``, is the mean over all ``N`` anchors, i.e.
  the single-process loss on the global batch;
* in the backward pass, the gathered tensor of process ``r`` receives ``dL_r / d(candidates)``;
  :func:`gather_with_grad` all-reduces (sums) these over processes and hands each process the
  rows it contributed, so every local embedding gets ``d(sum_r L_r) / d(embedding)``: its gradient
  as an anchor on its own process plus its gradient as a candidate on every process;
* DDP then averages parameter gradients over processes, which turns ``sum_r L_r`` into
  ``mean_r L_r``: exactly the gradient of one process on the global batch.

Losses that do not split into per-anchor terms (CoSENT is one log-sum-exp over all pairs) gather
their inputs and compute the *global* loss on every process; then ``L_r = L`` for all ``r``, and
the same sum-then-average argument gives the global gradient again.

Without an initialised process group (or with a single process) every helper here is a no-op,
so the same loss code runs unchanged on one CPU, one GPU or many.
"""

from __future__ import annotations

import torch
import torch.distributed as dist


def is_distributed() -> bool:
    """True when a ``torch.distributed`` process group is initialised with more than one process."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def world_size() -> int:
    """Number of processes in the default group; 1 when ``torch.distributed`` is not initialised."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size()
    return 1


def rank() -> int:
    """Rank of this process in the default group; 0 when ``torch.distributed`` is not initialised."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank()
    return 0


def _gather_row_counts(rows: int, device: torch.device) -> list[int]:
    count = torch.tensor([rows], dtype=torch.long, device=device)
    counts = [torch.zeros_like(count) for _ in range(dist.get_world_size())]
    dist.all_gather(counts, count)
    return [int(c.item()) for c in counts]


class _AllGatherWithGrad(torch.autograd.Function):
    """``all_gather`` along dim 0 whose backward sums the gradient over processes.

    ``torch.distributed.nn.functional.all_gather`` does the same job, but its backward uses
    ``all_to_all``, which the gloo backend (CPU training) does not implement.
    """

    @staticmethod
    def forward(ctx, local: torch.Tensor, row_counts: list[int]) -> torch.Tensor:
        ctx.row_counts = row_counts
        ctx.rank = dist.get_rank()
        longest = max(row_counts)
        # all_gather needs equal shapes everywhere: pad the short ranks, trim after.
        padded = local.contiguous()
        if local.shape[0] < longest:
            filler = local.new_zeros((longest - local.shape[0], *local.shape[1:]))
            padded = torch.cat([padded, filler])
        buffers = [torch.empty_like(padded) for _ in row_counts]
        dist.all_gather(buffers, padded)
        return torch.cat([buffer[:rows] for buffer, rows in zip(buffers, row_counts)])

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        # all_reduce works in place, and autograd may share the incoming buffer with other nodes.
        grad = grad.clone(memory_format=torch.contiguous_format)
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)
        start = sum(ctx.row_counts[: ctx.rank])
        return grad[start : start + ctx.row_counts[ctx.rank]], None


def gather_with_grad(t: torch.Tensor) -> tuple[torch.Tensor, int]:
    """Concatenate ``t`` from every process along dim 0, keeping the autograd graph.

    Args:
        t: this process's rows, shape ``[n, ...]``. Processes may hold different ``n`` (for
            example on the last, short batch); trailing dimensions, dtype and device must agree.

    Returns:
        ``(gathered, offset)``: ``gathered`` has shape ``[sum of n over processes, ...]`` and
        holds the processes' rows in rank order; ``gathered[offset : offset + n]`` are this
        process's own rows. Without an initialised process group, or with a world size of 1,
        returns ``(t, 0)`` untouched.

    The backward pass sums the gradient of ``gathered`` over all processes and returns this
    process's slice (see the module docstring for why that makes DDP gradients exact). Every
    process must call it, and must then run backward through the result: it is a collective.
    """
    if not is_distributed():
        return t, 0
    row_counts = _gather_row_counts(t.shape[0], t.device)
    offset = sum(row_counts[: dist.get_rank()])
    return _AllGatherWithGrad.apply(t, row_counts), offset


def global_mean_share(local_losses: torch.Tensor, global_count: int) -> torch.Tensor:
    """This process's share of the mean over the global batch: ``world_size / global_count * sum``.

    Args:
        local_losses: the per-anchor losses of this process's anchors, any shape.
        global_count: the number of anchors over all processes, i.e. the row count that
            :func:`gather_with_grad` returned (use a plain ``mean()`` for losses that did not gather).

    Averaging the returned value over processes (what DDP does to the gradients, and what
    ``accelerator.reduce(loss, "mean")`` does to the logged value) gives the mean of the per-anchor
    losses over all processes, even when processes hold unequal numbers of anchors. With equal
    shares it is simply ``local_losses.mean()``; without a process group ``global_count`` is the
    local count, so it is exactly the local mean.
    """
    return local_losses.sum() * (world_size() / global_count)
