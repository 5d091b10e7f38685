#!/usr/bin/env bash
# The installed package works on its own, as a user who never clones gets it: build the sdist
# and, from it, the wheel; install the wheel into a fresh virtual environment outside the
# checkout; run the first commands from a folder that is not the checkout. A file the package
# reads but the wheel lacks (a recipe, a reference table) fails one of them.
#
# The new environment sees the test environment's packages (the suite's own pinned versions, no
# download) through a .pth line; .pth files there are not read, so the checkout's editable
# install stays invisible and densessl comes from the wheel alone (checked below).
#
# --full (by hand, about ten minutes on 2 cores): the demo at full length, and every README
# command that needs no data of the user's, on the built-in scenes.
set -euo pipefail
full=false
[ "${1:-}" = "--full" ] && full=true
cd "$(dirname "$0")/.."
checkout=$(pwd)
python=${PYTHON:-.venv/bin/python}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

"$python" -m build --outdir "$work/dist" . > "$work/build.log" 2>&1 \
  || { cat "$work/build.log"; exit 1; }
"$python" -m venv --without-pip "$work/env"
site() { "$1" -c "import sysconfig; print(sysconfig.get_paths()['purelib'])"; }
site "$python" > "$(site "$work/env/bin/python")/suite-dependencies.pth"
"$python" -m pip --python "$work/env/bin/python" install --quiet --no-deps --no-index \
  "$work"/dist/densessl-*.whl

cd "$work"
export PATH="$work/env/bin:$PATH"
installed=$(python -c "import densessl; print(densessl.__file__)")
case "$installed" in
  "$work/env/"*) ;;
  *) echo "densessl was imported from $installed, not from the wheel"; exit 1 ;;
esac
case "$installed" in "$checkout"*) echo "imported from the checkout"; exit 1 ;; esac
tiny=(backbone=resnet18 batch_size=8 data.image_size=64 data.synthetic_images=16
      data.synthetic_size=80 data.workers=0 method.queue_size=16 device=cpu)
set -x
densessl --version
python -m densessl --help > /dev/null
densessl list > list.txt
grep -q "densecl_small_data" list.txt
densessl pretrain --method densecl --config densecl_small_data --steps 2 --out run "${tiny[@]}"
densessl export run --format torchvision --out backbone.pt
# tar shards written and read by the installed package
densessl data synthetic --format seg --out seg --num-images 16 --image-size 80
densessl data shards --data seg/train/images --out shards --shard-size 8
densessl pretrain --method densecl --data 'shards/shard-{000000..000001}.tar' --steps 1 \
  --out run_shards "${tiny[@]}"
if ! $full; then
  densessl demo --quick --out demo
  test -s demo/report.md
  exit 0
fi
time densessl demo --out demo
test -s demo/report.md
# The README's commands, with the built-in scenes in place of the user's data.
densessl pretrain --method densecl --backbone resnet18 --out runs/mine --steps 2 \
  batch_size=8 data.image_size=64 data.workers=0 method.queue_size=16 device=cpu
densessl pretrain --out runs/mine --resume --steps 3
for format in torchvision timm smp detectron2 mmdet safetensors; do
  densessl export runs/mine --format "$format" --out "backbone.$format"
done
densessl eval linear-seg --weights runs/mine --json scores.json
densessl eval knn-seg --weights runs/mine
densessl eval linear-seg --weights random --backbone resnet18
densessl eval linear-seg --weights pixels
densessl eval finetune-seg --weights runs/mine --labels 10% --compare random --seeds 1 \
  --iterations 20 --crop-size 128 --json finetune.json
densessl eval detect --weights runs/mine --model mask_rcnn --iterations 4 --batch-size 2
test -s scores.json && test -s finetune.json
