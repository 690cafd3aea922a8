"""Similar-sentence generation with a RoFormer-Sim model (:mod:`luse.model.seq2seq`), as in the seed's ``gen_synonyms``.

The input becomes the source ``[CLS] text [SEP]`` (token type 0); ``n`` continuations (type 1)
are sampled token by token (temperature, top-k, top-p) under the UniLM mask until [SEP]; the
distinct ones other than the input are ranked by cosine similarity to the input under the
model's own CLS encoder (or any given encoder) and the best ``k`` are returned with their scores.

Decoding is incremental: the keys and values of the prompt and of the tokens written so far are
cached, so each step runs the model on one new token per candidate (``use_cache=False`` in
:func:`sample_targets` recomputes the whole sequence instead; the tests check both agree).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import torch

from luse.errors import InputError


def gen_synonyms(model, text: str, n: int = 100, k: int = 20, mask_idxs: Sequence[int] | None = None, *,
                 top_p: float = 0.95, top_k: int = 0, temperature: float = 1.0, batch_size: int = 32,
                 encoder=None, max_new_tokens: int | None = None,
                 generator: torch.Generator | None = None) -> list[tuple[str, float]]:
    """Up to ``k`` sentences similar to ``text``, best first, as ``(sentence, cosine)`` pairs.

    Args:
        model: a :class:`luse.model.seq2seq.Seq2SeqModel`.
        text: the input sentence.
        n: candidates to sample (before removing duplicates and the input).
        k: how many to return.
        mask_idxs: positions of the tokenised input to replace by [MASK] before generating, counted
            as the seed does: 0 is [CLS], so for a character-level Chinese model position ``i`` is
            the ``i``-th character (1-based): ``mask_idxs=[6, 7]`` masks 第一 in 科学技术是第一生产力。
        top_p: nucleus sampling: keep the smallest set of tokens whose probability reaches top_p
            (1.0: off).
        top_k: keep the k most probable tokens (0: off).
        temperature: divides the logits before sampling.
        batch_size: candidates decoded together.
        encoder: ranks candidates (anything with ``encode(texts, normalize=True)``); default ``model``.
        max_new_tokens: longest candidate in tokens (default: ``model.max_length``).
        generator: a ``torch.Generator`` for reproducible sampling.

    Raises:
        InputError: an empty text, a bad mask position or bad sampling settings.
    """
    if not text or not text.strip():
        raise InputError("gen_synonyms", "a non-empty text", text)
    if n < 1 or k < 1 or batch_size < 1 or temperature <= 0 or not 0 < top_p <= 1 or top_k < 0:
        raise InputError("gen_synonyms", "n, k, batch_size >= 1, temperature > 0, 0 < top_p <= 1, top_k >= 0",
                         f"n={n} k={k} batch_size={batch_size} temperature={temperature} top_p={top_p} top_k={top_k}")
    prompt = source_ids(model.tokenizer, text, model.max_length, mask_idxs)
    samples = sample_targets(model, prompt, n, top_p=top_p, top_k=top_k, temperature=temperature,
                             batch_size=batch_size, max_new_tokens=max_new_tokens or model.max_length,
                             generator=generator)
    own = decode(model.tokenizer, model.tokenizer(text, add_special_tokens=False, truncation=True,
                                                  max_length=model.max_length - 2)["input_ids"])
    candidates = list(dict.fromkeys(c for c in (decode(model.tokenizer, s) for s in samples)
                                    if c.strip() and c not in (own, text)))
    return rank(encoder or model, text, candidates)[:k]


def rank(encoder, text: str, candidates: list[str]) -> list[tuple[str, float]]:
    """``candidates`` sorted by cosine similarity to ``text`` under ``encoder`` (best first)."""
    if not candidates:
        return []
    vectors = np.asarray(encoder.encode([text, *candidates], normalize=True), dtype=np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True).clip(min=1e-12)  # encoders that ignore normalize
    scores = vectors[1:] @ vectors[0]
    order = np.argsort(-scores, kind="stable")
    return [(candidates[i], float(scores[i])) for i in order]


def source_ids(tokenizer, text: str, max_length: int, mask_idxs: Sequence[int] | None = None) -> list[int]:
    """``[CLS] text [SEP]`` ids (text cut to ``max_length - 2`` tokens), with ``mask_idxs`` set to [MASK]."""
    ids = tokenizer(text, truncation=True, max_length=max_length)["input_ids"]
    for i in mask_idxs or ():
        if not 0 < i < len(ids) - 1:
            raise InputError("mask_idxs", f"positions 1..{len(ids) - 2} of the tokenised input ({len(ids) - 2} "
                             "tokens; 0 is [CLS])", i)
        ids[i] = tokenizer.mask_token_id
    return ids


@torch.no_grad()
def sample_targets(model, prompt: list[int], n: int, *, top_p: float, top_k: int, temperature: float,
                   batch_size: int, max_new_tokens: int, generator: torch.Generator | None = None,
                   use_cache: bool = True) -> list[list[int]]:
    """``n`` sampled target token lists (without the final [SEP]) after the source ``prompt``.

    With ``use_cache`` each step feeds only the newest token and reuses the keys and values of
    the earlier ones (the UniLM mask lets a new target token see everything before it); without,
    each step recomputes the whole sequence. Both give the same distribution at every step.
    """
    from transformers import DynamicCache

    tok = model.tokenizer
    was_training = model.training
    model.eval()
    device = model.device
    banned = [i for i in {tok.pad_token_id, tok.cls_token_id, tok.mask_token_id, tok.unk_token_id} if i is not None]
    results: list[list[int]] = []
    for start in range(0, n, batch_size):
        rows = min(batch_size, n - start)
        ids = torch.tensor([prompt] * rows, device=device)
        types = torch.zeros_like(ids)
        active = torch.arange(rows, device=device)  # rows still writing
        cache = DynamicCache(config=model.backbone.config) if use_cache else None
        fresh = ids  # what the cached model has not seen yet: the prompt, then one token per step
        done: dict[int, list[int]] = {}
        for _ in range(max_new_tokens):
            if cache is None:
                hidden = model.seq2seq_hidden(ids[active], torch.ones_like(ids[active]), types[active])
            else:
                hidden = model.seq2seq_step(fresh, types[active], cache)
            logits = model.lm_head(hidden[:, -1]).float() / temperature
            logits[:, banned] = float("-inf")
            ids_kept, weights = candidates(logits, top_k, top_p)
            token = torch.multinomial(weights, 1, generator=generator)
            if ids_kept is not None:
                token = ids_kept.gather(-1, token)
            new = torch.full((rows, 1), tok.pad_token_id, device=device)
            new[active] = token
            ids, types = torch.cat([ids, new], 1), torch.cat([types, torch.ones_like(new)], 1)
            finished = token.squeeze(1) == tok.sep_token_id
            for row in active[finished].tolist():
                done[row] = ids[row, len(prompt):-1].tolist()
            active, fresh = active[~finished], token[~finished]
            if not len(active):
                break
            if cache is not None and finished.any():
                cache.reorder_cache(torch.nonzero(~finished).flatten())  # drop finished rows from the cache
        for row in active.tolist():  # hit max_new_tokens: keep what was written
            done[row] = ids[row, len(prompt):].tolist()
        results.extend(done[row] for row in range(rows))
    model.train(was_training)
    return results


PROBE = 64  # tokens looked at before sorting the whole vocabulary


def candidates(logits: torch.Tensor, top_k: int = 0, top_p: float = 1.0) -> tuple[torch.Tensor | None, torch.Tensor]:
    """The sampling distribution of :func:`filter_logits`, cheaply: ``(token ids [B, m], weights [B, m])``.

    A full sort of a 21k vocabulary costs more than a small model's step on CPU, and the top-k set
    or the top-p nucleus is nearly always within the best ``PROBE`` tokens: when it is (for every
    row), only those are kept. Otherwise ``(None, probabilities over the whole vocabulary)``.
    Weights need not sum to 1 (``torch.multinomial`` normalises).
    """
    width = logits.shape[-1]
    k = min(top_k, width) if top_k else width
    probe = min(k, PROBE)
    values, ids = logits.topk(probe, dim=-1)
    if k == probe or (k == width and top_p < 1):
        # log-normaliser of the top-k-filtered distribution: over the probe when it holds all k tokens
        norm = values.logsumexp(-1, keepdim=True) if k == probe else logits.logsumexp(-1, keepdim=True)
        probs = (values - norm).exp()
        if top_p >= 1:  # top-k alone, all k tokens in the probe
            return ids, probs
        if (probs.sum(-1) >= top_p).all():  # the nucleus lies inside the probe
            before = probs.cumsum(-1) - probs
            return ids, probs.masked_fill(before >= top_p, 0.0)
    return None, filter_logits(logits, top_k, top_p).softmax(-1)


def filter_logits(logits: torch.Tensor, top_k: int = 0, top_p: float = 1.0) -> torch.Tensor:
    """Logits with everything outside the top-k / the top-p nucleus set to -inf (the best token always stays)."""
    if top_k:
        kth = logits.topk(min(top_k, logits.shape[-1]), dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p < 1:
        sorted_logits, order = logits.sort(dim=-1, descending=True)
        before = sorted_logits.softmax(-1).cumsum(-1) - sorted_logits.softmax(-1)  # mass of better tokens
        drop = torch.zeros_like(logits, dtype=torch.bool).scatter(-1, order, before >= top_p)
        logits = logits.masked_fill(drop, float("-inf"))
    return logits


def decode(tokenizer, ids: Iterable[int]) -> str:
    """Token ids -> text without the spaces a BERT tokenizer puts between Chinese characters.

    Word pieces (``##x``) join their word; a space stays only between two ASCII word tokens.
    """
    special = set(tokenizer.all_special_ids)
    text = ""
    for token in tokenizer.convert_ids_to_tokens([i for i in ids if i not in special]):
        if token.startswith("##"):
            text += token[2:]
        elif text and _ascii_word(text[-1]) and _ascii_word(token[0]):
            text += " " + token
        else:
            text += token
    return text


def _ascii_word(char: str) -> bool:
    return char.isascii() and char.isalnum()


def generate_file(model, in_path: str | os.PathLike, out_path: str | os.PathLike, *, n: int = 100, k: int = 20,
                  field: str = "text", progress: bool = True, **options) -> int:
    """``gen_synonyms`` for every text of a corpus file; writes jsonl ``{"text", "views", "scores"}``.

    The output has the layout of ``luse augment`` (``views``: the ``k`` best candidates, best
    first), so ``views.paraphrases=OUT`` feeds it to ``pretrain_luse``. Written atomically;
    returns the number of texts.
    """
    from tqdm.auto import tqdm

    from luse.data.corpus import iter_corpus
    from luse.io import atomic_open

    texts = (t for t in iter_corpus(os.fspath(in_path), field=field) if t and t.strip())
    count = 0
    with atomic_open(Path(out_path), "w") as out:
        for text in tqdm(texts, desc="generate", unit=" texts", disable=not progress):
            ranked = gen_synonyms(model, text, n=n, k=k, **options)
            record = {"text": text, "views": [c for c, _ in ranked], "scores": [round(s, 6) for _, s in ranked]}
            out.write(json.dumps(record, ensure_ascii=False) + "\n")
            count += 1
    return count


def seeded_generator(seed: int | None, device: str | torch.device = "cpu") -> torch.Generator | None:
    """A ``torch.Generator`` on the model's device for reproducible sampling, or None (torch's global one)."""
    if seed is None:
        return None
    generator = torch.Generator(device=device)
    generator.manual_seed(seed)
    return generator
