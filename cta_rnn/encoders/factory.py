"""Build a frozen layer-wise encoder from a spec dict or an encoder YAML (``recipes/shared/hparams/encoder``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import yaml

from cta_rnn.artifacts import ENCODER_SPEC_KEYS as KEYS
from cta_rnn.encoders.base import LayerwiseEncoder

BACKENDS = ("whisper", "ct2-whisper", "ssl", "speechbrain", "wenet")


def load_spec(spec: dict[str, Any] | str | Path, overrides: dict[str, Any] | str | None = None) -> dict[str, Any]:
    """A validated spec from a dict or a YAML path (hyperpyyaml); ``overrides``: a dict or YAML text."""
    if isinstance(overrides, str):
        overrides = yaml.safe_load(overrides) or {}
    if isinstance(spec, (str, Path)):
        from hyperpyyaml import load_hyperpyyaml

        with open(spec, encoding="utf-8") as f:
            spec = load_hyperpyyaml(f)
    spec = {**dict(spec), **(overrides or {})}
    unknown = set(spec) - set(KEYS)
    if unknown:
        raise ValueError(f"unknown encoder spec keys {sorted(unknown)}; allowed: {sorted(KEYS)}")
    if spec.get("backend") not in BACKENDS:
        raise ValueError(f"encoder backend must be one of {BACKENDS}, got {spec.get('backend')!r}")
    if "source" not in spec:
        raise ValueError("encoder spec needs a `source` (hub id, local folder or pkg:<module>)")
    return spec


def build_encoder(
    spec: dict[str, Any] | str | Path, device: str | torch.device = "cpu", **overrides: Any
) -> LayerwiseEncoder:
    """The encoder a spec describes (see ``_build_backend``), its frames averaged ``frame_pool`` (> 1) at a time."""
    spec = load_spec(spec, overrides)
    pool = spec.pop("frame_pool", None)
    encoder = _build_backend(spec, device)
    if pool is None or (pool == 1 and pool is not True):
        return encoder
    from cta_rnn.encoders.pooling import FramePoolEncoder

    return FramePoolEncoder(encoder, pool)


def _build_backend(spec: dict[str, Any], device: str | torch.device = "cpu") -> LayerwiseEncoder:
    """Build the encoder a spec (already loaded and checked by :func:`load_spec`) describes.

    Keys: ``backend`` (whisper | ct2-whisper | ssl | speechbrain | wenet), ``source``, ``revision``, ``layers``
    (all | list | "a-b"), ``input`` (padded | trimmed; Whisper only), ``dtype`` (auto | float32 |
    bfloat16 | float16), ``cache_dir``, ``max_chunk_s``.
    """
    spec = dict(spec)
    backend = spec.pop("backend")
    common = {k: spec[k] for k in ("revision", "layers", "dtype", "cache_dir") if spec.get(k) is not None}
    if backend in ("whisper", "ct2-whisper"):
        from cta_rnn.encoders.whisper import WhisperLayerwiseEncoder

        extra = {k: spec[k] for k in ("input", "max_chunk_s") if spec.get(k) is not None}
        if backend == "ct2-whisper":
            from cta_rnn.encoders.ct2_whisper import ensure_converted

            folder = ensure_converted(spec["source"], common.pop("cache_dir", None))
            common.pop("revision", None)
            source_id = spec["source"] if isinstance(spec["source"], str) else "+".join(map(str, spec["source"]))
            return WhisperLayerwiseEncoder(
                folder, device=device, backend=backend, source_id=source_id, **common, **extra
            )
        return WhisperLayerwiseEncoder(spec["source"], device=device, **common, **extra)
    if spec.get("input") not in (None, "padded"):
        raise ValueError(f"`input: {spec['input']}` only applies to Whisper backends")
    if backend == "wenet":
        from cta_rnn.encoders.wenet import WenetLayerwiseEncoder

        if spec.get("max_chunk_s") is not None:
            raise ValueError("`max_chunk_s` does not apply to the wenet backend (whole clips, full-context attention)")
        return WenetLayerwiseEncoder(spec["source"], device=device, **common)
    if backend == "ssl":
        from cta_rnn.encoders.ssl import SSLLayerwiseEncoder

        return SSLLayerwiseEncoder(spec["source"], device=device, max_chunk_s=spec.get("max_chunk_s"), **common)
    from cta_rnn.encoders.speechbrain_asr import SpeechBrainLayerwiseEncoder

    interface = spec.get("interface") or "EncoderDecoderASR"
    return SpeechBrainLayerwiseEncoder(spec["source"], device=device, interface=interface, **common)
