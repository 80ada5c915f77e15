"""One process-pool runner for every stage that works file by file (ingest, render).

Tasks run in spawned worker processes, or inline with one worker. A worker that dies (a
decoder crash, out of memory, a kill) breaks the whole executor and every task in flight with
it: the pool starts a fresh executor and runs each of those tasks once more; a task whose
worker dies twice comes back as a `WorkerCrashed` error, and the run goes on with the rest.

Limits (with workers > 1): a task that goes `seconds` without finishing or calling `beat()`
(stages beat once a page), or a worker whose memory passes `memory_mb`, is stopped: the pool
kills its worker, a fresh one takes the other tasks, and the task fails with `LimitExceeded`
(never retried: it would only exceed again).
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


class LimitExceeded(RuntimeError):
    """A task ran past the pool's time or memory limit."""


@dataclass
class Limits:
    """What one task may take in a worker."""

    seconds: float | None = 300
    """Without finishing or a `beat()` (per page in ingest)."""
    memory_mb: int | None = 4096
    """Resident memory of the worker process."""
    what: str = "task"
    """The word the failure uses ("render exceeded 300 s")."""


_STATE: dict[str, Any] = {"task": None, "file": None}
"""The task this worker runs, and the file where it tells the pool when it last made progress."""


def beat() -> None:
    """Progress in the current task (a page done): its time limit starts again."""
    if _STATE["task"] is not None:
        _report(_STATE["task"])


def _report(task: int | None) -> None:
    """Tell the pool which task this worker runs (None: idle) and that it just made progress."""
    import json
    import os
    import time

    if _STATE["file"] is None:
        return
    tmp = _STATE["file"] + ".tmp"
    with open(tmp, "w") as f:
        json.dump({"task": task, "beat": time.time()}, f)
    os.replace(tmp, _STATE["file"])


def _call(fn: Callable, args: tuple, task: int | None = None):
    """Run a task in a worker, its exception turned into a TaskError carrying the same words
    (IngestError messages as they are, others with their type)."""
    _STATE["task"] = task
    _report(task)
    try:
        return fn(*args)
    except Exception as e:
        raise TaskError(describe_error(e)) from None
    finally:
        _STATE["task"] = None
        _report(None)


