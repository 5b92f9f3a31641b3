"""Batch jobs on Ray: a render farm (`reenact batch ... --ray [ADDRESS]`).

`connect` joins a Ray cluster (or starts a local Ray instance) for the length of a `with` block;
`run_batch` then renders the jobs of `reenact.batch` as Ray tasks, one task per job, and returns
the same `JobResult`s as the local `batch.run_batch`, so summary.csv is the same, a failing job
never stops the others, and `--resume` skips finished outputs and continues unfinished videos.

* A task runs `batch.run_job` — the body of the local batch loop — in a Ray worker process. The
  worker keeps the engines it built (`engines.keep_engines`), so a worker that renders many jobs
  loads each model once; a video is streamed chunk by chunk, as locally.
* A job's settings are resolved here, in the driver, before any task starts, so a bad option
  fails its job exactly as locally; jobs whose output exists under `resume` are skipped here.
* A task whose worker dies (killed, out of memory, its node lost) fails that job only (exit code
  1; `--resume` continues an unfinished video from its completed chunks). Tasks are never retried:
  a job that kills its worker would only kill the next one.
* Progress: workers post (stage, done, total) of their job to a small actor (`_Board`, no CPU)
  that the driver polls while it waits for results.
* Files: a worker reads the inputs and writes the outputs at the paths the driver sees (relative
  ones from the driver's working folder), so on a cluster they must be on a file system every
  node mounts at the same place.

This module is the only Ray user; `ray` is an optional dependency (the `[ray]` extra) imported
only when a batch runs on Ray.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import socket
import time
from pathlib import Path
from typing import Callable, Iterator
from urllib.parse import urlsplit

from reenact.batch import Job, JobProgress, JobResult, Settings, new_results, run_job, settle
from reenact.config import PROCESS_ENV
from reenact.errors import ReenactError, UsageError

POLL_SECONDS = 0.5  # how often the driver collects results and progress
REPORT_SECONDS = 0.5  # how often a worker posts its job's progress (and at every new stage)
CONNECT_TIMEOUT = 10.0  # seconds to reach a given cluster address before giving up
CANCEL_WAIT = 20.0  # seconds running jobs get to stop cleanly after Ctrl-C


def _ray():
    """The optional ray module, or a ReenactError saying how to install it."""
    try:
        import ray
    except ImportError:
        raise ReenactError("--ray needs the optional ray package",
                           'install it with: pip install "reenact-face[ray]"') from None
    return ray


@contextlib.contextmanager
def connect(address: str | None = None, *, cpus: int | None = None) -> Iterator[dict]:
    """Connect to a Ray cluster for the block; yields its resources ({"CPU": 2.0, …}).

    `address`: None — the cluster in RAY_ADDRESS or one `ray start` runs on this machine, else a
    new local Ray instance (`cpus` CPUs, default all); "local" — always a new local instance;
    "auto" — the cluster `ray start` runs here;
    "HOST:PORT" — a cluster's head node (its GCS port, 6379 by default); "ray://HOST:PORT" —
    through Ray Client (needs `ray[client]`). Raises ReenactError (exit 1) when ray is not
    installed or the cluster cannot be reached (a TCP probe first: Ray itself keeps retrying an
    unreachable address for minutes)."""
    ray = _ray()
    given = None if address == "local" else address or os.environ.get("RAY_ADDRESS") or None  # a cluster to reach
    if given:
        _probe(given)
    try:
        # Connecting: 1 try, not 20, on a port that answers but is not Ray's (~40 s, not ~12 min).
        # Not when starting an instance: the same variable is its GCS's start-up allowance. An
        # instance started here does not send Ray's usage statistics unless the user asks.
        with _environ(RAY_gcs_server_port_wait_time_s="1" if given else None,
                      RAY_USAGE_STATS_ENABLED=None if given else "0"):
            ray.init(address=address or None, num_cpus=cpus if not given else None, include_dashboard=False,
                     log_to_driver=False, logging_level=logging.ERROR, runtime_env={"env_vars": PROCESS_ENV})
    except (ConnectionError, ValueError, RuntimeError, TimeoutError) as e:
        hint = "check the address: the head node's HOST:PORT (6379 by default), auto, or ray://HOST:10001"
        if given and not os.environ.get("RAY_AUTH_MODE"):
            hint += ("; a cluster started by `ray start` checks a token: set RAY_AUTH_MODE=token and give its "
                     "token (~/.ray/auth_token or RAY_AUTH_TOKEN)")
        elif not given:
            hint = "Ray's logs are in /tmp/ray/session_latest/logs; an earlier `ray start`'s stale address: `ray stop`"
        raise ReenactError(f"cannot connect to Ray ({given or 'a new local instance'}): {e}", hint) from None
    try:
        _check_workers(ray)
        yield dict(ray.cluster_resources())
    finally:
        ray.shutdown()


@contextlib.contextmanager
def _environ(**values: str | None) -> Iterator[None]:
    """Environment variables set (those not set already; None: left alone) for the block."""
    added = {k: v for k, v in values.items() if v is not None and k not in os.environ}
    os.environ.update(added)
    try:
        yield
    finally:
        for k in added:
            os.environ.pop(k, None)


def _check_workers(ray) -> None:
    """ReenactError unless a Ray worker can run this reenact (installed there, the same version)."""
    from reenact import __version__

    try:
        theirs = ray.get(ray.remote(_version).options(num_cpus=0).remote(), timeout=300)
    except ray.exceptions.RayError as e:
        cause = getattr(e, "cause", None) or e
        raise ReenactError(f"the Ray workers cannot run reenact: {type(cause).__name__}: "
                           f"{str(cause).strip().splitlines()[-1][:300]}",
                           f'install it on every node: pip install "reenact-face[ray]=={__version__}"') from None
    if theirs != __version__:
        raise ReenactError(f"the Ray workers run reenact {theirs}, this is {__version__}",
                           f'install the same version on every node: pip install "reenact-face[ray]=={__version__}"')


def _version() -> str:
    """(A Ray task) the reenact version a worker imports."""
    from reenact import __version__

    return __version__


def check_resources(cluster: dict, *, job_cpus: float, job_gpus: float) -> None:
    """UsageError when the cluster (`connect`'s resources) has less than one job asks for: such a
    task would wait for ever."""
    for name, need in (("CPU", job_cpus), ("GPU", job_gpus)):
        have = cluster.get(name, 0.0)
        if need > have:
            raise UsageError(f"each job asks for {need:g} {name}{'s' if need != 1 else ''}; the Ray cluster has {have:g}",
                             f"lower --job-{name.lower()}s, or add nodes with {name}s")


def _probe(address: str) -> None:
    """ReenactError unless something listens at a HOST:PORT / ray://HOST:PORT address."""
    if address in ("auto", "local"):
        return
    parts = urlsplit(address if "://" in address else f"tcp://{address}")
    try:
        host, port = parts.hostname, parts.port
    except ValueError:
        host, port = None, None
    if not host or not port:
        raise ReenactError(f"bad Ray address {address!r}", "give HOST:PORT (the head node's GCS port, "
                           "6379 by default), ray://HOST:10001, or auto")
    try:
        with socket.create_connection((host, port), timeout=CONNECT_TIMEOUT):
            pass
    except OSError as e:
        reason = "timed out" if isinstance(e, socket.timeout) else (e.strerror or str(e))
        raise ReenactError(f"cannot reach the Ray cluster at {address}: {reason}",
                           "is the head node running (`ray start --head`) and is the port open?") from None


def run_batch(jobs: list[Job], settings: Settings, *, overwrite: bool = False, resume: bool = False,
              job_cpus: float = 1.0, job_gpus: float = 0.0,
              on_start: Callable[[int, Job], JobProgress | None] | None = None,
              on_end: Callable[[JobResult], None] | None = None) -> list[JobResult]:
    """`batch.run_batch` with every job a Ray task (`job_cpus` CPUs, `job_gpus` GPUs each), run
    in parallel on the cluster `connect` joined. Returns one result per job, in order;
    `on_start(i, job)` is called when a worker starts job i (it may return a progress callback),
    `on_end(result)` when it ends, in the order jobs finish. KeyboardInterrupt cancels the tasks
    (a running video keeps its completed chunks: failed, exit code 130; queued jobs stay "not
    run") and is re-raised with the results attached as `results`."""
    ray = _ray()
    results = new_results(jobs)
    board = ray.remote(num_cpus=0)(_Board).remote() if on_start else None
    # max_calls=0: a worker runs any number of jobs, keeping its engine (Ray's default for GPU
    # tasks is a new worker per task); max_retries=0: a job that killed its worker is not rerun.
    task = ray.remote(num_cpus=job_cpus, num_gpus=job_gpus, max_calls=0, max_retries=0)(_render)
    pending: dict = {}
    for job, res in zip(jobs, results):
        config = settle(job, res, settings, resume=resume)  # the local job's checks, here
        if config is None:
            if on_end:
                on_end(res)
            continue
        pending[task.remote(job, os.getcwd(), res, *config, overwrite, resume, board)] = res.index
    progress: dict[int, JobProgress | None] = {}
    try:
        _collect(ray, pending, results, board, progress, jobs, on_start, on_end)
    except KeyboardInterrupt as e:
        _cancel(ray, pending, results, progress)
        e.results = results  # type: ignore[attr-defined]
        raise
    finally:
        if board is not None:
            ray.kill(board)
    return results


def _collect(ray, pending: dict, results: list[JobResult], board, progress: dict, jobs: list[Job],
             on_start, on_end) -> None:
    """Wait for every pending task, forwarding progress reports; fills `results`."""
    while pending:
        done, _ = ray.wait(list(pending), num_returns=len(pending), timeout=POLL_SECONDS)
        if board is not None:
            running = set(pending.values())  # a report can arrive after its job's result
            for i, (stage, n, total) in sorted(ray.get(board.take.remote()).items()):
                if i not in running:
                    continue
                if i not in progress:
                    progress[i] = on_start(i, jobs[i])
                if progress[i] is not None and stage:
                    progress[i](stage, n, total)
        for ref in done:
            i = pending.pop(ref)
            _receive(ray, ref, results[i])
            if on_end:
                on_end(results[i])


def _receive(ray, ref, res: JobResult) -> None:
    """The task's result into `res`; a task that did not return (its worker died) fails its job.
    TaskCancelledError (Ctrl-C) is raised."""
    try:
        got = ray.get(ref)
    except ray.exceptions.TaskCancelledError:
        raise
    except ray.exceptions.RayTaskError as e:  # an exception escaped run_job: a bug
        cause = getattr(e, "cause", None) or e
        res.status, res.exit_code, res.error_class = "failed", 1, type(cause).__name__
        res.error = f"unexpected error in a Ray worker: {cause}"
    except ray.exceptions.RayError as e:  # WorkerCrashedError, OutOfMemoryError, a node lost…
        res.status, res.exit_code, res.error_class = "failed", 1, type(e).__name__
        res.error = ("the Ray worker rendering this job died (killed, out of memory, or its node was lost); "
                     f"an unfinished video continues with --resume [{str(e).strip().splitlines()[0][:200]}]")
    else:
        for f in ("status", "exit_code", "error_class", "error", "seconds", "frames"):
            setattr(res, f, getattr(got, f))


def _cancel(ray, pending: dict, results: list[JobResult], progress: dict) -> None:
    """Ctrl-C: cancel every task; give running ones a little time to stop cleanly. A cancelled
    job that had started fails with exit code 130 (as the local batch's current job); one that
    had not stays "not run"."""
    for ref in pending:
        ray.cancel(ref)
    deadline = time.monotonic() + CANCEL_WAIT
    with contextlib.suppress(KeyboardInterrupt):  # a second Ctrl-C stops waiting
        while pending and time.monotonic() < deadline:
            done, _ = ray.wait(list(pending), num_returns=len(pending), timeout=POLL_SECONDS)
            for ref in done:
                res = results[pending.pop(ref)]
                try:
                    _receive(ray, ref, res)
                except ray.exceptions.TaskCancelledError:
                    if res.index in progress:
                        res.status, res.exit_code, res.error_class = "failed", 130, "Interrupted"
                        res.error = "interrupted (an unfinished video keeps its completed chunks: --resume)"


# ───────────────────────────── in the workers ─────────────────────────────

def _render(job: Job, cwd: str, res: JobResult, config, options, overwrite: bool, resume: bool,
            board) -> JobResult:
    """One job in a Ray worker (the task's function): `batch.run_job` with the engines kept,
    in the driver's working folder `cwd` (so relative paths, and the messages naming them, are
    the local batch's) or, where this node has no such folder, with the paths made absolute."""
    from reenact import engines

    engines.keep_engines()  # kept across the tasks this worker process runs
    if os.path.isdir(cwd):
        os.chdir(cwd)
    else:
        job = dataclasses.replace(job, **{k: Path(cwd, getattr(job, k)) for k in ("reference", "driver", "output")})
    report = _Reporter(board, res.index) if board is not None else None
    if report:
        report("", 0, None)  # started
    run_job(job, res, lambda _: (config, options), overwrite=overwrite, resume=resume, progress=report)
    return res


class _Reporter:
    """A job's progress callback in a worker: posts (stage, done, total) to the board at most
    every REPORT_SECONDS, and at once when the stage changes."""

    def __init__(self, board, index: int) -> None:
        self.board, self.index = board, index
        self.stage, self.last = None, 0.0

    def __call__(self, stage: str, done: int, total: int | None) -> None:
        now = time.monotonic()
        if stage != self.stage or now - self.last >= REPORT_SECONDS or (total and done >= total):
            self.board.post.remote(self.index, stage, done, total)
            self.stage, self.last = stage, now


class _Board:
    """The latest progress report of each running job, taken (and cleared) by the driver.
    A Ray actor (made with ray.remote in `run_batch`: ray is imported only there)."""

    def __init__(self) -> None:
        self.latest: dict[int, tuple] = {}

    def post(self, index: int, stage: str, done: int, total: int | None) -> None:
        if stage or index not in self.latest:
            self.latest[index] = (stage, done, total)

    def take(self) -> dict[int, tuple]:
        latest, self.latest = self.latest, {}
        return latest
