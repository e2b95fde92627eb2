"""WeNet encoder backend: the fixture's reference outputs, folder formats, error messages, generated models.

The reference (``../shared/fixtures/wenet_u2pp_tiny``) was computed by WeNet's own code. The generated
checkpoints below are written key by key from WeNet's state-dict naming (not from cta_rnn's modules),
so loading them also checks the naming.

Float comparisons use the bounds of ``float_bounds`` (rounding of float32 sums, scaled by each layer's
magnitude and depth) or, for fbank, ``fbank_rounding_bound`` (FFT rounding seen through the log): both
hold across CPUs, and ``test_broken_padding_exceeds_the_bound`` shows a padding bug lands far above them.
"""

from __future__ import annotations

import logging
import math
import shutil
from pathlib import Path

import pytest
import torch
import yaml
from float_bounds import (
    EPS_BF16,
    assert_within,
    chained_sums,
    log_power_bound,
    max_abs,
    network_bound,
    ratio,
    report,
    rounding_bound,
)
from torchaudio.compliance import kaldi

from cta_rnn.encoders import build_encoder, load_spec
from cta_rnn.encoders.wenet import WenetLayerwiseEncoder, wenet_fbank
from cta_rnn.encoders.wenet_checkpoint import WenetCheckpointError, load_cmvn, sinusoid_table
from cta_rnn.encoders.wenet_model import SUBSAMPLINGS, ConvModule, WenetEncoder

ROOT = Path(__file__).resolve().parents[1]
FIXTURE = ROOT.parent / "shared" / "fixtures" / "wenet_u2pp_tiny"
YAML = ROOT / "recipes" / "shared" / "hparams" / "encoder" / "wenet_gigaspeech_u2pp.yaml"

pytestmark = pytest.mark.skipif(not (FIXTURE / "final.pt").is_file(), reason="WeNet fixture not found")


@pytest.fixture(autouse=True, scope="module")
def _one_thread(one_thread_torch):
    """One intra-op thread (the reference was computed with one)."""
    yield


@pytest.fixture(scope="module")
def reference() -> dict:
    return torch.load(FIXTURE / "reference.pt", weights_only=True)


@pytest.fixture(scope="module")
def fixture_encoder() -> WenetLayerwiseEncoder:
    return WenetLayerwiseEncoder(FIXTURE)


