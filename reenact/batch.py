"""Batch rendering: many reference × driver jobs, continuing past failures, with a summary.

Jobs come from a CSV file (`read_jobs`: columns reference, driver, output[, options]) or from
all pairs of two folders (`pair_jobs`). `run_batch` renders them one after another — image jobs
(the driver is a photo) with `reenact_image`, video jobs (a video or a folder of frames) with
`reenact_video` — and records each outcome; a failing job (no face, unreadable file, an
unexpected error…) never stops the batch. `run_job` is one job of that loop (a Ray worker runs
it too: `reenact.farm`). `write_summary` writes summary.csv and summary.json.
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import json
import os
import shlex
import tempfile
import time
import traceback
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

from reenact import media
from reenact.config import InferenceConfig, MotionConfig, VideoOptions
from reenact.errors import Interrupted, MediaError, ReenactError, UsageError, from_os_error

COLUMNS = ("reference", "driver", "output", "options")


@dataclass(frozen=True)
class Job:
    """One render. `options`: extra command-line options for this job only (CSV column)."""

    reference: Path
    driver: Path
    output: Path
    options: tuple[str, ...] = ()

    @property
    def kind(self) -> str:
        """"image" when the driver is a photo, else "video" (a video file or a frame folder)."""
        d = self.driver
        return "image" if d.suffix.lower() in media.IMAGE_SUFFIXES and not d.is_dir() else "video"


@dataclass
class JobResult:
    """Outcome of a job. status: "ok", "failed", "skipped" (output exists, --resume) or
    "not run" (the batch was interrupted first); exit_code: what `reenact image|video` would
    have returned (0 ok, 3 no face, 4 bad input, 5 output problem, 1 other/unexpected, …);
    error_class: the error's kind (e.g. NoFaceFound)."""

    index: int
    reference: str
    driver: str
    output: str
    status: str = "not run"
    exit_code: int | None = None
    error_class: str = ""
    error: str = ""
    seconds: float = 0.0
    frames: int = 0


def default_name(reference: Path, driver: Path) -> str:
    suffix = ".png" if driver.suffix.lower() in media.IMAGE_SUFFIXES and not driver.is_dir() else ".mp4"
    return f"{reference.stem}-as-{driver.stem}{suffix}"


def read_jobs(csv_path: str | Path, out_dir: str | Path | None = None) -> list[Job]:
    """Jobs of a CSV file: reference, driver[, output[, options]] per row; an optional header
    row naming these columns; blank rows and rows starting with # skipped. Relative inputs are
    taken from the CSV's folder, relative outputs are put in `out_dir` (default: the CSV's
    folder); an empty output means REF-as-DRIVER.png|.mp4. Options are shell-quoted words."""
    path = Path(csv_path).expanduser()
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as e:
        raise MediaError(f"cannot read the job list {path}: {e}", "give a UTF-8 CSV file") from None
    if "\0" in text:  # no path can hold one
        raise MediaError(f"the job list {path} holds NUL bytes: not a text CSV file", "give a UTF-8 CSV file")
    try:
        rows = list(csv.reader(text.splitlines(), strict=True))
    except csv.Error as e:  # an unbalanced quote: the row would swallow the next cells
        raise UsageError(f"{path}: not a valid CSV file ({e})", "balance the quotes of every cell") from None
    base = path.parent
    out = Path(out_dir).expanduser() if out_dir else base
    jobs = []
    for n, row in enumerate(rows, 1):
        cells = [c.strip() for c in row]
        if not any(cells) or cells[0].startswith("#") or (n == 1 and cells[0].lower() == "reference"):
            continue
        if len(cells) < 2 or not cells[0] or not cells[1]:
            raise UsageError(f"{path}, line {n}: needs at least a reference and a driver",
                             f"columns: {', '.join(COLUMNS)}")
        if len(cells) > len(COLUMNS) and any(cells[len(COLUMNS):]):
            raise UsageError(f"{path}, line {n}: {len(cells)} cells, at most {len(COLUMNS)}",
                             f"columns: {', '.join(COLUMNS)}; quote an options cell holding commas")
        ref, drv = base / cells[0], base / cells[1]
        name = cells[2] if len(cells) > 2 and cells[2] else default_name(ref, drv)
        options = split_options(cells[3], f"{path}, line {n}") if len(cells) > 3 else ()
        jobs.append(Job(ref, drv, out / name, options))
    if not jobs:
        raise UsageError(f"{path} lists no jobs", f"one row per job: {', '.join(COLUMNS)}")
    _check_distinct_outputs(jobs, path)
    return jobs


