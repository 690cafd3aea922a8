"""EDA: Easy Data Augmentation (Wei & Zou, 2019), the text-level views of LUSE.

LUSE pairs every sentence with 4 EDA views and 4 dropout views. Each EDA view applies one of
the paper's four operations to the sentence's words:

==  =====================  ================================================================
SR  synonym replacement    ``n`` words that have synonyms become a random synonym
RI  random insertion       ``n`` times, a synonym of a random word goes to a random position
RS  random swap            ``n`` times, two random words trade places
RD  random deletion        every word is deleted with probability ``p``
==  =====================  ================================================================

with ``n = max(1, int(alpha * n_words))`` and the paper's defaults
``alpha_sr = alpha_ri = alpha_rs = p_rd = 0.1``. As in the paper's reference recipe, ``n`` views
are spread evenly over the four operations (four views: one of each).

Where this differs from the reference code, and why
---------------------------------------------------
- Punctuation stays: the reference strips it from the text; here punctuation tokens are kept,
  never swapped, deleted or counted as words, so views still read like the sentence.
- SR replaces ``n`` word *positions*; the reference replaces every occurrence of ``n`` words.
- RD deletes at least one word (when the sentence has two or more): a view identical to the
  sentence is a wasted positive. It never deletes every word.
- A sentence where an operation cannot apply (no word with synonyms for SR/RI, fewer than two
  words for RS/RD) gets an operation that can; when none can, the view is the sentence itself,
  counted in :attr:`EDA.stats`.

The operations are pure functions on token lists that take the caller's ``random.Random``, so
each can be tested alone and a seed reproduces every view.
"""

from __future__ import annotations

import random
import re
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from math import log

from luse.augment.segment import Segmenter

from luse.errors import InputError

OPERATIONS = ("sr", "ri", "rs", "rd")

# Positions of the tokens that have synonyms, each with those synonyms: [(index, synonyms)].
Eligible = Sequence[tuple[int, Sequence[str]]]

# A token is a word when it has a letter or digit; Chinese characters count (str.isalnum).
_WORD_CHAR = re.compile(r"\w")
# What the synonym memo holds for a token that is not a word.
_PUNCTUATION = False


def _index(rng: random.Random, n: int) -> int:
    """A uniform index below ``n``; ``rng.random()`` costs about a third of ``rng.randrange``."""
    i = int(rng.random() * n)
    return i if i < n else n - 1


def _sample(rng: random.Random, items: Sequence, k: int) -> list:
    """``k`` distinct items in random order (a partial Fisher-Yates shuffle of a copy)."""
    if k == 1 and items:
        return [items[_index(rng, len(items))]]
    pool = list(items)
    n = len(pool)
    k = min(k, n)
    for i in range(k):
        j = i + _index(rng, n - i)
        pool[i], pool[j] = pool[j], pool[i]
    return pool[:k]


def is_word(token: str) -> bool:
    """Whether ``token`` is a word (has a letter, digit or CJK character) rather than punctuation."""
    return token.isalnum() or _WORD_CHAR.search(token) is not None


def n_changes(rate: float, n_words: int) -> int:
    """How many words an operation changes: ``max(1, int(rate * n_words))``, as in the paper."""
    return max(1, int(rate * n_words))


def eligible_positions(tokens: Sequence[str], synonyms_of: Callable[[str], Sequence[str]]) -> Eligible:
    """``(index, synonyms)`` of every token that has synonyms: the input of SR and RI."""
    eligible = []
    for i, token in enumerate(tokens):
        found = synonyms_of(token)
        if found:
            eligible.append((i, found))
    return eligible


def synonym_replacement(tokens: Sequence[str], eligible: Eligible, n: int, rng: random.Random) -> list[str]:
    """Replace ``min(n, len(eligible))`` distinct eligible tokens, each by one of its synonyms.

    Args:
        tokens: the sentence's tokens (not modified).
        eligible: ``(index, synonyms)`` for the tokens that may be replaced.
        n: how many tokens to replace.
        rng: the source of randomness.

    Returns:
        A new token list of the same length.
    """
    out = list(tokens)
    for index, synonyms in _sample(rng, eligible, n):
        out[index] = synonyms[_index(rng, len(synonyms))]
    return out


def random_insertion(tokens: Sequence[str], eligible: Eligible, n: int, rng: random.Random) -> list[str]:
    """Insert ``n`` synonyms, each of a random eligible token, each at a random position.

    Synonyms are drawn from the original tokens' synonyms, not from words inserted before.

    Returns:
        A new token list, ``n`` tokens longer (unchanged when ``eligible`` is empty).
    """
    out = list(tokens)
    if not eligible:
        return out
    for _ in range(n):
        synonyms = eligible[_index(rng, len(eligible))][1]
        out.insert(_index(rng, len(out) + 1), synonyms[_index(rng, len(synonyms))])
    return out


