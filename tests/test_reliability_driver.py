"""Issue 15, the recipe driver (``recipes/shared/stages.sh``) for real on a toy recipe (synthetic store, 2 epochs):
overrides name the experiment, the replay script is written only when training starts, ``--force`` retrains,
``--folds 1,1 --nj 2`` trains once, and bad options or a Python error are one line (with the log's path).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from toy_data import toy_manifest, write_toy_fold, write_toy_store

from cta_rnn.io_utils import atomic_to_csv

ROOT = Path(__file__).resolve().parents[1]
EXP = "cta_rnn_toy_loso_speaker"


def make_recipe(base: Path, with_store: bool = True) -> Path:
    """recipes/toy: 4 speakers, LOSO folds, a finished synthetic store, 2 epochs of a small CTA-RNN."""
    recipe = base / "toy"
    (recipe / "hparams" / "encoder").mkdir(parents=True)
    (recipe / "hparams" / "encoder" / "toy.yaml").write_text("backend: toy\n")
    (recipe / "hparams" / "train_overrides.yaml").write_text(
        "number_of_epochs: 2\nbatch_size: 8\nlr: 0.005\nmax_train_seconds: null\n"
        "model_kwargs: {rnn_hidden: 16, attention_hidden: 8, classifier_hidden: 16}\n"
    )
    run = recipe / "run.sh"
    run.write_text('#!/usr/bin/env bash\nset -euo pipefail\ncd "$(dirname "$0")"\nexec ../shared/stages.sh "$@"\n')
    run.chmod(0o755)
    (base / "shared").symlink_to(ROOT / "recipes" / "shared")
    m = toy_manifest(n_per_speaker=8, speakers=4)
    atomic_to_csv(m, recipe / "data" / "manifest.csv")
    speakers = sorted(set(m["speaker"]))
    for k, spk in enumerate(speakers, 1):
        write_toy_fold(recipe / "data" / "folds" / "loso_speaker" / f"fold{k}", m, spk, speakers[k % len(speakers)])
    if with_store:
        write_toy_store(recipe / "dump" / "toy", m)
    return recipe


def run(recipe: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    cmd = ["./run.sh", "--python", sys.executable, "--encoder", "toy", "--device", "cpu", "--stop_stage", "2", *args]
    return subprocess.run(cmd, cwd=recipe, env=env, capture_output=True, text=True, timeout=600, check=False)


def refusal(p: subprocess.CompletedProcess) -> str:
    """The one ERROR line of a failed run (and no traceback on the console)."""
    errors = [ln for ln in p.stderr.splitlines() if " ERROR: " in ln]
    assert p.returncode == 1 and len(errors) == 1, p.stderr[-3000:]
    assert "Traceback" not in p.stderr + p.stdout
    return errors[0].split(" ERROR: ", 1)[1]


@pytest.fixture(scope="module")
def recipe(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_recipe(tmp_path_factory.mktemp("recipes"))


@pytest.mark.slow
def test_overrides_name_the_experiment_and_the_replay_is_written_when_training_starts(recipe: Path) -> None:
    p = run(recipe, "--stage", "2", "--folds", "1")
    assert p.returncode == 0, p.stderr[-3000:]
    exp = recipe / "exp" / EXP
    replay = exp / "run.sh"
    assert (exp / "fold1" / "test_results.json").is_file() and replay.is_file()
    assert not list(exp.glob(".run.sh*"))
    os.utime(replay, (1, 1))
    p = run(recipe, "--stage", "2", "--folds", "1")  # nothing to train: the replay stays as it was
    assert p.returncode == 0 and "already finished" in p.stderr
    assert replay.stat().st_mtime == 1

    p = run(recipe, "--stage", "2", "--folds", "1", "--", "--lr=0.0005")  # README's example trains, elsewhere
    assert p.returncode == 0, p.stderr[-3000:]
    tuned = recipe / "exp" / f"{EXP}_lr0.0005"
    assert json.loads((tuned / "fold1" / "run_config.json").read_text())["lr"] == 0.0005
    assert (tuned / "fold1" / "test_results.json").is_file() and "--lr=0.0005" in (tuned / "run.sh").read_text()
    assert replay.stat().st_mtime == 1 and json.loads((exp / "fold1" / "run_config.json").read_text())["lr"] == 0.005


@pytest.mark.slow
def test_force_retrains_and_repeated_folds_train_once(recipe: Path) -> None:
    fold = recipe / "exp" / EXP / "fold1"
    if not (fold / "test_results.json").exists():
        pytest.skip("needs the previous test's experiment")
    p = run(recipe, "--stage", "2", "--folds", "1,1", "--nj", "2", "--force", "true")
    assert p.returncode == 0, p.stderr[-3000:]
    assert p.stderr.count("Stage 2: train cta_rnn fold(s) 1,") == 1  # "1,1": one fold, one job
    log = (fold / "train_log.txt").read_text().splitlines()
    assert [ln.split(",")[0] for ln in log if ln.startswith("epoch")] == ["epoch: 1", "epoch: 2"]  # from scratch
    assert "removed the previous run" in (fold / "stdout.log").read_text()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--protocol", "loso_sesion"], "unknown protocol 'loso_sesion' (did you mean loso_session?); choose from"),
        (["--folds", "99"], "--folds '99': fold(s) [99] do not exist (prepared: [1, 2, 3, 4])"),
        (["--folds", "1-x"], "--folds '1-x': '1-x' is not a fold number or a range a-b"),
        (["--force", "yes"], "--force takes true or false, got 'yes'"),
        (["--", "--lrr=0.1"], "unknown key lrr; did you mean lr?"),
        (["--train_args", "--batch_size=abc"], "batch_size: expected an integer >= 1, got 'abc'"),
        (["--model", "exp/" + EXP], "no model config 'exp/cta_rnn_toy_loso_speaker' (a name, not a path): choose"),
    ],
    ids="protocol folds_99 folds_range force lrr batch_size model_path".split(),
)
def test_bad_options_are_one_line_and_create_nothing(tmp_path: Path, args: list[str], message: str) -> None:
    recipe = make_recipe(tmp_path, with_store=False)
    p = run(recipe, "--stage", "2", *args)
    assert message in refusal(p)
    assert not (recipe / "exp").exists()


def test_stage_2_before_stage_1_says_run_stage_1(tmp_path: Path) -> None:
    recipe = make_recipe(tmp_path, with_store=False)
    assert refusal(run(recipe, "--stage", "2")) == "dump/toy: no embedding store there; run stage 1 (the dump) first"
    assert not (recipe / "exp").exists()


@pytest.mark.slow
def test_a_python_error_in_a_stage_is_one_line_with_the_log(tmp_path: Path) -> None:
    recipe = make_recipe(tmp_path)
    config = recipe / "broken.yaml"
    config.write_text((ROOT / "recipes/shared/hparams/train.yaml").read_text() + "thing: !new:no_such_module.Thing\n")
    p = run(recipe, "--stage", "2", "--folds", "2", "--train_config", "broken.yaml")
    line = refusal(p)
    exp = next((recipe / "exp").glob(f"{EXP}_cfg*"))  # a training YAML of one's own names the experiment
    log = exp / "fold2" / "stdout.log"
    want = "stage 2 (cta_rnn fold 2) failed: ImportError: There is no such class as no_such_module.Thing"
    assert line == f"{want} (log: {log.relative_to(recipe)})"
    assert "Traceback" in log.read_text() and not (exp / "run.sh").exists()


def test_fold_selection_is_deduplicated_and_checked() -> None:
    from cta_rnn.artifacts import select_folds

    assert select_folds("1,1", [1, 2, 3]) == [1]
    assert select_folds("3,1-2,2", [1, 2, 3]) == [1, 2, 3]
    assert select_folds("2 3", [1, 2, 3]) == [2, 3]
    assert select_folds("", [1, 2]) == [1, 2]
    with pytest.raises(ValueError, match=r"fold\(s\) \[99\] do not exist \(prepared: \[1, 2\]\)"):
        select_folds("99", [1, 2])
    with pytest.raises(ValueError, match="'1-x' is not a fold number or a range a-b"):
        select_folds("1-x", [1, 2])
