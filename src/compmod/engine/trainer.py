"""The training loop: one code path for CPU, CUDA and torchrun data parallelism.

The trained weights are exported as safetensors to `<run_dir>/weights/` (backbone.safetensors,
model.safetensors). Checkpoints are written (by rank 0, atomically) at every epoch end, every
`train.checkpoint_every` steps, at `train.max_steps`, and when SIGTERM/SIGINT arrives (then the run
stops cleanly). A checkpoint holds everything a run depends on, so a run resumed from it ends with exactly
the weights of an uninterrupted one: model (with EMA teachers, queues and step buffers), optimiser,
CompMod's head, optimiser, lambda warm-up step and generator, the AMP scaler, every RNG state in use, and
the position in the data order (epoch, batch; the order itself is a seeded function of the epoch).

Data parallel: `train.batch_size` is the global batch. Every rank draws the same global batch indices and
the same augmentation parameters for it, then takes its equal share of both (`distributed.local_rows`),
so with `train.sync_bn` the run equals a single process on the global batch.
"""

from __future__ import annotations

import logging
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from compmod.config.load import config_to_dict, dump_config
from compmod.config.schema import Config
from compmod.data.build import build_dataset
from compmod.distributed import broadcast_, is_initialized, is_main, local_rows
from compmod.engine.builders import build_augmentations, build_train_step, method_label
from compmod.engine.checkpoint import atomic_write, load_checkpoint, remove_stale_temporaries, save_checkpoint
from compmod.engine.checkpoint_content import load_entry, load_matching
from compmod.engine.ddp import any_rank, barrier, check_batch_split, init_distributed
from compmod.engine.device import resolve_device, seed_everything, set_threads
from compmod.engine.export import export_weights
from compmod.engine.feed import build_feed
from compmod.engine.log_sinks import open_sink
from compmod.engine.metrics import MetricsLogger, StepMeter, truncate_metrics
from compmod.engine.monitor import OnlineMonitor
from compmod.engine.rng_state import rng_states, set_rng_states
from compmod.engine.run_dir import check_start, checkpoint_path
from compmod.engine.schedule import warmup_cosine
from compmod.engine.signals import StopSignals
from compmod.errors import CheckpointError, CompmodError, NonFiniteLossError, TrainingInterrupted
from compmod.eval.inference import inference_encoder, resolve_precision

__all__ = ["RunState", "Trainer", "checkpoint_path"]
_log = logging.getLogger("compmod.engine")


@dataclass
class RunState:
    epoch: int = 0  # epochs completed
    batch: int = 0  # batches done in the current epoch (non-zero only after a mid-epoch stop)
    step: int = 0  # optimizer steps taken


