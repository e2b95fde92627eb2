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
from cta_rnn.metrics import classification_scores

COMPLETE = "COMPLETE"
"""Marker file written into a checkpoint folder once SpeechBrain has finished saving it."""


def remove_torn_checkpoints(save_folder: str | Path) -> list[str]:
    """Delete checkpoint folders a kill interrupted mid-save (no COMPLETE marker); returns their names.

    SpeechBrain writes a checkpoint's CKPT.yaml before its parameter files, so a process killed during
    the save leaves a folder that looks valid but cannot be loaded.
    """
    removed = []
    for ckpt in sorted(Path(save_folder).glob("CKPT+*")):
        if ckpt.is_dir() and not (ckpt / COMPLETE).exists():
            shutil.rmtree(ckpt)
            removed.append(ckpt.name)
    return removed


class EmotionBrain(sb.Brain):
    """Brain for :class:`cta_rnn.feature_cache.Batch` es and one emotion label per utterance.

    Expects ``modules.model`` (a cta_rnn.models model) and hparams ``labels``; for training also
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
            from cta_rnn.checkpoint import best_checkpoints, best_model_state

            self.tested_checkpoints = max(1, len(best_checkpoints(self.checkpointer, self.averaged)))
            model = getattr(self.modules.model, "module", self.modules.model)  # under DDP: the wrapped model
            model.load_state_dict(best_model_state(self.checkpointer, self.averaged, str(self.device)))

    def compute_forward(self, batch: Any, stage: sb.Stage) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Logits and attention weights for a batch."""
        batch = batch.to(self.device)
        feats = batch.feats.permute(0, 2, 1, 3)  # (B, T, L, D) -> (B, L, T, D), still fp16
        return self.modules.model(feats, batch.lengths, batch.speakers, return_attention=True)

    def compute_objectives(self, predictions: Any, batch: Any, stage: sb.Stage) -> torch.Tensor:
        """Cross-entropy (optionally class-weighted); collects predictions outside training."""
        logits, att = predictions
        targets = batch.labels.to(self.device)
        weight = getattr(self.hparams, "class_weights", None)
        smoothing = float(getattr(self.hparams, "label_smoothing", 0.0)) if stage == sb.Stage.TRAIN else 0.0
        loss = F.cross_entropy(
            logits, targets, weight=None if weight is None else weight.to(self.device), label_smoothing=smoothing
        )
        if stage != sb.Stage.TRAIN:
            self.records.append(
                (
                    list(batch.ids),
                    targets.cpu(),
                    torch.softmax(logits.detach(), -1).cpu(),
                    att["channel"].detach().cpu(),
                )
            )
        return loss

    def on_stage_start(self, stage: sb.Stage, epoch: int | None = None) -> None:
        """Reset collected predictions; reseed per epoch so a resumed run repeats the same randomness."""
        self.records: list[tuple] = []
        if stage == sb.Stage.TRAIN and epoch is not None:
            if self.train_batches is not None:
                self.train_batches.set_epoch(epoch)
            torch.manual_seed(int(self.hparams.seed) * 1000 + int(epoch))
            np.random.seed((int(self.hparams.seed) * 1000 + int(epoch)) % 2**32)

    def collected(self) -> tuple[list[str], np.ndarray, np.ndarray, np.ndarray]:
        """IDs, true class indices, probabilities (N, C) and channel attention (N, L) of the stage."""
        ids = [i for r in self.records for i in r[0]]
        y = torch.cat([r[1] for r in self.records]).numpy()
        probs = torch.cat([r[2] for r in self.records]).numpy()
        chan = torch.cat([r[3] for r in self.records]).numpy()
        return ids, y, probs, chan

    def stage_scores(self) -> dict[str, float]:
        """WA, UA, macro-F1 of the collected predictions."""
        _, y, probs, _ = self.collected()
        labels = list(range(len(self.hparams.labels)))
        s = classification_scores(y, probs.argmax(1), labels=labels)
        return {"WA": s["wa"], "UA": s["ua"], "F1": s["macro_f1"]}

    def on_stage_end(self, stage: sb.Stage, stage_loss: float, epoch: int | None = None) -> None:
        """Log, schedule the learning rate, stop early, keep the best checkpoint by UA, write predictions."""
        if stage == sb.Stage.TRAIN:
            self.train_stats = {"loss": stage_loss}
            return
        stats = {"loss": stage_loss, **self.stage_scores()}
        if stage == sb.Stage.VALID:
            self.lr_scheduler.step(stats["UA"])
            self.hparams.epoch_counter.update_metric(stats["UA"])
            lr = self.optimizer.param_groups[0]["lr"]
            self.hparams.train_logger.log_stats(
                stats_meta={"epoch": epoch, "lr": lr}, train_stats=self.train_stats, valid_stats=stats
            )
            start = time.perf_counter()
            self.checkpointer.save_and_keep_only(
                meta={"UA": stats["UA"], "WA": stats["WA"], "loss": stats["loss"], "epoch": epoch},
                max_keys=["UA"],
                num_to_keep=self.averaged,
            )
            if if_main_process():  # SpeechBrain writes CKPT.yaml first: mark checkpoints whose files are all there
                for ckpt in self.checkpointer.list_checkpoints():
                    (ckpt.path / COMPLETE).touch()
            self.timing["checkpoints_s"] += time.perf_counter() - start
        elif self.evaluating == "valid":
            self.valid_stats = stats
        else:
            if getattr(self.hparams, "train_logger", None) is not None:
                self.hparams.train_logger.log_stats(
                    stats_meta={"Epoch loaded": self.hparams.epoch_counter.current, **self.tested_meta()},
                    valid_stats=getattr(self, "valid_stats", None),
                    test_stats=stats,
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
        ids, y, probs, chan = self.collected()
        labels = list(self.hparams.labels)
        layers = getattr(self.hparams, "layer_ids", range(chan.shape[1]))
        return predictions_frame(ids, [labels[i] for i in y], probs, chan, labels, layers)
