"""Several folds in one training process (``--folds``): same results as a process per fold, per-fold logs,
and a SIGKILL resumes the unfinished folds only."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import pytest
from test_train import FAST, TRAIN_YAML
from toy_data import toy_manifest, train_process, write_toy_fold, write_toy_store

pytestmark = pytest.mark.slow  # whole recipe runs: `pytest -m "not slow"` leaves them out


@pytest.fixture(scope="module")
def toy3(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 4-speaker toy store with three leave-one-speaker-out folds (data/fold1..3)."""
    root = tmp_path_factory.mktemp("toy3")
    m = toy_manifest(n_per_speaker=12, speakers=4)
    write_toy_store(root / "store", m)
    for k, (test, valid) in enumerate([("spk0", "spk1"), ("spk1", "spk2"), ("spk2", "spk3")], 1):
        write_toy_fold(root / "data" / f"fold{k}", m, test, valid)
    return root


def fold_args(root: Path, out: str, fold: str, epochs: int = 3) -> list[str]:
    """Training arguments of ``fold`` (a number, or ``{fold}`` for ``--folds``) into ``root/out``."""
    return [
        str(TRAIN_YAML),
        f"--fold_dir={root / 'data' / f'fold{fold}'}",
        f"--store_dir={root / 'store'}",
        f"--output_folder={root / out / f'fold{fold}'}",
        f"--number_of_epochs={epochs}",
        *FAST,
    ]


def run(argv: list[str], timeout: float = 600) -> str:
    p = train_process(argv)
    output = p.communicate(timeout=timeout)[0]
    assert p.returncode == 0, output
    return output


def test_one_process_gives_what_a_process_per_fold_gives(toy3: Path) -> None:
    for k in (1, 2, 3):
        run(fold_args(toy3, "alone", str(k)))
    console = run(["--folds", "1,2,3", *fold_args(toy3, "together", "{fold}")])
    for k in (1, 2, 3):
        alone, together = toy3 / "alone" / f"fold{k}", toy3 / "together" / f"fold{k}"
        # same machine, same seeds and per-epoch reseeding: the same bytes (not promised across machines)
        assert (together / "predictions.csv").read_bytes() == (alone / "predictions.csv").read_bytes()
        log = (together / "stdout.log").read_text()
        assert log.startswith("=== ") and f"fold{k}" in log.splitlines()[0]  # this fold's own log and header
        assert f"fold{k % 3 + 1}/" not in log  # nothing of the other folds
        assert f"fold {k} done: test UA" in console
    assert (toy3 / "together" / "fold1" / "log.txt").read_text().count("Beginning experiment") == 1


def test_sigkill_resumes_the_unfinished_folds_only(toy3: Path) -> None:
    out = toy3 / "killed"
    argv = ["--folds", "1,2", *fold_args(toy3, "killed", "{fold}", epochs=4)]
    p = train_process(argv)
    first = out / "fold1" / "test_results.json"
    second_log = out / "fold2" / "train_log.txt"
    deadline = time.time() + 300
    while time.time() < deadline and p.poll() is None:
        if second_log.exists() and "epoch: 2" in second_log.read_text():
            break
        time.sleep(0.05)
    assert p.poll() is None, "finished before it could be killed"
    p.send_signal(signal.SIGKILL)
    p.wait()
    assert first.exists() and not (out / "fold2" / "test_results.json").exists()
    finished_at = first.stat().st_mtime_ns
    console = run(argv)
    assert first.stat().st_mtime_ns == finished_at  # the finished fold is skipped, not retrained
    assert "fold already finished, skipping" in (out / "fold1" / "stdout.log").read_text()
    assert "fold 2 done: test UA" in console
    run(fold_args(toy3, "ref", "2", epochs=4))
    ref = (toy3 / "ref" / "fold2" / "predictions.csv").read_bytes()
    assert (out / "fold2" / "predictions.csv").read_bytes() == ref  # resumed from its checkpoint, same result
