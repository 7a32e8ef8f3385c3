"""SIGINT and SIGTERM, honoured in every phase of a run.

:func:`handled` (entered by ``main.py`` around a whole command) installs handlers for both signals. The first
signal raises :class:`Interrupted` at once, wherever the run is (encoding features, evaluating, selecting
exemplars, generating data), except inside a :func:`deferred` section (an atomic write, a training step), where
it is raised when the section ends, so that no file and no optimizer step is left half done. A second signal
exits at once (exit code 128 + the signal number), without cleaning up: leftover temporary files are removed by
the next run that completes in that directory.
"""
from __future__ import annotations

import os
import signal
import sys
from contextlib import contextmanager
from typing import Iterator


class Interrupted(BaseException):
    """SIGINT/SIGTERM arrived; carries the signal number. A ``BaseException`` (as ``KeyboardInterrupt``), so
    that ``except Exception`` in a phase does not swallow it."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


_state: dict = {"signum": None, "depth": 0, "installed": False, "pid": None}


def pending() -> int | None:
    """The signal received and not acted upon yet, if any."""
    return _state["signum"]


def check() -> None:
    """Raise :class:`Interrupted` if a signal arrived (for loops inside a :func:`deferred` section)."""
    if _state["signum"] is not None and _state["installed"]:
        raise Interrupted(_state["signum"])


def _handler(signum, _frame) -> None:
    if os.getpid() != _state["pid"]:         # a forked worker (DataLoader) inherited the handler: act as Python's
        raise KeyboardInterrupt               # default, which the workers handle quietly; the parent stops the run
    if _state["signum"] is not None:         # the second signal: leave now
        try:
            os.write(2, f"\n{signal.Signals(signum).name} again: exiting now\n".encode())
        finally:
            os._exit(128 + signum)
    _state["signum"] = signum
    if _state["depth"] == 0:
        raise Interrupted(signum)


@contextmanager
def handled() -> Iterator[None]:
    """Install the handlers for the duration of a command (only in the main thread; elsewhere a no-op)."""
    previous = {}
    try:
        for sig in (signal.SIGINT, signal.SIGTERM):
            previous[sig] = signal.signal(sig, _handler)
    except ValueError:              # not in the main thread: leave signals alone
        for sig, old in previous.items():
            signal.signal(sig, old)
        previous = {}
    outer = dict(_state)
    _state.update(signum=None, depth=0, installed=bool(previous), pid=os.getpid())
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)
        _state.update(outer)


def installed() -> bool:
    """Whether :func:`handled` is active (the handlers of this module receive the signals)."""
    return bool(_state["installed"])


@contextmanager
def deferred() -> Iterator[None]:
    """A section a signal does not cut: it is acted upon when the outermost such section ends."""
    _state["depth"] += 1
    try:
        yield
    finally:
        _state["depth"] -= 1
    if _state["depth"] == 0 and sys.exc_info()[0] is None:
        check()
