"""Decoding processes for `emofs extract`: a spawn pool that yields prepared clips in order.

The workers are plain processes that never import torch (a second faster to start and a
few hundred MB lighter than DataLoader workers). At most ``prefetch`` clips are in flight,
so memory stays bounded whatever the archive size.

A worker that dies (a decoder crashing on a file, the OS killing it) breaks the pool. The
clips that were in flight are then prepared again one at a time in a fresh one-process
pool: a clip that kills that process too gets an error result (an ``errors.lance`` row)
and every other clip goes through, so one bad file never stops a run.

A worker whose parent dies (``kill -9`` of ``emofs extract`` / ``emofs label``) exits
within a second (:func:`exit_with_parent`) instead of lingering with parent 1.
"""

from __future__ import annotations

from collections import deque
from typing import Any, Callable, Iterable, Iterator

from featurestore.errors import EmofsError

from .media import MediaConfig
from .prepare import Job, built_in_this_process, empty_result, error_message, in_worker_refs, prepare_clip

__all__ = ["prepared", "cores", "parse_workers", "resolve_workers", "exit_with_parent", "CRASHED"]

#: The error recorded for a clip whose preparation kills its process every time.
CRASHED = "the decoding process died on this file twice (a decoder crash, or killed for memory)"

_WORKER_STATE: dict[str, Any] = {}
#: Input bytes of prepared clips in flight at most (:func:`prepared`): 32 jobs of 16 face
#: crops (2.4 MB each) would otherwise wait as 86 MB in the main process.
IN_FLIGHT_BYTES = 32 << 20
#: How often a worker checks that its parent is alive (seconds).
_PARENT_POLL_S = 1.0


def _init_worker(worker_refs: tuple, media: MediaConfig, decode_threads: int,
                 parent_pid: int | None = None) -> None:
    """(In each decoding process) its share of the cores; build the in-worker encoders;
    exit with the parent (``parent_pid``)."""
    import signal

    if parent_pid is not None:
        exit_with_parent(parent_pid)
    import cv2

    # Ctrl-C is the main process's to handle: it stops feeding clips and lets the ones
    # being decoded finish, instead of every worker printing a traceback.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    cv2.setNumThreads(1)
    _WORKER_STATE["media"], _WORKER_STATE["threads"] = media, decode_threads
    _WORKER_STATE["encoders"] = built_in_this_process(worker_refs)


def exit_with_parent(parent_pid: int, interval_s: float = _PARENT_POLL_S) -> None:
    """(In a worker process) end this process within ``interval_s`` of its parent's death.

    A parent killed with SIGKILL runs no cleanup, and the pool's queues stay open (every
    worker holds their write ends), so without this its workers (~220 MB each) would wait
    for work forever with parent 1. A daemon thread polls ``os.getppid()``: once it no
    longer is ``parent_pid`` the process was re-parented and exits at once, even while its
    main thread is inside a decoder.
    """
    import os
    import threading
    import time

    def watch() -> None:
        while os.getppid() == parent_pid:
            time.sleep(interval_s)
        os._exit(1)

    threading.Thread(target=watch, name="emofs-exit-with-parent", daemon=True).start()


def prepare_in_worker(job: Job) -> dict[str, Any]:
    """(In a decoding process) :func:`prepare_clip` with this process's settings.

    Any unexpected failure becomes the clip's error, so the run goes on without it.
    """
    try:
        return prepare_clip(job, _WORKER_STATE["media"], _WORKER_STATE["encoders"], _WORKER_STATE["threads"])
    except Exception as exc:  # noqa: BLE001 - one clip's failure must not stop the run
        return empty_result(job, error=f"preparing failed ({error_message(exc)})"[:500])


def _ping() -> bool:
    return True


def cores() -> int:
    """CPU cores this process may run on."""
    import os

    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def parse_workers(value: int | str) -> int | str:
    """``--workers``: ``auto`` or a count >= 0 (0 decodes in the main process)."""
    from featurestore.errors import InputError

    text = str(value).strip().lower()
    if text == "auto":
        return "auto"
    if not text.isdigit():
        raise InputError(f"--workers must be auto or a number >= 0 (got {value!r}; 0 decodes in-process)")
    return int(text)


def resolve_workers(workers: int | str, device: str) -> int:
    """Decoding processes for ``workers`` (``auto``: one per core on CPU, where decoding
    is most of the work and torch keeps the rest; all cores but the one feeding the GPU
    otherwise; at most 16, about 250 MB each)."""
    if workers != "auto":
        return int(workers)
    return max(1, min(16, cores() if device == "cpu" else cores() - 1))


