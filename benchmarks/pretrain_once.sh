# Sourced by the benchmark drivers (which set python): one pretraining run that a driver can be
# stopped and started around. A finished run (it has summary.json) is skipped, a run cut short
# resumes from its last checkpoint, and a missing one starts.

pretrain_once() {  # run method data [config overrides...], at the method's small-data recipe
    local run=$1 method=$2 data=$3 resume=()
    shift 3
    [ -f "$run/summary.json" ] && return
    [ -d "$run" ] && resume=(--resume)
    "$python" -m densessl pretrain --method "$method" --config "${method}_small_data" \
        --data "$data" --out "$run" "${resume[@]}" "$@"
}
