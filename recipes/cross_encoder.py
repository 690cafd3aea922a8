"""Cross-encoder: a [CLS] head over both sentences of a pair, trained on labelled or scored pairs.

    accelerate launch recipes/cross_encoder.py [--config FILE] [key=value ...]
    luse train cross_encoder data.corpus=[pairs.tsv] [key=value ...]

Defaults: recipes/configs/cross_encoder.yaml (loss.name=cross_bce on 0/1 labels; cross_mse on scores).
Keys: see luse/config.py. The export (OUTPUT/final, OUTPUT/best) is a plain sequence-classification
checkpoint: `luse mine-negatives --cross-encoder OUTPUT/final` uses it to denoise hard negatives.
"""

import sys
from functools import partial
from pathlib import Path

from luse.config import read_config
from luse.data.items import file_items
from luse.eval.sts import cross_encoder_evaluator
from luse.model.cross_encoder import cross_encoder_from_config, export_cross_encoder
from luse.objectives.cross import CrossEncoderObjective, cross_pairs
from luse.train import TrainResult, exit_code, train

CONFIG = Path(__file__).with_name("configs") / "cross_encoder.yaml"


def main(argv: list[str]) -> TrainResult:
    config = read_config(CONFIG, argv, losses=("cross_bce", "cross_mse"))
    model = cross_encoder_from_config(config)
    objective = CrossEncoderObjective(model.tokenizer, config.model.max_length, config.loss.name)
    pairs = file_items(config.data.corpus, partial(cross_pairs, loss_name=config.loss.name), config.seed,
                       expected="pairs (sentence1, sentence2, label or score)")
    evaluate = cross_encoder_evaluator(config.eval)  # Spearman of its scores on eval.sts
    return train(config, objective, pairs, encoder=model, evaluate=evaluate, export=export_cross_encoder,
                 project="cross_encoder")


if __name__ == "__main__":
    sys.exit(exit_code("cross_encoder", main))
