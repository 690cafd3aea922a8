"""CoSENT fine-tuning on scored pairs (STS-style data).

    accelerate launch recipes/cosent.py [--config FILE] [key=value ...]
    luse train cosent data.corpus=[pairs.tsv] [key=value ...]

Defaults: recipes/configs/cosent.yaml. Keys: see luse/config.py.
"""

import sys
from pathlib import Path

from luse.config import read_config
from luse.data.items import file_items
from luse.data.supervised import read_pairs
from luse.eval.sts import training_evaluator
from luse.model.encoder import encoder_from_config
from luse.objectives.pairs import PairsObjective
from luse.train import TrainResult, exit_code, train

CONFIG = Path(__file__).with_name("configs") / "cosent.yaml"


def main(argv: list[str]) -> TrainResult:
    config = read_config(CONFIG, argv, losses=("cosent",))
    encoder = encoder_from_config(config.model)
    objective = PairsObjective(encoder.tokenizer, config.model.max_length, config.loss)
    pairs = file_items(config.data.corpus, read_pairs, config.seed, expected="scored pairs (sentence1, sentence2, score)")
    evaluate = training_evaluator(config.eval, pairs)
    return train(config, objective, pairs, encoder=encoder, evaluate=evaluate, project="cosent")


if __name__ == "__main__":
    sys.exit(exit_code("cosent", main))
