"""CompMod on a timm ViT: the training step's time plain and with CompMod (jvp, exact, off), and what the
math attention kernel costs inside the meta step.

    python -m benchmarks.timm_vit [--device cpu] [--rounds 3]

The model is `timm/vit_tiny_patch16_224` configured to 32 px grey images (patch 4: 64 tokens; depth 4,
width 96, 3 heads: the ViT of the issue-17 acceptance run) under SimCLR (projector 512 -> 128), batch 64,
fp32. Step times are the median over rounds of round-robin timed cycles (benchmarks.step.time_configs).
The attention rows time one forward + backward of the backbone on the same batch with the fused
scaled_dot_product_attention kernel (the real step) and with the math kernel (the meta step,
compmod.meta.attention).
"""

from __future__ import annotations

import argparse

import torch

from benchmarks.harness import environment, markdown_table, median_seconds, write_result
from benchmarks.step import time_configs
from compmod.config import load_config
from compmod.engine.builders import build_train_step
from compmod.meta.attention import math_attention

VIT = [
    "model.backbone=timm/vit_tiny_patch16_224",
    "model.timm_args={patch_size: 4, depth: 4, embed_dim: 96, num_heads: 3}",
    "method.name=simclr",
    "method.proj_hidden_dim=512",
    "method.proj_dim=128",
    "train.optimizer=adamw",
    "train.lr=0.001",
    "train.weight_decay=0.05",
]
MODES = {"plain": None, "off": "off", "jvp": "jvp", "exact": "exact"}
BATCH, SIZE = 64, 32


def build(mode: str | None, device: torch.device):
    extra = (
        ["compmod.enabled=false"] if mode is None else ["compmod.enabled=true", f"compmod.meta.mode={mode}"]
    )
    torch.manual_seed(0)
    step = build_train_step(load_config(None, [*VIT, *extra]), 1, SIZE, device, steps_per_epoch=100)
    g = torch.Generator().manual_seed(1)
    x1, x2 = (torch.randn(BATCH, 1, SIZE, SIZE, generator=g).to(device) for _ in range(2))
    return step, x1, x2


def attention_kernels(device: torch.device, rounds: int) -> dict[str, float]:
    step, x1, _ = build(None, device)
    backbone = step.method.backbone

    def pass_() -> None:
        backbone(x1).sum().backward()

    fused = median_seconds(pass_, rounds, 1, device)
    with math_attention():
        math = median_seconds(pass_, rounds, 1, device)
    return {"fused": fused, "math": math}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cpu")
    p.add_argument("--rounds", type=int, default=3)
    args = p.parse_args(argv)
    device = torch.device(args.device)
    steps = {}
    for name, mode in MODES.items():
        step, x1, x2 = build(mode, device)
        steps[name] = lambda step=step, x1=x1, x2=x2: step.step(x1, x2, 1e-3)
    times = time_configs(steps, args.rounds, device, cycle=2)
    kernels = attention_kernels(device, args.rounds)
    rows = [[name, t, f"{t / times['plain']:.2f}x"] for name, t in times.items()]
    rows += [
        [f"backbone fwd+bwd, {k} attention", t, f"{t / kernels['fused']:.2f}x"] for k, t in kernels.items()
    ]
    table = markdown_table(["configuration", "s", "relative"], rows)
    summary = (
        f"SimCLR, timm ViT (32 px, patch 4, depth 4, width 96, 3 heads), batch {BATCH}, fp32; "
        f"{args.rounds} rounds.\n\n{table}\n\n"
        f"jvp / plain: **{times['jvp'] / times['plain']:.2f}x**; the math kernel that the meta step "
        f"selects costs {kernels['math'] / kernels['fused']:.2f}x the fused kernel for the backbone's "
        "forward + backward."
    )
    write_result("timm_vit", environment(device), {"step_s": times, "attention_s": kernels}, summary)


if __name__ == "__main__":
    main()