def prepared(jobs: list[Job], media: MediaConfig, workers: int, prefetch: int = 32,
             worker_encoders: Iterable = (), task: Callable[[Job], dict] = prepare_in_worker,
             max_bytes: int = IN_FLIGHT_BYTES) -> Iterator[dict[str, Any]]:
    """Prepared clips in job order; decoding runs in ``workers`` spawned processes.

    Args:
        jobs: the clips to prepare.
        media: decoding settings.
        workers: decoding processes; 0 prepares in this process.
        prefetch: clips in flight at most (about twice the encoder batch keeps workers busy
            while the main process encodes).
        worker_encoders: loaded encoders; those with ``in_worker`` run beside the decode.
        task: what a worker runs per job (tests swap in a crashing one).
        max_bytes: input bytes in flight at most, estimated from the clips prepared so far
            (decoded clips wait in this process until taken); two jobs per worker always.
    """
    worker_encoders = [e for e in worker_encoders if e.in_worker]
    if workers == 0 or len(jobs) == 0:
        for job in jobs:
            yield prepare_clip(job, media, worker_encoders)
        return
    from concurrent.futures.process import BrokenProcessPool

    refs = in_worker_refs(worker_encoders)
    n_workers = min(workers, len(jobs))
    share = max(1, cores() // n_workers)  # FFmpeg threads per worker
    start = _Starter(refs, media, share)
    window = max(prefetch, n_workers)
    floor = min(window, 2 * n_workers)  # each worker busy, with one job queued behind
    queue = iter(jobs)
    in_flight: deque = deque()
    done, done_bytes = 0, 0  # clips prepared so far (without errors), their input bytes

    def fill() -> None:
        """Submit jobs while the window (count, and bytes at the mean clip's size) has room."""
        while len(in_flight) < window and (
                len(in_flight) < floor or (done and (len(in_flight) + 1) * done_bytes <= max_bytes * done)):
            following = next(queue, None)
            if following is None:
                return
            in_flight.append((following, _submit(pool, task, following)))

    pool = start(n_workers)
    fill()
    try:
        while in_flight:
            job, future = in_flight.popleft()
            try:
                item = future.result()
            except BrokenProcessPool:
                pool.shutdown(wait=True, cancel_futures=True)
                suspects = [job, *(j for j, _ in in_flight)]
                in_flight.clear()
                yield from _one_at_a_time(suspects, start, task)
                pool = start(n_workers)
                fill()
                continue
            if item["error"] is None:  # a failed clip says nothing of the others' size
                done += 1
                done_bytes += sum(getattr(v, "nbytes", 0) for v in item["inputs"].values())
            fill()
            yield item
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def _submit(pool, task, job: Job):
    """``pool.submit``; a pool that broke meanwhile gives a future holding that error, so
    it is handled where results are read (submit itself would raise it)."""
    from concurrent.futures import Future
    from concurrent.futures.process import BrokenProcessPool

    try:
        return pool.submit(task, job)
    except BrokenProcessPool as exc:
        failed: Future = Future()
        failed.set_exception(exc)
        return failed


class _Starter:
    """Starts decoding pools with the same settings (checked to come up before use)."""

    def __init__(self, refs: tuple, media: MediaConfig, decode_threads: int):
        import os

        self.initargs = (refs, media, decode_threads, os.getpid())

    def __call__(self, n_workers: int):
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor
        from concurrent.futures.process import BrokenProcessPool

        pool = ProcessPoolExecutor(n_workers, mp_context=multiprocessing.get_context("spawn"),
                                   initializer=_init_worker, initargs=self.initargs)
        try:
            pool.submit(_ping).result()
        except BrokenProcessPool as exc:
            pool.shutdown(wait=False)
            raise EmofsError("the decoding processes cannot start (see the messages above): "
                             "pass --workers 0 to decode in this process") from exc
        return pool


def _one_at_a_time(jobs: list[Job], start: _Starter, task) -> Iterator[dict[str, Any]]:
    """Prepare ``jobs`` one by one in a one-process pool; a job that kills it gets CRASHED."""
    from concurrent.futures.process import BrokenProcessPool

    solo = start(1)
    try:
        for job in jobs:
            try:
                item = _submit(solo, task, job).result()
            except BrokenProcessPool:
                solo.shutdown(wait=True)
                item = empty_result(job, error=CRASHED)
                solo = start(1)
            yield item
    finally:
        solo.shutdown(wait=True)
