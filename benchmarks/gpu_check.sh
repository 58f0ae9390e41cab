#!/usr/bin/env bash
# GPU track check: run every solution notebook on the gpt2 track with a locally built GPT-2-124M-shaped
# model (random weights, the course's tokenizer), on one GPU with no network (the device tool), in ~8 minutes.
#
#   bash benchmarks/gpu_check.sh          results in $OUT (or build/gpu-check/): gpu_check.jsonl, summary.md
#
# Two passes, each notebook from a fresh kernel (benchmarks/run_notebook.py, nbclient):
#   grading  every notebook in nbgrader's grading mode on the gpt2 track: GPT-2 124M on the GPU at the
#            smallest scale, so every cell runs on CUDA with the real model (device, dtype and shape bugs)
#   full     then the notebooks at the gpt2 track's real scale, in order, while the budget lasts; the
#            notebook running when it ends is stopped at the deadline and reported as such
# A notebook that fails is reported (cell, error line) and the run goes on.
# Per notebook: wall time, peak host memory, torch.cuda's peak allocated/reserved memory (a last cell run in
# the same kernel), and nvidia-smi's peak memory.used (includes the CUDA context).
#
# The machine has no network: the Jupyter stack that is not on it comes as cp312 wheels in .whl/
# (git-ignored; see the list below), installed with --no-deps into /tmp/site.
# Knobs: BUDGET_S (480: the whole script), GRADING_S (75: each grading-mode notebook), PASSES ("grading full"),
#        NOTEBOOKS (default: every solutions/NN_*/NN_*.ipynb), PYTHON (python3).
set -uo pipefail
cd "$(dirname "$0")/.."
START=$(date +%s)
BUDGET_S=${BUDGET_S:-480}
GRADING_S=${GRADING_S:-75}
PASSES=${PASSES:-"grading full"}
OUTDIR="${OUT:-build/gpu-check}"
mkdir -p "$OUTDIR" build
PY="${PYTHON:-python3}"
JSONL="$OUTDIR/gpu_check.jsonl"
: > "$JSONL"
elapsed() { echo $(( $(date +%s) - START )); }

# 1. The Jupyter stack from the wheels (nbclient, ipykernel and their dependencies; the device has torch,
#    transformers, tokenizers, safetensors, numpy, matplotlib, tqdm, pandas, scikit-learn, pytest, psutil).
if [ -d .whl ] && ls .whl/*.whl >/dev/null 2>&1; then
  $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    > "$OUTDIR/pip.log" 2>&1 || { echo "wheel install failed:"; tail -5 "$OUTDIR/pip.log"; }
  export PYTHONPATH=/tmp/site:$PWD
else
  export PYTHONPATH=$PWD
fi
export PATH=/tmp/site/bin:$PATH
export ALIGNLAB_CACHE=$PWD/build/alignlab-cache HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 PYTHONUNBUFFERED=1
export JUPYTER_PLATFORM_DIRS=1 JUPYTER_DATA_DIR=$PWD/build/jupyter-data JUPYTER_RUNTIME_DIR=/tmp/jupyter-runtime
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUTDIR/gpu.txt"
$PY - <<'EOF' 2>&1 | tee -a "$OUTDIR/gpu.txt"
import sys, torch, transformers, nbclient, ipykernel
print(f"python {sys.version.split()[0]}, torch {torch.__version__} (cuda {torch.version.cuda}, available "
      f"{torch.cuda.is_available()}), transformers {transformers.__version__}, nbclient {nbclient.__version__}, "
      f"ipykernel {ipykernel.__version__}")
EOF

# 2. The local GPT-2-124M-shaped model; the gpt2 track points at it.
[ -f build/gpt2-local/config.json ] || $PY benchmarks/make_local_gpt2.py build/gpt2-local || exit 1
export ALIGNLAB_GPT2_PATH=$PWD/build/gpt2-local ALIGNLAB_TRACK=gpt2

if [ -n "${NOTEBOOKS:-}" ]; then
  LIST=$(for n in $NOTEBOOKS; do ls solutions/${n}*/*.ipynb; done)
else
  LIST=$(ls solutions/[0-9][0-9]_*/*.ipynb)
fi

# 3. One notebook: its own process group (so nothing outlives it), nvidia-smi sampling its memory.
run_one() {  # pass notebook deadline_s
  local pass=$1 nb=$2 deadline=$3 name row smi pid peak flag=""
  name=$(basename "$nb" .ipynb)
  [ "$pass" = grading ] && flag="--grading"
  nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits -lms 500 > "$OUTDIR/smi-$pass-$name.txt" 2>/dev/null &
  smi=$!
  setsid $PY benchmarks/run_notebook.py "$nb" --track gpt2 $flag --deadline "$deadline" --gpu-memory \
    > "$OUTDIR/row.json" 2> "$OUTDIR/stderr-$pass-$name.txt" &
  pid=$!
  ( sleep $((deadline + 90)); kill -9 -- -$pid 2>/dev/null ) & local watchdog=$!
  wait $pid
  kill $watchdog 2>/dev/null; kill -9 -- -$pid 2>/dev/null   # whatever the notebook left behind
  kill $smi 2>/dev/null; wait $smi 2>/dev/null
  peak=$(sort -n "$OUTDIR/smi-$pass-$name.txt" 2>/dev/null | tail -1)
  row=$(tail -1 "$OUTDIR/row.json")
  [ -n "$row" ] || row="{\"notebook\": \"$name\", \"error\": \"no result (killed after $((deadline + 90)) s)\"}"
  echo "$row" | PASS=$pass PEAK=${peak:-0} $PY -c '
import json, os, sys
row = json.loads(sys.stdin.read())
row.update({"pass": os.environ["PASS"], "smi_peak_mib": int(os.environ["PEAK"] or 0)})
print(json.dumps(row))' | tee -a "$JSONL"
}

for pass in $PASSES; do
  for nb in $LIST; do
    left=$(( BUDGET_S - $(elapsed) ))
    if [ "$pass" = full ]; then
      case "$nb" in *06_rlvr*) continue;; esac            # 06 runs its arithmetic model on the CPU on every track
      deadline=$(( left - 20 ))
    else
      deadline=$GRADING_S
      [ $left -lt $((GRADING_S + 20)) ] && deadline=$(( left - 20 ))
    fi
    if [ $deadline -lt 20 ]; then
      echo "{\"notebook\": \"$(basename "$nb" .ipynb)\", \"pass\": \"$pass\", \"error\": \"not run: budget of ${BUDGET_S} s spent\"}" | tee -a "$JSONL"
      continue
    fi
    run_one "$pass" "$nb" "$deadline"
  done
done

# 4. The summary.
$PY - "$JSONL" "$(elapsed)" <<'EOF' | tee "$OUTDIR/summary.md"
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
print(f"\n## gpu_check: {len(rows)} notebook runs in {sys.argv[2]} s\n")
print("| pass | notebook | result | cells | wall s | host peak MB | torch max allocated / reserved MiB | nvidia-smi peak MiB |")
print("| --- | --- | --- | --- | --- | --- | --- | --- |")
for r in rows:
    gpu = r.get("gpu") or {}
    result = "ran to completion" if not r.get("error") else r["error"].replace("|", "/")[:160]
    mem = f"{gpu.get('max_allocated_mib')} / {gpu.get('max_reserved_mib')}" if gpu else ""
    print(f"| {r.get('pass', '')} | {r['notebook']} | {result} | {r.get('cells', '')} | {r.get('wall_s', '')} | "
          f"{r.get('peak_mb', '')} | {mem} | {r.get('smi_peak_mib', '')} |")
EOF
