"""Shared fixtures."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from tests.helpers import write_cifar10


@pytest.fixture
def cifar10_root(tmp_path: Path) -> Path:
    return write_cifar10(tmp_path / "cifar")


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    """Tests use tiny batches that gain nothing from intra-op threads, and on a busy 2-core machine two
    spinning threads stall each other (measured 4x slower BatchNorm); tests that want more set them."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
