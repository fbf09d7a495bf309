"""`compmod` command line: subcommands that only call library functions.

Errors caused by input (config, data, paths, checkpoints) print one line and exit with code 2.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

from compmod.errors import CompmodError, TrainingInterrupted

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
    p.add_argument("protocol", choices=["knn", "linear", "all"])
    p.add_argument(
        "--checkpoint", required=True, help="path to a checkpoint (e.g. RUN_DIR/checkpoints/last.pt)"
    )
    _add_set_arg(p, "override a key of the checkpoint's config (e.g. eval.knn_k=20)")

    p = sub.add_parser("list", help="list registered methods, backbones, datasets, augmentation presets")
    p.add_argument("kind", nargs="?", choices=["methods", "backbones", "datasets", "presets"])

    p = sub.add_parser("show-config", help="print the resolved config as YAML")
    _add_config_args(p)
    return parser


def cmd_train(args: argparse.Namespace) -> int:
    from compmod.config import load_config
    from compmod.engine.checkpoint import load_checkpoint
    from compmod.engine.run import train_and_evaluate
    from compmod.engine.trainer import checkpoint_path
    from compmod.errors import CheckpointError

    cfg = load_config(args.config, args.overrides)
    if args.resume and not checkpoint_path(cfg.train.run_dir).is_file():
        raise CheckpointError(
            f"--resume: no checkpoint at {str(checkpoint_path(cfg.train.run_dir))!r}; start without --resume"
        )
    if args.resume:  # the run continues with the config it was started with, plus these overrides
        from compmod.config.load import apply_override, config_from_dict

        raw = load_checkpoint(checkpoint_path(cfg.train.run_dir))["config"]
        for item in args.overrides:
            apply_override(raw, item)
        cfg = config_from_dict(raw)
    from compmod.distributed import is_main
    from compmod.engine.ddp import shutdown

    try:
        results = train_and_evaluate(cfg, resume=args.resume, overwrite=args.overwrite)
        if is_main():
            _print_results(results, cfg.train.run_dir)
    finally:
        shutdown()
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from compmod.config.load import apply_override, config_from_dict
    from compmod.engine.builders import build_method
    from compmod.engine.checkpoint import load_checkpoint
    from compmod.engine.device import resolve_device
    from compmod.eval.protocol import evaluate

    state = load_checkpoint(args.checkpoint)
    raw = state["config"]
    for item in args.overrides:
        apply_override(raw, item)
    cfg = config_from_dict(raw)
    c, h, _ = state["data"]["shape"]
    method = build_method(cfg, c, h)
    method.load_state_dict(state["model"])
    device = resolve_device(cfg.train.device)
    method.to(device)
    which = {"knn": ["knn"], "linear": ["linear"], "all": ["knn", "linear", "pixel_knn"]}[args.protocol]
    mean, std = tuple(state["data"]["mean"]), tuple(state["data"]["std"])
    print(json.dumps(evaluate(method.encode, cfg, device, mean, std, which), indent=2))
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    from compmod.data.datasets import DATASETS
    from compmod.data.presets import preset_names
    from compmod.methods import METHODS
    from compmod.models import BACKBONES

    kinds = {
        "methods": METHODS.names(),
        "backbones": BACKBONES.names(),
        "datasets": DATASETS.names(),
        "presets": preset_names(),
    }
    for kind, names in kinds.items():
        if args.kind in (None, kind):
            print(f"{kind}: {', '.join(names)}" if args.kind is None else "\n".join(names))
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


COMMANDS = {"train": cmd_train, "eval": cmd_eval, "list": cmd_list, "show-config": cmd_show_config}


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
    except KeyboardInterrupt:
        print("compmod: interrupted; continue with `compmod train ... --resume`", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
