# Sourced by the CamVid benchmark drivers, which set data, out and python: the held-out split
# and the pretraining runs they share, each skipped when it exists, so the drivers can be
# stopped and started again. PRETRAIN_ARGS (config overrides, e.g. "steps=20") is added to
# every pretraining run. Sets here, the benchmarks folder.

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

[ -d "$out/split" ] || "$python" "$here/camvid_heldout.py" --data "$data" --out "$out/split"

pretrain() {  # method setting seed: OUT/runs/<method>_<setting>_s<seed>, resumed if cut short
    local run=$out/runs/$1_$2_s$3 resume=()
    [ -f "$run/summary.json" ] && return
    [ -d "$run" ] && resume=(--resume)
    # shellcheck disable=SC2086
    "$python" -m densessl pretrain --method "$1" --config "$1_small_data" \
        --data "$out/split/pool_$2" --out "$run" "${resume[@]}" "seed=$3" ${PRETRAIN_ARGS:-}
}
