#!/usr/bin/env bash
# The GPU checks of issues 4, 5 and 8, run on the device machine from the repository root:
#   bash scripts/gpu/run.sh PART... [-- ARG...]
# PART, in order:
#   tests    the tests marked gpu (CUDA graphs, the fast generator path, device augmentation,
#            the sweep's ensembles)
#   bench    python -m benchmark bench --config paper --json       (issue 8)
#   studies  python -m benchmark sweep --config gpu: every generator at 128 px with its
#            fidelity stage, real-only cells per task at 100 % and 10 % (issues 4 and 5),
#            then the paper grid's time projected from its stage times (issue 8)
# The device tool carries at most 64 MiB a call, so the wheels (.whl) and the prompt
# encoder (.minilm) travel in two calls, both made by scripts/gpu/prepare.sh here:
#   call 1: carry [".whl"],    command: bash scripts/gpu/run.sh tests bench
#   call 2: carry [".minilm"], command: bash scripts/gpu/run.sh studies
# Call 1 installs the wheels into .site/, which stays on the machine while it is warm, so
# call 2 must follow at once; on a fresh machine it stops with a message naming call 1.
# Each part has a time limit (seconds; PART_LIMIT_<part> overrides it) and leaves its
# output in $OUT (gpu-out/ when OUT is unset): <part>.log, bench-paper.json, studies.tar.gz,
# projection-paper.json.
# ARGs after -- go to the bench and sweep commands (e.g. --set generator.train_steps=4000;
# the CPU rehearsal in tests/test_gpu_kit.py shrinks both presets this way).
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-gpu-out}
mkdir -p "$OUT"
export HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1 MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false
PYTHON=${PYTHON:-python3}

limit() {  # the part's time limit in seconds
  local var="PART_LIMIT_$1"
  # Call 1 (tests, bench) and call 2 (studies) each end within the tool's 600 s a command.
  case $1 in tests) echo "${!var:-120}" ;; bench) echo "${!var:-420}" ;; *) echo "${!var:-480}" ;; esac
}

install() {  # the carried wheels, once per machine, into .site (ignored by git)
  if [ ! -f .site/.installed ]; then
    if ! ls .whl/*.whl >/dev/null 2>&1; then
      echo "run.sh: no .site and no .whl: this machine is fresh; run call 1 (carry .whl) first" >&2
      exit 2
    fi
    "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
      --target .site .whl/*.whl || exit 2
    touch .site/.installed
  fi
  export PYTHONPATH="$PWD/.site:$PWD${PYTHONPATH:+:$PYTHONPATH}"
}

encoder() {  # float32 MiniLM restored from the carried float16 copy; prints its folder
  if [ ! -f .site/minilm/config.json ]; then
    if [ ! -f .minilm/config.json ]; then
      echo "run.sh: no .minilm: carry it (scripts/gpu/prepare.sh makes it)" >&2
      exit 2
    fi
    "$PYTHON" - <<'EOF' || exit 2
import torch
from transformers import AutoModel, AutoTokenizer

model = AutoModel.from_pretrained(".minilm", dtype=torch.float32)
model.float().save_pretrained(".site/minilm", safe_serialization=True)
AutoTokenizer.from_pretrained(".minilm").save_pretrained(".site/minilm")
EOF
  fi
  echo "$PWD/.site/minilm"
}

run_part() {
  local part=$1 seconds status
  seconds=$(limit "$part")
  echo "run.sh: $part (limit ${seconds} s) at $(date -u +%T)"
  case $part in
    tests)
      timeout "$seconds" "$PYTHON" -m pytest -q -p no:cacheprovider -m gpu \
        tests/test_bench.py tests/generators/test_gen_acceleration.py \
        tests/sweeps/test_sweeps_ensemble.py 2>&1 | tee "$OUT/tests.log"
      status=$?
      ;;
    bench)
      timeout "$seconds" "$PYTHON" -m benchmark bench --config paper --json \
        "${EXTRA[@]}" >"$OUT/bench-paper.json" 2> >(tee "$OUT/bench.log" >&2)
      status=$?
      ;;
    studies)
      local enc
      enc=$(encoder) || exit 2
      timeout "$seconds" "$PYTHON" -m benchmark sweep --config gpu --out runs/gpu \
        --set generator.text_encoder="$enc" --set downstream.vlseg.text_encoder="$enc" \
        "${EXTRA[@]}" 2>&1 | tee "$OUT/studies.log"
      status=$?
      # Issue 8's projection of the paper grid from this run's stage times (same models).
      "$PYTHON" -m benchmark project --from runs/gpu --config paper --json \
        >"$OUT/projection-paper.json" && "$PYTHON" -m benchmark project --from runs/gpu \
        --config paper | tee -a "$OUT/studies.log"
      # What the docs need, without the weights and the images (the 16 MiB a file).
      tar -czf "$OUT/studies.tar.gz" --exclude='*.safetensors' --exclude='*.npy' \
        --exclude='*.npz' --exclude='*.lock' --exclude='*.db' --exclude=mlartifacts \
        -C runs gpu
      ;;
  esac
  # 124: the part ran out of time; a sweep keeps what it finished, and a rerun resumes it.
  echo "run.sh: $part finished with status $status at $(date -u +%T)"
  [ "$status" -eq 0 ] || FAILED=$status
}

PARTS=()
EXTRA=()
while [ $# -gt 0 ]; do
  case $1 in
    --) shift; EXTRA=("$@"); break ;;
    tests | bench | studies) PARTS+=("$1"); shift ;;
    *) echo "run.sh: unknown part '$1' (tests, bench, studies)" >&2; exit 2 ;;
  esac
done
if [ ${#PARTS[@]} -eq 0 ]; then
  echo "usage: bash scripts/gpu/run.sh PART... [-- ARG...] (PART: tests, bench, studies)" >&2
  exit 2
fi
install
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null || true
FAILED=0
for part in "${PARTS[@]}"; do run_part "$part"; done
exit "$FAILED"  # the last failing part's status; every part runs regardless
