"""Use a trained model: ``EmotionRecognizer`` (a SpeechBrain ``Pretrained``) and the ``export`` of a fold.

    from cta_rnn.inference import EmotionRecognizer
    rec = EmotionRecognizer.from_hparams(source="models/my_ser", savedir="pretrained/my_ser")  # or a fold dir
    probs, score, index, label = rec.classify_file("a.wav")   # like speechbrain's EncoderClassifier
    out = rec.predict_file("a.wav")            # {"label", "probs": {label: p}, "channel", "temporal"}
    rec = EmotionRecognizer.from_dir("exp/cta_rnn_whisper_tiny_en_loso_speaker/fold1")   # no copy

An exported folder holds ``hyperparams.yaml`` (SpeechBrain inference YAML: labels, encoder spec, the model
and a ``Pretrainer`` for ``model.ckpt``), ``model.ckpt`` (weights of the best validation-UA checkpoint, or
the average of the N best with ``average_checkpoints: N``; normalisation statistics included as buffers),
``model.json``, ``label_encoder.txt``, ``scores.json`` and a model card ``README.md``: a folder that can be
pushed to a model hub as it is.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch
import yaml
from speechbrain.inference.interfaces import Pretrained

from cta_rnn.artifacts import (
    encoder_spec,
    read_label_encoder,
    read_model_spec,
    read_test_results,
    write_label_encoder,
    write_model_spec,
)
from cta_rnn.audio import load_audio
from cta_rnn.io_utils import atomic_write_json, atomic_write_text

HPARAMS = "hyperparams.yaml"


def is_fold_dir(path: Path) -> bool:
    """A training fold folder (``exp/.../fold<k>`` with ``save/``), as opposed to an exported model."""
    return (path / "model.json").is_file() and (path / "save").is_dir() and not (path / "model.ckpt").is_file()


class EmotionRecognizer(Pretrained):
    """Frozen encoder + trained head, on any audio file (any rate, any channel count).

    hparams: ``labels``, ``layers`` (trained on), ``encoder_spec`` (for :func:`cta_rnn.encoders.build_encoder`),
    ``frame_rate``;
    modules: ``model`` (a cta_rnn.models model whose normaliser holds its statistics).
    """

    HPARAMS_NEEDED = ["labels", "layers", "encoder_spec"]
    MODULES_NEEDED = ["model"]

    def __init__(self, *args: Any, encoder: Any = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.labels: list[str] = [str(lab) for lab in self.hparams.labels]
        self.model = self.mods.model
        spec = dict(self.hparams.encoder_spec)
        if encoder is None:
            from cta_rnn.encoders import build_encoder

            encoder = build_encoder(spec, device=self.device)
        self.encoder = encoder
        trained = list(getattr(self.hparams, "layers", spec["layers"]))
        if list(encoder.layers) != trained or int(encoder.dim) != int(self.model.input_dim):
            raise ValueError(
                f"encoder gives layers {list(encoder.layers)} x {encoder.dim}, the model was trained on "
                f"layers {trained} x {self.model.input_dim}"
            )

    @classmethod
    def from_hparams(cls, source: str | os.PathLike, hparams_file: str = HPARAMS, **kwargs: Any) -> EmotionRecognizer:
        """SpeechBrain's loader; a training fold folder is exported into ``savedir`` first."""
        src = Path(source)
        if src.is_dir() and is_fold_dir(src):
            savedir = Path(kwargs.get("savedir") or tempfile.mkdtemp(prefix="cta_rnn_model_"))
            export_fold(src, savedir, force=True, allow_unfinished=kwargs.pop("allow_unfinished", False))
            source, kwargs["savedir"] = savedir, savedir
        return super().from_hparams(source=str(source), hparams_file=hparams_file, **kwargs)

    @classmethod
    def from_dir(
        cls,
        path: str | os.PathLike,
        device: str = "cpu",
        encoder: Any = None,
        encoder_overrides: dict[str, Any] | None = None,
        allow_unfinished: bool = False,
    ) -> EmotionRecognizer:
        """Load an exported folder or a finished experiment fold (``exp/.../fold<k>``) in place."""
        from cta_rnn.checkpoint import load_fold_model
        from cta_rnn.models import build_model

        path = Path(path)
        spec = read_model_spec(path)
        if (path / "model.ckpt").is_file():
            model = build_model(spec)
            model.load_state_dict(torch.load(path / "model.ckpt", map_location="cpu", weights_only=True))
        else:
            model, spec = load_fold_model(path, allow_unfinished=allow_unfinished)
        labels = read_label_encoder(path / "label_encoder.txt")
        if labels != list(spec["labels"]):
            raise ValueError(f"{path}: label_encoder.txt {labels} does not match model.json labels {spec['labels']}")
        hparams = inference_hparams(spec, encoder_overrides)
        return cls(modules={"model": model}, hparams=hparams, run_opts={"device": device}, encoder=encoder)

    def load_audio(self, path: str | os.PathLike, savedir: str | None = None) -> torch.Tensor:
        """Any readable audio file as a mono waveform at the encoder's rate (soundfile, resampled)."""
        del savedir
        return load_audio(path, self.encoder.sample_rate)

    @torch.no_grad()
    def features(self, wavs: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Encoder hidden states (B, L, T, D) and valid frame counts."""
        hidden, frames = self.encoder.encode(wavs.to(self.device), lengths.to(self.device))
        return hidden.float(), frames

    @staticmethod
    def speaker_stats(feats: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """(mean, std) over the frames of one speaker's utterances (each (L, T, D)): for ``stats=`` below."""
        from cta_rnn.normalisation import running_stats

        return running_stats(x.transpose(0, 1) for x in feats)

    @torch.no_grad()
    def predict_features(
        self, hidden: torch.Tensor, frames: torch.Tensor, stats: tuple[torch.Tensor, torch.Tensor] | None = None
    ) -> dict[str, Any]:
        """Run the head on encoder features: labels, probabilities (B, C), attention.

        ``stats``: the speaker's own (mean, std) (speaker-normalised models); None = the average training speaker.
        """
        speaker_idx = None
        if stats is not None and self.model.normalizer.mode == "speaker":
            self.model.normalizer.set_speakers({"speaker": stats})
            speaker_idx = torch.zeros(hidden.shape[0], dtype=torch.long)
        lengths = frames.float() / hidden.shape[2]
        logits, att = self.model(hidden.to(self.device), lengths.to(self.device), speaker_idx, return_attention=True)
        probs = torch.softmax(logits.float(), -1).cpu()
        return {
            "labels": [self.labels[i] for i in probs.argmax(1)],
            "probs": probs,
            "channel": att["channel"].cpu(),
            "temporal": att["temporal"].cpu(),
            "frames": frames.cpu(),
        }

    def predict_batch(
        self, wavs: torch.Tensor, lengths: torch.Tensor, stats: tuple[torch.Tensor, torch.Tensor] | None = None
    ) -> dict[str, Any]:
        """A padded batch (B, samples) at the encoder's rate with relative lengths -> labels, probs, attention."""
        hidden, frames = self.features(wavs, lengths)
        return self.predict_features(hidden, frames, stats)

    def classify_batch(
        self, wavs: torch.Tensor, wav_lens: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, list[str]]:
        """SpeechBrain's classifier contract: (probabilities (B, C), best score (B,), index (B,), labels)."""
        if wav_lens is None:
            wav_lens = torch.ones(wavs.shape[0])
        out = self.predict_batch(wavs, wav_lens)
        score, index = out["probs"].max(-1)
        return out["probs"], score, index, out["labels"]

    def classify_file(self, path: str | os.PathLike) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, list[str]]:
        """One audio file -> (probabilities (1, C), score, index, [label]), like ``EncoderClassifier.classify_file``."""
        return self.classify_batch(self.load_audio(path)[None])

    def forward(self, wavs: torch.Tensor, wav_lens: torch.Tensor | None = None) -> tuple:
        """Same as :meth:`classify_batch`."""
        return self.classify_batch(wavs, wav_lens)

    def predict_file(
        self, path: str | os.PathLike, stats: tuple[torch.Tensor, torch.Tensor] | None = None
    ) -> dict[str, Any]:
        """One file (any rate/channels; long files are chunked by the encoder) -> label, probs, attention."""
        wav = self.load_audio(path)
        out = self.predict_batch(wav[None], torch.ones(1), stats)
        return {
            "file": str(path),
            "label": out["labels"][0],
            "probs": dict(zip(self.labels, out["probs"][0].tolist())),
            "channel": out["channel"][0],
            "temporal": out["temporal"][0, : int(out["frames"][0])],
        }


