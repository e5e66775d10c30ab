"""Ctrl-C (SIGINT) and SIGTERM stop training cleanly: after the current training step, with a
checkpoint of that step (RUN/checkpoints/last.ckpt) that `--resume` continues exactly.

The first signal only asks for the stop; the trainer looks at the request between steps, writes
last.ckpt and raises `TrainingInterrupted`, which the command prints as one line and turns into exit
status 128 + the signal's number (130 for Ctrl-C, 143 for SIGTERM). A second signal stops at once,
without a new checkpoint (last.ckpt then holds the last epoch or stop that was saved).
"""
from __future__ import annotations

import signal
import threading
from types import FrameType
from typing import Callable

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class TrainingInterrupted(Exception):
    """Training stopped on a signal; names the signal and the checkpoint to resume from."""

    def __init__(self, signum: int, checkpoint: str | None = None, step: int | None = None, quiet: bool = False):
        self.signum, self.checkpoint, self.step = signum, checkpoint, step
        self.exit_code = 128 + signum
        name = signal.Signals(signum).name
        if checkpoint:
            where = f"{checkpoint} holds training step {step}; resume with --resume {checkpoint}"
        else:
            where = "no new checkpoint was written (stopped at once)"
        # quiet: one process of several says it (the others' message is empty)
        super().__init__("" if quiet else f"training stopped by {name}: {where}")


class StopRequests:
    """While active, SIGINT and SIGTERM set `signum` (the first one) instead of killing the process; with
    `escalate`, a second signal raises KeyboardInterrupt at once (under torchrun, which sends its own copy of
    a Ctrl-C and kills after --shutdown_timeout, it does not). `on_signal(signum)` runs first and may raise
    (a pipeline stage whose peer died says so). Only the main thread can take signals (elsewhere this does
    nothing). Handlers already installed (Lightning's SIGTERM notifier) are called too."""

    def __init__(self, escalate: bool = True, on_signal: Callable[[int], None] | None = None) -> None:
        self.signum: int | None = None
        self.escalate, self.on_signal = escalate, on_signal
        self._previous: dict[int, object] = {}

    @property
    def requested(self) -> bool:
        return self.signum is not None

    def take(self, signum: int) -> None:
        """Handle `signum` here again (after a library replaced the handler), in the main thread only."""
        if signum in self._previous and threading.current_thread() is threading.main_thread():
            signal.signal(signum, self._handle)

    def ignore(self) -> None:
        """Ignore further signals (a process that is about to exit says its last words undisturbed)."""
        self.on_signal, self._ignoring = None, True

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if getattr(self, "_ignoring", False):
            return
        if self.on_signal is not None:
            self.on_signal(signum)
        if self.signum is not None:
            if self.escalate:
                raise KeyboardInterrupt  # asked twice: stop now
            return
        self.signum = signum
        previous = self._previous.get(signum)
        if callable(previous) and previous is not signal.default_int_handler:
            previous(signum, frame)

    def __enter__(self) -> "StopRequests":
        if threading.current_thread() is threading.main_thread():
            for s in SIGNALS:
                self._previous[s] = signal.signal(s, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for s, handler in self._previous.items():
            signal.signal(s, handler)
        self._previous.clear()


__all__ = ["StopRequests", "TrainingInterrupted"]
