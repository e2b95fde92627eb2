"""Issue 24, inference as a new user: loading and exporting never clear a user's folder, output paths are checked
before anything is encoded, edited labels are refused, and labels that mean little (too little speech for
``--adapt``, over-long ``--segment`` pieces, silence through the Python API) are warned about. A toy fold with a
stand-in encoder (``tests/test_reliability_predict.py``)."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
import torch
from test_reliability_predict import FakeEncoder, encoder, fold, wav  # noqa: F401 - fixtures

from cta_rnn.commands import main_export, main_predict
from cta_rnn.inference import EXPORT_FILES, EmotionRecognizer, TargetRefused, UnreliableLabelWarning, export_fold


def experiment_copy(fold: Path, tmp_path: Path) -> Path:  # noqa: F811 - the fixture's value
    """A user's experiment: two finished folds (copies of the toy fold); returns fold1."""
    for k in (1, 2):
        shutil.copytree(fold, tmp_path / "exp" / "X" / f"fold{k}")
    return tmp_path / "exp" / "X" / "fold1"


def no_encoding(encoder: FakeEncoder) -> list[int]:  # noqa: F811
    """Calls to the encoder, recorded (output checks must come first)."""
    calls: list[int] = []
    encoder.on_encode = lambda: calls.append(1)
    return calls


def test_export_and_from_hparams_never_clear_a_users_folder(
    fold: Path,  # noqa: F811
    encoder: FakeEncoder,  # noqa: F811
    tmp_path: Path,
    capsys: pytest.CaptureFixture,
) -> None:
    f1 = experiment_copy(fold, tmp_path)
    exp = f1.parent
    user = tmp_path / "userdir"
    user.mkdir()
    (user / "notes.txt").write_text("mine")
    with pytest.raises(
        TargetRefused, match=f"^{user}: holds files that are not part of a cta-rnn export \\(notes.txt\\)"
    ):
        EmotionRecognizer.from_hparams(source=str(f1), savedir=str(user))
    with pytest.raises(TargetRefused, match="is the source fold itself"):
        EmotionRecognizer.from_hparams(source=str(f1), savedir=str(f1))
    with pytest.raises(TargetRefused, match="lies inside the source fold"):
        EmotionRecognizer.from_hparams(source=str(f1), savedir=str(f1 / "sd"))
    assert main_export([str(f1), str(exp), "--force"]) == 1
    assert capsys.readouterr().err == (
        f"error: {exp}: contains the source fold {f1}; exporting there would delete it\n"
    )
    assert main_export([str(f1), str(f1), "--force"]) == 1
    assert main_export([str(f1), str(user), "--force"]) == 1
    assert "nothing was changed" in capsys.readouterr().err
    assert (user / "notes.txt").read_text() == "mine" and sorted(p.name for p in user.iterdir()) == ["notes.txt"]
    assert (exp / "fold2" / "save").is_dir() and (f1 / "save").is_dir() and (f1 / "predictions.csv").is_file()
    assert not (f1 / "sd").exists()
    # an earlier export is replaced only with --force, and only it; from_hparams reuses it as its savedir
    model = tmp_path / "models" / "ser"
    assert main_export([str(f1), str(model)]) == 0
    assert main_export([str(f1), str(model)]) == 1
    assert capsys.readouterr().err == f"error: {model}: holds an earlier export (use --force to replace it)\n"
    assert main_export([str(f1), str(model), "--force"]) == 0
    assert sorted(p.name for p in model.iterdir()) == sorted(EXPORT_FILES)
    assert sorted(p.name for p in model.parent.iterdir()) == ["ser"]  # no temp folders left beside it
    assert EmotionRecognizer.from_hparams(source=str(f1), savedir=str(model)).labels == ["neu", "hap", "ang", "sad"]
    assert EmotionRecognizer.from_hparams(source=str(model), savedir=str(model)).labels  # SpeechBrain's own folder
    # a savedir with another model's hyperparams.yaml would be loaded instead of the source's: refused
    other = tmp_path / "other"
    other.mkdir()
    (other / "hyperparams.yaml").write_text("labels: [a, b]\n")
    with pytest.raises(TargetRefused, match=f"^{other}/hyperparams.yaml: savedir already holds another model's"):
        EmotionRecognizer.from_hparams(source=str(model), savedir=str(other))
    assert (other / "hyperparams.yaml").read_text() == "labels: [a, b]\n"


