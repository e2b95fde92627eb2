"""The code base stays ruff-clean (rules in ruff.toml)."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_ruff_clean() -> None:
    ruff = shutil.which("ruff") or str(Path(sys.executable).parent / "ruff")
    if not Path(ruff).exists():
        pytest.skip("ruff not installed")
    p = subprocess.run(
        [ruff, "check", "cta_rnn", "tests", "benchmarks"], cwd=ROOT, capture_output=True, text=True, check=False
    )
    assert p.returncode == 0, p.stdout[-3000:]
