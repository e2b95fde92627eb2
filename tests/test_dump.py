"""Stage 1 with a small deterministic stand-in encoder: audio handling, bad files, resume, refusal."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
import torch
from float_bounds import assert_within, float16_step, max_abs, rounding_bound

import cta_rnn.dump as dump_mod
from cta_rnn.audio import AudioError, load_audio
from cta_rnn.dump import dump, maybe_finalize
from cta_rnn.store import EmbeddingStore, StoreMismatchError


class FrameEncoder(torch.nn.Module):
    """3 'layers' of 4 features from 10-ms frames (RMS, mean, max, min times the layer index + 1)."""

    num_layers, total_layers, layers, dim, frame_rate, sample_rate = 3, 3, [0, 1, 2], 4, 100.0, 16000

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[int] = []

    def encode(self, wavs: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        self.calls.append(wavs.shape[0])
        frames = wavs.shape[1] // 160
        x = wavs[:, : frames * 160].reshape(wavs.shape[0], frames, 160)
        feats = torch.stack([x.pow(2).mean(-1).sqrt(), x.mean(-1), x.amax(-1), x.amin(-1)], -1)
        hidden = torch.stack([feats * (k + 1) for k in range(3)], 1)
        counts = torch.round(lengths * wavs.shape[1]).long() // 160
        return hidden, counts

    def describe(self) -> dict:
        return {"backend": "test", "source": "frames", "dim": 4}


def write(path: Path, data: np.ndarray, sr: int, subtype: str = "PCM_16") -> Path:
    sf.write(path, data, sr, subtype=subtype)
    return path


@pytest.fixture()
def corpus(tmp_path: Path) -> pd.DataFrame:
    return make_corpus(tmp_path)


def make_corpus(tmp_path: Path) -> pd.DataFrame:
    """Six short clips of several rates, channel counts and sample formats."""
    rng = np.random.default_rng(0)
    rows = []
    for i, (sr, ch, sub) in enumerate(
        [
            (16000, 1, "PCM_16"),
            (44100, 2, "PCM_24"),
            (8000, 1, "PCM_16"),
            (48000, 1, "FLOAT"),
            (16000, 1, "PCM_16"),
            (22050, 2, "PCM_16"),
        ]
    ):
        n = int(sr * (0.5 + 0.25 * i))
        data = (0.1 * rng.standard_normal((n, ch))).astype(np.float32)
        p = write(tmp_path / f"u{i} with space.wav", data if ch > 1 else data[:, 0], sr, sub)
        rows.append({"ID": f"u{i}", "wav": str(p), "duration": n / sr})
    return pd.DataFrame(rows)


def test_load_audio_resamples_and_downmixes(corpus: pd.DataFrame) -> None:
    for r in corpus.itertuples():
        wav = load_audio(r.wav)
        assert wav.dim() == 1 and abs(wav.numel() - r.duration * 16000) <= 2


def test_dump_stores_every_utterance_with_its_frames(corpus: pd.DataFrame, tmp_path: Path) -> None:
    enc = FrameEncoder()
    summary = dump(corpus, enc, tmp_path / "store", batch_seconds=2.0, num_workers=0)
    assert summary["encoded"] == 6 and len(enc.calls) > 1  # several duration-bounded batches
    assert maybe_finalize(corpus, tmp_path / "store", 1)
    store = EmbeddingStore(tmp_path / "store")
    for r in corpus.itertuples():
        x = store.get(r.ID)
        assert x.shape == (3, round(r.duration * 16000) // 160, 4)
        wav = load_audio(r.wav)
        alone, _ = enc.encode(wav[None], torch.ones(1))
        # batching/padding changed nothing: the frame sums (160 samples, then a sqrt) may round otherwise in
        # float32, and the store's float16 may then hold the adjacent value
        ref = alone[0].half().float()
        bound = rounding_bound(3 * max_abs(wav), terms=160, depth=2) + float16_step(ref)
        assert_within(x, ref, bound, r.ID)


def test_bad_audio_fails_naming_the_file_or_is_skipped_and_listed(corpus: pd.DataFrame, tmp_path: Path) -> None:
    bad = {
        "empty": write(tmp_path / "empty.wav", np.zeros(0, np.float32), 16000),
        "nan": write(tmp_path / "nan.wav", np.full(8000, np.nan, np.float32), 16000, "FLOAT"),
        "garbage": tmp_path / "garbage.wav",
        "missing": tmp_path / "missing.wav",
    }
    bad["garbage"].write_bytes(b"RIFF not really a wav")
    rows = [{"ID": k, "wav": str(v), "duration": 0.5} for k, v in bad.items()]
    manifest = pd.concat([corpus, pd.DataFrame(rows)], ignore_index=True)
    with pytest.raises(AudioError, match="empty|non-finite|unreadable|not found"):
        dump(manifest, FrameEncoder(), tmp_path / "s1", num_workers=0)
    summary = dump(manifest, FrameEncoder(), tmp_path / "s2", num_workers=0, on_error="skip")
    assert summary["encoded"] == 6 and summary["skipped"] == 4
    listed = pd.read_csv(tmp_path / "s2" / "skipped_r0.csv", keep_default_na=False).set_index("ID")["reason"]
    assert "empty audio" in listed["empty"] and "non-finite" in listed["nan"]
    assert "unreadable" in listed["garbage"] and "file not found" in listed["missing"]
    assert maybe_finalize(manifest, tmp_path / "s2", 1)


def test_crash_then_rerun_encodes_only_the_rest(corpus: pd.DataFrame, tmp_path: Path, monkeypatch) -> None:
    ref = tmp_path / "ref"
    dump(corpus, FrameEncoder(), ref, batch_seconds=1.5, num_workers=0)
    maybe_finalize(corpus, ref, 1)

    real = dump_mod.iterate_batches

    def crash_after_two(loader):
        for i, batch in enumerate(real(loader)):
            if i == 2:
                raise KeyboardInterrupt("killed")
            yield batch

    monkeypatch.setattr(dump_mod, "iterate_batches", crash_after_two)
    out = tmp_path / "crashed"
    with pytest.raises(KeyboardInterrupt):
        dump(corpus, FrameEncoder(), out, batch_seconds=1.5, num_workers=0)
    monkeypatch.setattr(dump_mod, "iterate_batches", real)
    enc = FrameEncoder()
    summary = dump(corpus, enc, out, batch_seconds=1.5, num_workers=0)
    assert summary["already_done"] > 0 and summary["encoded"] == 6 - summary["already_done"]
    maybe_finalize(corpus, out, 1)
    a, b = EmbeddingStore(ref), EmbeddingStore(out)
    assert b.verify() == [] and all(torch.equal(a[i], b[i]) for i in corpus["ID"])


def test_refuses_to_mix_another_manifest(corpus: pd.DataFrame, tmp_path: Path) -> None:
    dump(corpus, FrameEncoder(), tmp_path / "s", num_workers=0)
    with pytest.raises(StoreMismatchError, match="manifest_checksum"):
        dump(corpus.head(3), FrameEncoder(), tmp_path / "s", num_workers=0)


def test_two_shards_fill_one_store_and_merge(corpus: pd.DataFrame, tmp_path: Path) -> None:
    out = tmp_path / "sharded"
    a = dump(corpus, FrameEncoder(), out, num_workers=0, shard=0, num_shards=2)
    assert not maybe_finalize(corpus, out, 2)  # rank 1 has not finished: no index yet
    b = dump(corpus, FrameEncoder(), out, num_workers=0, shard=1, num_shards=2)
    assert a["encoded"] + b["encoded"] == len(corpus) and a["encoded"] and b["encoded"]
    assert maybe_finalize(corpus, out, 2)
    ref = tmp_path / "single"
    dump(corpus, FrameEncoder(), ref, num_workers=0)
    maybe_finalize(corpus, ref, 1)
    x, y = EmbeddingStore(out), EmbeddingStore(ref)
    assert all(torch.equal(x[i], y[i]) for i in corpus["ID"])


def test_cli_dispatch(capsys: pytest.CaptureFixture) -> None:
    from cta_rnn.cli import main

    assert main(["--help"]) == 0 and "cta-rnn dump" in capsys.readouterr().out
    assert main(["nope"]) == 2
