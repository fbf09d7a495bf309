"""What the hardware computes fast, measured once and used by training and evaluation alike: whether a
device multiplies bf16 natively, and which memory format convolutions run in."""

from __future__ import annotations

import torch

# Measured (benchmarks/results/step.md): small CNN, 2 CPU threads, plain step 0.208 s with channels_last
# vs 0.242 s without, jvp step 0.721 vs 0.771 s; feature extraction (eval/inference.py) 12.8 s vs 21.2 s
# in float32 and 5.4 s vs 9.1 s in bf16 for 70k Fashion-MNIST images. On CUDA NHWC is the layout
# tensor-core convolutions want.
CHANNELS_LAST_DEFAULT = {"cpu": True, "cuda": True}


def resolve_channels_last(value: bool | None, device: torch.device) -> bool:
    """`value` (`train.channels_last`), or for None the measured default of `device`'s type."""
    return CHANNELS_LAST_DEFAULT.get(device.type, False) if value is None else value


def native_bf16(device: torch.device) -> bool:
    """Whether `device` multiplies bf16 natively: a CPU with AVX512-BF16 or AMX (and oneDNN), or a CUDA
    GPU that supports bf16. Elsewhere bf16 is emulated and slower than float32."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device.type != "cpu" or not torch.backends.mkldnn.is_available():
        return False
    probes = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")  # torch's CPU-feature probes
    return any(getattr(torch.cpu, name, lambda: False)() for name in probes)
