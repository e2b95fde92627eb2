"""Issue 15, stage 2 (``cta_rnn.train``): a run does what its command line says or refuses with one line.

Overrides checked against the declared schema, ``--force`` from scratch, resume with other hyperparameters
refused, one training per fold (``fcntl.flock``), a missing store and a full disk named in one line.
"""

from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path

import pytest
from toy_data import toy_manifest, train_process, write_toy_fold, write_toy_store

from cta_rnn import hparams_schema as hs

ROOT = Path(__file__).resolve().parents[1]
TRAIN_YAML = ROOT / "recipes" / "shared" / "hparams" / "train.yaml"
SMALL = "--model_kwargs={rnn_hidden: 16, attention_hidden: 8, classifier_hidden: 16}"


@pytest.fixture(scope="module")
def toy(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("toy")
    m = toy_manifest(n_per_speaker=8, speakers=3)
    write_toy_store(root / "store", m)
    write_toy_fold(root / "fold1", m, "spk0", "spk1")
    return {"store": root / "store", "fold": root / "fold1"}


def args(toy: dict[str, Path], out: Path, *extra: str, epochs: int = 2) -> list[str]:
    return [
        str(TRAIN_YAML),
        f"--fold_dir={toy['fold']}",
        f"--store_dir={toy['store']}",
        f"--output_folder={out}",
        f"--number_of_epochs={epochs}",
        "--batch_size=4",
        "--lr=0.005",
        "--device=cpu",
        SMALL,
        *extra,
    ]


def train(argv: list[str], **kw) -> subprocess.Popen:
    return train_process(argv, stderr=subprocess.PIPE, **kw)


def finish(p: subprocess.Popen, timeout: int = 300) -> tuple[int, str, str]:
    out, err = p.communicate(timeout=timeout)
    return p.returncode, out, err


def error_line(err: str) -> str:
    """The refusal: exactly one ``error:`` line and no traceback."""
    lines = [ln for ln in err.splitlines() if ln.startswith("error: ")]
    assert len(lines) == 1 and "Traceback" not in err, err[-3000:]
    return lines[0]


def epochs_logged(out: Path) -> list[int]:
    lines = (out / "train_log.txt").read_text().splitlines()
    return [int(ln.split(",")[0].split()[1]) for ln in lines if ln.startswith("epoch:")]


def kill_at_epoch(p: subprocess.Popen, out: Path, epoch: int) -> None:
    """SIGKILL a training once its train_log shows ``epoch``."""
    log = out / "train_log.txt"
    deadline = time.time() + 300
    while time.time() < deadline and p.poll() is None:
        if log.exists() and f"epoch: {epoch}," in log.read_text():
            break
        time.sleep(0.05)
    assert p.poll() is None, "finished before it could be killed"
    p.send_signal(signal.SIGKILL)
    p.wait()


# ---- case 6 / 9: values validated where they enter, one line naming the key ----
@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("--lrr=0.1", "unknown key lrr; did you mean lr?"),
        ("--batch_size=abc", "batch_size: expected an integer >= 1, got 'abc'"),
        ("--normalization=speakr", "normalization: expected one of global | speaker | none, got 'speakr'"),
        ("--number_of_epochs=-1", "number_of_epochs: expected an integer >= 1, got -1"),
        ("--lr=0", "lr: expected a number > 0, got 0"),
        ("--labels=[]", "labels: expected a non-empty list of distinct names, got []"),
        ("--cache=disk", "cache: expected one of auto | gpu | ram | stream, got 'disk'"),
        ("--sorting=shortest", "sorting: expected one of random | ascending | descending | balanced"),
        ("--model_kwargs={dropout: 0.3", "the command line: not valid YAML"),
    ],
    ids="unknown_key not_an_int bad_choice epochs_negative lr_zero labels_empty cache sorting yaml".split(),
)
def test_overrides_are_checked_before_anything_runs(
    toy: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture, override: str, message: str
) -> None:
    from cta_rnn.train import main

    out = tmp_path / "fold"
    assert main(args(toy, out, override)) == 1
    assert message in error_line(capsys.readouterr().err)
    assert not out.exists()


