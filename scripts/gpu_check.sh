#!/usr/bin/env bash
# The prepared check for a lent GPU (benchmarks/gpu_check.py): set up with the project's install
# command unless the environment already has regioncl's dependencies, then run every stage.
#
#   scripts/gpu_check.sh OUT_DIR [options of benchmarks/gpu_check.py, e.g. --dry-run --device cpu]
#
# Every stage's record lands in OUT_DIR/gpu_check.json as soon as it is known.
set -uo pipefail
cd "$(dirname "$0")/.."
out=${1:?usage: scripts/gpu_check.sh OUT_DIR [options]}
shift
py=python3
if ! $py -c "import regioncl.train.trainer, accelerate, timm, jsonargparse" 2>/dev/null; then
  make venv && py=.venv/bin/python
fi
PYTHONUNBUFFERED=1 $py -m benchmarks.gpu_check "$out" "$@"
