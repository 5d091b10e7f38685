#!/usr/bin/env bash
# The held-out CamVid fine-tune benchmark end to end: the split, every pretraining run, the
# fine-tunes and frozen probes at 10% of the labels, random init first, then setting (i) and
# setting (ii) seed by seed, and last the fine-tunes at 100% of the labels at the first seed
# (about two CPU hours each). Each step is skipped when its output exists (a finished run has
# summary.json; a fine-tune is a row in the rows file, and a run whose rows are there is not
# pretrained again), and an interrupted pretraining or fine-tune continues from its saved
# state, so the script can be stopped (Ctrl-C, SIGTERM) and started again at any point.
#
#   bash benchmarks/camvid_heldout_benchmark.sh ../shared/data/camvid runs/heldout 0 1 2
#   python benchmarks/camvid_finetune.py --out runs/heldout/finetune_rows.json --summary
#
# PRETRAIN_ARGS (config overrides, e.g. "steps=20") and FINETUNE_ARGS (camvid_finetune.py flags,
# e.g. "--set iterations=5") are added to every pretraining run and every fine-tune. SETTINGS
# picks and orders the settings ("new all" by default; "all" runs setting (ii) alone).
set -euo pipefail

data=${1:?CamVid folder}
out=${2:?output folder}
shift 2
seeds=("${@:-0}")
python=${PYTHON:-python}

# shellcheck source=benchmarks/camvid_runs.sh
source "$(dirname "$0")/camvid_runs.sh"

finetune --inits random --seeds "${seeds[@]}"
finetune --inits random --seeds "${seeds[@]}" --protocol probes
for setting in ${SETTINGS:-new all}; do
    for seed in "${seeds[@]}"; do
        for method in densecl mocov2; do
            pretrain_and_finetune "$method" "$setting" "$seed"
        done
    done
done
for init in random "$out"/runs/{densecl,mocov2}_{all,new}_s"${seeds[0]}"; do
    LABELS=100% finetune --inits "$init" --seeds "${seeds[0]}"
done
