"""``densessl`` command line: parse, build the config, hand over to engine or export.

Exit codes: 0 success, 1 training diverged, 2 bad input (data, config, export), 130 interrupted.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from densessl.config import build_config, load_saved_config
from densessl.errors import ConfigError, TrainingDiverged, UserError
from densessl.methods import get_method
from densessl.registry import METHODS


def _pretrain_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "pretrain",
        help="pretrain a backbone on a folder of images (or the built-in scenes)",
        description="Pretrain a backbone. Without --data it trains on the built-in synthetic "
        "scenes. Under torchrun it trains on all processes. Extra key=value arguments override "
        "any config entry, e.g. optim.base_lr=0.3 method.queue_size=16384.",
    )
    p.add_argument(
        "--method",
        help=f"{' | '.join(METHODS.names())} (taken from the run when resuming)",
    )
    p.add_argument("--config", help="YAML recipe, e.g. configs/densecl_r50_coco_800ep.yaml")
    p.add_argument("--data", help="folder of images, searched recursively")
    p.add_argument(
        "--backbone",
        help="resnet18 | resnet50 | ... | vit_small_patch16 | ... | timm/<any timm CNN>, e.g. "
        "timm/convnext_tiny",
    )
    p.add_argument(
        "--init",
        help="continue from these backbone weights: a torchvision/timm state dict (.pth, .pt, "
        ".safetensors), a densessl export or run folder",
    )
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


def _data_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("data", help="write datasets to disk")
    kinds = p.add_subparsers(dest="data_command", required=True)
    synthetic = kinds.add_parser(
        "synthetic", help="write the built-in scenes as a segmentation or COCO detection set"
    )
    synthetic.add_argument("--out", required=True)
    synthetic.add_argument("--format", required=True, choices=("seg", "coco"))
    synthetic.add_argument("--num-images", type=int, default=200, help="training images")
    synthetic.add_argument("--image-size", type=int, default=128)
    synthetic.add_argument("--seed", type=int, default=0)


def _proposals_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "proposals",
        help="selective-search boxes for SoCo on every image of a folder (resumable)",
        description="Run selective search and SoCo's box filter on every image under --data, in "
        "parallel, into a pickle-free .npz. Interrupted runs continue where they stopped when "
        "the same command is run again.",
    )
    p.add_argument("--data", required=True, help="folder of images, searched recursively")
    p.add_argument("--out", required=True, help="output file, e.g. proposals.npz")
    p.add_argument("--workers", type=int, help="processes (default: all cores)")
    p.add_argument(
        "--max-side", type=int, default=256, help="longer side of the searched copy (0: full size)"
    )


def _add_weights_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--weights", required=True, help="exported file, run directory, or 'random'")
    p.add_argument("--backbone", help="architecture (inferred from exported weights if omitted)")
    p.add_argument("--network", choices=("online", "teacher"), help="for run directories")
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda if available)")


def _add_options_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", help="YAML file of options (the flags and key=value win)")
    p.add_argument("--json", help="also write the scores to this JSON file")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="any option, e.g. lr=0.01")


def _eval_parser(sub: argparse._SubParsersAction) -> None:
    from densessl.eval.segmentation import LAYOUTS

    p = sub.add_parser("eval", help="frozen-feature probes and detection fine-tuning")
    kinds = p.add_subparsers(dest="eval_command", required=True)
    for name, text in (
        ("linear-seg", "linear per-pixel classifier on frozen features (mIoU)"),
        ("knn-seg", "dense nearest-neighbour label retrieval, no training (mIoU)"),
    ):
        e = kinds.add_parser(name, help=text)
        _add_weights_arguments(e)
        _add_options_arguments(e)
        e.add_argument("--data", help="labelled folder; default: the built-in scenes")
        e.add_argument("--format", choices=LAYOUTS)
        e.add_argument("--split", default="val", help="split to score (default val)")
        e.add_argument("--train-split", default="train", help="split the probe learns from")
        e.add_argument(
            "--levels", help="comma-separated feature levels (default: c5, or patch for a ViT)"
        )
        e.add_argument("--image-size", type=int, help="shorter image side (default 224)")
        if name == "knn-seg":
            e.add_argument("--k", type=int, help="neighbours per patch (default 30)")
            e.add_argument("--temperature", type=float, help="softmax temperature (default 0.02)")
    d = kinds.add_parser("detect", help="fine-tune torchvision Faster/Mask R-CNN, COCO AP")
    _add_weights_arguments(d)
    _add_options_arguments(d)
    d.add_argument("--data", help="COCO-format folder; default: written built-in scenes")
    d.add_argument("--model", choices=("faster_rcnn", "mask_rcnn"), help="default faster_rcnn")
    d.add_argument("--iterations", type=int, help="default: 12 epochs (detectron2's 1x)")
    d.add_argument("--batch-size", type=int, help="images per step, all processes (default 2)")
    d.add_argument("--lr", type=float, help="default: 0.02 x batch / 16")
    norms = "trunk norms: SyncBN (the SSL protocol, default), frozen, or per-process BN"
    d.add_argument("--norm", choices=("sync", "frozen", "bn"), help=norms)
    d.add_argument(
        "--heads", choices=("auto", "v1", "v2"),
        help="torchvision head layout: v2 (BN FPN, 4conv1fc box head) starts from a pretrained "
        "FPN/box head (SoCo); auto (default) = v2 when --weights has them, else v1",
    )  # fmt: skip
    d.add_argument("--min-size", type=int, help="short side of the input (default 800)")
    d.add_argument("--max-size", type=int, help="cap on the long side (default 1333)")
    d.add_argument("--workers", type=int, help="data-loading processes (default 2)")


def _viz_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("viz", help="pictures: matches, feature PCA, loss curves")
    kinds = p.add_subparsers(dest="viz_command", required=True)
    for name, text in (
        ("matches", "DenseCL correspondences between two views of one image"),
        ("pca", "PCA of dense features as RGB"),
    ):
        v = kinds.add_parser(name, help=text)
        _add_weights_arguments(v)
        v.add_argument("--data", help="image folder; default: the built-in scenes")
        v.add_argument("--index", type=int, default=0, help="first image to show")
        v.add_argument("--count", type=int, default=4, help="images (pca)")
        v.add_argument("--size", type=int, default=224)
        v.add_argument("--out", required=True, help="PNG file")
    loss = kinds.add_parser("loss", help="loss curves of one or more runs")
    loss.add_argument("runs", nargs="+", help="run directories")
    loss.add_argument("--out", required=True, help="PNG file")


def _flags(args: argparse.Namespace) -> dict:
    return {
        "data.path": args.data,
        "backbone": args.backbone,
        "init": args.init,
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
        if args.init:
            raise ConfigError("--init starts a new run from weights; --resume continues one")
        if not args.out:
            raise ConfigError("--resume needs --out RUN_DIR, the run to continue")
        saved = Path(args.out) / "config.yaml"
        if not saved.exists():
            raise ConfigError(f"nothing to resume: {saved} does not exist")
        previous = load_saved_config(saved)
        if args.method and args.method != previous.method.name:
            raise ConfigError(f"{args.out} is a {previous.method.name} run, not {args.method}")
        cfg = build_config(get_method(previous.method.name), saved, flags, args.overrides)
    else:
        if not args.method:
            raise ConfigError("choose a method: --method densecl (or mocov2)")
        flags["out"] = args.out or f"runs/{args.method}"
        cfg = build_config(get_method(args.method), args.config, flags, args.overrides)
        checkpoint = Path(cfg.out) / "checkpoints" / "last.pt"
        if checkpoint.exists():
            raise ConfigError(
                f"{cfg.out} already holds a run; add --resume to continue it or pick another --out"
            )
    train(cfg, resume=args.resume)
    return 0


def _export(args: argparse.Namespace) -> int:
    from densessl.export import export

    result = export(args.run, args.format, args.out, args.network)
    print(f"wrote {result.path}")
    print(result.instructions)
    return 0


def _data(args: argparse.Namespace) -> int:
    if args.format == "seg":
        from densessl.eval.segmentation import write_synthetic_segmentation as write
    else:
        from densessl.eval.detection import write_synthetic_coco as write
    out = write(args.out, num_images=args.num_images, image_size=args.image_size, seed=args.seed)
    print(f"wrote {out}")
    return 0


def _proposals(args: argparse.Namespace) -> int:
    from densessl.data.proposal_store import generate_proposals
    from densessl.data.sources import ImageFolder

    source = ImageFolder(args.data)
    result = generate_proposals(source, args.out, args.workers, args.max_side or None)
    print(
        f"wrote {result.path}: {len(source) - result.skipped} images, {result.skipped} "
        f"unreadable skipped ({result.computed} searched now, {result.reused} done before)"
    )
    return 0


# The named flags of each eval command: shorthand for the option key of the same name.
_OPTION_FLAGS = {
    "linear-seg": ("image_size", "device"),
    "knn-seg": ("image_size", "device", "k", "temperature"),
    "detect": ("model", "iterations", "batch_size", "lr", "norm", "heads", "max_size", "device",
               "workers"),
}  # fmt: skip


def _options(args: argparse.Namespace):
    """The command's options: defaults <- --config <- named flags <- key=value overrides."""
    from omegaconf import OmegaConf

    from densessl.config import build_options
    from densessl.eval.detection import DetectOptions
    from densessl.eval.knn_seg import KnnSegOptions
    from densessl.eval.linear_seg import LinearSegOptions

    schema = {"linear-seg": LinearSegOptions, "knn-seg": KnnSegOptions, "detect": DetectOptions}
    flags = {key: getattr(args, key) for key in _OPTION_FLAGS[args.eval_command]}
    if args.eval_command == "detect":
        flags["min_size"] = None if args.min_size is None else [args.min_size]
    else:
        flags["levels"] = args.levels.split(",") if args.levels else None
    cfg = build_options(schema[args.eval_command], args.config, flags, args.overrides)
    return OmegaConf.to_object(cfg)


