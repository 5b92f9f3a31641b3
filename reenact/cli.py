"""Command-line interface: the only place that prints or exits.

Commands parse options, build a config and call one library function; a `ReenactError` becomes
one red line on stderr and the error's exit code, never a traceback.
"""

from __future__ import annotations

import contextlib
import functools
import os
import signal
import sys
import time
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, ProgressColumn, TextColumn, \
    TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table
from rich.text import Text
from typer.core import TyperCommand, TyperGroup
from typer.exceptions import TyperException

from reenact import __version__
from reenact.config import ENGINES, PROCESS_ENV, InferenceConfig, VideoOptions
from reenact.errors import Interrupted, ReenactError, UsageError, from_os_error

# Parameters naming files the command reads, and files or folders it writes: an OSError on one
# of these paths (or, for outputs, beside them: temp files, the video work folder) is blamed on it.
_INPUT_PARAMS = {"reference", "pose", "driver", "photo", "ref", "jobs", "refs", "drivers", "checkpoint",
                 "config", "pairs", "weights", "source", "identities", "data", "resume"}
_OUTPUT_PARAMS = {"output", "out_dir", "json_out"}
_debug = os.environ.get("REENACT_DEBUG") == "1"  # or --debug: let unexpected errors show a traceback


class _Command(TyperCommand):
    """Every command runs inside this error boundary: user errors, OS errors (mapped by errno
    and path), Ctrl-C and unexpected exceptions become one red line and a documented exit code."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except (typer.Exit, typer.Abort, TyperException):  # Click's own control flow
            raise
        except KeyboardInterrupt:
            _say_interrupted()
        except Exception as e:
            if _interrupted and not isinstance(e, Interrupted):
                # after Ctrl-C / SIGTERM any failure is the interruption's: native code wraps the
                # KeyboardInterrupt in its own error (an extension module's initialisation: an
                # ImportError), a killed ffmpeg breaks its pipe
                _say_interrupted()
            if isinstance(e, ReenactError):
                fail(e)
            if isinstance(e, MemoryError):
                fail(ReenactError("out of memory", "use smaller inputs, or a smaller --size / --max-side"))
            if _debug:  # a traceback for OS errors and bugs, when asked
                raise
            if isinstance(e, OSError):
                fail(from_os_error(e, _path_role(e.filename, ctx.params)))
            fail(ReenactError(f"internal error: {type(e).__name__}: {e}",  # a bug: say so
                              "please report it with the output of the same command run with --debug"))


class _App(TyperGroup):
    """The root group: command-line parsing errors follow the `error:` line convention (exit 2)
    instead of Click's framed usage box."""

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        try:
            rv = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except TyperException as e:  # Click's UsageError family (typer vendors click)
            ctx = getattr(e, "ctx", None)
            if type(e).__name__ == "NoArgsIsHelpError":  # `reenact` alone: the help
                err.print(e.format_message(), markup=False, highlight=False)
                sys.exit(e.exit_code)
            where = f"see: {ctx.command_path} --help" if ctx is not None else "see: reenact --help"
            _print_error(ReenactError(e.format_message(), where))
            sys.exit(e.exit_code)
        except typer.Abort:
            sys.exit(130)
        sys.exit(rv if isinstance(rv, int) else 0)


def _path_role(filename, params: dict) -> str | None:
    """"input", "output" or None: which of the command's paths an OSError's file is."""
    if not filename:
        return None
    p = Path(os.path.abspath(os.fsdecode(filename)))
    found = None
    for name, value in params.items():
        for v in value if isinstance(value, (list, tuple)) else [value]:
            if not isinstance(v, (Path, str)) or name not in _INPUT_PARAMS | _OUTPUT_PARAMS:
                continue
            q = Path(os.path.abspath(v))
            # the path itself, something under it (a folder's files), or a folder on its way
            # (a regular file where a parent folder should be: ENOTDIR, EEXIST)
            on_it = p == q or q in p.parents or (p in q.parents and not p.is_dir())
            if name in _INPUT_PARAMS and on_it:
                return "input"
            if name in _OUTPUT_PARAMS and (on_it or p.parent == q.parent):
                found = "output"
    return found


app = typer.Typer(
    cls=_App,
    name="reenact",
    help="One-shot face reenactment: render a reference face with a driver's head pose and expression.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,
    rich_markup_mode="rich",
    context_settings={"help_option_names": ["-h", "--help"]},
)
out = Console(soft_wrap=True)
err = Console(stderr=True, soft_wrap=True)


def _version(value: bool) -> None:
    if value:
        out.print(f"reenact {__version__}")
        raise typer.Exit()


@app.callback()
def _root(version: bool = typer.Option(False, "--version", "-V", callback=_version, is_eager=True,
                                       help="Print the version and exit."),
          debug: bool = typer.Option(False, "--debug", help="Show the traceback of unexpected errors "
                                     "(for bug reports; also REENACT_DEBUG=1).")) -> None:
    """Face reenactment: landmarks → parsing maps → warp / generators → FusionNet → paste-back."""
    global _debug
    _debug = _debug or debug


def _print_error(e: ReenactError) -> None:
    msg = Text("error: ", style="bold red") + Text(e.message, style="red")
    if e.hint:
        msg += Text(f"\n  hint: {e.hint}", style="dim")
    err.print(msg, soft_wrap=True)


def fail(e: ReenactError) -> None:
    """Print one red line and exit with the error's code."""
    _print_error(e)
    raise typer.Exit(code=e.exit_code)


def run(fn, *args, **kwargs):
    """Call library code, turning user errors and Ctrl-C into clean exits."""
    try:
        return fn(*args, **kwargs)
    except KeyboardInterrupt:
        _say_interrupted()
    except ReenactError as e:
        if _interrupted and not isinstance(e, Interrupted):
            _say_interrupted()
        fail(e)


def _say_interrupted() -> None:
    err.print("[red]interrupted[/] — nothing was written")
    raise typer.Exit(code=130)


class _FpsColumn(ProgressColumn):
    def render(self, task) -> Text:
        if task.fields.get("unit") == "jobs":
            return Text("")
        speed = task.finished_speed or task.speed
        if not speed and task.elapsed and task.completed:  # e.g. after a short estimate grew
            speed = task.completed / task.elapsed
        return Text(f"{speed:5.1f} fps" if speed else "  ?   fps", style="cyan")


def progress_bar() -> Progress:
    return Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                    _FpsColumn(), TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn(),
                    console=err, transient=False)


EngineOpt = typer.Option(None, "--engine", "-e", help=f"Renderer: {', '.join(ENGINES)} "
                         "(default: fusion once bundled weights exist, else warp).")
SizeOpt = typer.Option(256, "--size", help="Model crop side in pixels (multiple of 16).")
OverwriteOpt = typer.Option(False, "--overwrite", "-y", help="Replace an existing output file.")
CropOpt = typer.Option(False, "--crop", help="Write only the aligned face crop.")
CompareOpt = typer.Option(False, "--compare", help="Write \\[driver | result] side by side.")
WeightsOpt = typer.Option(None, "--weights", help="Exported whole-face generator (.onnx) for gan/fusion.")
MouthOpt = typer.Option("auto", "--mouth", help="What fills a mouth opening wider than the reference's: "
                        "generator (the learned mouth), driver (the driver's own mouth, colour-matched), "
                        "cavity (a dark cavity), auto (generator with the fusion engine, else cavity).")
EyesOpt = typer.Option("auto", "--eyes", help="Lids the warp stretches open: generator (the learned eyes "
                       "redraw them), warp (keep the stretch), auto (generator with fusion, else warp).")
