#!/usr/bin/env bash
# The Fashion-MNIST reproduction (issue 5): RegionCL-M against MoCo v2 at equal epochs, and MoCo v2
# at twice the epochs, on a 2-core CPU. Each run is scored by kNN every epoch and, at the end, by a
# linear probe on the official test split; the kNN-per-epoch plot goes to $OUT/plots.
#
#   scripts/reproduce_fmnist.sh            # seeds 0 and 1 (about 2 h 20 min on 2 CPU cores)
#   scripts/reproduce_fmnist.sh 0          # one seed
#   RECIPES="fmnist_regioncl_m fmnist_mocov2" scripts/reproduce_fmnist.sh 0 1 2
#
# Re-running it skips finished runs and resumes a killed one from its last checkpoint.
# Extra pretraining options go in PRETRAIN_ARGS (e.g. PRETRAIN_ARGS="--image-size 64" on a GPU:
# give OUT another folder then).
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PYTHON:-python}
OUT=${OUT:-runs/fmnist}
DATA=${DATA:-data/fashion-mnist}
RECIPES=${RECIPES:-"fmnist_regioncl_m fmnist_mocov2 fmnist_mocov2_2x"}
SEEDS=${*:-0 1}
# The probe: MoCo's schedule (100 epochs, steps at 60 and 80, batch 256) on cached, standardised
# features (BatchNorm without affine, as MAE's probe) at lr 0.1: one lr for encoders of any feature scale.
PRETRAIN_ARGS=${PRETRAIN_ARGS:-}
PROBE_ARGS=${PROBE_ARGS:-"--no-augment --standardize --lr 0.1 --image-size 32 --crop-pct 1.0"}

[ -d "$DATA/train" ] && [ -d "$DATA/test" ] || "$PY" scripts/prepare_fashion_mnist.py "$DATA"
mkdir -p "$OUT"
runs=()
for seed in $SEEDS; do
  for recipe in $RECIPES; do
    run="$OUT/${recipe#fmnist_}_s$seed"
    runs+=("$run")
    if [ ! -f "$run/result.json" ]; then
      resume=()
      ls "$run"/checkpoints/step_* >/dev/null 2>&1 && resume=(--resume latest)
      echo "== pretrain $recipe seed $seed → $run ${resume[*]}"
      # shellcheck disable=SC2086  # PRETRAIN_ARGS is a list of options
      "$PY" scripts/pretrain.py --config "$recipe" --seed "$seed" --output-dir "$run" \
        --knn-train-data "$DATA/train" --knn-val-data "$DATA/test" --data "$DATA/train" \
        "${resume[@]}" $PRETRAIN_ARGS > "$run.result.tmp"
      mv "$run.result.tmp" "$run/result.json"
    fi
    if [ ! -f "$run/linear.json" ]; then
      echo "== linear probe $run"
      # shellcheck disable=SC2086
      "$PY" scripts/linear_probe.py "$run" --train-data "$DATA/train" --val-data "$DATA/test" \
        $PROBE_ARGS --seed "$seed" | tail -n 1 > "$run.linear.tmp"
      mv "$run.linear.tmp" "$run/linear.json"
    fi
  done
done
"$PY" scripts/plot.py "${runs[@]}" --out "$OUT/plots"
"$PY" scripts/summarize_runs.py "${runs[@]}" --json "$OUT/summary.json" | tee "$OUT/summary.md"
