"""``densessl`` command line: parse, build the config, hand over to engine or export.

Exit codes: 0 success, 1 training diverged, 2 bad input (data, config, export), 130 interrupted.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from densessl.config import ConfigError, build_config, load_saved_config


def _pretrain_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "pretrain",
        help="pretrain a backbone on a folder of images (or the built-in scenes)",
        description="Pretrain a backbone. Without --data it trains on the built-in synthetic "
        "scenes. Under torchrun it trains on all processes. Extra key=value arguments override "
        "any config entry, e.g. optim.base_lr=0.3 method.queue_size=16384.",
    )
    p.add_argument("--method", help="densecl | mocov2 (taken from the run when resuming)")
    p.add_argument("--config", help="YAML recipe, e.g. configs/densecl_r50_coco_800ep.yaml")
    p.add_argument("--data", help="folder of images, searched recursively")
    p.add_argument("--backbone", help="resnet18 | resnet34 | resnet50 | resnet101")
    p.add_argument("--image-size", type=int, help="side of each training view in pixels")
    p.add_argument("--batch-size", type=int, help="global batch over all processes")
    length = p.add_mutually_exclusive_group()
    length.add_argument("--steps", type=int, help="number of optimizer steps")
    length.add_argument("--epochs", type=float, help="number of passes over the data")
    p.add_argument("--out", help="run directory (default runs/<method>)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out")
    p.add_argument("--workers", type=int, help="data-loading processes per training process")
    p.add_argument("overrides", nargs="*", metavar="key=value")


def _export_parser(sub: argparse._SubParsersAction) -> None:
    from densessl.export import FORMATS

    p = sub.add_parser("export", help="write a run's pretrained weights for a downstream library")
    p.add_argument("run", help="run directory or checkpoint file")
    p.add_argument("--format", required=True, choices=FORMATS)
    p.add_argument("--out", required=True, help="output file")
    p.add_argument("--network", choices=("online", "teacher"), help="default: the method's")


def _flags(args: argparse.Namespace) -> dict:
    return {
        "data.path": args.data,
        "backbone": args.backbone,
        "data.image_size": args.image_size,
        "batch_size": args.batch_size,
        "steps": args.steps,
        "epochs": args.epochs,
        "out": args.out,
        "data.workers": args.workers,
    }


def _pretrain(args: argparse.Namespace) -> int:
    from densessl.engine.train import train

    flags = _flags(args)
    if args.steps is not None:
        flags["epochs"] = None
    elif args.epochs is not None:
        flags["steps"] = 0
    if args.resume:
        if not args.out:
            raise ConfigError("--resume needs --out RUN_DIR, the run to continue")
        saved = Path(args.out) / "config.yaml"
        if not saved.exists():
            raise ConfigError(f"nothing to resume: {saved} does not exist")
        previous = load_saved_config(saved)
        if args.method and args.method != previous.method.name:
            raise ConfigError(f"{args.out} is a {previous.method.name} run, not {args.method}")
        cfg = build_config(previous.method.name, saved, flags, args.overrides)
    else:
        if not args.method:
            raise ConfigError("choose a method: --method densecl (or mocov2)")
        flags["out"] = args.out or f"runs/{args.method}"
        cfg = build_config(args.method, args.config, flags, args.overrides)
        checkpoint = Path(cfg.out) / "checkpoints" / "last.pt"
        if checkpoint.exists():
            raise ConfigError(
                f"{cfg.out} already holds a run; add --resume to continue it or pick another --out"
            )
    train(cfg, resume=args.resume)
    return 0


def _export(args: argparse.Namespace) -> int:
    from densessl.export import export

    out = export(args.run, args.format, args.out, args.network)
    print(f"wrote {out}")
    if args.format == "torchvision":
        print(
            "load with: model = torchvision.models.<arch>(); "
            f"model.load_state_dict(torch.load('{out}', weights_only=True), strict=False)"
            "  # missing: fc.weight, fc.bias"
        )
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="densessl", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    _pretrain_parser(sub)
    _export_parser(sub)
    args = parser.parse_args(argv)

    from densessl.data.sources import DataError
    from densessl.engine.train import TrainingDiverged
    from densessl.export import ExportError

    try:
        return {"pretrain": _pretrain, "export": _export}[args.command](args)
    except (ConfigError, DataError, ExportError) as err:
        print(f"densessl: error: {err}", file=sys.stderr)
        return 2
    except TrainingDiverged as err:
        print(f"densessl: error: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
