"""Work the sentence vector never uses, skipped: same vectors, fewer FLOPs.

Three savings, all exact (vectors and gradients equal the plain forward's up to float rounding, in
eval and in train mode alike; dropout draws differ but follow the same distribution):

**Real tokens only.**  A batch is padded to its longest sentence, yet every linear layer, layer
norm, GELU and dropout of a BERT layer works token by token: padding positions only ever matter as
keys and values that the attention mask hides.  :func:`bert_forward` runs those per-token parts on
the real tokens alone (gathered into one ``[tokens, hidden]`` block) and lays the tokens out padded
only for the attention product.  On People's Daily at 32 tokens that is 12% of the work; on short
sentences (STS-B) far more.  The query, key and value projections run as one matrix product over
the concatenated weights, which a CPU's GEMM runs faster than three narrow ones.

**[CLS]-only last layer.**  With ``cls`` or ``pooler`` pooling only the [CLS] position of the last
layer is read, yet a plain forward computes that layer's query, attention output and feed-forward
for every token.  With ``cls_only`` the last layer computes keys and values for all tokens (the
[CLS] query attends to them) and everything else for [CLS] alone.  For m3e-small (4 layers) that
is about a fifth of the model's FLOPs; the deeper the model, the smaller the share.

**Length chunks.**  :func:`length_chunks` sorts the rows by length and cuts them into chunks of
``chunk_rows``, each padded only to its own longest row: the attention product (the one part that
still sees padding) and any backbone without :func:`bert_forward` then skip most of it.  The
contrastive batch is unchanged: the chunks' vectors are put back in the original order before any
loss sees them.

With ``fast_dropout`` the attention dropout on a CPU is :mod:`luse.model.dropout`'s (same distribution,
a fraction of the cost); the rest of this module is device-neutral.

Only BERT's layer (:data:`FAST_LAYERS`) is handled: other architectures (RoFormer's rotary queries,
say) compute their attention differently and run the plain forward.
"""

from __future__ import annotations

from types import SimpleNamespace

import torch
import torch.nn.functional as F
from torch import nn

from luse.model.dropout import dropout

# Layer classes whose structure bert_forward reproduces (attention.self.{query,key,value},
# attention.output, intermediate, output) and whose attention is plain scaled dot-product.
FAST_LAYERS = ("BertLayer",)
FAST_EMBEDDINGS = ("BertEmbeddings",)  # absolute positions: column j is position j


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


def supports_fast_forward(backbone: nn.Module) -> bool:
    """Whether :func:`bert_forward` reproduces this backbone's forward."""
    layers = getattr(getattr(backbone, "encoder", None), "layer", None)
    if not layers:
        return False
    config = backbone.config
    return (all(type(layer).__name__ in FAST_LAYERS for layer in layers)
            and type(getattr(backbone, "embeddings", None)).__name__ in FAST_EMBEDDINGS
            and not getattr(config, "is_decoder", False) and not getattr(config, "add_cross_attention", False))


def bert_forward(backbone: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                 token_type_ids: torch.Tensor | None = None, *, unpad: bool = True, cls_only: bool = False,
                 output_hidden_states: bool = False, fast_dropout: bool = False) -> SimpleNamespace:
    """A BERT forward that skips padding and, with ``cls_only``, the last layer's non-[CLS] rows.

    Returns what :func:`luse.model.encoder.pool` reads: ``last_hidden_state`` (``[B, T, H]`` with zeros at
    padding, or ``[B, 1, H]`` with ``cls_only``), ``pooler_output`` (when the backbone has a pooler)
    and, with ``output_hidden_states``, every layer's output laid out like ``last_hidden_state``.
    ``cls_only`` needs [CLS] at column 0 of every row (right padding), as a plain forward reads it.
    ``fast_dropout``: attention dropout with :func:`luse.model.dropout.dropout` on a CPU (the layers' other
    dropouts are whatever modules the backbone holds: :func:`luse.model.dropout.use_fast_dropout` swaps them).
    """
    if cls_only and output_hidden_states:
        raise ValueError("cls_only computes the last layer for [CLS] alone: no full hidden states to return")
    batch, length = input_ids.shape
    mask = attention_mask.bool()
    # Which rows of the flattened [B * T] block are computed: the real tokens, or all of them.
    kept = mask.flatten().nonzero().squeeze(1) if unpad else None
    hidden = backbone.embeddings(input_ids=input_ids, token_type_ids=token_type_ids)
    hidden = hidden.reshape(batch * length, -1)
    if kept is not None:
        hidden = hidden.index_select(0, kept)
    key_mask = mask[:, None, None, :]  # [B, 1, 1, T]: True where a key may be attended to
    states = [hidden]
    layers = backbone.encoder.layer
    for index, layer in enumerate(layers):
        queries = None
        if cls_only and index == len(layers) - 1:
            # Row b's [CLS]: column 0, which is its first kept token (kept tokens come in row order).
            lengths = mask.sum(1)
            queries = (lengths.cumsum(0) - lengths if kept is not None
                       else torch.arange(0, batch * length, length, device=hidden.device))
        hidden = _layer(layer, hidden, key_mask, kept, (batch, length), queries, fast_dropout)
        states.append(hidden)
    last_hidden = (states[-1][:, None] if cls_only else _padded(states[-1], kept, batch, length))
    pooler = getattr(backbone, "pooler", None)
    return SimpleNamespace(
        last_hidden_state=last_hidden,
        pooler_output=pooler(last_hidden) if isinstance(pooler, nn.Module) else None,
        hidden_states=tuple(_padded(s, kept, batch, length) for s in states) if output_hidden_states else None,
    )


