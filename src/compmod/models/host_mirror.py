"""Host copies of a module's 0-d counter buffers (queue pointers, step counts, training progress).

The buffers go into checkpoints and follow the module to its device; reading one there (`int(buf)`) makes
the host wait for the device on every step. The code reads `module.host[name]` instead and writes both
with `set_mirrored` (the buffer by a device-side fill, which nothing waits for); loading a state dict
refreshes the copies (one read then).
"""

from __future__ import annotations

from torch import nn


def mirror(module: nn.Module, *names: str) -> None:
    """Give `module` a `host` dict holding the current values of its 0-d buffers `names`, kept in step
    with them by `set_mirrored` and by `load_state_dict`."""
    module.host = {name: getattr(module, name).item() for name in names}

    def refresh(m: nn.Module, _incompatible: object) -> None:
        for name in names:
            m.host[name] = getattr(m, name).item()

    module.register_load_state_dict_post_hook(refresh)


def set_mirrored(module: nn.Module, name: str, value: float) -> None:
    """Set the buffer `name` and its host copy to `value`."""
    module.host[name] = value
    getattr(module, name).fill_(value)
