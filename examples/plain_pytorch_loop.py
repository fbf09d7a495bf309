"""SimCLR on Fashion-MNIST in a plain PyTorch loop; CompMod is added by the lines with a trailing CompMod
comment.

Everything else is the user's own code: a torchvision ResNet-18, a small projector, a crop + flip
augmentation in plain torch, an SGD optimiser and a hand-written loop. From compmod it uses only the
NT-Xent loss, the CompMod regularizer and the kNN metric. Delete the CompMod lines and what remains is a
complete plain SimCLR loop.

    python examples/plain_pytorch_loop.py --steps 50 --batch-size 256
    python examples/plain_pytorch_loop.py --steps 3 --batch-size 32 --device cpu   # smoke run

Data: the IDX files of Debian's `dataset-fashion-mnist` (`--data-dir`); random images (and a note) if
they are missing.
"""

from __future__ import annotations

import argparse
import gzip
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models import resnet18

from compmod.eval import knn_accuracy
from compmod.losses import ntxent
from compmod.regularizers import CompMod  # CompMod

MEAN, STD = 0.2860, 0.3530  # Fashion-MNIST pixel statistics


def read_idx(path: Path, offset: int) -> np.ndarray:
    """The payload of a gzipped IDX file: header of `offset` bytes skipped, uint8 values."""
    with gzip.open(path, "rb") as f:
        return np.frombuffer(f.read(), dtype=np.uint8, offset=offset)


def load_split(root: Path, split: str, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """First n images (n, 1, 28, 28) uint8 and labels (n,) int64 of split 'train' or 't10k'.

    Random images and labels, with a printed note, if the files are missing.
    """
    images, labels = root / f"{split}-images-idx3-ubyte.gz", root / f"{split}-labels-idx1-ubyte.gz"
    if not (images.is_file() and labels.is_file()):
        print(f"note: {images} not found; using random images (the kNN number is then meaningless)")
        return torch.randint(0, 256, (n, 1, 28, 28), dtype=torch.uint8), torch.randint(0, 10, (n,))
    x = torch.from_numpy(read_idx(images, 16).reshape(-1, 1, 28, 28)[:n].copy())
    y = torch.from_numpy(read_idx(labels, 8)[:n].astype(np.int64))
    return x, y


def normalize(x: torch.Tensor) -> torch.Tensor:
    """uint8 (B, 1, H, W) -> float, standardised with the dataset statistics."""
    return (x.float() / 255 - MEAN) / STD


def augment(x: torch.Tensor, pad: int = 4) -> torch.Tensor:
    """One random view per image: crop back to size after zero padding, horizontal flip, brightness and
    contrast jitter. x: float (B, C, H, W), normalised; parameters drawn per sample."""
    b, c, h, w = x.shape
    padded = F.pad(x, (pad, pad, pad, pad), value=-MEAN / STD)  # pad with black
    dy = torch.randint(0, 2 * pad + 1, (b, 1), device=x.device)
    dx = torch.randint(0, 2 * pad + 1, (b, 1), device=x.device)
    rows = (dy + torch.arange(h, device=x.device))[:, :, None]  # (B, H, 1)
    cols = (dx + torch.arange(w, device=x.device))[:, None, :]  # (B, 1, W)
    out = padded[torch.arange(b, device=x.device)[:, None, None], :, rows, cols].permute(0, 3, 1, 2)
    out = torch.where(torch.rand(b, 1, 1, 1, device=x.device) < 0.5, out.flip(-1), out)
    scale = 1 + 0.8 * (torch.rand(b, 1, 1, 1, device=x.device) - 0.5)  # contrast in [0.6, 1.4]
    shift = 0.8 * (torch.rand(b, 1, 1, 1, device=x.device) - 0.5)  # brightness in [-0.4, 0.4] (std units)
    mean = out.mean(dim=(1, 2, 3), keepdim=True)
    return (out - mean) * scale + mean + shift


class SimCLR(nn.Module):
    """ResNet-18 encoder f (28 px stem) and projector g; forward(x1, x2) -> (loss, (h1, h2), (z1, z2))."""

    def __init__(self, proj_dim: int = 128, temperature: float = 0.5) -> None:
        super().__init__()
        self.temperature = temperature
        self.backbone = resnet18(weights=None)
        self.backbone.conv1 = nn.Conv2d(1, 64, kernel_size=3, stride=1, padding=1, bias=False)
        self.backbone.maxpool = nn.Identity()
        self.backbone.fc = nn.Identity()  # h: (B, 512)
        self.projector = nn.Sequential(
            nn.Linear(512, 512), nn.BatchNorm1d(512), nn.ReLU(), nn.Linear(512, proj_dim)
        )

    def forward(self, x1: torch.Tensor, x2: torch.Tensor):
        h1, h2 = self.backbone(x1), self.backbone(x2)
        z1, z2 = self.projector(h1), self.projector(h2)
        return ntxent(z1, z2, self.temperature), (h1, h2), (z1, z2)


def batches(images: torch.Tensor, batch_size: int, generator: torch.Generator):
    """Endless shuffled batches of `images` (each epoch a new permutation; the last partial batch dropped)."""
    while True:
        perm = torch.randperm(images.shape[0], generator=generator)
        for start in range(0, images.shape[0] - batch_size + 1, batch_size):
            yield images[perm[start : start + batch_size]]


@torch.no_grad()
def features(encoder: nn.Module, images: torch.Tensor, device: torch.device) -> torch.Tensor:
    """(N, 512) float features of uint8 images, encoder in eval mode."""
    encoder.eval()
    feats = [encoder(normalize(images[i : i + 256].to(device))) for i in range(0, len(images), 256)]
    encoder.train()
    return torch.cat(feats)


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=50)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=0.06)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--subset", type=int, default=10000, help="pretrain on the first N training images")
    p.add_argument("--eval-size", type=int, default=1000, help="kNN bank size (queries: half as many)")
    p.add_argument("--log-every", type=int, default=10)
    p.add_argument("--data-dir", type=Path, default=Path("/usr/share/datasets/fashion-mnist"))
    p.add_argument("--seed", type=int, default=0)
    return p.parse_args()


