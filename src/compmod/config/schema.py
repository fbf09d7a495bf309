"""The typed run configuration. Layering: dataclass defaults <- method preset <- YAML file <- --set."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from compmod.config.augment import AugmentConfig


@dataclass
class DataConfig:
    name: str = "fashion_mnist"
    root: str | None = None  # None: the dataset's standard locations
    image_size: int | None = None  # None: the dataset's native size
    channels: int | None = None  # None: 1 for grey data, 3 for colour
    subset: int | None = None  # pretrain on the first N training images only
    holdout_fraction: float = 0.1  # `folder` data with no test/val split: seeded held-out fraction
    # tuning: this stratified fraction of the labelled train images is the evaluation ("test") split and is
    # left out of pretraining, the kNN bank and the probes; the test set is not read (data/build.py)
    validation_fraction: float | None = None
    on_bad_image: Literal["fail", "skip"] = "fail"  # an unreadable image file: stop, or skip and log it
    # imagenet, imagenet100: the prepared store (`compmod prepare-data`): shorter side the train images are
    # kept at (null: image_size / 0.875, 256 for 224) and the folder of stores (null: the cache folder)
    store_side: int | None = None
    store_dir: str | None = None


@dataclass
class ModelConfig:
    backbone: str = "small_cnn"  # a registered name (`compmod list backbones`) or timm/<any timm model>
    cifar_stem: bool | None = None  # ResNets: 3x3 conv1 without max-pool; None: when image_size <= 64
    timm_args: dict[str, Any] = field(default_factory=dict)  # timm/...: more constructor arguments


@dataclass
class MethodConfig:
    """`name` picks the method; `params` holds that method's own typed parameters."""

    name: str = "simclr"
    params: Any = None


@dataclass
class MetaConfig:
    """The bi-level update of xi (Algorithm 1)."""

    mode: Literal["jvp", "exact", "off"] = "jvp"  # off = the paper's "No bi-level" ablation
    # look-ahead: null = the main optimiser's own next step (momentum, weight decay, LARS trust ratios and
    # clipping; engine/optim.py `tentative_step`); a number r = Eq. 9 as written, omega - r * grad
    r: float | None = None
    every: int = 1  # update xi every K steps
    optimizer: Literal["sgd", "adam"] = "sgd"
    lr: float | None = None  # xi's learning rate; null: the current learning rate (Algorithm 1 uses r)
    momentum: float = 0.9


@dataclass
class CompModConfig:
    """Meta Comprehensive Regularization, attached to any method with `enabled: true`."""

    enabled: bool = False
    fusion: Literal["concat_h", "concat_z", "mixup_h"] = "concat_h"
    mixup_alpha: float | None = None  # mixup_h: fixed alpha; null: alpha ~ U(0, 1) per sample
    lambda1: float = 1.0  # weight of L_mcr in the real step (mec scale)
    lambda2: float = 1.0  # weight of L_comp in the meta step (mec scale)
    order: int = 4  # Taylor order of the log-det series (even)
    eps_sq: float = 64.0  # MEC's eps^2: lam = d / (m * eps_sq)
    lambda_warmup_epochs: float = 1.0  # lam rises from lam/8 to lam (MEC's schedule)
    scale: Literal["mec", "paper"] = "mec"
    detach_input: bool = False  # detach h (z for concat_z) on its way into g_xi in the real step
    meta: MetaConfig = field(default_factory=MetaConfig)


@dataclass
class LarsConfig:
    """LARS (engine/optim.py). "fair": FAIR barlowtwins/vicreg's trust ratio eta |w| / |g + wd w|;
    "solo": solo-learn's eta |w| / (|g| + wd |w| + eps), with `clip_lr` capped so the step never exceeds
    the scheduled lr (solo-learn's CIFAR and ImageNet recipes: eta 0.02, clip_lr and exclude_bias_n_norm
    true)."""

    rule: Literal["fair", "solo"] = "fair"
    eta: float = 0.001  # trust coefficient
    clip_lr: bool = False  # solo only
    exclude_bias_n_norm: bool = True  # biases and normalisation parameters: no adaptation (and no decay)
    eps: float = 1e-8  # solo only: added to the ratio's denominator


