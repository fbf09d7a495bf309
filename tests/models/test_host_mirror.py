"""Host copies of counter buffers: the code reads them without touching the device; loading a state
dict (a resumed run) refreshes them."""

from __future__ import annotations

import torch
from torch import nn

from compmod.models.host_mirror import mirror, set_mirrored
from compmod.models.queue import FeatureQueue


def test_a_queue_resumed_from_its_state_dict_continues_where_it_stopped() -> None:
    q = FeatureQueue(2, 5, 3)
    q.push_(torch.randn(2, 4, 3))
    q.push_(torch.randn(2, 3, 3))  # wraps around: ptr 2, full
    assert q.host == {"ptr": 2, "filled": 5} and int(q.ptr) == 2 and q.full

    class Holder(nn.Module):  # the queue inside a method, as MoCo holds it
        def __init__(self) -> None:
            super().__init__()
            self.queue = FeatureQueue(2, 5, 3)

    resumed = Holder()
    resumed.load_state_dict({f"queue.{k}": v for k, v in q.state_dict().items()})
    assert resumed.queue.host == {"ptr": 2, "filled": 5} and resumed.queue.full
    keys = torch.randn(2, 1, 3)
    q.push_(keys)
    resumed.queue.push_(keys)
    assert torch.equal(q.rows, resumed.queue.rows) and resumed.queue.host["ptr"] == 3


def test_set_mirrored_sets_buffer_and_copy() -> None:
    m = nn.Module()
    m.register_buffer("step", torch.zeros((), dtype=torch.long))
    mirror(m, "step")
    set_mirrored(m, "step", 7)
    assert m.host["step"] == 7 and int(m.step) == 7 and m.state_dict()["step"].item() == 7