def test_model_kwargs_and_missing_store_are_one_line(
    toy: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    from cta_rnn.train import main

    replay = tmp_path / "replay.sh"
    replay.write_text("#!/usr/bin/env bash\n")
    exp = tmp_path / "exp"
    assert main(args(toy, exp / "fold1", "--model_kwargs={dropuot: 0.3}", "--replay_script", str(replay))) == 1
    line = error_line(capsys.readouterr().err)
    assert "'dropuot'" in line and "do not fit CTARNN" in line
    assert not (exp / "run.sh").exists()  # no training started: no replay script
    out = tmp_path / "b"
    assert main([*args(toy, out), f"--store_dir={tmp_path / 'no_store'}"]) == 1
    assert "run stage 1 (the dump) first" in error_line(capsys.readouterr().err)
    assert not out.exists()  # stage 2 before stage 1 creates nothing


def test_schema_declares_every_key_of_the_training_yaml() -> None:
    objects = {"__set_seed", "epoch_counter", "opt_class", "train_logger"}  # built objects, not values
    assert hs.yaml_keys(TRAIN_YAML) - objects == set(hs.SCHEMA)
    defaults = {"lr": 0.001, "batch_size": 32, "normalization": "global", "layers": None, "labels": ["neu", "hap"]}
    hs.check_overrides(defaults)
    hs.check_overrides({"layers": [-1], "max_train_seconds": None, "lr": 1, "model_kwargs": {"dropout": 0.1}})
    for bad in ({"batch_size": True}, {"lr": float("nan")}, {"layers": [0, 0]}, {"labels": ["a", "a"]}):
        with pytest.raises(hs.HparamsError):
            hs.check_overrides(bad)


def test_overrides_read_like_hyperpyyaml_and_later_ones_win() -> None:
    from cta_rnn.train import merge_overrides

    got = merge_overrides([], "lr: 1e-3\nmodel_kwargs: {a: 1}\nlr: 2e-3\nmodel_kwargs: {b: 2}\nforce: yes")
    assert got == {"lr": 0.002, "model_kwargs": {"a": 1, "b": 2}, "force": "yes"}  # YAML 1.2: yes is a string
    with pytest.raises(hs.HparamsError, match="force: expected True or False"):
        hs.check_overrides(got)


def test_experiment_suffix_is_readable_when_short_else_a_stable_hash() -> None:
    assert hs.experiment_suffix({}) == ""
    assert hs.experiment_suffix({"force": True, "cache": "ram", "num_workers": 4}) == ""  # run control only
    assert hs.experiment_suffix({"lr": 0.0005}) == "lr0.0005"
    assert hs.experiment_suffix({"lr": 5e-4, "batch_size": 16}) == "batch_size16-lr0.0005"  # sorted by key
    nested = hs.experiment_suffix({"model_kwargs": {"dropout": 0.3}})
    assert nested.startswith("cfg") and len(nested) == 11
    assert nested == hs.experiment_suffix({"model_kwargs": {"dropout": 0.3}})
    assert nested != hs.experiment_suffix({"model_kwargs": {"dropout": 0.4}})
    assert hs.experiment_suffix({}, "lr: 0.1\n") != hs.experiment_suffix({}, "lr: 0.2\n")
    from cta_rnn import driver

    assert driver.main(["suffix", str(TRAIN_YAML), "--", "--lr=5e-4", "--device=cpu"]) == 0  # run options do not count


# ---- case 1: --force, resume with other hyperparameters ----
@pytest.mark.slow
def test_force_retrains_a_finished_fold_from_scratch(toy: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "fold"
    assert finish(train(args(toy, out)))[0] == 0
    old_ckpts = sorted(p.name for p in (out / "save").glob("CKPT+*"))
    (out / "stdout.log").write_text("the driver's log of this run\n")
    code, _, err = finish(train(args(toy, out, "--lr=0.002", "--force=true")))
    assert code == 0, err[-3000:]
    assert epochs_logged(out) == [1, 2]  # every epoch run again, none recovered
    assert json.loads((out / "test_results.json").read_text())["epochs_run"] == 2
    assert json.loads((out / "run_config.json").read_text())["lr"] == 0.002
    assert not set(old_ckpts) & {p.name for p in (out / "save").glob("CKPT+*")}
    assert (out / "stdout.log").read_text() == "the driver's log of this run\n"  # kept by --force


@pytest.mark.slow
def test_finished_or_killed_fold_with_other_hyperparameters_is_refused(toy: dict[str, Path], tmp_path: Path) -> None:
    done = tmp_path / "done"
    assert finish(train(args(toy, done)))[0] == 0
    before = (done / "test_results.json").read_bytes()
    code, _, err = finish(train(args(toy, done, "--lr=0.0005")))
    assert code == 1 and f"{done}: its finished run used other hyperparameters (lr: 0.005 -> 0.0005)" in error_line(err)
    assert (done / "test_results.json").read_bytes() == before
    assert json.loads((done / "run_config.json").read_text())["lr"] == 0.005  # the record is not rewritten

    killed = tmp_path / "killed"
    p = train(args(toy, killed, epochs=40))
    kill_at_epoch(p, killed, 2)
    code, _, err = finish(train(args(toy, killed, "--normalization=speaker", epochs=40)))
    line = error_line(err)
    assert code == 1 and "its unfinished run used other hyperparameters (normalization:" in line
    assert '"global" -> "speaker"' in line and "--force=true" in line
    code, _, err = finish(train(args(toy, killed, "--normalization=speaker", "--force=true", epochs=2)))
    assert code == 0, err[-3000:]
    assert epochs_logged(killed) == [1, 2]


# ---- case 2: one training per fold ----
def test_a_second_training_of_a_fold_is_refused_naming_the_holder(toy: dict[str, Path], tmp_path: Path) -> None:
    import fcntl

    out = tmp_path / "fold"
    endless = ("--early_stop_patience=100000", "--number_of_epochs=100000")
    first = train(args(toy, out, *endless))
    lock = out / ".lock"
    try:
        deadline = time.time() + 120
        while time.time() < deadline and not (lock.exists() and lock.read_text().strip()):
            time.sleep(0.05)
        code, _, err = finish(train(args(toy, out, *endless)), timeout=120)
        assert code == 1
        assert error_line(err) == (
            f"error: {out}: already being trained by pid {first.pid} (lock {lock}); wait for it or stop it"
        )
        assert first.poll() is None  # the holder goes on
    finally:
        first.kill()
        first.wait()
    with open(lock, "a+") as f:  # a killed holder leaves the file, not the lock
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)


# ---- case 9: a full disk during training ----
@pytest.fixture()
def small_disk(tmp_path: Path):
    """A 600-KiB tmpfs (skipped where mounting is not allowed)."""
    mnt = tmp_path / "disk"
    mnt.mkdir()
    p = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=600k", "tmpfs", str(mnt)], capture_output=True, check=False)
    if p.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {p.stderr.decode().strip()}")
    yield mnt
    subprocess.run(["umount", "-l", str(mnt)], check=False)


def test_full_disk_while_training_is_one_line_naming_the_folder(toy: dict[str, Path], small_disk: Path) -> None:
    out = small_disk / "exp" / "fold1"
    big = "--model_kwargs={rnn_hidden: 128, attention_hidden: 64, classifier_hidden: 128}"  # a ~1-MB checkpoint
    code, _, err = finish(train([*args(toy, out), big]))
    assert code == 1
    line = error_line(err)
    assert line.startswith(f"error: {out}: no space left on the device") and "resumes from its last" in line
