"""Reading a WeNet checkpoint folder: ``train.yaml`` (2021 and current layouts), global CMVN, ``final.pt``.

The folder is what WeNet's ``*_exp.tar.gz`` checkpoint archives unpack to (e.g.
``gigaspeech_u2pp_conformer_exp.tar.gz`` -> ``20210728_u2pp_conformer_exp/``): ``final.pt`` (a flat state
dict), ``train.yaml``, ``global_cmvn`` (+ ``units.txt``, unused here). TorchScript runtime exports
(``final.zip`` from the ``*_libtorch.tar.gz`` archives) are refused: they give no access to the layers.
Every problem raises :class:`WenetCheckpointError` (a ValueError) whose message names the file.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import zipfile
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

import torch
import yaml

logger = logging.getLogger(__name__)

CHECKPOINT = "final.pt"
CONFIG = "train.yaml"
RUNTIME_EXPORT = "final.zip"
CHECKPOINT_ARCHIVE = (
    "WeNet's checkpoint archive (pretrained-model table, column 'Checkpoint Model'; for the paper's model "
    "gigaspeech_u2pp_conformer_exp.tar.gz, mirrored at https://huggingface.co/openspeech/wenet-models), "
    "unpacked: a folder with final.pt, train.yaml, global_cmvn, units.txt"
)


class WenetCheckpointError(ValueError):
    """A WeNet folder that cannot be used as it is; the message names the file and the problem."""


class WenetFileNotFoundError(WenetCheckpointError, FileNotFoundError):
    """A file the WeNet folder must hold is missing."""


@dataclass(frozen=True)
class FbankOptions:
    """WeNet's Kaldi fbank options (``dataset_conf.fbank_conf`` or ``collate_conf.feature_extraction_conf``)."""

    num_mel_bins: int = 23
    frame_length: float = 25.0
    frame_shift: float = 10.0
    sample_rate: int = 16000
    window_type: str = "povey"

    @property
    def window_samples(self) -> int:
        """Samples per analysis window (as torchaudio's kaldi compliance computes it)."""
        return int(self.sample_rate * self.frame_length * 0.001)

    @property
    def shift_samples(self) -> int:
        """Samples per frame shift."""
        return int(self.sample_rate * self.frame_shift * 0.001)

    def num_frames(self, num_samples: int) -> int:
        """Fbank frames with ``snip_edges``: ``1 + (n - window) // shift``, 0 below one window."""
        if num_samples < self.window_samples:
            return 0
        return 1 + (num_samples - self.window_samples) // self.shift_samples

    def samples_for(self, frames: int) -> int:
        """Fewest samples that give ``frames`` fbank frames."""
        return self.window_samples + (max(frames, 1) - 1) * self.shift_samples


@dataclass(frozen=True)
class EncoderConfig:
    """The ``encoder_conf`` options that shape a WeNet Conformer/Transformer encoder (WeNet's defaults)."""

    kind: str = "conformer"
    input_dim: int = 80
    output_size: int = 256
    attention_heads: int = 4
    linear_units: int = 2048
    num_blocks: int = 6
    input_layer: str = "conv2d"
    pos_enc_layer_type: str = "rel_pos"
    selfattention_layer_type: str = "rel_selfattn"
    normalize_before: bool = True
    macaron_style: bool = True
    use_cnn_module: bool = True
    cnn_module_kernel: int = 15
    causal: bool = False
    cnn_module_norm: str = "batch_norm"
    activation_type: str = "swish"
    query_bias: bool = True
    key_bias: bool = True
    value_bias: bool = True
    conv_bias: bool = True
    mlp_bias: bool = True
    layer_norm_type: str = "layer_norm"
    norm_eps: float = 1e-5
    conv_norm_eps: float = 1e-5
    conv_inner_factor: int = 2
    concat_after: bool = False
    static_chunk_size: int = 0
    use_dynamic_chunk: bool = False


