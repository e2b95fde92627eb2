"""Use a trained model: ``EmotionRecognizer`` (Python API) and the ``export`` of a fold into a folder.

    rec = EmotionRecognizer.from_dir("exp/cta_rnn_whisper_tiny_en_loso_speaker/fold1")   # or an export
    out = rec.predict_file("a.wav")            # {"label", "probs": {label: p}, "attention": {...}}
    out = rec.predict_batch(wavs, lengths)     # padded (B, samples) 16-kHz batch, relative lengths

An exported folder holds ``model.json`` (architecture, labels, layers, encoder spec), ``model.ckpt``
(weights of the best validation-UA checkpoint), ``label_encoder.txt``, ``encoder.yaml``,
``speaker_norm_fallback.pt`` (when trained with speaker normalisation), ``scores.json`` and a README card.
Loading needs only this package and the encoder (hub id or the embedded package).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch

from cta_rnn.audio import load_audio

ENCODER_KEYS = ("backend", "source", "revision", "input", "dtype", "cache_dir", "max_chunk_s", "interface")


def encoder_spec(spec: dict[str, Any], overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """The encoder spec to rebuild the model's encoder: recorded identity, the model's layers, overrides."""
    enc = {k: v for k, v in (spec.get("encoder") or {}).items() if k in ENCODER_KEYS and v is not None}
    enc["layers"] = list(spec["layers"])
    enc["dtype"] = "auto"
    return {**enc, **(overrides or {})}


class EmotionRecognizer:
    """Frozen encoder + trained head, on any audio file (any rate, any channel count)."""

    def __init__(
        self,
        model: torch.nn.Module,
        spec: dict[str, Any],
        encoder: Any,
        fallback: dict | None = None,
        device: str = "cpu",
    ) -> None:
        self.model, self.spec, self.encoder, self.device = model.to(device).eval(), spec, encoder, device
        self.labels: list[str] = list(spec["labels"])
        self.fallback = fallback
        if list(encoder.layers) != list(spec["layers"]) or int(encoder.dim) != int(spec["dim"]):
            raise ValueError(
                f"encoder gives layers {list(encoder.layers)} x {encoder.dim}, the model was trained on "
                f"layers {spec['layers']} x {spec['dim']}"
            )

    @classmethod
    def from_dir(
        cls,
        path: str | os.PathLike,
        device: str = "cpu",
        encoder: Any = None,
        encoder_overrides: dict[str, Any] | None = None,
    ) -> EmotionRecognizer:
        """Load an exported folder or a finished experiment fold (``exp/.../fold<k>``)."""
        from cta_rnn.checkpoint import load_fold_model
        from cta_rnn.train import build_model

        path = Path(path)
        if (path / "model.ckpt").is_file():
            spec = json.loads((path / "model.json").read_text(encoding="utf-8"))
            model = build_model(spec, spec["num_layers"], spec["dim"])
            model.load_state_dict(torch.load(path / "model.ckpt", map_location="cpu", weights_only=True))
        else:
            model, spec = load_fold_model(path)
        from cta_rnn.score import read_label_encoder

        labels = read_label_encoder(path / "label_encoder.txt")
        if labels != list(spec["labels"]):
            raise ValueError(f"{path}: label_encoder.txt {labels} does not match model.json labels {spec['labels']}")
        if encoder is None:
            from cta_rnn.encoders import build_encoder

            encoder = build_encoder(encoder_spec(spec, encoder_overrides), device=device)
        fb = path / "speaker_norm_fallback.pt"
        fallback = torch.load(fb, map_location="cpu", weights_only=True) if fb.is_file() else None
        if spec.get("normalization") == "speaker" and fallback is None:
            raise FileNotFoundError(
                f"{path}: trained with speaker normalisation but speaker_norm_fallback.pt is missing"
            )
        return cls(model, spec, encoder, fallback, device)

    @torch.no_grad()
    def features(self, wavs: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Encoder hidden states (B, L, T, D) and valid frame counts."""
        hidden, frames = self.encoder.encode(wavs.to(self.device), lengths.to(self.device))
        return hidden.float(), frames

    @staticmethod
    def speaker_stats(feats: list[torch.Tensor]) -> dict[str, torch.Tensor]:
        """Mean/std over the frames of one speaker's utterances (each (L, T, D))."""
        from cta_rnn.data import running_stats

        mean, std = running_stats(feats)
        return {"mean": mean, "std": std}

    def _normalise(self, hidden: torch.Tensor, stats: dict[str, torch.Tensor] | None) -> torch.Tensor:
        if self.spec.get("normalization") != "speaker":
            return hidden
        from cta_rnn.data import normalise

        stats = stats or self.fallback
        return normalise(hidden, stats["mean"], stats["std"])  # (L, dim) stats broadcast over the batch

    @torch.no_grad()
    def predict_features(
        self, hidden: torch.Tensor, frames: torch.Tensor, stats: dict[str, torch.Tensor] | None = None
    ) -> dict[str, Any]:
        """Run the head on encoder features: labels, probabilities (B, C), attention."""
        hidden = self._normalise(hidden, stats)
        lengths = frames.float() / hidden.shape[2]
        logits, att = self.model(hidden.to(self.device), lengths.to(self.device), return_attention=True)
        probs = torch.softmax(logits, -1).cpu()
        return {
            "labels": [self.labels[i] for i in probs.argmax(1)],
            "probs": probs,
            "channel": att["channel"].cpu(),
            "temporal": att["temporal"].cpu(),
            "frames": frames.cpu(),
        }

    def predict_batch(
        self, wavs: torch.Tensor, lengths: torch.Tensor, stats: dict[str, torch.Tensor] | None = None
    ) -> dict[str, Any]:
        """A padded 16-kHz batch (B, samples) with relative lengths -> labels, probs, attention."""
        hidden, frames = self.features(wavs, lengths)
        return self.predict_features(hidden, frames, stats)

    def predict_file(self, path: str | os.PathLike, stats: dict[str, torch.Tensor] | None = None) -> dict[str, Any]:
        """One file (any rate/channels; long files are chunked by the encoder) -> label, probs, attention."""
        wav = load_audio(path, self.encoder.sample_rate)
        out = self.predict_batch(wav[None], torch.ones(1), stats)
        return {
            "file": str(path),
            "label": out["labels"][0],
            "probs": dict(zip(self.labels, out["probs"][0].tolist())),
            "channel": out["channel"][0],
            "temporal": out["temporal"][0, : int(out["frames"][0])],
        }


