"""Cutting Chinese (and English) documents into sentences, and untagging People's Daily 1998.

Unsupervised sentence-encoder training wants sentences, while raw corpora hold paragraphs or
whole documents per line.  :func:`split_sentences` is a rule-based splitter tuned for Chinese
punctuation that also copes with English text mixed in; :func:`strip_pos_tags` turns the
POS-tagged People's Daily corpus (the offline corpus this project ships with) back into plain text.
"""

from __future__ import annotations

import re

# A sentence ends after a run of terminators (so "？！" and "……" end one sentence, not two),
# followed by any closing quotes or brackets, which belong to the sentence they close.
_TERMINATORS = "。！？!?；;…"
_CLOSERS = "”’」』）》】〕)]\"'"
_BOUNDARY = re.compile(rf"(?:[{re.escape(_TERMINATORS)}]+|\.+)[{re.escape(_CLOSERS)}]*|[\r\n]+")

# Words whose trailing period is part of the word, not the end of a sentence ("Mr. Smith").
_ABBREVIATIONS = frozenset({
    "mr", "mrs", "ms", "dr", "prof", "sr", "jr", "st", "vs", "no", "fig", "vol", "p", "pp",
    "e.g", "i.e", "u.s", "u.k", "inc", "ltd", "co", "corp", "jan", "feb", "mar", "apr", "jun",
    "jul", "aug", "sep", "sept", "oct", "nov", "dec",
})
_LAST_WORD = re.compile(r"(?<![A-Za-z.])([A-Za-z][A-Za-z.]*)$")
_NEXT_VISIBLE = re.compile(r"\S")


def split_sentences(text: str) -> list[str]:
    """Split a document into sentences.

    Rules:

    - A sentence ends after ``。！？!?；;``, an ellipsis (``…`` or ``……``, or ``...``) or a line
      break.  Runs of terminators (``？！``, ``……``) end one sentence.
    - Closing quotes and brackets right after the terminator (``”’」』）`` and their ASCII
      cousins) stay with the sentence they close: ``他说：“好。”`` is one sentence.
    - An ASCII period ends a sentence only when whitespace (or the end of the text) follows and
      the next word does not start in lower case, so decimals (``3.14``), domain names, ``e.g.
      this`` and abbreviations (``Mr. Smith``, ``J. Smith``) stay whole.  A period directly
      followed by Chinese text (``Inc.公司``) does not split either.
    - Pieces are trimmed; empty pieces and pieces with no letter, digit or character (a lone
      ``”`` or ``——``) are dropped.

    Args:
        text: a document, paragraph or line.

    Returns:
        The sentences, in order, each with its closing punctuation.

    Example::

        >>> split_sentences("今天天气很好。他说：“走吧！”价格是3.14元…… Mr. Li left. Bye")
        ['今天天气很好。', '他说：“走吧！”', '价格是3.14元……', 'Mr. Li left.', 'Bye']
    """
    sentences: list[str] = []
    start = 0
    for match in _BOUNDARY.finditer(text):
        if match.group().startswith(".") and not _period_ends_sentence(text, match):
            continue
        _append(sentences, text[start:match.end()])
        start = match.end()
    _append(sentences, text[start:])
    return sentences


def _period_ends_sentence(text: str, match: re.Match[str]) -> bool:
    # Look at bounded windows only, so long documents with many periods stay linear.
    following = _NEXT_VISIBLE.search(text, match.end())
    if following is None:
        return True
    next_char = following.group()
    dots = len(match.group()) - len(match.group().lstrip("."))
    if following.start() == match.end():
        # "3.14", "a.com" stay whole; Chinese written with an ASCII period ("好的.我走了") and
        # an ASCII ellipsis ("等等...然后") end a sentence.
        before = text[match.start() - 1] if match.start() else ""
        return dots >= 3 or (_is_cjk(before) and _is_cjk(next_char))
    if next_char.islower():
        return False  # "e.g. this", "Wait... what"
    word = _LAST_WORD.search(text[max(0, match.start() - 16):match.start()])
    if dots == 1 and word is not None:
        name = word.group(1).lower()
        if name in _ABBREVIATIONS or len(name) == 1:  # "Mr. Li", "J. Smith"
            return False
    return True


def _is_cjk(char: str) -> bool:
    return "\u4e00" <= char <= "\u9fff" or "\u3400" <= char <= "\u4dbf"


def _append(sentences: list[str], piece: str) -> None:
    piece = piece.strip()
    if any(char.isalnum() for char in piece):
        sentences.append(piece)


# --- People's Daily 1998 -------------------------------------------------------------------

# The corpus tags every token as word/tag; bracketed compounds carry a second tag: [中央/n 电视台/n]nt.
_COMPOUND_TAG = re.compile(r"[A-Za-z]+\][A-Za-z]+")
# Some editions start each line with a document id token such as 19980101-01-001-001/m.
_DOCUMENT_ID = re.compile(r"\d{8}-\d{2}-\d{3}-\d{3}")


def strip_pos_tags(line: str) -> str:
    """Plain text from one line of the POS-tagged People's Daily 1998 corpus.

    ``迈向/v  充满/v  希望/n`` becomes ``迈向充满希望``.  Tokens may be separated by any run of
    whitespace (the corpus mostly uses two spaces, sometimes one); the tag after the *last*
    ``/`` of a token is removed (so a word that itself contains ``/`` survives); bracketed
    compounds ``[中央/n 电视台/n]nt`` lose their brackets and outer tag; document ids
    (``19980101-01-001-001/m``) are dropped.  Words are joined without spaces, except that a
    space is kept between two tokens that meet with Latin letters or digits (half- or
    full-width), as in ``ＤＡＸ ３０`` or ``3 nm``.  Characters are left as they are
    (full-width digits stay full-width).

    Args:
        line: one line of the corpus.

    Returns:
        The untagged text (empty for a blank line).
    """
    words = [word for word in map(_untag, line.split()) if word]
    if not words:
        return ""
    pieces = [words[0]]
    for previous, word in zip(words, words[1:]):
        if _is_latin_or_digit(previous[-1]) and _is_latin_or_digit(word[0]):
            pieces.append(" ")
        pieces.append(word)
    return "".join(pieces)


def _untag(token: str) -> str:
    word, slash, tag = token.rpartition("/")
    if "]" in tag:  # the last word of a compound: 电视台/n]nt
        tag = tag[:tag.index("]")] if _COMPOUND_TAG.fullmatch(tag) else "?"
    if not slash or not word or not (tag.isascii() and tag.isalpha()):
        return token  # untagged or oddly tagged: keep the token as written
    if word[0] == "[" and len(word) > 1:  # the first word of a compound: [中央/n
        word = word[1:]
    if tag == "m" and _DOCUMENT_ID.fullmatch(word):
        return ""
    return word


_LATIN_OR_DIGIT = frozenset("0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
                            "０１２３４５６７８９ＡＢＣＤＥＦＧＨＩＪＫＬＭＮＯＰＱＲＳＴＵＶＷＸＹＺ"
                            "ａｂｃｄｅｆｇｈｉｊｋｌｍｎｏｐｑｒｓｔｕｖｗｘｙｚ")


def _is_latin_or_digit(char: str) -> bool:
    return char in _LATIN_OR_DIGIT
