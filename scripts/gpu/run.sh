#!/usr/bin/env bash
# The GPU checks of issues 4, 5 and 8, run on the device machine from the repository root:
#   bash scripts/gpu/run.sh PART... [-- ARG...]
# Every call carries [".whl", ".minilm"] (made here by scripts/gpu/prepare.sh; 51 MiB with
# the tree, under the tool's 64 MiB a call), so every part runs on a fresh machine. PART,
# in the order given, each with a time limit in seconds (PART_LIMIT_<part> overrides it):
#   tests       (120) the tests marked gpu: CUDA graphs, the generators' fast path, device
#                     augmentation, the sweep's ensembles, bf16 / fp16 / fp32, fused SGD
#   bench       (420) python -m benchmark bench --config paper --json          (issue 8)
#   downstream  (300) sweep --config gpu, its main grid only: seg, cls and vlseg real-only
#                     at 100 % and 10 % of the patients, 3 seeds each           (issue 5)
#   generators  (540) sweep --config gpu, its `also` block only: every generator at 128 px
#                     with its fidelity stage and a synthetic-only seg cell     (issue 4)
#   studies     (540) both grids in one sweep (a longer lease)
# A session is lent 15 minutes of device time, a machine start included, so one call of
# at most 600 s fits: `generators`, or `tests bench`, or `downstream` (docs/PERFORMANCE.md).
# The sweep parts share runs/gpu, then project the paper grid from its stage times (issue 8;
# it says what it lacks when the folder holds one part only; parts run in separate leases
# are projected here with `project --from A --from B`) and archive it without weights or
# images.
# Output in $OUT (gpu-out/ when OUT is unset): <part>.log, bench-paper.json,
# <part>.tar.gz, projection-paper.json, and summary.md (scripts/gpu/summarise.py's tables of
# the issues, also printed last, so that the call's output tail holds them even if its files
# do not come back).
# ARGs after -- go to the bench and sweep commands (e.g. --set generator.train_steps=4000;
# the CPU rehearsal in tests/test_gpu_kit.py shrinks both presets this way).
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-gpu-out}
mkdir -p "$OUT"
export HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1 MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false
PYTHON=${PYTHON:-python3}

limit() {  # the part's time limit in seconds; a call's parts end within the tool's 600 s
  local var="PART_LIMIT_$1"
  case $1 in
    tests) echo "${!var:-120}" ;;
    bench) echo "${!var:-420}" ;;
    downstream) echo "${!var:-300}" ;;
    *) echo "${!var:-540}" ;;
  esac
}

install() {  # the carried wheels, once per machine, into .site (ignored by git)
  if [ ! -f .site/.installed ]; then
    if ! ls .whl/*.whl >/dev/null 2>&1; then
      echo "run.sh: no .whl: carry [\".whl\", \".minilm\"] (scripts/gpu/prepare.sh makes them)" >&2
      exit 2
    fi
    "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
      --target .site .whl/*.whl || exit 2
    touch .site/.installed
  fi
  export PYTHONPATH="$PWD/.site:$PWD${PYTHONPATH:+:$PYTHONPATH}"
}

encoder() {  # the float32 encoder restored from the carried packed copy; prints its folder
  if [ ! -f .site/minilm/config.json ]; then
    if [ ! -f .minilm/packed.safetensors ]; then
      echo "run.sh: no .minilm: carry it (scripts/gpu/prepare.sh makes it)" >&2
      exit 2
    fi
    "$PYTHON" -m benchmark.text_encoder_pack unpack .minilm .site/minilm >&2 || exit 2
  fi
  echo "$PWD/.site/minilm"
}

sweep() {  # the gpu preset's sweep into runs/gpu with the part's grid; then project, archive
  local part=$1 seconds=$2 status enc
  shift 2
  enc=$(encoder) || exit 2
  timeout "$seconds" "$PYTHON" -m benchmark sweep --config gpu --out runs/gpu \
    --set generator.text_encoder="$enc" --set downstream.vlseg.text_encoder="$enc" \
    "$@" "${EXTRA[@]}" 2>&1 | tee "$OUT/$part.log"
  status=${PIPESTATUS[0]}
  # Issue 8's projection of the paper grid from the stage times in runs/gpu (same models).
  if "$PYTHON" -m benchmark project --from runs/gpu --config paper --json \
    >"$OUT/projection-paper.json" 2>>"$OUT/$part.log"; then
    "$PYTHON" -m benchmark project --from runs/gpu --config paper | tee -a "$OUT/$part.log"
  else
    rm -f "$OUT/projection-paper.json"
    echo "run.sh: no projection from runs/gpu (its reason is in $part.log)"
  fi
  # What the docs need, without the weights and the images (the 16 MiB a file).
  tar -czf "$OUT/$part.tar.gz" --exclude='*.safetensors' --exclude='*.npy' \
    --exclude='*.npz' --exclude='*.lock' --exclude='*.db' --exclude=mlartifacts \
    -C runs gpu
  return "$status"
}

run_part() {
  local part=$1 seconds status
  seconds=$(limit "$part")
  echo "run.sh: $part (limit ${seconds} s) at $(date -u +%T)"
  case $part in
    tests)
      timeout "$seconds" "$PYTHON" -m pytest -q -p no:cacheprovider -m gpu \
        tests/test_bench.py tests/generators/test_gen_acceleration.py \
        tests/sweeps/test_sweeps_ensemble.py tests/test_precision.py \
        tests/test_training_recipes.py 2>&1 | tee "$OUT/tests.log"
      status=${PIPESTATUS[0]}
      ;;
    bench)
      timeout "$seconds" "$PYTHON" -m benchmark bench --config paper --json \
        "${EXTRA[@]}" >"$OUT/bench-paper.json" 2> >(tee "$OUT/bench.log" >&2)
      status=$?
      ;;
    downstream)
      sweep downstream "$seconds" --set 'grid.also=[]'
      status=$?
      ;;
    generators)
      sweep generators "$seconds" --set 'grid.main=false'
      status=$?
      ;;
    studies)
      sweep studies "$seconds"
      status=$?
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
    tests | bench | downstream | generators | studies) PARTS+=("$1"); shift ;;
    *) echo "run.sh: unknown part '$1' (tests, bench, downstream, generators, studies)" >&2; exit 2 ;;
  esac
done
if [ ${#PARTS[@]} -eq 0 ]; then
  echo "usage: bash scripts/gpu/run.sh PART... [-- ARG...]" \
    "(PART: tests, bench, downstream, generators, studies)" >&2
  exit 2
fi
install
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null || true
FAILED=0
for part in "${PARTS[@]}"; do run_part "$part"; done
if ! "$PYTHON" scripts/gpu/summarise.py "$OUT" >"$OUT/summary.md" 2>&1; then
  echo "run.sh: summarise.py failed (its output is in summary.md)"
fi
cat "$OUT/summary.md"
exit "$FAILED"  # the last failing part's status; every part runs regardless
