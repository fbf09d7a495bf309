"""Pretrain then evaluate: what `compmod train` does, callable from Python."""

from __future__ import annotations

import time
from typing import Any

from compmod.config.schema import Config
from compmod.distributed import is_main
from compmod.engine.builders import method_label
from compmod.engine.trainer import Trainer, write_results
from compmod.eval.protocol import EVALS, evaluate


def train_and_evaluate(cfg: Config, resume: bool = False, overwrite: bool = False) -> dict[str, Any]:
    t0 = time.perf_counter()
    trainer = Trainer(cfg, resume=resume, overwrite=overwrite)
    state = trainer.fit()
    train_s = time.perf_counter() - t0
    results: dict[str, Any] = {
        "method": method_label(cfg),
        "backbone": cfg.model.backbone,
        "dataset": cfg.data.name,
        "epochs": state.epoch,
        "steps": state.step,
        "train_time_s": round(train_s, 2),
    }
    if not is_main():  # under torchrun, rank 0 evaluates and writes the results
        return results
    if cfg.eval.enabled:
        which = [w for w in EVALS if w != "linear" or cfg.eval.linear]
        which = [w for w in which if w != "pixel_knn" or cfg.eval.pixel_knn]
        if cfg.eval.semi:
            which.append("semi")
        t1 = time.perf_counter()
        results.update(
            evaluate(
                trainer.method.encode,
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