@dataclass
class TrainConfig:
    epochs: int = 10
    batch_size: int = 256
    lr: float = 0.3  # peak learning rate after warm-up
    optimizer: Literal["sgd", "lars", "adamw"] = "sgd"
    momentum: float = 0.9
    weight_decay: float = 1e-4  # not applied to biases and normalisation parameters
    lars: LarsConfig = field(default_factory=LarsConfig)  # with optimizer: lars
    warmup_epochs: float = 1.0
    # lr at the first warm-up step (engine/schedule.py `warmup_cosine`): null = lr / warm-up steps, rising by
    # as much each step; a number = solo-learn's scheduler.warmup_start_lr (default 3e-5), rising linearly to
    # lr at the last warm-up step (Lightning Bolts' LinearWarmupCosineAnnealingLR)
    warmup_start_lr: float | None = None
    min_lr_ratio: float = 0.0  # cosine decays to lr * min_lr_ratio
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    seed: int = 0
    threads: int | None = None  # torch intra-op threads on CPU; None: torch's default
    run_dir: str = "runs/default"
    # exact: write to run_dir; refuse one that holds a run (unless --resume / --overwrite). auto: continue
    # the unfinished run in run_dir when its config is this one, else use the first of run_dir, run_dir-2,
    # run_dir-3, ... that holds no run (engine/run_dir.py); `make demo` uses it.
    run_dir_mode: Literal["exact", "auto"] = "exact"
    max_steps: int | None = None  # stop after this many optimizer steps (smoke tests)
    # metrics.jsonl gets every N-th step's loss parts; in between the values stay on the device (reading
    # them makes the host wait for the device), and signals are acted on at these steps
    log_every: int = 50
    checkpoint_every: int | None = None  # also checkpoint every N steps mid-epoch (None: epoch ends only)
    progress: bool = True
    # metrics.jsonl always; its numeric values also to TensorBoard (<run_dir>/tensorboard) or Weights & Biases
    # (offline by default: <run_dir>/wandb, uploaded later with `wandb sync`); engine/log_sinks.py
    logger: Literal["none", "tensorboard", "wandb"] = "none"
    wandb_project: str = "compmod"
    wandb_mode: Literal["offline", "online"] = "offline"
    dtype: Literal["float32", "float64"] = "float32"  # float64 to check the maths
    # Speed options (engine/step.py; defaults chosen by `make bench`):
    # autocast of the method's forward only (losses stay fp32); auto: bf16 where native, else fp32
    precision: Literal["fp32", "bf16", "fp16", "auto"] = "fp32"
    channels_last: bool | None = None  # None: the measured default for the device
    compile: bool = False  # torch.compile the real forward (slower for the small CNN on CPU)
    # Data parallelism (under torchrun): batch_size is the GLOBAL batch, split equally over the ranks.
    sync_bn: bool = False  # BatchNorm statistics over the global batch (equals one process on it)


@dataclass
class EvalConfig:
    enabled: bool = True
    knn_k: int = 5  # cosine kNN, majority vote (the paper's 5-NN)
    knn_weighted_k: int = 200  # temperature-weighted kNN (InstDisc / solo-learn protocol)
    knn_temperature: float = 0.07
    linear: bool = True
    linear_epochs: int = 30
    linear_lr: float = 0.1
    linear_batch_size: int = 512
    pixel_knn: bool = True
    # the raw-pixel floor of a large dataset fits: at most this many train images (evenly spaced), each
    # at most this side (antialiased resize); results.json says when either applied (eval/pixel_floor.py)
    pixel_knn_max_images: int = 100_000
    pixel_knn_size: int = 32
    batch_size: int = 512  # feature extraction
    # feature extraction: BatchNorm folded, forward in fp32 or bf16 autocast; "auto": bf16 where the device
    # computes it natively (CPUs with AVX512-BF16 or AMX, CUDA GPUs with bf16), else fp32 (eval/inference.py)
    precision: Literal["auto", "fp32", "bf16"] = "auto"
    train_subset: int | None = None  # labelled train images used as kNN bank / probe data; None: all
    test_subset: int | None = None  # the first N test images only (quick evaluations); None: all
    # Online monitor (engine/monitor.py): kNN top-1 on a held-out fifth of the first monitor_images labelled
    # train images, and effective rank / coding rate of h and z, every N epochs and at the end (None: off).
    monitor_every: int | None = None
    monitor_images: int = 5000
    # Online linear probe (engine/online_probe.py, solo-learn's online classifier): a linear head on the
    # detached h of both views, trained by its own SGD during pretraining (rate online_linear_lr at the peak
    # of the schedule), scored on the test split every epoch: epoch_online_linear_top1, online_linear_top1
    # (with eval.enabled, on labelled pretraining images)
    online_linear: bool = True
    online_linear_lr: float = 0.1
    # Semi-supervised fine-tuning (eval/semi_supervised.py; SimCLR App. B.5, the paper's Table 3):
    semi: bool = False  # also run it in `compmod train`'s evaluation (`compmod eval semi` runs it on demand)
    semi_fractions: list[float] = field(default_factory=lambda: [0.01, 0.1])  # class-balanced label fractions
    semi_epochs: int = 30  # SimCLR: 30 epochs for 10 % (60 for 1 %)
    semi_lr: float = 0.05  # backbone: SimCLR's 0.05 x batch / 256 at batch 256 (Nesterov SGD, no decay)
    semi_head_lr: float = 0.05  # new linear head: SimCLR's one rate (Barlow Twins: backbone 0.002, head 0.5)
    semi_batch_size: int = 256


@dataclass
class Config:
    data: DataConfig = field(default_factory=DataConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    method: MethodConfig = field(default_factory=MethodConfig)
    compmod: CompModConfig = field(default_factory=CompModConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
