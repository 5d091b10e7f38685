#!/usr/bin/env bash
# What limits pretraining for new scenes (setting (i) of the held-out CamVid benchmark)? DenseCL
# at its small-data recipe with one thing changed at a time, each pretrained on the new-scenes
# pool or a subset of it, then fine-tuned and probed at 10% of the labels like the main rows:
#
#   quarter   92 of the 367 frames, evenly spaced   same 902 steps (4x the epochs)
#   half      184 of the 367 frames, evenly spaced  same 902 steps
#   onedrive  184 frames of drive 0016E5 only       same 902 steps (half's count, one drive)
#   long      all 367 frames                        1804 steps (twice the length)
#   large     all 367 frames                        224 px views (160 in the recipe)
#
# Rows join the held-out benchmark's rows file as setting "quarter", "half", ...; compare them
# with its DenseCL setting (i) row at the same seed. Restartable like the other drivers.
#
#   bash benchmarks/camvid_limits_benchmark.sh ../shared/data/camvid runs/heldout 0
set -euo pipefail

data=${1:?CamVid folder}
out=${2:?output folder}
seed=${3:-0}
python=${PYTHON:-python}

# shellcheck source=benchmarks/camvid_runs.sh
source "$(dirname "$0")/camvid_runs.sh"
"$python" "$here/camvid_heldout.py" --data "$data" --out "$out/split" \
    --subsets quarter=25% half=50% onedrive=50%:0016E5

base=${PRETRAIN_ARGS:-}
# A queue of at most one epoch of keys, as the recipe asks: 64 and 128 for 92 and 184 frames.
PRETRAIN_ARGS="steps=902 method.queue_size=64 $base" pretrain_and_finetune densecl quarter "$seed"
PRETRAIN_ARGS="steps=902 method.queue_size=128 $base" pretrain_and_finetune densecl half "$seed"
PRETRAIN_ARGS="steps=902 method.queue_size=128 $base" \
    pretrain_and_finetune densecl onedrive "$seed"
POOL=new PRETRAIN_ARGS="steps=1804 $base" pretrain_and_finetune densecl long "$seed"
POOL=new PRETRAIN_ARGS="data.image_size=224 $base" pretrain_and_finetune densecl large "$seed"