def _segmentation_sets(args: argparse.Namespace, image_size: int):
    from densessl.eval.segmentation import SyntheticSegmentation, open_segmentation

    if args.data is None:  # held-out built-in scenes: seeds unlike the pretraining default (0)
        return (
            SyntheticSegmentation(300, image_size, seed=101),
            SyntheticSegmentation(100, image_size, 102),
        )
    train = open_segmentation(args.data, args.format, args.train_split)
    return train, open_segmentation(args.data, args.format, args.split)


def _detect(args: argparse.Namespace, options):
    from densessl import dist
    from densessl.device import resolve_device
    from densessl.eval.detection import (
        finetune_detector,
        load_detection_weights,
        write_synthetic_coco,
    )

    backbone, heads = load_detection_weights(args.weights, args.backbone, args.network)
    if heads and options.heads == "v1":  # v1 has no BN in its FPN: the weights do not fit
        print(f"--heads v1: the {len(heads)} pretrained FPN/box-head tensors are not used")
        heads = {}
    if dist.launched_by_torchrun():  # every rank fine-tunes its share (DDP)
        dist.init(resolve_device(options.device).type)
    data = args.data
    if data is None:
        data = write_synthetic_coco("runs/synthetic_coco", num_images=200, image_size=128)
    return finetune_detector(backbone, data, options, heads)


