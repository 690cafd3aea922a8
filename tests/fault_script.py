"""A child process for the kill tests: it trains, builds a synonym cache or exports, and says what it is doing.

``tests/test_faults.py`` and ``benchmarks/faults.py`` run this script, SIGKILL it at random moments
and then look at what it left on disk. Every change of phase is printed, flushed, as
``PHASE <name> <unix time>`` (``start``: loading and resuming; ``step``: a training step, from
the end of the previous phase; ``eval``, ``save``, ``export``; ``write`` and ``other`` for the
cache and export loops), so the harness knows what each kill interrupted.

Usage::

    python tests/fault_script.py train MODEL_DIR OUT_DIR [--steps N] [--resume] [--workers W]
    python tests/fault_script.py cache VECTORS_TXT OUT_LSC [--repeat N] [--slow-write SECONDS]
    python tests/fault_script.py export MODEL_DIR OUT_DIR [--repeat N]

``train`` runs the real trainer (``luse.train.loop.train``) on a tiny model with a checkpoint every
step and an evaluation (with a best-model export) every ``--eval-every`` steps; ``--resume`` adds
``resume=latest``. ``cache`` rebuilds the cache with ``luse.augment.synonyms.build.build_cache`` (``--slow-write`` turns
the file write into a slow disk, ``PHASE file``, so kills land in it too) and
``export`` re-exports the model with ``luse.model.export.export_encoder``, ``--repeat`` times each,
so that a kill can land in the middle of a write that replaces an existing file or directory.
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from contextlib import contextmanager

SENTENCE_CHARS = ("的一是在不了有和人这中大为上个国我以要他时来用们生到作地于出就分对成会可主发年动同工也能下过子说产种面而"
                  "方后多定行学法所民得经十三之进着等部度家电力里如水化高自二理起小物现实加量都两体制机当使点从业本去把")


def phase(name: str) -> None:
    print(f"PHASE {name} {time.time():.3f}", flush=True)


def sentences(n: int = 160, seed: int = 0) -> list[str]:
    """A fixed random corpus (the same in every run, so resumed and straight runs see the same data)."""
    rng = random.Random(seed)
    return ["".join(rng.choice(SENTENCE_CHARS) for _ in range(rng.randint(6, 20))) for _ in range(n)]


def train_config(out_dir: str, steps: int, resume: bool, workers: int, eval_every: int, overrides=()):
    from luse.config import load_config

    values = {"output_dir": out_dir, "max_steps": steps, "batch_size": 8, "lr": 1e-3, "save_every": 1,
              "keep_checkpoints": 2, "eval.every": eval_every, "log_every": 1, "report_to": "tensorboard",
              "warmup_ratio": 0.2, "views.dropout": 2, "views.eda": 0, "model.pooling": "mean", "data.num_workers": workers,
              "seed": 7}
    if resume:
        values["resume"] = "latest"
    return load_config(None, [f"{k}={v}" for k, v in values.items()] + list(overrides))


def run_train(args) -> None:
    import luse.train.loop as trainer
    from luse.model.encoder import SentenceEncoder
    from luse.model.export import export_encoder
    from luse.objectives.views import ViewsObjective

    config = train_config(args.out, args.steps, args.resume, args.workers, args.eval_every)
    corpus = sentences()
    probe = corpus[:48]

    def make_items(epoch):
        order = list(range(len(corpus)))
        random.Random(epoch).shuffle(order)
        return (corpus[i] for i in order)

    def evaluate(encoder):
        phase("eval")
        vectors = encoder.encode(probe)
        # Any score that changes as training goes, so the best export is rewritten now and then.
        for _ in range(args.eval_rounds - 1):  # a heavier evaluation, so that random kills land in it too
            encoder.encode(probe)
        result = {"score": float((vectors[:24] * vectors[24:]).sum()), "table": ""}
        phase("step")
        return result

    def export(model, out_dir, metadata=None):
        phase("export")
        export_encoder(model, out_dir, metadata=metadata)
        phase("step")

    save = trainer.save_checkpoint

    def save_checkpoint(*a, **k):
        phase("save")
        time.sleep(args.save_delay)  # a slow disk: room for a second signal to arrive mid-save
        path = save(*a, **k)
        phase("step")
        return path

    trainer.save_checkpoint = save_checkpoint  # the trainer looks the name up in its own module
    encoder = SentenceEncoder.from_pretrained(args.model, pooling=config.model.pooling,
                                              max_length=config.model.max_length)
    objective = ViewsObjective(encoder.tokenizer, config.model.max_length, config.views, config.loss)
    phase("start")  # from here: loading and resuming; the first step follows
    first_step = trainer.train_step

    def micro_step(*a, **k):
        trainer.train_step = first_step
        phase("step")
        return first_step(*a, **k)

    trainer.train_step = micro_step
    result = trainer.train(config, objective, make_items, encoder=encoder, evaluate=evaluate, export=export)
    phase(f"done {result.step}")


def slow_file_writes(module, delay: float) -> None:
    """Make ``module``'s ``atomic_open`` a slow disk: every write waits ``delay`` s (and says ``PHASE file``),
    so that random kills land inside the file write, not only in the computation before it."""
    real = module.atomic_open

    class SlowHandle:
        def __init__(self, handle):
            self.handle = handle

        def write(self, data):
            time.sleep(delay)
            return self.handle.write(data)

        def __getattr__(self, name):
            return getattr(self.handle, name)

    @contextmanager
    def atomic_open(*a, **k):
        with real(*a, **k) as handle:
            phase("file")
            yield SlowHandle(handle)

    module.atomic_open = atomic_open


def run_cache(args) -> None:
    import luse.augment.synonyms.store
    from luse.augment.synonyms.build import BuildConfig, build_cache

    if args.slow_write:
        slow_file_writes(luse.augment.synonyms.store, args.slow_write)
    config = BuildConfig(vectors=args.source, thesaurus=None, stopwords=None, k=4, threshold=0.0, index="exact")
    for _ in range(args.repeat):
        phase("write")
        build_cache(config, args.out, progress=False)
        phase("other")
    phase("done")


def run_export(args) -> None:
    from luse.model.encoder import SentenceEncoder
    from luse.model.export import export_encoder

    encoder = SentenceEncoder.from_pretrained(args.source, pooling="mean")
    for i in range(args.repeat):
        phase("write")
        export_encoder(encoder, args.out, metadata={"round": i})
        phase("other")
    phase("done")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("what", choices=("train", "cache", "export"))
    parser.add_argument("source", help="tiny model directory (train, export) or word-vector file (cache)")
    parser.add_argument("out")
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--eval-every", type=int, default=3)
    parser.add_argument("--eval-rounds", type=int, default=4, help="encodings of the probe set per evaluation")
    parser.add_argument("--workers", type=int, default=0)
    parser.add_argument("--resume", action="store_true")
    parser.add_argument("--save-delay", type=float, default=0.0, help="seconds each checkpoint save waits first")
    parser.add_argument("--repeat", type=int, default=1000)
    parser.add_argument("--slow-write", type=float, default=0.0, help="cache: seconds each file write call waits")
    args = parser.parse_args(argv)
    args.model = args.source
    started = time.perf_counter()
    {"train": run_train, "cache": run_cache, "export": run_export}[args.what](args)
    print(f"seconds {time.perf_counter() - started:.2f}", file=sys.stderr)


if __name__ == "__main__":
    main()
