#!/usr/bin/env bash
# The one-shot GPU check, prepared to run in about 9 minutes on one H100/H200-class GPU (plus a
# 2-process DDP run over NCCL where there are 2 GPUs). Run from the repository root:
#
#     bash benchmarks/gpu_check.sh            # results under $OUT (default /tmp/gpu_check)
#
# Every part has its own time limit, so one that hangs cannot eat the others' time; the
# summary at the end says which passed. Figures go to BENCHMARKS.md ("GPU rows").
set -u
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
OUT=${OUT:-/tmp/gpu_check}
mkdir -p "$OUT"
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
WORKERS=$(( $(nproc) - 2 ))
summary=()
part() {  # part NAME SECONDS COMMAND...: run with a limit, log to $OUT/NAME.log
    local name=$1 limit=$2; shift 2
    local start=$SECONDS
    timeout --kill-after=10 "$limit" "$@" > "$OUT/$name.log" 2>&1
    local rc=$?
    summary+=("$name: rc $rc, $((SECONDS - start)) s")
    tail -n 4 "$OUT/$name.log"
}

nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv > "$OUT/gpus.csv" 2>&1
GPUS=$($PY -c "import torch; print(torch.cuda.device_count())")
cat "$OUT/gpus.csv"

# 1. The GPU tests (bf16/fp16/fp32 steps, nvJPEG decode, compiled step): ~2 min.
part test_gpu 180 $PY -m pytest -q -p no:cacheprovider -m gpu tests/test_gpu.py
# 2. Model only, batch 256, bf16 autocast, channels_last: eager, then compiled: ~2.5 min.
part throughput_model 100 $PY benchmarks/throughput.py --rows model --steps 20 --warmup 10
part throughput_model_compile 150 $PY benchmarks/throughput.py --rows model --compile \
    --steps 20 --warmup 15
# 3. From a JPEG folder through the loader: CPU decode, then nvJPEG decode: ~2.5 min.
part throughput_folder 80 $PY benchmarks/throughput.py --rows folder --workers "$WORKERS" \
    --images 2048 --steps 20 --warmup 5
part throughput_folder_nvjpeg 80 $PY benchmarks/throughput.py --rows folder --decode gpu \
    --workers "$WORKERS" --images 2048 --steps 20 --warmup 5
# 4. The same JPEGs as tar shards, CPU decode: ~1 min.
part throughput_shards 80 $PY benchmarks/throughput.py --rows shards --workers "$WORKERS" \
    --images 2048 --steps 20 --warmup 5
# 5. Two processes over NCCL (only with 2 GPUs): ~1 min.
if [ "$GPUS" -ge 2 ]; then
    part ddp_nccl 120 $PY -m torch.distributed.run --nproc_per_node=2 -m densessl.cli pretrain \
        --method densecl --out "$OUT/ddp_run" backbone=resnet50 batch_size=128 steps=30 \
        data.synthetic_images=4096 data.workers=4 log_every=10 batch_norm=shuffle
else
    summary+=("ddp_nccl: skipped, $GPUS GPU(s)")
fi

printf '%s\n' "${summary[@]}" | tee "$OUT/summary.txt"
