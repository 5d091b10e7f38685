"""``densessl`` command line: a thin layer over :mod:`densessl.api` (parse, call, print).

Exit codes: 0 success, 1 training diverged, 2 a mistake to fix (one line on stderr; ``--debug``
adds the traceback), 130 interrupted. Anything else is a bug and shows its traceback.

The parser imports nothing heavy, so ``--help``, ``--version`` and parse errors answer before
torch is imported.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import warnings
from pathlib import Path

from densessl import __version__
from densessl.errors import DataError, TrainingDiverged, UnreadableImageWarning, UserError
from densessl.registry import method_names

DESCRIPTION = """\
Self-supervised pretraining for dense prediction (DenseCL, MoCo-v2, BYOL, SoCo, MCL, PixPro,
DINO, SelfPatch) on a folder of images, then export for torchvision / timm / smp / detectron2 /
mmdet and dense evaluation (segmentation fine-tuning compared with random init, linear and k-NN
segmentation probes, detection fine-tuning).

typical use:
  densessl pretrain --method densecl --data ~/images --out runs/mine --epochs 200
  densessl pretrain --out runs/mine --resume            # continue after Ctrl-C or a crash
  densessl eval finetune-seg --weights runs/mine --data ~/labelled --labels 10% \\
      --compare random --seeds 3                        # did pretraining help?
  densessl export runs/mine --format torchvision --out backbone.pt
  densessl list                                         # methods, backbones, formats

