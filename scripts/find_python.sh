#!/usr/bin/env bash
# Print the first interpreter of Python X.Y that runs, or exit 1 if there is none:
#   bash scripts/find_python.sh 3.13
# `pythonX.Y` on PATH first, then pyenv's installs (its shim answers for the global version
# only, so the name can exist and still not run). Used by .ci/run and scripts/gpu/twin.sh.
set -uo pipefail
want=${1:?usage: find_python.sh X.Y}
for candidate in "python$want" "$HOME"/.pyenv/versions/"$want".*/bin/"python$want"; do
  if "$candidate" -c "import sys; assert '%d.%d' % sys.version_info[:2] == '$want'" 2>/dev/null; then
    echo "$candidate"
    exit 0
  fi
done
exit 1
