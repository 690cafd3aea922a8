"""Unsupervised SimCSE: two dropout views of each sentence, in-batch negatives.

    accelerate launch recipes/simcse_unsup.py [--config FILE] [key=value ...]

Defaults: recipes/configs/simcse_unsup.yaml. Keys: see luse/config.py.
"""

import sys
from pathlib import Path

from luse.runner import run_recipe

if __name__ == "__main__":
    sys.exit(run_recipe("simcse_unsup", Path(__file__).with_name("configs") / "simcse_unsup.yaml"))
