"""Encoder side of the dump (issue 11): log-mel on the encoder's device, ``frame_pool`` averaging."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from float_bounds import assert_within, log_power_bound, max_abs, rounding_bound
from test_dump import FrameEncoder, make_corpus

from cta_rnn.dump import dump, maybe_finalize, parse_overrides
from cta_rnn.encoders import build_encoder, load_spec
from cta_rnn.encoders.pooling import FramePoolEncoder, pool_frames
from cta_rnn.store import EmbeddingStore, StoreMismatchError


def whisper_mel_bound(enc, wave: torch.Tensor, mel: torch.Tensor) -> torch.Tensor:
    """Bound on |mel_A - mel_B| between two float32 paths to Whisper's log-mel (``log_power_bound``).

    400-point STFT (hann), 201 power bins per mel sum, slaney filters, log10 then (x + 4) / 4; a bin clamped
    at max - 8 carries the error of the maximum, so every bin gets at least the maximum's bound.
    """
    window = torch.hann_window(400)
    power = torch.stft(wave, 400, 160, window=window, return_complex=True)[..., :-1].abs() ** 2
    frame_energy = 2 * power.sum(0, keepdim=True)[:, : mel.shape[1]]  # ||X||^2 over all 400 bins (real input)
    energy = 10 ** (4 * mel.double() - 4)
    weight_max = float(enc.extractor.mel_filters.max())
    bound = log_power_bound(mel, energy, frame_energy, 400, 201, weight_max, 1 / (4 * math.log(10)))
    return torch.maximum(bound, bound.flatten()[mel.argmax()])


@pytest.fixture(scope="module")
def whisper_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random-weight Whisper (2 small blocks) with its feature extractor, saved locally (no hub)."""
    from transformers import WhisperConfig, WhisperFeatureExtractor, WhisperModel

    folder = tmp_path_factory.mktemp("whisper")
    config = WhisperConfig(
        d_model=32, encoder_layers=2, encoder_attention_heads=2, encoder_ffn_dim=64, decoder_layers=1,
        decoder_attention_heads=2, decoder_ffn_dim=64, vocab_size=100, max_target_positions=8, pad_token_id=0,
        bos_token_id=1, eos_token_id=2, decoder_start_token_id=1,
    )  # fmt: skip
    torch.manual_seed(0)
    WhisperModel(config).save_pretrained(folder)
    WhisperFeatureExtractor().save_pretrained(folder)
    return folder


def clips() -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    t = torch.arange(16000 * 3) / 16000
    tone = 0.3 * torch.sin(2 * math.pi * 220 * t) * (1 + torch.sin(3 * t))
    return [tone[:24000] + 0.01 * torch.randn(24000, generator=g), 0.05 * torch.randn(16000 * 3 - 77, generator=g)]