class Trainer:
    """Pretrains `cfg.method` on `cfg.data`, then evaluates (when `eval.enabled`).

    `resume=True` continues from `<run_dir>/checkpoints/last.pt`; `overwrite=False` refuses to start
    over a run directory that already holds a checkpoint or results.json (so no finished work is lost by
    a typo). The Trainer does not lock the directory: `train_and_evaluate` does (engine/run_dir.py).
    """

    def __init__(self, cfg: Config, resume: bool = False, overwrite: bool = False) -> None:
        self._clock, self._seconds_before = time.perf_counter(), 0.0  # see elapsed_s
        self.cfg = cfg
        self.run_dir = Path(cfg.train.run_dir)
        self.ckpt_path = checkpoint_path(self.run_dir)
        check_start(self.run_dir, resume, overwrite)
        set_threads(cfg.train.threads)
        seed_everything(cfg.train.seed)
        self.device = init_distributed(resolve_device(cfg.train.device))
        check_batch_split(cfg.train.batch_size)
        self.local = local_rows(cfg.train.batch_size)  # this rank's rows of every global batch
        self.data = build_dataset(cfg, "pretrain", prepare=not is_initialized())  # torchrun: never decode
        c, h, w = self.data.images.shape[1:]
        self.image_size = h
        self.dtype = getattr(torch, cfg.train.dtype)
        self.steps_per_epoch = len(self.data) // cfg.train.batch_size
        if self.steps_per_epoch == 0:
            raise CompmodError(
                f"train.batch_size={cfg.train.batch_size} is larger than the {len(self.data)} pretraining "
                "images; lower train.batch_size or raise data.subset"
            )
        labelled = bool((self.data.labels >= 0).any())  # the online probe needs labels to learn from
        classes = len(self.data.classes) if labelled else None
        self.step_fn = build_train_step(cfg, c, h, self.device, self.steps_per_epoch, num_classes=classes)
        self.probe = self.step_fn.probe  # scored on the test split at epoch ends, by rank 0
        self.probe_data = build_dataset(cfg, "test", prepare=False) if self.probe and is_main() else None
        self.online_linear_top1: float | None = None
        step_fn = self.step_fn
        self.method, self.optimizer, self.compmod = step_fn.method, step_fn.optimizer, step_fn.compmod
        if self.compmod is not None:  # every rank starts from rank 0's head
            broadcast_([*self.compmod.head.parameters(), *self.compmod.head.buffers()])
        self.views = [v.to(self.device) for v in build_augmentations(cfg, h, self.data.mean, self.data.std)]
        self.feed = build_feed(self.data, self.views, self.local, self.device, cfg.train.seed)
        self.total_steps = cfg.train.epochs * self.steps_per_epoch
        self.min_lr = cfg.train.lr * cfg.train.min_lr_ratio
        self.state = RunState()
        # online kNN + representation diagnostics every eval.monitor_every epochs (rank 0 logs them)
        self.monitor = OnlineMonitor(cfg, self.device) if cfg.eval.monitor_every and is_main() else None
        if resume:
            self._restore(load_checkpoint(self.ckpt_path))

    # ---- checkpoints -------------------------------------------------------------------------------
    def _checkpoint(self) -> dict[str, Any]:
        return {
            "method": method_label(self.cfg),
            "model": self.method.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "epoch": self.state.epoch,
            "batch": self.state.batch,
            "step": self.state.step,
            "seconds": self.elapsed_s(),
            "rng": rng_states(),
            "compmod": self.compmod.state_dict() if self.compmod is not None else None,
            "step_fn": self.step_fn.state_dict(),
            "online_probe": self.probe.state_dict() if self.probe is not None else None,
            "config": config_to_dict(self.cfg),
            "data": {
                "shape": list(self.data.images.shape[1:]),
                "mean": list(self.data.mean),
                "std": list(self.data.std),
            },
        }

    def _restore(self, state: dict[str, Any]) -> None:
        """Load every part of the run from `state`; a part that does not fit is a one-line CheckpointError."""
        path = self.ckpt_path
        load_matching(self.method, state["model"], path, "the resumed config (with any --set overrides)")
        load_entry(self.optimizer.load_state_dict, state.get("optimizer"), path, "optimizer")
        if self.compmod is not None:
            if state.get("compmod") is None:
                raise CheckpointError(f"{str(path)!r} was written without CompMod; cannot resume with it")
            load_entry(self.compmod.load_state_dict, state["compmod"], path, "compmod")
        elif state.get("compmod") is not None:
            raise CheckpointError(f"{str(path)!r} was written with CompMod; resume with compmod.enabled=true")
        load_entry(self.step_fn.load_state_dict, state.get("step_fn", {}), path, "step_fn")
        if self.probe is not None and state.get("online_probe") is not None:
            load_entry(self.probe.load_state_dict, state["online_probe"], path, "online_probe")
        load_entry(set_rng_states, state.get("rng"), path, "rng")
        try:
            self.state = RunState(int(state["epoch"]), int(state["batch"]), int(state["step"]))
            self._seconds_before = float(state.get("seconds", 0.0))  # absent before 2026-12: not counted
        except (KeyError, TypeError, ValueError):
            raise CheckpointError(f"{str(path)!r} has no valid epoch, batch, step or seconds") from None

    def elapsed_s(self) -> float:
        """Wall-clock seconds of the run, summed over the processes up to the checkpoint each resumed."""
        return self._seconds_before + time.perf_counter() - self._clock

    # ---- the loop ----------------------------------------------------------------------------------
    def fit(self) -> RunState:
        cfg = self.cfg.train
        logger = None
        if is_main():
            self.run_dir.mkdir(parents=True, exist_ok=True)
            for folder in (self.ckpt_path.parent, self.run_dir / "weights"):
                for stale in remove_stale_temporaries(folder):  # left by a process killed mid-write
                    _log.warning("removed %s, left by a run killed while writing it", stale)
            text = dump_config(self.cfg).encode()
            atomic_write(self.run_dir / "config.yaml", lambda f: f.write(text))
            truncate_metrics(self.run_dir, self.state.step)  # steps after the checkpoint are run again
            sink = open_sink(
                cfg.logger, self.run_dir, config_to_dict(self.cfg), cfg.wandb_project, cfg.wandb_mode
            )
            logger = MetricsLogger(self.run_dir, sink)
        warmup = round(cfg.warmup_epochs * self.steps_per_epoch)
        try:
            with StopSignals() as signals:
                while self.state.epoch < cfg.epochs and not self._max_steps_reached():
                    self._epoch(logger, warmup, signals)
            if is_main():
                meta = {"method": method_label(self.cfg), "backbone": self.cfg.model.backbone}
                export_weights(self.method, self.run_dir / "weights", meta)
        finally:
            if logger is not None:
                logger.close()
        return self.state

    def save(self) -> None:
        """Write the checkpoint (rank 0) and wait until it is on disk (every rank)."""
        if is_main():
            save_checkpoint(self._checkpoint(), self.ckpt_path)
        barrier()

    def _max_steps_reached(self) -> bool:
        return self.cfg.train.max_steps is not None and self.state.step >= self.cfg.train.max_steps

    def _epoch(self, logger: MetricsLogger | None, warmup: int, signals: StopSignals) -> None:
        cfg, epoch = self.cfg.train, self.state.epoch
        self.method.train()
        if self.compmod is not None:
            self.compmod.train()
        order = torch.randperm(
            len(self.data), generator=torch.Generator().manual_seed(cfg.seed * 1000 + epoch)
        )
        batches = range(self.state.batch, self.steps_per_epoch)
        bar = tqdm(batches, desc=f"epoch {epoch + 1}/{cfg.epochs}", disable=not cfg.progress or not is_main(),
                   leave=False, dynamic_ncols=True)  # fmt: skip
        t0, done, meter = time.perf_counter(), 0, StepMeter()
        for i, (x1, x2) in zip(bar, self.feed.epoch(order, epoch, batches, cfg.batch_size), strict=True):
            lr = warmup_cosine(
                self.state.step, self.total_steps, warmup, cfg.lr, self.min_lr, cfg.warmup_start_lr
            )
            x1, x2 = (self.step_fn.prepare(x.to(self.dtype)) for x in (x1, x2))
            labels = self._labels(order, i) if self.probe is not None else None
            total, parts = self.step_fn.step(x1, x2, lr, (self.state.step + 1) / self.total_steps, labels)
            meter.add(self.state.step, {"loss": total, **parts})  # on the device: nothing waits
            self.state.step, self.state.batch, done = self.state.step + 1, i + 1, done + 1
            every = cfg.checkpoint_every
            save = every is not None and self.state.step % every == 0 and i + 1 < self.steps_per_epoch
            if self.state.step % cfg.log_every == 0 or done == 1 or save or self._max_steps_reached():
                last = self._read(meter, epoch)  # waits for the device, every log_every steps
                if logger is not None:
                    logger.log({"epoch": epoch + 1, "lr": lr, **last}, self.state.step)
                bar.set_postfix(loss=f"{last['loss']:.4f}")
                if any_rank(signals.requested):  # every rank stops after the same step
                    self._stop(signals.signum)
            if save:
                self.save()  # (the epoch end saves anyway)
            if self._max_steps_reached():
                break
        bar.close()
        self._end_epoch(logger, meter, done, time.perf_counter() - t0)

    def _end_epoch(self, logger: MetricsLogger | None, meter: StepMeter, done: int, elapsed: float) -> None:
        """The epoch's summary (means, throughput, data wait, the monitor when due) logged and printed;
        the position advanced to the next epoch when this one is complete; the checkpoint written."""
        cfg, epoch = self.cfg.train, self.state.epoch
        self._read(meter, epoch)
        summary = {f"epoch_{k}": v / max(1, done) for k, v in meter.read()[1].items()}
        images_per_s = done * cfg.batch_size / max(elapsed, 1e-9)
        summary.update(epoch=epoch + 1, images_per_s=images_per_s, epoch_time_s=elapsed)
        summary["data_wait_s"] = self.feed.waited_s  # the steps' wait for the reading thread
        if self._monitor_due(epoch):
            assert self.monitor is not None
            summary.update(
                {f"epoch_{k}": v for k, v in self.monitor.measure(self.method, self.dtype).items()}
            )
        if self.probe_data is not None and self.state.batch == self.steps_per_epoch:
            summary["epoch_online_linear_top1"] = self.online_linear_top1 = self.probe_accuracy()
        if logger is not None:
            logger.log(summary, self.state.step)
        if cfg.progress and is_main():
            loss = summary["epoch_loss"]
            print(
                f"epoch {epoch + 1}/{cfg.epochs}  loss {loss:.4f}  {images_per_s:.0f} img/s  {elapsed:.1f}s",
                flush=True,
            )
        if self.state.batch == self.steps_per_epoch:
            self.state.epoch, self.state.batch = epoch + 1, 0
        self.save()

    def _read(self, meter: StepMeter, epoch: int) -> dict[str, float]:
        """The last step's values; a NonFiniteLossError naming the first step whose loss was not finite."""
        last, _, bad, values = meter.read()
        if bad >= 0:
            where = str(self.ckpt_path) if self.ckpt_path.is_file() else "none yet"
            parts = ", ".join(f"{k}={v:.4g}" for k, v in values.items() if k != "loss")
            raise NonFiniteLossError(
                f"non-finite loss {values['loss']} at epoch {epoch + 1}, step {bad} ({'parts: ' + parts}); "
                f"last good checkpoint: {where}; lower train.lr or check the data"
            )
        return last

    def probe_accuracy(self) -> float:
        """The online probe's top-1 on the test split, the backbone run as the final evaluation runs it."""
        e, device = self.cfg.eval, self.device
        precision = resolve_precision(e.precision, device, self.dtype)
        encode = inference_encoder(self.method.backbone, precision, device, self.cfg.train.channels_last)
        return self.probe.evaluate(encode, self.probe_data, e.batch_size, self.dtype)  # type: ignore[union-attr,arg-type]

    def _labels(self, order: torch.Tensor, i: int) -> torch.Tensor:
        """This rank's labels of batch i (the feed's rows of it), on the device."""
        rows = order[i * self.cfg.train.batch_size : (i + 1) * self.cfg.train.batch_size][self.local]
        return self.data.labels[rows].to(self.device, non_blocking=True)

    def _monitor_due(self, epoch: int) -> bool:
        """At the end of every eval.monitor_every-th epoch, and of the last one."""
        if self.monitor is None or self.state.batch != self.steps_per_epoch:
            return False
        return (epoch + 1) % (self.cfg.eval.monitor_every or 1) == 0 or epoch + 1 == self.cfg.train.epochs

    def _stop(self, signum: int | None) -> None:
        """Checkpoint, then leave the loop with TrainingInterrupted (a signal arrived)."""
        self.save()
        signum = signum if signum is not None else signal.SIGTERM  # another rank got it
        raise TrainingInterrupted(
            f"stopped by {signal.Signals(signum).name} after step {self.state.step}; checkpoint written to "
            f"{str(self.ckpt_path)!r}; continue with `compmod train --config "
            f"{self.run_dir / 'config.yaml'} --resume`",
            signum,
        )
