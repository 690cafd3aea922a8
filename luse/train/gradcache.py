"""Gradient caching (GradCache, Gao et al. 2021): a contrastive batch larger than memory.

A contrastive loss needs every embedding of the batch at once, but the encoder's activations
for all of them need not be alive together:

1. encode the batch in chunks without building graphs, remembering the RNG state before each
   chunk;
2. compute the loss on the (detached) embeddings and get d loss / d embedding;
3. encode each chunk again with gradients, replaying its saved RNG state so dropout draws the
   same masks as in step 1, and backpropagate the cached embedding gradient through it.

Peak memory is one chunk's activations plus the embeddings, whatever the batch size, and the
parameter gradients are those of one pass over the whole batch with the same dropout masks.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable

import torch


def _rng_state() -> tuple:
    cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() and torch.cuda.is_initialized() else None
    return torch.get_rng_state(), cuda


def _set_rng_state(state: tuple) -> None:
    cpu, cuda = state
    torch.set_rng_state(cpu)
    if cuda is not None:
        torch.cuda.set_rng_state_all(cuda)


def _chunks(inputs: dict[str, torch.Tensor], size: int) -> list[dict[str, torch.Tensor]]:
    total = next(iter(inputs.values())).shape[0]
    return [{k: v[start:start + size] for k, v in inputs.items()} for start in range(0, total, size)]


def grad_cache_step(encode: Callable[..., torch.Tensor], inputs: dict[str, torch.Tensor],
                    loss_fn: Callable[[torch.Tensor], torch.Tensor], chunk_size: int,
                    backward: Callable[[torch.Tensor, torch.Tensor], None] | None = None,
                    no_sync: Callable[[], contextlib.AbstractContextManager] | None = None) -> torch.Tensor:
    """Run forward + backward of ``loss_fn(encode(**inputs))`` in chunks; returns the detached loss.

    ``backward(embeddings, grad)`` defaults to ``embeddings.backward(grad)``; pass the
    accelerator's (``lambda e, g: accelerator.backward(e, gradient=g)``) for mixed precision.
    ``no_sync`` (e.g. ``lambda: accelerator.no_sync(model)``) skips DDP's gradient all-reduce
    for every chunk but the last, so it happens once per step.
    """
    chunks = _chunks(inputs, chunk_size)
    states, cached = [], []
    with torch.no_grad():
        for chunk in chunks:
            states.append(_rng_state())
            cached.append(encode(**chunk))
    after_forward = _rng_state()

    embeddings = torch.cat(cached).detach().requires_grad_()
    loss = loss_fn(embeddings)
    (grad,) = torch.autograd.grad(loss, embeddings)
    grads = grad.split([c.shape[0] for c in cached])

    backward = backward or (lambda emb, g: emb.backward(g))
    for i, (chunk, state, chunk_grad) in enumerate(zip(chunks, states, grads)):
        last = i == len(chunks) - 1
        context = no_sync() if (no_sync is not None and not last) else contextlib.nullcontext()
        with context:
            _set_rng_state(state)
            backward(encode(**chunk), chunk_grad)
    # Leave the RNG where a single pass would have left it, so what follows is unaffected.
    _set_rng_state(after_forward)
    return loss.detach()
