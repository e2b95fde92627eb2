"""IEMOCAP and MSP-IMPROV recipes end to end on small trees laid out like the real releases, then
cross-corpus both ways (embedded Whisper tiny.en, trimmed input for speed; tiny model, 1 fold, 1 epoch)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from corpus_fixtures import build_iemocap, build_msp_improv, msp_cells_small

from cta_rnn import EMOTIONS
from cta_rnn.hparams_schema import experiment_suffix

pytestmark = pytest.mark.slow  # whole recipe runs: `pytest -m "not slow"` leaves them out

ROOT = Path(__file__).resolve().parents[1]
TRAIN_ARGS = "--number_of_epochs=1 --batch_size=16 --model_kwargs={rnn_hidden: 16,attention_hidden: 8}"
SUFFIX = experiment_suffix(
    {
        "number_of_epochs": 1,
        "batch_size": 16,
        "model_kwargs": {"rnn_hidden": 16, "attention_hidden": 8},
    }
)
EXP = f"cta_rnn_whisper_tiny_en_trimmed_loso_speaker_{SUFFIX}"  # the training overrides name the experiment
TINY = [
    "--encoder",
    "whisper_tiny_en_trimmed",
    "--folds",
    "1",
    "--train_args",
    TRAIN_ARGS,
]


@pytest.fixture(scope="module")
def recipes(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("recipes")
    for name in ("IEMOCAP", "MSP-IMPROV", "cross_corpus"):
        shutil.copytree(
            ROOT / "recipes" / name,
            base / name,
            ignore=shutil.ignore_patterns("data", "dump", "exp"),
        )
    (base / "shared").symlink_to(ROOT / "recipes" / "shared")
    corpora = tmp_path_factory.mktemp("corpora")
    counts = {f"Ses{s:02d}{g}": {e: 3 for e in EMOTIONS} for s in range(1, 6) for g in "FM"}
    os.environ["IEMOCAP_ROOT"] = str(build_iemocap(corpora, counts, extras_per_dialog=1))
    extras = {(1, "S", "O"): 2, (2, "P", "X"): 2}
    os.environ["MSP_IMPROV_ROOT"] = str(build_msp_improv(corpora, msp_cells_small(1), extras, "Evalution.txt"))
    return base


def run(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        ["./run.sh", "--python", sys.executable, *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )


@pytest.mark.parametrize(("name", "n_utts", "n_speakers"), [("IEMOCAP", 120, 10), ("MSP-IMPROV", 96, 12)])
def test_recipe_stages_0_to_3(recipes: Path, name: str, n_utts: int, n_speakers: int) -> None:
    rdir = recipes / name
    p = run(
        rdir,
        "--stage",
        "0",
        "--stop_stage",
        "3",
        "--prep_opts",
        "--allow_partial",
        *TINY,
    )
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-4000:]
    manifest = pd.read_csv(rdir / "data" / "manifest.csv")
    assert len(manifest) == n_utts and manifest["speaker"].nunique() == n_speakers
    assert sorted(manifest["emotion"].unique()) == sorted(EMOTIONS)
    folds = sorted(p.name for p in (rdir / "data" / "folds" / "loso_speaker").glob("fold*") if p.is_dir())
    assert len(folds) == n_speakers
    res = json.loads((rdir / "exp" / EXP / "results.json").read_text())
    assert res["folds_scored"] == [1]
    assert (rdir / "RESULTS.md").is_file() and (rdir / "exp" / EXP / "confusion.png").is_file()


def test_prep_refuses_a_partial_copy_without_the_flag(recipes: Path) -> None:
    p = run(recipes / "IEMOCAP", "--stage", "0", "--stop_stage", "0")
    assert p.returncode != 0
    assert "expected" in p.stderr  # the error names the differing cells


@pytest.mark.parametrize(("src", "tgt", "n"), [("IEMOCAP", "MSP-IMPROV", 96), ("MSP-IMPROV", "IEMOCAP", 120)])
def test_cross_corpus(recipes: Path, src: str, tgt: str, n: int) -> None:
    if not (recipes / src / "exp" / EXP / "fold1" / "model.json").exists():
        pytest.skip("needs the recipes trained by test_recipe_stages_0_to_3")
    p = run(
        recipes / "cross_corpus",
        "--source",
        src,
        "--target",
        tgt,
        "--encoder",
        "whisper_tiny_en_trimmed",
        "--train_args",
        TRAIN_ARGS,
    )
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-4000:]
    out = recipes / "cross_corpus" / "exp" / f"{src}_to_{tgt}_{EXP}"
    assert len(pd.read_csv(out / "fold1" / "predictions.csv")) == n
    table = (recipes / "cross_corpus" / f"CROSS_CORPUS_{EXP}.md").read_text()
    assert f"| {src} | {tgt} | cross | 1 |" in table and f"| {src} | {src} | within | 1 |" in table


def test_cross_corpus_refuses_another_encoder(recipes: Path) -> None:
    if not (recipes / "IEMOCAP" / "exp" / EXP / "fold1" / "model.json").exists():
        pytest.skip("needs the trained recipes")
    other = recipes / "MSP-IMPROV" / "dump" / "whisper_tiny_en"
    shutil.copytree(recipes / "MSP-IMPROV" / "dump" / "whisper_tiny_en_trimmed", other)
    meta = json.loads((other / "meta.json").read_text())
    meta["encoder"]["input"] = "padded"
    (other / "meta.json").write_text(json.dumps(meta))
    exp = recipes / "IEMOCAP" / "exp" / f"cta_rnn_whisper_tiny_en_loso_speaker_{SUFFIX}"
    shutil.copytree(recipes / "IEMOCAP" / "exp" / EXP, exp)
    p = run(
        recipes / "cross_corpus",
        "--source",
        "IEMOCAP",
        "--target",
        "MSP-IMPROV",
        "--train_args",
        TRAIN_ARGS,
    )
    assert p.returncode != 0 and "target store encoder differs" in p.stderr
