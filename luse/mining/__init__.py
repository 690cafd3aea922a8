"""Mining similar-sentence pairs from raw text (RoFormer-Sim's corpus construction); see :mod:`luse.mining.pairs`.

Command line: ``luse mine-pairs --in FILE... --out PAIRS.jsonl`` (:mod:`luse.cli.mine`).
"""

from luse.mining.pairs import (
    ANSWERS,
    CORPUS,
    DOCUMENTS,
    Group,
    MinedPair,
    MinHasher,
    MiningResult,
    PairMiner,
    SchemeStats,
    jaccard,
    lsh_candidates,
    lsh_params,
    read_groups,
    shingles,
    write_pairs,
)

__all__ = ["ANSWERS", "CORPUS", "DOCUMENTS", "Group", "MinHasher", "MinedPair", "MiningResult", "PairMiner", "SchemeStats",
           "jaccard", "lsh_candidates", "lsh_params", "read_groups", "shingles", "write_pairs"]