def padded(wavs: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    n = max(len(w) for w in wavs)
    batch = torch.zeros(len(wavs), n)
    for i, w in enumerate(wavs):
        batch[i, : len(w)] = w
    return batch, torch.tensor([len(w) / n for w in wavs])


N_FFT = 512  # kaldi.fbank's FFT length for 25 ms at 16 kHz (400 samples, rounded up to a power of 2)


def layer_bounds(enc: WenetLayerwiseEncoder, layers: torch.Tensor, frames: int, from_wav: bool) -> list[float]:
    """float32 rounding bound of each selected layer (``layers``: (L, T, D) values the bounds scale with).

    Path to layer k: the input layer and the first k blocks (``float_bounds.network_bound``; ``frames``
    attention keys), plus the fbank's FFT and mel sums (N_FFT terms) when the compared runs start from
    audio on different machines.
    """
    model = enc.model
    return [
        network_bound(
            model.embed, *model.encoders[:k], magnitude=max_abs(layers[j]), outside=max(frames, from_wav * N_FFT),
            extra_depth=2 * from_wav,
        )
        for j, k in enumerate(enc.layers)
    ]  # fmt: skip


def batch_vs_single_ratio(enc: WenetLayerwiseEncoder, wavs: list[torch.Tensor]) -> float:
    """Worst |batch row - single run| / bound over the valid frames; checks frames, shapes and zero padding.

    Each clip's fbank is computed alone (identical bits), so the runs differ by the encoder's rounding
    only: the padded batch's longer convolutions/GEMMs may take other kernels or blockings.
    """
    hidden, frames = enc.encode(*padded(wavs))
    assert frames.tolist() == [enc.num_frames(len(w)) for w in wavs]
    assert hidden.shape == (len(wavs), enc.num_layers, max(frames), enc.dim)
    assert torch.isfinite(hidden).all()
    worst = 0.0
    for i, w in enumerate(wavs):
        single, f = enc.encode(w[None], torch.ones(1))
        assert f.item() == frames[i] and single.shape[2] == f.item()
        bounds = layer_bounds(enc, single[0], int(max(frames)), from_wav=False)
        for j, bound in enumerate(bounds):
            worst = max(worst, ratio(hidden[i, j, : f.item()], single[0, j], bound))
        assert not hidden[i, :, f.item() :].any()
    return worst


def assert_batch_equals_singles(enc: WenetLayerwiseEncoder, wavs: list[torch.Tensor]) -> float:
    """A padded batch gives each clip's single-run frames (within float32 rounding); padded frames are zero."""
    worst = batch_vs_single_ratio(enc, wavs)
    report(f"{enc.describe()['input_layer']} batch vs single: {worst:.3g} x bound")
    assert worst <= 1, f"a padded batch row differs from its single run by {worst:.3g} x the rounding bound"
    return worst


def fbank_rounding_bound(wav: torch.Tensor, fbank: torch.Tensor) -> torch.Tensor:
    """Bound on |fbank_A - fbank_B| per (frame, mel bin) between two float32 FFT paths (``log_power_bound``):
    kaldi's 512-point FFT, 257 power bins per mel sum, triangular weights <= 1, natural log."""
    spec = kaldi.spectrogram(wav[None] * 32768, frame_length=25, frame_shift=10, dither=0.0, energy_floor=0.0)
    frame_energy = 2 * spec.double().exp().sum(1, keepdim=True)  # ||X||^2 over all N_FFT bins (real input)
    return log_power_bound(fbank, fbank.double().exp(), frame_energy, N_FFT, N_FFT // 2 + 1)


def signals(rate: int = 16000, seconds: tuple[float, ...] = (0.62, 1.37, 0.95)) -> list[torch.Tensor]:
    """Deterministic speech-like test signals (harmonics + noise), quantised to 16 bits."""
    g = torch.Generator().manual_seed(7)
    out = []
    for i, s in enumerate(seconds):
        t = torch.arange(int(s * rate)) / rate
        f0 = 110 + 40 * i + 20 * torch.sin(2 * torch.pi * 3 * t)
        phase = 2 * torch.pi * torch.cumsum(f0, 0) / rate
        wav = sum(torch.sin(k * phase) / k for k in range(1, 8)) * 0.2 + 0.01 * torch.randn(len(t), generator=g)
        out.append(torch.round(wav.clamp(-1, 1) * 32767) / 32768)
    return out


# ---------------------------------------------------------------------------------------------- reference


@pytest.mark.parametrize("index", [0, 1])
def test_layers_match_reference(fixture_encoder: WenetLayerwiseEncoder, reference: dict, index: int) -> None:
    sig = reference["signals"][index]
    hidden, frames = fixture_encoder.encode(sig["wav"][None], torch.ones(1))
    assert frames.tolist() == [sig["out_length"]] == [fixture_encoder.num_frames(sig["num_samples"])]
    assert hidden.shape == (1, 4, sig["out_length"], 64)
    # from audio, on another machine: fbank + input layer + k blocks of float32 rounding (layer_bounds)
    expected = torch.stack(sig["layers"])
    for k, bound in enumerate(layer_bounds(fixture_encoder, expected, sig["out_length"], from_wav=True)):
        assert_within(hidden[0, k], expected[k], bound, f"signal {index} layer {k}")


def test_network_matches_reference_from_reference_fbank(fixture_encoder: WenetLayerwiseEncoder, reference) -> None:
    model = fixture_encoder.model
    for sig in reference["signals"]:
        fbank = sig["fbank"][None]
        with torch.no_grad():
            states, lengths = model(fbank, torch.tensor([fbank.shape[1]]), [0, 1, 2, 3])
            final = model.after_norm(states[-1])
        assert lengths.tolist() == [sig["out_length"]] == [int(sig["mask"].sum())]
        # the same fbank bits on both machines: input layer + k blocks of float32 rounding
        expected = torch.stack(sig["layers"])
        bounds = layer_bounds(fixture_encoder, expected, sig["out_length"], from_wav=False)
        for k, bound in enumerate(bounds):
            assert_within(states[k][0], expected[k], bound, f"layer {k}")
        final_bound = network_bound(model.embed, model.encoders, model.after_norm, magnitude=max_abs(sig["final"]))
        assert_within(final[0], sig["final"], final_bound, "final")


def test_fbank_and_cmvn_match_reference(fixture_encoder: WenetLayerwiseEncoder, reference: dict) -> None:
    meta = reference["meta"]
    assert fixture_encoder.sample_rate == meta["sample_rate"] == 16000
    for sig in reference["signals"]:
        ours = wenet_fbank(sig["wav"], fixture_encoder.fbank)
        direct = kaldi.fbank(sig["wav"][None] * 32768, **meta["fbank_options"])
        assert torch.equal(ours, direct)  # exactly WeNet's call (the reference's options, dither 0)
        assert ours.shape == sig["fbank"].shape == (sig["num_frames"], 80)
        assert sig["num_frames"] == fixture_encoder.fbank.num_frames(sig["num_samples"])
        # float32 FFT rounding depends on the CPU's MKL code path: agreement within that rounding, per bin
        bound = fbank_rounding_bound(sig["wav"], sig["fbank"])
        assert_within(ours, sig["fbank"], bound, "fbank")
        # ... which still sees a real front-end change (a Hamming window instead of Povey's) in nearly every bin
        hamming = kaldi.fbank(sig["wav"][None] * 32768, **(meta["fbank_options"] | {"window_type": "hamming"}))
        assert ((hamming - sig["fbank"]).abs() > bound).float().mean() > 0.95
    mean, istd = load_cmvn(FIXTURE / "global_cmvn")
    assert torch.equal(mean, meta["cmvn_mean"]) and torch.equal(istd, meta["cmvn_istd"])
    cmvn = fixture_encoder.model.global_cmvn
    assert torch.equal(cmvn.mean, meta["cmvn_mean"]) and torch.equal(cmvn.istd, meta["cmvn_istd"])
    fbank = reference["signals"][0]["fbank"]
    expected = (fbank - meta["cmvn_mean"]) * meta["cmvn_istd"]
    assert torch.equal(cmvn(fbank), expected)


def test_padded_batch_matches_single_runs(fixture_encoder: WenetLayerwiseEncoder, reference: dict) -> None:
    batch_ref = reference["batch"]
    wavs = [reference["signals"][i]["wav"] for i in batch_ref["order"]]
    batch, lengths = padded(wavs)
    feats, feat_lengths = fixture_encoder.features(batch, [len(w) for w in wavs])
    assert feat_lengths.tolist() == batch_ref["feats_lengths"].tolist()
    assert feats[1, feat_lengths[1] :].abs().max() == batch_ref["feats_pad_value"]
    hidden, frames = fixture_encoder.encode(batch, lengths)
    assert frames.tolist() == batch_ref["out_lengths"].tolist() == batch_ref["masks"][:, 0].sum(-1).tolist()
    for j, i in enumerate(batch_ref["order"]):
        sig = reference["signals"][i]
        n = sig["out_length"]
        expected = torch.stack(sig["layers"])
        for k, bound in enumerate(layer_bounds(fixture_encoder, expected, int(max(frames)), from_wav=True)):
            assert_within(hidden[j, k, :n], expected[k], bound, f"batch row {j} layer {k}")
    assert_batch_equals_singles(fixture_encoder, wavs)


def _attention_sees_padding(monkeypatch: pytest.MonkeyPatch) -> None:
    """Bug: every key visible, padded frames included (a key mask that ignores the lengths)."""
    monkeypatch.setattr(WenetEncoder, "attention_mask", lambda self, valid: torch.ones_like(valid)[:, None, :])


def _conv_sees_padding(monkeypatch: pytest.MonkeyPatch) -> None:
    """Bug: the conv module leaves padded frames unzeroed, so a symmetric depthwise conv reads them."""
    forward = ConvModule.forward
    monkeypatch.setattr(ConvModule, "forward", lambda self, x, valid: forward(self, x, torch.ones_like(valid)))


@pytest.mark.parametrize(
    ("bug", "model"),
    [(_attention_sees_padding, "fixture"), (_conv_sees_padding, "conv2d-batchnorm-noncausal")],
    ids=["attention-mask", "conv-padding"],
)
def test_broken_padding_exceeds_the_bound(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, bug, model: str) -> None:
    """The batch-vs-single bound is tight enough: a padding leak lands far above it and fails the comparison."""
    if model == "fixture":
        enc, wavs = WenetLayerwiseEncoder(FIXTURE), signals(seconds=(1.3, 2.71))
    else:
        enc, wavs = WenetLayerwiseEncoder(write_model(tmp_path / model, **GENERATED[model])), signals()
    assert assert_batch_equals_singles(enc, wavs) <= 1  # intact: within the float32 bound
    bug(monkeypatch)
    worst = batch_vs_single_ratio(enc, wavs)
    report(f"{model} with {bug.__name__}: {worst:.3g} x bound")
    assert worst > 100, f"a padding leak gave only {worst:.3g} x the rounding bound"
    with pytest.raises(AssertionError, match="differs from its single run"):
        assert_batch_equals_singles(enc, wavs)


def test_frame_counts_follow_the_subsampling_formulas(fixture_encoder: WenetLayerwiseEncoder) -> None:
    formulas = {
        "linear": lambda t: t,
        "conv2d2": lambda t: (t - 1) // 2,
        "conv2d": lambda t: ((t - 1) // 2 - 1) // 2,
        "conv2d6": lambda t: ((t - 1) // 2 - 2) // 3,
        "conv2d8": lambda t: (((t - 1) // 2 - 1) // 2 - 1) // 2,
    }
    rates = {"linear": 1, "conv2d2": 2, "conv2d": 4, "conv2d6": 6, "conv2d8": 8}
    for name, formula in formulas.items():
        spec = SUBSAMPLINGS[name]
        assert spec.rate == rates[name]
        for t in range(0, 500):
            assert spec.out_length(t) == max(formula(t), 0), (name, t)
        assert spec.out_length(spec.min_frames()) == 1 and spec.out_length(spec.min_frames() - 1) == 0
    assert [SUBSAMPLINGS[k].right_context for k in ("conv2d", "conv2d6", "conv2d8")] == [6, 10, 14]
    enc = fixture_encoder
    assert enc.frame_rate == pytest.approx(16000 / 960) and enc.frame_rate == pytest.approx(16.6667, abs=1e-4)
    assert [enc.num_frames(n) for n in (20800, 43360, 2000, 1999, 0)] == [20, 44, 1, 0, 0]
    assert enc.min_samples == 2000  # 11 fbank frames: 400 + 10 * 160
    with pytest.raises(ValueError, match="minimum 2000"):
        enc.encode(torch.zeros(1, 1999), torch.ones(1))


# ---------------------------------------------------------------------------------------------- errors


def copy_fixture(tmp_path: Path, skip: tuple[str, ...] = ()) -> Path:
    folder = tmp_path / "model"
    folder.mkdir()
    for name in ("final.pt", "train.yaml", "global_cmvn", "units.txt"):
        if name not in skip:
            shutil.copy(FIXTURE / name, folder / name)
    return folder


def edit_yaml(path: Path, **encoder_conf) -> None:
    config = yaml.safe_load(path.read_text())
    config["encoder_conf"].update(encoder_conf)
    path.write_text(yaml.safe_dump(config))


def save_torchscript(path: Path) -> None:
    torch.jit.save(torch.jit.script(torch.nn.Linear(2, 2)), str(path))


@pytest.mark.filterwarnings("ignore:`torch.jit.(script|save)` is deprecated:FutureWarning")
def test_runtime_export_is_refused(tmp_path: Path) -> None:
    folder = tmp_path / "20210728_u2pp_conformer_libtorch"
    folder.mkdir()
    save_torchscript(folder / "final.zip")
    (folder / "units.txt").write_text("<blank> 0\n")
    for source in (folder, folder / "final.zip"):
        with pytest.raises(WenetCheckpointError, match="final.zip is a WeNet runtime export") as err:
            WenetLayerwiseEncoder(source)
        assert "gigaspeech_u2pp_conformer_exp.tar.gz" in str(err.value) and "final.pt" in str(err.value)
    renamed = copy_fixture(tmp_path)
    save_torchscript(renamed / "final.pt")
    with pytest.raises(WenetCheckpointError, match="final.pt is a WeNet runtime export.*TorchScript"):
        WenetLayerwiseEncoder(renamed)


def test_missing_cmvn_file_names_the_file(tmp_path: Path) -> None:
    folder = copy_fixture(tmp_path, skip=("global_cmvn",))
    with pytest.raises(FileNotFoundError) as err:
        WenetLayerwiseEncoder(folder)
    message = str(err.value)
    assert str(folder / "global_cmvn") in message and "CMVN file not found" in message
    assert "cmvn_conf.cmvn_file" in message and isinstance(err.value, ValueError)


def test_missing_files(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="train.yaml: not found"):
        WenetLayerwiseEncoder(copy_fixture(tmp_path, skip=("train.yaml",)))
    with pytest.raises(FileNotFoundError, match="WeNet checkpoint folder not found"):
        WenetLayerwiseEncoder(tmp_path / "nowhere")
    empty = tmp_path / "empty"
    empty.mkdir()
    torch.save({}, empty / "avg_10.pt")
    with pytest.raises(FileNotFoundError, match=r"final.pt: not found \(it has avg_10.pt"):
        WenetLayerwiseEncoder(empty)


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        ({"input_layer": "conv2d"}, "input_layer is conv2d in the config, conv2d6 in the weights"),
        ({"num_blocks": 4}, "num_blocks is 4 in the config, 3 in the weights"),
        ({"output_size": 128}, r"encoder.embed.conv.0.weight has shape \[64, 1, 3, 3\], the config implies \[128"),
        ({"cnn_module_kernel": 15}, r"depthwise_conv.weight has shape \[64, 1, 8\], the config implies \[64, 1, 15\]"),
        ({"cnn_module_norm": "batch_norm"}, "missing encoder.encoders.0.conv_module.norm.running_mean"),
        ({"macaron_style": False}, "unexpected encoder.encoders.0.feed_forward_macaron.w_1.weight"),
        ({"attention_heads": 8}, r"pos_bias_u has shape \[4, 16\], the config implies \[8, 8\]"),
    ],
)
def test_config_weights_disagreement(tmp_path: Path, change: dict, problem: str) -> None:
    folder = copy_fixture(tmp_path)
    edit_yaml(folder / "train.yaml", **change)
    with pytest.raises(WenetCheckpointError, match=problem) as err:
        WenetLayerwiseEncoder(folder)
    assert f"{folder / 'final.pt'} does not match {folder / 'train.yaml'}" in str(err.value)


def test_cmvn_dim_and_config_errors(tmp_path: Path) -> None:
    folder = copy_fixture(tmp_path)
    config = yaml.safe_load((folder / "train.yaml").read_text())
    config["dataset_conf"]["fbank_conf"]["num_mel_bins"] = 40
    (folder / "train.yaml").write_text(yaml.safe_dump(config))
    with pytest.raises(WenetCheckpointError, match="input_dim 80 but fbank has 40 mel bins"):
        WenetLayerwiseEncoder(folder)
    edit_yaml(folder / "train.yaml", input_layer="conv2d6", causal=False, cnn_module_kernel=8)
    config = yaml.safe_load((folder / "train.yaml").read_text())
    config["dataset_conf"]["fbank_conf"]["num_mel_bins"] = 80
    (folder / "train.yaml").write_text(yaml.safe_dump(config))
    with pytest.raises(WenetCheckpointError, match="cnn_module_kernel 8 is even"):
        WenetLayerwiseEncoder(folder)
    edit_yaml(folder / "train.yaml", causal=True, mlp_type="moe")
    with pytest.raises(WenetCheckpointError, match="mlp_type 'moe' is not supported"):
        WenetLayerwiseEncoder(folder)
    (folder / "global_cmvn").write_bytes(b"\0BDM ")
    edit_yaml(folder / "train.yaml", mlp_type="position_wise_feed_forward")
    with pytest.raises(WenetCheckpointError, match="Kaldi binary CMVN stats are not supported"):
        WenetLayerwiseEncoder(folder)


def test_revision_pins_the_checkpoint(fixture_encoder: WenetLayerwiseEncoder) -> None:
    revision = fixture_encoder.describe()["revision"]
    assert len(revision) == 16
    assert WenetLayerwiseEncoder(FIXTURE, revision=revision[:8], layers=[3]).layers == [3]
    with pytest.raises(WenetCheckpointError, match="is not revision 0000"):
        WenetLayerwiseEncoder(FIXTURE, revision="0000")


# ---------------------------------------------------------------------------------------------- other layouts


def write_kaldi_cmvn(path: Path, sums: list[float], squares: list[float], count: float) -> None:
    row0 = " ".join(repr(float(x)) for x in [*sums, count])
    row1 = " ".join(repr(float(x)) for x in [*squares, 0.0])
    path.write_text(f" [\n  {row0}\n  {row1} ]\n")


def old_layout(config: dict, cmvn_file: str, is_json: bool) -> dict:
    """The 2021 train.yaml layout: top-level cmvn_file/is_json_cmvn, collate_conf.feature_extraction_conf."""
    fbank = config["dataset_conf"]["fbank_conf"]
    out = {k: v for k, v in config.items() if k not in ("cmvn", "cmvn_conf", "dataset_conf")}
    out.update(
        cmvn_file=cmvn_file,
        is_json_cmvn=is_json,
        raw_wav=True,
        collate_conf={
            "normalization": False,
            "spec_aug": True,
            "feature_extraction_conf": {
                "feature_type": "fbank",
                "mel_bins": fbank["num_mel_bins"],
                "frame_shift": fbank["frame_shift"],
                "frame_length": fbank["frame_length"],
                "using_pitch": False,
            },
            "feature_dither": 1.0,
        },
        dataset_conf={"max_length": 1650, "batch_type": "static", "batch_size": 16, "sort": True},
    )
    return out


@pytest.mark.parametrize("layout", ["collate_conf", "fbank_conf+top-level cmvn_file"])
def test_2021_layout_kaldi_cmvn_no_buffers_with_pe(tmp_path: Path, fixture_encoder, reference, layout: str) -> None:
    """2021 layouts, a training-machine CMVN path, Kaldi-text CMVN, no CMVN buffers, a stored sinusoid table."""
    import json

    folder = copy_fixture(tmp_path, skip=("global_cmvn",))
    stats = json.loads((FIXTURE / "global_cmvn").read_text())
    write_kaldi_cmvn(folder / "global_cmvn", stats["mean_stat"], stats["var_stat"], stats["frame_num"])
    config = yaml.safe_load((FIXTURE / "train.yaml").read_text())
    new = old_layout(config, "/export/expts/wenet/examples/gigaspeech/s0/data/gigaspeech_train_xl/global_cmvn", False)
    if layout != "collate_conf":  # late 2021: dataset_conf.fbank_conf, but cmvn_file still at the top level
        new = {k: v for k, v in new.items() if k != "collate_conf"} | {"dataset_conf": config["dataset_conf"]}
    assert "cmvn_conf" not in new and "cmvn" not in new
    (folder / "train.yaml").write_text(yaml.safe_dump(new))
    state = torch.load(FIXTURE / "final.pt", weights_only=True)
    state = {k: v for k, v in state.items() if not k.startswith("encoder.global_cmvn.")}
    state["encoder.embed.pos_enc.pe"] = sinusoid_table(5000, 64)[None]
    torch.save(state, folder / "final.pt")
    enc = WenetLayerwiseEncoder(folder)
    assert enc.model.global_cmvn is not None
    assert torch.equal(enc.model.global_cmvn.mean, reference["meta"]["cmvn_mean"])
    assert torch.equal(enc.model.global_cmvn.istd, reference["meta"]["cmvn_istd"])
    assert enc.fbank == fixture_encoder.fbank
    wav = reference["signals"][1]["wav"][None]
    assert torch.equal(enc.encode(wav, torch.ones(1))[0], fixture_encoder.encode(wav, torch.ones(1))[0])


def test_checkpoint_cmvn_overrides_the_file(tmp_path: Path, fixture_encoder, reference, caplog) -> None:
    import json

    folder = copy_fixture(tmp_path)
    stats = json.loads((FIXTURE / "global_cmvn").read_text())
    stats["mean_stat"] = [2 * x for x in stats["mean_stat"]]
    (folder / "global_cmvn").write_text(json.dumps(stats))
    with caplog.at_level(logging.WARNING):
        enc = WenetLayerwiseEncoder(folder)
    assert "using the checkpoint's, as WeNet does" in caplog.text
    assert torch.equal(enc.model.global_cmvn.mean, reference["meta"]["cmvn_mean"])
    state = torch.load(FIXTURE / "final.pt", weights_only=True)
    config = yaml.safe_load((folder / "train.yaml").read_text())
    config["cmvn"] = None
    (folder / "train.yaml").write_text(yaml.safe_dump(config))
    with pytest.raises(WenetCheckpointError, match="holds encoder.global_cmvn.* but train.yaml names no CMVN file"):
        WenetLayerwiseEncoder(folder)
    torch.save({k: v for k, v in state.items() if "global_cmvn" not in k}, folder / "final.pt")
    assert WenetLayerwiseEncoder(folder).model.global_cmvn is None  # as WeNet: no CMVN at all


# ---------------------------------------------------------------------------------------------- generated models


def wenet_state_dict(
    *,
    input_layer: str,
    d: int = 32,
    heads: int = 4,
    units: int = 48,
    blocks: int = 2,
    kernel: int = 15,
    conv_norm: str = "batch_norm",
    encoder: str = "conformer",
    idim: int = 80,
    seed: int = 0,
) -> dict[str, torch.Tensor]:
    """Random weights under WeNet's names (encoder + CTC/decoder keys a loader must ignore)."""
    g = torch.Generator().manual_seed(seed)
    sd: dict[str, torch.Tensor] = {}

    def lin(name: str, out: int, inp: int, bias: bool = True, *extra: int) -> None:
        fan_in = inp * math.prod(extra)
        sd[f"{name}.weight"] = torch.randn(out, inp, *extra, generator=g) / fan_in**0.5
        if bias:
            sd[f"{name}.bias"] = 0.2 * torch.randn(out, generator=g)

    def norm(name: str, dim: int, batch: bool = False) -> None:
        sd[f"{name}.weight"] = 1 + 0.1 * torch.randn(dim, generator=g)
        sd[f"{name}.bias"] = 0.1 * torch.randn(dim, generator=g)
        if batch:
            sd[f"{name}.running_mean"] = 0.1 * torch.randn(dim, generator=g)
            sd[f"{name}.running_var"] = 0.5 + torch.rand(dim, generator=g)
            sd[f"{name}.num_batches_tracked"] = torch.tensor(100)

    convs = {"conv2d2": [(3, 2)], "conv2d": [(3, 2)] * 2, "conv2d6": [(3, 2), (5, 3)], "conv2d8": [(3, 2)] * 3}
    freq = idim
    for i, (k, s) in enumerate(convs.get(input_layer, [])):
        lin(f"encoder.embed.conv.{2 * i}", d, 1 if i == 0 else d, True, k, k)
        freq = (freq - k) // s + 1
    if input_layer == "linear":
        lin("encoder.embed.out.0", d, idim)
        norm("encoder.embed.out.1", d)
    else:
        lin("encoder.embed.linear" if input_layer in ("conv2d6", "conv2d8") else "encoder.embed.out.0", d, d * freq)
    for b in range(blocks):
        p = f"encoder.encoders.{b}."
        for name in ("q", "k", "v", "out"):
            lin(f"{p}self_attn.linear_{name}", d, d)
        lin(f"{p}feed_forward.w_1", units, d)
        lin(f"{p}feed_forward.w_2", d, units)
        if encoder == "transformer":
            norm(f"{p}norm1", d)
            norm(f"{p}norm2", d)
            continue
        lin(f"{p}self_attn.linear_pos", d, d, False)
        sd[f"{p}self_attn.pos_bias_u"] = 0.1 * torch.randn(heads, d // heads, generator=g)
        sd[f"{p}self_attn.pos_bias_v"] = 0.1 * torch.randn(heads, d // heads, generator=g)
        lin(f"{p}feed_forward_macaron.w_1", units, d)
        lin(f"{p}feed_forward_macaron.w_2", d, units)
        lin(f"{p}conv_module.pointwise_conv1", 2 * d, d, True, 1)
        lin(f"{p}conv_module.depthwise_conv", d, 1, True, kernel)
        norm(f"{p}conv_module.norm", d, batch=conv_norm == "batch_norm")
        lin(f"{p}conv_module.pointwise_conv2", d, d, True, 1)
        for name in ("norm_ff", "norm_mha", "norm_ff_macaron", "norm_conv", "norm_final"):
            norm(p + name, d)
    norm("encoder.after_norm", d)
    lin("ctc.ctc_lo", 10, d)
    lin("decoder.left_decoder.output_layer", 10, d)
    sd["decoder.left_decoder.embed.1.pe"] = sinusoid_table(100, d)[None]
    return sd


def write_model(
    folder: Path,
    *,
    input_layer: str,
    layout: str = "current",
    cmvn: str = "json",
    buffers: bool = True,
    resample_rate: int | None = None,
    encoder_conf: dict | None = None,
    **weights,
) -> Path:
    """A WeNet checkpoint folder: final.pt, train.yaml (current or 2021 layout), global_cmvn (JSON or Kaldi text)."""
    import json

    folder.mkdir(parents=True)
    d = weights.get("d", 32)
    encoder = weights.get("encoder", "conformer")
    state = wenet_state_dict(input_layer=input_layer, **weights)
    g = torch.Generator().manual_seed(1)
    count = 1000.0
    mean = 8 + 4 * torch.rand(80, generator=g, dtype=torch.float64)
    var = 2 + 3 * torch.rand(80, generator=g, dtype=torch.float64)
    sums, squares = (mean * count).tolist(), ((var + mean**2) * count).tolist()
    if buffers:
        state["encoder.global_cmvn.mean"] = mean.float()
        state["encoder.global_cmvn.istd"] = (1 / var.sqrt()).float()
    torch.save(state, folder / "final.pt")
    if cmvn == "json":
        (folder / "global_cmvn").write_text(json.dumps({"mean_stat": sums, "var_stat": squares, "frame_num": count}))
    else:
        write_kaldi_cmvn(folder / "global_cmvn", sums, squares, count)
    conf = {
        "output_size": d,
        "attention_heads": weights.get("heads", 4),
        "linear_units": weights.get("units", 48),
        "num_blocks": weights.get("blocks", 2),
        "input_layer": input_layer,
        "dropout_rate": 0.1,
        **(encoder_conf or {}),
    }
    if encoder == "conformer":
        conf.update(cnn_module_kernel=weights.get("kernel", 15), cnn_module_norm=weights.get("conv_norm", "batch_norm"))
        conf.setdefault("pos_enc_layer_type", "rel_pos")
        conf.setdefault("selfattention_layer_type", "rel_selfattn")
    config = {
        "encoder": encoder,
        "encoder_conf": conf,
        "decoder": "transformer",
        "input_dim": 80,
        "output_dim": 10,
        "cmvn": "global_cmvn",
        "cmvn_conf": {"cmvn_file": "exp/train/global_cmvn", "is_json_cmvn": cmvn == "json"},
        "dataset_conf": {"fbank_conf": {"num_mel_bins": 80, "frame_shift": 10, "frame_length": 25, "dither": 1.0}},
    }
    if resample_rate:
        config["dataset_conf"]["resample_conf"] = {"resample_rate": resample_rate}
    if layout == "2021":
        config = old_layout(config, "data/train/global_cmvn", cmvn == "json")
    (folder / "train.yaml").write_text(yaml.safe_dump(config))
    return folder


GENERATED = {
    "conv2d-batchnorm-noncausal": dict(input_layer="conv2d", kernel=15, conv_norm="batch_norm"),
    "conv2d8-layernorm-causal-2021-kaldi": dict(
        input_layer="conv2d8", kernel=8, conv_norm="layer_norm", layout="2021", cmvn="kaldi",
        encoder_conf={"causal": True, "cnn_module_norm": "layer_norm", "use_dynamic_chunk": True},
    ),
    "conv2d6-batchnorm-causal-nobuffers": dict(
        input_layer="conv2d6", kernel=4, conv_norm="batch_norm", buffers=False, encoder_conf={"causal": True}
    ),
    "conv2d2-layernorm-postnorm": dict(
        input_layer="conv2d2", kernel=5, conv_norm="layer_norm", encoder_conf={"normalize_before": False}
    ),
    "linear-layernorm": dict(input_layer="linear", kernel=3, conv_norm="layer_norm", blocks=1),
    "transformer-abs_pos-conv2d": dict(input_layer="conv2d", encoder="transformer", blocks=3),
}  # fmt: skip


@pytest.mark.parametrize("name", sorted(GENERATED))
def test_generated_checkpoints(tmp_path: Path, name: str) -> None:
    options = dict(GENERATED[name])
    folder = write_model(tmp_path / name, **options)
    enc = WenetLayerwiseEncoder(folder)
    spec = SUBSAMPLINGS[options["input_layer"]]
    blocks = options.get("blocks", 2)
    assert (enc.total_layers, enc.num_layers, enc.dim) == (blocks + 1, blocks + 1, 32)
    assert enc.frame_rate == pytest.approx(100 / spec.rate)
    assert enc.describe()["input_layer"] == options["input_layer"]
    assert enc.config.causal == options.get("encoder_conf", {}).get("causal", False)
    wavs = signals()
    for w in wavs:
        fbank_frames = 1 + (len(w) - 400) // 160
        assert enc.num_frames(len(w)) == spec.out_length(fbank_frames) > 0
    assert_batch_equals_singles(enc, wavs)
    hidden, _ = enc.encode(*padded(wavs))
    assert hidden[:, 1:].std() > 0.1  # real activations, not zeros


def test_kaldi_text_and_json_cmvn_agree(tmp_path: Path) -> None:
    a = WenetLayerwiseEncoder(write_model(tmp_path / "json", input_layer="conv2d", buffers=False, cmvn="json"))
    b = WenetLayerwiseEncoder(write_model(tmp_path / "kaldi", input_layer="conv2d", buffers=False, cmvn="kaldi"))
    assert torch.equal(a.model.global_cmvn.mean, b.model.global_cmvn.mean)
    assert torch.equal(a.model.global_cmvn.istd, b.model.global_cmvn.istd)


def test_sample_rate_comes_from_the_config(tmp_path: Path) -> None:
    enc = WenetLayerwiseEncoder(write_model(tmp_path / "m8k", input_layer="conv2d", resample_rate=8000))
    assert enc.sample_rate == 8000 and enc.fbank.window_samples == 200 and enc.fbank.shift_samples == 80
    assert enc.frame_rate == 25.0 and enc.num_frames(8000) == ((98 - 1) // 2 - 1) // 2
    wav = signals(rate=8000, seconds=(1.0,))[0]
    assert enc.encode(wav[None], torch.ones(1))[1].item() == enc.num_frames(8000)


def test_static_chunk_mask(tmp_path: Path) -> None:
    conf = {"causal": True, "static_chunk_size": 2, "use_dynamic_chunk": False}
    enc = WenetLayerwiseEncoder(write_model(tmp_path / "chunk", input_layer="conv2d", kernel=4, encoder_conf=conf))
    mask = enc.model.attention_mask(torch.tensor([[True] * 5 + [False]]))
    expected = torch.tensor([[1, 1, 0, 0, 0, 0]] * 2 + [[1, 1, 1, 1, 0, 0]] * 2 + [[1, 1, 1, 1, 1, 0]] * 2).bool()
    assert torch.equal(mask[0], expected)
    # chunked attention + causal convs: the first chunk (2 frames = 7 + 4 fbank frames) ignores later audio
    wav = signals(seconds=(1.0,))[0]
    short, _ = enc.encode(wav[None, : 400 + 160 * 10], torch.ones(1))
    chunked, _ = enc.encode(wav[None], torch.ones(1))
    assert short.shape[2] == 2
    # the two runs differ in length only: the same values up to float32 rounding (other kernel blockings)
    bounds = layer_bounds(enc, short[0], chunked.shape[2], from_wav=False)
    for k, bound in enumerate(bounds):
        assert_within(chunked[0, k, :2], short[0, k], bound, f"layer {k}")
    # the same weights without the static chunk size attend to the whole clip
    full_context = write_model(tmp_path / "full", input_layer="conv2d", kernel=4, encoder_conf={"causal": True})
    full, _ = WenetLayerwiseEncoder(full_context).encode(wav[None], torch.ones(1))
    assert torch.equal(full[:, 0], chunked[:, 0])  # the input layer: one machine, same weights, same input bits
    # the chunk mask's effect on the first chunk: far above the rounding bound of those same frames
    assert min(ratio(full[0, k, :2], chunked[0, k, :2], bounds[k]) for k in (1, 2)) > 100


# ---------------------------------------------------------------------------------------------- factory


def test_factory_and_recipe_yaml(reference: dict) -> None:
    spec = load_spec(YAML)
    assert spec["backend"] == "wenet" and spec["layers"] == "all" and "wenet_gigaspeech_u2pp" in spec["source"]
    enc = build_encoder({"backend": "wenet", "source": str(FIXTURE), "layers": [0, -1]})
    assert isinstance(enc, WenetLayerwiseEncoder) and enc.layers == [0, 3] and enc.num_layers == 2
    sig = reference["signals"][0]
    hidden, frames = enc.encode(sig["wav"][None], torch.ones(1))
    assert hidden.shape == (1, 2, 20, 64)
    bound = layer_bounds(enc, torch.stack([sig["layers"][0], sig["layers"][3]]), 20, from_wav=True)[1]
    assert_within(hidden[0, 1], sig["layers"][3], bound, "layer 3")
    meta = enc.describe()
    assert meta["backend"] == "wenet" and meta["total_layers"] == 4 and meta["dim"] == 64
    low = build_encoder({"backend": "wenet", "source": str(FIXTURE), "dtype": "bfloat16"})
    hidden16, _ = low.encode(sig["wav"][None], torch.ones(1))
    assert low.describe()["dtype"] == "bfloat16" and hidden16.dtype == torch.float32
    # bf16 autocast rounds each Linear/conv/matmul's inputs and output to bf16 (sums stay float32): a relative
    # error up to 2 EPS_BF16 per op (no sqrt(K)), adding up over the ops chained before layer k, on the layer's
    # largest frame (norms over the 64 dims)
    for k in range(4):
        chained = chained_sums(low.model.embed, *low.model.encoders[:k])
        magnitude = float(sig["layers"][k].norm(dim=-1).max())
        bound = rounding_bound(magnitude, terms=1, depth=chained, eps=EPS_BF16)
        assert_within((hidden16[0, k] - sig["layers"][k]).norm(dim=-1), torch.zeros(20), bound, f"bf16 layer {k}")
    with pytest.raises(ValueError, match="max_chunk_s"):
        build_encoder({"backend": "wenet", "source": str(FIXTURE), "max_chunk_s": 10})
    with pytest.raises(ValueError, match="only applies to Whisper"):
        build_encoder({"backend": "wenet", "source": str(FIXTURE), "input": "trimmed"})