Mistakes end with one line on stderr and exit code 2; add --debug for the traceback."""


class _HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Every option's default after its help (never ``(default: None)``: such options take the
    recipe's, which their help states); descriptions keep their line breaks."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if "default" in text or "required" in text or action.default is argparse.SUPPRESS:
            return text
        if action.required:
            return f"{text} (required)"
        if isinstance(action, argparse._StoreTrueAction):
            return f"{text} (default: off)"
        if action.default is None:
            return text
        return f"{text} (default: %(default)s)"


class _Parser(argparse.ArgumentParser):
    """argparse with its usage errors on one line (argparse prints the usage block first)."""

    def error(self, message: str):
        self.exit(2, f"densessl: error: {message} (see {self.prog} --help)\n")


def _add_parser(sub: argparse._SubParsersAction, name: str, **kwargs) -> argparse.ArgumentParser:
    return sub.add_parser(name, formatter_class=_HelpFormatter, **kwargs)


def _pretrain_parser(sub: argparse._SubParsersAction) -> None:
    p = _add_parser(
        sub,
        "pretrain",
        help="pretrain a backbone on a folder of images (or the built-in scenes)",
        description="Pretrain a backbone. Without --data it trains on the built-in synthetic "
        "scenes. Under torchrun it trains on all processes. Extra key=value arguments override "
        "any config entry, e.g. optim.base_lr=0.3 method.queue_size=16384.",
    )
    p.add_argument(
        "--method",
        help=f"{' | '.join(method_names())} (required; taken from the run when resuming)",
    )
    p.add_argument(
        "--config",
        help="a shipped recipe by name (densessl list), e.g. densecl_small_data, or a YAML file "
        "(default: none)",
    )
    p.add_argument(
        "--data",
        help="folder of images, searched recursively, or tar shards ('shards/train-"
        "{000000..000099}.tar', a .tar file, a folder of .tar files); default: the built-in "
        "scenes",
    )
    p.add_argument(
        "--backbone",
        help="resnet18 | resnet50 | ... | vit_small_patch16 | ... | timm/<any timm CNN>, e.g. "
        "timm/convnext_tiny (see densessl list; default: the method's, resnet50 or "
        "vit_small_patch16)",
    )
    p.add_argument(
        "--init",
        help="continue from these backbone weights: a torchvision/timm state dict (.pth, .pt, "
        ".safetensors), a densessl export or run folder (default: random init)",
    )
    p.add_argument(
        "--init-partial",
        action="store_true",
        default=None,
        help="with --init: load the tensors that match even when the weights are of another "
        "depth or width (default: refuse them)",
    )
    p.add_argument("--image-size", type=int, help="training view side in pixels (default 224)")
    p.add_argument(
        "--batch-size", type=int, help="global batch, all processes (default: the method's)"
    )
    length = p.add_mutually_exclusive_group()
    length.add_argument(
        "--steps", type=int, help="optimizer steps, at least 1 (default: from --epochs)"
    )
    length.add_argument(
        "--epochs", type=float, help="passes over the data (default: the method's recipe)"
    )
    p.add_argument("--out", help="run directory (default runs/<method>)")
    p.add_argument(
        "--resume",
        action="store_true",
        help="continue the run in --out; it never moves backwards (default: a new run)",
    )
    p.add_argument(
        "--workers",
        type=int,
        help="loader processes per training process (default 4, at most the cores)",
    )
    p.add_argument(
        "--device", choices=("auto", "cpu", "cuda"), help="default auto: cuda when available"
    )
    p.add_argument(
        "overrides",
        nargs="*",
        metavar="key=value",
        help="any config entry, e.g. optim.base_lr=0.3 (default: none)",
    )


def _export_parser(sub: argparse._SubParsersAction) -> None:
    p = _add_parser(
        sub,
        "export",
        help="write a run's pretrained weights for a downstream library",
        description="Write a run's pretrained networks in a downstream library's layout and "
        "print the code or config lines that load them. Never overwrites a checkpoint of the "
        "run, nor an existing file without --force.",
    )
    p.add_argument("run", help="run directory or checkpoint file")
    p.add_argument(
        "--format", required=True,
        help="target library's layout, e.g. torchvision, timm, smp, detectron2, mmdet; "
        "densessl list shows every registered format (no default)",
    )  # fmt: skip
    p.add_argument(
        "--out",
        required=True,
        help="output file, or a folder to write <run>_<format>.pt into (no default)",
    )
    p.add_argument(
        "--network",
        choices=("online", "teacher"),
        help="default: the network the method's authors released",
    )
    p.add_argument(
        "--force", action="store_true", help="replace an existing --out file (default: refuse)"
    )


def _data_parser(sub: argparse._SubParsersAction) -> None:
    p = _add_parser(sub, "data", help="write datasets to disk")
    kinds = p.add_subparsers(dest="data_command", required=True)
    synthetic = _add_parser(
        kinds,
        "synthetic",
        help="write the built-in scenes as a segmentation or COCO detection set",
        description="Write the built-in synthetic scenes to disk, as a segmentation folder "
        "(images/ masks/ classes.txt) or a COCO detection folder, for the probes or for "
        "other tools.",
    )
    synthetic.add_argument("--out", required=True, help="folder to write (no default)")
    synthetic.add_argument(
        "--format",
        required=True,
        choices=("seg", "coco"),
        help="segmentation folder or COCO (no default)",
    )
    synthetic.add_argument("--num-images", type=int, default=200, help="training images")
    synthetic.add_argument("--image-size", type=int, default=128, help="image side in pixels")
    synthetic.add_argument("--seed", type=int, default=0, help="scene generator seed")
    shards = _add_parser(
        kinds,
        "shards",
        help="write a folder of images as tar shards (WebDataset layout)",
        description="Write every image under --data as tar shards of --shard-size images "
        "each (the files' bytes unchanged, in sorted path order), for --data on large or "
        "shared storage. The shards appear in --out only when all are written.",
    )
    shards.add_argument("--data", required=True, help="folder of images, searched recursively")
    shards.add_argument("--out", required=True, help="new or empty folder for the shards")
    shards.add_argument("--shard-size", type=int, default=1000, help="images per shard")


def _list_parser(sub: argparse._SubParsersAction) -> None:
    _add_parser(
        sub,
        "list",
        help="methods, backbones, export formats, segmentation layouts and shipped recipes",
        description="Print every registered method, backbone, export format and segmentation "
        "dataset layout, and every shipped recipe with what it is for.",
    )


def _health_parser(sub: argparse._SubParsersAction) -> None:
    p = _add_parser(
        sub,
        "health",
        help="has a run collapsed? its last health check, with the verdict",
        description="Print a run's last health check (effective rank and spread of its "
        "embeddings of a held batch, and the teacher's entropy where it has one) beside its "
        "first, and the verdict. Exit status 0 when healthy, 1 when collapsing.",
    )
    p.add_argument("run", help="run folder")


def _demo_parser(sub: argparse._SubParsersAction) -> None:
    p = _add_parser(
        sub,
        "demo",
        help="does dense pretraining help? a few minutes on the built-in scenes, with a report",
        description="Pretrain DenseCL and MoCo-v2 on the built-in scenes, compare them with "
        "random init, and write a report with tables and pictures into --out.",
    )
    p.add_argument("--out", default="runs/demo", help="folder of the report and runs")
    p.add_argument(
        "--steps", type=int, default=None,
        help="pretraining steps per method (default: the demo's measured length)",
    )  # fmt: skip
    p.add_argument(
        "--quick", action="store_true",
        help="a few steps and small probes: checks that everything runs, measures nothing",
    )  # fmt: skip


def _proposals_parser(sub: argparse._SubParsersAction) -> None:
    p = _add_parser(
        sub,
        "proposals",
        help="selective-search boxes for SoCo on every image of a folder (resumable)",
        description="Run selective search and SoCo's box filter on every image under --data, in "
        "parallel, into a pickle-free .npz. Interrupted runs continue where they stopped when "
        "the same command is run again.",
    )
    p.add_argument(
        "--data", required=True, help="folder of images (searched recursively) or tar shards"
    )
    p.add_argument("--out", required=True, help="output file, e.g. proposals.npz")
    p.add_argument("--workers", type=int, help="processes (default: all cores)")
    p.add_argument(
        "--max-side", type=int, default=256, help="longer side of the searched copy (0: full size)"
    )
    p.add_argument(
        "--route",
        default="opencv",
        choices=["opencv", "port", "port_opencv_segments"],
        help="how selective search runs: opencv (OpenCV-contrib's search, the default), port "
        "(SoCo's reference algorithm ported; its exact boxes at --max-side 0; needs "
        "scikit-image), port_opencv_segments (the port's grouping on OpenCV's segments); "
        "speed and recall of each: BENCHMARKS.md",
    )


def _add_weights_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--weights",
        required=True,
        help="run directory, checkpoint, exported file, 'random', or 'pixels' (raw-pixel baseline)",
    )
    p.add_argument(
        "--backbone", help="architecture (default: inferred from the weights; resnet50 for random)"
    )
    p.add_argument(
        "--network", choices=("online", "teacher"), help="for runs (default: the method's)"
    )
    p.add_argument("--device", choices=("cpu", "cuda"), help="default: cuda if available, else cpu")


def _add_options_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", help="YAML file of options; flags and key=value win (default: none)")
    p.add_argument("--json", help="also write the scores to this JSON file (default: none)")
    p.add_argument(
        "overrides", nargs="*", metavar="key=value", help="any option, e.g. lr=0.01 (default: none)"
    )


def _eval_parser(sub: argparse._SubParsersAction) -> None:
    """One sub-command per registered evaluation protocol, its flags from the protocol."""
    from densessl.eval.protocols import EVAL_PROTOCOLS

    p = _add_parser(sub, "eval", help="frozen-feature probes and fine-tuning, compared")
    kinds = p.add_subparsers(dest="eval_command", required=True)
    for name in EVAL_PROTOCOLS.names():
        protocol = EVAL_PROTOCOLS.get(name)
        e = _add_parser(kinds, name, help=protocol.summary, description=protocol.description)
        _add_weights_arguments(e)
        _add_options_arguments(e)
        for flag in protocol.flags:
            flag.add_to(e)


def _viz_parser(sub: argparse._SubParsersAction) -> None:
    p = _add_parser(sub, "viz", help="pictures: matches, feature PCA, loss curves")
    kinds = p.add_subparsers(dest="viz_command", required=True)
    for name, text in (
        ("matches", "DenseCL correspondences between two views of one image"),
        ("pca", "PCA of dense features as RGB"),
    ):
        v = _add_parser(kinds, name, help=text, description=text)
        _add_weights_arguments(v)
        v.add_argument("--data", help="image folder or tar shards; default: the built-in scenes")
        v.add_argument("--index", type=int, default=0, help="first image to show")
        v.add_argument("--count", type=int, default=4, help="images (pca)")
        v.add_argument("--size", type=int, default=224, help="image side in pixels")
        v.add_argument("--out", required=True, help="PNG file")
    loss = _add_parser(
        kinds, "loss", help="loss curves of one or more runs", description="Loss curves as PNG."
    )
    loss.add_argument("runs", nargs="+", help="run directories")
    loss.add_argument("--out", required=True, help="PNG file")


def _pretrain(args: argparse.Namespace) -> int:
    from densessl import api

    named = {key: getattr(args, key) for key in api.PRETRAIN_KEYS}
    api.pretrain(args.method, out=args.out, config=args.config, resume=args.resume,
                 overrides=args.overrides, **named)  # fmt: skip
    return 0


def _export(args: argparse.Namespace) -> int:
    from densessl import api

    result = api.export(args.run, args.format, args.out, args.network, args.force)
    print(f"wrote {result.path}")
    print(result.instructions)
    return 0


def _health(args: argparse.Namespace) -> int:
    from densessl import api

    text, healthy = api.health(args.run)
    print(f"run {args.run}: {text}")
    return 0 if healthy else 1


def _list(args: argparse.Namespace) -> int:
    from densessl import api
    from densessl.recipes import shipped_recipes

    for kind, names in api.components().items():
        print(f"{kind}: {', '.join(names)}")
    recipes = shipped_recipes()
    width = max(map(len, recipes))
    print("recipes (pretrain --config NAME):")
    for name, purpose in recipes.items():
        print(f"  {name:<{width}}  {purpose}")
    return 0


def _demo(args: argparse.Namespace) -> int:
    from densessl import demo

    demo.run_demo(Path(args.out), steps=args.steps, quick=args.quick)
    return 0


def _data(args: argparse.Namespace) -> int:
    if args.data_command == "shards":
        from densessl.data.shard_writer import write_shards

        written = write_shards(args.data, args.out, args.shard_size)
        for line in written.unreadable:
            print(f"densessl: warning: not copied: {line}", file=sys.stderr)
        print(
            f"wrote {written.images} images in {written.shards} shards; train on them with "
            f"--data '{written.pattern}' (or --data {written.out})"
        )
        return 0
    if args.format == "seg":
        from densessl.eval.segmentation import write_synthetic_segmentation as write
    else:
        from densessl.eval.detection import write_synthetic_coco as write
    out = write(args.out, num_images=args.num_images, image_size=args.image_size, seed=args.seed)
    print(f"wrote {out}")
    return 0


def _proposals(args: argparse.Namespace) -> int:
    from densessl.data.data_path import open_image_source
    from densessl.data.proposal_store import generate_proposals

    source = open_image_source(args.data)
    result = generate_proposals(
        source, args.out, args.workers, args.max_side or None, route=args.route
    )
    print(
        f"wrote {result.path}: {len(source) - result.skipped} images, {result.skipped} "
        f"unreadable skipped ({result.computed} searched now, {result.reused} done before)"
    )
    return 0


def _eval(args: argparse.Namespace) -> int:
    from densessl.eval.protocols import EVAL_PROTOCOLS
    from densessl.runs import refuse_run_file

    protocol = EVAL_PROTOCOLS.get(args.eval_command)
    if args.json:
        refuse_run_file(Path(args.json))  # checked before the evaluation, not after
    protocol.checks(args)
    shared = dict(backbone=args.backbone, network=args.network, config=args.config,
                  overrides=args.overrides, device=args.device)  # fmt: skip
    data = getattr(args, "data", None)
    scores = protocol.evaluate(args.weights, data, **shared, **protocol.keywords_of(args))
    protocol.report(scores, args)
    return 0


def _viz(args: argparse.Namespace) -> int:
    from densessl import viz
    from densessl.runs import METRICS_NAME, refuse_run_file

    refuse_run_file(Path(args.out))
    if args.viz_command == "loss":
        runs = {Path(r).name or str(r): Path(r) for r in args.runs}
        for run in runs.values():
            if not (run / METRICS_NAME).is_file():
                raise DataError(
                    f"no {METRICS_NAME} in {run}; pass run folders of densessl pretrain"
                )
        print(f"wrote {viz.plot_loss_curves(runs, Path(args.out))}")
        return 0
    from densessl.data.data_path import open_image_source
    from densessl.data.synthetic import SyntheticScenes
    from densessl.device import resolve_device
    from densessl.eval.weights import load_backbone

    backbone = load_backbone(args.weights, args.backbone, args.network)
    backbone.to(resolve_device(args.device))
    source = open_image_source(args.data) if args.data else SyntheticScenes(num_images=64, seed=101)
    if args.viz_command == "matches":
        stats = viz.plot_correspondences(
            backbone, source.load_image(args.index), Path(args.out), size=args.size
        )
        print(f"wrote {args.out}: {stats['match_accuracy']:.0%} of scored matches correct")
    else:
        images = [source.load_image((args.index + i) % len(source)) for i in range(args.count)]
        print(f"wrote {viz.plot_feature_pca(backbone, images, Path(args.out), size=args.size)}")
    return 0


def _one_line_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """Skipped files warn as one line of their own: Python's format would add our source line,
    and a plain write would land after the progress bar's partial line (tqdm.write clears it)."""
    if issubclass(category, UnreadableImageWarning):
        from tqdm import tqdm

        tqdm.write(f"densessl: warning: {message}", file=file or sys.stderr)
        return
    _default_show(message, category, filename, lineno, file, line)


