"""The epoch counter of training: SpeechBrain's early-stopping counter, with its stopper state checkpointed.

SpeechBrain 1.1.2's ``EpochCounterWithStopper`` defines ``_save``/``_recover`` for its stopper state but the
class is not registered for checkpointing, so a checkpoint keeps only the epoch number (the parent's hook).
A resumed run then forgets the best epoch so far and that patience was exhausted: a fold killed after it
stopped early (while testing) would train on, and a fold killed mid-run would restart its patience. This
subclass registers the hooks (and still reads checkpoints that hold only the epoch).
"""

from __future__ import annotations

from pathlib import Path

import yaml
from speechbrain.utils import epoch_loop
from speechbrain.utils.checkpoints import mark_as_loader, mark_as_saver, register_checkpoint_hooks


@register_checkpoint_hooks
class EpochCounterWithStopper(epoch_loop.EpochCounterWithStopper):
    """``speechbrain.utils.epoch_loop.EpochCounterWithStopper`` whose checkpoint holds the stopper state too."""

    @mark_as_saver
    def _save(self, path: str | Path) -> None:
        super()._save(path)

    @mark_as_loader
    def _recover(self, path: str | Path, end_of_epoch: bool = True) -> None:
        saved = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
        if isinstance(saved, int):  # a checkpoint written without the stopper state: the epoch only
            self.current = saved if end_of_epoch else saved - 1
            return
        super()._recover(path, end_of_epoch)
