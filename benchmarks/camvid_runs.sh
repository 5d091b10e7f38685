# Sourced by the CamVid benchmark drivers, which set data, out and python: the held-out split
# and the pretraining runs they share, each skipped when it exists, so the drivers can be
# stopped and started again. PRETRAIN_ARGS (config overrides, e.g. "steps=20") is added to
# every pretraining run, FINETUNE_ARGS (camvid_finetune.py flags, e.g. "--set iterations=5") to
# every fine-tune. Sets here, the benchmarks folder, and finetune_rows, the fine-tune rows file.

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

[ -d "$out/split" ] || "$python" "$here/camvid_heldout.py" --data "$data" --out "$out/split"

finetune_rows=$out/finetune_rows.json

# shellcheck source=benchmarks/pretrain_once.sh
source "$here/pretrain_once.sh"

pretrain() {  # method setting seed: OUT/runs/<method>_<setting>_s<seed>, resumed if cut short,
    # on OUT/split/pool_<setting>, or pool_$POOL when POOL is set
    # shellcheck disable=SC2086
    pretrain_once "$out/runs/$1_$2_s$3" "$1" "$out/split/pool_${POOL:-$2}" "seed=$3" \
        ${PRETRAIN_ARGS:-}
}

finetune() {  # camvid_finetune.py flags: rows at 10% of the labels (LABELS), into the rows file
    # shellcheck disable=SC2086
    "$python" "$here/camvid_finetune.py" --split "$out/split" --labels "${LABELS:-10%}" \
        --out "$finetune_rows" "$@" ${FINETUNE_ARGS:-}
}

has_row() {  # method setting seed [protocol]: the row is in the rows file
    local key="$1 $2 labels=10% seed=$3${4:+ $4}"
    [ -f "$finetune_rows" ] && "$python" -c \
        'import json, sys; sys.exit(sys.argv[2] not in json.load(open(sys.argv[1])))' \
        "$finetune_rows" "$key"
}

pretrain_and_finetune() {  # method setting seed: pretrained, fine-tuned and probed, once
    has_row "$1" "$2" "$3" probes && return
    pretrain "$1" "$2" "$3"
    finetune --inits "$out/runs/$1_$2_s$3" --seeds "$3"
    finetune --inits "$out/runs/$1_$2_s$3" --seeds "$3" --protocol probes
}