def random_swap(tokens: Sequence[str], n: int, rng: random.Random,
                positions: Sequence[int] | None = None) -> list[str]:
    """Swap two distinct random positions, ``n`` times.

    Args:
        positions: the positions that may move (EDA passes the words', so punctuation stays in
            place); all positions when ``None``.

    Returns:
        A new token list with the same tokens (as a multiset); unchanged when fewer than two
        positions can move.
    """
    out = list(tokens)
    if positions is None:
        positions = range(len(out))
    m = len(positions)
    if m < 2:
        return out
    for _ in range(n):
        a = _index(rng, m)
        b = _index(rng, m - 1)
        b += b >= a  # a second, different position, without a retry loop
        i, j = positions[a], positions[b]
        out[i], out[j] = out[j], out[i]
    return out


def random_deletion(tokens: Sequence[str], p: float, rng: random.Random,
                    positions: Sequence[int] | None = None) -> list[str]:
    """Delete each token at ``positions`` with probability ``p``; at least one, never all.

    Args:
        p: the deletion probability per token.
        positions: the positions that may be deleted (EDA passes the words', so punctuation
            stays); all positions when ``None``.

    Returns:
        A new token list. With two or more deletable positions, at least one is deleted (a view
        equal to the sentence teaches nothing) and at least one is kept, so the result is never
        empty. With fewer, the tokens are returned unchanged.
    """
    if positions is None:
        positions = range(len(tokens))
    m = len(positions)
    if m < 2:
        return list(tokens)
    if p >= 1.0:
        doomed = set(positions)
    elif p <= 0.0:
        doomed = set()
    else:
        # The gaps between deletions of independent coin flips are geometric: drawing them
        # takes about p * m random numbers instead of m.
        log_keep = log(1.0 - p)
        doomed = set()
        k = int(log(1.0 - rng.random()) / log_keep)
        while k < m:
            doomed.add(positions[k])
            k += 1 + int(log(1.0 - rng.random()) / log_keep)
    if not doomed:
        doomed.add(positions[_index(rng, m)])
    elif len(doomed) == m:
        doomed.discard(positions[_index(rng, m)])
    out = list(tokens)
    for i in sorted(doomed, reverse=True):
        del out[i]
    return out


