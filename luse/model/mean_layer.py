"""Serve a mean-pooled encoder at the [CLS] position of a plain Hugging Face model.

Many bases (m3e, all-MiniLM, most sentence-transformers models) were trained with mean pooling:
their CLS vector is several points worse than their mean vector, and training the CLS vector first
has to win that back. luse's contract is that the sentence vector is the CLS position of plain
``BertModel`` (``[0][:, 0]``). :func:`append_mean_layer` keeps both: training reads the masked mean
(the pooling the base is good at), and the export gets one more transformer layer, with fixed
weights, whose [CLS] output is that mean:

* attention with zero query and key weights scores every key 0, so each position's softmax is
  uniform over the real (unmasked) tokens: the value average is the masked mean of the layer below;
* values pass unchanged (identity) and the attention output is scaled by ``SCALE`` before the
  residual, so the position's own state adds only ``1 / SCALE`` of noise;
* the two LayerNorms have unit gain and zero bias, and the feed-forward block outputs zero, so the
  result is the mean with its per-vector feature mean removed and unit variance: the same direction
  as the mean vector minus its component along the all-ones vector (which barely moves cosines;
  tests/test_mean_layer.py checks the cosines against the masked mean).

The layer is an ordinary ``BertLayer`` (``num_hidden_layers`` grows by one), so any BERT-family
loader reads it with no code of ours; the price is one more layer at inference.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from luse.errors import InputError

# Attention output scale: the residual adds the position's own state at 1/SCALE of the mean. Large
# enough to drown it, small enough that the scaled values stay well inside fp16's range.
SCALE = 1000.0


def mean_layer_support(backbone: nn.Module) -> str | None:
    """Why :func:`append_mean_layer` cannot serve this backbone, or ``None`` if it can."""
    layers = getattr(getattr(backbone, "encoder", None), "layer", None)
    if not isinstance(layers, nn.ModuleList) or not len(layers):
        return f"{type(backbone).__name__} has no encoder.layer list"
    try:
        _parts(layers[-1])
    except AttributeError as missing:
        return f"its layers are not BERT's post-LayerNorm layers ({missing})"
    return None


def append_mean_layer(backbone: nn.Module) -> nn.Module:
    """A copy of ``backbone`` with one more layer whose [CLS] output is the masked mean of the last layer.

    ``backbone`` itself is not modified (it may still be training)."""
    why = mean_layer_support(backbone)
    if why is not None:
        raise InputError("model", "a BERT-family backbone for a mean layer", why)
    served = copy.deepcopy(backbone)
    layer = copy.deepcopy(served.encoder.layer[-1])
    query, key, value, attention_out, norm1, up, down, norm2 = _parts(layer)
    hidden = served.config.hidden_size
    with torch.no_grad():
        for linear in (query, key, up, down):
            linear.weight.zero_()
            if linear.bias is not None:
                linear.bias.zero_()
        value.weight.copy_(torch.eye(hidden))
        attention_out.weight.copy_(torch.eye(hidden) * SCALE)
        for linear in (value, attention_out):
            if linear.bias is not None:
                linear.bias.zero_()
        for norm in (norm1, norm2):
            norm.weight.fill_(1.0)
            norm.bias.zero_()
    served.encoder.layer.append(layer)
    served.config.num_hidden_layers = len(served.encoder.layer)
    if hasattr(layer.attention.self, "layer_idx"):  # recent transformers index layers for their caches
        layer.attention.self.layer_idx = len(served.encoder.layer) - 1
    return served


def _parts(layer: nn.Module) -> tuple[nn.Module, ...]:
    """The linear maps and norms of a BERT layer (BERT, RoFormer, ERNIE and kin share the names)."""
    attention = layer.attention
    parts = (attention.self.query, attention.self.key, attention.self.value, attention.output.dense,
             attention.output.LayerNorm, layer.intermediate.dense, layer.output.dense, layer.output.LayerNorm)
    for part in parts:
        if not isinstance(part, (nn.Linear, nn.LayerNorm)):
            raise AttributeError(f"{type(part).__name__} where a Linear or LayerNorm was expected")
    if getattr(layer, "crossattention", None) is not None:
        raise AttributeError("a decoder layer with cross-attention")
    return parts
