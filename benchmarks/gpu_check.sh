#!/usr/bin/env bash
# GPU track check: run every solution notebook on the gpt2 track with a locally built
# GPT-2-124M-shaped model; print run time and peak GPU memory per notebook.
# Made for a one-GPU machine with no network (the device tool); about 8 minutes.
#   bash benchmarks/gpu_check.sh            (results also in $OUT or build/)
# The machine needs the learner's runtime + nbclient/ipykernel: where pip cannot
# reach an index, carry them as wheels in .whl/ (see the device tool's README).
set -uo pipefail
cd "$(dirname "$0")/.."
OUTDIR="${OUT:-build}"; mkdir -p "$OUTDIR" build
PY="${PYTHON:-python3}"
if [ -d .whl ]; then
  $PY -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site:$PWD
else
  export PYTHONPATH=$PWD
fi
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
$PY benchmarks/make_local_gpt2.py build/gpt2-local || exit 1
export ALIGNLAB_GPT2_PATH=$PWD/build/gpt2-local ALIGNLAB_TRACK=gpt2 PYTHONUNBUFFERED=1
for nb in solutions/*/*.ipynb; do
  name=$(basename "$nb" .ipynb)
  nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits -lms 500 > "build/mem-$name.txt" &
  smi=$!
  timeout 240 $PY benchmarks/run_notebook.py "$nb" --track gpt2 | tee -a "$OUTDIR/gpu_check.jsonl"
  kill $smi 2>/dev/null
  peak=$(sort -n "build/mem-$name.txt" | tail -1)
  echo "{\"notebook\": \"$name\", \"peak_gpu_mib\": ${peak:-0}}" | tee -a "$OUTDIR/gpu_check.jsonl"
done
