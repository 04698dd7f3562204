"""Bounded pools for the server's requests that run beside the job queue (estimate, download, …).

A request that does real work off the reader thread gets a slot in a :class:`BoundedPool`: at most
``workers`` threads run such requests and at most ``waiting`` more wait for one; a request beyond that is
not started and the caller answers it with an ``error`` of code ``busy`` (:meth:`BoundedPool.busy_message`).
So a client that floods the engine with requests costs it a fixed number of threads, never one each.
"""
from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

log = logging.getLogger("engine.server")


class BoundedPool:
    """A ThreadPoolExecutor of ``workers`` threads (named ``<name>_N``) with at most ``waiting`` requests
    queued behind the running ones."""

    def __init__(self, name: str, workers: int, waiting: int):
        if workers < 1 or waiting < 0:
            raise ValueError(f"pool {name!r}: workers must be >= 1 and waiting >= 0, got {workers}, {waiting}")
        self.name, self.workers, self.waiting = name, workers, waiting
        self.limit = workers + waiting
        self._executor = ThreadPoolExecutor(workers, thread_name_prefix=name)
        self._slots = threading.BoundedSemaphore(self.limit)
        self._lock = threading.Lock()
        self._taken = 0

    @property
    def taken(self) -> int:
        """Requests running or waiting now."""
        with self._lock:
            return self._taken

    def try_submit(self, fn: Callable[[], None]) -> bool:
        """Run ``fn`` on a pool thread; False (nothing started) when ``limit`` requests are running or waiting."""
        if not self._slots.acquire(blocking=False):
            log.info("%s: %d requests running or waiting (limit %d); refusing one as busy", self.name,
                     self.limit, self.limit)
            return False
        with self._lock:
            self._taken += 1

        def run() -> None:
            try:
                fn()
            except Exception:  # noqa: BLE001 - fn answers its request itself; a bug there must not leak a slot
                log.exception("%s: a request failed unexpectedly", self.name)
            finally:
                with self._lock:
                    self._taken -= 1
                self._slots.release()

        try:
            self._executor.submit(run)
        except RuntimeError:        # shut down
            with self._lock:
                self._taken -= 1
            self._slots.release()
            return False
        return True

    def busy_message(self, what: str) -> str:
        """The one-line text of the ``busy`` reply for a refused request."""
        return (f"the engine is busy: {self.limit} {what} requests are already running or waiting (at most "
                f"{self.workers} at a time, {self.waiting} waiting); this one was not started")

    def shutdown(self) -> None:
        """No new requests; the running ones end on their own (their threads do not keep the process alive
        past the server's exit, which uses os._exit)."""
        self._executor.shutdown(wait=False, cancel_futures=False)