MouthWeightsOpt = typer.Option(None, "--mouth-weights", help="Exported mouth generator (.onnx); default: the bundled one.")
EyesWeightsOpt = typer.Option(None, "--eyes-weights", help="Exported eye generator (.onnx); default: the bundled one.")
TransferOpt = typer.Option("all", "--transfer", help="What to copy: all, expression (keep the "
                           "reference's head pose and position) or pose (keep its expression).")
RegionsOpt = typer.Option("mouth,eyes,brows", "--regions", help="Comma-separated parts that move "
                          "with the expression: mouth, eyes (lids, gaze), brows.")
FaceOpt = typer.Option("largest", "--face", help="Face of the reference to animate: 'largest' or "
                       "its 0-based index counted from the left (0 = leftmost).")
MoreRefsOpt = typer.Option(None, "--ref", metavar="PATH", help="More photos of the same person (repeatable; "
                           "files, folders or quoted globs). REFERENCE may itself be a folder or a glob; "
                           "the first photo is the primary: its frame and face shape are used.")
MultiOpt = typer.Option("auto", "--multi", help="Several references: select (per frame the one nearest "
                        "in head pose), fuse (a k-shot generator fuses all), auto (fuse if the engine can).")
DriverFaceOpt = typer.Option("largest", "--driver-face", help="Face of the driver to follow: 'largest' "
                             "or its 0-based index counted from the left (chosen where it first appears, "
                             "then followed by position).")


def _config(**kw) -> InferenceConfig:
    if kw.get("engine") is None:
        from reenact.engines import default_engine

        kw["engine"] = default_engine()
    try:
        return InferenceConfig(**kw)
    except ReenactError as e:
        fail(e)


def _default_out(ref: Path, driver: Path, suffix: str) -> Path:
    return Path(f"{ref.stem}-as-{driver.stem}{suffix}")


def _video_settings(engine: Optional[str], size: int, crop: bool, compare: bool, max_side: int,
                    weights: Optional[Path], motion: str, anchor: Optional[int], transfer: str,
                    regions: str, smooth: bool, face: str, driver_face: str, fps: Optional[float],
                    chunk_frames: int, resume: bool, multi: str = "auto", mouth: str = "auto", eyes: str = "auto",
                    mouth_weights: Optional[Path] = None, eyes_weights: Optional[Path] = None,
                    reference_frames: bool = False, length: str = "driver", audio: str = "driver",
                    source_expression: str = "replace", resting: bool = False, preset: str = VideoOptions.preset,
                    **_) -> tuple[InferenceConfig, VideoOptions]:
    """Options of `reenact video` (also each batch job's) → (config, video options); raises
    UsageError. engine None: the default engine (`engines.default_engine`)."""
    from reenact.config import MotionConfig, parse_face, parse_regions
    from reenact.engines import default_engine

    cfg = InferenceConfig(engine=engine or default_engine(), size=size, crop=crop, compare=compare, max_side=max_side,
                          weights=str(weights) if weights else None, mouth=mouth, eyes=eyes,
                          mouth_weights=str(mouth_weights) if mouth_weights else None,
                          eyes_weights=str(eyes_weights) if eyes_weights else None)
    motion_cfg = MotionConfig(mode=motion, transfer=transfer, regions=parse_regions(regions),
                              anchor=anchor, smooth=smooth)
    return cfg, VideoOptions(motion=motion_cfg, ref_face=parse_face(face), driver_face=parse_face(driver_face),
                             fps=fps, chunk=chunk_frames, resume=resume, multi=multi,
                             reference_frames=reference_frames, length=length, audio=audio,
                             source_expression=source_expression, resting=resting, preset=preset)


@app.command(cls=_Command)
def image(
    reference: Path = typer.Argument(..., help="Photo of the person to animate (or a folder / quoted glob of photos)."),
    pose: Path = typer.Argument(..., help="Photo whose head pose and expression to copy."),
    output: Optional[Path] = typer.Option(None, "-o", "--output", help="Output image (.png/.jpg/.webp). "
                                          "Default: REF-as-POSE.png in the current directory."),
    engine: Optional[str] = EngineOpt, size: int = SizeOpt, crop: bool = CropOpt, compare: bool = CompareOpt,
    transfer: str = TransferOpt, regions: str = RegionsOpt, face: str = FaceOpt,
    driver_face: str = DriverFaceOpt, ref: Optional[list[Path]] = MoreRefsOpt, multi: str = MultiOpt,
    weights: Optional[Path] = WeightsOpt, mouth: str = MouthOpt, eyes: str = EyesOpt,
    mouth_weights: Optional[Path] = MouthWeightsOpt, eyes_weights: Optional[Path] = EyesWeightsOpt,
    overwrite: bool = OverwriteOpt,
) -> None:
    """Render REFERENCE with the head pose and expression of POSE.

    A single pose photo has no anchor frame, so motion is absolute: the pose photo's head rotation and its eyes/brows/mouth shapes, in the reference's proportions, at the reference's position."""
    from reenact import media, pipeline

    cfg, opts = run(_video_settings, engine=engine, size=size, crop=crop, compare=compare, max_side=0,
                    weights=weights, motion="absolute", anchor=None, transfer=transfer, regions=regions,
                    smooth=False, face=face, driver_face=driver_face, fps=None, chunk_frames=1, resume=False,
                    multi=multi, mouth=mouth, eyes=eyes, mouth_weights=mouth_weights, eyes_weights=eyes_weights)
    run(media.check_input_names, reference, pose, *(ref or []))
    if run(media.media_kind, pose) == "video":
        fail(UsageError(f"{pose} is a video", f"animate with it: reenact video {reference} {pose}"))
    target = output or _default_out(reference, pose, ".png")
    run(media.check_output_path, target, overwrite=overwrite, kinds=media.WRITABLE_IMAGE_SUFFIXES,
        inputs=(reference, pose, *(ref or [])))
    with err.status("reenacting…"):
        result = run(pipeline.reenact_image, [reference, *(ref or [])], pose, cfg, motion_cfg=opts.motion,
                     ref_face=opts.ref_face, driver_face=opts.driver_face, multi=opts.multi)
    run(media.write_image, target, result.image, overwrite=overwrite)
    _note_faces(result.reference_faces, opts.ref_face, result.driver_faces, opts.driver_face)
    if result.references > 1:
        out.print(f"{result.references} references; rendered from {result.used}")
    out.print(f"[green]wrote[/] {target}  ({result.image.shape[1]}×{result.image.shape[0]}, "
              f"{sum(result.seconds.values()):.2f} s)")


