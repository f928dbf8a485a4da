#!/usr/bin/env bash
# Train the Food-Kitchen comparison runs side by side and build the results page from them:
#   ABXI                          the base model
#   ABXI_GCA                      ABXI + gated cross-attention
#   ABXI_pm                       ABXI widened to ABXI_GCA's parameter count (--param_match)
#   ABXI_pernegs                  ABXI with per-position negatives (official sampling) instead of shared ones
# Usage (repository root):  benchmarks/food_kitchen_runs.sh OUT_DIR [--key=value ...]
#   e.g. benchmarks/food_kitchen_runs.sh results/runs --time_budget_s=3600
# Extra --key=value settings go to every run. PYTHON selects the interpreter (default: python).
set -euo pipefail
out=${1:?usage: benchmarks/food_kitchen_runs.sh OUT_DIR [--key=value ...]}
shift
PY=${PYTHON:-python}
RUNS=${RUNS:-"ABXI ABXI_GCA ABXI_pm ABXI_pernegs"}
mkdir -p "$out"
# build the dataset (and its cache) once before the parallel runs
$PY - <<'PY'
import sys
sys.argv = ['prepare']
from recbole.utils import init_logger
from recbole_ortho.config import Config
from recbole_ortho.data import create_dataset
c = Config(model='ABXI', dataset='food_kitchen')
create_dataset(c)
PY
declare -A ARGS=(
  [ABXI]="--model=ABXI"
  [ABXI_GCA]="--model=ABXI_GCA"
  [ABXI_pm]="--model=ABXI --param_match=ABXI_GCA"
  [ABXI_pernegs]="--model=ABXI --shared_negatives=False"
)
pids=()
for name in $RUNS; do
  # shellcheck disable=SC2086
  $PY run_recbole_ortho.py --dataset=food_kitchen ${ARGS[$name]} --show_progress=False \
      --result_file="$out/$name.json" --checkpoint_dir="$out/saved_$name" \
      --tensorboard_dir="$out/tb_$name" "$@" > "$out/$name.log" 2>&1 &
  pids+=($!)
  sleep 2   # distinct log file names (RecBole names them by the second)
done
fail=0
for p in "${pids[@]}"; do wait "$p" || fail=1; done
$PY benchmarks/make_results.py "$out" > "$out/food_kitchen.md"
exit $fail
