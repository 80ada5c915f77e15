"""One process-pool runner for every stage that works file by file (ingest, render).

Tasks run in spawned worker processes, or inline with one worker. A worker that dies (a
decoder crash, out of memory, a kill) breaks the whole executor and every task in flight with
it: the pool starts a fresh executor and runs each of those tasks once more; a task whose
worker dies twice comes back as a `WorkerCrashed` error, and the run goes on with the rest.
"""

from __future__ import annotations

import multiprocessing
from collections.abc import Callable, Hashable
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from typing import Any

from mmlong.errors import TaskError, describe_error


class WorkerCrashed(RuntimeError):
    """The worker process running a task died, twice."""


def _call(fn: Callable, args: tuple):
    """Run a task in a worker, its exception turned into a TaskError carrying the same words
    (IngestError messages as they are, others with their type)."""
    try:
        return fn(*args)
    except Exception as e:
        raise TaskError(describe_error(e)) from None


def _worker_start(initializer, initargs, parent: int) -> None:
    """A worker's start: it exits on its own when the process that started it dies (a kill -9
    of the run must not leave workers blocked on a pipe), then runs `initializer`."""
    import os
    import threading
    import time

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(0.5)
        os._exit(1)

    threading.Thread(target=watch, daemon=True).start()
    if initializer is not None:
        initializer(*initargs)


@dataclass
class Done:
    """A finished task: its key, and its result or the exception it raised."""

    key: Hashable
    result: Any = None
    error: BaseException | None = None


def run_inline(fn: Callable, *args) -> Future:
    """`fn(*args)` run here, as a completed Future (the one-process path of a pool loop)."""
    fut: Future = Future()
    try:
        fut.set_result(fn(*args))
    except Exception as e:
        fut.set_exception(e)
    return fut


class Pool:
    """`submit(key, fn, *args)` tasks, then `wait()` for the next finished ones."""

    def __init__(self, workers: int, initializer: Callable[..., None] | None = None, retries: int = 1,
                 initargs: tuple = ()) -> None:
        self.workers = workers
        self.initializer, self.initargs = initializer, initargs
        self.retries = retries
        self.executor = self._start() if workers > 1 else None
        self.inflight: dict[Future, tuple[Hashable, Callable, tuple]] = {}
        self.crashes: dict[Hashable, int] = {}
        self.succeeded = 0

    def _start(self) -> ProcessPoolExecutor:
        import os

        return ProcessPoolExecutor(self.workers, mp_context=multiprocessing.get_context("spawn"),
                                   initializer=_worker_start, initargs=(self.initializer, self.initargs, os.getpid()))

    def __len__(self) -> int:
        """Tasks submitted and not yet returned by `wait`."""
        return len(self.inflight)

    def submit(self, key: Hashable, fn: Callable, *args) -> None:
        if self.executor is None:
            fut = run_inline(fn, *args)
        else:
            try:
                fut = self.executor.submit(_call, fn, args)
            except BrokenProcessPool:  # broke since the last wait: the tasks in flight report it
                fut = Future()
                fut.set_exception(BrokenProcessPool("the pool broke before the task started"))
        self.inflight[fut] = (key, fn, args)

    def wait(self) -> list[Done]:
        """Block until at least one task finishes (or fails for good) and return those."""
        out: list[Done] = []
        while self.inflight and not out:
            done, _ = wait(self.inflight, return_when=FIRST_COMPLETED)
            broken = False
            for fut in done:
                key, fn, args = self.inflight.pop(fut)
                try:
                    out.append(Done(key, fut.result()))
                    self.succeeded += 1
                except BrokenProcessPool:
                    broken = True
                    self.inflight[fut] = (key, fn, args)  # rerun below with everything else in flight
                except Exception as e:
                    out.append(Done(key, error=e))
            if broken:
                out += self._restart()
        return out

    def _restart(self) -> list[Done]:
        """The executor is broken: what is still in flight will not finish. Rerun each such
        task in a new one; a task that has crashed `retries` times already fails."""
        tasks = list(self.inflight.items())
        self.inflight.clear()
        self.executor.shutdown(wait=True, cancel_futures=True)
        self.executor = self._start()
        out: list[Done] = []
        for fut, (key, fn, args) in tasks:
            if fut.done() and not fut.cancelled() and fut.exception() is None:  # finished before the crash
                out.append(Done(key, fut.result()))
                self.succeeded += 1
                continue
            self.crashes[key] = self.crashes.get(key, 0) + 1
            if self.crashes[key] <= self.retries:
                self.submit(key, fn, *args)
                continue
            if self.succeeded == 0:
                self.close()
                raise RuntimeError(
                    "worker processes die before finishing any task: the pool cannot start here. Scripts must be "
                    "importable files with an `if __name__ == '__main__':` guard (multiprocessing spawn), or use workers=1"
                )
            out.append(Done(key, error=WorkerCrashed("a worker process crashed (a decoder crash or out of memory)")))
        return out

    def cancel(self) -> list[Hashable]:
        """Forget every task in flight; returns their keys."""
        keys = [key for key, _, _ in self.inflight.values()]
        for fut in self.inflight:
            fut.cancel()
        self.inflight.clear()
        return keys

    def close(self) -> None:
        if self.executor is not None:
            self.executor.shutdown(wait=True, cancel_futures=True)
            self.executor = None

    def __enter__(self) -> Pool:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