def split_options(text: str, where: str) -> tuple[str, ...]:
    """Shell-quoted option words → a tuple; UsageError (naming `where`) for unbalanced quotes."""
    try:
        return tuple(shlex.split(text))
    except ValueError as e:
        raise UsageError(f"{where}: cannot split the options {text!r}: {e}",
                         "balance the quotes, e.g. --ref \"my photo.jpg\"") from None


def _check_distinct_outputs(jobs: list[Job], source: Path) -> None:
    """UsageError when two jobs would write one file (one result would be silently lost)."""
    seen: dict[str, int] = {}
    for i, job in enumerate(jobs):
        key = os.path.normcase(os.path.abspath(job.output))
        if key in seen:
            raise UsageError(f"{source}: jobs {seen[key] + 1} and {i + 1} would both write {job.output}",
                             "give every job its own output name")
        seen[key] = i


def prepare_output(out_dir: str | Path) -> Path:
    """Create the batch's output folder if missing and check that files can be written in it
    (summary.csv is written there even when every job fails). Raises OutputError."""
    out = Path(out_dir).expanduser()
    created = not out.exists()
    try:
        out.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".reenact-probe-", dir=out)
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        if created:  # leave nothing behind
            with contextlib.suppress(OSError):
                out.rmdir()
        raise from_os_error(e, "output", hint="choose an output folder you can write to") from None
    return out


def pair_jobs(refs: str | Path, drivers: str | Path, out_dir: str | Path) -> list[Job]:
    """Every reference in `refs` (photos, or videos: video-to-video) × every driver in `drivers`
    (photos, videos, and sub-folders of frames), outputs REF-as-DRIVER.png|.mp4 in `out_dir`."""
    ref_dir, drv_dir, out = (Path(p).expanduser() for p in (refs, drivers, out_dir))
    for d in (ref_dir, drv_dir):
        if not d.is_dir():
            raise MediaError(f"{d} is not a folder", "--refs and --drivers take folders")
    ref_files = [p for p in sorted(ref_dir.iterdir())  # photos, or videos (video-to-video)
                 if p.suffix.lower() in media.IMAGE_SUFFIXES | media.VIDEO_SUFFIXES]
    drv_files = [p for p in sorted(drv_dir.iterdir()) if not p.name.startswith(".") and
                 (p.is_dir() or p.suffix.lower() in media.IMAGE_SUFFIXES | media.VIDEO_SUFFIXES)]
    if not ref_files or not drv_files:
        raise MediaError(f"no {'photos in ' + str(ref_dir) if not ref_files else 'drivers in ' + str(drv_dir)}",
                         "references are photos or videos; drivers are photos, videos or folders of frames")
    jobs = [Job(r, d, out / default_name(r, d)) for r in ref_files for d in drv_files]
    names = [j.output.name for j in jobs]
    clash = sorted({n for n in names if names.count(n) > 1})
    if clash:
        raise UsageError(f"several jobs would write {clash[0]}", "rename inputs that differ only in their suffix")
    return jobs


Settings = Callable[[Job], "tuple[InferenceConfig, VideoOptions]"]
JobProgress = Callable[[str, int, "int | None"], None]


def run_batch(jobs: list[Job], settings: Settings, *, overwrite: bool = False, resume: bool = False,
              on_start: Callable[[int, Job], JobProgress | None] | None = None,
              on_end: Callable[[JobResult], None] | None = None) -> list[JobResult]:
    """Render every job; returns one result per job (in order). `settings(job)` gives the job's
    (config, video options) and may raise UsageError (that job fails). With `resume`, jobs whose
    output exists are skipped and unfinished video renders continue. `on_start(i, job)` may
    return a progress callback for that job; `on_end(result)` is called after each job.
    KeyboardInterrupt stops the batch: the remaining results stay "not run" and it is re-raised
    with the results attached as `results`. (`reenact.farm.run_batch`: the same on Ray.)"""
    results = new_results(jobs)
    for i, (job, res) in enumerate(zip(jobs, results)):
        progress = on_start(i, job) if on_start else None
        try:
            run_job(job, res, settings, overwrite=overwrite, resume=resume, progress=progress)
        except KeyboardInterrupt as e:
            e.results = results  # type: ignore[attr-defined]
            raise
        if on_end:
            on_end(res)
    return results