@app.command(cls=_Command)
def video(
    reference: Path = typer.Argument(..., help="Photo of the person to animate (or a folder / quoted glob of "
                                     "photos), or a video of them (video-to-video: only their face changes)."),
    driver: Path = typer.Argument(..., help="Video (or folder of frames) whose head motion and expressions to copy."),
    output: Optional[Path] = typer.Option(None, "-o", "--output", help="Output video (.mp4). "
                                          "Default: REF-as-DRIVER.mp4 in the current directory."),
    motion: str = typer.Option("relative", "--motion", help="relative: the driver's changes from an anchor "
                               "frame applied to the reference's own face (keeps its face shape); "
                               "absolute: the driver's head rotation and expression shapes copied."),
    anchor: Optional[int] = typer.Option(None, "--anchor", help="Driver frame (0-based) used as the anchor "
                                         "for relative motion. Default: the frame nearest the reference "
                                         "in head pose and expression."),
    transfer: str = typer.Option("auto", "--transfer", help="What to copy: all, expression (keep the "
                                 "reference's head pose and position) or pose (keep its expression); "
                                 "auto: all for a photo, expression for a video (it keeps its head motion)."),
    regions: str = RegionsOpt,
    smooth: bool = typer.Option(True, "--smooth/--no-smooth", help="Smooth the driver's landmarks over "
                                "time (zero-lag; fast mouth motion is kept)."),
    face: str = FaceOpt, driver_face: str = DriverFaceOpt, ref: Optional[list[Path]] = MoreRefsOpt,
    multi: str = MultiOpt,
    fps: Optional[float] = typer.Option(None, "--fps", help="Frame rate of a driver (or source) given as a "
                                        "folder of frames (default 25)."),
    reference_frames: bool = typer.Option(False, "--reference-frames", help="REFERENCE is a folder of video "
                                          "frames (a video source), not photos of the person."),
    length: str = typer.Option("driver", "--length", help="Video source: the output is as long as the "
                               "driver, the source, or the shortest; the shorter one plays forward and back."),
    audio: str = typer.Option("driver", "--audio", help="Audio of the output: the driver's, the video "
                              "source's, or none."),
    source_expression: str = typer.Option("replace", "--source-expression", help="Video source: replace "
                                          "the source's own movement of the moved parts by the driver's "
                                          "(dubbing), or keep it and add the driver's change."),
    resting: bool = typer.Option(False, "--resting/--no-resting", help="Video source with replace: draw "
                                 "each frame's lower face from the nearest of a few resting frames of the "
                                 "source, so its own speech does not show through the dubbed mouth; "
                                 "frames with a hand over the mouth keep their own (for talking-head "
                                 "shots: nothing else in front of the mouth; slower)."),
    engine: Optional[str] = EngineOpt, size: int = SizeOpt, crop: bool = CropOpt, compare: bool = CompareOpt,
    max_side: int = typer.Option(1920, "--max-side", help="Longest side of output frames (0 = keep)."),
    resume: bool = typer.Option(False, "--resume", help="Continue an interrupted render of the same job "
                                "from its last completed chunk."),
    chunk_frames: int = typer.Option(250, "--chunk-frames", help="Frames per resumable chunk."),
    preset: str = typer.Option(VideoOptions.preset, "--preset", help="x264 preset of the output (ultrafast … "
                               "veryslow; crf 18 either way): slower presets give smaller files, not "
                               "better pictures, at more CPU time. The default, veryfast-dia, is "
                               "veryfast with a cheaper motion search (10–25 % less encoder CPU, "
                               "about the same size and quality)."),
    weights: Optional[Path] = WeightsOpt, mouth: str = MouthOpt, eyes: str = EyesOpt,
    mouth_weights: Optional[Path] = MouthWeightsOpt, eyes_weights: Optional[Path] = EyesWeightsOpt,
    overwrite: bool = OverwriteOpt,
) -> None:
    """Animate REFERENCE with DRIVER: same fps, frame count and audio as the driver.

    A video as REFERENCE (video-to-video): every output frame is that video's frame with the driver's facial motion applied; its head motion, body and background stay (--transfer all adds the driver's head rotation; --regions mouth dubs the lips).

    Two passes: the driver's face is tracked first (progress: tracking), then frames are rendered in chunks (progress: rendering) kept in a hidden folder beside the output until the video is complete, so an interrupted render continues with --resume."""
    params = dict(locals())  # every option, parsed the same way for batch jobs
    from reenact import media, video as video_mod

    cfg, opts = run(_video_settings, **params)
    run(media.check_input_names, reference, driver, *(ref or []))
    target = output or _default_out(reference, driver, ".mp4")
    run(media.check_output_path, target, overwrite=overwrite, kinds=media.WRITABLE_VIDEO_SUFFIXES,
        inputs=(reference, driver, *(ref or [])))
    t0 = time.perf_counter()
    with progress_bar() as bar:
        s = run(video_mod.reenact_video, [reference, *(ref or [])], driver, target, cfg, options=opts, overwrite=overwrite,
                progress=_stage_progress(bar))
    _note_faces(s.reference_faces, opts.ref_face, s.driver_faces, opts.driver_face, video=True)
    _video_summary(target, s, time.perf_counter() - t0)


@app.command(cls=_Command)
def live(
    reference: Path = typer.Argument(..., help="Photo of the person to animate."),
    camera: int = typer.Option(0, "--camera", help="Camera device index."),
    source: Optional[str] = typer.Option(None, "--source", help="Video file, folder of frames or stream "
                                         "URL to use instead of the camera (files play at their frame rate)."),
    output: Optional[Path] = typer.Option(None, "-o", "--output", help="Record the result (.mp4/.mov/.mkv)."),
    window: bool = typer.Option(True, "--window/--no-window", help="Show \\[driver | result] with fps and "
                                "latency (space: take the driver's current face as neutral; q/Esc: quit)."),
    virtual_camera: bool = typer.Option(False, "--virtual-camera", help="Send the result to a virtual camera "
                                        "(needs the \\[live] extra: pyvirtualcam)."),
    motion: str = typer.Option("relative", "--motion", help="relative: the driver's changes from its neutral "
                               "face (the first one seen, or space) on the reference's face; absolute."),
    smooth: bool = typer.Option(True, "--smooth/--no-smooth", help="Smooth the driver's landmarks (causal)."),
    max_frames: Optional[int] = typer.Option(None, "--max-frames", min=1, help="Stop after N rendered frames."),
    engine: Optional[str] = EngineOpt, size: int = SizeOpt, crop: bool = CropOpt, transfer: str = TransferOpt,
    regions: str = RegionsOpt, face: str = FaceOpt, driver_face: str = DriverFaceOpt,
    weights: Optional[Path] = WeightsOpt, mouth: str = MouthOpt, eyes: str = EyesOpt,
    mouth_weights: Optional[Path] = MouthWeightsOpt, eyes_weights: Optional[Path] = EyesWeightsOpt,
    overwrite: bool = OverwriteOpt,
) -> None:
    """Drive REFERENCE live from a camera (or a video standing in for one).

    Frames are dropped, never queued, when rendering falls behind, so the latency stays bounded. Ctrl-C stops like q; a recording is always finished, also when the camera or stream stops."""
    from reenact import api
    from reenact.live import LiveOptions, run_live

    opts = run(LiveOptions, camera=camera, source=source, window=window, output=output, overwrite=overwrite,
               virtual_camera=virtual_camera, max_frames=max_frames, inputs=(reference,))
    with err.status("loading the reference…"):
        anim = run(api.load, reference, engine=engine, size=size, crop=crop, transfer=transfer, regions=regions,
                   face=face, driver_face=driver_face, weights=weights, mouth=mouth, eyes=eyes,
                   mouth_weights=mouth_weights, eyes_weights=eyes_weights)
    with err.status("live…") as shown:
        s = run(run_live, anim, opts, motion=motion, smooth=smooth, status=lambda r: shown.update(
            f"live: {r.rendered} frames, {r.fps:.1f} fps, latency {r.latency_median_ms:.0f} ms, dropped {r.dropped}"))
    _live_summary(s)


