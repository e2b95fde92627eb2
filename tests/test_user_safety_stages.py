"""Issue 24, stage 5 and cross-corpus as a new user meets them on a finished recipe (findings 8 and 10).

- 8: ``hparams/tune.yaml`` values are read as ``-- --key=value`` is (``1e-3`` is a number); every point has its
  own folder tag (``layers0-12`` vs ``layers0-1-2``); every point is checked before the first trains; a YAML
  syntax error is ``tune.yaml:LINE: ...``; a report over fewer folds than the protocol's says it is a subset.
- 10: cross-corpus refusals (target emotion unknown to the source, another encoder, an unfinished source fold)
  are one line naming the file, with advice made of options the recipes really have; ``--folds 3-1`` and
  ``--ngpu`` beyond the machine's GPUs are one line before anything runs.

The recipes are the toy recipe of ``test_reliability_driver`` (synthetic store, 4 speakers, tiny model).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from test_reliability_driver import EXP, make_recipe, refusal, run
from toy_data import LABELS, toy_manifest, write_toy_store

from cta_rnn import tune
from cta_rnn.artifacts import select_folds, write_folds_list, write_test_results
from cta_rnn.hparams_schema import parse_cli_overrides
from cta_rnn.io_utils import atomic_to_csv

ROOT = Path(__file__).resolve().parents[1]


def stage5(recipe: Path, grid: str, *args: str) -> subprocess.CompletedProcess:
    """Stage 5 of the toy recipe with this ``hparams/tune.yaml``."""
    (recipe / "hparams" / "tune.yaml").write_text(grid)
    return run(recipe, "--stage", "5", "--stop_stage", "5", *args)


# ---- finding 8: stage 5 ----
@pytest.mark.slow
def test_tune_grid_reads_1e_3_as_a_number_like_the_command_line(tmp_path: Path) -> None:
    """``grid: {lr: [1e-3, 2e-3]}`` trains lr 0.001 and 0.002 (YAML 1.1 read them as strings: refused)."""
    y = tmp_path / "tune.yaml"
    y.write_text("grid:\n  lr: [1e-3, 2e-3]\n")
    points = tune.grid_points(y)
    assert points == [{"lr": 0.001}, {"lr": 0.002}]
    assert points[0]["lr"] == parse_cli_overrides(["--lr=1e-3"])["lr"]  # the same value as -- --lr=1e-3
    assert tune.point_tags(points) == ["lr0.001", "lr0.002"] and tune.point_args(points[0]) == ["--lr=0.001"]

    recipe = make_recipe(tmp_path / "r")
    p = stage5(recipe, "grid:\n  lr: [1e-3, 2e-3]\n", "--folds", "1", "--", "--number_of_epochs=1")
    assert p.returncode == 0, p.stderr[-3000:]
    for tag, lr in (("lr0.001", 0.001), ("lr0.002", 0.002)):
        fold = recipe / "exp" / f"{EXP}_number_of_epochs1_tune_{tag}" / "fold1"
        assert json.loads((fold / "run_config.json").read_text())["lr"] == lr
    report = (recipe / "exp" / f"tune_{EXP}_number_of_epochs1.md").read_text()
    assert "Folds 1 (1 of 4: a SUBSET of the protocol's 4 folds)" in report  # finding 8's last point, for real


def test_tune_tags_are_unique_and_unambiguous(tmp_path: Path) -> None:
    """``layers: [[0,12],[0,1,2]]`` gave both points ``layers012`` (one folder for two models)."""
    y = tmp_path / "tune.yaml"
    y.write_text("grid:\n  layers: [[0, 12], [0, 1, 2]]\n")
    assert tune.point_tags(tune.grid_points(y)) == ["layers0-12", "layers0-1-2"]
    y.write_text("grid:\n  model_kwargs: [{activation: re lu}, {activation: relu}]\n  lr: [0.001]\n")
    tags = tune.point_tags(tune.grid_points(y))  # characters dropped from a folder name: still two folders
    assert len(set(tags)) == 2 and all(re.fullmatch(r"activationrelu-lr0\.001-h[0-9a-f]{6}", t) for t in tags)
    assert tags == tune.point_tags(tune.grid_points(y))  # stable: a rerun finds the same folders
    # the tags of finished runs (scalars, mappings) are as before: their folders are found again
    assert tune.point_tag({"model_kwargs": {"fusion": "concat", "input_mean": True}}) == "fusionconcat-input_meanTrue"
    assert tune.point_tag({"lr": 0.002, "max_train_seconds": 1.5}) == "lr0.002-max_train_seconds1.5"
    y.write_text("grid:\n  lr: [1e-3, 0.001]\n")
    with pytest.raises(ValueError, match=r"tune.yaml: grid: lr lists the value 0.001 twice"):
        tune.grid_points(y)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("grid", "message"),
    [
        ("grid:\n  lr: [0.001, -1]\n", "point 2 of 2 (--lr=-1): lr: expected a number > 0, got -1"),
        (
            "grid:\n  model_kwargs: [{dropout: 0.3}, {dropuot: 0.3}]\n",
            'point 2 of 2 (--model_kwargs={"dropuot":0.3}): model_kwargs [',
        ),
        ("grid:\n  layers: [[0], [7]]\n", "point 2 of 2 (--layers=[7]): dump/toy: layers [7] not in the store"),
    ],
    ids=["schema", "model_kwargs", "layers"],
)
def test_tune_checks_every_point_before_the_first_trains(tmp_path: Path, grid: str, message: str) -> None:
    """A bad second point was found only after the first had trained."""
    recipe = make_recipe(tmp_path)
    line = refusal(stage5(recipe, grid))
    assert line.startswith("hparams/tune.yaml: ") and message in line, line
    assert not (recipe / "exp").exists()  # nothing trained, nothing created


def test_tune_yaml_syntax_error_names_file_and_line(tmp_path: Path) -> None:
    """A syntax error said neither file nor line."""
    recipe = make_recipe(tmp_path)
    line = refusal(stage5(recipe, "grid:\n  lr: [0.001, 0.002\n  batch_size: [8]\n"))
    assert line == "hparams/tune.yaml:3: not valid YAML: expected ',' or ']', but got ':'"
    assert not (recipe / "exp").exists()


def test_tune_report_over_fewer_folds_is_labelled_a_subset(tmp_path: Path) -> None:
    """``--folds 2`` after ``--folds 1`` reported both folds of the 4 with no subset label."""

    def point(name: str, valid: float) -> Path:
        exp = tmp_path / name
        for k in (1, 2):  # two runs, as the driver records them: --folds 1, then --folds 2
            write_folds_list(exp, [k], available=[1, 2, 3, 4])
            write_test_results(exp / f"fold{k}", {"valid_UA": valid, "test": {"UA": 0.5}})
        return exp

    sel = tune.select([point("a", 0.9), point("b", 0.8)])
    assert sel["folds"] == [1, 2] and sel["folds_available"] == [1, 2, 3, 4] and sel["subset"]
    md = tune.selection_markdown(sel)
    assert "Folds 1, 2 (2 of 4: a SUBSET of the protocol's 4 folds)" in md and "on the fold subset above" in md
    for k in (3, 4):
        for name in ("a", "b"):
            write_test_results(tmp_path / name / f"fold{k}", {"valid_UA": 0.7, "test": {"UA": 0.5}})
    full = tune.select([tmp_path / "a", tmp_path / "b"])
    assert not full["subset"] and "SUBSET" not in tune.selection_markdown(full)


# ---- finding 10: cross-corpus, --folds, --ngpu ----
@pytest.fixture(scope="module")
def corpora(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """recipes/{toy (source, fold 1 trained), toy_target (manifest + finished dump), cross_corpus, shared}."""
    base = tmp_path_factory.mktemp("recipes")
    source = make_recipe(base)
    p = run(source, "--stage", "2", "--folds", "1", "--", "--number_of_epochs=1")
    assert p.returncode == 0, p.stderr[-3000:]
    target = base / "toy_target"
    m = toy_manifest(n_per_speaker=4, speakers=2, seed=1)
    atomic_to_csv(m, target / "data" / "manifest.csv")
    write_toy_store(target / "dump" / "toy", m, seed=1)
    (base / "cross_corpus").mkdir()
    shutil.copy(ROOT / "recipes" / "cross_corpus" / "run.sh", base / "cross_corpus" / "run.sh")
    return base


def cross(base: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    cmd = ["./run.sh", "--python", sys.executable, "--source", "toy", "--target", "toy_target", "--encoder", "toy"]
    cmd += [*args, "--", "--number_of_epochs=1"]
    return subprocess.run(cmd, cwd=base / "cross_corpus", env=env, capture_output=True, text=True, timeout=600)


def driver_options() -> set[str]:
    """The options recipes/shared/stages.sh accepts."""
    text = (ROOT / "recipes" / "shared" / "stages.sh").read_text()
    names = re.search(r'__option_names="([^"]*)"', text, flags=re.S)
    assert names
    return set(names.group(1).split())


@pytest.mark.slow
def test_cross_corpus_refusals_are_one_line_with_advice_the_recipes_take(corpora: Path) -> None:
    """Tracebacks before; the unfinished-fold advice named --allow_unfinished, which no run.sh takes."""
    src = corpora / "toy" / "exp" / f"{EXP}_number_of_epochs1"
    p = cross(corpora)
    assert p.returncode == 0, p.stderr[-3000:]
    out = corpora / "cross_corpus" / "exp" / f"toy_to_toy_target_{src.name}"
    assert len((out / "fold1" / "predictions.csv").read_text().splitlines()) == 1 + 8
    assert "| toy | toy_target | cross | 1 |" in p.stdout

    manifest = corpora / "toy_target" / "data" / "manifest.csv"
    original = manifest.read_text()
    manifest.write_text(original.replace(",neu,", ",fru,", 1))
    line = refusal(cross(corpora, "--force", "true"))
    assert line.startswith("cross-corpus test failed: ../toy_target/data/manifest.csv: target emotions ['fru'] ")
    assert f"labels of ../toy/exp/{src.name}/fold1/model.json {LABELS}" in line
    manifest.write_text(original)

    spec_file = src / "fold1" / "model.json"
    spec = json.loads(spec_file.read_text())
    spec_file.write_text(json.dumps({**spec, "encoder": {**spec["encoder"], "name": "other"}}))
    line = refusal(cross(corpora, "--force", "true"))
    assert "../toy_target/dump/toy: target store encoder differs from the one of" in line
    assert "(name: 'other' vs 'toy'); dump the target as the source was: cd ../toy_target && ./run.sh --stage 1" in line
    spec_file.write_text(json.dumps(spec))

    unfinished = src.parent / f"{EXP}_unfinished_number_of_epochs1"
    shutil.copytree(src, unfinished)
    (unfinished / "fold1" / "test_results.json").unlink()
    line = refusal(cross(corpora, "--tag", "unfinished"))
    fold = f"../toy/exp/{unfinished.name}/fold1"
    advice = "finish it: cd ../toy && ./run.sh --stage 2 --stop_stage 2 --folds 1 --encoder toy --model cta_rnn"
    assert line.startswith(
        f"cross-corpus test failed: {fold}: training did not finish (no test_results.json); {advice}"
    )
    options = line.split("; ", 1)[1].split(" -- ")[0]  # after -- come the training overrides
    given = {o[2:] for o in re.findall(r"(?<= )--[a-z_]+", options)}
    assert given and given <= driver_options(), given - driver_options()  # every advised option exists
    assert (unfinished / "fold1" / "model.json").is_file()  # nothing of the source was touched


def test_folds_range_backwards_is_one_line(tmp_path: Path) -> None:
    """``--folds 3-1`` printed argparse's ``--folds: expected at least one argument``."""
    with pytest.raises(ValueError, match=r"--folds '3-1': range 3-1 has start > end \(write 1-3\)"):
        select_folds("3-1", [1, 2, 3])
    with pytest.raises(ValueError, match="selects no fold"):
        select_folds(",", [1, 2, 3])
    recipe = make_recipe(tmp_path)
    line = refusal(run(recipe, "--stage", "2", "--folds", "3-1"))
    assert line == "--folds '3-1': range 3-1 has start > end (write 1-3)"
    assert not (recipe / "exp").exists()


def test_ngpu_beyond_the_machine_is_refused_before_torchrun(tmp_path: Path) -> None:
    """``--ngpu 2`` on a CPU machine ended in ``ChildFailedError:`` with nothing after it."""
    have = torch.cuda.device_count() if torch.cuda.is_available() else 0
    ngpu = max(2, have + 1)  # one process (--ngpu 1) is left to --device
    recipe = make_recipe(tmp_path)
    line = refusal(run(recipe, "--stage", "2", "--ngpu", str(ngpu)))
    assert line == f"--ngpu {ngpu}: this machine has {have} CUDA GPU(s)"
    assert not (recipe / "exp").exists()
