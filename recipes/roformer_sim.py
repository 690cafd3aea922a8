"""RoFormer-Sim (SimBERTv2): similar-sentence generation + CLS sentence vectors from pairs.

    accelerate launch recipes/roformer_sim.py [--config FILE] [key=value ...]
    luse train roformer_sim data.corpus=[pairs.jsonl] [key=value ...]

Defaults: recipes/configs/roformer_sim.yaml. Keys: see luse/config.py (``seq2seq.*``).
The export (OUTPUT/final) is a plain *ForMaskedLM checkpoint: ``luse generate OUTPUT/final "TEXT"``.
"""

import sys
from pathlib import Path

from luse.config import read_config
from luse.data.items import file_items
from luse.data.supervised import read_similar_pairs
from luse.eval.sts import training_evaluator
from luse.model.seq2seq import export_seq2seq, seq2seq_from_config
from luse.objectives.roformer_sim import roformer_sim_objective
from luse.train import TrainResult, exit_code, train

CONFIG = Path(__file__).with_name("configs") / "roformer_sim.yaml"


def main(argv: list[str]) -> TrainResult:
    config = read_config(CONFIG, argv, losses=("roformer_sim",))
    model = seq2seq_from_config(config.model)  # a *ForMaskedLM: encoder + tied LM head
    objective = roformer_sim_objective(config, model.tokenizer)
    pairs = file_items(config.data.corpus, read_similar_pairs, config.seed, expected="pairs of similar sentences")
    evaluate = training_evaluator(config.eval, pairs)
    return train(config, objective, pairs, encoder=model, evaluate=evaluate, export=export_seq2seq,
                 project="roformer_sim")


if __name__ == "__main__":
    sys.exit(exit_code("roformer_sim", main))
