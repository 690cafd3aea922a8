"""Readers for labelled sentence-pair files (STS-B, LCQMC, BQ, ATEC, PAWSX, SOHU ...).

Every file becomes an :class:`StsSet`: two parallel lists of sentences and one list of gold
scores. The scores may be graded similarities (STS-B: 0-5) or binary labels (LCQMC: 0/1);
Spearman correlation treats both the same way.

Accepted formats
----------------
Tab-separated (``.tsv``, ``.txt``)
    ``sentence1<TAB>sentence2<TAB>score``, one pair a line, no quoting (Chinese text often holds
    bare ``"`` characters). A first line naming its columns (``sentence1  sentence2  label``,
    ``text_a  text_b  label``, ...) is also understood, and then extra columns are ignored.
Comma-separated (``.csv``)
    Standard CSV quoting. Either a header naming the columns (BQ style: ``sentence1,sentence2,label``)
    or headerless ``sentence1,sentence2,score`` rows.
JSON lines (``.jsonl``, ``.json``)
    One object a line: ``{"sentence1": ..., "sentence2": ..., "label": ...}`` (``"score"`` works
    too). A ``.json`` file holding one array of such objects is read as well.

Column and key names are matched case-insensitively against :data:`SENTENCE1_NAMES`,
:data:`SENTENCE2_NAMES` and :data:`SCORE_NAMES`. Files with another extension are sniffed from
their first non-blank line. Blank lines are skipped; anything else that does not fit raises
:class:`~luse.errors.InputError` naming the file and line.
"""

from __future__ import annotations

import csv
import io
import json
import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from luse.data.supervised import parse_score
from luse.errors import InputError

SENTENCE1_NAMES = ("sentence1", "sentence_1", "sentence_a", "text_a", "text1", "s1", "sent1", "query1",
                   "question1", "q1")
SENTENCE2_NAMES = ("sentence2", "sentence_2", "sentence_b", "text_b", "text2", "s2", "sent2", "query2",
                   "question2", "q2")
SCORE_NAMES = ("label", "score", "similarity", "relatedness", "gold_label", "gold")

TAB_EXTENSIONS = (".tsv", ".txt")
CSV_EXTENSIONS = (".csv",)
JSON_EXTENSIONS = (".jsonl", ".json")


@dataclass
class StsSet:
    """One evaluation file: ``scores[i]`` is the gold similarity of ``sentences1[i]`` and ``sentences2[i]``.

    Args:
        name: How results refer to this set; :func:`read_sts` uses the path exactly as given.
        sentences1: First sentence of each pair.
        sentences2: Second sentence of each pair.
        scores: Gold similarity (or 0/1 label) of each pair.
    """

    name: str
    sentences1: list[str]
    sentences2: list[str]
    scores: list[float]

    def __post_init__(self) -> None:
        if not len(self.sentences1) == len(self.sentences2) == len(self.scores):
            raise ValueError(
                f"StsSet {self.name!r}: sentences1, sentences2 and scores must have the same length, got "
                f"{len(self.sentences1)}, {len(self.sentences2)} and {len(self.scores)}"
            )

    def __len__(self) -> int:
        return len(self.scores)

    def unique_sentences(self) -> list[str]:
        """Every distinct sentence of both sides, in first-seen order."""
        return list(dict.fromkeys(self.sentences1 + self.sentences2))


def read_sts(path: str | os.PathLike) -> StsSet:
    """Read a sentence-pair file with gold scores.

    The format comes from the extension (``.tsv``/``.txt``: tab-separated, ``.csv``: CSV,
    ``.jsonl``/``.json``: JSON lines), or, for any other extension, from the first non-blank
    line (``{`` or ``[``: JSON, a tab: tab-separated, otherwise CSV). See the module docstring
    for the accepted layouts.

    Args:
        path: The file. The returned set's ``name`` is ``str(path)``, exactly as given.

    Returns:
        An :class:`StsSet` with at least one pair.

    Raises:
        FileNotFoundError: If ``path`` does not exist.
        InputError: On the first line that fits none of the accepted layouts (the message names
            the file and the line), or if the file holds no pairs.

    Example::

        >>> sts = read_sts("data/stsb-zh/test.tsv")
        >>> sts.sentences1[0], sts.sentences2[0], sts.scores[0]
        ('一个女孩在给她的头发做发型。', '一个女孩在梳头。', 2.0)
    """
    name = str(path)
    path = Path(path)
    text = _read_text(path, name)
    reader = {"tab": _read_tab, "csv": _read_csv, "json": _read_json}[_detect_format(path, text)]
    pairs = list(reader(text, name))
    if not pairs:
        raise InputError(name, "at least one sentence pair, got an empty file")
    sentences1, sentences2, scores = (list(column) for column in zip(*pairs))
    return StsSet(name, sentences1, sentences2, scores)


def _read_text(path: Path, name: str) -> str:
    """The file as text with universal newlines; invalid UTF-8 is an :class:`InputError` naming the line."""
    data = path.read_bytes()
    try:
        text = data.decode("utf-8-sig")  # -sig: files saved by Excel / Notepad start with a BOM
    except UnicodeDecodeError as err:
        raise InputError(name, "UTF-8 text", got=f"undecodable bytes {data[err.start:err.start + 4]!r}",
                         line=data.count(b"\n", 0, err.start) + 1) from None
    return text.replace("\r\n", "\n").replace("\r", "\n")