def _rss_mb(pid: int) -> float | None:
    """Resident memory of a process (Linux), None where it cannot be read."""
    import os

    try:
        with open(f"/proc/{pid}/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (OSError, ValueError, IndexError):
        return None


def _worker_start(initializer, initargs, parent: int, status: str | None = None) -> None:
    """A worker's start: it exits on its own when the process that started it dies (a kill -9
    of the run must not leave workers blocked on a pipe), reports its task's progress under
    `status` (PID.json, read by the pool to apply its limits), then runs `initializer`."""
    import os
    import threading
    import time

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(0.5)
        os._exit(1)

    threading.Thread(target=watch, daemon=True).start()
    if status is not None:
        _STATE["file"] = os.path.join(status, f"{os.getpid()}.json")
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
                 initargs: tuple = (), limits: Limits | None = None) -> None:
        import tempfile

        self.workers = workers
        self.initializer, self.initargs = initializer, initargs
        self.retries = retries
        self.limits = limits
        self.status = tempfile.mkdtemp(prefix="mmlong-pool-") if workers > 1 else None
        self.stopped: dict[int, str] = {}
        """Tasks the pool stopped at a limit (their worker killed), with the reason."""
        self.executor = self._start() if workers > 1 else None
        self.inflight: dict[Future, tuple[Hashable, Callable, tuple]] = {}
        self.ids: dict[Future, int] = {}
        self.next_id = 0
        self.crashes: dict[Hashable, int] = {}
        self.succeeded = 0

    def _start(self) -> ProcessPoolExecutor:
        import os

        return ProcessPoolExecutor(self.workers, mp_context=multiprocessing.get_context("spawn"), initializer=_worker_start,
                                   initargs=(self.initializer, self.initargs, os.getpid(), self.status))

    def __len__(self) -> int:
        """Tasks submitted and not yet returned by `wait`."""
        return len(self.inflight)

    def submit(self, key: Hashable, fn: Callable, *args) -> None:
        if self.executor is None:
            fut = run_inline(fn, *args)
        else:
            self.next_id += 1
            try:
                fut = self.executor.submit(_call, fn, args, self.next_id)
            except BrokenProcessPool:  # broke since the last wait: the tasks in flight report it
                fut = Future()
                fut.set_exception(BrokenProcessPool("the pool broke before the task started"))
            self.ids[fut] = self.next_id
        self.inflight[fut] = (key, fn, args)

    def wait(self) -> list[Done]:
        """Block until at least one task finishes (or fails for good) and return those."""
        out: list[Done] = []
        while self.inflight and not out:
            done, _ = wait(self.inflight, timeout=0.5 if self.limits else None, return_when=FIRST_COMPLETED)
            if not done:
                self._police()
                continue
            broken = False
            for fut in done:
                key, fn, args = self.inflight.pop(fut)
                try:
                    out.append(Done(key, fut.result()))
                    self.succeeded += 1
                except BrokenProcessPool:
                    broken = True
                    self.inflight[fut] = (key, fn, args)  # rerun below with everything else in flight
                    continue
                except Exception as e:
                    out.append(Done(key, error=e))
                self.ids.pop(fut, None)
            if broken:
                out += self._restart()
        return out

    def _restart(self) -> list[Done]:
        """The executor is broken: what is still in flight will not finish. Rerun each such
        task in a new one; a task that has crashed `retries` times already fails."""
        tasks = list(self.inflight.items())
        ids = {fut: self.ids.pop(fut, None) for fut, _ in tasks}
        self.inflight.clear()
        self.executor.shutdown(wait=True, cancel_futures=True)
        stopped, self.stopped = self.stopped, {}
        self._clear_status()
        self.executor = self._start()
        out: list[Done] = []
        for fut, (key, fn, args) in tasks:
            if fut.done() and not fut.cancelled() and fut.exception() is None:  # finished before the crash
                out.append(Done(key, fut.result()))
                self.succeeded += 1
                continue
            if ids[fut] in stopped:
                out.append(Done(key, error=LimitExceeded(stopped[ids[fut]])))
                continue
            if stopped:  # taken down with a task stopped at a limit: not a crash of its own
                self.submit(key, fn, *args)
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

    def _police(self) -> None:
        """Kill the workers whose task went past a limit (the executor then breaks and
        `_restart` fails those tasks). From the parent: a worker inside a C call that holds
        the GIL (a renderer drawing a billion paths) cannot stop itself."""
        import json
        import os
        import signal
        import time

        for name in os.listdir(self.status):
            if not name.endswith(".json"):
                continue
            pid = int(name[:-5])
            try:
                with open(os.path.join(self.status, name)) as f:
                    state = json.load(f)
            except (OSError, ValueError):
                continue
            task = state.get("task")
            if task is None or task in self.stopped:
                continue
            quiet = time.time() - state.get("beat", time.time())
            used = _rss_mb(pid) if self.limits.memory_mb is not None else None
            if self.limits.seconds is not None and quiet > self.limits.seconds:
                why = f"{self.limits.what} exceeded {self.limits.seconds:g} s"
            elif used is not None and used > self.limits.memory_mb:
                why = f"{self.limits.what} exceeded {self.limits.memory_mb} MB of memory ({used:.0f} MB)"
            else:
                continue
            self.stopped[task] = why
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    def _clear_status(self) -> None:
        """Forget the status files of workers that are gone (the executor was shut down)."""
        import os

        for name in os.listdir(self.status):
            try:
                os.remove(os.path.join(self.status, name))
            except OSError:
                pass

    def cancel(self) -> list[Hashable]:
        """Forget every task in flight; returns their keys."""
        keys = [key for key, _, _ in self.inflight.values()]
        for fut in self.inflight:
            fut.cancel()
        self.inflight.clear()
        self.ids.clear()
        return keys

    def close(self) -> None:
        import shutil

        if self.executor is not None:
            self.executor.shutdown(wait=True, cancel_futures=True)
            self.executor = None
        if self.status is not None:
            shutil.rmtree(self.status, ignore_errors=True)
            self.status = None

    def __enter__(self) -> Pool:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
