"""Supervised SimCSE: (anchor, positive, hard negative) triplets from jsonl/tsv.

    accelerate launch recipes/simcse_sup.py [--config FILE] [key=value ...]
    luse train simcse_sup data.corpus=[triplets.jsonl] [key=value ...]

Defaults: recipes/configs/simcse_sup.yaml. Keys: see luse/config.py.
"""

import sys
from pathlib import Path

from luse.config import read_config
from luse.data.items import file_items
from luse.data.supervised import read_triplets
from luse.eval.sts import training_evaluator
from luse.model.encoder import encoder_from_config
from luse.objectives.triplets import triplet_objective
from luse.train import TrainResult, exit_code, train

CONFIG = Path(__file__).with_name("configs") / "simcse_sup.yaml"


def main(argv: list[str]) -> TrainResult:
    config = read_config(CONFIG, argv, losses=("simcse_sup",))
    encoder = encoder_from_config(config.model)
    objective = triplet_objective(config, encoder.tokenizer)
    triplets = file_items(config.data.corpus, read_triplets, config.seed,
                          expected="(anchor, positive, hard negative) triplets")
    evaluate = training_evaluator(config.eval, triplets)
    return train(config, objective, triplets, encoder=encoder, evaluate=evaluate, project="simcse_sup")


if __name__ == "__main__":
    sys.exit(exit_code("simcse_sup", main))
