"""`compmod` command line: subcommands that only call library functions.

Errors caused by input (config, data, paths, checkpoints) print one line and exit with code 2.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence

from compmod.cli.transfer import add_transfer_parsers, cmd_export, cmd_transfer
from compmod.errors import CompmodError, FileSystemError, TrainingInterrupted
from compmod.sweep.launch import add_launch_arguments, launch_options

EXIT_USER_ERROR = 2


def _add_set_arg(p: argparse.ArgumentParser, help: str) -> None:
    p.add_argument(
        "--set", "-s", dest="overrides", action="append", default=[], metavar="KEY=VALUE", help=help
    )


def _add_config_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", "-c", help="YAML config file (see configs/)")
    _add_set_arg(p, "override one config key, e.g. --set train.epochs=5 (repeatable)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="compmod", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("train", help="pretrain a method, then evaluate it")
    _add_config_args(p)
    p.add_argument("--resume", action="store_true", help="continue from <run_dir>/checkpoints/last.pt")
    p.add_argument("--overwrite", action="store_true", help="start over in a run_dir that has a checkpoint")

    p = sub.add_parser("eval", help="evaluate a checkpoint's encoder")
    p.add_argument(
        "protocol",
        choices=["knn", "linear", "all", "semi", "diagnostics"],
        help="all = knn, linear, pixel_knn (and semi if eval.semi is true); "
        "semi = fine-tune on eval.semi_fractions of the labels; "
        "diagnostics = effective rank and coding rate of h and z on the test images",
    )
    p.add_argument(
        "--checkpoint", required=True, help="path to a checkpoint (e.g. RUN_DIR/checkpoints/last.pt)"
    )
    _add_set_arg(p, "override a key of the checkpoint's config (e.g. eval.knn_k=20)")

    p = sub.add_parser("sweep", help="train and evaluate every cell of a grid; a table and a heatmap")
    _add_config_args(p)
    p.add_argument(
        "--grid",
        "-g",
        action="append",
        required=True,
        metavar="KEY=[V1, V2, ...]",
        help="one axis of the grid, e.g. --grid 'compmod.lambda1=[0.1, 1, 10]' (repeatable)",
    )
    p.add_argument(
        "--out", required=True, help="sweep directory: one run directory per cell, sweep.md, sweep.png"
    )
    p.add_argument("--metric", default="knn_top1", help="the results.json key to tabulate (default knn_top1)")
    add_launch_arguments(p)

    p = sub.add_parser("reproduce", help="run the grid of one of the paper's tables")
    p.add_argument("table", choices=["lambda", "fusion", "augment", "methods"])
    p.add_argument("--scale", choices=["smoke", "cpu", "paper"], default="cpu")
    p.add_argument("--dataset", help="--scale paper: the presets' dataset (default cifar10, the paper's)")
    p.add_argument("--out", help="sweep directory (default runs/reproduce/<table>-<scale>[-<dataset>])")
    _add_set_arg(p, "override one config key in every cell (repeatable)")
    add_launch_arguments(p)

    p = sub.add_parser("report", help="curves, t-SNE and a comparison table of finished runs")
    p.add_argument("run_dirs", nargs="+", metavar="RUN_DIR")
    p.add_argument("--out", required=True, help="directory for report.md and the PNGs")
    p.add_argument("--no-tsne", action="store_true", help="skip the t-SNE (needs each run's checkpoint)")
    p.add_argument("--tsne-points", type=int, default=2000)
    p.add_argument("--device", default="cpu")

    p = sub.add_parser("list", help="list registered methods, backbones, datasets, augmentation presets")
    p.add_argument("kind", nargs="?", choices=["methods", "backbones", "datasets", "presets"])

    p = sub.add_parser("plan", help="steps, data size and measured per-device peak memory of a config")
    _add_config_args(p)
    p.add_argument("--gpus", type=int, default=1, help="devices the global train.batch_size is split over")
    p.add_argument("--gpu-memory", type=float, help="GiB per device: say whether the run fits")

    p = sub.add_parser("prepare-data", help="decode an ImageNet-style dataset once, for every run and rank")
    _add_config_args(p)
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="decoding processes")

    _add_config_args(sub.add_parser("show-config", help="print the resolved config as YAML"))
    add_transfer_parsers(sub)
    return parser


def cmd_train(args: argparse.Namespace) -> int:
    from compmod.config import load_config
    from compmod.engine.run import train_and_evaluate
    from compmod.engine.run_dir import resumed_config

    cfg = load_config(args.config, args.overrides)
    if args.resume:  # the run continues with the config it was started with, plus these overrides
        cfg = resumed_config(cfg, args.overrides)
    from compmod.distributed import is_main
    from compmod.engine.ddp import shutdown

    try:
        results = train_and_evaluate(
            cfg, resume=args.resume, overwrite=args.overwrite, log=lambda line: print(line, flush=True)
        )
        if is_main():
            _print_results(results, results["run_dir"])
    finally:
        shutdown()
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from compmod.engine.from_checkpoint import evaluate_checkpoint

    print(json.dumps(evaluate_checkpoint(args.checkpoint, args.protocol, args.overrides), indent=2))
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    from compmod.config.augment_presets import preset_names
    from compmod.data.datasets import DATASETS
    from compmod.methods import METHODS
    from compmod.models import BACKBONES

    kinds = {
        "methods": METHODS.names(),
        "backbones": [*BACKBONES.names(), "timm/<any timm model>"],
        "datasets": DATASETS.names(),
        "presets": preset_names(),
    }
    for kind, names in kinds.items():
        if args.kind in (None, kind):
            print(f"{kind}: {', '.join(names)}" if args.kind is None else "\n".join(names))
    return 0


def cmd_plan(args: argparse.Namespace) -> int:
    from compmod.config import load_config
    from compmod.engine.plan import make_plan

    cfg = load_config(args.config, args.overrides)
    for line in make_plan(cfg, args.gpus).lines(args.gpus, args.gpu_memory):
        print(line)
    return 0


def cmd_prepare_data(args: argparse.Namespace) -> int:
    from compmod.config import load_config
    from compmod.engine.prepare import prepare_data

    print("\n".join(prepare_data(load_config(args.config, args.overrides), args.workers)))
    return 0


def cmd_show_config(args: argparse.Namespace) -> int:
    from compmod.config import dump_config, load_config

    print(dump_config(load_config(args.config, args.overrides)), end="")
    return 0


def _print_results(results: dict, run_dir: str) -> None:
    print(f"run directory: {run_dir}")
    if "knn_top1" in results:
        line = f"kNN top-1 (k-NN, cosine) of the learned encoder: {results['knn_top1']:.2f}%"
        if "pixel_knn_top1" in results:
            gain = results["knn_top1"] - results["pixel_knn_top1"]
            line += f"   raw pixels: {results['pixel_knn_top1']:.2f}%   difference: {gain:+.2f} points"
        print(line)
    if "linear_top1" in results:
        print(f"linear probe: top-1 {results['linear_top1']:.2f}%  top-5 {results['linear_top5']:.2f}%")
    print(
        f"pretraining time: {results['train_time_s']:.1f}s"
        + (f"   evaluation time: {results['eval_time_s']:.1f}s" if "eval_time_s" in results else "")
    )


def _print_table(result) -> None:
    if result.table is None:
        print(
            f"{len(result.ran)} cell jobs submitted; run the same command again for the table once they end"
        )
    else:
        print(f"sweep table: {result.table}" + (f"   figure: {result.figure}" if result.figure else ""))
        print(f"{len(result.ran)} of {len(result.results)} cells run in {result.seconds:.0f}s")


def cmd_sweep(args: argparse.Namespace) -> int:
    from compmod.sweep import Grid, run_sweep

    grid, launch = Grid.from_items(args.grid), launch_options(args)
    result = run_sweep(args.config, args.overrides, grid, args.out, metric=args.metric, launch=launch)
    _print_table(result)
    return 0


def cmd_reproduce(args: argparse.Namespace) -> int:
    from compmod.reproduce import TABLES, reproduce

    launch = launch_options(args)
    result = reproduce(args.table, args.scale, args.out, args.overrides, dataset=args.dataset, launch=launch)
    print(TABLES[args.table].title)
    _print_table(result)
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from compmod.report import write_report

    paths = write_report(
        args.run_dirs, args.out, tsne=not args.no_tsne, tsne_points=args.tsne_points, device=args.device
    )
    print(f"report: {paths['report']}  ({len(paths) - 1} figures)")
    return 0


COMMANDS = {
    "train": cmd_train,
    "eval": cmd_eval,
    "sweep": cmd_sweep,
    "reproduce": cmd_reproduce,
    "report": cmd_report,
    "export": cmd_export,
    "transfer": cmd_transfer,
    "list": cmd_list,
    "show-config": cmd_show_config,
    "plan": cmd_plan,
    "prepare-data": cmd_prepare_data,
}


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except TrainingInterrupted as e:
        print(f"compmod: {e}", file=sys.stderr)
        return 128 + e.signum
    except CompmodError as e:
        print(f"compmod: error: {e}", file=sys.stderr)
        return EXIT_USER_ERROR
    except OSError as e:  # full disk, read-only file system, no permission: one line, not a traceback
        error = FileSystemError.from_os_error(e)
        if error is None:
            raise
        print(f"compmod: error: {error}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print("compmod: interrupted; continue with `compmod train ... --resume`", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
