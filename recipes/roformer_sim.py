"""RoFormer-Sim (SimBERTv2): similar-sentence generation + CLS sentence vectors from pairs.

    accelerate launch recipes/roformer_sim.py [--config FILE] [key=value ...]

Defaults: recipes/configs/roformer_sim.yaml. Keys: see luse/config.py (``seq2seq.*``).
The export (OUTPUT/final) is a plain *ForMaskedLM checkpoint: ``luse generate OUTPUT/final "TEXT"``.
"""

import sys
from pathlib import Path

from luse.runner import run_recipe
from luse.seq2seq import build_roformer_sim_model, build_roformer_sim_task, export_seq2seq

if __name__ == "__main__":
    sys.exit(run_recipe("roformer_sim", Path(__file__).with_name("configs") / "roformer_sim.yaml",
                        build_model=build_roformer_sim_model, build_task=build_roformer_sim_task,
                        export=export_seq2seq))
