"""Work the sentence vector never uses, skipped: same vectors, fewer FLOPs.

Two savings, both exact (the vectors equal the plain forward's up to float rounding, in eval and
in train mode alike; dropout draws differ but follow the same distribution):

**Length chunks.**  A batch is padded to its longest sentence, so short sentences carry padding
through every matrix product.  :func:`length_chunks` sorts the rows by length and cuts them into
chunks of ``chunk_rows``, each padded only to its own longest row.  The contrastive batch is
unchanged: the chunks' vectors are put back in the original order before any loss sees them.

**[CLS]-only last layer.**  With ``cls`` or ``pooler`` pooling only the [CLS] position of the last
layer is read, yet a plain forward computes that layer's query, attention output and feed-forward
for every token.  :func:`cls_only_last_layer` makes the last layer compute keys and values for all
tokens (the [CLS] query attends to them) and everything else for [CLS] alone.  For m3e-small
(4 layers) that is about a fifth of the model's FLOPs; the deeper the model, the smaller the share.
The output's ``last_hidden_state`` then has one position, which is all ``cls``/``pooler`` read.
Only BERT's layer (:data:`CLS_ONLY_LAYERS`) is handled: other architectures (RoFormer's rotary
queries, say) compute their attention differently and run the plain forward.
"""

from __future__ import annotations

from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import nn

# Layer classes whose structure _cls_only_forward reproduces (attention.self.{query,key,value},
# attention.output, intermediate, output) and whose attention is plain scaled dot-product.
CLS_ONLY_LAYERS = ("BertLayer",)


def length_chunks(attention_mask: torch.Tensor, chunk_rows: int) -> list[tuple[torch.Tensor, int]] | None:
    """Rows grouped by length: ``[(row indices, width), ...]``, or ``None`` when one block is as good.

    ``width`` is the last column any row of the chunk attends to, plus one; columns past it are
    padding for every row of the chunk and can be cut off (right padding; with left padding no
    column can be cut and the chunks keep the full width, still correct).
    """
    rows = attention_mask.shape[0]
    if chunk_rows <= 0 or rows <= chunk_rows:
        return None
    lengths = attention_mask.sum(dim=1)
    order = torch.argsort(lengths, stable=True)
    columns = torch.arange(attention_mask.shape[1], device=attention_mask.device)
    chunks = []
    for start in range(0, rows, chunk_rows):
        members = order[start:start + chunk_rows]
        used = attention_mask[members].bool().any(dim=0)
        width = int(columns[used].max()) + 1 if bool(used.any()) else 1
        chunks.append((members, width))
    if all(width == attention_mask.shape[1] for _, width in chunks):
        return None  # nothing to cut: one forward over the whole block is cheaper
    return chunks


def supports_cls_only(backbone: nn.Module) -> bool:
    """Whether :func:`cls_only_last_layer` knows this backbone's last layer."""
    layers = getattr(getattr(backbone, "encoder", None), "layer", None)
    if not layers:
        return False
    config = backbone.config
    return (type(layers[-1]).__name__ in CLS_ONLY_LAYERS and not getattr(config, "is_decoder", False)
            and not getattr(config, "add_cross_attention", False))


@contextmanager
def cls_only_last_layer(backbone: nn.Module, enabled: bool = True):
    """Within the block, the backbone's last layer computes the [CLS] position only."""
    if not enabled:
        yield
        return
    layer = backbone.encoder.layer[-1]
    # An instance attribute shadows the class's forward for this call only; the module's
    # parameters (and so its state dict and export) are untouched.
    layer.forward = lambda hidden_states, attention_mask=None, *args, **kwargs: _cls_only_forward(
        layer, hidden_states, attention_mask)
    try:
        yield
    finally:
        del layer.forward


def _cls_only_forward(layer: nn.Module, hidden_states: torch.Tensor,
                      attention_mask: torch.Tensor | None) -> torch.Tensor:
    attention = layer.attention.self
    batch, length, _ = hidden_states.shape
    heads, head_size = attention.num_attention_heads, attention.attention_head_size
    cls = hidden_states[:, :1]
    query = attention.query(cls).view(batch, 1, heads, head_size).transpose(1, 2)
    key = attention.key(hidden_states).view(batch, length, heads, head_size).transpose(1, 2)
    value = attention.value(hidden_states).view(batch, length, heads, head_size).transpose(1, 2)
    if attention_mask is not None and attention_mask.dim() == 4 and attention_mask.shape[-2] > 1:
        attention_mask = attention_mask[:, :, :1]  # the [CLS] query's row of a [B, 1, T, T] mask
    # Boolean (SDPA) and additive (eager) masks both work here, as in the layer's own attention.
    context = F.scaled_dot_product_attention(
        query, key, value, attn_mask=attention_mask, scale=attention.scaling,
        dropout_p=attention.dropout.p if layer.training else 0.0)
    context = context.transpose(1, 2).reshape(batch, 1, heads * head_size)
    attended = layer.attention.output(context, cls)
    return layer.output(layer.intermediate(attended), attended)
