"""Ctrl-C for the suite: a flag that survives Python swallowing a KeyboardInterrupt, checked between stages."""
from __future__ import annotations

import contextlib
import signal
import threading

STOP = threading.Event()  # set by Ctrl-C even where Python swallows the KeyboardInterrupt


def on_sigint(signum, frame):
    """Ctrl-C: remember it, then interrupt. A KeyboardInterrupt raised inside a finaliser (`__del__`
    during garbage collection) is printed and ignored by Python; the flag still stops the suite."""
    STOP.set()
    raise KeyboardInterrupt


def stop_if_interrupted() -> None:
    if STOP.is_set():
        raise KeyboardInterrupt


@contextlib.contextmanager
def interruptible():
    """Install the suite's Ctrl-C handler for the duration of `liverbench run` (main thread only)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    STOP.clear()
    previous = signal.signal(signal.SIGINT, on_sigint)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