TRANSFORMER_DEFAULTS = {
    "pos_enc_layer_type": "abs_pos",
    "selfattention_layer_type": "selfattn",
    "activation_type": "relu",
    "macaron_style": False,
    "use_cnn_module": False,
}
SUPPORTED = {
    "input_layer": ("linear", "conv2d2", "conv2d", "conv2d6", "conv2d8"),
    "pos_enc_layer_type": ("abs_pos", "embed", "rel_pos", "no_pos"),
    "selfattention_layer_type": ("selfattn", "rel_selfattn"),
    "cnn_module_norm": ("batch_norm", "layer_norm", "rms_norm"),
    "layer_norm_type": ("layer_norm", "rms_norm"),
    "activation_type": ("swish", "relu", "gelu", "tanh", "selu", "hardtanh"),
}


@dataclass
class WenetCheckpoint:
    """Everything read from a WeNet folder, checked for consistency except the weights' shapes."""

    folder: Path
    checkpoint: Path
    config_path: Path
    encoder: EncoderConfig
    fbank: FbankOptions
    cmvn: tuple[torch.Tensor, torch.Tensor] | None
    cmvn_path: Path | None
    weights: dict[str, torch.Tensor]
    pos_table: torch.Tensor | None
    sha256: str


def is_torchscript(path: Path) -> bool:
    """Whether ``path`` is a TorchScript archive (a zip with ``code/`` or ``constants.pkl`` entries)."""
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as archive:
        names = [n.split("/", 1)[-1] for n in archive.namelist()]
    return any(n.startswith("code/") or n == "constants.pkl" for n in names)


def runtime_export_error(path: Path) -> WenetCheckpointError:
    """The error for a TorchScript runtime export."""
    return WenetCheckpointError(
        f"{path} is a WeNet runtime export (TorchScript, from a *_libtorch.tar.gz archive) whose layers cannot "
        f"be read; download {CHECKPOINT_ARCHIVE} instead, and point `source` at that folder"
    )


def resolve_files(source: str | Path) -> tuple[Path, Path]:
    """The folder and the checkpoint file of ``source`` (a folder, or a ``.pt`` file inside one)."""
    path = Path(source).expanduser()
    if path.is_file():
        if path.suffix == ".zip" or is_torchscript(path):
            raise runtime_export_error(path)
        return path.parent, path
    if not path.is_dir():
        raise WenetFileNotFoundError(
            f"{path}: WeNet checkpoint folder not found; `source` must be {CHECKPOINT_ARCHIVE}"
        )
    checkpoint = path / CHECKPOINT
    if checkpoint.is_file():
        if is_torchscript(checkpoint):
            raise runtime_export_error(checkpoint)
        return path, checkpoint
    if (path / RUNTIME_EXPORT).is_file():
        raise runtime_export_error(path / RUNTIME_EXPORT)
    others = sorted(p.name for p in path.glob("*.pt"))
    hint = f" (it has {', '.join(others)}: point `source` at one of them)" if others else f" ({CHECKPOINT_ARCHIVE})"
    raise WenetFileNotFoundError(f"{checkpoint}: not found{hint}")


def read_yaml(path: Path) -> dict[str, Any]:
    """``train.yaml`` as a dict (plain YAML: WeNet writes no tags)."""
    if not path.is_file():
        raise WenetFileNotFoundError(f"{path}: not found; the WeNet folder must hold the training config {CONFIG}")
    with open(path, encoding="utf-8") as f:
        config = yaml.safe_load(f)
    if not isinstance(config, dict) or "encoder_conf" not in config:
        raise WenetCheckpointError(f"{path}: not a WeNet training config (no `encoder_conf`)")
    return config


def encoder_config(config: dict[str, Any], path: Path) -> EncoderConfig:
    """The encoder options of ``train.yaml`` (WeNet's defaults where a key is absent)."""
    kind = str(config.get("encoder", "conformer")).lower()
    if kind not in ("conformer", "transformer"):
        raise WenetCheckpointError(f"{path}: encoder `{kind}` is not supported (conformer, transformer)")
    conf = dict(config.get("encoder_conf") or {})
    _refuse_unsupported(conf, path)
    known = {f.name for f in fields(EncoderConfig)}
    values = {
        **(TRANSFORMER_DEFAULTS if kind == "transformer" else {}),
        **{k: _typed(k, v) for k, v in conf.items() if k in known},
    }
    if kind == "transformer":
        values.update(macaron_style=False, use_cnn_module=False)
    input_dim = config.get("input_dim")
    cfg = EncoderConfig(kind=kind, input_dim=int(input_dim) if input_dim else 0, **values)
    for key, allowed in SUPPORTED.items():
        if getattr(cfg, key) not in allowed:
            raise WenetCheckpointError(f"{path}: encoder_conf.{key}: {getattr(cfg, key)!r} is not supported {allowed}")
    if cfg.output_size % cfg.attention_heads:
        raise WenetCheckpointError(f"{path}: output_size {cfg.output_size} is not a multiple of attention_heads")
    if cfg.use_cnn_module and not cfg.causal and cfg.cnn_module_kernel % 2 == 0:
        raise WenetCheckpointError(
            f"{path}: cnn_module_kernel {cfg.cnn_module_kernel} is even, which WeNet allows only with causal: true"
        )
    return cfg


