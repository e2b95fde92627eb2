"""Checkpoint averaging (``average_checkpoints``): the N best by validation UA, in training's test and on reload."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import torch
from float_bounds import max_abs, network_bound, ratio, rounding_bound
from speechbrain.utils.checkpoints import Checkpointer
from toy_data import toy_training_argv

from cta_rnn.checkpoint import best_model_state, load_fold_model
from cta_rnn.models import build_model
from cta_rnn.store import EmbeddingStore


def test_average_of_the_n_best_by_ua_not_the_latest(tmp_path: Path) -> None:
    model = torch.nn.Linear(1, 1, bias=False)
    ckpt = Checkpointer(tmp_path, recoverables={"model": model})
    for value, ua in zip([1.0, 2.0, 3.0, 4.0, 5.0], [0.5, 0.9, 0.7, 0.8, 0.6]):
        model.weight.data.fill_(value)
        ckpt.save_checkpoint(meta={"UA": ua})
    assert best_model_state(ckpt, 1)["weight"].item() == 2.0
    assert best_model_state(ckpt, 3)["weight"].item() == pytest.approx((2.0 + 4.0 + 3.0) / 3)
    assert best_model_state(ckpt, 9)["weight"].item() == pytest.approx(3.0)  # fewer kept: all of them


def test_empty_save_folder_is_named(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="no checkpoint with a validation UA"):
        best_model_state(Checkpointer(tmp_path / "save"), 3)


def test_trained_fold_tests_and_reloads_the_averaged_model(tmp_path: Path) -> None:
    from cta_rnn.train import main

    out = tmp_path / "exp" / "fold1"
    fast = ("--number_of_epochs=4", "--average_checkpoints=3", "--batch_size=8", "--lr=0.005")
    main(toy_training_argv(tmp_path, out, *fast, n_per_speaker=16))
    res = json.loads((out / "test_results.json").read_text())
    assert len(res["averaged_epochs"]) == 3 and res["epochs_run"] == 4
    assert json.loads((out / "model.json").read_text())["average_checkpoints"] == 3

    pred = pd.read_csv(out / "predictions.csv").set_index("ID")
    store = EmbeddingStore(tmp_path / "store")
    model, spec = load_fold_model(out)
    single = build_model(spec)  # the best checkpoint alone
    single.load_state_dict(best_model_state(Checkpointer(out / "save"), 1))
    single.eval()
    probs = [f"prob_{c}" for c in spec["labels"]]
    differs = False
    longest = max(store.get(uid).shape[1] for uid in pred.index)  # the test stage ran padded batches
    with torch.no_grad():
        for uid in pred.index:
            x = store.get(uid)[None].float()
            logits = model(x, torch.ones(1))
            p = torch.softmax(logits, -1)[0]
            # float32 rounding of the logits (the softmax passes at most half of it on), of the softmax's own
            # sum of probabilities <= 1, and the 6 decimals predictions.csv keeps (5e-7)
            bound = network_bound(model, magnitude=max_abs(logits), outside=longest, steps=longest)
            bound += rounding_bound(1.0, terms=len(probs)) + 5e-7
            written = torch.tensor(pred.loc[uid, probs].to_numpy(float), dtype=torch.float)
            assert ratio(p, written, bound) <= 1, f"{uid}: {p.tolist()} vs predictions.csv {written.tolist()}"
            differs |= ratio(p, torch.softmax(single(x, torch.ones(1)), -1)[0], bound) > 1
    assert differs, "the averaged model predicts like the best checkpoint (within rounding): nothing was averaged"
