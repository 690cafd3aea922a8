"""Split sentences into words for EDA, and join edited word lists back into sentences.

Chinese is segmented with jieba's dictionary; other languages (``"ws"``) by whitespace.

Why not just call ``jieba.cut``
-------------------------------
EDA segments every training sentence once per epoch, so segmentation is the hot path of text
augmentation. ``jieba.cut`` walks its route in Python per sentence; this module's two backends
below are measured against it in ``benchmarks/results/eda_throughput.md`` (segmentation alone, same
dictionary): jieba-rs is the fastest, the fused pure-Python route next.

The HMM only guesses out-of-vocabulary words, and EDA can only edit words that have synonyms,
which are dictionary words by construction (the synonym vocabulary is added to the dictionary).
So the default is ``hmm=False``, and for that mode there are two backends with the same words
as ``jieba.Tokenizer.cut(text, HMM=False)`` (the tests check both on real and random sentences),
apart from the two token-list conventions below:

- ``"rust"``: jieba-rs (the ``rjieba`` package, a luse dependency), the same dictionary and
  route in compiled code. Used whenever ``rjieba`` imports.
- ``"python"``: jieba's own model (its prefix dictionary and maximum-probability route) in one
  fused loop over log-probabilities compiled once per process (a one-off cost at first use).

``hmm=True`` delegates to jieba.

Token-list conventions (both languages)
---------------------------------------
- Whitespace is not a token: it cannot be swapped, deleted or replaced.
- Chinese tokens are joined without spaces, except where two ASCII letters or digits meet
  (``"Python 3"``), which get one space. For that rule to give the original text back,
  :meth:`Segmenter.split` merges ASCII pieces that touch in the text (``"CD" + "ROM"``).
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Iterable
from math import log

LANGUAGES = ("zh", "ws")

# jieba's own block rule (``re_han_default`` in jieba/__init__.py): words never cross a character
# outside it, so blocks, and therefore words, are the ones jieba would produce.
_HAN_BLOCK = re.compile("([\u4e00-\u9fd5a-zA-Z0-9+#&._%\\-]+)")
_ASCII_ALNUM = re.compile("[a-zA-Z0-9]")
_NO_ROUTE = float("-inf")


def _is_ascii_alnum(char: str) -> bool:
    return char.isascii() and char.isalnum()


class _JiebaDictionary:
    """jieba's dictionary for one process, compiled for the fused maximum-probability route.

    ``code`` maps every fragment jieba knows (its words and all their prefixes) to one float
    that answers both questions the route asks of a fragment, with a single lookup:

    - ``code < 0``: a word that no longer word extends; ``code`` is its log-probability
      ``log(freq / total)``, so the scan from this position can stop here.
    - ``code > 0``: a word that longer words extend; its log-probability is ``-code``.
    - ``code == 0``: not a word, only the prefix of longer words.

    It is recompiled after words are added, because jieba's ``add_word`` changes the total and
    so every log-probability.
    """

    def __init__(self):
        import jieba

        # jieba logs "Building prefix dict ..." on every first use; only warnings matter to us.
        logging.getLogger("jieba").setLevel(logging.WARNING)
        # A private tokenizer: adding the synonym vocabulary must not change the user's own jieba.
        self.tokenizer = jieba.Tokenizer()
        self.tokenizer.initialize()
        self.lock = threading.Lock()
        self.code: dict[str, float] | None = None
        self.unknown_logp = 0.0

    def compile(self) -> _JiebaDictionary:
        """Build ``code`` unless it is already built; returns self."""
        if self.code is None:
            with self.lock:
                if self.code is None:
                    self._compile()
        return self

    def _compile(self) -> None:
        freq = self.tokenizer.FREQ
        log_total = log(self.tokenizer.total)
        # jieba keeps every prefix of every word, so a fragment is extended exactly when it is
        # some longer fragment minus its last character.
        extended = {fragment[:-1] for fragment in freq if len(fragment) > 1}
        code = {}
        for fragment, count in freq.items():
            if not count:
                code[fragment] = 0.0
            else:
                logp = log(count) - log_total
                code[fragment] = -logp if fragment in extended else logp
        # jieba scores a character that starts no word as if its frequency were 1.
        self.unknown_logp = -log_total
        self.code = code

    def add_words(self, words: Iterable[str]) -> int:
        """Make ``words`` whole tokens (jieba's ``add_word`` with its suggested frequency).

        Words with a character outside jieba's word blocks (spaces, punctuation, ``·``) are
        skipped: jieba cuts blocks there, so such a word can never come out whole.

        Returns how many words were new. The route is recompiled at once when any was, so a
        segmenter already in use never sees a half-updated dictionary.
        """
        freq = self.tokenizer.FREQ
        added = 0
        with self.lock:
            for word in words:
                if not freq.get(word) and _HAN_BLOCK.fullmatch(word):
                    self.tokenizer.add_word(word)
                    added += 1
            if added or self.code is None:
                self._compile()
        return added

    def cut_block(self, block: str) -> list[str]:
        """jieba's ``HMM=False`` words of one block of word characters (see ``_HAN_BLOCK``).

        Dynamic programming from the end of the block: the best route from position ``i``
        takes the word ``block[i:j]`` that maximises its log-probability plus the best route from
        ``j``; on ties the longer word wins, as in jieba (``max`` over ``(score, j)`` tuples).
        A position that starts no word is a single character with jieba's unknown score.
        The arithmetic is jieba's, in the same order, so scores and ties come out identical.
        """
        code_of = self.code.get
        n = len(block)
        score = [0.0] * (n + 1)
        end = [0] * (n + 1)
        for i in range(n - 1, -1, -1):
            best = _NO_ROUTE
            best_end = 0
            j = i + 1
            code = code_of(block[i])
            while code is not None:
                if code < 0.0:  # a word nothing extends: the last candidate from i
                    candidate = code + score[j]
                    if candidate >= best:
                        best, best_end = candidate, j
                    break
                if code > 0.0:
                    candidate = score[j] - code
                    if candidate >= best:
                        best, best_end = candidate, j
                if j == n:
                    break
                j += 1
                code = code_of(block[i:j])
            if not best_end:
                best, best_end = self.unknown_logp + score[i + 1], i + 1
            score[i] = best
            end[i] = best_end
        words = []
        i = 0
        if _ASCII_ALNUM.search(block) is None:
            while i < n:
                words.append(block[i:end[i]])
                i = end[i]
            return words
        while i < n:
            word = block[i:end[i]]
            # Touching ASCII pieces are one token (jieba joins single letters; we join all).
            if words and _is_ascii_alnum(word[0]) and _is_ascii_alnum(words[-1][-1]):
                words[-1] += word
            else:
                words.append(word)
            i = end[i]
        return words


_dictionary: _JiebaDictionary | None = None
_dictionary_lock = threading.Lock()


def jieba_dictionary() -> _JiebaDictionary:
    """The process's jieba dictionary, loaded on first use (once per process).

    Loading once per process keeps DataLoader workers cheap: with ``fork`` they inherit it
    from the parent when the parent segmented anything before starting them.
    """
    global _dictionary
    if _dictionary is None:
        with _dictionary_lock:
            if _dictionary is None:
                _dictionary = _JiebaDictionary()
    return _dictionary


class _RustDictionary:
    """jieba's dictionary and HMM-free route in jieba-rs (``rjieba``), one per process."""

    def __init__(self):
        import rjieba

        self.jieba = rjieba.Jieba()  # a private instance: added words stay out of other users' jieba
        self.lock = threading.Lock()

    def add_words(self, words: Iterable[str]) -> int:
        """Make ``words`` whole tokens, with the same rules as :meth:`_JiebaDictionary.add_words`."""
        added = 0
        with self.lock:
            for word in words:
                if _HAN_BLOCK.fullmatch(word) and not self.jieba.has_word(word):
                    self.jieba.add_word(word, None, None)  # no frequency: jieba's suggested one
                    added += 1
        return added

    def cut(self, text: str) -> list[str]:
        return self.jieba.cut(text, False)


_rust_dictionary: _RustDictionary | None = None


def rust_dictionary() -> _RustDictionary:
    """The process's jieba-rs dictionary, loaded on first use."""
    global _rust_dictionary
    if _rust_dictionary is None:
        with _dictionary_lock:
            if _rust_dictionary is None:
                _rust_dictionary = _RustDictionary()
    return _rust_dictionary


def default_backend() -> str:
    """``"rust"`` when ``rjieba`` is installed, else ``"python"``."""
    import importlib.util

    return "rust" if importlib.util.find_spec("rjieba") is not None else "python"


BACKENDS = ("auto", "rust", "python")


class Segmenter:
    """Turns a sentence into the token list EDA edits, and an edited list back into a sentence.

    Args:
        language: ``"zh"`` segments Chinese (and mixed Chinese/Latin text) with jieba's
            dictionary; ``"ws"`` splits on whitespace, for languages that write spaces between
            words.
        extra_words: words to add to jieba's dictionary so they come out as whole tokens;
            pass the synonym vocabulary, so every word that has synonyms can be replaced.
            A sequence, not an iterator: a spawned worker process reads it again.
            Added once per process on first use, to a private jieba tokenizer shared by all
            Chinese segmenters of the process (the user's global ``jieba`` is left alone).
            Ignored for ``"ws"``.
        hmm: let jieba guess out-of-vocabulary words with its HMM (``jieba.cut(HMM=True)``).
            Much slower, and the guessed words have no synonyms anyway.
        backend: ``"auto"`` (``"rust"`` when ``rjieba`` is installed), ``"rust"`` or
            ``"python"``: see the module docstring. Both give the same words.

    Example::

        >>> seg = Segmenter("zh")
        >>> tokens = seg.split("我们使用 Python 3 训练模型。")
        >>> tokens
        ['我们', '使用', 'Python', '3', '训练', '模型', '。']
        >>> seg.join(tokens)
        '我们使用Python 3训练模型。'
    """

    def __init__(self, language: str = "zh", extra_words: Iterable[str] = (), hmm: bool = False,
                 backend: str = "auto"):
        if language not in LANGUAGES:
            raise ValueError(f"unknown language {language!r}; expected one of {', '.join(LANGUAGES)}")
        if backend not in BACKENDS:
            raise ValueError(f"unknown segmenter backend {backend!r}; expected one of {', '.join(BACKENDS)}")
        self.language = language
        self.hmm = hmm
        self.backend = default_backend() if backend == "auto" else backend
        self._extra_words = extra_words
        # Set on first use; dropped when pickled, so a spawned worker loads its own dictionary.
        self._dictionary: _JiebaDictionary | None = None

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_dictionary"] = None
        return state

    def __repr__(self) -> str:
        return f"Segmenter(language={self.language!r}, hmm={self.hmm}, backend={self.backend!r})"

    def prepare(self) -> Segmenter:
        """Load jieba and add the extra words now rather than on the first sentence; returns self."""
        if self.language == "zh" and self._dictionary is None:
            if self.backend == "rust" and not self.hmm:
                dictionary = rust_dictionary()
                dictionary.add_words(self._extra_words)
                self._dictionary = dictionary
            else:
                dictionary = jieba_dictionary()
                dictionary.add_words(self._extra_words)
                self._dictionary = dictionary.compile()
        return self

    def split(self, text: str) -> list[str]:
        """The tokens of ``text``: words and punctuation, without whitespace."""
        if self.language == "ws":
            return text.split()
        dictionary = self._dictionary or self.prepare()._dictionary
        if self.hmm:
            return self._merge_ascii(dictionary.tokenizer.cut(text, HMM=True))
        if self.backend == "rust":
            return self._merge_ascii(dictionary.cut(text))
        # split() with one capturing group alternates: other text, word block, other text, ...
        parts = _HAN_BLOCK.split(text)
        tokens: list[str] = []
        cut_block = dictionary.cut_block
        for k, part in enumerate(parts):
            if k % 2:
                tokens += cut_block(part)
            elif part:
                # Punctuation and symbols are one token per character, as in jieba.
                tokens += [char for char in part if not char.isspace()]
        return tokens

    def join(self, tokens: list[str]) -> str:
        """The sentence for ``tokens``: spaces between words for ``"ws"``, none for Chinese."""
        if self.language == "ws":
            return " ".join(tokens)
        text = "".join(tokens)
        if _ASCII_ALNUM.search(text) is None:
            return text
        parts = [tokens[0]] if tokens else []
        for previous, token in zip(tokens, tokens[1:]):
            if token and previous and _is_ascii_alnum(previous[-1]) and _is_ascii_alnum(token[0]):
                parts.append(" ")
            parts.append(token)
        return "".join(parts)

    @staticmethod
    def _merge_ascii(pieces: Iterable[str]) -> list[str]:
        """Drop whitespace pieces and merge ASCII pieces that touch (see the module docstring)."""
        tokens: list[str] = []
        touching = False
        for piece in pieces:
            if piece.isspace():
                touching = False
                continue
            if touching and _is_ascii_alnum(piece[0]) and _is_ascii_alnum(tokens[-1][-1]):
                tokens[-1] += piece
            else:
                tokens.append(piece)
            touching = True
        return tokens
