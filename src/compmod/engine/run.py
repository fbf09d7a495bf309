"""Pretrain then evaluate: what `compmod train` does, callable from Python."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from compmod.config.schema import Config
from compmod.distributed import is_main
from compmod.engine.builders import method_label
from compmod.engine.checkpoint import atomic_write
from compmod.engine.run_dir import RESULTS_FILE, is_rank0, open_run
from compmod.engine.trainer import Trainer
from compmod.eval.protocol import evaluate, selected


def train_and_evaluate(
    cfg: Config,
    resume: bool = False,
    overwrite: bool = False,
    log: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Pretrain `cfg`, evaluate the encoder (when `eval.enabled`) and write `results.json`.

    The run directory is chosen and locked first (`compmod.engine.run_dir.open_run`: `train.run_dir_mode`,
    one process per directory); `log` (rank 0) gets the line "run directory: DIR" (with why, when it is not
    simply `train.run_dir`) before any work. The results hold `run_dir`, the directory written.
    """
    with open_run(cfg, resume=resume, overwrite=overwrite) as plan:
        cfg = plan.cfg
        if log is not None and is_rank0():
            log(f"run directory: {cfg.train.run_dir}" + (f" ({plan.note})" if plan.note else ""))
        return _train_and_evaluate(cfg, plan.resume, overwrite)


def _train_and_evaluate(cfg: Config, resume: bool, overwrite: bool) -> dict[str, Any]:
    trainer = Trainer(cfg, resume=resume, overwrite=overwrite)
    state = trainer.fit()
    train_s = trainer.elapsed_s()  # summed over the processes of a resumed run
    results: dict[str, Any] = {
        "method": method_label(cfg),
        "backbone": cfg.model.backbone,
        "dataset": cfg.data.name,
        "epochs": state.epoch,
        "steps": state.step,
        "train_time_s": round(train_s, 2),
        "run_dir": cfg.train.run_dir,
        # data.validation_fraction: the scores are on images held out of the train split, not the test set
        "eval_split": "test" if cfg.data.validation_fraction is None else "validation",
    }
    if not is_main():  # under torchrun, rank 0 evaluates and writes the results
        return results
    if trainer.probe_data is not None:  # the online probe at the end (a resumed finished run: scored now)
        top1 = trainer.online_linear_top1
        results["online_linear_top1"] = (
            top1
            if top1 is not None
            else trainer.probe.evaluate(  # type: ignore[union-attr]
                trainer.method.backbone, trainer.probe_data, cfg.eval.batch_size, trainer.dtype
            )
        )
    if cfg.eval.enabled:
        which = selected(cfg)
        t1 = time.perf_counter()
        results.update(
            evaluate(
                trainer.method.backbone,
                cfg,
                trainer.device,
                trainer.data.mean,
                trainer.data.std,
                which,
                trainer.dtype,
                method=trainer.method,
            )
        )
        results["eval_time_s"] = round(time.perf_counter() - t1, 2)
    write_results(cfg.train.run_dir, results)
    return results


def write_results(run_dir: str | Path, results: dict[str, Any]) -> Path:
    """`<run_dir>/results.json`, written atomically: its presence marks the run finished."""
    text = (json.dumps(results, indent=2) + "\n").encode()
    return atomic_write(Path(run_dir) / RESULTS_FILE, lambda f: f.write(text))