def new_results(jobs: list[Job]) -> list[JobResult]:
    """One "not run" result per job, in order."""
    return [JobResult(i, str(j.reference), str(j.driver), str(j.output)) for i, j in enumerate(jobs)]


def run_job(job: Job, res: JobResult, settings: Settings, *, overwrite: bool = False, resume: bool = False,
            progress: JobProgress | None = None) -> None:
    """Render one job and record its outcome in `res` (status, exit code, error, seconds,
    frames). A failing job (a ReenactError, or any other exception: a bug) is recorded, never
    raised. Ctrl-C raises KeyboardInterrupt; in a video job that kept its completed chunks the
    job is first recorded as failed with exit code 130 (`--resume` continues it)."""
    t0 = time.perf_counter()
    try:
        chosen = settle(job, res, settings, resume=resume)
        if chosen is not None:
            res.frames = _run_job(job, *chosen, overwrite=overwrite, resume=resume, progress=progress)
            res.status, res.exit_code = "ok", 0
    except Interrupted as e:  # Ctrl-C inside a video job that kept its completed chunks
        _failed(res, type(e).__name__, str(e), e.exit_code)
        raise KeyboardInterrupt from None
    except ReenactError as e:
        _failed(res, type(e).__name__, str(e), e.exit_code)
    except Exception as e:  # noqa: BLE001 — a bug in one job must not stop the others
        _failed(res, type(e).__name__, f"unexpected error: {e} ({_where(e)})", 1)
    finally:
        res.seconds = round(time.perf_counter() - t0, 3)


def settle(job: Job, res: JobResult, settings: Settings, *, resume: bool = False):
    """The job's (config, video options); None when it needs no render, recorded in `res`:
    skipped (`resume` and its output exists) or failed (`settings` raised: bad options)."""
    if resume and job.output.exists():
        res.status, res.exit_code = "skipped", 0
        return None
    try:
        return settings(job)
    except Interrupted:  # Ctrl-C: run_job's to handle
        raise
    except ReenactError as e:
        _failed(res, type(e).__name__, str(e), e.exit_code)
    except Exception as e:  # noqa: BLE001 — as in run_job
        _failed(res, type(e).__name__, f"unexpected error: {e} ({_where(e)})", 1)
    return None


def _failed(res: JobResult, cls: str, message: str, code: int) -> None:
    res.status, res.error_class, res.error, res.exit_code = "failed", cls, message, code


def _where(e: BaseException) -> str:
    tb = traceback.extract_tb(e.__traceback__)
    return f"{Path(tb[-1].filename).name}:{tb[-1].lineno}" if tb else "?"


def _run_job(job: Job, config: InferenceConfig, options: VideoOptions, *, overwrite: bool, resume: bool,
             progress: JobProgress | None) -> int:
    """Render one job; returns the frames written (1 for an image)."""
    from reenact import pipeline, video

    if job.kind == "image":
        m = options.motion
        motion_cfg = MotionConfig(mode="absolute", transfer=m.transfer, regions=m.regions)
        media.check_output_path(job.output, overwrite=overwrite, kinds=media.WRITABLE_IMAGE_SUFFIXES,
                                inputs=(job.reference, job.driver))
        result = pipeline.reenact_image(job.reference, job.driver, config, motion_cfg=motion_cfg,
                                        ref_face=options.ref_face, driver_face=options.driver_face)
        media.write_image(job.output, result.image, overwrite=overwrite)
        return 1
    opts = dataclasses.replace(options, resume=resume or options.resume)
    return video.reenact_video(job.reference, job.driver, job.output, config, options=opts,
                               overwrite=overwrite, progress=progress).frames


def write_summary(results: list[JobResult], out_dir: str | Path) -> tuple[Path, Path]:
    """summary.csv and summary.json in `out_dir` (JSON adds totals per status)."""
    out = Path(out_dir)
    rows = [asdict(r) for r in results]
    csv_path, json_path = out / "summary.csv", out / "summary.json"
    with open(csv_path, "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]) if rows else list(JobResult.__dataclass_fields__))
        w.writeheader()
        w.writerows(rows)
    totals = {s: sum(r.status == s for r in results) for s in ("ok", "failed", "skipped", "not run")}
    json_path.write_text(json.dumps({"totals": totals, "jobs": rows}, indent=1), encoding="utf-8")
    return csv_path, json_path