def _detect_format(path: Path, text: str) -> str:
    suffix = path.suffix.lower()
    if suffix in TAB_EXTENSIONS:
        return "tab"
    if suffix in CSV_EXTENSIONS:
        return "csv"
    if suffix in JSON_EXTENSIONS:
        return "json"
    first = next((line for line in _lines(text) if line.strip()), "")
    if first.lstrip().startswith(("{", "[")):
        return "json"
    return "tab" if "\t" in first else "csv"


def _lines(text: str) -> list[str]:
    # Not str.splitlines(): it also breaks at U+2028, U+0085 and friends, which occur inside sentences.
    # read_text() has already turned \r\n and \r into \n.
    return text.split("\n")


def _read_tab(text: str, name: str) -> Iterator[tuple[str, str, float]]:
    rows = ((number, line.split("\t")) for number, line in enumerate(_lines(text), start=1))
    return _read_rows(rows, name, positional="'s1<TAB>s2<TAB>score'", separator="tab")


def _read_csv(text: str, name: str) -> Iterator[tuple[str, str, float]]:
    def numbered_rows() -> Iterator[tuple[int, list[str]]]:
        reader = csv.reader(io.StringIO(text))
        start = 1
        try:
            for row in reader:
                yield start, row
                start = reader.line_num + 1  # a quoted field may span several lines
        except csv.Error as err:
            raise InputError(name, f"valid CSV ({err})", line=reader.line_num) from None

    return _read_rows(numbered_rows(), name, positional="'s1,s2,score'", separator="comma")


def _read_rows(rows: Iterator[tuple[int, list[str]]], name: str, *, positional: str,
               separator: str) -> Iterator[tuple[str, str, float]]:
    """Shared by the tab and CSV readers: an optional header, then one pair a row."""
    columns = None  # (sentence1, sentence2, score) indices once a header has been seen
    width = 3
    seen_first = False
    for number, fields in rows:
        if not any(field.strip() for field in fields):
            continue
        if not seen_first:
            seen_first = True
            columns = _header_columns(fields)
            if columns is not None:
                width = len(fields)
                continue
        shown = ("\t" if separator == "tab" else ",").join(fields)
        if columns is None:
            form = positional
            picked = fields if len(fields) == 3 else None
        else:
            form = f"{width} {separator}-separated fields as in the header"
            picked = [fields[i] for i in columns] if len(fields) == width else None
        score = parse_score(picked[2]) if picked else None
        if score is None:
            raise InputError(name, f"{form} with a numeric score", got=shown, line=number)
        first, second = picked[0].strip(), picked[1].strip()
        if not first or not second:
            raise InputError(name, f"{form} with two non-empty sentences", got=shown, line=number)
        yield first, second, score


def _header_columns(fields: Sequence[str]) -> tuple[int, int, int] | None:
    """Indices of (sentence1, sentence2, score) if ``fields`` is a header line, else None."""
    lowered = [field.strip().lower() for field in fields]

    def find(names: Sequence[str]) -> int | None:
        return next((i for i, field in enumerate(lowered) if field in names), None)

    found = (find(SENTENCE1_NAMES), find(SENTENCE2_NAMES), find(SCORE_NAMES))
    return None if None in found else found


def _read_json(text: str, name: str) -> Iterator[tuple[str, str, float]]:
    expected = "a JSON object with sentence1, sentence2 and a numeric label (or score)"
    if text.lstrip().startswith("["):
        try:
            items = json.loads(text)
        except json.JSONDecodeError as err:
            raise InputError(name, f"a valid JSON array ({err.msg})", line=err.lineno) from None
        except RecursionError:  # absurdly nested brackets
            raise InputError(name, "a JSON array of objects", got="nesting too deep to parse") from None
        for index, item in enumerate(items):
            pair = _json_pair(item)
            if pair is None:
                raise InputError(f"{name}[{index}]", expected, got=json.dumps(item, ensure_ascii=False))
            yield pair
        return
    for number, line in enumerate(_lines(text), start=1):
        if not line.strip():
            continue
        try:
            pair = _json_pair(json.loads(line))
        except (json.JSONDecodeError, RecursionError):  # RecursionError: absurdly nested brackets
            pair = None
        if pair is None:
            raise InputError(name, expected, got=line, line=number)
        yield pair


def _json_pair(item: object) -> tuple[str, str, float] | None:
    if not isinstance(item, Mapping):
        return None
    lowered = {str(key).strip().lower(): value for key, value in item.items()}

    def find(names: Sequence[str]) -> object:
        return next((lowered[key] for key in names if key in lowered), None)

    first, second, score = find(SENTENCE1_NAMES), find(SENTENCE2_NAMES), parse_score(find(SCORE_NAMES))
    if not (isinstance(first, str) and isinstance(second, str)) or score is None:
        return None
    first, second = first.strip(), second.strip()
    return (first, second, score) if first and second else None