def _typed(key: str, value: Any) -> Any:
    """A config value as the type of its default (YAML reads ``1e-5`` as a string)."""
    default = EncoderConfig.__dataclass_fields__[key].default
    if isinstance(default, bool) or not isinstance(default, (int, float)) or value is None:
        return value
    return type(default)(value)


def _refuse_unsupported(conf: dict[str, Any], path: Path) -> None:
    """Options this loader does not implement (grouped KV heads, MoE/gated MLPs)."""
    if conf.get("mlp_type", "position_wise_feed_forward") != "position_wise_feed_forward":
        raise WenetCheckpointError(f"{path}: encoder_conf.mlp_type {conf['mlp_type']!r} is not supported")
    heads = conf.get("attention_heads", 4)
    if conf.get("n_kv_head") not in (None, heads) or conf.get("head_dim") not in (
        None,
        conf.get("output_size", 256) // heads,
    ):
        raise WenetCheckpointError(f"{path}: n_kv_head/head_dim (grouped attention) are not supported")


def fbank_options(config: dict[str, Any], path: Path) -> FbankOptions:
    """Fbank options from ``dataset_conf.fbank_conf`` (current) or ``collate_conf`` (2021 layout)."""
    dataset = config.get("dataset_conf") or {}
    rate = int((dataset.get("resample_conf") or {}).get("resample_rate", 16000))
    if "fbank_conf" in dataset:
        conf = dataset["fbank_conf"] or {}
        return FbankOptions(
            num_mel_bins=int(conf.get("num_mel_bins", 23)),
            frame_length=float(conf.get("frame_length", 25)),
            frame_shift=float(conf.get("frame_shift", 10)),
            sample_rate=rate,
            window_type=str(conf.get("window_type", "povey")),
        )
    collate = config.get("collate_conf") or {}
    if "feature_extraction_conf" in collate:
        conf = collate["feature_extraction_conf"] or {}
        if conf.get("feature_type", "fbank") != "fbank" or conf.get("using_pitch"):
            raise WenetCheckpointError(f"{path}: only fbank features are supported (no mfcc, no pitch)")
        return FbankOptions(
            num_mel_bins=int(conf.get("mel_bins", 23)),
            frame_length=float(conf.get("frame_length", 25)),
            frame_shift=float(conf.get("frame_shift", 10)),
            sample_rate=rate,
        )
    other = [k for k in dataset if k.endswith("_conf") and ("mfcc" in k or "mel" in k)]
    what = f"{other[0]} features are not supported" if other else "no fbank options found"
    raise WenetCheckpointError(
        f"{path}: {what} (expected dataset_conf.fbank_conf or collate_conf.feature_extraction_conf)"
    )


def cmvn_entry(config: dict[str, Any]) -> tuple[str | None, str]:
    """The CMVN file named by the config and the key naming it (current ``cmvn_conf`` or 2021 top level)."""
    if "cmvn_conf" in config or "cmvn" in config:
        if config.get("cmvn", "global_cmvn") is None:
            return None, "cmvn"
        return (config.get("cmvn_conf") or {}).get("cmvn_file"), "cmvn_conf.cmvn_file"
    return config.get("cmvn_file"), "cmvn_file"


def resolve_cmvn(name: str, key: str, folder: Path, config_path: Path) -> Path:
    """The CMVN file: its base name next to the checkpoint first (train.yaml holds training-machine paths)."""
    written = Path(name)
    candidates = [folder / written.name]
    if not written.is_absolute():
        candidates.append(folder / written)
    candidates.append(written)
    for path in candidates:
        if path.is_file():
            return path
    raise WenetFileNotFoundError(
        f"{candidates[0]}: CMVN file not found ({config_path.name} names `{name}` in {key}); "
        f"copy the archive's global_cmvn next to {CHECKPOINT}"
    )


