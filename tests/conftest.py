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


@pytest.fixture(autouse=True)
def _cache_dir(monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory) -> None:
    """Caches (decoded images, pixel kNN floors) go to this test process's temp folder, never to the
    user's ~/.cache: a test measures what the code computes now, not what an older version left there.
    Tests that check caching set their own folder."""
    monkeypatch.setenv("COMPMOD_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "compmod-cache"))
