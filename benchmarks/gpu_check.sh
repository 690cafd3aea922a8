#!/usr/bin/env bash
# The GPU figures of benchmarks/README.md ("On a GPU"), in one call of a lent GPU machine, where the
# data comes from `make gpu-bundle` (carried as .gpu) and python3 already holds torch,
# transformers, accelerate and sentence-transformers. About 5 minutes on an H200.
#
#   run: command="bash benchmarks/gpu_check.sh", carry=[".gpu"], timeout_s=540
#
# Writes benchmarks/results/throughput_cuda*.{md,json} there and copies them, with the log, to
# $OUT (or ./gpu-out without one), so that they come back.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-gpu-out}"
mkdir -p "$OUT"
# A float32 copy of the bundle outside the tree (the bundle stays small enough to carry again).
SITE="${TMPDIR:-/tmp}/luse-gpu-site"
rm -rf "$SITE" && cp -r .gpu/site "$SITE" || { echo "no .gpu/site: run make gpu-bundle and carry .gpu"; exit 2; }
export PYTHONPATH="$SITE:$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
PY="${PYTHON:-python3}"
DEVICE="${DEVICE:-cuda}"
QUICK="${QUICK:-}"   # QUICK=1: a smoke run (small batches, few steps) to test this script anywhere
log="$OUT/gpu_check.log"

{
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>/dev/null || echo "no nvidia-smi"
  "$PY" -c "import torch, transformers, accelerate, sentence_transformers as st; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(), '| transformers', transformers.__version__, '| accelerate', accelerate.__version__, '| sentence-transformers', st.__version__)"
  # The bundle stores m3e-small in bf16 to fit the carry limit: back to float32 first.
  "$PY" - "$SITE" <<'EOF'
import pathlib, sys, torch
from safetensors.torch import load_file, save_file
from luse.io import m3e_small
path = pathlib.Path(sys.argv[1]) / "embedding" / "m3e-small" / "model.safetensors"
assert m3e_small() == path.parent, f"luse reads m3e-small from {m3e_small()}, not the bundle"
state = load_file(str(path))
if any(v.dtype != torch.float32 for v in state.values()):
    save_file({k: v.float().contiguous() for k, v in state.items()}, str(path), metadata={"format": "pt"})
print("m3e-small weights: float32,", sum(v.numel() for v in state.values()), "values")
EOF
} 2>&1 | tee "$log"

if [ -n "$QUICK" ]; then
  main=(--batch 16 --steps 2 --warmup 1); views9=(--batch 8 --views 9 --grad-cache-chunk 4 --steps 2 --warmup 1)
else
  # 512 sentences x 2 views against the peer (bf16 autocast for luse, as its trainer runs), then
  # the seed's LUSE setting, 128 sentences x 9 views, through GradCache chunks of 32 rows.
  main=(--batch 512 --steps 20 --rounds 2); views9=(--batch 128 --views 9 --grad-cache-chunk 32 --steps 20)
fi
status=0
"$PY" benchmarks/throughput.py --device "$DEVICE" "${main[@]}" --results-name throughput_cuda 2>&1 | tee -a "$log" || status=1
"$PY" benchmarks/throughput.py --device "$DEVICE" "${views9[@]}" --results-name throughput_cuda_128x9 2>&1 | tee -a "$log" || status=1
cp benchmarks/results/throughput_cuda*.md benchmarks/results/throughput_cuda*.json "$OUT"/ 2>/dev/null
exit $status
