"""Unsupervised SimCSE: two dropout views of each sentence, in-batch negatives.

    accelerate launch recipes/simcse_unsup.py [--config FILE] [key=value ...]
    luse train simcse_unsup [key=value ...]

Defaults: recipes/configs/simcse_unsup.yaml (the views objective of pretrain_luse with 1 dropout view
and SimCSE's loss). Keys: see luse/config.py.
"""

import sys
from pathlib import Path

from luse.config import read_config
from luse.data.items import CorpusItems
from luse.eval.sts import training_evaluator
from luse.model.encoder import encoder_from_config
from luse.objectives.views import views_objective
from luse.train import TrainResult, exit_code, train

CONFIG = Path(__file__).with_name("configs") / "simcse_unsup.yaml"


def main(argv: list[str]) -> TrainResult:
    config = read_config(CONFIG, argv, losses=("simcse_unsup", "luse"))
    encoder = encoder_from_config(config.model)
    objective = views_objective(config, encoder.tokenizer)  # the sentence + its dropout copy
    sentences = CorpusItems(config)
    evaluate = training_evaluator(config.eval, sentences)
    result = train(config, objective, sentences, encoder=encoder, evaluate=evaluate, project="simcse_unsup")
    sentences.report_skips()
    return result


if __name__ == "__main__":
    sys.exit(exit_code("simcse_unsup", main))
