#!/usr/bin/env bash
# CUDA checks and figures for sas3d on a machine with an NVIDIA GPU (none is needed anywhere else).
#
# Needs: this repository installed with a CUDA build of torch and `pip install -e ".[dev,cu12]"`
# (spconv-cu121; never together with the CPU `spconv`). Writes logs to $OUT (default runs/gpu_check).
#
#   1. the CUDA tests that skip on CPU machines (CUDA fusion path == CPU path, CUDA projection);
#   2. multi-view fusion on CUDA against CPU on a generated room (`sas3d fuse --device cuda`);
#   3. the training-throughput and peak-memory table of benchmarks/distill.py, which on CUDA adds the
#      full-width MinkUNet18A at 2 cm with batch 12, the SAS paper's batch (OpenScene users report 45 GB);
#   4. the distillation ablation with the full-width student at 2 cm on ROOMS generated rooms (default 12)
#      for EPOCHS epochs (default 40), on CUDA: held-out mIoU of every stage against the supervised
#      reference (the same student trained on ground-truth labels), plus the in-place split.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-runs/gpu_check}
ROOMS=${ROOMS:-12}
EPOCHS=${EPOCHS:-40}
PY=${PY:-python}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 TQDM_DISABLE=1
$PY - <<'PYEOF' | tee "$OUT/env.txt"
import torch
from sas3d.models.spconv_compat import spconv_distributions
assert torch.cuda.is_available(), "benchmarks/gpu_check.sh needs a CUDA device"
print("torch", torch.__version__, "cuda", torch.version.cuda, torch.cuda.get_device_name(0), "spconv:", spconv_distributions())
PYEOF
$PY -m pytest -q -rs tests/test_fusion.py tests/test_projection.py -k cuda 2>&1 | tee "$OUT/cuda_tests.txt"
ROOM=$OUT/data/train/scene9000_00
$PY - "$OUT" <<'PYEOF'
import sys
from pathlib import Path
from sas3d.demo.rooms import build_embedded_dataset
build_embedded_dataset(Path(sys.argv[1]) / "data", n_train=1, n_val=0, n_views=30, progress=False)
PYEOF
for dev in cpu cuda; do
  /usr/bin/time -f "fuse on $dev: %e s wall" $PY -m sas3d fuse "$ROOM" --teacher simulated:lseg --device $dev \
      --out "$OUT/fused_$dev.safetensors" --overwrite --no-progress 2>&1 | tee -a "$OUT/fusion.txt"
done
$PY benchmarks/distill.py --skip-pipeline --skip-engine --out "$OUT/costs" --no-progress 2>&1 | tee "$OUT/costs.txt"
$PY benchmarks/distill.py --skip-costs --skip-engine --device cuda --width full --voxel 0.02 --rooms "$ROOMS" --epochs "$EPOCHS" \
    --out "$OUT/ablation" --no-progress 2>&1 | tee "$OUT/ablation.txt"
echo "gpu_check: logs in $OUT"
