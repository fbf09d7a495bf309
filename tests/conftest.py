"""Shared fixtures."""

from __future__ import annotations

from pathlib import Path

import pytest
from tests.helpers import write_cifar10


@pytest.fixture
def cifar10_root(tmp_path: Path) -> Path:
    return write_cifar10(tmp_path / "cifar")
