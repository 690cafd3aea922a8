"""Supervised SimCSE: (anchor, positive, hard negative) triplets from jsonl/tsv.

    accelerate launch recipes/simcse_sup.py [--config FILE] [key=value ...]

Defaults: recipes/configs/simcse_sup.yaml. Keys: see luse/config.py.
"""

import sys
from pathlib import Path

from luse.runner import run_recipe

if __name__ == "__main__":
    sys.exit(run_recipe("simcse_sup", Path(__file__).with_name("configs") / "simcse_sup.yaml"))