def read_cmvn_stats(path: Path) -> tuple[list[float], list[float], float]:
    """Sums, sums of squares and frame count from a JSON or a Kaldi text CMVN file."""
    raw = path.read_bytes()
    if raw[:2] == b"\0B":
        raise WenetCheckpointError(
            f"{path}: Kaldi binary CMVN stats are not supported; write them as text "
            f"(copy-matrix --binary=false {path.name} {path.name}.txt)"
        )
    text = raw.decode("utf-8", errors="replace").strip()
    try:
        if text.startswith("{"):
            stats = json.loads(text)
            return (
                [float(x) for x in stats["mean_stat"]],
                [float(x) for x in stats["var_stat"]],
                float(stats["frame_num"]),
            )
        return _kaldi_text_stats(text)
    except (KeyError, ValueError, IndexError) as err:
        raise WenetCheckpointError(f"{path}: not a JSON or Kaldi-text global CMVN file ({err})") from None


def _kaldi_text_stats(text: str) -> tuple[list[float], list[float], float]:
    """A Kaldi text matrix ``[ sums... count \\n squares... 0 ]`` (an optional leading key is skipped)."""
    body = text[text.index("[") + 1 : text.rindex("]")]
    values = [float(x) for x in body.split()]
    if len(values) % 2 or len(values) < 4:
        raise ValueError(f"{len(values)} numbers: expected 2 rows of dim+1")
    width = len(values) // 2
    return values[: width - 1], values[width : 2 * width - 1], values[width - 1]


def cmvn_from_stats(sums: list[float], squares: list[float], count: float) -> tuple[torch.Tensor, torch.Tensor]:
    """WeNet's global CMVN: mean = s/n, var = q/n - mean², floored at 1e-20, istd = 1/sqrt(var); float64 -> float32."""
    if count <= 0 or len(sums) != len(squares):
        raise ValueError(f"bad CMVN stats: {len(sums)} sums, {len(squares)} squares, frame count {count}")
    mean = torch.tensor(sums, dtype=torch.float64) / count
    var = (torch.tensor(squares, dtype=torch.float64) / count - mean * mean).clamp_min(1e-20)
    return mean.float(), (1.0 / torch.sqrt(var)).float()


def load_cmvn(path: Path) -> tuple[torch.Tensor, torch.Tensor]:
    """(mean, istd) float32 vectors of a global CMVN file."""
    try:
        return cmvn_from_stats(*read_cmvn_stats(path))
    except ValueError as err:
        if isinstance(err, WenetCheckpointError):
            raise
        raise WenetCheckpointError(f"{path}: {err}") from None


def load_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """The tensors of a checkpoint (a flat state dict; ``{"model": ...}`` wrappers and ``module.`` prefixes too)."""
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # unpickling errors come in many types
        raise WenetCheckpointError(f"{path}: cannot be read as a PyTorch state dict ({err})") from None
    for key in ("model", "state_dict"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
    if not isinstance(obj, dict):
        raise WenetCheckpointError(f"{path}: holds a {type(obj).__name__}, not a state dict")
    tensors = {str(k): v for k, v in obj.items() if isinstance(v, torch.Tensor)}
    if tensors and all(k.startswith("module.") for k in tensors):
        tensors = {k[len("module.") :]: v for k, v in tensors.items()}
    return tensors


def split_encoder(
    state: dict[str, torch.Tensor], path: Path
) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor], torch.Tensor | None]:
    """Encoder weights (prefix stripped), the ``global_cmvn`` buffers and the sinusoid table; the rest is ignored."""
    encoder = {k[len("encoder.") :]: v for k, v in state.items() if k.startswith("encoder.")}
    if not encoder:
        raise WenetCheckpointError(f"{path}: no `encoder.*` tensors; not a WeNet ASR checkpoint")
    cmvn = {k.split(".")[-1]: encoder.pop(k) for k in list(encoder) if k.startswith("global_cmvn.")}
    table = encoder.pop("embed.pos_enc.pe", None)
    return encoder, cmvn, table


