#!/usr/bin/env bash
# The CamVid detection benchmark end to end: the held-out split and its boxes, SoCo, MCL and BYOL
# pretrained at their small-data recipes, then every init fine-tuned as a detector at 100% and
# 10% of the labels, setting (i) then setting (ii), seed by seed. Random init gets the same
# fine-tune seeds. Steps whose output exists are skipped (a finished run has summary.json; a
# fine-tune is a row in the rows file) and an interrupted pretraining resumes, so the script can
# be stopped and started again at any point. It shares OUT with camvid_heldout_benchmark.sh: a
# pretraining run of one is not repeated by the other.
#
#   bash benchmarks/camvid_detection_benchmark.sh ../shared/data/camvid runs/heldout 600 0 1
#   python benchmarks/camvid_detect.py --out runs/heldout/detect_rows.json --summary
#
# ITERATIONS is the same for every row. MCL runs at the first seed only. PRETRAIN_ARGS and
# DETECT_ARGS (camvid_detect.py flags) are added to every pretraining and every fine-tune.
set -euo pipefail

data=${1:?CamVid folder}
out=${2:?output folder}
iterations=${3:?detector iterations}
shift 3
seeds=("${@:-0}")
python=${PYTHON:-python}
rows=$out/detect_rows.json

# shellcheck source=benchmarks/camvid_runs.sh
source "$(dirname "$0")/camvid_runs.sh"
[ -f "$out/boxes/val/annotations.json" ] \
    || "$python" "$here/camvid_boxes.py" --data "$out/split/seg" --out "$out/boxes"

detect() {
    # shellcheck disable=SC2086
    "$python" "$here/camvid_detect.py" --boxes "$out/boxes" --labels 100% 10% \
        --iterations "$iterations" --out "$rows" "$@" ${DETECT_ARGS:-}
}

has_rows() {  # method setting seed: both label fractions are in the rows file
    [ -f "$rows" ] && "$python" -c '
import json, sys
done = json.load(open(sys.argv[1]))
sys.exit(not all(f"{sys.argv[2]} labels={f} seed={sys.argv[3]}" in done for f in ("100%", "10%")))
' "$rows" "$1 $2" "$3"
}

detect --inits random --seeds "${seeds[@]}"
for setting in new all; do
    for seed in "${seeds[@]}"; do
        for method in soco byol mcl; do
            [ "$method" = mcl ] && [ "$seed" != "${seeds[0]}" ] && continue
            has_rows "$method" "$setting" "$seed" && continue
            pretrain "$method" "$setting" "$seed"
            detect --inits "$out/runs/${method}_${setting}_s$seed" --seeds "$seed"
        done
    done
done
