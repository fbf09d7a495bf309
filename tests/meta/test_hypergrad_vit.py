"""CompMod's hypergradients through attention: a tiny timm ViT (patch embedding, LayerNorm, multi-head
scaled_dot_product_attention, GELU MLPs), float64. `exact` (double backward) and `jvp` (forward mode)
must agree to 1e-10 and match central differences of F; the fused attention kernels have neither rule,
so the meta step selects the math kernel (compmod.meta.attention)."""

from __future__ import annotations

import pytest
import torch
from tests.meta.test_hypergrad_fd import (
    LAMBDA2,
    PROJ,
    R,
    assert_matches_fd,
    batch_problem,
    hypergrads,
    norm,
    real_step,
    rel_diff,
    smooth_activations,
)

from compmod.config import load_config
from compmod.engine.builders import build_method
from compmod.meta.functional import trainable
from compmod.regularizers import CompMod

pytest.importorskip("timm")
TINY_VIT = [
    "model.backbone=timm/vit_tiny_patch16_224",
    "model.timm_args={patch_size: 4, depth: 2, embed_dim: 32, num_heads: 2}",
    "method.proj_hidden_dim=32",
    f"method.proj_dim={PROJ}",
]


@pytest.mark.parametrize("name", ["simclr", "byol"])
def test_exact_and_jvp_agree_through_a_vit_and_match_finite_differences(name: str) -> None:
    torch.manual_seed(0)
    model = build_method(load_config(None, [*TINY_VIT, f"method.name={name}"]), 1, 12).double()
    attention = [m for m in model.backbone.modules() if type(m).__name__ == "Attention"]
    assert len(attention) == 2 and all(m.fused_attn for m in attention)  # the real step's fused kernel
    reg = CompMod(model.feat_dim, PROJ, lambda2=LAMBDA2, r=R).to(dtype=torch.float64)
    g = torch.Generator().manual_seed(1)
    x1, x2 = (torch.randn(8, 1, 12, 12, generator=g, dtype=torch.float64) for _ in range(2))
    smooth_activations(model)  # the projector's ReLUs (the ViT's GELUs are smooth already)
    smooth_activations(reg.head)
    ctx = real_step(model, reg, x1, x2)
    grads = hypergrads(reg, model, x1, x2, ctx)
    assert norm(grads["exact"]) > 0
    assert rel_diff(grads["exact"], grads["jvp"]) <= 1e-10
    xi = {n: p.detach() for n, p in trainable(reg.head).items()}
    assert_matches_fd(batch_problem(reg, ctx, R), model, x1, x2, xi, grads, seed=3)
