"""Early stopping survives a resume: the stopper state is in the checkpoint (SpeechBrain 1.1.2 keeps the epoch only)."""

from __future__ import annotations

from pathlib import Path

from speechbrain.utils.checkpoints import Checkpointer
from toy_data import toy_training_argv

from cta_rnn.early_stopping import EpochCounterWithStopper


def counter() -> EpochCounterWithStopper:
    return EpochCounterWithStopper(limit=10, limit_to_stop=2, limit_warmup=0, direction="max")


def test_stopped_counter_stays_stopped_after_recovery(tmp_path: Path) -> None:
    c = counter()
    for _, ua in zip(c, [0.5, 0.7, 0.6, 0.6]):
        c.update_metric(ua)
    assert c.should_stop and c.current == 4 and c.best_limit == 2
    Checkpointer(tmp_path, recoverables={"counter": c}).save_checkpoint()
    fresh = counter()
    Checkpointer(tmp_path, recoverables={"counter": fresh}).recover_if_possible()
    assert (fresh.current, fresh.best_limit, fresh.best_score, fresh.should_stop) == (4, 2, 0.7, True)
    assert list(fresh) == []


def test_checkpoint_with_the_epoch_only_still_loads(tmp_path: Path) -> None:
    (tmp_path / "counter.ckpt").write_text("7\n")
    c = counter()
    c._recover(tmp_path / "counter.ckpt", end_of_epoch=True)
    assert c.current == 7 and not c.should_stop


def test_training_checkpoints_hold_the_stopper_state(tmp_path: Path) -> None:
    """What a killed fold resumes from: the latest checkpoint of a real run knows the best epoch and score."""
    import yaml

    from cta_rnn.train import main

    out = tmp_path / "exp" / "fold1"
    main(toy_training_argv(tmp_path, out, "--number_of_epochs=3"))
    latest = max(Checkpointer(out / "save").list_checkpoints(), key=lambda c: c.meta["epoch"])
    state = yaml.safe_load((latest.path / "counter.ckpt").read_text())
    assert state["current_epoch"] == 3 and state["should_stop"] is False
    assert 1 <= state["best_epoch"] <= 3 and 0 < state["best_score"] <= 1
