"""Seed spread of the demo comparison: is a margin of the demo a ranking, or noise?

Runs the whole ``make demo`` comparison (DenseCL and MoCo-v2 pretrained with the demo recipe,
then probed beside random init and raw pixels on held-out aerial scenes) once per seed. The seed
changes the pretraining scenes, the pretraining's random draws, the held-out probe scenes and
the probes' own random choices. Writes every row's and every margin's mean and standard
deviation (over seeds, ``ddof=1``) to benchmarks/results/demo_seeds.json, which the demo's report
reads, and prints a Markdown table for BENCHMARKS.md.

    python benchmarks/demo_seeds.py --seeds 0 1 2          # 17 minutes on 2 AMD EPYC cores
    python benchmarks/demo_seeds.py --probe-size 256 --results \
        benchmarks/results/demo_seeds_probe256.json         # the same runs, probed at 256 px
    python benchmarks/demo_seeds.py --recipe benchmarks/recipes/aerial_demo_96px.yaml \
        --results benchmarks/results/demo_seeds_96px.json  # the demo's recipe until 2026-11-30

Probing larger renders of the same held-out scenes measures how much the probe's grid limits
the demo (BENCHMARKS.md); such results go to their own file, since the report reads the default
one (and flags a probe size other than its own).

Runs already in ``--out`` are reused: a seed's scores at this probe size (``scores.json`` at
the demo's, ``scores_<N>px.json`` at another), else its exported backbones, probed again; so an
interrupted benchmark resumes where it stopped, and another probe size costs only the probes.
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import statistics
from pathlib import Path

import torch
from omegaconf import OmegaConf

from densessl.demo import DEMO_STEPS, METHODS, PROBE_SIZE, compare, probe_all
from densessl.demo_report import PROBES, SEED_SPREAD, margins


def spread(values: list[float]) -> dict[str, float]:
    std = statistics.stdev(values) if len(values) > 1 else float("nan")
    return {"mean": statistics.fmean(values), "std": std, "values": values}


def summarise(
    per_seed: dict[int, dict],
    seeds: list[int],
    steps: int,
    probe_size: int = PROBE_SIZE,
    recipe: str | None = None,
) -> dict:
    scores = [per_seed[s] for s in seeds]
    rows, gaps = {}, {}
    for probe_name in (p for p in PROBES if all(p in s["DenseCL"] for s in scores)):
        rows[probe_name] = {
            name: spread([s[name][probe_name]["miou"] for s in scores]) for name in scores[0]
        }
        by_seed = [margins(s, probe_name) for s in scores]
        gaps[probe_name] = {key: spread([m[key] for m in by_seed]) for key in by_seed[0]}
    matched = [name for name in scores[0] if "correspondence" in scores[0][name]]
    correspondence = {
        name: {key: spread([s[name]["correspondence"][key] for s in scores])
               for key in ("accuracy", "chance")}
        for name in matched
    }  # fmt: skip
    return {
        "seeds": len(seeds),
        # None: the demo's own (the small-data recipes with densessl.demo.DEMO_SETTINGS)
        "recipe": recipe,
        "steps": steps,  # pretraining steps per run: the report warns when its own run differs
        "probe_size": probe_size,  # side of the probe scenes, px (likewise)
        "date": datetime.date.today().isoformat(),
        "machine": f"{platform.machine()}, {torch.get_num_threads()} threads",
        "rows": rows,
        "margins": gaps,
        "correspondence": correspondence,
    }


def _cell(value: dict, sign: str = "") -> str:
    return f"{value['mean']:{sign}.1f} ± {value['std']:.1f}"


def table(summary: dict) -> str:
    probes = list(summary["rows"])
    head = "| features | " + " | ".join(f"{p} mIoU" for p in probes) + " | correspondence % |"
    lines = [head, "|---" * (len(probes) + 2) + "|"]
    matched = summary.get("correspondence", {})
    for name in summary["rows"][probes[0]]:
        cells = [_cell(summary["rows"][p][name]) for p in probes]
        match = matched.get(name)
        cells.append(f"{_cell(match['accuracy'])} (chance {match['chance']['mean']:.0f})"
                     if match else "—")  # fmt: skip
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines += ["", "| margin | " + " | ".join(probes) + " |", "|---" * (len(probes) + 1) + "|"]
    for key in summary["margins"][probes[0]]:
        cells = [_cell(summary["margins"][p][key], "+") for p in probes]
        lines.append(f"| {key} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--out", default="runs/demo_seeds")
    parser.add_argument("--steps", type=int, default=None, help="override the recipe's steps")
    parser.add_argument("--results", default=str(SEED_SPREAD))
    parser.add_argument("--probe-size", type=int, default=PROBE_SIZE, help="probe scenes' side")
    parser.add_argument("--recipe", default=None, help="one file in place of the demo's recipe")
    args = parser.parse_args()
    per_seed = {}
    for seed in args.seeds:
        run = Path(args.out) / f"seed{seed}"
        own_size = args.probe_size == PROBE_SIZE
        done = run / ("scores.json" if own_size else f"scores_{args.probe_size}px.json")
        exports = {name: run / f"resnet18_{method}.pt" for name, method in METHODS.items()}
        if not done.exists():
            if all(path.exists() for path in exports.values()):  # pretrained: probe again
                weights = {name: str(path) for name, path in exports.items()}
                scores = probe_all(weights, seed, args.probe_size)
            else:
                scores, _, _ = compare(run, seed, args.steps, args.probe_size, args.recipe)
            done.write_text(json.dumps(scores, indent=2) + "\n")
        per_seed[seed] = json.loads(done.read_text())
    steps = args.steps or (OmegaConf.load(args.recipe).steps if args.recipe else DEMO_STEPS)
    summary = summarise(per_seed, args.seeds, steps, args.probe_size, args.recipe)
    results = Path(args.results)
    results.parent.mkdir(parents=True, exist_ok=True)
    results.write_text(json.dumps(summary, indent=2) + "\n")
    print(table(summary))


if __name__ == "__main__":
    main()
