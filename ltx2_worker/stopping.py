"""A stop signal (SIGINT from Ctrl-C, SIGTERM from `docker stop` or RunPod) that arrives while a job runs.

The runpod SDK calls a synchronous handler on its event loop's thread, the main one, so the handlers it sets
(its worker loop's shutdown, or uvicorn's under `--rp_serve_api`) only note the signal and wait for the job to
return: a job waiting on ComfyUI kept the process alive for up to JOB_TIMEOUT_S. While a job runs,
`stop_on_signals` puts a handler in front of theirs that passes the signal on to them (the SDK still shuts down,
after sending the answer) and raises `Stopping` in the job, which interrupts ComfyUI's prompt and answers the
caller with why. A handler that would end the process itself (Python's KeyboardInterrupt, the system default)
is not called mid-job: the signal is raised again when the job returns and the handlers are back.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import threading
from collections.abc import Iterator

log = logging.getLogger(__name__)
SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Stopping(Exception):  # noqa: N818 (a state, not a fault)
    """The worker got a stop signal while a job ran; str() names the signal."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


@contextlib.contextmanager
def stop_on_signals() -> Iterator[None]:
    """Within this block, SIGINT or SIGTERM raise Stopping (once; a second signal only reaches the handlers
    that were there before). Does nothing outside the main thread, where Python cannot set handlers."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {signum: signal.getsignal(signum) for signum in SIGNALS}
    pending: list[int] = []  # signals whose own handling would end the process: raised again at the end
    raised: list[int] = []

    def on_signal(signum: int, frame) -> None:
        before = previous[signum]
        if callable(before) and before is not signal.default_int_handler:
            before(signum, frame)  # e.g. uvicorn's: notes the shutdown, which follows the job's answer
        elif signum not in pending:
            pending.append(signum)
        if not raised:
            raised.append(signum)
            log.warning("got %s while a job runs: stopping it", signal.Signals(signum).name)
            raise Stopping(signum)

    for signum in SIGNALS:
        signal.signal(signum, on_signal)
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        for signum in pending:
            signal.raise_signal(signum)
