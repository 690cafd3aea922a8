"""Similarity distillation (RoFormer-Sim): a student learns a teacher's cosine-similarity matrix.

    accelerate launch recipes/distill.py [--config FILE] [key=value ...]
    accelerate launch recipes/distill.py distill.teacher=runs/pretrain_luse/final distill.student_layers=2
    accelerate launch recipes/distill.py distill.teacher=runs/roformer_sim/final distill.student_layers=2 \
        distill.pairs=pairs.jsonl distill.lm_weight=1 model.pooling=cls   # a smaller generator
    luse train distill distill.teacher=... [key=value ...]

Defaults: recipes/configs/distill.yaml. Keys: see luse/config.py (section ``distill``).
"""

import sys
from pathlib import Path

from luse.config import read_config
from luse.data.items import CorpusItems, file_items
from luse.data.supervised import read_similar_pairs
from luse.eval.sts import training_evaluator
from luse.model.student import distill_student, export_student, load_teacher
from luse.objectives.distill import distill_objective
from luse.train import TrainResult, exit_code, train

CONFIG = Path(__file__).with_name("configs") / "distill.yaml"


def main(argv: list[str]) -> TrainResult:
    config = read_config(CONFIG, argv)  # loss.name is not read here
    teacher = load_teacher(config.distill.teacher, max_length=config.model.max_length)  # frozen
    student = distill_student(config, teacher)  # the teacher's lower layers, a fresh config, or model.name_or_path
    objective = distill_objective(config, teacher, student.tokenizer)
    if config.distill.pairs:  # similar pairs: both sides distilled (+ the generation loss with distill.lm_weight)
        items = file_items([config.distill.pairs], read_similar_pairs, config.seed,
                           expected="pairs of similar sentences")
    else:
        items = CorpusItems(config)
    evaluate = training_evaluator(config.eval, items)
    result = train(config, objective, items, encoder=student, evaluate=evaluate, export=export_student,
                   project="distill")
    if isinstance(items, CorpusItems):
        items.report_skips()
    return result


if __name__ == "__main__":
    sys.exit(exit_code("distill", main))
