#!/usr/bin/env bash
# Full-size benchmark on a lent GPU machine (the `device` tool; no network there), in one call.
#
#   tools/gpu_bench.sh --fetch          # here, with a package index: puts the diffusers wheel in .whl/gpu/
#   run(command="tools/gpu_bench.sh", carry=[".whl/gpu"])              # there: bench + estimates → $OUT
#
# The device image has torch, accelerate, peft, safetensors, huggingface_hub and psutil but not diffusers;
# the benchmark needs nothing else (no OpenEXR, no ffmpeg: random-weight models, synthetic inputs). The
# wheel goes into a throw-away target folder, never into the image's environment. Writes to $OUT (or
# ./out/gpu-bench): bench.json and bench.txt (`diffusion-renderer bench`, full size, 512², 24 frames,
# 20 steps, with `--save-profile`), profile.json (the measured throughput profile) and estimates.txt (the
# cost model's predictions from that profile, to set beside the measured cases). Extra arguments go to
# the bench (e.g. `--variants preview,temporal_conv,low_vram,compile --repeats 2`).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
WHEELS="$ROOT/.whl/gpu"
DIFFUSERS="diffusers==0.42.1"

if [[ "${1:-}" == "--fetch" ]]; then
  mkdir -p "$WHEELS"
  py="$ROOT/.venv/bin/python"; [[ -x "$py" ]] || py=python3
  "$py" -m pip download --no-deps -d "$WHEELS" "$DIFFUSERS"
  ls -l "$WHEELS"
  exit 0
fi

OUT_DIR="${OUT:-$ROOT/out/gpu-bench}"
mkdir -p "$OUT_DIR"
PY="${DR_GPU_PYTHON:-python3}"
SITE="$(mktemp -d)"
trap 'rm -rf "$SITE"' EXIT
if ! "$PY" -c "import diffusers" 2>/dev/null; then
  shopt -s nullglob
  wheels=("$WHEELS"/diffusers-*.whl)
  if (( ${#wheels[@]} == 0 )); then
    echo "gpu_bench: diffusers is not installed and no wheel in $WHEELS: run 'tools/gpu_bench.sh --fetch' here" \
         "and pass carry=[\".whl/gpu\"] to the device run" >&2
    exit 2
  fi
  "$PY" -m pip install --quiet --no-index --no-deps --target "$SITE" "${wheels[@]}"
fi
# the measured profile lands in $OUT_DIR/cache/diffusion-renderer/perf/ and the estimates below read it
export PYTHONPATH="$SITE:$ROOT${PYTHONPATH:+:$PYTHONPATH}" HF_HUB_OFFLINE=1 XDG_CACHE_HOME="$OUT_DIR/cache"
cd "$ROOT"
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
  "$PY" -c "import torch, diffusers; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'diffusers', diffusers.__version__)"
} | tee "$OUT_DIR/device.txt"
"$PY" -m engine.cli bench --json --out "$OUT_DIR/bench.json" --save-profile "$@" > /dev/null
"$PY" -c "
import json, sys
from engine.perf.bench_cli import format_table
print(format_table(json.load(open(sys.argv[1]))))" "$OUT_DIR/bench.json" | tee "$OUT_DIR/bench.txt"
{ for mem in default low-vram minimal; do
    for job in "inverse --passes 1" "inverse --passes 5" "forward"; do
      echo "== estimate $job --memory $mem"
      "$PY" -m engine.cli estimate $job --size 512x512 --frames 24 --memory "$mem" --json
    done
  done
} > "$OUT_DIR/estimates.txt" 2>&1
cp "$OUT_DIR"/cache/diffusion-renderer/perf/*.json "$OUT_DIR/profile.json" 2>/dev/null || true
echo "gpu_bench: results in $OUT_DIR"
