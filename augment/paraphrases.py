"""Pre-generated paraphrases as views: a lookup augmenter for ``pretrain_luse``.

A generator (``luse generate MODEL --in corpus.txt --out paraphrases.jsonl``) or ``luse augment``
writes one JSON object per text, ``{"text": ..., "views": [...]}`` (other keys ignored). With
``views.paraphrases=paraphrases.jsonl views.generated=N`` every training sentence gets N of its
views, drawn without replacement with the batch's random generator, next to its EDA and dropout
views.

A sentence the file does not know, or one with fewer than N views, is filled up with the
sentence itself: those rows become dropout views, so the loss shape never changes. Such misses
are counted (``misses``, ``short``) and the first one is logged: a file generated from another
corpus (or another sentence splitting) shows up at once.
"""

from __future__ import annotations

import json
import logging
import os
import random
from pathlib import Path

from luse.errors import InputError

logger = logging.getLogger("luse")


class ParaphraseViews:
    """``views(sentence, n, rng) -> n texts`` looked up in a ``{"text", "views"}`` jsonl file."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.table = read_paraphrases(self.path)
        self.misses = self.short = 0
        logger.info("paraphrases: %d texts with %d views from %s", len(self.table),
                    sum(len(v) for v in self.table.values()), self.path)

    def __call__(self, sentence: str, n: int, rng: random.Random) -> list[str]:
        found = self.table.get(sentence)
        if found is None:
            if not self.misses:
                logger.warning("paraphrases: %r is not in %s; using the sentence itself (dropout views) "
                               "for texts without paraphrases", sentence[:40], self.path)
            self.misses += 1
            return [sentence] * n
        if len(found) < n:
            self.short += 1
            return [*rng.sample(found, len(found)), *[sentence] * (n - len(found))]
        return rng.sample(found, n)


def read_paraphrases(path: str | os.PathLike) -> dict[str, list[str]]:
    """``text -> distinct views`` (the text itself excluded) from a jsonl file; repeated texts merge.

    Raises:
        InputError: a missing file, invalid UTF-8 or JSON, or a record without a string ``text``
            and a list of strings ``views`` (names the file and line).
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(path, "an existing .jsonl file of {\"text\", \"views\"} records", got="no such file")
    expected = 'a JSON object {"text": string, "views": [string, ...]}'
    table: dict[str, dict[str, None]] = {}
    with path.open("rb") as handle:
        for number, raw in enumerate(handle, 1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError:
                raise InputError(path, "UTF-8 text", got=raw[:40], line=number) from None
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except ValueError:
                raise InputError(path, expected, got=line.strip(), line=number) from None
            text = record.get("text") if isinstance(record, dict) else None
            views = record.get("views") if isinstance(record, dict) else None
            if not isinstance(text, str) or not isinstance(views, list) or not all(isinstance(v, str) for v in views):
                raise InputError(path, expected, got=line.strip(), line=number)
            kept = table.setdefault(text, {})
            kept.update((v, None) for v in views if v.strip() and v != text)
    return {text: list(views) for text, views in table.items()}
