"""Cross-encoder: a [CLS] head over both sentences of a pair, trained on labelled or scored pairs.

    accelerate launch recipes/cross_encoder.py [--config FILE] [key=value ...]

Defaults: recipes/configs/cross_encoder.yaml (loss.name=cross_bce on 0/1 labels; cross_mse on scores).
Keys: see luse/config.py. The export (OUTPUT/final, OUTPUT/best) is a plain sequence-classification
checkpoint: `luse mine-negatives --cross-encoder OUTPUT/final` uses it to denoise hard negatives.
"""

import sys
from pathlib import Path

from luse.cross_encoder import (
    build_cross_encoder,
    build_cross_evaluator,
    build_cross_task,
    export_cross_encoder,
)
from luse.runner import run_recipe

if __name__ == "__main__":
    sys.exit(run_recipe("cross_encoder", Path(__file__).with_name("configs") / "cross_encoder.yaml",
                        build_model=build_cross_encoder, build_task=build_cross_task,
                        export=export_cross_encoder, build_evaluator=build_cross_evaluator))