def _live_summary(s) -> None:
    table = Table(show_header=False, box=None, pad_edge=False)
    table.add_row("frames", f"{s.rendered} rendered of {s.captured} captured ({s.dropped} dropped), "
                  f"{s.with_face} with a face; {s.size[0]}×{s.size[1]}")
    table.add_row("speed", f"{s.fps:.1f} fps over {s.seconds:.1f} s")
    table.add_row("latency", f"capture → shown: median {s.latency_median_ms:.0f} ms, p95 {s.latency_p95_ms:.0f} ms")
    table.add_row("stopped", s.stop)
    if s.recorded is not None:
        table.add_row("recorded", f"{s.recorded} ({s.recorded_frames} frames, dropped ones repeated)")
    out.print(table)


def _stage_progress(bar: Progress, prefix: str = "", created: list | None = None):
    """A (stage, done, total) callback showing one progress task per stage ("tracking",
    "rendering"); the tasks' ids are appended to `created`."""
    tasks: dict[str, int] = {}

    def update(stage: str, done: int, total: int | None) -> None:
        _check_interrupt()  # a Ctrl-C that was swallowed somewhere stops the work here
        if stage not in tasks:
            tasks[stage] = bar.add_task(prefix + stage, total=total)
            if created is not None:
                created.append(tasks[stage])
        bar.update(tasks[stage], completed=done, total=max(total, done) if total else None)  # estimates can be short

    return update


class _BatchCommand(_Command):
    """`batch`: `--ray` takes an optional ADDRESS — the word after it, unless that is an option or
    an existing file or folder (the JOBS.csv); alone it becomes `--ray=` (no address)."""

    def parse_args(self, ctx, args: list[str]) -> list[str]:
        args = list(args)
        for i, a in enumerate(args):
            if a == "--":
                break
            if a == "--ray":
                nxt = args[i + 1] if i + 1 < len(args) else None
                if nxt is None or nxt.startswith("-") or os.path.exists(nxt):
                    args[i] = "--ray="
        return super().parse_args(ctx, args)


@app.command(cls=_BatchCommand)
def batch(
    jobs: Optional[Path] = typer.Argument(None, help="CSV with columns reference, driver[, output[, options]]."),
    refs: Optional[Path] = typer.Option(None, "--refs", help="Folder of reference photos (with --drivers: all pairs)."),
    drivers: Optional[Path] = typer.Option(None, "--drivers", help="Folder of drivers: photos, videos, folders of frames."),
    output: Path = typer.Option(..., "-o", "--output", help="Output folder (created if missing); summary.csv/.json go here."),
    job_options: str = typer.Option("", "--job-options", help="Options of `reenact video` for every job, "
                                    "e.g. \"--motion absolute --no-smooth\"."),
    overwrite: bool = OverwriteOpt,
    resume: bool = typer.Option(False, "--resume", help="Skip jobs whose output exists; continue unfinished videos."),
    ray: Optional[str] = typer.Option(None, "--ray", metavar="[ADDRESS]", help="Run the jobs as Ray tasks, in "
                                      "parallel (needs the \\[ray] extra). No ADDRESS: the cluster in RAY_ADDRESS or "
                                      "one `ray start` runs on this machine, else a new Ray instance on this "
                                      "machine's CPUs; local: always a new one; auto: the cluster `ray start` runs here; HOST:PORT: a "
                                      "cluster's head node. Every node must see the inputs and outputs at the same "
                                      "paths."),
    job_cpus: float = typer.Option(1.0, "--job-cpus", min=0.01, help="With --ray: CPUs each job reserves."),
    job_gpus: float = typer.Option(0.0, "--job-gpus", min=0.0, help="With --ray: GPUs each job reserves "
                                   "(e.g. 0.5: two jobs per GPU)."),
) -> None:
    """Render many reference × driver pairs with one progress view; a failed job never stops the batch.

    Video jobs take the options of `reenact video`; image jobs (a photo as driver) use those that apply to `reenact image` (motion is absolute). A CSV row's options column adds options for that job. With --ray every job is a Ray task on a cluster (or on this machine's CPUs): same summary, failures and --resume. Exit code: 0 when every job succeeded (or was skipped), 1 when any failed (summary.csv says which and why), 130 when interrupted."""
    from reenact import batch as batch_mod

    if (jobs is None) == (refs is None and drivers is None) or (refs is None) != (drivers is None):
        fail(UsageError("give either a JOBS.csv file or both --refs and --drivers"))
    if ray is None and (job_cpus != 1.0 or job_gpus):
        fail(UsageError("--job-cpus and --job-gpus are for --ray"))
    base = run(batch_mod.split_options, job_options, "--job-options")
    run(_job_settings, base)  # options for every job: a bad one (or value) stops the batch before any work
    job_list = run(batch_mod.read_jobs, jobs, output) if jobs else run(batch_mod.pair_jobs, refs, drivers, output)
    settings = lambda job: _job_settings([*base, *job.options])  # noqa: E731 — a bad row fails its job only
    if ray is None:
        run(batch_mod.prepare_output, output)
        results = _run_batch(functools.partial(batch_mod.run_batch, job_list, settings, overwrite=overwrite,
                                               resume=resume), len(job_list), output)
    else:
        results = _run_batch_on_ray(ray or None, job_list, settings, output, overwrite=overwrite, resume=resume,
                                    job_cpus=job_cpus, job_gpus=job_gpus)
    _batch_report(results, output / "summary.csv")


def _job_settings(tokens) -> tuple:
    """A batch job's options (`reenact video`'s) → (config, video options); UsageError for an
    unknown option, a bad value, or -o (a job's output is its CSV column: it was ignored)."""
    params = _parse_video_options(list(tokens))
    if params.get("output") is not None:
        raise UsageError("-o/--output is not a job option", "give the job's output in the CSV's output column")
    return _video_settings(**params)


def _parse_video_options(tokens: list[str]) -> dict:
    """`reenact video` options given as words → its parameters; UsageError when it rejects them."""
    from typer.exceptions import TyperException

    cmd = typer.main.get_command(app).commands["video"]  # type: ignore[attr-defined]
    try:
        return cmd.make_context("video", ["REF", "DRIVER", *tokens]).params
    except TyperException as e:
        raise UsageError(f"bad job option: {e.format_message()}", "job options are those of `reenact video`") from None


def _run_batch(run_jobs, n: int, output: Path, *, parallel: bool = False) -> list:
    """Run the batch under one progress view (jobs done + each running job's stages); writes the
    summary even when interrupted. `run_jobs(on_start=, on_end=)`: `batch.run_batch` or
    `farm.run_batch` with the jobs bound; `parallel`: several jobs run at once."""
    from reenact import batch as batch_mod

    with progress_bar() as bar:
        overall = bar.add_task("jobs", total=n, unit="jobs")
        stages: dict[int, list] = {}

        def on_start(i: int, job) -> object:
            stages[i] = []
            bar.update(overall, description=f"jobs ({len(stages)} running)" if parallel else f"job {i + 1}/{n}")
            return _stage_progress(bar, prefix=f"  {job.reference.name} × {job.driver.name}: ", created=stages[i])

        def on_end(res) -> None:
            for task in stages.pop(res.index, []):
                bar.remove_task(task)
            if parallel:
                bar.update(overall, description=f"jobs ({len(stages)} running)")
            bar.advance(overall)
            mark = "[green]ok[/]" if res.status != "failed" else "[red]failed[/]"
            bar.console.print(f"{mark} {res.output}" + (f" — {res.error}" if res.error else "")
                              + (" (exists, skipped)" if res.status == "skipped" else ""))

        try:
            results = run_jobs(on_start=on_start, on_end=on_end)
        except KeyboardInterrupt as e:
            batch_mod.write_summary(getattr(e, "results", []), output)
            err.print(f"[red]interrupted[/] — summary of the jobs so far in {output / 'summary.csv'}")
            raise typer.Exit(code=130)
    batch_mod.write_summary(results, output)
    return results


