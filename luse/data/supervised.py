"""Readers for supervised training data: triplets (anchor, positive, negative) and scored pairs.

Supervised sets are small (NLI for SimCSE is 275k triplets) and every record matters, so these
readers are strict, unlike the corpus readers: the first malformed line raises an
:class:`~luse.errors.InputError` naming the file, the line and the accepted forms, in one line::

    nli.tsv:17: expected 3 tab-separated columns (anchor<TAB>positive<TAB>negative), got '一个人\\t两个人'

Files are streamed (and gunzipped when named ``.gz``) like the corpus readers; the format comes
from the extension: ``.jsonl``/``.json`` (JSON lines), ``.tsv`` (tab-separated, fields taken as
written) or ``.csv`` (a header row, standard quoting, fields may span lines).
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Iterable, Iterator, Sequence
from os import PathLike
from pathlib import Path
from typing import Any

from luse.data.corpus import iter_text_lines
from luse.errors import InputError

#: Accepted key names for triplets, in order of preference (SimCSE's NLI csv uses sent0/sent1/hard_neg).
TRIPLET_KEYS: tuple[tuple[str, str, str], ...] = (
    ("anchor", "positive", "negative"),
    ("sentence1", "sentence2", "hard_negative"),
    ("sent0", "sent1", "hard_neg"),
    ("query", "pos", "neg"),
)
#: Accepted key names for the two texts of a pair (CLUE tasks such as AFQMC/LCQMC use sentence1/sentence2).
PAIR_KEYS: tuple[tuple[str, str], ...] = (
    ("sentence1", "sentence2"),
    ("text1", "text2"),
    ("text_a", "text_b"),
    ("s1", "s2"),
)
#: Accepted key names for a pair's score or label, in order of preference.
SCORE_KEYS: tuple[str, ...] = ("score", "label", "similarity")

_FORMATS = {".jsonl": "jsonl", ".json": "jsonl", ".tsv": "tsv", ".csv": "csv"}

#: What a file of another recipe's format is, and who reads it: the hint of the one-line error when a
#: reader is given a format it does not take (scored pairs would otherwise train as triplets whose
#: negative is the score).
SCORED_PAIRS = "this looks like scored pairs, which recipes/cosent.py reads, or recipes/cross_encoder.py for labels"
TRIPLETS = "this looks like triplets, which recipes/simcse_sup.py reads"
SIMILAR_PAIRS = "this looks like unscored pairs, which recipes/roformer_sim.py reads as similar pairs"
LABELLED_PAIRS = ("this looks like labelled pairs, some not similar, which recipes/cosent.py and "
                  "recipes/cross_encoder.py read; keep only the similar ones, without the label")
#: Keys that make a record of two texts a labelled or graded pair (mine-pairs' ``score`` is a similarity
#: above its threshold, so similar-pair readers accept ``score`` and refuse these).
GRADE_KEYS: tuple[str, ...] = ("label", "similarity")


def read_triplets(path: str | PathLike) -> Iterator[tuple[str, str, str]]:
    """Stream ``(anchor, positive, negative)`` triplets from a ``.jsonl``, ``.tsv`` or ``.csv`` file.

    Forms:

    - JSON lines: objects with ``anchor``/``positive``/``negative``, or
      ``sentence1``/``sentence2``/``hard_negative``, ``sent0``/``sent1``/``hard_neg``,
      ``query``/``pos``/``neg`` (all strings); other keys are ignored.
    - TSV: exactly three columns; a first line naming one of the key sets above is a header.
    - CSV: a header row naming one of the key sets above (SimCSE's ``nli_for_simcse.csv``).

    Blank lines are ignored; every text must be a non-empty string.

    Raises:
        InputError: a missing file, an unknown extension, invalid UTF-8 or a malformed record
            (at the first one; names the file, the line and the accepted forms).
    """
    path, kind = _open_format(path)
    forms = " or ".join("/".join(keys) for keys in TRIPLET_KEYS)
    if kind == "jsonl":
        return _jsonl_records(path, lambda record: _triplet_from_mapping(record, TRIPLET_KEYS),
                              f"a JSON object with string fields {forms}", _not_triplets)
    if kind == "tsv":
        return _tsv_records(path, 3, _triplet_from_row, TRIPLET_KEYS,
                            "3 tab-separated columns (anchor<TAB>positive<TAB>negative)", _not_triplet_row)
    return _csv_records(path, TRIPLET_KEYS, (), f"a header naming the columns {forms}", _not_triplet_header)


def read_pairs(path: str | PathLike) -> Iterator[tuple[str, str, float]]:
    """Stream scored pairs ``(sentence1, sentence2, score)`` from a ``.jsonl``, ``.tsv`` or ``.csv`` file.

    Forms:

    - JSON lines: objects with ``sentence1``/``sentence2`` (or ``text1``/``text2``,
      ``text_a``/``text_b``, ``s1``/``s2``) and a number in ``score``, ``label`` or
      ``similarity`` (numeric strings such as CLUE's ``"1"`` are accepted).
    - TSV: ``sentence1<TAB>sentence2<TAB>score`` (the STS-B layout); a first line naming the
      columns is a header.
    - CSV: a header row naming the two text columns and a score column as above.

    Blank lines are ignored; texts must be non-empty strings and scores finite numbers.

    Raises:
        InputError: a missing file, an unknown extension, invalid UTF-8 or a malformed record
            (at the first one; names the file, the line and the accepted forms).
    """
    path, kind = _open_format(path)
    forms = " or ".join("/".join(keys) for keys in PAIR_KEYS)
    scores = "/".join(SCORE_KEYS)
    if kind == "jsonl":
        return _jsonl_records(path, _pair_from_mapping,
                              f"a JSON object with string fields {forms} and a numeric {scores}", _not_scored_pairs)
    if kind == "tsv":
        return _tsv_records(path, 3, _pair_from_row, PAIR_KEYS,
                            "3 tab-separated columns (sentence1<TAB>sentence2<TAB>score) with a numeric score",
                            _not_scored_row)
    return _csv_records(path, PAIR_KEYS, SCORE_KEYS, f"a header naming the columns {forms} and {scores}",
                        _not_scored_header)


def _open_format(path: str | PathLike) -> tuple[Path, str]:
    path = Path(path).expanduser()
    name = path.name.lower().removesuffix(".gz")
    kind = _FORMATS.get(Path(name).suffix)
    if kind is None:
        raise InputError(path, "a .jsonl, .json, .tsv or .csv file (optionally .gz)", got=path.name)
    if not path.is_file():
        raise InputError(path, "an existing file", got="no such file")
    return path, kind


# --- JSON lines ----------------------------------------------------------------------------

def _jsonl_records(path: Path, convert, expected: str, other_format) -> Iterator[tuple]:
    """``other_format(record)``: the hint naming the recipe that reads such a record, or None (checked first)."""
    for line_number, line in iter_text_lines(path):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except (ValueError, RecursionError):
            raise InputError(path, expected, got=line, line=line_number) from None
        hint = other_format(record) if isinstance(record, dict) else None
        result = convert(record) if isinstance(record, dict) and hint is None else None
        if result is None:
            raise InputError(path, expected, got=line, line=line_number, hint=hint)
        yield result


def _triplet_from_mapping(record: dict[str, Any], key_sets: Sequence[Sequence[str]]) -> tuple | None:
    for keys in key_sets:
        if all(key in record for key in keys):
            texts = tuple(record[key] for key in keys)
            return texts if all(_is_text(text) for text in texts) else None
    return None


def _pair_from_mapping(record: dict[str, Any]) -> tuple[str, str, float] | None:
    texts = _triplet_from_mapping(record, PAIR_KEYS)
    score_key = next((key for key in SCORE_KEYS if key in record), None)
    score = parse_score(record[score_key]) if score_key is not None else None
    if texts is None or score is None:
        return None
    return texts[0], texts[1], score


# --- TSV -----------------------------------------------------------------------------------

def _tsv_records(path: Path, width: int, convert, header_sets: Iterable[Sequence[str]],
                 expected: str, other_format) -> Iterator[tuple]:
    """``other_format(fields)``: the hint naming the recipe that reads such a row, or None (checked first)."""
    headers = {tuple(keys) for keys in header_sets}
    for line_number, line in iter_text_lines(path):
        if not line.strip():
            continue
        fields = line.split("\t")
        if line_number == 1 and _looks_like_header(fields, headers):
            continue
        hint = other_format(fields)
        result = convert(fields) if len(fields) == width and hint is None else None
        if result is None:
            raise InputError(path, expected, got=line, line=line_number, hint=hint)
        yield result


def _looks_like_header(fields: list[str], headers: set[tuple[str, ...]]) -> bool:
    names = tuple(field.strip().lower() for field in fields)
    # A pair header names the two texts and then a score column.
    return names in headers or (names[:2] in headers and len(names) == 3 and names[2] in SCORE_KEYS)


def _triplet_from_row(fields: list[str]) -> tuple[str, str, str] | None:
    return (fields[0], fields[1], fields[2]) if all(_is_text(field) for field in fields) else None


def _pair_from_row(fields: list[str]) -> tuple[str, str, float] | None:
    score = parse_score(fields[2])
    if score is None or not (_is_text(fields[0]) and _is_text(fields[1])):
        return None
    return fields[0], fields[1], score


# --- CSV -----------------------------------------------------------------------------------

def _csv_records(path: Path, text_sets: Sequence[Sequence[str]], score_keys: Sequence[str],
                 header_expected: str, other_format) -> Iterator[tuple]:
    """``other_format(names)``: the hint naming the recipe that reads a file with these lower-cased
    header names, or None (checked first)."""
    # csv.reader sees whole lines (newline restored), so quoted fields may span lines.
    lines = (line + "\n" for _, line in iter_text_lines(path))
    reader = csv.reader(lines, strict=True)
    try:
        header = next(reader, None)
        if header is None:
            return
        hint = other_format([name.strip().lower() for name in header])
        columns = _csv_columns(header, text_sets, score_keys) if hint is None else None
        if columns is None:
            raise InputError(path, header_expected, got=",".join(header), line=1, hint=hint)
        expected = f"{len(header)} comma-separated fields under the header {','.join(header)!r}"
        if score_keys:
            expected += " with a numeric score"
        consumed = reader.line_num
        for row in reader:
            # A quoted field may span lines; errors name the line where the record starts.
            row_start, consumed = consumed + 1, reader.line_num
            if not any(field.strip() for field in row):
                continue
            record = _csv_record(row, columns, len(header), bool(score_keys))
            if record is None:
                raise InputError(path, expected, got=",".join(row), line=row_start)
            yield record
    except csv.Error as error:
        raise InputError(path, f"valid CSV ({error}; quote whole fields and double the quotes inside them)",
                         line=reader.line_num) from None


def _csv_columns(header: list[str], text_sets: Sequence[Sequence[str]],
                 score_keys: Sequence[str]) -> list[int] | None:
    names = [name.strip().lower() for name in header]
    for keys in text_sets:
        if all(key in names for key in keys):
            columns = [names.index(key) for key in keys]
            if not score_keys:
                return columns
            score = next((names.index(key) for key in score_keys if key in names), None)
            return columns + [score] if score is not None else None
    return None


def _csv_record(row: list[str], columns: list[int], width: int, scored: bool) -> tuple | None:
    if len(row) != width:
        return None
    values = [row[column] for column in columns]
    if scored:
        score = parse_score(values[-1])
        texts = values[:-1]
        return (*texts, score) if score is not None and all(_is_text(text) for text in texts) else None
    return tuple(values) if all(_is_text(text) for text in values) else None


# --- values --------------------------------------------------------------------------------

def _is_text(value: Any) -> bool:
    return isinstance(value, str) and bool(value.strip())


def parse_score(value: Any) -> float | None:
    """A finite float from a number or a numeric string; None for anything else (bools included)."""
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        return None
    try:
        score = float(value)
    except ValueError:
        return None
    return score if math.isfinite(score) else None


def read_similar_pairs(path: str | PathLike) -> Iterator[tuple[str, str]]:
    """Pairs of similar sentences from ``.jsonl`` (``text1/text2``, ``a/b``, ``sentence1/sentence2``,
    ``text_a/text_b``, ``s1/s2``, ``anchor/positive``, ``query/pos``; other keys ignored), ``.tsv``
    (``a<TAB>b``) or ``.csv`` (a header naming one of those column pairs).

    A ``label`` or ``similarity`` key or column is refused: a labelled set holds pairs that are not
    similar (``score``, which mine-pairs writes above its threshold, is accepted). So is a third
    TSV column (scored pairs or triplets, which other recipes read).

    Raises:
        InputError: at the first malformed line, naming the file, the line and the accepted forms.
    """
    keys = (("text1", "text2"), ("a", "b"), ("sentence1", "sentence2"), ("text_a", "text_b"), ("s1", "s2"),
            ("anchor", "positive"), ("query", "pos"))
    path, kind = _open_format(path)
    forms = " or ".join("/".join(k) for k in keys)
    if kind == "jsonl":
        return _jsonl_records(path, lambda record: _triplet_from_mapping(record, keys),
                              f"a JSON object with string fields {forms}", _graded)
    if kind == "tsv":
        return _tsv_records(path, 2, lambda row: tuple(row) if all(_is_text(f) for f in row) else None,
                            keys, "2 tab-separated non-empty columns (sentence<TAB>similar sentence)",
                            _three_columns)
    return _csv_records(path, keys, (), f"a header naming the columns {forms}", _graded)


# --- formats of the other readers: refused with a hint naming the recipe that reads them ------

def _has(record, key_sets: Sequence[Sequence[str]]) -> bool:
    return any(all(key in record for key in keys) for keys in key_sets)


def _not_triplets(record: dict[str, Any]) -> str | None:
    if _has(record, TRIPLET_KEYS) or not _has(record, PAIR_KEYS):
        return None
    return SCORED_PAIRS if any(key in record for key in SCORE_KEYS) else SIMILAR_PAIRS


def _not_scored_pairs(record: dict[str, Any]) -> str | None:
    if _has(record, TRIPLET_KEYS):
        return TRIPLETS
    if _has(record, PAIR_KEYS) and not any(key in record for key in SCORE_KEYS):
        return SIMILAR_PAIRS
    return None


def _graded(record: dict[str, Any] | list[str]) -> str | None:
    return LABELLED_PAIRS if any(key in record for key in GRADE_KEYS) else None


def _not_triplet_row(fields: list[str]) -> str | None:
    if len(fields) == 3 and parse_score(fields[2]) is not None:
        return SCORED_PAIRS  # a number is never a hard negative: s1<TAB>s2<TAB>5 is an STS line
    return SIMILAR_PAIRS if len(fields) == 2 else None


def _not_scored_row(fields: list[str]) -> str | None:
    if len(fields) == 3 and _is_text(fields[2]) and parse_score(fields[2]) is None:
        return TRIPLETS
    return SIMILAR_PAIRS if len(fields) == 2 else None


def _three_columns(fields: list[str]) -> str | None:
    if len(fields) != 3:
        return None
    return SCORED_PAIRS if parse_score(fields[2]) is not None else TRIPLETS


def _not_triplet_header(names: list[str]) -> str | None:
    return _not_triplets(dict.fromkeys(names))


def _not_scored_header(names: list[str]) -> str | None:
    return _not_scored_pairs(dict.fromkeys(names))
