"""Run one frame's fusion work in a background thread while the caller prepares the next frame,
then let the caller help finish it (multi-view fusion, :mod:`sas3d.fusion.multiview`)."""

from __future__ import annotations

import queue
import threading
from collections import deque
from typing import Callable, Iterable


class Overlap:
    """A batch of independent tasks, drained by one background thread and then by the caller.

    :meth:`submit` hands a frame's tasks (row adds of disjoint point ranges, numba kernels that
    release the GIL) to the background thread; meanwhile the caller pulls the next frame's teacher
    maps (teachers keep running in the caller's thread, with its torch grad mode), decodes its depth
    PNG (PIL releases the GIL too) and projects its points. :meth:`finish` then runs the tasks still
    pending in the caller's thread as well, so both cores add rows until the batch is done: the
    tasks are taken one at a time from a shared deque, so a thread slowed down by other processes
    on the machine leaves more of the work to the other (no fixed split). Every task is dropped as
    soon as it has run, so when :meth:`finish` returns the batch's maps are no longer referenced.
    """

    def __init__(self) -> None:
        self._pending: deque[Callable[[], None]] = deque()
        self._start: queue.SimpleQueue[bool] = queue.SimpleQueue()
        self._done: queue.SimpleQueue[BaseException | None] = queue.SimpleQueue()
        self._busy = False
        self._thread = threading.Thread(target=self._loop, name="sas3d-fuse", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while self._start.get():
            self._done.put(self._drain())

    def _drain(self) -> BaseException | None:
        """Run pending tasks until none is left; the first exception is returned (later tasks are dropped)."""
        error = None
        while True:
            try:
                task = self._pending.popleft()  # atomic: each task runs in one thread only
            except IndexError:
                return error
            if error is None:
                try:
                    task()
                except BaseException as exc:  # handed to the caller by finish()
                    error = exc
            del task  # drop the task's map before the batch counts as done

    def submit(self, tasks: Iterable[Callable[[], None]]) -> None:
        """Start running ``tasks`` (any order, possibly in parallel) in the background (call :meth:`finish` first)."""
        assert not self._busy
        self._busy = True
        self._pending.extend(tasks)
        self._start.put(True)

    def finish(self) -> None:
        """Help run the submitted tasks, wait until all have run; re-raise the first exception."""
        if self._busy:
            self._busy = False
            mine = self._drain()
            theirs = self._done.get()
            if mine is not None or theirs is not None:
                raise mine if mine is not None else theirs

    def close(self) -> None:
        """Finish the running batch (its exception, if any, is dropped) and stop the thread."""
        try:
            self.finish()
        except BaseException:
            pass
        finally:
            self._start.put(False)
            self._thread.join()


__all__ = ["Overlap"]
