"""Issue 24, stage 2 and 3 as a new user meets them on a finished recipe (findings 2, 7 and 10).

- 2: a fold whose CSVs changed (relabelled utterances) is refused naming the split file, never skipped with
  its old results nor retrained over them silently; ``--force=true`` retrains it on the new labels.
- 7: a copied or moved repository keeps its finished folds (a fold's identity is its content, not its paths);
  ``run_config.json`` files of older versions (absolute paths inside) are still accepted.
- 10: folds trained by separate runs are all scored (never ``2 of 1 (partial)``); the training log says how many
  checkpoints were really averaged.
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import pandas as pd
import pytest
from toy_data import toy_manifest, write_toy_fold, write_toy_store

from cta_rnn.artifacts import read_folds_list, write_folds_list
from cta_rnn.train import main

ROOT = Path(__file__).resolve().parents[1]
TRAIN_YAML = ROOT / "recipes" / "shared" / "hparams" / "train.yaml"
SMALL = "--model_kwargs={rnn_hidden: 16, attention_hidden: 8, classifier_hidden: 16}"


def args(repo: Path, *extra: str) -> list[str]:
    """A 2-epoch CPU training of ``repo/data/fold1`` on ``repo/dump/store`` into ``repo/exp/x/fold1``."""
    return [
        str(TRAIN_YAML),
        f"--fold_dir={repo / 'data' / 'fold1'}",
        f"--store_dir={repo / 'dump' / 'store'}",
        f"--output_folder={repo / 'exp' / 'x' / 'fold1'}",
        "--number_of_epochs=2",
        "--batch_size=4",
        "--lr=0.005",
        "--device=cpu",
        "--average_checkpoints=5",
        SMALL,
        *extra,
    ]


def error_line(err: str) -> str:
    """The refusal: exactly one ``error:`` line and no traceback."""
    lines = [ln for ln in err.splitlines() if ln.startswith("error: ")]
    assert len(lines) == 1 and "Traceback" not in err, err[-3000:]
    return lines[0]


def make_repo(repo: Path) -> Path:
    """A small repository (data, dump, exp) with fold 1 trained for 2 epochs, asked to average 5 checkpoints."""
    m = toy_manifest(n_per_speaker=8, speakers=4)
    write_toy_store(repo / "dump" / "store", m)
    write_toy_fold(repo / "data" / "fold1", m, "spk0", "spk1")
    assert main(args(repo)) == 0
    assert (repo / "exp" / "x" / "fold1" / "test_results.json").is_file()
    return repo


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One trained repository shared by the tests that only read or copy it."""
    return make_repo(tmp_path_factory.mktemp("repo"))


def copy_of(trained: Path, dest: Path) -> Path:
    """The whole repository copied elsewhere (as ``cp -a`` of a finished recipe would)."""
    shutil.copytree(trained, dest, symlinks=True)
    return dest


def finished_files(fold: Path) -> dict[str, bytes]:
    return {n: (fold / n).read_bytes() for n in ("test_results.json", "predictions.csv", "run_config.json")}


