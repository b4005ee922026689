#!/usr/bin/env bash
# The GPU-ready benchmarks in one run, for a machine with a CUDA GPU:
#
#   bash benchmarks/gpu_suite.sh                 # results in gpu-results/
#   DEVICE=cuda:1 OUT=/tmp/r bash benchmarks/gpu_suite.sh
#   QUICK=1 bash benchmarks/gpu_suite.sh         # small budgets: checks every path in a few minutes
#
# Runs benchmarks/vs_shap.py, throughput.py and vlm_families.py (tiny families, a
# BLIP-base-sized and a 2B-parameter-sized random model) on $DEVICE. Each run's table goes
# to $OUT/NAME.md; nvidia-smi samples the GPU's utilisation every 200 ms meanwhile and the
# mean is printed as the GPU busy share (the scripts also print their model share of the
# wall time, GPU-synchronised). Offline: nothing is downloaded.
set -euo pipefail
cd "$(dirname "$0")/.."
DEVICE=${DEVICE:-cuda}
OUT=${OUT:-gpu-results}
PY=${PYTHON:-python}
mkdir -p "$OUT"
: >"$OUT/summary.txt"
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" TQDM_DISABLE=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
if [[ -n "${QUICK:-}" ]]; then
  EVALS=60; IMAGES=8; FAMILIES=blip,llava
else
  EVALS=300; IMAGES=32; FAMILIES=vit-gpt2,blip,git,llava,qwen2_vl,idefics3,paligemma,gemma3
fi

nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv || echo "nvidia-smi: not available"

bench() {
  local name=$1; shift
  echo "== $name: $*"
  local util="$OUT/$name.util" mon=""
  if command -v nvidia-smi >/dev/null; then
    nvidia-smi --query-gpu=utilization.gpu --format=csv,noheader,nounits -lms 200 >"$util" 2>/dev/null &
    mon=$!
  fi
  local t0=$SECONDS rc=0
  "$PY" "$@" 2>"$OUT/$name.err" | tee "$OUT/$name.md" || rc=$?
  [[ -n "$mon" ]] && kill "$mon" 2>/dev/null && wait "$mon" 2>/dev/null || true
  local busy="n/a"
  [[ -s "$util" ]] && busy=$(awk '{s += $1; n++} END {if (n) printf "%.0f%%", s / n}' "$util")
  echo "-- $name: exit $rc, $((SECONDS - t0)) s, GPU busy (nvidia-smi mean) $busy" | tee -a "$OUT/summary.txt"
  [[ $rc -eq 0 ]] || tail -5 "$OUT/$name.err"
}

bench vs_shap benchmarks/vs_shap.py --device "$DEVICE" --max-evals "$EVALS" --batch-size 50
bench throughput benchmarks/throughput.py --device "$DEVICE" --captioners builtin --images "$IMAGES" --max-evals "$EVALS"
bench vlm_tiny benchmarks/vlm_families.py --device "$DEVICE" --families "$FAMILIES" --evals "$EVALS" --batch 50
bench vlm_blip_base benchmarks/vlm_families.py --device "$DEVICE" --model-size blip-base --evals "$EVALS" --batch 50
bench vlm_2b benchmarks/vlm_families.py --device "$DEVICE" --model-size 2b --dtype bfloat16 --evals "$EVALS" --batch 25 --no-batch-1
echo "== summary"
cat "$OUT/summary.txt"
