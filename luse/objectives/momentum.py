"""More negatives for contrastive recipes: a momentum encoder and a FIFO queue of its embeddings.

From MoCo (He et al., *Momentum Contrast for Unsupervised Visual Representation Learning*, CVPR
2020), which the LUSE author names as the next step (../shared/seeds/002, TODO list), and its use
for sentence embeddings in ESimCSE (Wu et al., COLING 2022). The in-batch loss is unchanged; the
queue only adds negatives that cost no forward pass with gradient:

* a **momentum encoder**, a frozen copy of the model made when training starts, follows it as an
  exponential moving average after every optimizer step:
  ``theta_m <- m * theta_m + (1 - m) * theta`` (``loss.momentum``, 0.995 by default);
* after each micro-batch's loss, it encodes the batch's **positive side** (ESimCSE's choice): the
  positive column of triplets, and for view objectives each sentence's own text (view 0; its
  dropout copy, SimCSE's positive, is the same text). It runs without dropout, so each key is a
  stable vector, and with SimCSE's train-only MLP when the model has one, so keys live in the
  space the loss compares;
* these keys, gathered from every process, join the **queue** after the optimizer step, oldest
  leaving first (``loss.queue_size`` rows). Every process therefore holds the same queue. The
  queue's rows are extra negatives for every anchor of later steps, never of the step that made
  them (a sentence is never its own negative).

The queue, the keys not yet queued and the momentum encoder's weights are part of every
checkpoint (the objective's ``state_dict``), so ``resume=latest`` continues exactly. What is
evaluated and exported is the trained (online) model, as in MoCo; the momentum copy is training
machinery. It costs one forward pass without gradient over ``B`` sentences per micro-batch and a
second copy of the weights in memory.

Enable it in any contrastive recipe (pretrain_luse, simcse_unsup, simcse_sup)::

    accelerate launch recipes/simcse_unsup.py loss.queue_size=256 loss.momentum=0.995
"""

from __future__ import annotations

import copy

import torch

from luse.config import LossConfig
from luse.errors import InputError
from luse.losses.distributed import gather_with_grad
from luse.objectives.base import select_rows


class MomentumQueue:
    """A momentum copy of a model plus a FIFO queue of its past embeddings.

    Args:
        size: the most rows the queue holds (> 0).
        momentum: EMA factor ``m`` in ``[0, 1]``: 1 freezes the copy, 0 makes it the model itself.
    """

    def __init__(self, size: int, momentum: float):
        if isinstance(size, bool) or not isinstance(size, int) or size < 1:
            raise InputError("config", "loss.queue_size >= 1 for a momentum queue", got=size)
        if not 0.0 <= momentum <= 1.0:
            raise InputError("config", "loss.momentum in [0, 1]", got=momentum)
        self.size, self.momentum = size, float(momentum)
        self.queue: torch.Tensor | None = None  # [n <= size, H], oldest row first
        self.encoder: torch.nn.Module | None = None

    def setup(self, model: torch.nn.Module) -> None:
        """Start the momentum encoder as a frozen copy of ``model`` (the unwrapped one)."""
        self.encoder = copy.deepcopy(model).requires_grad_(False).eval()

    def negatives(self) -> torch.Tensor | None:
        """The queued embeddings, oldest first; None while the queue is empty."""
        return self.queue

    @torch.no_grad()
    def encode(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        """Keys for tokenised ``inputs``: the momentum encoder without dropout (eval mode), with the
        train-only MLP applied when the model has one; float32."""
        vectors = self.encoder(**inputs)
        if getattr(self.encoder, "mlp", None) is not None:  # eval mode skips it; the loss space has it
            vectors = self.encoder.mlp(vectors)
        return vectors.float()

    @torch.no_grad()
    def update(self, model: torch.nn.Module) -> None:
        """One EMA step towards ``model``'s parameters; buffers are copied."""
        for mine, theirs in zip(self.encoder.parameters(), model.parameters(), strict=True):
            mine.mul_(self.momentum).add_(theirs.detach().to(mine.dtype), alpha=1.0 - self.momentum)
        for mine, theirs in zip(self.encoder.buffers(), model.buffers(), strict=True):
            mine.copy_(theirs)

    @torch.no_grad()
    def push(self, keys: torch.Tensor) -> None:
        """Append ``keys`` (already identical on every process) and drop the oldest rows beyond ``size``."""
        keys = keys.detach().float()
        queue = keys if self.queue is None else torch.cat([self.queue, keys.to(self.queue.device)])
        self.queue = queue[-self.size:].clone()

    def state_dict(self) -> dict:
        return {"queue": None if self.queue is None else self.queue.cpu(),
                "encoder": {k: v.detach().cpu().clone() for k, v in self.encoder.state_dict().items()}}

    def load_state_dict(self, state: dict, device: torch.device | str = "cpu") -> None:
        self.encoder.load_state_dict(state["encoder"])
        self.queue = None if state["queue"] is None else state["queue"].to(device)


class MomentumObjective:
    """Wraps a contrastive objective (``ViewsObjective``, ``TripletObjective``) with a momentum queue.

    The wrapped objective must take ``loss(embeddings, batch, extra_negatives=None)`` and say which
    rows to encode with ``positive_rows(batch)``. The trainer calls the hooks below (see
    :class:`luse.objectives.base.Hooks`).
    """

    def __init__(self, objective, size: int, momentum: float):
        if not hasattr(objective, "positive_rows"):
            raise InputError("config", "loss.queue_size=0 for this loss (the momentum queue serves "
                             "luse, simcse_unsup and simcse_sup)", got=type(objective).__name__)
        self.objective = objective
        # The inner objective's own method: DataLoader workers get it without the momentum encoder.
        self.collate = objective.collate
        self.positive_rows = objective.positive_rows  # an anchor around the queue distils over the same rows
        self.queue = MomentumQueue(size, momentum)
        self.pending: list[torch.Tensor] = []  # keys of this step's micro-batches, gathered, not yet queued
        self._accelerator = None

    def setup(self, accelerator, model) -> None:
        self._accelerator = accelerator
        self.queue.setup(accelerator.unwrap_model(model))

    def loss(self, embeddings: torch.Tensor, batch: dict) -> torch.Tensor:
        loss = self.objective.loss(embeddings, batch, extra_negatives=self.queue.negatives())
        rows = self.objective.positive_rows(batch)
        inputs = select_rows(batch, rows, embeddings.device)
        with self._accelerator.autocast():
            keys = self.queue.encode(inputs)
        # Gathered now (every process runs loss() at the same micro-steps), so the pending keys and
        # hence the queue are the same everywhere, and a checkpoint of rank 0's state fits all ranks.
        self.pending.append(gather_with_grad(keys)[0])
        return loss

    def after_optimizer_step(self, model) -> None:
        # MoCo's order: keys were made by the encoder before this update; then they join the queue.
        self.queue.update(self._accelerator.unwrap_model(model))
        for keys in self.pending:
            self.queue.push(keys)
        self.pending = []

    def state_dict(self) -> dict:
        state = self.queue.state_dict()
        state["pending"] = [keys.cpu() for keys in self.pending]
        return state

    def load_state_dict(self, state: dict) -> None:
        device = self._accelerator.device if self._accelerator is not None else "cpu"
        self.queue.load_state_dict(state, device)
        self.pending = [keys.to(device) for keys in state.get("pending", [])]


def with_queue(loss: LossConfig, objective):
    """``objective`` with a momentum encoder and negative queue when ``loss.queue_size > 0``."""
    if not loss.queue_size:
        return objective
    return MomentumObjective(objective, loss.queue_size, loss.momentum)
