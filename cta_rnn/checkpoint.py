"""Rebuild a trained fold model (model.json + best SpeechBrain checkpoint by validation UA)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from speechbrain.utils.checkpoints import Checkpointer


def load_fold_model(fold_dir: str | os.PathLike, device: str = "cpu") -> tuple[torch.nn.Module, dict[str, Any]]:
    """The best-validation-UA model of a finished fold, in eval mode, and its spec (labels, layers, encoder)."""
    from cta_rnn.train import build_model

    fold_dir = Path(fold_dir)
    spec_path = fold_dir / "model.json"
    if not spec_path.is_file():
        raise FileNotFoundError(f"{spec_path}: not a trained fold (no model.json); run stage 2 first")
    spec = json.loads(spec_path.read_text(encoding="utf-8"))
    model = build_model({**spec, "labels": spec["labels"]}, spec["num_layers"], spec["dim"])
    ckpt = Checkpointer(fold_dir / "save").find_checkpoint(max_key="UA")
    if ckpt is None:
        raise FileNotFoundError(f"{fold_dir / 'save'}: no checkpoint with a validation UA")
    state = torch.load(ckpt.paramfiles["model"], map_location=device, weights_only=True)
    model.load_state_dict(state)
    return model.to(device).eval(), spec
