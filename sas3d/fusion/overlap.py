"""A background thread and the caller sharing independent tasks (multi-view fusion, :mod:`sas3d.fusion.multiview`)."""

from __future__ import annotations

import threading
from collections import deque
from typing import Callable, Iterable


class Overlap:
    """Independent tasks run by one background thread and, in :meth:`finish`, by the caller too.

    :meth:`submit` queues tasks (numba kernels and PNG decoding, which release the GIL) and may be
    called again before the earlier ones are done; the background thread starts on them at once,
    oldest first.
    Meanwhile the caller does what only it can do (pull the next frames' teacher maps: teachers keep
    running in the caller's thread, with its torch grad mode). :meth:`finish` then runs the queued
    tasks in the caller's thread as well, newest first, and returns when every submitted task has run
    (so while the background thread works through an earlier batch, e.g. memory-bound row adds, the
    caller starts on the later one, e.g. compute-bound depth decoding, and each then helps the other).
    Tasks are taken one at a time from a shared deque, so a thread slowed down by other processes on the
    machine leaves more of the work to the other (no fixed split). Every task is dropped as soon as
    it has run, so when :meth:`finish` returns no task's map is referenced any more. After a task
    raises, the tasks still queued are dropped without running and :meth:`finish` re-raises the
    first exception.
    """

    def __init__(self) -> None:
        self._pending: deque[Callable[[], None]] = deque()
        self._cond = threading.Condition()
        self._outstanding = 0  # submitted and not yet run (queued or running)
        self._error: BaseException | None = None
        self._closed = False
        self._thread = threading.Thread(target=self._loop, name="sas3d-fuse", daemon=True)
        self._thread.start()

    def _run_next(self, wait: bool, newest: bool = False) -> bool:
        """Run the oldest queued task (``newest``: the newest); False when none is queued (with ``wait``:
        once the Overlap is closed). The task is referenced only here and dropped before it counts as done."""
        with self._cond:
            while wait and not self._pending and not self._closed:
                self._cond.wait()
            if not self._pending:
                return False
            task = self._pending.pop() if newest else self._pending.popleft()
        try:
            if self._error is None:
                task()
        except BaseException as exc:  # handed to the caller by finish()
            with self._cond:
                if self._error is None:
                    self._error = exc
                    self._outstanding -= len(self._pending)  # drop the rest of the queue
                    self._pending.clear()
        finally:
            del task
            with self._cond:
                self._outstanding -= 1
                if self._outstanding == 0:
                    self._cond.notify_all()
        return True

    def _loop(self) -> None:
        while self._run_next(wait=True):
            pass

    def submit(self, tasks: Iterable[Callable[[], None]]) -> None:
        """Queue ``tasks`` (any order, possibly in parallel); the background thread starts on them at once."""
        tasks = list(tasks)
        with self._cond:
            if self._closed:
                raise RuntimeError("Overlap is closed")
            self._pending.extend(tasks)
            self._outstanding += len(tasks)
            self._cond.notify_all()
        del tasks

    def finish(self) -> None:
        """Help run the queued tasks, wait until every submitted task has run; re-raise the first exception
        (then clear it: the Overlap stays usable)."""
        while self._run_next(wait=False, newest=True):
            pass
        with self._cond:
            while self._outstanding > 0:
                self._cond.wait()
            error, self._error = self._error, None
        if error is not None:
            raise error

    def close(self) -> None:
        """Finish the queued tasks (an exception, if any, is dropped) and stop the thread."""
        try:
            self.finish()
        except BaseException:
            pass
        finally:
            with self._cond:
                self._closed = True
                self._cond.notify_all()
            self._thread.join()


__all__ = ["Overlap"]
