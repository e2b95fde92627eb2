"""Rebuild a trained fold model: ``model.json`` + its best SpeechBrain checkpoints by validation UA.

A fold trained with ``average_checkpoints: N`` (recorded in ``model.json``) is the parameter average of its N
best checkpoints by validation UA (ESPnet/SpeechBrain practice), in training's test stage and here alike.
"""

from __future__ import annotations

import logging
import os
from functools import partial
from pathlib import Path
from typing import Any

import torch
from speechbrain.utils.checkpoints import Checkpointer, average_checkpoints

from cta_rnn.artifacts import read_model_spec, read_test_results
from cta_rnn.models import build_model

logger = logging.getLogger("cta_rnn.checkpoint")


def best_checkpoints(checkpointer: Checkpointer, n: int = 1, key: str = "UA") -> list[Any]:
    """The ``n`` best checkpoints by validation ``key`` (UA, or CCC for a dimensional model), best first (the
    ones the tested model is made of)."""
    return checkpointer.find_checkpoints(max_key=key, max_num_checkpoints=max(1, int(n)))


def best_model_state(
    checkpointer: Checkpointer, n: int = 1, device: str = "cpu", key: str = "UA"
) -> dict[str, torch.Tensor]:
    """The model parameters of the best checkpoint by validation ``key``, or the average of the ``n`` best."""
    ckpts = best_checkpoints(checkpointer, n, key)
    if not ckpts:
        raise FileNotFoundError(f"{checkpointer.checkpoints_dir}: no checkpoint with a validation {key}")
    if len(ckpts) == 1:
        return torch.load(ckpts[0].paramfiles["model"], map_location=device, weights_only=True)
    return average_checkpoints(ckpts, "model", parameter_loader=partial(torch.load, weights_only=True))


def select_key(spec: dict[str, Any]) -> str:
    """The validation metric a trained model's checkpoints were kept by (``UA`` for models before the task)."""
    return str(spec.get("select_by") or "UA")


def load_fold_model(
    fold_dir: str | os.PathLike, device: str = "cpu", allow_unfinished: bool = False
) -> tuple[torch.nn.Module, dict[str, Any]]:
    """The best-validation-UA model of a finished fold, in eval mode, and its spec (labels, layers, encoder).

    A fold without ``save/`` is refused (its weights are missing); one without ``test_results.json`` (killed or
    still training) unless ``allow_unfinished``.
    """
    fold_dir = Path(fold_dir)
    spec = read_model_spec(fold_dir)
    if not (fold_dir / "save").is_dir():
        raise FileNotFoundError(
            f"{fold_dir / 'save'}: missing: no checkpoints to load (a training fold keeps them there; an exported "
            "model needs model.ckpt instead)"
        )
    if read_test_results(fold_dir) is None:
        if not allow_unfinished:
            raise RuntimeError(
                f"{fold_dir}: training did not finish (no test_results.json); finish stage 2 for this fold, "
                "or pass --allow_unfinished to use its best checkpoint so far"
            )
        logger.warning("%s: training did not finish; using its best checkpoint so far", fold_dir)
    model = build_model(spec)
    state = best_model_state(
        Checkpointer(fold_dir / "save"), spec.get("average_checkpoints", 1), device, select_key(spec)
    )
    model.load_state_dict(state)
    return model.to(device).eval(), spec
