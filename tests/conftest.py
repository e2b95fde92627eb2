"""Test set-up: make tests/ importable for shared fixture builders, keep torch to the machine's 2 cores."""

import os
import sys
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch: see cta_rnn/__init__.py

import pytest  # noqa: E402
import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).parent))
torch.set_num_threads(max(1, min(2, torch.get_num_threads())))


def pytest_configure(config: pytest.Config) -> None:
    """The ``slow`` marker: whole recipe runs and multi-process trainings (``pytest -m "not slow"`` skips them)."""
    config.addinivalue_line("markers", "slow: end-to-end recipe runs and multi-process trainings (minutes)")


@pytest.fixture(scope="module")
def one_thread_torch():
    """One intra-op thread: on a shared 2-core machine multi-threaded ops (torch.isin in generate) crawl."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