def _run_batch_on_ray(address: Optional[str], jobs: list, settings, output: Path, *, overwrite: bool,
                      resume: bool, job_cpus: float, job_gpus: float) -> list:
    """`_run_batch` with every job a Ray task, connected to `address` for the length of the
    batch (None: RAY_ADDRESS, a `ray start` cluster on this machine, else a new instance)."""
    from reenact import batch as batch_mod, farm

    with contextlib.ExitStack() as stack:
        with err.status(f"connecting to Ray at {address}…" if address else "starting Ray…"):
            cluster = run(stack.enter_context, farm.connect(address))
        run(farm.check_resources, cluster, job_cpus=job_cpus, job_gpus=job_gpus)
        run(batch_mod.prepare_output, output)
        out.print(f"Ray: {cluster.get('CPU', 0):g} CPUs, {cluster.get('GPU', 0):g} GPUs; {len(jobs)} jobs, "
                  f"{job_cpus:g} CPU{'s' if job_cpus != 1 else ''}" + (f" and {job_gpus:g} GPU" if job_gpus else "")
                  + " each")
        return _run_batch(functools.partial(farm.run_batch, jobs, settings, overwrite=overwrite, resume=resume,
                                            job_cpus=job_cpus, job_gpus=job_gpus), len(jobs), output, parallel=True)


def _batch_report(results: list, summary: Path) -> None:
    table = Table(show_header=False, box=None, pad_edge=False)
    for status in ("ok", "skipped", "failed"):
        n = sum(r.status == status for r in results)
        if n or status == "ok":
            table.add_row(status, str(n))
    out.print(table)
    out.print(f"[green]wrote[/] {summary} (and summary.json)")
    failed = [r for r in results if r.status == "failed"]
    if failed:
        err.print(f"[red]error:[/] {len(failed)} of {len(results)} jobs failed; see {summary}")
        raise typer.Exit(code=1)


