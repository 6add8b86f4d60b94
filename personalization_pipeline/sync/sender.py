"""A thread that owns a sync run's Redis connections: it writes rendered batches while the
engine's thread renders the next batches and records acknowledged ones in DuckDB, so the two
overlap instead of taking turns.

The engine hands over a batch (:meth:`Sender.put`) only after committing its keys as in
doubt, so nothing leaves the process before that. Acknowledgements come back in batch order.
A failure (connection lost, timeout) ends the thread; the engine receives it after the
acknowledgements that came before it, records those, and raises it.
"""

from __future__ import annotations

import contextlib
import queue
import threading
from collections.abc import Iterator

from personalization_pipeline.sync.writer import Batch, RowErrors, Writer

__all__ = ["Sender"]

_FINISHED = object()


class Sender:
    """Write batches on a thread of its own; at most ``depth`` rendered batches wait."""

    def __init__(self, writer: Writer, depth: int = 2) -> None:
        self._writer = writer
        self._todo: queue.Queue[tuple[int, Batch] | None] = queue.Queue(depth)
        self._done: queue.Queue[tuple[int, RowErrors] | BaseException | object] = queue.Queue()
        self._stopping = threading.Event()
        self._ended = threading.Event()
        self.finished = False
        self._thread = threading.Thread(target=self._run, name="sync-sender", daemon=True)
        self._thread.start()

    def put(self, number: int, batch: Batch) -> None:
        """Queue batch ``number``; waits while ``depth`` batches wait (not once it failed)."""
        self._put((number, batch))

    def acknowledged(self, wait: bool = False) -> Iterator[tuple[int, RowErrors]]:
        """(batch number, row errors) of the batches answered so far, in order; with
        ``wait``, at least one (none once the last has been taken). Raises the thread's
        failure once the acknowledgements that came before it have been taken."""
        while not self.finished:
            try:
                item = self._done.get(block=wait)
            except queue.Empty:
                return
            wait = False
            if item is _FINISHED:
                self.finished = True
                return
            yield self._unpack(item)

    def finish(self) -> None:
        """No more batches: the thread ends once it has written those it holds, and
        :attr:`finished` becomes true once their acknowledgements are taken."""
        self._put(None)

    def stop(self) -> None:
        """End the thread, dropping batches not sent yet (they are in doubt already)."""
        self._stopping.set()
        with contextlib.suppress(queue.Full):
            self._todo.put_nowait(None)  # wakes the thread if it waits for a batch
        self._thread.join()

    def _put(self, item: tuple[int, Batch] | None) -> None:
        while not self._ended.is_set():
            try:
                self._todo.put(item, timeout=0.1)
                return
            except queue.Full:
                continue

    @staticmethod
    def _unpack(item: object) -> tuple[int, RowErrors]:
        if isinstance(item, BaseException):
            raise item
        assert isinstance(item, tuple)
        return item

    def _run(self) -> None:
        try:
            while (item := self._todo.get()) is not None and not self._stopping.is_set():
                number, batch = item
                self._done.put((number, self._writer.write(batch)))
            self._done.put(_FINISHED)
        except BaseException as error:  # handed to the engine's thread, which raises it
            self._done.put(error)
        finally:
            self._ended.set()
