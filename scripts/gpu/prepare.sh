#!/usr/bin/env bash
# Run here (the CPU machine), once per checkout, before the GPU checks (scripts/gpu/run.sh):
# fills the two folders the device tool carries (.gitignore ignores both; each call may carry
# 64 MiB with the working tree, so each goes with its own call):
#   .whl/     wheels of scripts/gpu/wheels.txt for the GPU image's Python 3.12, pinned to the
#             versions installed here (about 30 MB)
#   .minilm/  the packaged MiniLM prompt encoder with float16 weights (about 44 MB; its wheel
#             is 80 MB): run.sh restores float32 before use, so its embeddings differ from
#             the packaged model's by the rounding of the weights to float16 only
set -euo pipefail
cd "$(dirname "$0")/../.."

names=$(grep -v '^#' scripts/gpu/wheels.txt | grep -v '^$')
pins=$(python - $names <<'EOF'
import sys
from importlib.metadata import PackageNotFoundError, version

missing = []
for name in sys.argv[1:]:
    try:
        print(f"{name}=={version(name)}")
    except PackageNotFoundError:
        missing.append(name)
if missing:
    sys.exit(f"prepare.sh: not installed here: {' '.join(missing)} (pip install -e '.[dev]')")
EOF
)

rm -rf .whl && mkdir .whl
platforms=""
for p in manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_17_x86_64 manylinux2014_x86_64 manylinux1_x86_64; do
  platforms="$platforms --platform $p"
done
# shellcheck disable=SC2086 # word splitting of the lists is intended
python -m pip download --quiet --disable-pip-version-check --no-deps --only-binary=:all: \
  --python-version 3.12 --implementation cp $platforms -d .whl $pins

rm -rf .minilm
HF_HUB_OFFLINE=1 python - <<'EOF'
import torch
from transformers import AutoModel, AutoTokenizer

from benchmark.text_encoder import encoder_path

source = encoder_path("minilm")
model = AutoModel.from_pretrained(source, dtype=torch.float32)
model.half().save_pretrained(".minilm", safe_serialization=True)
AutoTokenizer.from_pretrained(source).save_pretrained(".minilm")
EOF

limit=$((60 * 1024 * 1024))  # under the 64 MiB a call carries, with room for the tree
for d in .whl .minilm; do
  size=$(du -sb "$d" | cut -f1)
  echo "prepare.sh: $d $((size / 1024 / 1024)) MiB ($(ls "$d" | wc -l) files)"
  if [ "$size" -gt "$limit" ]; then
    echo "prepare.sh: $d is over 60 MiB: too large to carry with the working tree" >&2
    exit 1
  fi
done
