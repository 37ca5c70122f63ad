"""Stopping a run cleanly: Ctrl-C, SIGTERM and SIGHUP set a flag that the training loop reads after each step (it
checkpoints and stops); a second signal stops at once with one line (`Stopped`)."""

import os
import sys


class Stopped(KeyboardInterrupt):
    """Training was stopped at once (a second Ctrl-C, SIGTERM or SIGHUP, or one before training began); the
    message says what was saved and how to go on."""


def say(message: str) -> None:
    """A line on stderr, if there is still somewhere to write it."""
    try:
        print(message, file=sys.stderr)
    except OSError:
        pass


def _detach_terminal() -> None:
    """Point stdout and stderr that go to a terminal at /dev/null (a SIGHUP: the terminal has closed), so that the
    progress bar and the last messages cannot fail the run before it checkpoints."""
    for stream in (sys.stdout, sys.stderr):
        try:
            if stream.isatty():
                stream.flush()
                os.dup2(os.open(os.devnull, os.O_WRONLY), stream.fileno())
        except (OSError, ValueError):
            pass


class StopFlag:
    """Ctrl-C (SIGINT), SIGTERM and SIGHUP during training set the flag instead of interrupting: the loop finishes
    its step, checkpoints it and stops. A second signal, or one before the loop is armed (while data loads), stops at
    once (`Stopped`). Only in the main thread (signals are delivered there); elsewhere they keep their usual effect.
    Under torchrun, which passes a signal it gets on to every worker once, each worker does the same."""

    SIGNALS = ("SIGINT", "SIGTERM", "SIGHUP")

    def __init__(self, dist=None):
        self.set, self.armed, self._old = False, False, {}
        self.main = dist is None or dist.is_main

    def __bool__(self):
        return self.set

    def arm(self) -> None:
        self.armed = True

    def _handler(self, signum, frame):
        import signal

        name = "Ctrl-C" if signum == signal.SIGINT else signal.Signals(signum).name
        if name == "SIGHUP":  # the terminal is gone: writing to it would fail (EIO) and end the run uncheckpointed
            _detach_terminal()
        if not self.armed:
            raise Stopped(f"{name} before training began: stopped, nothing was saved")
        if self.set:
            raise Stopped(name)
        self.set = True
        if self.main:
            say(f"\n{name}: stopping after this step and checkpointing it (again to stop at once)")

    def __enter__(self):
        import signal
        import threading

        if threading.current_thread() is threading.main_thread():
            for name in self.SIGNALS:
                if hasattr(signal, name):
                    self._old[name] = signal.signal(getattr(signal, name), self._handler)
        return self

    def __exit__(self, *exc):
        import signal

        for name, old in self._old.items():
            signal.signal(getattr(signal, name), old)
        self._old = {}
        return False
