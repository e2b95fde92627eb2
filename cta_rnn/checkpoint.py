"""Rebuild a trained fold model: ``model.json`` + the best SpeechBrain checkpoint by validation UA."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import torch
from speechbrain.utils.checkpoints import Checkpointer

from cta_rnn.artifacts import read_model_spec, read_test_results
from cta_rnn.models import build_model

logger = logging.getLogger("cta_rnn.checkpoint")


def load_fold_model(
    fold_dir: str | os.PathLike, device: str = "cpu", allow_unfinished: bool = False
) -> tuple[torch.nn.Module, dict[str, Any]]:
    """The best-validation-UA model of a finished fold, in eval mode, and its spec (labels, layers, encoder).

    A fold without ``test_results.json`` (killed or still training) is refused unless ``allow_unfinished``.
    """
    fold_dir = Path(fold_dir)
    spec = read_model_spec(fold_dir)
    if read_test_results(fold_dir) is None:
        if not allow_unfinished:
            raise RuntimeError(
                f"{fold_dir}: training did not finish (no test_results.json); finish stage 2 for this fold, "
                "or pass --allow_unfinished to use its best checkpoint so far"
            )
        logger.warning("%s: training did not finish; using its best checkpoint so far", fold_dir)
    model = build_model(spec)
    ckpt = Checkpointer(fold_dir / "save").find_checkpoint(max_key="UA")
    if ckpt is None:
        raise FileNotFoundError(f"{fold_dir / 'save'}: no checkpoint with a validation UA")
    model.load_state_dict(torch.load(ckpt.paramfiles["model"], map_location=device, weights_only=True))
    return model.to(device).eval(), spec
