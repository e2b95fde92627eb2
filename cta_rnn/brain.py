"""EmotionBrain: the SpeechBrain Brain that trains and tests a layer-wise SER head on dumped embeddings."""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import speechbrain as sb
import torch
import torch.nn.functional as F
from speechbrain.utils.distributed import if_main_process

from cta_rnn.artifacts import predictions_frame, write_predictions
from cta_rnn.checkpoint import best_checkpoints, best_model_state
from cta_rnn.dimensional import ccc_loss, dimension_scores, mean_ccc, mse_loss
from cta_rnn.io_utils import atomic_write_text, epoch_seed
from cta_rnn.metrics import classification_scores
from cta_rnn.models import split_outputs

COMPLETE = "COMPLETE"
"""Marker file written into a checkpoint folder once SpeechBrain has finished saving it."""


def mark_complete(ckpt: Path) -> None:
    """Write ``COMPLETE`` into a checkpoint whose files are all saved, listing them (once per checkpoint)."""
    marker = ckpt / COMPLETE
    if not marker.exists():
        names = sorted(f.name for f in ckpt.iterdir() if f.name != COMPLETE and not f.name.startswith("."))
        atomic_write_text(marker, "".join(f"{n}\n" for n in names))


def is_torn(ckpt: Path) -> bool:
    """A checkpoint a kill interrupted: no ``COMPLETE`` marker (killed mid-save), or a file the marker lists is
    gone (killed while SpeechBrain deleted it as no longer among the best). An empty marker (older runs) lists
    nothing to check."""
    marker = ckpt / COMPLETE
    if not marker.is_file():
        return True
    return any(not (ckpt / name).exists() for name in marker.read_text(encoding="utf-8").split())


def remove_torn_checkpoints(save_folder: str | Path) -> list[str]:
    """Delete checkpoint folders a kill interrupted (:func:`is_torn`); returns their names.

    SpeechBrain writes a checkpoint's CKPT.yaml before its parameter files, and deletes a checkpoint that drops
    out of the best file by file: a process killed during either leaves a folder that looks valid but cannot be
    loaded.
    """
    removed = []
    for ckpt in sorted(Path(save_folder).glob("CKPT+*")):
        if ckpt.is_dir() and is_torn(ckpt):
            shutil.rmtree(ckpt)
            removed.append(ckpt.name)
    return removed


