"""Group commit: the reports that arrive together are written in one durable transaction.

A commit with synchronous=FULL (or PostgreSQL's fsync) costs the same for one report as for a hundred, so one
committer thread takes whatever has queued up, hands the whole batch to `apply` (one transaction, a savepoint
per item), and only then answers each caller. No caller hears "done" before its report is on disk.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from typing import Generic, TypeVar

log = logging.getLogger(__name__)

Job = TypeVar("Job")
Result = TypeVar("Result")


class GroupCommitter(Generic[Job, Result]):
    def __init__(
        self, apply: Callable[[Sequence[Job]], list[Result | BaseException]], max_batch: int = 256
    ) -> None:
        self._apply = apply
        self._max_batch = max_batch
        self._queue: queue.Queue[tuple[Job, Future[Result]]] = queue.Queue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self.batches = 0
        self.items = 0

    def submit(self, job: Job) -> Result:
        """Queue `job` and wait until the transaction holding it has committed (or failed)."""
        self._ensure_running()
        future: Future[Result] = Future()
        self._queue.put((job, future))
        return future.result()

    def _ensure_running(self) -> None:
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="group-commit", daemon=True)
                self._thread.start()

    def _run(self) -> None:
        while True:
            batch = [self._queue.get()]
            while len(batch) < self._max_batch:
                try:
                    batch.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            self._commit(batch)

    def _commit(self, batch: list[tuple[Job, Future[Result]]]) -> None:
        try:
            results = self._apply([job for job, _ in batch])
        except BaseException as exc:  # the transaction failed as a whole: every caller hears it
            log.exception("group commit of %d items failed", len(batch))
            results = [exc] * len(batch)
        self.batches += 1
        self.items += len(batch)
        for (_, future), result in zip(batch, results, strict=True):
            if isinstance(result, BaseException):
                future.set_exception(result)
            else:
                future.set_result(result)
