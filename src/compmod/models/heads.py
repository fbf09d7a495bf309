"""MLP heads: the projector g_phi and BYOL's predictor q_theta."""

from __future__ import annotations

from torch import nn


def mlp(
    in_dim: int,
    hidden_dim: int,
    out_dim: int,
    num_layers: int,
    last_bn: bool = False,
    last_bn_affine: bool = True,
    batch_norm: bool = True,
) -> nn.Sequential:
    """`num_layers` Linear layers with BatchNorm1d + ReLU between them; the last Linear is plain.

    Linear layers followed by BN carry no bias (BN's shift replaces it). batch_norm=False: Linear + ReLU
    between them, every Linear with a bias (MoCo v2's head, builder.py --mlp). last_bn=True appends a
    BatchNorm1d(out_dim, affine=last_bn_affine) after the last Linear (which then has no bias either).
    Maps (N, in_dim) -> (N, out_dim); num_layers=1 is a single Linear.
    """
    for name, value in (("in_dim", in_dim), ("hidden_dim", hidden_dim), ("out_dim", out_dim)):
        if value < 1:
            raise ValueError(f"mlp: {name} must be >= 1, got {value}")
    if num_layers < 1:
        raise ValueError(f"mlp: num_layers must be >= 1, got {num_layers}")
    layers: list[nn.Module] = []
    dim = in_dim
    for _ in range(num_layers - 1):
        if batch_norm:
            layers += [
                nn.Linear(dim, hidden_dim, bias=False),
                nn.BatchNorm1d(hidden_dim),
                nn.ReLU(inplace=True),
            ]
        else:
            layers += [nn.Linear(dim, hidden_dim), nn.ReLU(inplace=True)]
        dim = hidden_dim
    layers.append(nn.Linear(dim, out_dim, bias=not last_bn))
    if last_bn:
        layers.append(nn.BatchNorm1d(out_dim, affine=last_bn_affine))
    return nn.Sequential(*layers)


def projector(in_dim: int, hidden: int, out: int, layers: int = 3) -> nn.Sequential:
    """Projection head g_phi: (N, d') -> (N, d).

    The paper's 3-layer head, Linear-BN-ReLU twice then a plain Linear, as in Barlow Twins (FAIR
    barlowtwins main.py, 8192-8192-8192) and the 3-layer head of SimCLR v2 (Chen et al. 2020b).
    """
    return mlp(in_dim, hidden, out, layers)


def byol_predictor(dim: int, hidden: int) -> nn.Sequential:
    """BYOL's predictor q_theta: Linear-BN-ReLU-Linear, (N, dim) -> (N, dim) (Grill et al. 2020, Sec. 3.3:
    hidden 4096, output 256)."""
    return mlp(dim, hidden, dim, 2)
