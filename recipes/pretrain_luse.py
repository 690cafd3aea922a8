"""LUSE pretraining: each sentence plus its EDA and dropout views are positives, everything else in the global batch is a negative.

    accelerate launch recipes/pretrain_luse.py [--config FILE] [key=value ...]

Defaults: recipes/configs/pretrain_luse.yaml. Keys: see luse/config.py.
"""

import sys
from pathlib import Path

from luse.runner import run_recipe

if __name__ == "__main__":
    sys.exit(run_recipe("pretrain_luse", Path(__file__).with_name("configs") / "pretrain_luse.yaml"))
