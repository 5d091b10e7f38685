#!/usr/bin/env bash
# Short screens of SelfPatch's small-data recipe, one change at a time, read by the run health
# checks (teacher entropy and diversity, effective rank, spread) instead of a probe: the
# teacher's entropy falls from the first checks of a collapsing run, so a short run ranks the
# changes. DINO at its own small-data recipe is the first row, the base SelfPatch is measured
# against. Each screen is a whole run of STEPS steps (its schedules compressed to that length),
# so compare screens with each other, not with a full run. A finished screen is skipped and one
# cut short resumes; the health table is printed at the end. SCREEN_ARGS (config overrides) is
# added to every screen, e.g. to shrink them for a smoke test.
#
#   bash benchmarks/selfpatch_screen.sh runs/heldout/split/pool_new runs/selfpatch_screen 120
set -euo pipefail

pool=${1:?folder of pretraining images}
out=${2:?output folder}
steps=${3:-120}
python=${PYTHON:-python}

screens=(  # tag method overrides...
    "dino dino"
    "base selfpatch"
    "momentum0996 selfpatch method.momentum=0.996"
    "teachertemp002 selfpatch method.teacher_temp=0.02 method.warmup_teacher_temp=0.02"
    "freelastlayer selfpatch method.norm_last_layer=false"
    "centre099 selfpatch method.center_momentum=0.99"
    "centre097 selfpatch method.center_momentum=0.97"
    "centre095 selfpatch method.center_momentum=0.95"
    "dinocentre097 dino method.center_momentum=0.97"
    "dinocentre099 dino method.center_momentum=0.99"
    "lr5e4 selfpatch optim.base_lr=5e-4"
    "prototypes1024 selfpatch method.out_dim=1024 method.patch_out_dim=1024"
    "teachertemp007 selfpatch method.teacher_temp=0.07 method.warmup_teacher_temp=0.07"
    "warmup10 selfpatch optim.warmup_epochs=10"
    "nopatchloss selfpatch method.patch_loss_weight=0"
    "patchweight05 selfpatch method.patch_loss_weight=0.5"
    "clamp selfpatch method.border=clamp"
    "neighbours2 selfpatch method.neighbours=2"
)

# shellcheck source=benchmarks/pretrain_once.sh
source "$(dirname "$0")/pretrain_once.sh"

for screen in "${screens[@]}"; do
    read -r tag method overrides <<< "$screen"
    # shellcheck disable=SC2086
    pretrain_once "$out/$tag" "$method" "$pool" "steps=$steps" "health_every=$((steps / 6))" \
        $overrides ${SCREEN_ARGS:-}
done

for screen in "${screens[@]}"; do
    read -r tag method overrides <<< "$screen"
    echo "== $tag ($method${overrides:+, $overrides})"
    "$python" -m densessl health "$out/$tag" || true
done