def inference_hparams(spec: dict[str, Any], encoder_overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """The plain hparams an EmotionRecognizer needs, from a ``model.json`` spec."""
    return {
        "labels": list(spec["labels"]),
        "layers": list(spec["layers"]),
        "frame_rate": float(spec["frame_rate"]),
        "encoder_spec": encoder_spec(spec.get("encoder") or {}, spec["layers"], encoder_overrides),
    }


def hyperparams_yaml(spec: dict[str, Any]) -> str:
    """The exported ``hyperparams.yaml``: SpeechBrain's inference convention (modules + pretrainer)."""
    plain = yaml.safe_dump(inference_hparams(spec), sort_keys=False)
    model_args = {
        "num_layers": int(spec["num_layers"]),
        "input_dim": int(spec["dim"]),
        "num_classes": len(spec["labels"]),
        "normalization": spec.get("normalization", "global"),
        **(spec.get("model_kwargs") or {}),
    }
    args = yaml.safe_dump(model_args, sort_keys=False).strip().replace("\n", "\n    ")
    return (
        "# CTA-RNN speech emotion recognizer (written by `cta-rnn export`). Load with\n"
        "#   EmotionRecognizer.from_hparams(source=<this folder>, savedir=<a folder>)\n"
        f"{plain}\n"
        f"model: !new:cta_rnn.models.{spec['model_class']}\n    {args}\n\n"
        "modules:\n    model: !ref <model>\n\n"
        "pretrainer: !new:speechbrain.utils.parameter_transfer.Pretrainer\n"
        "    loadables:  # fetched as <source>/<name>.ckpt\n        model: !ref <model>\n"
    )


def export_fold(
    fold_dir: str | os.PathLike, out_dir: str | os.PathLike, force: bool = False, allow_unfinished: bool = False
) -> Path:
    """Write a self-contained model folder from a finished fold (atomically: temp folder + rename)."""
    from cta_rnn.checkpoint import load_fold_model

    fold_dir, out_dir = Path(fold_dir), Path(out_dir)
    if out_dir.exists() and any(out_dir.iterdir()) and not force:
        raise FileExistsError(f"{out_dir} exists (use --force to replace it)")
    model, spec = load_fold_model(fold_dir, allow_unfinished=allow_unfinished)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        torch.save(model.state_dict(), tmp / "model.ckpt")
        write_model_spec(tmp, spec)
        write_label_encoder(tmp / "label_encoder.txt", read_label_encoder(fold_dir / "label_encoder.txt"))
        atomic_write_text(tmp / HPARAMS, hyperparams_yaml(spec))
        scores = read_test_results(fold_dir) or {}
        if scores:
            atomic_write_json(tmp / "scores.json", scores)
        atomic_write_text(tmp / "README.md", model_card(fold_dir, spec, scores))
        if out_dir.exists():
            shutil.rmtree(out_dir)
        os.replace(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out_dir


def tested_weights(scores: dict[str, Any]) -> str:
    """Which checkpoint(s) the tested weights are, from test_results.json."""
    epochs = scores.get("averaged_epochs") or []
    if len(epochs) > 1:
        return f"average of the {len(epochs)} best validation-UA checkpoints, epochs {', '.join(map(str, epochs))}"
    return f"best validation UA, epoch {scores.get('best_epoch', '?')}"


def model_card(fold_dir: Path, spec: dict[str, Any], scores: dict[str, Any]) -> str:
    """A short README for an exported model (a model hub's card)."""
    test = scores.get("test", {})
    enc = spec.get("encoder") or {}
    lines = [
        "---",
        "library_name: speechbrain",
        "tags: [speech-emotion-recognition, cta-rnn, audio-classification]",
        "---",
        "",
        f"# {spec['model_class']} speech emotion recognizer",
        "",
        f"Exported from `{fold_dir}` ({tested_weights(scores)})."
        if scores
        else f"Exported from `{fold_dir}` **before its training finished** (`--allow_unfinished`): best checkpoint "
        "so far, never tested.",
        "",
        f"- labels: {', '.join(spec['labels'])}",
        f"- encoder: {enc.get('name') or enc.get('source')} ({enc.get('backend')}, source `{enc.get('source')}`, "
        f"revision `{enc.get('revision')}`), layers {spec['layers']} x {spec['dim']} at {spec['frame_rate']} Hz",
        f"- normalisation: {spec.get('normalization')}",
    ]
    if spec.get("max_train_seconds"):
        lines.append(
            f"- trained on {spec['max_train_seconds']} s crops: for much longer clips use `--segment` "
            "(predictions drift towards neutral as clips grow)"
        )
    if test:
        lines.append(
            f"- held-out test: WA {100 * test['WA']:.2f} %, UA {100 * test['UA']:.2f} %, "
            f"macro-F1 {100 * test['F1']:.2f} % ({scores.get('n', {}).get('test', '?')} utterances)"
        )
    lines += [
        "",
        "```python",
        "from cta_rnn.inference import EmotionRecognizer",
        'rec = EmotionRecognizer.from_hparams(source="<this folder>", savedir="pretrained/ser")',
        'probs, score, index, label = rec.classify_file("speech.wav")',
        "```",
        "",
        "or `cta-rnn predict --model <this folder> speech.wav`.",
        "",
    ]
    return "\n".join(lines)