class EDA:
    """Makes EDA views of sentences: synonym replacement, random insertion, swap and deletion.

    Args:
        synonyms: ``word -> synonyms``: ``SynonymCache.synonyms``, or ``table.get`` for a plain
            dict (``None`` means no synonyms). The word itself, duplicates and blank strings are
            ignored. Looked up once per distinct token and remembered (up to ``memo_size``
            tokens, then forgotten all at once).
        segmenter: how to split and join sentences; by default
            ``Segmenter(language, extra_words=extra_words)``.
        language: ``"zh"`` or ``"ws"`` (whitespace-separated languages). With a ``segmenter``,
            the segmenter's language is used (an explicit ``"ws"`` that contradicts it is an error).
        alpha_sr, alpha_ri, alpha_rs: share of the words that SR replaces, RI inserts and RS
            swaps (at least one each).
        p_rd: probability that RD deletes a word.
        stopwords: words never replaced by SR nor used as the source of an RI synonym.
            ``None`` filters nothing beyond what ``synonyms`` leaves out.
        extra_words: for Chinese, words jieba must keep whole; pass the synonym vocabulary
            (``cache.vocab``) so that every word with synonyms can be found. Used only when no
            ``segmenter`` is given.
        memo_size: how many distinct words' synonyms to remember.

    Attributes:
        stats: a :class:`collections.Counter` of ``sentences``, ``views``, views per operation
            (``sr``, ``ri``, ``rs``, ``rd``), ``fallback`` (views that got another operation than
            planned because the planned one could not apply) and ``unchanged`` (views equal to
            the sentence because no operation could apply: one word and no synonyms). Each
            process (DataLoader worker) counts its own.

    Example::

        >>> import random
        >>> table = {"喜欢": ["喜爱", "爱好"], "电影": ["影片", "片子"]}
        >>> eda = EDA(lambda word: table.get(word, ()))
        >>> eda.views("我喜欢看电影。", 4, random.Random(0))  # SR, RI, RS, RD
        ['我喜欢看片子。', '我爱好喜欢看电影。', '我电影看喜欢。', '我喜欢看。']
    """

    def __init__(self, synonyms: Callable[[str], Sequence[str]], *, segmenter: Segmenter | None = None,
                 language: str = "zh", alpha_sr: float = 0.1, alpha_ri: float = 0.1, alpha_rs: float = 0.1,
                 p_rd: float = 0.1, stopwords: Iterable[str] | None = None, extra_words: Iterable[str] = (),
                 memo_size: int = 100_000):
        for name, value in (("alpha_sr", alpha_sr), ("alpha_ri", alpha_ri), ("alpha_rs", alpha_rs), ("p_rd", p_rd)):
            if not 0.0 <= value <= 1.0:
                raise InputError("EDA", f"{name} between 0 and 1", got=str(value))
        if segmenter is None:
            segmenter = Segmenter(language, extra_words=extra_words)
        elif language != "zh" and segmenter.language != language:
            # "zh" is the default, so only an explicit other language can contradict the segmenter.
            raise InputError("EDA", f"language={language!r} to match the segmenter", got=segmenter.language)
        self.synonyms = synonyms
        self.segmenter = segmenter
        self.language = segmenter.language
        self.alpha_sr, self.alpha_ri, self.alpha_rs, self.p_rd = alpha_sr, alpha_ri, alpha_rs, p_rd
        self.stopwords = frozenset(stopwords or ())
        self.memo_size = memo_size
        self._memo: dict[str, tuple[str, ...] | bool] = {}
        self.stats: Counter = Counter()

    def __repr__(self) -> str:
        return (f"EDA(language={self.language!r}, alpha_sr={self.alpha_sr}, alpha_ri={self.alpha_ri}, "
                f"alpha_rs={self.alpha_rs}, p_rd={self.p_rd}, stopwords={len(self.stopwords)})")

    def synonyms_of(self, token: str) -> tuple[str, ...]:
        """The synonyms EDA may use for ``token``: none for punctuation and stopwords, never itself."""
        return self._describe(token) or ()

    def _describe(self, token: str) -> tuple[str, ...] | bool:
        """``_PUNCTUATION`` for a token that is not a word, else the word's usable synonyms.

        One memo lookup then answers both questions EDA asks of every token.
        """
        found = self._memo.get(token)
        if found is None:
            if not is_word(token):
                found = _PUNCTUATION
            elif token in self.stopwords:
                found = ()
            else:
                found = tuple(dict.fromkeys(
                    s for s in self.synonyms(token) or () if s and s != token and not s.isspace()))
            if len(self._memo) >= self.memo_size:
                self._memo.clear()  # simpler than an LRU, and the frequent words come back at once
            self._memo[token] = found
        return found

    def plan(self, n: int, rng: random.Random) -> list[str]:
        """The operation of each of ``n`` views: ``n // 4`` of each, the remainder drawn at random."""
        extra = _sample(rng, OPERATIONS, n % 4) if n % 4 else []
        return list(OPERATIONS) * (n // 4) + extra

    def views(self, text: str, n: int, rng: random.Random) -> list[str]:
        """``n`` augmented versions of ``text``, one EDA operation each.

        The sentence is segmented once and its tokens reused for every view.

        Args:
            text: a sentence with at least one non-space character.
            n: the number of views.
            rng: the source of randomness; the same seed gives the same views.

        Returns:
            Exactly ``n`` non-empty strings (some may equal ``text``: see :attr:`stats`).

        Raises:
            InputError: ``text`` is empty or only whitespace.
        """
        if n < 0:
            raise InputError("EDA.views", "a number of views >= 0", got=str(n))
        if not text or text.isspace():
            raise InputError("EDA.views", "a sentence with at least one non-space character", got=text)
        stats = self.stats
        stats["sentences"] += 1
        stats["views"] += n
        tokens = self.segmenter.split(text)
        memo_get = self._memo.get
        describe = self._describe
        words = []
        eligible = []
        for i, token in enumerate(tokens):
            found = memo_get(token)
            if found is None:
                found = describe(token)
            if found is not _PUNCTUATION:
                words.append(i)
                if found:
                    eligible.append((i, found))
        # SR and RI need a word with synonyms; RS and RD need two words to act on.
        applicable = (["sr", "ri"] if eligible else []) + (["rs", "rd"] if len(words) > 1 else [])
        n_words = len(words)
        join = self.segmenter.join
        out = []
        for op in self.plan(n, rng):
            if op not in applicable:
                if not applicable:
                    stats["unchanged"] += 1
                    out.append(text)
                    continue
                stats["fallback"] += 1
                op = applicable[_index(rng, len(applicable))]
            stats[op] += 1
            if op == "sr":
                edited = synonym_replacement(tokens, eligible, n_changes(self.alpha_sr, n_words), rng)
            elif op == "ri":
                edited = random_insertion(tokens, eligible, n_changes(self.alpha_ri, n_words), rng)
            elif op == "rs":
                edited = random_swap(tokens, n_changes(self.alpha_rs, n_words), rng, words)
            else:
                edited = random_deletion(tokens, self.p_rd, rng, words)
            out.append(join(edited))
        return out

    def __call__(self, text: str, n: int, rng: random.Random) -> list[str]:
        """Same as :meth:`views`."""
        return self.views(text, n, rng)
