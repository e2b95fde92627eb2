"""Stage 2 on a synthetic store: outputs, skip when finished, kill + resume equality, DDP (gloo, 2 processes)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
from toy_data import toy_manifest, train_process, write_toy_fold, write_toy_store

ROOT = Path(__file__).resolve().parents[1]
TRAIN_YAML = ROOT / "recipes" / "shared" / "hparams" / "train.yaml"
FAST = [
    "--batch_size=8",
    "--lr=0.005",
    "--device=cpu",
    "--model_kwargs={rnn_hidden: 32, attention_hidden: 16, classifier_hidden: 32}",
]


@pytest.fixture(scope="module")
def toy(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("toy")
    m = toy_manifest(n_per_speaker=16, speakers=4)
    write_toy_store(root / "store", m)
    write_toy_fold(root / "fold1", m, "spk0", "spk1")
    return {"root": root, "store": root / "store", "fold": root / "fold1"}


def args(toy: dict[str, Path], out: Path, epochs: int) -> list[str]:
    return [
        str(TRAIN_YAML),
        f"--fold_dir={toy['fold']}",
        f"--store_dir={toy['store']}",
        f"--output_folder={out}",
        f"--number_of_epochs={epochs}",
        *FAST,
    ]


def run_cli(argv: list[str], **kw) -> subprocess.Popen:
    return train_process(argv, **kw)


def test_fit_writes_the_experiment_folder_and_skips_when_done(toy: dict[str, Path], tmp_path: Path) -> None:
    from cta_rnn.train import main

    out = tmp_path / "fold1"
    main(args(toy, out, 3))
    for name in (
        "hyperparams.yaml",
        "log.txt",
        "train_log.txt",
        "label_encoder.txt",
        "predictions.csv",
        "test_results.json",
        "env.log",
    ):
        assert (out / name).is_file(), name
    assert len((out / "train_log.txt").read_text().strip().splitlines()) == 4  # 3 epochs + test line
    pred = pd.read_csv(out / "predictions.csv")
    assert list(pred.columns) == [
        "ID",
        "true",
        "predicted",
        "prob_neu",
        "prob_hap",
        "prob_ang",
        "prob_sad",
        "att_layer0",
        "att_layer1",
        "att_layer2",
    ]
    assert len(pred) == 16 and set(pred["ID"].str[:4]) == {"spk0"}
    assert pred[["prob_neu", "prob_hap", "prob_ang", "prob_sad"]].sum(axis=1).round(4).eq(1).all()
    res = json.loads((out / "test_results.json").read_text())
    assert res["n"] == {"train": 32, "valid": 16, "test": 16} and res["test"]["UA"] > 0.5
    assert (out / "label_encoder.txt").read_text().startswith("'neu' => 0")
    mtime = (out / "predictions.csv").stat().st_mtime
    main(args(toy, out, 3))  # finished: skipped, nothing rewritten
    assert (out / "predictions.csv").stat().st_mtime == mtime


@pytest.mark.slow
def test_killed_run_resumes_to_the_same_result(toy: dict[str, Path], tmp_path: Path) -> None:
    ref, resumed = tmp_path / "ref", tmp_path / "resumed"
    epochs = 4
    p = run_cli(args(toy, ref, epochs))
    assert p.wait(300) == 0, p.stdout.read()
    p = run_cli(args(toy, resumed, epochs))
    log = resumed / "train_log.txt"
    deadline = time.time() + 300
    while time.time() < deadline and p.poll() is None:
        if log.exists() and "epoch: 2" in log.read_text():
            break
        time.sleep(0.05)
    assert p.poll() is None, "finished before it could be killed"
    p.send_signal(signal.SIGKILL)
    p.wait()
    assert not (resumed / "test_results.json").exists()
    p = run_cli(args(toy, resumed, epochs))
    output = p.communicate(timeout=300)[0]
    assert p.returncode == 0, output
    assert "Loading a checkpoint" in output or "Recovering" in output or "recover" in output.lower()
    a = json.loads((ref / "test_results.json").read_text())
    b = json.loads((resumed / "test_results.json").read_text())
    assert a["test"] == b["test"] and a["best_epoch"] == b["best_epoch"]
    assert pd.read_csv(ref / "predictions.csv").equals(pd.read_csv(resumed / "predictions.csv"))


@pytest.mark.slow
def test_ddp_two_cpu_processes_gloo(toy: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "ddp"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node=2",
        "--master_port=29531",
        "-m",
        "cta_rnn.train",
        *args(toy, out, 3),
        "--distributed_backend=gloo",
        "--average_checkpoints=2",  # the averaged state (plain keys) goes into the DDP-wrapped model
    ]
    p = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    res = json.loads((out / "test_results.json").read_text())
    assert res["epochs_run"] == 3 and res["n"]["test"] == 16
    assert len(res["averaged_epochs"]) == 2
    assert len(pd.read_csv(out / "predictions.csv")) == 16


def test_checkpoint_torn_by_a_kill_is_removed_before_resuming(toy: dict[str, Path], tmp_path: Path) -> None:
    """SpeechBrain writes CKPT.yaml before the parameters, and deletes a checkpoint that drops out of the best file
    by file: a kill during either must not break the resume."""
    import shutil

    from cta_rnn.train import main

    out = tmp_path / "fold"
    main(args(toy, out, 2))
    good = sorted((out / "save").glob("CKPT+*"))
    assert good and all((c / "COMPLETE").exists() for c in good)
    torn = out / "save" / "CKPT+2099-01-01+00-00-00+00"
    shutil.copytree(good[-1], torn)
    (torn / "COMPLETE").unlink()
    (torn / "model.ckpt").write_bytes(b"\x00" * 10)  # truncated by the kill
    assert "optimizer.ckpt" in (good[-1] / "COMPLETE").read_text().split()  # the marker lists the files
    half_deleted = out / "save" / "CKPT+2098-01-01+00-00-00+00"
    shutil.copytree(good[-1], half_deleted)
    (half_deleted / "optimizer.ckpt").unlink()  # killed while SpeechBrain deleted it, marker still there
    (out / "test_results.json").unlink()
    main(args(toy, out, 2))  # the same hyperparameters: other ones would be refused (test_reliability_train.py)
    assert not torn.exists() and not half_deleted.exists()
    assert json.loads((out / "test_results.json").read_text())["epochs_run"] == 2