_default_show = warnings.showwarning


def _print_once(line: str) -> None:
    """Print on stderr from one process only: under torchrun every process meets the same
    mistake, and rank 0 speaks for the job (the others exit quietly with the same code)."""
    if int(os.environ.get("RANK", "0")) == 0:
        print(line, file=sys.stderr)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="densessl", description=DESCRIPTION, formatter_class=_HelpFormatter)
    parser.add_argument(
        "--debug", action="store_true", help="show the full traceback of an error, not one line"
    )
    parser.add_argument(
        "--version", action="version", version=f"densessl {__version__}",
        help=f"print the version ({__version__}) and exit (default: off)",
    )  # fmt: skip
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add in (_pretrain_parser, _export_parser, _eval_parser, _list_parser, _data_parser,
                _viz_parser, _proposals_parser, _demo_parser, _health_parser):  # fmt: skip
        add(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    warnings.showwarning = _one_line_warning
    commands = {"pretrain": _pretrain, "export": _export, "data": _data, "eval": _eval,
                "viz": _viz, "proposals": _proposals, "list": _list, "demo": _demo,
                "health": _health}  # fmt: skip
    try:
        code = commands[args.command](args)
        _leave_process_group()
        return code
    except UserError as err:
        if args.debug:
            raise
        _print_once(f"densessl: error: {' '.join(str(err).split())}")
        return 2
    except TrainingDiverged as err:
        _print_once(f"densessl: error: {err}")
        return 1
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # `densessl list | head`: the reader has what it wanted
        _quiet_stdout()
        return 128 + signal.SIGPIPE


def _leave_process_group() -> None:
    """Under torchrun, every rank that finished leaves the group together (:func:`dist.close`).
    Only a command that loaded densessl.dist can have joined one; the others stay torch-free."""
    if "densessl.dist" in sys.modules:
        from densessl import dist

        dist.close()


def _quiet_stdout() -> None:
    """Point stdout at /dev/null, so that the interpreter's final flush into the closed pipe
    does not print a traceback of its own."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())


if __name__ == "__main__":
    sys.exit(main())