def file_sha256(path: Path) -> str:
    """SHA-256 of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def choose_cmvn(
    from_file: tuple[torch.Tensor, torch.Tensor] | None,
    buffers: dict[str, torch.Tensor],
    files: tuple[Path, Path | None, Path],
) -> tuple[torch.Tensor, torch.Tensor] | None:
    """The CMVN WeNet applies: the checkpoint's buffers when present (they override the file on load)."""
    checkpoint, cmvn_path, config_path = files
    if from_file is None:
        if buffers:
            raise WenetCheckpointError(
                f"{checkpoint} does not match {config_path}: it holds encoder.global_cmvn.* but "
                f"{config_path.name} names no CMVN file"
            )
        return None
    if not buffers:
        return from_file
    if set(buffers) != {"mean", "istd"}:
        raise WenetCheckpointError(f"{checkpoint}: encoder.global_cmvn holds {sorted(buffers)}, not mean/istd")
    cmvn = (buffers["mean"].float().reshape(-1), buffers["istd"].float().reshape(-1))
    if cmvn[0].shape != from_file[0].shape:
        raise WenetCheckpointError(
            f"{checkpoint} does not match {cmvn_path}: CMVN of dim {cmvn[0].numel()} vs {from_file[0].numel()}"
        )
    gap = max(_relative_gap(a, b) for a, b in zip(cmvn, from_file, strict=True))
    if gap > 1e-4:
        logger.warning(
            "%s differs from the CMVN buffers of %s (rel. %.2g); using the checkpoint's, as WeNet does",
            cmvn_path,
            checkpoint,
            gap,
        )
    return cmvn


def _relative_gap(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(((a - b).abs() / b.abs().clamp_min(1e-6)).max())


def read_checkpoint(source: str | Path) -> WenetCheckpoint:
    """Read and cross-check a WeNet checkpoint folder (see the module docstring)."""
    folder, checkpoint = resolve_files(source)
    config_path = folder / CONFIG
    config = read_yaml(config_path)
    encoder = encoder_config(config, config_path)
    fbank = fbank_options(config, config_path)
    name, key = cmvn_entry(config)
    cmvn_path = resolve_cmvn(str(name), key, folder, config_path) if name else None
    from_file = load_cmvn(cmvn_path) if cmvn_path else None
    weights, buffers, table = split_encoder(load_state_dict(checkpoint), checkpoint)
    cmvn = choose_cmvn(from_file, buffers, (checkpoint, cmvn_path, config_path))
    input_dim = encoder.input_dim or fbank.num_mel_bins
    if encoder.input_dim and encoder.input_dim != fbank.num_mel_bins:
        raise WenetCheckpointError(
            f"{config_path}: input_dim {encoder.input_dim} but fbank has {fbank.num_mel_bins} mel bins"
        )
    if cmvn is not None and cmvn[0].numel() != input_dim:
        raise WenetCheckpointError(
            f"{cmvn_path or checkpoint}: CMVN of dim {cmvn[0].numel()} but {config_path.name} has {input_dim} mel bins"
        )
    if table is not None and (table.dim() != 3 or table.shape[-1] != encoder.output_size):
        raise WenetCheckpointError(
            f"{checkpoint} does not match {config_path}: encoder.embed.pos_enc.pe has shape {list(table.shape)}, "
            f"expected [1, max_len, {encoder.output_size}]"
        )
    return WenetCheckpoint(
        folder=folder,
        checkpoint=checkpoint,
        config_path=config_path,
        encoder=replace(encoder, input_dim=input_dim),
        fbank=fbank,
        cmvn=cmvn,
        cmvn_path=cmvn_path,
        weights=weights,
        pos_table=None if table is None else table[0].float(),
        sha256=file_sha256(checkpoint),
    )


def sinusoid_table(length: int, dim: int) -> torch.Tensor:
    """WeNet's sinusoid table (length, dim) in float32: pe[p, 2i] = sin(p·10000^(-2i/d)), pe[p, 2i+1] = cos(...)."""
    position = torch.arange(0, length, dtype=torch.float32).unsqueeze(1)
    div = torch.exp(torch.arange(0, dim, 2, dtype=torch.float32) * -(math.log(10000.0) / dim))
    table = torch.zeros(length, dim)
    table[:, 0::2] = torch.sin(position * div)
    table[:, 1::2] = torch.cos(position * div)
    return table
