#!/usr/bin/env bash
# The prepared check for a lent GPU (benchmarks/gpu_check.py), ready for a machine that reaches no
# package registry: when the environment lacks regioncl's requirements, they are installed from the
# wheel bundle (.bundle/, made beforehand by scripts/wheel_bundle.py and carried with the tree) into
# a target folder, with --no-index; a registry is asked only where there is no bundle and one
# answers. With Fashion-MNIST's IDX files in the bundle, the fmnist stage's folders are written first.
#
#   scripts/gpu_check.sh OUT_DIR [options of benchmarks/gpu_check.py, e.g. --dry-run --device cpu]
#
# Every stage's record lands in OUT_DIR/gpu_check.json as soon as it is known; a stage whose
# packages could not be had says so there, and the others run.
set -uo pipefail
cd "$(dirname "$0")/.."
out=${1:?usage: scripts/gpu_check.sh OUT_DIR [options]}
shift
py=${PYTHON:-python3}
bundle=${REGIONCL_BUNDLE:-.bundle}
needs="import accelerate, timm, safetensors, jsonargparse, docstring_parser, datasets, yaml, tqdm"
if ! $py -c "$needs" 2>/dev/null; then
  if compgen -G "$bundle/*.whl" >/dev/null; then
    site=${REGIONCL_SITE:-${TMPDIR:-/tmp}/regioncl-site}
    start=$EPOCHREALTIME
    if $py -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --disable-pip-version-check \
        --upgrade --target "$site" "$bundle"/*.whl; then
      export PYTHONPATH="$site${PYTHONPATH:+:$PYTHONPATH}"
      export REGIONCL_BUNDLE_INSTALL_S=$($py -c "import sys; print(round(float(sys.argv[2]) - float(sys.argv[1]), 2))" \
                                        "$start" "$EPOCHREALTIME")
      echo "installed $(ls "$bundle"/*.whl | wc -l) wheels from $bundle into $site in ${REGIONCL_BUNDLE_INSTALL_S} s"
    else
      echo "gpu_check: the bundle's wheels did not install; going on with what is here" >&2
    fi
  elif [ -z "${PIP_NO_INDEX:-}" ] && $py - <<'EOF' 2>/dev/null
import urllib.request
urllib.request.urlopen("https://pypi.org/simple/pip/", timeout=5)
EOF
  then
    make venv && py=.venv/bin/python
  else
    echo "gpu_check: regioncl's requirements are missing, there is no wheel bundle ($bundle) and no registry;" \
         "make one here with: python scripts/wheel_bundle.py (stages that need them will say so)" >&2
  fi
fi
if [ -f "$bundle/fashion-mnist/train-images-idx3-ubyte.gz" ] && [ ! -d data/fashion-mnist/train ]; then
  $py scripts/prepare_fashion_mnist.py data/fashion-mnist --source "$bundle/fashion-mnist" >/dev/null \
    || echo "gpu_check: could not write data/fashion-mnist from the bundle" >&2
fi
PYTHONUNBUFFERED=1 REGIONCL_BUNDLE="$bundle" $py -m benchmarks.gpu_check "$out" "$@"
