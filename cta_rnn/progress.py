"""Progress on the console while a stage's full output goes to its log (ESPnet / SpeechBrain style).

The stage driver sends each Python step's stdout and stderr to a log file and hands the console over as a file
descriptor named by ``CTA_RNN_CONSOLE_FD`` (``3>&2``); :func:`bar` draws there: a live tqdm bar on a terminal, one
plain line every ``interval`` seconds elsewhere (CI, ``| tee``), and the final state when it closes. Run by hand
(no driver), the bar goes to stderr as usual.
"""

from __future__ import annotations

import functools
import os
import sys
from typing import Any, TextIO

from tqdm import tqdm

CONSOLE_FD = "CTA_RNN_CONSOLE_FD"


class _Lines:
    """A file for tqdm that turns its carriage-return redraws into whole lines (for logs and pipes)."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream

    def write(self, text: str) -> None:
        text = text.strip("\r\n")
        if text:
            self.stream.write(text + "\n")

    def flush(self) -> None:
        self.stream.flush()


@functools.lru_cache(maxsize=1)
def console() -> TextIO:
    """The driver's console (the descriptor named by ``CTA_RNN_CONSOLE_FD``), else stderr."""
    fd = os.environ.get(CONSOLE_FD, "")
    if fd.isdigit():
        try:
            os.fstat(int(fd))
            return open(int(fd), "w", closefd=False, buffering=1)  # noqa: SIM115 (lives as long as the process)
        except OSError:
            pass
    return sys.stderr


def bar(total: int, desc: str, unit: str = "it", interval: float = 10.0, **kw: Any) -> tqdm:
    """A progress bar on the console: live on a terminal, a line every ``interval`` seconds elsewhere."""
    stream = console()
    if stream.isatty():
        return tqdm(total=total, desc=desc, unit=unit, file=stream, dynamic_ncols=True, **kw)
    return tqdm(total=total, desc=desc, unit=unit, file=_Lines(stream), mininterval=interval, ascii=True, **kw)


def say(message: str) -> None:
    """One line on the console (beside what the log gets)."""
    print(message, file=console(), flush=True)
