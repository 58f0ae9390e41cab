#!/usr/bin/env bash
# The GPU track on a real GPU, within about 9 minutes, on a one-GPU machine with no network (the device tool).
#   bash benchmarks/gpu_check.sh            (results in $OUT, else build/)
#
# A. every solution notebook on the gpt2 track in grading mode: a GPT-2-124M-shaped model (built locally by
#    make_local_gpt2.py, random weights) on the GPU at the smallest scale; does every cell run?
# B. the first notebooks at the gpt2 track's full scale, for as long as PHASE_B_S allows, with per-cell times.
# Both write per-cell times after each notebook (profile_notebooks.py), and the GPU's memory is sampled every
# 0.5 s with timestamps, so a notebook's peak can be read off its time window.
# The machine needs the learner's runtime and nbclient/ipykernel; where pip cannot reach an index, carry them
# as wheels in .whl/ (the device tool's README says how; benchmarks/README-gpu is not needed).
set -uo pipefail
cd "$(dirname "$0")/.."
OUTDIR="${OUT:-build}"; mkdir -p "$OUTDIR" build
PY="${PYTHON:-python3}"
PHASE_A_S="${PHASE_A_S:-270}"      # whole phase A
PHASE_B_S="${PHASE_B_S:-230}"      # whole phase B
if [ -d .whl ]; then
  $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    || { echo "installing the carried wheels failed"; exit 1; }
  export PYTHONPATH=/tmp/site:$PWD
else
  export PYTHONPATH=$PWD
fi
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUTDIR/gpu.txt"
$PY -c "import torch, transformers; print('torch', torch.__version__, 'transformers', transformers.__version__)" \
  | tee -a "$OUTDIR/gpu.txt"
$PY -m ipykernel install --user --name python3 >/dev/null 2>&1 || true
$PY benchmarks/make_local_gpt2.py build/gpt2-local || exit 1
export ALIGNLAB_GPT2_PATH=$PWD/build/gpt2-local
nvidia-smi --query-gpu=timestamp,memory.used --format=csv,noheader,nounits -lms 500 > "$OUTDIR/gpu_memory.csv" &
SMI=$!
echo "== A: grading mode, every notebook (gpt2 track)"; date -u +%H:%M:%S
timeout "$PHASE_A_S" $PY benchmarks/profile_notebooks.py --grading --track gpt2 --top 3 \
  --out "$OUTDIR/gpu_grading.json"
echo "== B: full scale (gpt2 track), in order, until the time is up"; date -u +%H:%M:%S
timeout "$PHASE_B_S" $PY benchmarks/profile_notebooks.py --track gpt2 --top 4 --budget 120 \
  --only ${FULL_SCALE:-00_getting_started 01_preference_data 02_reward_model 07_rlvr} --out "$OUTDIR/gpu_full.json"
date -u +%H:%M:%S
kill $SMI 2>/dev/null
echo "GPU memory used, highest sample: $(cut -d, -f2 "$OUTDIR/gpu_memory.csv" | sort -n | tail -1) MiB"
