"""CoSENT fine-tuning on scored pairs (STS-style data).

    accelerate launch recipes/cosent.py [--config FILE] [key=value ...]

Defaults: recipes/configs/cosent.yaml. Keys: see luse/config.py.
"""

import sys
from pathlib import Path

from luse.runner import run_recipe

if __name__ == "__main__":
    sys.exit(run_recipe("cosent", Path(__file__).with_name("configs") / "cosent.yaml"))
