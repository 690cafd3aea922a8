"""Losses with cross-process negatives, run under ``accelerate launch`` by ``tests/test_gather.py``.

Every case builds the same model from the same seed, takes the same fixed global batch, gives each
process its slice, computes a loss with ``gather=True`` and runs backward through DDP. Rank 0 saves
the loss (averaged over processes) and the parameter gradients, which must equal those of a single
process on the whole batch.

Usage: ``python tests/gather_script.py OUT.pt [--bert TINY_BERT_DIR]`` (one process), or the same
under ``accelerate launch --multi_gpu --num_processes 2`` (two CPU processes over gloo).
"""

from __future__ import annotations

import argparse
from collections.abc import Callable

import torch
import torch.distributed as dist
from accelerate import Accelerator
from torch import nn

from luse.losses import cosent_loss, luse_loss, simcse_sup_loss, simcse_unsup_loss
from luse.losses.distributed import gather_with_grad, rank, world_size

GLOBAL_BATCH = 8
INPUT_SIZE = 16
# Row boundaries of each process's slice of the global batch, by world size.
EQUAL_SPLITS = {1: [0, 8], 2: [0, 4, 8]}
UNEQUAL_SPLITS = {1: [0, 8], 2: [0, 3, 8]}

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def global_inputs(n_views: int, seed: int = 1234) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    inputs = torch.randn(GLOBAL_BATCH, n_views, INPUT_SIZE, generator=generator, dtype=torch.float64)
    scores = torch.rand(GLOBAL_BATCH, generator=generator, dtype=torch.float64).round(decimals=1)
    return inputs, scores


def run_case(accelerator: Accelerator, model: nn.Module, embed: Callable, n_views: int, loss_fn: LossFn,
             splits: dict[int, list[int]]) -> dict:
    model = accelerator.prepare(model)
    inputs, scores = global_inputs(n_views)
    bounds = splits[world_size()]
    start, end = bounds[rank()], bounds[rank() + 1]
    views = embed(model, inputs[start:end])
    loss = loss_fn(views, scores[start:end])
    accelerator.backward(loss)
    # Not accelerator.unwrap_model: it imports torch._dynamo, seconds of start-up for nothing here.
    unwrapped = getattr(model, "module", model)
    return {
        "loss": accelerator.reduce(loss.detach(), reduction="mean").item(),
        "grads": {name: p.grad.detach().clone() for name, p in unwrapped.named_parameters()},
    }


def linear_model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Linear(INPUT_SIZE, 8).double()


def embed_linear(model: nn.Module, inputs: torch.Tensor) -> torch.Tensor:
    batch, n_views, _ = inputs.shape
    return model(inputs.reshape(batch * n_views, INPUT_SIZE)).reshape(batch, n_views, -1)


def tiny_bert_encoder(path: str) -> nn.Module:
    from transformers import AutoModel

    from luse.model.encoder import SentenceEncoder

    # No dropout: the two runs must see the very same function of their inputs.
    backbone = AutoModel.from_pretrained(path, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    return SentenceEncoder(backbone, tokenizer=None, pooling="pooler").double()


def embed_bert(model: nn.Module, inputs: torch.Tensor) -> torch.Tensor:
    """Turn the random inputs into token ids and padding deterministically, then encode them."""
    batch, n_views, _ = inputs.shape
    flat = inputs.reshape(batch * n_views, INPUT_SIZE)
    vocab_size = getattr(model, "module", model).backbone.config.vocab_size  # model may be DDP-wrapped
    input_ids = (flat.abs() * 1000).long() % vocab_size
    lengths = 3 + (flat[:, 0].abs() * 100).long() % (INPUT_SIZE - 3)
    attention_mask = (torch.arange(INPUT_SIZE)[None, :] < lengths[:, None]).long()
    vectors = model(input_ids=input_ids * attention_mask, attention_mask=attention_mask)
    return vectors.reshape(batch, n_views, -1)


def check_raw_gather() -> dict:
    """gather_with_grad on unequal slices: the concatenation, the offsets, and the summed gradient."""
    inputs, _ = global_inputs(1)
    rows = inputs[:, 0]
    bounds = UNEQUAL_SPLITS[world_size()]
    local = rows[bounds[rank()]: bounds[rank() + 1]].clone().requires_grad_(True)
    gathered, offset = gather_with_grad(local)
    weights = torch.arange(1, gathered.numel() + 1, dtype=gathered.dtype).reshape(gathered.shape)
    (gathered * weights).sum().backward()
    offsets = [offset]
    grads = [local.grad]
    if dist.is_initialized():
        offsets = [None] * world_size()
        grads = [None] * world_size()
        dist.all_gather_object(offsets, offset)
        dist.all_gather_object(grads, local.grad)
    return {"gathered": gathered.detach(), "offsets": offsets, "local_grads": grads, "weights": weights}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("out")
    parser.add_argument("--bert", help="directory of a tiny BERT checkpoint (tests/tiny_models.py)")
    args = parser.parse_args()

    accelerator = Accelerator(cpu=True)
    linear = dict(accelerator=accelerator, embed=embed_linear)
    results = {
        "world_size": world_size(),
        "raw_gather": check_raw_gather(),
        "luse": run_case(model=linear_model(), n_views=3, splits=EQUAL_SPLITS,
                         loss_fn=lambda v, s: luse_loss(v, temperature=0.05), **linear),
        "luse_unequal": run_case(model=linear_model(), n_views=3, splits=UNEQUAL_SPLITS,
                                 loss_fn=lambda v, s: luse_loss(v, temperature=0.05), **linear),
        "simcse_unsup": run_case(model=linear_model(), n_views=2, splits=EQUAL_SPLITS,
                                 loss_fn=lambda v, s: simcse_unsup_loss(v), **linear),
        "simcse_sup": run_case(model=linear_model(), n_views=3, splits=UNEQUAL_SPLITS,
                               loss_fn=lambda v, s: simcse_sup_loss(*v.unbind(1), hard_negative_weight=0.5),
                               **linear),
        "cosent": run_case(model=linear_model(), n_views=2, splits=UNEQUAL_SPLITS,
                           loss_fn=lambda v, s: cosent_loss(v[:, 0], v[:, 1], s), **linear),
    }
    if args.bert:
        results["bert_luse"] = run_case(accelerator, tiny_bert_encoder(args.bert), embed_bert, n_views=2,
                                        loss_fn=lambda v, s: luse_loss(v, temperature=0.05),
                                        splits=EQUAL_SPLITS)
    if accelerator.is_main_process:
        torch.save(results, args.out)
    accelerator.wait_for_everyone()


if __name__ == "__main__":
    main()
