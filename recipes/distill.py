"""Similarity distillation (RoFormer-Sim): a student learns a teacher's cosine-similarity matrix.

    accelerate launch recipes/distill.py [--config FILE] [key=value ...]
    accelerate launch recipes/distill.py distill.teacher=runs/pretrain_luse/final distill.student_layers=2
    accelerate launch recipes/distill.py distill.teacher=runs/roformer_sim/final distill.student_layers=2 \
        distill.pairs=pairs.jsonl distill.lm_weight=1 model.pooling=cls   # a smaller generator

Defaults: recipes/configs/distill.yaml. Keys: see luse/config.py (section ``distill``) and luse/distill.py.
"""

import sys
from pathlib import Path

from luse.distill import export_student, recipe_parts
from luse.runner import run_recipe

if __name__ == "__main__":
    build_model, build_task = recipe_parts()
    sys.exit(run_recipe("distill", Path(__file__).with_name("configs") / "distill.yaml",
                        build_model=build_model, build_task=build_task, export=export_student))