def export_fold(fold_dir: str | os.PathLike, out_dir: str | os.PathLike, force: bool = False) -> Path:
    """Write a self-contained model folder from a finished fold (atomically: temp folder + rename)."""
    from cta_rnn.checkpoint import load_fold_model

    fold_dir, out_dir = Path(fold_dir), Path(out_dir)
    if out_dir.exists() and not force:
        raise FileExistsError(f"{out_dir} exists (use --force to replace it)")
    model, spec = load_fold_model(fold_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        torch.save(model.state_dict(), tmp / "model.ckpt")
        (tmp / "model.json").write_text(json.dumps(spec, indent=2) + "\n", encoding="utf-8")
        shutil.copy(fold_dir / "label_encoder.txt", tmp / "label_encoder.txt")
        if (fold_dir / "speaker_norm_fallback.pt").is_file():
            shutil.copy(fold_dir / "speaker_norm_fallback.pt", tmp / "speaker_norm_fallback.pt")
        import yaml

        (tmp / "encoder.yaml").write_text(yaml.safe_dump(encoder_spec(spec), sort_keys=False), encoding="utf-8")
        scores = {}
        if (fold_dir / "test_results.json").is_file():
            scores = json.loads((fold_dir / "test_results.json").read_text(encoding="utf-8"))
            (tmp / "scores.json").write_text(json.dumps(scores, indent=2) + "\n", encoding="utf-8")
        (tmp / "README.md").write_text(model_card(fold_dir, spec, scores), encoding="utf-8")
        if out_dir.exists():
            shutil.rmtree(out_dir)
        os.replace(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out_dir


def model_card(fold_dir: Path, spec: dict[str, Any], scores: dict[str, Any]) -> str:
    """A short README for an exported model."""
    test = scores.get("test", {})
    enc = spec.get("encoder") or {}
    lines = [
        f"# {spec['model_class']} speech emotion recognizer",
        "",
        f"Exported from `{fold_dir}` (best validation UA, epoch {scores.get('best_epoch', '?')}).",
        "",
        f"- labels: {', '.join(spec['labels'])}",
        f"- encoder: {enc.get('name') or enc.get('source')} ({enc.get('backend')}, source `{enc.get('source')}`, "
        f"revision `{enc.get('revision')}`), layers {spec['layers']} x {spec['dim']} at {spec['frame_rate']} Hz",
        f"- normalisation: {spec.get('normalization')}",
    ]
    if test:
        lines.append(
            f"- held-out test: WA {100 * test['WA']:.2f} %, UA {100 * test['UA']:.2f} %, "
            f"macro-F1 {100 * test['F1']:.2f} % ({scores.get('n', {}).get('test', '?')} utterances)"
        )
    lines += [
        "",
        "```python",
        "from cta_rnn.inference import EmotionRecognizer",
        'rec = EmotionRecognizer.from_dir("<this folder>")',
        'print(rec.predict_file("speech.wav")["label"])',
        "```",
        "",
        "or `cta-rnn predict --model <this folder> speech.wav`.",
        "",
    ]
    return "\n".join(lines)
