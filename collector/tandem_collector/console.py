"""Console output that can never stall the event loop.

A waterfall is written from a background thread through a bounded queue: if stdout is a
pipe nobody drains, the writer thread blocks, the queue fills, and further text is
dropped (and counted) while the receivers keep running.
"""

from __future__ import annotations

import queue
import sys
import threading
from typing import TextIO

_STOP = object()


class ConsoleWriter:
    """Fire-and-forget text output to a stream (stdout by default)."""

    def __init__(self, stream: TextIO | None = None, max_pending: int = 1000) -> None:
        self._stream = stream
        self._queue: queue.Queue[object] = queue.Queue(max_pending)
        self.dropped = 0
        self._thread = threading.Thread(target=self._run, name="tandem-console", daemon=True)
        self._thread.start()

    def write(self, text: str) -> None:
        """Queue ``text``; drop it if the output is hopelessly behind."""
        try:
            self._queue.put_nowait(text)
        except queue.Full:
            self.dropped += 1

    def close(self, timeout: float = 1.0) -> None:
        """Flush what is queued, waiting at most ``timeout`` seconds."""
        try:
            self._queue.put(_STOP, timeout=timeout)
        except queue.Full:
            return
        self._thread.join(timeout)

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is _STOP:
                return
            stream = self._stream or sys.stdout
            try:
                stream.write(item)  # type: ignore[arg-type]  # the queue holds str or the _STOP sentinel
                stream.flush()
            except (OSError, ValueError):  # closed or broken stdout: nothing to do
                pass