@pytest.mark.parametrize("mode", ["padded", "trimmed"])
def test_log_mel_on_the_device_matches_the_extractor(whisper_dir: Path, mode: str) -> None:
    enc = build_encoder({"backend": "whisper", "source": str(whisper_dir), "input": mode})
    chunks = clips()
    mel, counts = enc._mel(chunks)
    assert counts == [len(c) // 160 for c in chunks]
    for i, c in enumerate(chunks):
        kw = {"padding": "longest"} if mode == "trimmed" else {}
        wave = c.numpy()[None] if mode == "trimmed" else np.pad(c.numpy(), (0, 480000 - len(c)))[None]
        numpy_path = enc.extractor._np_extract_fbank_features(wave, "cpu")[0]
        torch_path = enc.extractor(c.numpy(), sampling_rate=16000, return_tensors="np", **kw).input_features[0]
        n = counts[i] if mode == "trimmed" else 3000
        bound = whisper_mel_bound(enc, torch.from_numpy(wave[0]), mel[i, :, :n])
        assert_within(mel[i, :, :n], torch.from_numpy(numpy_path[:, :n]), bound, f"{mode} clip {i}: numpy path")
        assert_within(mel[i, :, :n], torch.from_numpy(torch_path[:, :n]), bound, f"{mode} clip {i}: torch path")
        assert mel[i, :, n:].abs().sum() == 0


def unpooled_mean(hidden: torch.Tensor, frames: torch.Tensor, n: int) -> list[torch.Tensor]:
    """Reference: for each utterance, the mean of each run of ``n`` valid frames (the last one partial)."""
    out = []
    for b, t in enumerate(frames.tolist()):
        valid = hidden[b, :, :t]
        out.append(torch.stack([valid[:, j : j + n].mean(1) for j in range(0, t, n)], 1))
    return out


def test_pooled_frames_are_means_of_valid_frames_and_padding_never_leaks() -> None:
    g = torch.Generator().manual_seed(0)
    hidden = torch.randn(3, 2, 9, 4, generator=g)
    frames = torch.tensor([9, 5, 1])
    for b, t in enumerate(frames.tolist()):
        hidden[b, :, t:] = 1e4  # padding must not reach any valid pooled frame
    for n in (1, 2, 3, 4):
        pooled, counts = pool_frames(hidden, frames, n)
        assert counts.tolist() == [math.ceil(t / n) for t in frames.tolist()]
        assert pooled.shape == (3, 2, math.ceil(9 / n), 4)
        for b, ref in enumerate(unpooled_mean(hidden, frames, n)):  # means of n terms, summed in another order
            bound = rounding_bound(max_abs(hidden[b, :, : frames[b]]), terms=n)  # the terms' size: they may cancel
            assert_within(pooled[b, :, : counts[b]], ref, bound, f"n={n}")
            assert pooled[b, :, counts[b] :].abs().sum() == 0


def test_build_encoder_pools_the_whisper_output(whisper_dir: Path) -> None:
    spec = {"backend": "whisper", "source": str(whisper_dir), "input": "trimmed"}
    plain = build_encoder(spec)
    pooled = build_encoder(spec, frame_pool=2)
    assert isinstance(pooled, FramePoolEncoder) and not isinstance(plain, FramePoolEncoder)
    assert pooled.frame_rate == 25.0 and pooled.describe()["frame_pool"] == 2 and pooled.describe()["frame_rate"] == 25
    assert "frame_pool" not in plain.describe()  # default 1: identity of existing stores unchanged
    chunks = clips()
    n = max(len(c) for c in chunks)
    wavs = torch.stack([torch.nn.functional.pad(c, (0, n - len(c))) for c in chunks])
    lengths = torch.tensor([len(c) / n for c in chunks])
    h1, f1 = plain.encode(wavs, lengths)
    h2, f2 = pooled.encode(wavs, lengths)
    assert f2.tolist() == [pooled.num_frames(len(c)) for c in chunks] == [math.ceil(f / 2) for f in f1.tolist()]
    for b, ref in enumerate(unpooled_mean(h1, f1, 2)):  # the same encoder bits, means of 2 in another order
        bound = rounding_bound(max_abs(h1[b, :, : f1[b]]), terms=2)
        assert_within(h2[b, :, : f2[b]], ref, bound, "pooled whisper")
    assert pooled.layers == plain.layers and pooled.dim == plain.dim and pooled.extractor is pooled.inner.extractor
    assert load_spec(spec, parse_overrides(["frame_pool=2"]))["frame_pool"] == 2
    for bad in (0, -1, "2", 1.5):
        with pytest.raises(ValueError, match="frame_pool must be a positive integer"):
            build_encoder(spec, frame_pool=bad)


class Pooled(FramePoolEncoder):
    def __init__(self) -> None:
        super().__init__(FrameEncoder(), 2)


def test_frame_pool_is_part_of_the_store_identity(tmp_path: Path) -> None:
    corpus: pd.DataFrame = make_corpus(tmp_path)
    out = tmp_path / "s"
    dump(corpus.head(3), Pooled(), out, num_workers=0)
    with pytest.raises(StoreMismatchError, match="frame_pool"):
        dump(corpus.head(3), FrameEncoder(), out, num_workers=0)
    assert maybe_finalize(corpus.head(3), out, 1)
    store = EmbeddingStore(out)
    assert store.frame_rate == 50.0 and store.meta["encoder"]["frame_pool"] == 2
    for r in corpus.head(3).itertuples():
        assert store.frames(r.ID) == math.ceil((round(r.duration * 16000) // 160) / 2)
