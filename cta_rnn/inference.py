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

Where a fold is exported (``export_fold``, and ``from_hparams`` on a fold folder, into its ``savedir``) only a new
folder, an empty one or an earlier export is written; an earlier export is replaced only with ``force`` (what
``from_hparams`` does). An export is recognised by its file set: nothing but :data:`EXPORT_FILES`, among them a
``hyperparams.yaml`` that starts with :data:`EXPORT_HEADER`. Any other folder, the fold itself, a folder inside it
or one that contains it is refused with one line (:class:`TargetRefused`) and left as it was. The labels of
``hyperparams.yaml``, ``label_encoder.txt`` and ``model.json`` must agree, order included, or loading is refused.
Silent clips and clips far from the training crop length give an :class:`UnreliableLabelWarning` (the checks of
``cta-rnn predict``).
"""

from __future__ import annotations

import filecmp
import os
import shutil
import tempfile
import warnings
from pathlib import Path
from typing import Any

import pandas as pd
import torch
import yaml
from speechbrain.inference.interfaces import Pretrained

from cta_rnn import encoders
from cta_rnn.artifacts import (
    encoder_spec,
    read_label_encoder,
    read_model_spec,
    read_test_results,
    write_label_encoder,
    write_model_spec,
)
from cta_rnn.audio import load_audio
from cta_rnn.checkpoint import load_fold_model
from cta_rnn.encoders.base import LayerwiseEncoder
from cta_rnn.io_utils import _umask, atomic_write_json, atomic_write_text, one_line
from cta_rnn.models import build_model, head_sizes, split_outputs
from cta_rnn.normalization import running_stats
from cta_rnn.predict import adapt_warning, check_model_dir, clip_warnings
from cta_rnn.timeline import analyse

HPARAMS = "hyperparams.yaml"
EXPORT_FILES = ("hyperparams.yaml", "model.ckpt", "model.json", "label_encoder.txt", "scores.json", "README.md")
"""Everything an export folder holds: ``--force`` replaces a folder of these files only."""
EXPORT_HEADER = "# CTA-RNN speech emotion recognizer (written by `cta-rnn export`)"
"""First line of an exported ``hyperparams.yaml``: with the file set, what marks a folder as an export."""


class TargetRefused(ValueError):
    """An output folder that would destroy something (the source fold, or files that are not an export)."""


class UnreliableLabelWarning(UserWarning):
    """A label that means little: silent clip, clip far shorter or much longer than the training crops, or
    speaker statistics from too little speech."""


def is_fold_dir(path: Path) -> bool:
    """A training fold folder (``exp/.../fold<k>`` with ``save/``), as opposed to an exported model."""
    return (path / "model.json").is_file() and (path / "save").is_dir() and not (path / "model.ckpt").is_file()


def foreign_entries(path: Path) -> list[str]:
    """Entries of a folder that an export does not hold (other names, sub-folders), sorted."""
    with os.scandir(path) as entries:
        return sorted(e.name for e in entries if e.name not in EXPORT_FILES or e.is_dir(follow_symlinks=False))


def is_export_dir(path: Path) -> bool:
    """A folder written by ``cta-rnn export``: export file names only, with a ``hyperparams.yaml`` of ours."""
    if not path.is_dir() or foreign_entries(path):
        return False
    try:
        with open(path / HPARAMS, encoding="utf-8") as f:
            return f.readline().startswith(EXPORT_HEADER)
    except (OSError, UnicodeDecodeError):
        return False


def _contains(outer: Path, inner: Path) -> bool:
    """Whether resolved ``inner`` is ``outer`` or lies below it."""
    return outer == inner or outer in inner.parents


def check_export_target(fold_dir: Path, out_dir: Path, force: bool) -> bool:
    """Refuse an export target that would destroy anything; True when it holds an earlier export to replace.

    Refused (:class:`TargetRefused`): the fold itself, a folder inside it or containing it, a file, a folder with
    anything but an earlier export's files. An earlier export needs ``force`` (else FileExistsError).
    """
    src, dst = fold_dir.resolve(), out_dir.resolve()
    if src == dst:
        raise TargetRefused(f"{out_dir}: is the source fold itself; exporting there would delete it")
    if _contains(dst, src):
        raise TargetRefused(f"{out_dir}: contains the source fold {fold_dir}; exporting there would delete it")
    if _contains(src, dst):
        raise TargetRefused(f"{out_dir}: lies inside the source fold {fold_dir}; export beside it, not into it")
    if out_dir.exists() and not out_dir.is_dir():
        raise TargetRefused(f"{out_dir}: is a file, not a folder; nothing was written")
    ancestor = dst.parent
    while not ancestor.exists():
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise TargetRefused(f"{out_dir}: {ancestor} is a file, not a folder; nothing was written")
    if not out_dir.exists() or not any(out_dir.iterdir()):
        return False
    if not is_export_dir(out_dir):
        names = foreign_entries(out_dir)
        listed = ", ".join(names[:5]) + (", ..." if len(names) > 5 else "")
        what = (
            f"holds files that are not part of a cta-rnn export ({listed})"
            if names
            else f"is not a cta-rnn export (no {HPARAMS} starting with the export header)"
        )
        raise TargetRefused(f"{out_dir}: {what}; nothing was changed: choose a new or empty folder")
    if not force:
        raise FileExistsError(f"{out_dir}: holds an earlier export (use --force to replace it)")
    return True


class _PlainLoader(yaml.SafeLoader):
    """YAML loader that reads HyperPyYAML tags (``!new:``, ``!ref``) as None: for the plain keys only."""


_PlainLoader.add_multi_constructor("!", lambda loader, suffix, node: None)


def hparams_labels(path: Path) -> list[str]:
    """The ``labels`` list of a ``hyperparams.yaml`` (read without building anything)."""
    try:
        doc = yaml.load(path.read_text(encoding="utf-8"), Loader=_PlainLoader)
    except yaml.YAMLError as err:
        raise ValueError(f"{path}: not valid YAML ({one_line(err)})") from None
    labels = doc.get("labels") if isinstance(doc, dict) else None
    if not isinstance(labels, list) or not labels:
        raise ValueError(f"{path}: no 'labels' list")
    return [str(lab) for lab in labels]


def check_labels(path: Path, hparams_file: str = HPARAMS, overrides: dict[str, Any] | None = None) -> list[str]:
    """The labels of ``label_encoder.txt``, refused unless ``model.json`` and ``hyperparams.yaml`` (with
    ``overrides``) give the same ones in the same order."""
    encoder_file = path / "label_encoder.txt"
    labels = read_label_encoder(encoder_file)
    if (path / "model.json").is_file():
        spec_labels = [str(lab) for lab in read_model_spec(path)["labels"]]
        if labels != spec_labels:
            raise ValueError(f"{path}: label_encoder.txt {labels} does not match model.json labels {spec_labels}")
    hp = path / hparams_file
    if hp.is_file():
        given = hparams_labels(hp)
        if overrides and "labels" in overrides:
            given, hp = [str(lab) for lab in overrides["labels"]], Path(f"{hp} (overrides)")
        if given != labels:
            raise ValueError(
                f"{hp}: labels {given} differ from {encoder_file} {labels} (order included): the outputs would be "
                "named wrongly; restore the labels or export the fold again"
            )
    return labels


def check_weights(path: Path) -> None:
    """A model folder must hold its weights: ``model.ckpt`` (export) or ``save/`` (training fold)."""
    if not (path / "model.ckpt").is_file() and not (path / "save").is_dir():
        raise FileNotFoundError(
            f"{path / 'model.ckpt'}: missing: this model folder has no weights (an exported model needs model.ckpt, "
            "a training fold its save/ checkpoints); copy or export it again"
        )


def check_savedir(source: Path, savedir: str | os.PathLike | None, hparams_file: str) -> None:
    """SpeechBrain uses files already in ``savedir`` instead of the source's: those must be the source's own."""
    if savedir is None:
        return
    for name in (hparams_file, "model.ckpt"):
        have, want = Path(savedir) / name, source / name
        if have.exists() and not (os.path.samefile(have, want) or filecmp.cmp(have, want, shallow=False)):
            raise TargetRefused(
                f"{have}: savedir already holds another model's {name}, which SpeechBrain would load instead of "
                f"{want}; pass a new or empty savedir"
            )


class EmotionRecognizer(Pretrained):
    """Frozen encoder + trained head, on any audio file (any rate, any channel count).

    hparams: ``labels``, ``layers`` (trained on), ``encoder_spec`` (for :func:`cta_rnn.encoders.build_encoder`),
    ``frame_rate``; ``dimensions`` for a model with a regression head (arousal, valence, ... on the training
    corpus's scale). A dimensional-only model has no classes: :attr:`labels` is empty, predictions carry only
    ``dimensions``.
    modules: ``model`` (a cta_rnn.models model whose normaliser holds its statistics).
    """

    HPARAMS_NEEDED = ["labels", "layers", "encoder_spec"]
    MODULES_NEEDED = ["model"]

    def __init__(self, *args: Any, encoder: LayerwiseEncoder | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.model = self.mods.model
        self.labels: list[str] = [str(lab) for lab in self.hparams.labels] if self.model.num_classes else []
        self.dimensions: list[str] = [str(d) for d in (getattr(self.hparams, "dimensions", None) or [])]
        spec = dict(self.hparams.encoder_spec)
        if encoder is None:
            encoder = encoders.build_encoder(spec, device=self.device)
        self.encoder = encoder
        self.crop: float | None = getattr(self.hparams, "max_train_seconds", None)
        trained = list(getattr(self.hparams, "layers", spec["layers"]))
        if list(encoder.layers) != trained or int(encoder.dim) != int(self.model.input_dim):
            raise ValueError(
                f"encoder gives layers {list(encoder.layers)} x {encoder.dim}, the model was trained on "
                f"layers {trained} x {self.model.input_dim}"
            )

    @classmethod
    def from_hparams(cls, source: str | os.PathLike, hparams_file: str = HPARAMS, **kwargs: Any) -> EmotionRecognizer:
        """SpeechBrain's loader; a training fold folder is exported into ``savedir`` first.

        That ``savedir`` must be new, empty or an earlier export (replaced); it may not be, contain or lie inside
        the fold (:class:`TargetRefused`, nothing touched). For an exported source, a ``savedir`` holding another
        model's ``hyperparams.yaml``/``model.ckpt`` is refused (SpeechBrain would load those). Local sources are
        checked before anything is built: weights present, labels of the three label files equal, order included.
        """
        allow_unfinished = kwargs.pop("allow_unfinished", False)
        src = Path(source)
        if src.is_dir():
            if is_fold_dir(src):
                savedir = Path(kwargs.get("savedir") or tempfile.mkdtemp(prefix="cta_rnn_model_"))
                check_labels(src, hparams_file)
                export_fold(src, savedir, force=True, allow_unfinished=allow_unfinished)
                src = savedir
                source, kwargs["savedir"] = savedir, savedir
            else:
                if not (src / hparams_file).is_file():
                    check_model_dir(src)
                    raise FileNotFoundError(f"{src / hparams_file}: missing: not an exported model folder")
                check_weights(src)
                check_savedir(src, kwargs.get("savedir"), hparams_file)
            check_labels(src, hparams_file, kwargs.get("overrides"))
        return super().from_hparams(source=str(source), hparams_file=hparams_file, **kwargs)

    @classmethod
    def from_dir(
        cls,
        path: str | os.PathLike,
        device: str = "cpu",
        encoder: LayerwiseEncoder | None = None,
        encoder_overrides: dict[str, Any] | None = None,
        allow_unfinished: bool = False,
    ) -> EmotionRecognizer:
        """Load an exported folder or a finished experiment fold (``exp/.../fold<k>``) in place."""
        path = Path(path)
        spec = read_model_spec(path)
        check_weights(path)
        check_labels(path)
        if (path / "model.ckpt").is_file():
            model = build_model(spec)
            model.load_state_dict(torch.load(path / "model.ckpt", map_location="cpu", weights_only=True))
        else:
            model, spec = load_fold_model(path, allow_unfinished=allow_unfinished)
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

    def warn_unreliable(self, path: str | os.PathLike, wav: torch.Tensor, segment: float | None = None) -> list[str]:
        """Warn (:class:`UnreliableLabelWarning`) about a clip as ``cta-rnn predict`` does; returns the messages."""
        messages = clip_warnings(Path(path), wav, self.encoder.sample_rate, self.crop, segment)
        for msg in messages:
            warnings.warn(msg, UnreliableLabelWarning, stacklevel=3)
        return messages

    def speaker_stats(self, feats: list[torch.Tensor], warn: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
        """(mean, std) over the frames of one speaker's utterances (each (L, T, D)): for ``stats=`` below.

        Too little speech for a speaker's statistics (:func:`cta_rnn.predict.adapt_warning`) is warned about.
        """
        if warn:
            seconds = sum(int(x.shape[1]) for x in feats) / float(self.hparams.frame_rate)
            msg = adapt_warning(len(feats), seconds, len(self.labels), "speaker_stats", "predict with stats=None")
            if msg:
                warnings.warn(msg, UnreliableLabelWarning, stacklevel=2)
        return running_stats(x.transpose(0, 1) for x in feats)

    @torch.no_grad()
    def predict_features(
        self, hidden: torch.Tensor, frames: torch.Tensor, stats: tuple[torch.Tensor, torch.Tensor] | None = None
    ) -> dict[str, Any]:
        """Run the head on encoder features: labels, probabilities (B, C), ``dimensions`` ({name: (B,)} on the
        training corpus's scale; empty for a categorical model), attention.

        ``stats``: the speaker's own (mean, std) (speaker-normalised models); None = the average training speaker.
        """
        speaker_idx = None
        if stats is not None and self.model.normalizer.mode == "speaker":
            self.model.normalizer.set_speakers({"speaker": stats})
            speaker_idx = torch.zeros(hidden.shape[0], dtype=torch.long)
        lengths = frames.float() / hidden.shape[2]
        out, att = self.model(hidden.to(self.device), lengths.to(self.device), speaker_idx, return_attention=True)
        logits, dims = split_outputs(out.float(), self.model.num_classes)
        probs = torch.softmax(logits, -1).cpu()
        return {
            "labels": [self.labels[i] for i in probs.argmax(1)] if self.labels else [""] * len(probs),
            "probs": probs,
            "dimensions": {name: dims[:, k].cpu() for k, name in enumerate(self.dimensions)},
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
        if not self.labels:
            raise ValueError(
                f"this model predicts {', '.join(self.dimensions)} only (task dimensional), no classes: use "
                "predict_file / predict_batch"
            )
        if wav_lens is None:
            wav_lens = torch.ones(wavs.shape[0])
        out = self.predict_batch(wavs, wav_lens)
        score, index = out["probs"].max(-1)
        return out["probs"], score, index, out["labels"]

    def classify_file(self, path: str | os.PathLike) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, list[str]]:
        """One audio file -> (probabilities (1, C), score, index, [label]), like ``EncoderClassifier.classify_file``.

        A silent clip, or one far shorter or much longer than the training crops, is warned about.
        """
        wav = self.load_audio(path)
        self.warn_unreliable(path, wav)
        return self.classify_batch(wav[None])

    def forward(self, wavs: torch.Tensor, wav_lens: torch.Tensor | None = None) -> tuple:
        """Same as :meth:`classify_batch`."""
        return self.classify_batch(wavs, wav_lens)

    def predict_file(
        self, path: str | os.PathLike, stats: tuple[torch.Tensor, torch.Tensor] | None = None
    ) -> dict[str, Any]:
        """One file (any rate/channels; long files are chunked by the encoder) -> label, probs, dimensions
        ({name: value}), attention.

        Warns like :meth:`classify_file`.
        """
        wav = self.load_audio(path)
        self.warn_unreliable(path, wav)
        out = self.predict_batch(wav[None], torch.ones(1), stats)
        return {
            "file": str(path),
            "label": out["labels"][0],
            "probs": dict(zip(self.labels, out["probs"][0].tolist())),
            "dimensions": {name: float(v[0]) for name, v in out["dimensions"].items()},
            "channel": out["channel"][0],
            "temporal": out["temporal"][0, : int(out["frames"][0])],
        }

    def timeline(self, path: str | os.PathLike, **options: Any) -> pd.DataFrame:
        """Emotion over time in a long recording: one row per segment (start, end, speaker, label,
        prob_<label>..., confidence), read in blocks. Options (``vad``, ``window``, ``hop``, ``smooth``, ``rttm``,
        ``file_id``, ``adapt``, ``batch_size``) as :func:`cta_rnn.timeline.analyse`; its warnings are
        :class:`UnreliableLabelWarning`."""
        result = analyse(self, path, **options)
        for msg in result.warnings:
            warnings.warn(msg, UnreliableLabelWarning, stacklevel=2)
        return result.segments


def inference_hparams(spec: dict[str, Any], encoder_overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """The plain hparams an EmotionRecognizer needs, from a ``model.json`` spec."""
    _, dims = head_sizes(spec)
    return {
        "labels": list(spec["labels"]),
        **({"dimensions": list(spec["dimensions"])} if dims else {}),
        "layers": list(spec["layers"]),
        "frame_rate": float(spec["frame_rate"]),
        "max_train_seconds": spec.get("max_train_seconds"),
        "encoder_spec": encoder_spec(spec.get("encoder") or {}, spec["layers"], encoder_overrides),
    }


def hyperparams_yaml(spec: dict[str, Any]) -> str:
    """The exported ``hyperparams.yaml``: SpeechBrain's inference convention (modules + pretrainer)."""
    plain = yaml.safe_dump(inference_hparams(spec), sort_keys=False)
    classes, dims = head_sizes(spec)
    model_args = {
        "num_layers": int(spec["num_layers"]),
        "input_dim": int(spec["dim"]),
        "num_classes": classes,
        "normalization": spec.get("normalization", "global"),
        **({"num_dimensions": dims} if dims else {}),
        **(spec.get("model_kwargs") or {}),
    }
    args = yaml.safe_dump(model_args, sort_keys=False).strip().replace("\n", "\n    ")
    return (
        f"{EXPORT_HEADER}. Load with\n"
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
    """Write a self-contained model folder from a finished fold (atomically: temp folder + rename).

    ``out_dir`` is checked first (:func:`check_export_target`): only a new or empty folder, or with ``force`` an
    earlier export, is written; an earlier export is swapped out only once the new one is complete.
    """
    fold_dir, out_dir = Path(fold_dir), Path(out_dir)
    if (fold_dir / "model.ckpt").is_file():
        raise ValueError(f"{fold_dir}: is already an exported model (has model.ckpt); copy the folder instead")
    check_export_target(fold_dir, out_dir, force)
    model, spec = load_fold_model(fold_dir, allow_unfinished=allow_unfinished)
    target = out_dir.resolve() if out_dir.is_symlink() else out_dir
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    old = None
    try:
        os.chmod(tmp, 0o777 & ~_umask())
        torch.save(model.state_dict(), tmp / "model.ckpt")
        write_model_spec(tmp, spec)
        write_label_encoder(tmp / "label_encoder.txt", read_label_encoder(fold_dir / "label_encoder.txt"))
        atomic_write_text(tmp / HPARAMS, hyperparams_yaml(spec))
        scores = read_test_results(fold_dir) or {}
        if scores:
            atomic_write_json(tmp / "scores.json", scores)
        atomic_write_text(tmp / "README.md", model_card(fold_dir, spec, scores))
        if check_export_target(fold_dir, target, force):  # again: it may have changed while the fold loaded
            old = Path(tempfile.mkdtemp(prefix=f".{target.name}.old.", dir=target.parent))
            os.replace(target, old)  # onto an empty folder: a rename
        os.replace(tmp, target)
    except BaseException:
        if old is not None and not os.path.lexists(target):  # moved aside, not replaced: put it back
            restore, old = old, None  # never deleted, even if it cannot be put back
            os.replace(restore, target)
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    finally:
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)  # the earlier export (its symlinks are removed, not followed)
    return out_dir


def tested_weights(scores: dict[str, Any]) -> str:
    """Which checkpoint(s) the tested weights are, from test_results.json."""
    epochs = scores.get("averaged_epochs") or []
    key = scores.get("select_by", "UA")
    if len(epochs) > 1:
        return f"average of the {len(epochs)} best validation-{key} checkpoints, epochs {', '.join(map(str, epochs))}"
    return f"best validation {key}, epoch {scores.get('best_epoch', '?')}"


def model_card(fold_dir: Path, spec: dict[str, Any], scores: dict[str, Any]) -> str:
    """A short README for an exported model (a model hub's card)."""
    test = scores.get("test", {})
    enc = spec.get("encoder") or {}
    classes, dims = head_sizes(spec)
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
        f"- labels: {', '.join(spec['labels'])}" if classes else "- labels: none (task dimensional)",
        f"- encoder: {enc.get('name') or enc.get('source')} ({enc.get('backend')}, source `{enc.get('source')}`, "
        f"revision `{enc.get('revision')}`), layers {spec['layers']} x {spec['dim']} at {spec['frame_rate']} Hz",
        f"- normalisation: {spec.get('normalization')}",
    ]
    if spec.get("max_train_seconds"):
        lines.append(
            f"- trained on {spec['max_train_seconds']} s crops: labels of clips much longer than that are "
            "unreliable (the model never saw such lengths); use `--segment` for long recordings"
        )
    if dims:
        stats = spec.get("dimension_stats") or {}
        scale = ", ".join(f"{d} (training mean {stats[d][0]:.2f}, sd {stats[d][1]:.2f})" for d in stats)
        lines.append(
            f"- dimensions: {', '.join(spec['dimensions'])}, predicted on the rating scale of the training corpus "
            f"(IEMOCAP and MSP-IMPROV: 1-5 mean annotator ratings){': ' + scale if scale else ''}"
        )
    if "UA" in test:
        lines.append(
            f"- held-out test: WA {100 * test['WA']:.2f} %, UA {100 * test['UA']:.2f} %, "
            f"macro-F1 {100 * test['F1']:.2f} % ({scores.get('n', {}).get('test', '?')} utterances)"
        )
    for name, s in (test.get("dimensions") or {}).items():
        lines.append(
            f"- held-out test {name}: CCC {s['CCC']:.3f}, Pearson r {s['r']:.3f}, RMSE {s['RMSE']:.3f} (n={s['n']})"
        )
    lines += [
        "",
        "```python",
        "from cta_rnn.inference import EmotionRecognizer",
        'rec = EmotionRecognizer.from_hparams(source="<this folder>", savedir="pretrained/ser")',
        'probs, score, index, label = rec.classify_file("speech.wav")'
        if classes
        else 'dims = rec.predict_file("speech.wav")["dimensions"]',
        "```",
        "",
        "or `cta-rnn predict --model <this folder> speech.wav`.",
        "",
    ]
    return "\n".join(lines)