def _padded(rows: torch.Tensor, kept: torch.Tensor | None, batch: int, length: int) -> torch.Tensor:
    """``[tokens, H]`` back to ``[B, T, H]``, zeros at padding."""
    if kept is not None:
        rows = rows.new_zeros(batch * length, rows.shape[-1]).index_copy(0, kept, rows)
    return rows.view(batch, length, -1)


def _layer(layer: nn.Module, hidden: torch.Tensor, key_mask: torch.Tensor, kept: torch.Tensor | None,
           shape: tuple[int, int], queries: torch.Tensor | None = None, fast_dropout: bool = False) -> torch.Tensor:
    """One BertLayer over ``hidden`` (``[tokens, H]``); with ``queries`` (row indices of ``hidden``)
    only those tokens get an output: the others serve as keys and values."""
    attention = layer.attention.self
    batch, length = shape
    heads, head_size = attention.num_attention_heads, attention.attention_head_size
    projections = [attention.key, attention.value] if queries is not None else [
        attention.query, attention.key, attention.value]
    # One wide GEMM instead of two or three narrow ones (the cat's backward only splits the gradient).
    fused = F.linear(hidden, torch.cat([p.weight for p in projections]), torch.cat([p.bias for p in projections]))
    fused = _padded(fused, kept, batch, length).view(batch, length, len(projections), heads, head_size)
    parts = fused.permute(2, 0, 3, 1, 4).unbind(0)  # each [B, heads, T, head_size]
    if queries is None:
        query, key, value = parts
        residual = hidden
    else:
        key, value = parts
        residual = hidden.index_select(0, queries)
        query = attention.query(residual).view(batch, 1, heads, head_size).transpose(1, 2)
    context = _attention(query, key, value, key_mask, attention.scaling,
                         attention.dropout.p if layer.training else 0.0, fast_dropout)
    context = context.transpose(1, 2).reshape(-1, heads * head_size)  # [B * T or B, H]
    if queries is None and kept is not None:
        context = context.index_select(0, kept)
    attended = layer.attention.output(context, residual)
    return layer.output(layer.intermediate(attended), attended)


def _attention(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, key_mask: torch.Tensor,
               scale: float, dropout_p: float, fast_dropout: bool) -> torch.Tensor:
    """Scaled dot-product attention; with ``fast_dropout`` and dropout on a CPU, written out so that
    the dropout is :func:`luse.model.dropout.dropout` (SDPA runs these same products there, with torch's)."""
    if dropout_p <= 0 or not fast_dropout or query.device.type != "cpu":
        return F.scaled_dot_product_attention(query, key, value, attn_mask=key_mask, scale=scale, dropout_p=dropout_p)
    scores = torch.matmul(query, key.transpose(-1, -2)) * scale
    scores = scores.float().masked_fill(~key_mask, float("-inf"))  # softmax in fp32 under bf16 autocast
    probs = dropout(scores.softmax(dim=-1).to(value.dtype), dropout_p)
    return torch.matmul(probs, value)