class EmotionBrain(sb.Brain):
    """Brain for :class:`cta_rnn.feature_cache.Batch` es and one emotion label per utterance.

    Expects ``modules.model`` (a cta_rnn.models model) and hparams ``labels``; with a regression head (task
    ``dimensional`` / ``both``) ``dimensions``, ``dimension_loss``, ``dimension_weight`` and batches with
    ``targets``; ``select_key`` (``UA`` or ``CCC``) is the validation metric that keeps checkpoints; for training also
    ``epoch_counter`` (EpochCounterWithStopper, direction max), ``train_logger``, ``lr_patience``,
    ``lr_factor``, ``seed``; optional ``class_weights`` tensor, ``layer_ids`` and ``predictions_dir``
    (where the test stage writes predictions.csv). ``train_batches`` (the training BatchDataset) is
    re-planned at the start of every epoch.
    """

    train_batches = None
    evaluating = "test"
    tested_checkpoints = 1
    """How many checkpoints the tested model was made of (set when evaluation starts; at most ``averaged``)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.timing: dict[str, float] = {"train_steps_s": 0.0, "eval_batches_s": 0.0, "checkpoints_s": 0.0}
        """Where a fold's time goes (seconds): training steps, evaluation batches, checkpoint saves."""

    def fit_batch(self, batch: Any) -> torch.Tensor:
        """SpeechBrain's training step, timed (``timing["train_steps_s"]``)."""
        start = time.perf_counter()
        loss = super().fit_batch(batch)
        self.timing["train_steps_s"] += time.perf_counter() - start
        return loss

    def evaluate_batch(self, batch: Any, stage: sb.Stage) -> torch.Tensor:
        """SpeechBrain's evaluation step, timed (``timing["eval_batches_s"]``)."""
        start = time.perf_counter()
        loss = super().evaluate_batch(batch, stage)
        self.timing["eval_batches_s"] += time.perf_counter() - start
        return loss

    def init_optimizers(self) -> None:
        """Adam plus ReduceLROnPlateau on validation UA, both checkpointed."""
        super().init_optimizers()
        self.lr_scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
            self.optimizer, mode="max", factor=self.hparams.lr_factor, patience=self.hparams.lr_patience
        )
        if self.checkpointer is not None:
            self.checkpointer.add_recoverable("lr_scheduler", self.lr_scheduler)

    def on_evaluate_start(self, max_key: str | None = None, min_key: str | None = None) -> None:
        """Recover the best checkpoint, then (``average_checkpoints`` > 1) average the model over the N best."""
        super().on_evaluate_start(max_key=max_key, min_key=min_key)
        self.tested_checkpoints = 1
        if self.averaged > 1 and self.checkpointer is not None:
            key = self.select_key
            self.tested_checkpoints = max(1, len(best_checkpoints(self.checkpointer, self.averaged, key)))
            self.model.load_state_dict(best_model_state(self.checkpointer, self.averaged, str(self.device), key))

    def compute_forward(self, batch: Any, stage: sb.Stage) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Outputs (class logits, then dimension values) and attention weights for a batch."""
        batch = batch.to(self.device)
        feats = batch.feats.permute(0, 2, 1, 3)  # (B, T, L, D) -> (B, L, T, D), still fp16
        return self.modules.model(feats, batch.lengths, batch.speakers, return_attention=True)

    @property
    def model(self) -> torch.nn.Module:
        """The model (under DDP: the wrapped one)."""
        return getattr(self.modules.model, "module", self.modules.model)

    @property
    def select_key(self) -> str:
        """The validation metric that keeps, averages and schedules: ``UA`` or ``CCC`` (mean over dimensions)."""
        return str(getattr(self.hparams, "select_key", "UA"))

    def compute_objectives(self, predictions: Any, batch: Any, stage: sb.Stage) -> torch.Tensor:
        """Cross-entropy (optionally class-weighted) and/or the dimension loss (1 - CCC or MSE on standardised
        values, unrated utterances masked), ``dimension_weight`` times the latter with both; collects predictions
        outside training."""
        out, att = predictions
        logits, dims = split_outputs(out, self.model.num_classes)
        targets = batch.labels.to(self.device)
        losses = []
        if logits.shape[1]:
            weight = getattr(self.hparams, "class_weights", None)
            smoothing = float(getattr(self.hparams, "label_smoothing", 0.0)) if stage == sb.Stage.TRAIN else 0.0
            losses.append(
                F.cross_entropy(
                    logits,
                    targets,
                    weight=None if weight is None else weight.to(self.device),
                    label_smoothing=smoothing,
                )
            )
        rated = None
        if dims.shape[1]:
            rated = batch.targets.to(self.device)
            if getattr(self.hparams, "dimension_loss", "ccc") == "mse":
                dim_loss = mse_loss(dims.float(), rated, self.model.regressor.std)
            else:
                dim_loss = ccc_loss(dims.float(), rated)
            losses.append(dim_loss * (float(getattr(self.hparams, "dimension_weight", 1.0)) if losses else 1.0))
        loss = losses[0] if len(losses) == 1 else losses[0] + losses[1]
        if stage != sb.Stage.TRAIN:
            self.records.append(
                (
                    list(batch.ids),
                    targets.cpu(),
                    torch.softmax(logits.detach().float(), -1).cpu(),
                    att["channel"].detach().cpu(),
                    dims.detach().float().cpu(),
                    rated.cpu() if rated is not None else torch.zeros(len(batch.ids), 0),
                )
            )
        return loss

    def on_stage_start(self, stage: sb.Stage, epoch: int | None = None) -> None:
        """Reset collected predictions; reseed per epoch so a resumed run repeats the same randomness."""
        self.records: list[tuple] = []
        if stage == sb.Stage.TRAIN and epoch is not None:
            if self.train_batches is not None:
                self.train_batches.set_epoch(epoch)
            torch.manual_seed(epoch_seed(self.hparams.seed, epoch))
            np.random.seed(epoch_seed(self.hparams.seed, epoch) % 2**32)

    def collected(self) -> tuple[list[str], np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """IDs, true class indices, probabilities (N, C), channel attention (N, L), predicted and true dimension
        values (N, K; NaN: no rating) of the stage."""
        ids = [i for r in self.records for i in r[0]]
        y, probs, chan, dims, rated = (torch.cat([r[k] for r in self.records]).numpy() for k in range(1, 6))
        return ids, y, probs, chan, dims, rated

    def stage_scores(self) -> dict[str, Any]:
        """WA, UA, macro-F1 of the collected class predictions; ``CCC`` (the mean over dimensions) and
        ``dimensions`` (CCC, r, RMSE, n per dimension) of the collected dimension values."""
        _, y, probs, _, dims, rated = self.collected()
        out: dict[str, Any] = {}
        if probs.shape[1]:
            labels = list(range(len(self.hparams.labels)))
            s = classification_scores(y, probs.argmax(1), labels=labels)
            out.update(WA=s["wa"], UA=s["ua"], F1=s["macro_f1"])
        if dims.shape[1]:
            per_dim = dimension_scores(rated, dims, list(self.hparams.dimensions))
            out.update(CCC=mean_ccc(per_dim), dimensions=per_dim)
        return out

    def on_stage_end(self, stage: sb.Stage, stage_loss: float, epoch: int | None = None) -> None:
        """Log, schedule the learning rate, stop early, keep the best checkpoint by UA, write predictions."""
        if stage == sb.Stage.TRAIN:
            self.train_stats = {"loss": stage_loss}
            return
        stats = {"loss": stage_loss, **self.stage_scores()}
        if stage == sb.Stage.VALID:
            selected = stats[self.select_key]
            if selected != selected:  # NaN: no rated validation utterance
                raise ValueError(f"validation {self.select_key} is undefined (no rated validation utterance)")
            self.lr_scheduler.step(selected)
            self.hparams.epoch_counter.update_metric(selected)
            lr = self.optimizer.param_groups[0]["lr"]
            self.hparams.train_logger.log_stats(
                stats_meta={"epoch": epoch, "lr": lr}, train_stats=self.train_stats, valid_stats=loggable(stats)
            )
            start = time.perf_counter()
            meta = {k: stats[k] for k in ("UA", "WA", "CCC") if k in stats}
            self.checkpointer.save_and_keep_only(
                meta={**meta, "loss": stats["loss"], "epoch": epoch},
                max_keys=[self.select_key],
                num_to_keep=self.averaged,
            )
            if if_main_process():  # SpeechBrain writes CKPT.yaml first: mark checkpoints whose files are all there
                for ckpt in self.checkpointer.list_checkpoints():
                    mark_complete(ckpt.path)
            self.timing["checkpoints_s"] += time.perf_counter() - start
        elif self.evaluating == "valid":
            self.valid_stats = stats
        else:
            if getattr(self.hparams, "train_logger", None) is not None:
                self.hparams.train_logger.log_stats(
                    stats_meta={"Epoch loaded": self.hparams.epoch_counter.current, **self.tested_meta()},
                    valid_stats=loggable(getattr(self, "valid_stats", None)),
                    test_stats=loggable(stats),
                )
            self.test_stats = stats
            if if_main_process() and getattr(self.hparams, "predictions_dir", None):
                write_predictions(self.hparams.predictions_dir, self.predictions_frame())

    def evaluate(self, test_set: Any, max_key: str | None = None, min_key: str | None = None, **kwargs: Any) -> Any:
        """Brain.evaluate; ``split="valid"`` scores the tested model on validation data (no log line, no
        predictions.csv), the default ``"test"`` logs the scores and writes the predictions."""
        self.evaluating = kwargs.pop("split", "test")
        return super().evaluate(test_set, max_key=max_key, min_key=min_key, **kwargs)

    @property
    def averaged(self) -> int:
        """How many of the best checkpoints by validation UA are kept and averaged into the tested model."""
        return max(1, int(getattr(self.hparams, "average_checkpoints", 1)))

    def tested_meta(self) -> dict[str, Any]:
        """How the tested model was made, for the training log: the number of checkpoints really averaged, and
        the number asked for when fewer existed (``2 of 5 asked``)."""
        if self.averaged == 1:
            return {}
        n = self.tested_checkpoints
        return {"averaged checkpoints": n if n == self.averaged else f"{n} of {self.averaged} asked"}

    def predictions_frame(self) -> pd.DataFrame:
        """Predictions of the collected utterances in the predictions.csv contract."""
        ids, y, probs, chan, dims, rated = self.collected()
        labels = list(self.hparams.labels)
        layers = getattr(self.hparams, "layer_ids", range(chan.shape[1]))
        names = list(self.hparams.dimensions) if dims.shape[1] else []
        return predictions_frame(ids, [labels[i] for i in y], probs, chan, labels, layers, names, rated, dims)


def loggable(stats: dict[str, Any] | None) -> dict[str, Any] | None:
    """Stage statistics for the training log: per-dimension CCC flattened (``CCC_arousal``), counts dropped."""
    if stats is None:
        return None
    flat = {k: v for k, v in stats.items() if k != "dimensions"}
    for name, s in (stats.get("dimensions") or {}).items():
        flat[f"CCC_{name}"] = s["CCC"]
    return flat