# ---- finding 2: fixed labels are not hidden behind old results ----
def test_relabelled_fold_data_is_refused_naming_the_file_then_force_retrains(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    repo = make_repo(tmp_path / "repo")  # trained where it stays: only the data changes
    fold = repo / "exp" / "x" / "fold1"
    before = finished_files(fold)
    test_csv = repo / "data" / "fold1" / "test.csv"
    test = pd.read_csv(test_csv, dtype=str, keep_default_na=False)
    relabel = {"neu": "hap", "hap": "neu", "ang": "sad", "sad": "ang"}
    test.loc[:5, "emotion"] = test.loc[:5, "emotion"].map(relabel)  # 6 of 8 utterances get another label
    test.to_csv(test_csv, index=False)

    assert main(args(repo)) == 1
    line = error_line(capsys.readouterr().err)
    assert line.startswith(f"error: {fold}: its finished run used other fold data (")
    assert "fold data: test.csv changed (6 of 8 labels differ from predictions.csv)" in line
    assert "train.csv" not in line and "--force=true" in line
    assert finished_files(fold) == before  # neither skipped with old labels nor overwritten

    train_csv = repo / "data" / "fold1" / "train.csv"
    train = pd.read_csv(train_csv, dtype=str, keep_default_na=False)
    train.iloc[:-1].to_csv(train_csv, index=False)  # one training utterance dropped as well
    assert main(args(repo, "--lr=0.002")) == 1
    line = error_line(capsys.readouterr().err)
    assert "other hyperparameters and fold data (lr: 0.005 -> 0.002; " in line
    assert "fold data: train.csv changed (ID, emotion, speaker, 16 -> 15 rows)" in line
    assert finished_files(fold) == before

    assert main(args(repo, "--force=true")) == 0
    pred = pd.read_csv(fold / "predictions.csv", dtype=str, keep_default_na=False)
    now = pred.merge(test, on="ID")
    assert len(now) == 8 and (now["true"] == now["emotion"]).all()  # the results use the fixed labels
    assert json.loads((fold / "test_results.json").read_text())["n"] == {"train": 15, "valid": 8, "test": 8}
    assert main(args(repo)) == 0  # the new data is now the fold's identity: skipped as finished
    assert "fold data" not in capsys.readouterr().err


# ---- finding 7: a copied or moved repository keeps its finished folds ----
def test_a_moved_repository_keeps_its_finished_folds_and_old_records_still_match(
    trained: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    moved = copy_of(trained, tmp_path / "elsewhere" / "repo")
    fold = moved / "exp" / "x" / "fold1"
    before = finished_files(fold)
    with caplog.at_level(logging.INFO, logger="cta_rnn.train"):
        assert main(args(moved)) == 0
    assert "fold already finished, skipping" in caplog.text
    assert finished_files(fold) == before
    record = json.loads(before["run_config.json"])
    assert "fold_dir" not in record and "store_dir" not in record  # what the run is, not where it lies
    assert set(record["fold_data"]) == {"train.csv", "valid.csv", "test.csv"}
    assert record["store"]["manifest_checksum"] and record["store"]["encoder"]["name"] == "toy"

    # a record of an older version: absolute paths of where the repository was, no content digests
    old = {k: v for k, v in record.items() if k not in ("fold_data", "store")}
    old |= {"fold_dir": str(trained / "data" / "fold1"), "store_dir": str(trained / "dump" / "store")}
    (fold / "run_config.json").write_text(json.dumps(old))
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="cta_rnn.train"):
        assert main(args(moved)) == 0
    assert "fold already finished, skipping" in caplog.text
    assert "does not record its fold data, store: not compared" in caplog.text  # said, not silent
    assert json.loads((fold / "run_config.json").read_text()) == old  # a finished run's record is kept

    # the store's identity still counts: another encoder revision is refused
    from cta_rnn.train import run_differences

    other = {**record, "store": {**record["store"], "encoder": {**record["store"]["encoder"], "revision": "v2"}}}
    assert run_differences(record, other, fold, moved / "data" / "fold1") == {
        "store": ['store: encoder.revision: null -> "v2"']
    }


# ---- finding 10: folds of separate runs are all scored; the averaged count is the real one ----
def test_the_training_log_names_the_checkpoints_really_averaged(trained: Path) -> None:
    fold = trained / "exp" / "x" / "fold1"
    test_line = (fold / "train_log.txt").read_text().strip().splitlines()[-1]
    assert "averaged checkpoints: 2 of 5 asked" in test_line, test_line  # 2 epochs: 2 checkpoints, not 5
    assert json.loads((fold / "test_results.json").read_text())["averaged_epochs"] == [1, 2]


def test_folds_of_separate_runs_are_all_scored(trained: Path, tmp_path: Path) -> None:
    from cta_rnn.results_md import folds_cell
    from cta_rnn.scoring import score_experiment

    fold = trained / "exp" / "x" / "fold1"
    exp = tmp_path / "exp" / "x"
    write_folds_list(exp, [1], available=[1, 2, 3])  # ./run.sh --folds 1
    shutil.copytree(fold, exp / "fold1")
    write_folds_list(exp, [2], available=[1, 2, 3])  # ./run.sh --folds 2
    shutil.copytree(fold, exp / "fold2")
    assert read_folds_list(exp) == [1, 2]
    res = score_experiment(exp, write=False)
    assert res["folds_scored"] == [1, 2] and res["folds_expected"] == [1, 2] and not res["partial"]
    assert folds_cell(res) == "2 of 3 (subset)"

    (exp / "folds.json").write_text(json.dumps({"folds": [3], "available": [1, 2, 3]}))  # an older folds.json
    res = score_experiment(exp, write=False)
    assert res["folds_expected"] == [1, 2, 3] and res["folds_missing"] == [3]
    assert folds_cell(res) == "2 of 3 (partial)"  # never "2 of 1 (partial)"
