#!/usr/bin/env bash
# Run here (the CPU machine), once per checkout, before the GPU checks (scripts/gpu/run.sh):
# fills the two folders every device call carries (.gitignore ignores both), together with
# the working tree under the tool's 64 MiB a call:
#   .whl/     wheels of scripts/gpu/wheels.txt and their requirements the image lacks
#             (scripts/gpu/carried.py), for its Python 3.12, pinned to the versions
#             installed here (about 28 MiB)
#   .minilm/  the packaged MiniLM prompt encoder, packed by benchmark.text_encoder_pack:
#             float16 weights and only the word-embedding rows a prompt can use (about
#             22 MiB; its wheel is 80 MB). run.sh restores a float32 model folder whose
#             states equal those of the packaged model with its weights rounded to float16.
set -euo pipefail
cd "$(dirname "$0")/../.."

# wheels.txt's names and what their installed versions require that the image lacks
# (scripts/gpu/carried.py), each pinned to the version installed here.
pins=$(python scripts/gpu/carried.py)

rm -rf .whl && mkdir .whl
platforms=""
for p in manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_17_x86_64 manylinux2014_x86_64 manylinux1_x86_64; do
  platforms="$platforms --platform $p"
done
# shellcheck disable=SC2086 # word splitting of the lists is intended
python -m pip download --quiet --disable-pip-version-check --no-deps --only-binary=:all: \
  --python-version 3.12 --implementation cp $platforms -d .whl $pins

rm -rf .minilm
HF_HUB_OFFLINE=1 python -m benchmark.text_encoder_pack pack minilm .minilm

limit=$((60 * 1024 * 1024))  # the 64 MiB a call carries, less room for files made meanwhile
tree=$( (git ls-files -z --cached --others --exclude-standard | xargs -0 du -cb 2>/dev/null ||
  true) | awk '$2 == "total" {n += $1} END {print n + 0}')
total=$tree
for d in .whl .minilm; do
  size=$(du -sb "$d" | cut -f1)
  total=$((total + size))
  echo "prepare.sh: $d $((size / 1024 / 1024)) MiB ($(ls "$d" | wc -l) files)"
done
echo "prepare.sh: the working tree $((tree / 1024 / 1024)) MiB; a call carries $((total / 1024 / 1024)) MiB"
if [ "$total" -gt "$limit" ]; then
  echo "prepare.sh: over 60 MiB: too large for one call of the device tool" >&2
  exit 1
fi
