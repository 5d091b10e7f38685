"""The collapse thresholds of densessl.health, measured: runs known to collapse against one that
does not, on the built-in aerial scenes, with a health check every few steps.

DINO's paper names the two ways its teacher collapses (Caron et al. 2021, section 5.3, figure
7): without centring every image goes to one dimension, without sharpening to the uniform
distribution. So the runs are DINO's small-data recipe as shipped (healthy), the same without
centring (``method.center_momentum=1``: the centre stays at zero), and the same without
sharpening (teacher temperature = the student's 0.1), plus SelfPatch's small-data recipe.
Each run's checks go to its metrics.jsonl; the script prints each measure's range over the last
half of every run, and every measure again on the final checkpoint (so a measure added after
the runs were trained is read from them too).

    python benchmarks/health_thresholds.py --out runs/health --steps 120
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from densessl.config import build_config
from densessl.engine.health_check import held_batch, measure
from densessl.engine.setup import build_source, optim_schedules, steps_per_epoch, total_steps
from densessl.engine.step import step_state
from densessl.engine.train import train
from densessl.health import MEASURES
from densessl.methods import get_method
from densessl.recipes import RECIPES_DIR
from densessl.runs import open_run
from densessl.schedules import RunLength

SCENES = ("data.scenes=aerial", "data.synthetic_images=1024", "data.synthetic_size=160")
RUNS = {
    "dino": ("dino", ()),
    "dino_no_centring": ("dino", ("method.center_momentum=1.0",)),
    "dino_no_sharpening": ("dino", ("method.teacher_temp=0.1", "method.warmup_teacher_temp=0.1")),
    "selfpatch": ("selfpatch", ()),
}


def run(name: str, out: Path, steps: int, every: int) -> list[dict]:
    method, overrides = RUNS[name]
    folder = out / name
    if not (folder / "summary.json").is_file():
        settings = [*SCENES, f"steps={steps}", f"health_every={every}", f"out={folder}",
                    "data.workers=2", "checkpoint_every=1000", *overrides]  # fmt: skip
        recipe = RECIPES_DIR / f"{method}_small_data.yaml"
        train(build_config(get_method(method), recipe, overrides=settings))
    lines = (folder / "metrics.jsonl").read_text().splitlines()
    return [r for r in map(json.loads, lines) if "effective_rank" in r]


def final_check(folder: Path) -> dict[str, float]:
    """Every health measure of the run's final checkpoint, on the run's own held batch."""
    method, cfg = open_run(folder)
    source = build_source(cfg)
    run = RunLength(total_steps(cfg, len(source)), steps_per_epoch(cfg, len(source)))
    schedules = {**optim_schedules(cfg, run.steps_per_epoch), **method.schedules()}
    state = step_state(run.total_steps - 1, schedules, run)
    return measure(method, held_batch(source, cfg.data.image_size), state)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("runs/health"))
    parser.add_argument("--steps", type=int, default=120)
    parser.add_argument("--every", type=int, default=10)
    parser.add_argument("--runs", nargs="+", default=list(RUNS), choices=list(RUNS))
    args = parser.parse_args()
    print("| run | " + " | ".join(MEASURES.values()) + " |")
    print("|---|" + "---|" * len(MEASURES))
    for name in args.runs:
        checks = run(name, args.out, args.steps, args.every)
        late = checks[len(checks) // 2 :]
        final = final_check(args.out / name)
        cells = []
        for key in MEASURES:
            values = [r[key] for r in late if key in r]
            span = f"{min(values):.3f} - {max(values):.3f}; " if values else ""
            cells.append(f"{span}end {final[key]:.3f}" if key in final else "—")
        print(f"| {name} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
