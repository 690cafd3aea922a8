"""Word repetition (ESimCSE, Wu et al. 2022): a positive view that differs from its sentence in length only.

With dropout views, a sentence and its positive always have the same length, so the contrastive loss can
lean on length to find positives. ESimCSE's view repeats a few random units of the sentence: same meaning,
different length. Per view, ``k`` is drawn uniformly from ``0 .. max(2, int(dup_rate * n))`` (``n`` units, the
paper's ``dup_rate = 0.32``) and ``k`` distinct units are doubled.

Units are what a BERT tokenizer would see, read off the text so that views stay tokenizer-free strings:
each CJK character is one unit (Chinese BERT vocabularies are per character), and any other run of
non-space characters is one unit (a word, with a space between its copies). Whitespace is kept as it was.
"""

from __future__ import annotations

import random
import re

_CJK = "\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff"
_UNITS = re.compile(rf"[{_CJK}]|[^\s{_CJK}]+|\s+")


def repeat_words(text: str, rng: random.Random, dup_rate: float = 0.32) -> str:
    """``text`` with a random handful of its units doubled (see the module docstring)."""
    parts = _UNITS.findall(text)
    units = [i for i, part in enumerate(parts) if not part.isspace()]
    if not units:
        return text
    k = min(len(units), rng.randint(0, max(2, int(dup_rate * len(units)))))
    doubled = set(rng.sample(units, k))
    out = []
    for i, part in enumerate(parts):
        out.append(part)
        if i in doubled:
            # A word's copy needs a space to stay a separate token; a character or a punctuation mark does not.
            out.append(" " + part if len(part) > 1 or part.isascii() and part.isalnum() else part)
    return "".join(out)


def repetition_views(dup_rate: float):
    """An augmenter ``(text, n, rng) -> n views`` for :class:`luse.objectives.views.ViewsObjective`."""

    def views(text: str, n: int, rng: random.Random) -> list[str]:
        return [repeat_words(text, rng, dup_rate) for _ in range(n)]

    return views
