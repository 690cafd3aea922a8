"""LUSE pretraining: each sentence plus its EDA and dropout views are positives, everything else in the global batch is a negative.

    accelerate launch recipes/pretrain_luse.py [--config FILE] [key=value ...]
    luse train pretrain_luse [key=value ...]

Defaults: recipes/configs/pretrain_luse.yaml. Keys: see luse/config.py.
"""

import sys
from pathlib import Path

from luse.config import read_config
from luse.data.items import CorpusItems
from luse.eval.sts import training_evaluator
from luse.model.encoder import encoder_from_config
from luse.objectives.views import views_objective
from luse.train import TrainResult, exit_code, train

CONFIG = Path(__file__).with_name("configs") / "pretrain_luse.yaml"


def main(argv: list[str]) -> TrainResult:
    config = read_config(CONFIG, argv, losses=("luse", "simcse_unsup"))
    encoder = encoder_from_config(config.model)
    objective = views_objective(config, encoder.tokenizer)  # EDA + dropout views, LUSE's loss
    items = CorpusItems(config)
    evaluate = training_evaluator(config.eval, items)
    result = train(config, objective, items, encoder=encoder, evaluate=evaluate, project="pretrain_luse")
    items.report_skips()
    return result


if __name__ == "__main__":
    sys.exit(exit_code("pretrain_luse", main))