@app.command(cls=_Command)
def landmarks(
    photo: Path = typer.Argument(..., help="Photo to analyse."),
    output: Optional[Path] = typer.Option(None, "-o", "--output",
                                          help="Debug picture (default: PHOTO-landmarks.png)."),
    overwrite: bool = OverwriteOpt,
) -> None:
    """Show what reenact sees in a photo: faces (numbered left to right, as --face counts them), 478 landmarks, parsing map, head pose."""
    from reenact import media, visualize
    from reenact.landmarks import Landmarker
    from reenact.tracking import left_to_right

    target = output or Path(f"{photo.stem}-landmarks.png")
    run(media.check_output_path, target, overwrite=overwrite, kinds=media.WRITABLE_IMAGE_SUFFIXES, inputs=(photo,))
    img = run(media.read_image, photo)
    with Landmarker(mode="image") as lm:
        faces = lm.detect(img)
    if not faces:
        from reenact.errors import NoFaceFound

        fail(NoFaceFound(f"no face found in {photo}"))
    faces = left_to_right(faces)  # numbered as --face counts them
    picture = visualize.draw_faces(img, faces)
    largest = max(faces, key=lambda f: f.area)
    # the panel (size × 2·size) in the top-left corner, within a narrow (portrait) picture too
    panel = visualize.parsing_panel(img, largest, size=min(256, picture.shape[0] // 2, picture.shape[1] // 2))
    picture[: panel.shape[0], : panel.shape[1]] = panel
    run(media.write_image, target, picture, overwrite=overwrite)
    table = Table("face (--face)", "yaw°", "pitch°", "roll°", "box (x0, y0, x1, y1)")
    for i, f in enumerate(faces):
        p = f.pose
        table.add_row(str(i), f"{p.yaw:+.1f}", f"{p.pitch:+.1f}", f"{p.roll:+.1f}",
                      ", ".join(f"{v:.0f}" for v in f.bbox))
    out.print(table)
    out.print(f"[green]wrote[/] {target}")


@app.command(cls=_Command)
def info() -> None:
    """Versions, execution providers, bundled weights and cached helper networks."""
    import importlib.metadata as md

    import imageio_ffmpeg

    table = Table(show_header=False, box=None, pad_edge=False)
    table.add_row("reenact", __version__)
    table.add_row("python", sys.version.split()[0])
    for pkg in ("torch", "mediapipe", "onnxruntime-gpu", "numpy", "opencv-contrib-python"):
        try:
            table.add_row(pkg, md.version(pkg))
        except md.PackageNotFoundError:
            table.add_row(pkg, "[yellow]not installed[/]")
    try:
        import onnxruntime as ort

        table.add_row("ORT providers", ", ".join(ort.get_available_providers()))
    except ImportError:
        table.add_row("ORT providers", "[yellow]onnxruntime missing[/]")
    table.add_row("ffmpeg", imageio_ffmpeg.get_ffmpeg_exe())
    from reenact.engines import DEFAULT_WEIGHTS, default_engine

    table.add_row("engines", ", ".join(ENGINES) + f" (default: {default_engine()})")
    table.add_row("generator weights", str(DEFAULT_WEIGHTS) if DEFAULT_WEIGHTS.is_file() else "none bundled")
    for region in ("mouth", "eyes"):
        table.add_row(f"{region} generator", _bundled_model(region))
    out.print(table)


def _bundled_model(region: str) -> str:
    """One line on a shipped region generator: file, training steps and wall time, integrity."""
    from reenact import redraw

    path = redraw.bundled(region)
    if not path.is_file():
        return "[yellow]not installed[/]"
    try:
        redraw.verify_bundled(path)
        entry = redraw.manifest()["models"][path.stem]
        return (f"{path} (trained {entry['steps']} steps, {entry['wall_time_s'] / 60:.0f} min on "
                f"{entry['machine']}; sha256 ok)")
    except ReenactError as e:
        return f"[red]{e.message}[/]"


@app.command(cls=_Command)
def train(
    config: Path = typer.Option(..., "--config", "-c", help="Training config (TOML), e.g. configs/small-128.toml."),
    out_dir: Optional[Path] = typer.Option(None, "--out", help="Run folder (default: runs/CONFIG-NAME)."),
    max_steps: Optional[int] = typer.Option(None, "--max-steps", min=0, help="Stop at this total step count."),
    max_minutes: Optional[float] = typer.Option(None, "--max-minutes", min=0, help="Stop after this much wall time."),
    resume: Optional[str] = typer.Option(None, "--resume", help="Checkpoint to continue, or 'auto' (RUN/checkpoints/last.pt)."),
    ddp: bool = typer.Option(False, "--ddp", help="Join a torchrun process group (DistributedDataParallel)."),
) -> None:
    """Train the generator (F + D); Ctrl-C or SIGTERM stops cleanly with a checkpoint."""
    from reenact.train import ddp as dist_mod
    from reenact.train import loop
    from reenact.train.config import TrainConfig

    cfg = run(TrainConfig.from_toml, config)
    dist = run(dist_mod.init_distributed, cfg.device) if ddp else dist_mod.DistInfo()
    out_dir = out_dir or Path("runs") / config.stem
    if dist.main:
        if not (cfg.model.variant == "region" and Path(cfg.data.region_pack, "meta.json").is_file()):
            _ensure_cache(cfg)
        if cfg.model.variant == "region":
            _ensure_region_pack(cfg)
    dist_mod.barrier(dist)
    checkpoint = run(loop.resolve_resume, resume, out_dir)
    with loop.StopSignals() as signals, _TrainDisplay(enabled=dist.main) as display:
        result = run(loop.train, cfg, out_dir, max_steps=max_steps, max_minutes=max_minutes, resume=checkpoint,
                     dist=dist, stop=lambda: signals.requested, progress=display.update)
    dist_mod.shutdown(dist)
    if dist.main:
        _train_summary(result)


def _ensure_cache(cfg) -> None:
    from reenact.train.cache import ensure_cache, is_prepared

    d = cfg.data
    if is_prepared(d.cache):
        return
    with progress_bar() as bar:
        task = bar.add_task("preparing the data cache", total=None)
        made = run(ensure_cache, d.cache, source=d.source, identities=d.identities, split=d.split,
                   size=cfg.cache_size, quality=d.quality, progress=lambda i, n: bar.update(task, completed=i, total=n))
    if made is not None:
        _cache_summary(made)


def _ensure_region_pack(cfg) -> None:
    """Region variant: build the region pack from the face cache on first use."""
    from reenact.train.regions import build_pack

    from reenact.train.cache import is_prepared, prepare_video_cache

    d, m = cfg.data, cfg.model
    if Path(d.region_pack, "meta.json").is_file():
        return
    if d.videos and not is_prepared(d.video_cache):
        with progress_bar() as bar:
            task = bar.add_task(f"preparing frames of {len(d.videos)} videos", total=None)
            made = run(prepare_video_cache, d.videos, d.video_cache, size=cfg.cache_size, quality=d.quality,
                       stride=d.video_stride, progress=lambda i, n: bar.update(task, completed=i))
        _cache_summary(made)
    with progress_bar() as bar:
        task = bar.add_task(f"building the {m.region} training pairs", total=None)
        path = run(build_pack, d.cache, d.region_pack, region=m.region, size=m.size, identity_pairs=d.identity_pairs,
                   seed=cfg.seed, video_cache=d.video_cache if d.videos else None,
                   progress=lambda i, n: bar.update(task, completed=i, total=n))
    out.print(f"[green]region pack[/] {path}")


class _TrainDisplay:
    """Live Rich display of training progress (step, losses, it/s, ETA) on stderr."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self.bar = Progress(TextColumn("[bold]training"), BarColumn(), MofNCompleteColumn(),
                            TextColumn("{task.fields[rate]}", style="cyan"), TimeElapsedColumn(),
                            TextColumn("eta {task.fields[eta]}"), TextColumn("{task.fields[losses]}"),
                            console=err, transient=False)
        self.task = None

    def __enter__(self) -> "_TrainDisplay":
        if self.enabled:
            self.bar.start()
        return self

    def __exit__(self, *exc) -> None:
        if self.enabled:
            self.bar.stop()

    def update(self, r) -> None:
        if not self.enabled:
            return
        keys = ("l1", "l1_ae", "perceptual", "identity", "gan", "identity_gan", "d_loss", "d_id_loss")
        losses = "  ".join(f"{k} {r.losses[f'raw/{k}'] if f'raw/{k}' in r.losses else r.losses[k]:.3f}"
                           for k in keys if f"raw/{k}" in r.losses or k in r.losses)
        eta = "?" if r.eta is None else time.strftime("%H:%M:%S", time.gmtime(r.eta))
        fields = dict(rate=f"{r.it_per_s:.2f} it/s", eta=eta, losses=losses)
        if self.task is None:
            self.task = self.bar.add_task("training", total=r.max_steps if r.max_steps < 2**62 else None,
                                          completed=r.step, **fields)
        self.bar.update(self.task, completed=r.step, **fields)


def _train_summary(result) -> None:
    table = Table(show_header=False, box=None, pad_edge=False)
    table.add_row("steps", f"{result.start_step} → {result.step} (stopped: {result.reason.replace('_', '-')})")
    table.add_row("time", f"{result.seconds:.1f} s")
    if result.history:
        first, last = result.history[0], result.history[-1]
        for key in ("raw/l1", "raw/l1_ae"):
            if key in last:
                table.add_row(key[4:], f"{first[key]:.4f} (first log) → {last[key]:.4f} (last log)")
    table.add_row("checkpoint", str(result.checkpoint) if result.checkpoint else "none written (no new steps)")
    out.print(f"[green]run folder[/] {result.out_dir}")
    out.print(table)


@app.command("export", cls=_Command)
def export_model(
    checkpoint: Path = typer.Argument(..., help="Training checkpoint (RUN/checkpoints/last.pt)."),
    output: Path = typer.Option(..., "-o", "--output",
                                help="Generator file NAME.onnx (F goes to NAME.appearance.onnx; a k-shot "
                                     "model's embedder to NAME.embedder.onnx)."),
    fp16: bool = typer.Option(False, "--fp16", help="Store weights as float16 (half the size, looser parity)."),
    tolerance: Optional[float] = typer.Option(None, "--tolerance", min=0, help="Max |ORT − torch| allowed."),
    ema: bool = typer.Option(True, "--ema/--no-ema", help="Export the EMA weights when the checkpoint has them."),
    overwrite: bool = OverwriteOpt,
) -> None:
    """Export a checkpoint to ONNX (F and D graphs), run onnx.checker and an ORT-vs-torch parity check."""
    from reenact.export import export_generator

    with err.status("exporting and verifying…"):
        r = run(export_generator, checkpoint, output, fp16=fp16, tolerance=tolerance, use_ema=ema, overwrite=overwrite)
    table = Table(show_header=False, box=None, pad_edge=False)
    table.add_row("generator (D)", f"{r.generator}  ({r.bytes['generator'] / 2**20:.1f} MiB)")
    per_reference = "embedder (E_k)" if r.variant == "kshot" else "appearance (F)"
    table.add_row(per_reference, f"{r.appearance}  ({r.bytes['appearance'] / 2**20:.1f} MiB)")
    table.add_row("opset / weights", f"{r.opset} / {'fp16' if r.fp16 else 'fp32'}, training step {r.step}")
    diffs = ", ".join(f"{k} {v:.2e}" for k, v in r.max_abs_diff.items())
    table.add_row("ORT vs torch", f"max |diff| of the image: {diffs} (tolerance {r.tolerance:.0e})")
    out.print("[green]exported and verified[/]")
    out.print(table)


data_app = typer.Typer(help="Training data: a prepared cache of aligned face crops and landmarks.",
                       no_args_is_help=True, pretty_exceptions_show_locals=False)
app.add_typer(data_app, name="data")


@data_app.command("prepare", cls=_Command)
def data_prepare(
    source: Path = typer.Argument(..., help="Folder of face photos."),
    output: Path = typer.Option(..., "-o", "--output", help="Cache folder to create (must not exist)."),
    identities: Optional[Path] = typer.Option(None, "--identities", help="CSV file,identity[,split]."),
    split: str = typer.Option("train", "--split", help="Rows of the identity file to use ('all' = every row)."),
    size: int = typer.Option(256, "--size", help="Crop side in pixels (the model's resolution)."),
    quality: int = typer.Option(85, "--quality", min=50, max=100, help="JPEG quality of the stored crops."),
    limit: Optional[int] = typer.Option(None, "--limit", min=1, help="Use only the first N photos."),
) -> None:
    """Detect landmarks once (mediapipe) and store aligned crops + landmarks for training."""
    from reenact.train.cache import prepare_cache

    if split == "test":
        fail(ReenactError("refusing to prepare the test split for training", "use --split train"))
    with progress_bar() as bar:
        task = bar.add_task("detecting faces", total=None)
        s = run(prepare_cache, source, output, identities=identities, split=split, size=size, quality=quality,
                limit=limit, progress=lambda i, n: bar.update(task, completed=i, total=n))
    _cache_summary(s)


def _cache_summary(s) -> None:
    table = Table(show_header=False, box=None, pad_edge=False)
    table.add_row("faces stored", str(s.count))
    table.add_row("skipped", f"{s.no_face} without a face, {s.unreadable} unreadable")
    table.add_row("size", f"{s.total_bytes / 2**20:.1f} MiB ({s.image_bytes / 2**20:.1f} MiB of JPEG crops)")
    table.add_row("time", f"{s.seconds:.1f} s")
    out.print(f"[green]wrote[/] {s.path}")
    out.print(table)


EVAL_ENGINES = "reference,warp,driver-mouth,gan,fusion"


@app.command("eval", cls=_Command)
def eval_(
    output: Path = typer.Option(..., "-o", "--output", help="Report folder (metrics.json, report.md/html, PNGs)."),
    protocol: Optional[str] = typer.Option(None, "--protocol", help="Ready-made protocol: celeba-id or clips."),
    refs: Optional[list[Path]] = typer.Option(None, "--refs", metavar="PATH",
                                              help="Reference photos or folders (repeatable)."),
    drivers: Optional[list[Path]] = typer.Option(None, "--drivers", metavar="PATH",
                                                 help="Driver photos/videos or folders (repeatable)."),
    pairs: Optional[Path] = typer.Option(None, "--pairs", help="Same-identity CSV: reference,driver or file,identity."),
    engines: str = typer.Option(EVAL_ENGINES, "--engines", help="Comma-separated: reference, warp, driver-mouth (warp + the driver's own mouth, the classical baseline), gan, fusion."),
    data: Optional[Path] = typer.Option(None, "--data", help="Folder holding celeba-id/ and clips/ "
                                        "(default $REENACT_DATA or ../shared/data)."),
    limit: int = typer.Option(0, "--limit", help="Evaluate at most N pairs (seeded subset; 0 = all)."),
    seed: int = typer.Option(0, "--seed", help="Seed for the protocol's sampling."),
    size: int = SizeOpt,
    no_fid: bool = typer.Option(False, "--no-fid", help="Skip FID (no Inception download)."),
    no_lpips: bool = typer.Option(False, "--no-lpips", help="Skip LPIPS (no VGG download)."),
    no_identity: bool = typer.Option(False, "--no-identity", help="Skip the SFace identity metric."),
    weights: Optional[Path] = WeightsOpt,
    mouth_weights: Optional[Path] = MouthWeightsOpt, eyes_weights: Optional[Path] = EyesWeightsOpt,
    k: Optional[str] = typer.Option(None, "--k", metavar="K,K,…", help="Compare 1…K reference photos per "
                                    "identity (celeba-id), e.g. 1,3,5: nearest-pose selection, and fusion "
                                    "with a k-shot model, per k (k = 1, the one-shot baseline, always)."),
    overwrite: bool = typer.Option(False, "--overwrite", "-y", help="Replace an existing report folder."),
) -> None:
    """Measure engines against baselines: identity, pose, expression, self-reenactment L1/PSNR/SSIM/LPIPS, FID."""
    from reenact import evaluate
    from reenact.evaluate import kshot, report
    from reenact.evaluate.runner import EvalSettings

    ks = run(kshot.parse_ks, k) if k else ()
    settings = run(EvalSettings, engines=tuple(e.strip() for e in engines.split(",") if e.strip()), size=size,
                   identity=not no_identity, lpips=not no_lpips, fid=not no_fid,
                   weights=str(weights) if weights else None, ks=ks,
                   mouth_weights=str(mouth_weights) if mouth_weights else None,
                   eyes_weights=str(eyes_weights) if eyes_weights else None)
    proto = run(evaluate.make_protocol, protocol, refs=refs, drivers=drivers, pairs_csv=pairs, data=data,
                seed=seed, limit=limit or None, references=max(ks, default=1))
    run(report.check_target, output, overwrite=overwrite,  # the report folder replaces no input
        inputs=(refs or [], drivers or [], pairs, data, evaluate.protocol_files(proto, settings)))
    t0 = time.perf_counter()
    with progress_bar() as bar:
        doc = run(evaluate.evaluate, proto, settings, output, overwrite=overwrite,
                  progress=_stage_progress(bar), command=" ".join(["reenact", *sys.argv[1:]]))
    _eval_summary(doc, output, time.perf_counter() - t0)


@app.command(cls=_Command)
def bench(
    reference: Path = typer.Option(..., "--ref", help="Reference photo (centre square → 256²)."),
    driver: Path = typer.Option(..., "--driver", help="Driver video (first frames → 256²)."),
    engines: str = typer.Option("warp,gan,fusion", "--engines", help="Comma-separated engines."),
    frames: int = typer.Option(100, "--frames", help="Driver frames for the video benchmark."),
    repeats: int = typer.Option(10, "--repeats", help="Image renders to average."),
    scenarios: str = typer.Option("256,2mp,4k", "--scenarios", help="256: everything at 256² (image and "
                                  "video); 2mp: the reference at ~2 MP, a 512² driver; 4k: a 3840×2160 "
                                  "reference, a 1080p driver."),
    json_out: Optional[Path] = typer.Option(None, "--json", help="Also write the numbers to this JSON file."),
) -> None:
    """Per-stage latency, end-to-end fps, CPU time and peak memory per engine, execution provider and scenario."""
    from reenact.evaluate import bench as b

    from reenact import media

    names = tuple(e.strip() for e in engines.split(",") if e.strip())
    kinds = tuple(s.strip().lower() for s in scenarios.split(",") if s.strip())
    if json_out:  # before the minutes of benchmarking; a previous JSON file is replaced, never an input
        run(media.check_output_path, json_out, overwrite=True, kinds=frozenset({".json"}), inputs=(reference, driver))
    with err.status("benchmarking…") as status:
        result = run(b.run_bench, reference, driver, engines=names, repeats=repeats, frames=frames, scenarios=kinds,
                     progress=lambda msg: status.update(f"benchmarking {msg}…"))
    _bench_table(result)
    if json_out:
        run(b.write_json, json_out, result)
        out.print(f"[green]wrote[/] {json_out}")


def _wide(width: int = 170) -> Console:
    """stdout; when it is a pipe or a file (no terminal width), one `width` columns wide so wide
    tables are written whole instead of squeezed to 80 columns."""
    return out if out.is_terminal else Console(width=width, file=out.file)


def _eval_summary(doc: dict, folder: Path, wall: float) -> None:
    from reenact.evaluate import report

    head, body = report.table(doc["summary"])
    table = Table(*head, title=f"reenact eval — {doc['protocol']['name']} ({doc['protocol']['pairs']} pairs)")
    for row in body:
        table.add_row(*row)
    _wide().print(table)
    if doc["kshot"]:
        head, body = report.kshot_table(doc["kshot"]["rows"])
        table = Table(*head, title=f"k references ({', '.join(map(str, doc['kshot']['ks']))}): "
                                   "ID cos vs the primary, ID truth vs the driver photo; served % by ref 1/2/…")
        for row in body:
            table.add_row(*row)
        _wide().print(table)
    for line in report.fid_lines(doc):
        out.print(line)
    out.print(f"[green]wrote[/] {folder}/ (metrics.json, report.md, report.html, "
              f"{len(doc['files']['contact_sheets'])} contact sheet(s)) in {wall:.0f} s", soft_wrap=True)


def _bench_table(result: dict) -> None:
    stages = list(dict.fromkeys(k for r in result["rows"] for k in r["stages_ms"]))
    table = Table("scenario", "engine", "provider", "mode", "frames (out / driver)", *[f"{s} ms" for s in stages],
                  "warm fps", "end-to-end fps", "CPU ms (self + ffmpeg)", "peak MiB",
                  title=f"reenact bench — {result['machine']['cpus']} CPUs, {result['inputs']['frames']} video "
                  "frames; stages in ms per image / frame")
    for r in result["rows"]:
        if r["status"] != "ok":
            table.add_row(r["scenario"], r["engine"], r["status"], *[""] * (len(stages) + 6))
            continue
        video = r["mode"] == "video"
        table.add_row(r["scenario"], r["engine"], r["provider"], r["mode"], r["size"],
                      *[f"{r['stages_ms'][s]:.1f}" if s in r["stages_ms"] else "" for s in stages],
                      f"{r['fps_warm']:.1f}", f"{r['fps_end_to_end']:.1f}",
                      f"{r['cpu_ms']:.0f} + {r['ffmpeg_cpu_ms']:.0f}" if video else "",
                      f"{r['peak_mib']:.0f}" if video else "")
    _wide(250).print(table)  # 19 columns with every video stage


def _note_faces(ref_faces: int, ref_choice, drv_faces: int, drv_choice, *, video: bool = False) -> None:
    """Say how many faces were found and which one was used (a note when there were several)."""
    from reenact.tracking import describe_choice

    for what, n, choice in (("the reference", ref_faces, ref_choice),
                            ("each driver frame" if video else "the driver", drv_faces, drv_choice)):
        if n > 1 or choice != "largest":
            count = f"up to {n}" if video and what != "the reference" else str(n)
            err.print(f"[yellow]note:[/] {count} faces in {what}; used {describe_choice(choice)}")


def _video_summary(target: Path, s, wall: float) -> None:
    table = Table(show_header=False, box=None, pad_edge=False)
    table.add_row("frames", f"{s.frames} at {s.fps:g} fps ({s.size[0]}×{s.size[1]})")
    table.add_row("faces", f"{s.reference_faces} in the {'source' if s.source else 'reference'}, "
                  f"up to {s.driver_faces} per driver frame")
    table.add_row("driver frames with a face" if s.source else "with a face", str(s.with_face))
    for label, n in (("no face, interpolated", s.interpolated), ("no face, held last (or first) face", s.held),
                     ("no face yet, reference shown", s.still)):
        if n:
            table.add_row(label, str(n))
    anchor = f", anchor: driver frame {s.anchor}" if s.anchor is not None else ""
    table.add_row("motion", f"{s.motion}{anchor}; smoothing {'on' if s.smoothed else 'off'}")
    if s.multi == "fuse":
        table.add_row("references", "all fused by the k-shot generator")
    for name, frames, runs in s.usage:
        shown = ", ".join(f"{a}–{b}" if b > a else str(a) for a, b in runs[:6]) + (" …" if len(runs) > 6 else "")
        table.add_row(f"reference {Path(name).name}", f"{frames} frames" + (f" ({shown})" if runs else ""))
    if s.repeated or s.dropped:
        table.add_row("damaged driver frames", f"{s.repeated} undecodable (previous frame repeated), "
                      f"{s.dropped} surplus dropped: output stays in step with the driver's audio")
    if s.chunks_resumed:
        table.add_row("resumed", f"{s.chunks_resumed} of {s.chunks} chunks were already rendered")
    if s.source is not None:
        _source_rows(table, s.source)
    table.add_row("audio", f"copied from the {s.audio_from}" if s.audio else
                  "none (--audio none)" if s.audio_from == "none" else f"none in the {s.audio_from}")
    threads = f", frames rendered in {s.workers} threads" if s.workers > 1 else ""
    table.add_row("time", f"{wall:.1f} s ({s.frames / max(wall, 1e-9):.1f} fps{threads})")
    out.print(f"[green]wrote[/] {target}")
    out.print(table)


def _source_rows(table: Table, src) -> None:
    """Video-to-video rows of the summary."""
    frames = f"its first {src.frames} frames" if src.unread == "source" else f"{src.frames} frames"
    table.add_row("source", f"{Path(src.path).name}: {frames} at {src.fps:g} fps, {src.with_face} "
                  f"with a face; rest face: frame {src.rest}"
                  + ("" if src.appearance is None else f"; generated regions drawn with frame {src.appearance}'s look"))
    if src.passed:
        table.add_row("unchanged", f"{src.passed} output frames show their source frame as it is (no face)")
    bank, used = src.resting
    if bank:
        table.add_row("resting frames", f"{bank} of the source's; {used} output frames took their lower face "
                      "from the nearest in head pose")
    if src.covered:
        table.add_row("hands", f"{src.covered} output frames keep their own lower face (a hand over the mouth)")
    play = f"; the {src.ping_pong} plays forward and back to fill it" if src.ping_pong else ""
    unread = f"; the {src.unread} goes on after it, unread" if src.unread else ""
    table.add_row("length", f"the {src.length}'s{play}{unread}")


_interrupted = False  # set by Ctrl-C / SIGTERM; progress callbacks re-raise it


def _on_signal(signum, frame) -> None:  # noqa: ARG001
    """Ctrl-C and SIGTERM: raise KeyboardInterrupt, and remember it. Python ignores exceptions
    raised where it cannot propagate them (at-fork handlers when ffmpeg is started, finalizers),
    so the next progress update raises it again (`_check_interrupt`)."""
    global _interrupted
    _interrupted = True
    raise KeyboardInterrupt


def _check_interrupt() -> None:
    if _interrupted:
        raise KeyboardInterrupt


def _unraisable(info) -> None:
    """sys.unraisablehook: the KeyboardInterrupt of `_on_signal` landing where Python cannot
    raise it (e.g. logging's at-fork handler while ffmpeg starts) is re-raised by the next
    progress update, so say nothing about it; anything else goes to Python's own hook."""
    if isinstance(info.exc_value, KeyboardInterrupt):
        return
    sys.__unraisablehook__(info)


def _silence_native_stderr() -> None:
    """mediapipe/TFLite log from C++ threads straight to file descriptor 2. Point fd 2 at
    /dev/null and give Python's sys.stderr a private duplicate of the real stderr, so our own
    messages (and tracebacks of real bugs) still show. REENACT_NATIVE_LOGS=1 keeps them."""
    if os.environ.get("REENACT_NATIVE_LOGS") == "1":
        return
    try:
        sys.stderr.flush()
        real = os.dup(2)
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 2)
        os.close(devnull)
        sys.stderr = os.fdopen(real, "w", buffering=1, encoding=sys.stderr.encoding or "utf-8",
                               errors="backslashreplace")
    except (OSError, ValueError, AttributeError):  # no real fd 2: nothing to silence
        pass


def main() -> None:
    """Console-script entry point."""
    for name, value in PROCESS_ENV.items():  # before numpy loads (one OpenBLAS thread)
        os.environ.setdefault(name, value)
    _silence_native_stderr()
    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)
    sys.unraisablehook = _unraisable
    try:
        app(prog_name="reenact")
    finally:  # the command is over (outputs complete or cleaned up): a Ctrl-C while Python shuts
        # down (joining reader threads, finalizers) must not turn its exit into a death by SIGINT
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)


if __name__ == "__main__":
    main()
    sys.exit(0)