def main() -> None:
    args = parse_args()
    torch.manual_seed(args.seed)
    device = torch.device(args.device)
    images, labels = load_split(args.data_dir, "train", max(args.subset, args.eval_size))
    train_images = images[: args.subset]
    if len(train_images) < args.batch_size:
        sys.exit(f"--subset ({len(train_images)} images) must be at least --batch-size ({args.batch_size})")

    model = SimCLR().to(device)
    opt = torch.optim.SGD(model.parameters(), lr=args.lr, momentum=0.9, weight_decay=5e-4)
    reg = CompMod(feat_dim=512, emb_dim=128).to(device)  # CompMod

    data = batches(train_images, args.batch_size, torch.Generator().manual_seed(args.seed))
    start = time.perf_counter()
    for step in range(1, args.steps + 1):
        x = normalize(next(data).to(device))
        x1, x2 = augment(x), augment(x)
        ssl, h, z = model(x1, x2)
        loss = ssl
        parts = {"ssl": ssl.item()}
        reg_out = reg.regularize(h, z)  # CompMod
        loss = loss + reg_out.loss  # CompMod
        parts.update({k: float(v) for k, v in reg_out.parts.items()})  # CompMod
        if not math.isfinite(loss.item()):
            sys.exit(f"step {step}: loss is {loss.item()}, stopping")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        meta = reg.meta_step(model, x1, x2, opt.param_groups[0]["lr"], reg_out.context)  # CompMod
        parts.update({k: float(v) for k, v in meta.items()})  # CompMod
        opt.step()
        if step == 1 or step == args.steps or (args.log_every > 0 and step % args.log_every == 0):
            shown = "  ".join(f"{k} {v:.4f}" for k, v in parts.items())
            print(f"step {step}/{args.steps}  {shown}  ({time.perf_counter() - start:.1f} s)", flush=True)

    # 5-NN top-1 of the encoder's features: labelled bank from the training split, queries from the test split
    bank_x, bank_y = images[: args.eval_size], labels[: args.eval_size]
    query_x, query_y = load_split(args.data_dir, "t10k", max(args.eval_size // 2, 1))
    acc = knn_accuracy(
        features(model.backbone, bank_x, device), bank_y, features(model.backbone, query_x, device), query_y
    )
    print(f"5-NN top-1 on {len(query_y)} held-out test images ({len(bank_y)} labelled): {acc:.2f} %")


if __name__ == "__main__":
    main()