def _probe(args: argparse.Namespace, options):
    from densessl.device import resolve_device
    from densessl.eval.knn_seg import knn_seg
    from densessl.eval.linear_seg import linear_seg
    from densessl.eval.weights import load_backbone

    backbone = load_backbone(args.weights, args.backbone, args.network)
    backbone.to(resolve_device(options.device))  # the probe runs where the backbone is
    train, val = _segmentation_sets(args, options.image_size)
    probe = linear_seg if args.eval_command == "linear-seg" else knn_seg
    return probe(backbone, train, val, options)


def _eval(args: argparse.Namespace) -> int:
    import json

    options = _options(args)
    scores = (_detect if args.eval_command == "detect" else _probe)(args, options)
    print(scores.format_table(f"{args.eval_command}: {args.weights}"))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(scores.to_dict(), indent=2) + "\n")
    return 0


def _viz(args: argparse.Namespace) -> int:
    from densessl import viz

    if args.viz_command == "loss":
        runs = {Path(r).name or str(r): Path(r) for r in args.runs}
        print(f"wrote {viz.plot_loss_curves(runs, Path(args.out))}")
        return 0
    from densessl.data.sources import ImageFolder
    from densessl.data.synthetic import SyntheticScenes
    from densessl.device import resolve_device
    from densessl.eval.weights import load_backbone

    backbone = load_backbone(args.weights, args.backbone, args.network)
    backbone.to(resolve_device(args.device))
    source = ImageFolder(args.data) if args.data else SyntheticScenes(num_images=64, seed=101)
    if args.viz_command == "matches":
        stats = viz.plot_correspondences(
            backbone, source.load_image(args.index), Path(args.out), size=args.size
        )
        print(f"wrote {args.out}: {stats['match_accuracy']:.0%} of scored matches correct")
    else:
        images = [source.load_image((args.index + i) % len(source)) for i in range(args.count)]
        print(f"wrote {viz.plot_feature_pca(backbone, images, Path(args.out), size=args.size)}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="densessl", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for add in (_pretrain_parser, _export_parser, _data_parser, _eval_parser, _viz_parser):
        add(sub)
    _proposals_parser(sub)
    args = parser.parse_args(argv)

    commands = {"pretrain": _pretrain, "export": _export, "data": _data, "eval": _eval,
                "viz": _viz, "proposals": _proposals}  # fmt: skip
    try:
        return commands[args.command](args)
    except UserError as err:
        print(f"densessl: error: {err}", file=sys.stderr)
        return 2
    except TrainingDiverged as err:
        print(f"densessl: error: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
