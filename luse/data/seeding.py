"""Seeds named by what they are for, so that a stream is the same on every machine, process and worker count.

``stable_seed("length", seed, epoch, index)`` hashes its parts joined by ``:`` (blake2b, 64 bits), so it does not
depend on Python's per-process hash salt, and two purposes never share a stream unless their parts are equal.
"""

from __future__ import annotations

import hashlib
import random


def stable_seed(*parts: object) -> int:
    """A 64-bit seed for ``parts`` (their ``str`` joined by ``:``)."""
    digest = hashlib.blake2b(":".join(map(str, parts)).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little")


def stable_rng(*parts: object) -> random.Random:
    """A generator private to ``parts``: :func:`stable_seed` of them."""
    return random.Random(stable_seed(*parts))
