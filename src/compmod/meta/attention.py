"""Attention inside the meta step: `scaled_dot_product_attention`'s fused kernels (flash and
memory-efficient attention, on CPU and CUDA) have no forward-mode rule and no double backward, so the jvp
hypergradient's forward-mode pass and the exact one's double backward would fail on any attention model
(timm ViTs call it). Inside them the math kernel is selected: softmax(q k^T / sqrt(d)) v written with
matmul and softmax, whose derivatives of every order exist. The real training step keeps the fused kernels.

Cost: the math kernel holds the (tokens x tokens) attention matrix of every head and block, which the fused
kernels never materialise, and is slower: measured in benchmarks/results/timm_vit.md.
"""

from __future__ import annotations

from contextlib import AbstractContextManager

from torch.nn.attention import SDPBackend, sdpa_kernel


def math_attention() -> AbstractContextManager[None]:
    """Select the math kernel of scaled_dot_product_attention for the block it wraps."""
    return sdpa_kernel(SDPBackend.MATH)
