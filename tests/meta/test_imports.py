"""`compmod.meta` must be importable on its own, as the first compmod import of a fresh interpreter."""

from __future__ import annotations

import subprocess
import sys


def test_compmod_meta_imports_first_in_a_fresh_interpreter():
    done = subprocess.run(
        [sys.executable, "-c", "from compmod.meta import objective"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-2000:]