def test_a_failed_forced_export_keeps_the_earlier_one(
    fold: Path,  # noqa: F811
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture,
) -> None:
    model = export_fold(fold, tmp_path / "ser")
    before = {p.name: p.read_bytes() for p in model.iterdir()}
    real_replace = os.replace

    def full_disk(src: str | os.PathLike, dst: str | os.PathLike) -> None:
        if Path(dst) == model and ".old." not in Path(src).name:  # the new export moving in
            raise OSError(28, "No space left on device")
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", full_disk)
    assert main_export([str(fold), str(model), "--force"]) == 1
    assert capsys.readouterr().err == "error: [Errno 28] No space left on device\n"
    assert {p.name: p.read_bytes() for p in model.iterdir()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ser"]


def test_csv_typo_over_audio_is_refused(
    fold: Path,  # noqa: F811
    encoder: FakeEncoder,  # noqa: F811
    tmp_path: Path,
    capsys: pytest.CaptureFixture,
) -> None:
    calls = no_encoding(encoder)
    clip1, clip2 = wav(tmp_path / "typo" / "clip1.wav"), wav(tmp_path / "typo" / "clip2.wav", seed=1)
    before = clip1.read_bytes()
    assert main_predict(["--model", str(fold), "--csv", str(clip1), str(clip2)]) == 2
    assert capsys.readouterr().err == (
        f"error: --csv {clip1}: has an audio suffix (.wav): refusing to write results there\n"
    )
    take = tmp_path / "take1"  # audio without a suffix, given as input and as --json
    take.write_bytes(before)
    assert main_predict(["--model", str(fold), "--json", str(take), str(take), str(clip2)]) == 2
    assert capsys.readouterr().err == f"error: --json {take}: is one of the inputs: refusing to write over it\n"
    assert clip1.read_bytes() == before and take.read_bytes() == before and calls == []


def test_edited_hyperparams_labels_are_refused(
    fold: Path,  # noqa: F811
    encoder: FakeEncoder,  # noqa: F811
    tmp_path: Path,
    capsys: pytest.CaptureFixture,
) -> None:
    model = export_fold(fold, tmp_path / "model")
    hp = model / "hyperparams.yaml"
    text = hp.read_text()
    assert "- hap\n- ang\n" in text
    hp.write_text(text.replace("- hap\n- ang\n", "- ang\n- hap\n"))
    expected = (
        f"{hp}: labels ['neu', 'ang', 'hap', 'sad'] differ from {model}/label_encoder.txt ['neu', 'hap', 'ang', "
        "'sad'] (order included): the outputs would be named wrongly; restore the labels or export the fold again"
    )
    with pytest.raises(ValueError) as err:
        EmotionRecognizer.from_hparams(source=str(model), savedir=str(tmp_path / "sd"))
    assert str(err.value) == expected
    with pytest.raises(ValueError, match="differ from"):
        EmotionRecognizer.from_dir(model)
    assert main_predict(["--model", str(model), str(wav(tmp_path / "a.wav"))]) == 1
    assert capsys.readouterr().err == f"error: {expected}\n"
    with pytest.raises(ValueError, match=r"\(overrides\): labels \['sad', 'ang', 'hap', 'neu'\]"):
        hp.write_text(text)
        EmotionRecognizer.from_hparams(
            source=str(model), savedir=str(tmp_path / "sd2"), overrides={"labels": ["sad", "ang", "hap", "neu"]}
        )


def test_adapt_on_too_little_speech_warns(
    fold: Path,  # noqa: F811
    encoder: FakeEncoder,  # noqa: F811
    tmp_path: Path,
    capsys: pytest.CaptureFixture,
) -> None:
    speaker = tmp_path / "spk"
    shutil.copytree(fold, speaker)  # the toy fold as a speaker-normalised model (same buffers)
    spec = json.loads((speaker / "model.json").read_text())
    (speaker / "model.json").write_text(json.dumps({**spec, "normalization": "speaker"}))
    one = wav(tmp_path / "one.wav", seconds=3.0)
    out = tmp_path / "p.json"
    assert main_predict(["--model", str(speaker), str(one), "--adapt", "--json", str(out), "--device", "cpu"]) == 0
    warning = (
        "--adapt: speaker statistics from 1 clip(s), 3.0 s in all; below 8 clips (2 per emotion class) or 30 s "
        "they describe these clips, not the speaker, and normalising by them can erase the emotion: labels are "
        "unreliable; give more of this speaker's speech or leave out --adapt"
    )
    assert capsys.readouterr().err == f"WARNING: {warning}\n"
    assert json.loads(out.read_text())["warnings"] == [{"file": None, "warning": warning}]
    enough = [str(wav(tmp_path / "many" / f"{i}.wav", seconds=4.0, seed=i)) for i in range(8)]  # 8 clips, 32 s
    assert main_predict(["--model", str(speaker), *enough, "--adapt", "--device", "cpu"]) == 0
    assert capsys.readouterr().err == ""
    assert main_predict(["--model", str(fold), str(one), "--adapt", "--device", "cpu"]) == 0
    assert "--adapt has no effect" in capsys.readouterr().err  # the toy fold itself: global normalisation
    with pytest.raises(SystemExit):
        main_predict(["--help"])
    assert "with fewer than 2 clips per emotion class or 30 s in all" in " ".join(capsys.readouterr().out.split())
    rec = EmotionRecognizer.from_dir(speaker)
    hidden, frames = rec.features(rec.load_audio(one)[None], torch.ones(1))
    with pytest.warns(UnreliableLabelWarning, match="speaker_stats: speaker statistics from 1 clip"):
        rec.speaker_stats([hidden[0, :, : int(frames[0])]])


def test_long_segments_are_warned_about_without_claiming_a_direction(
    fold: Path,  # noqa: F811
    encoder: FakeEncoder,  # noqa: F811
    tmp_path: Path,
    capsys: pytest.CaptureFixture,
) -> None:
    long = str(wav(tmp_path / "long.wav", seconds=30.0))
    assert main_predict(["--model", str(fold), long, "--segment", "10", "--device", "cpu"]) == 0
    assert capsys.readouterr().err == (
        f"WARNING: {long}: --segment 10 gives pieces of up to 10.0 s, much longer than the 2-s training crops: "
        "labels of clips this long are unreliable (the model never saw such lengths); use --segment 2\n"
    )
    assert main_predict(["--model", str(fold), long, "--segment", "2", "--device", "cpu"]) == 0
    assert capsys.readouterr().err == ""
    assert main_predict(["--model", str(fold), long, "--device", "cpu"]) == 0
    err = capsys.readouterr().err
    assert "much longer than the 2-s training crops" in err and "neutral" not in err and "drift" not in err


def test_output_paths_are_checked_before_encoding(
    fold: Path,  # noqa: F811
    encoder: FakeEncoder,  # noqa: F811
    tmp_path: Path,
    capsys: pytest.CaptureFixture,
) -> None:
    calls = no_encoding(encoder)
    a = wav(tmp_path / "a.wav")
    (tmp_path / "existing_dir").mkdir()
    (tmp_path / "notes.txt").write_text("mine")
    same = str(tmp_path / "same")
    cases = [
        (["--csv", f"{a}/out.csv"], f"--csv {a}/out.csv: {a} is a file, not a folder"),
        (
            ["--json", str(tmp_path / "existing_dir")],
            f"--json {tmp_path / 'existing_dir'}: is a folder: give a file name",
        ),
        (["--plot", str(a)], f"--plot {a}: has an audio suffix (.wav): refusing to write plots there"),
        (["--plot", str(tmp_path / "notes.txt")], f"--plot {tmp_path / 'notes.txt'}: is a file, not a folder"),
        (["--csv", same, "--json", same], f"--csv and --json are the same file ({same})"),
    ]
    for flags, message in cases:
        assert main_predict(["--model", str(fold), str(a), *flags]) == 2
        assert capsys.readouterr().err == f"error: {message}\n"
    assert calls == [] and (tmp_path / "notes.txt").read_text() == "mine"
    out = tmp_path / "new" / "deeper"
    args = ["--model", str(fold), str(a), "--csv", str(out / "p.csv"), "--json", str(out / "p.json")]
    assert main_predict([*args, "--device", "cpu"]) == 0
    assert (out / "p.csv").is_file() and json.loads((out / "p.json").read_text())["predictions"]


def test_missing_checkpoint_is_named_and_silence_warns_in_python(
    fold: Path,  # noqa: F811
    encoder: FakeEncoder,  # noqa: F811
    tmp_path: Path,
    capsys: pytest.CaptureFixture,
) -> None:
    model = export_fold(fold, tmp_path / "model")
    silent = wav(tmp_path / "silent.wav", seconds=2.0, amplitude=0.0)
    rec = EmotionRecognizer.from_dir(model)
    with pytest.warns(UnreliableLabelWarning, match=f"^{silent}: silent \\(peak amplitude 0.0e\\+00\\)"):
        rec.classify_file(silent)
    with pytest.warns(UnreliableLabelWarning, match="silent"):
        rec.predict_file(silent)
    (model / "model.ckpt").unlink()
    assert main_predict(["--model", str(model), str(silent)]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"error: {model}/model.ckpt: missing: this model folder has no weights")
    assert "training did not finish" not in err and "--allow_unfinished" not in err and err.count("\n") == 1
    with pytest.raises(FileNotFoundError, match=f"^{model}/model.ckpt: missing"):
        EmotionRecognizer.from_hparams(source=str(model), savedir=str(tmp_path / "sd"))
