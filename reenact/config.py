"""Typed, frozen configuration for inference (model and training configs live beside their code).

Defaults are in code; the CLI builds an `InferenceConfig` from its options and hands it to the
pipeline. Values are validated here, so the library never trusts raw user input.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

from reenact.errors import UsageError

# The environment a reenact process runs with, set before numpy and mediapipe load (`cli.main`
# as defaults, and every Ray worker of `reenact batch --ray`): one OpenBLAS thread — the warp's
# many tiny batched solves (`warp._affines`) are one to two orders of magnitude slower with more
# — and quiet native logs.
PROCESS_ENV = {"OPENBLAS_NUM_THREADS": "1", "GLOG_minloglevel": "2", "TF_CPP_MIN_LOG_LEVEL": "3"}

ENGINES = ("warp", "gan", "fusion")
MOUTH_CHOICES = ("auto", "generator", "driver", "cavity")
EYE_CHOICES = ("auto", "generator", "warp")


@dataclass(frozen=True)
class InferenceConfig:
    """How to render.

    engine: "warp" (classical landmark warp, no weights), "gan" (generators F+D) or "fusion"
        (FusionNet: GAN outside the shared face region, warp inside).
    size: side of the model crop (the generators' resolution; the warp engine renders at the
        face's native resolution, at least this, at most `max_warp_size`).
    max_side: longest side of video output frames (larger references are downscaled; 0 = keep).
    crop: write only the aligned face crop (size×size) instead of pasting into the reference.
    compare: write driver and result side by side.
    weights: path of an exported whole-face generator (.onnx) for gan/fusion; None = the bundled
        default (fusion without one = the warp + the region generators).
    mouth: what fills a mouth that opens wider than the reference's: "generator" (the learned
        mouth), "driver" (the driver's own mouth interior, colour-matched: the classical
        baseline), "cavity" (a dark shaded cavity) or "auto" (generator for fusion, else cavity).
    eyes: "generator" (the learned eyes redraw lids the warp stretched open), "warp" or "auto"
        (generator for fusion, else warp).
    mouth_weights / eyes_weights: exported region generators; None = the bundled ones.
    """

    engine: str = "warp"
    size: int = 256
    max_warp_size: int = 1024
    max_side: int = 1920
    crop: bool = False
    compare: bool = False
    weights: str | None = None
    mouth: str = "auto"
    eyes: str = "auto"
    mouth_weights: str | None = None
    eyes_weights: str | None = None

    def __post_init__(self) -> None:
        if self.mouth not in MOUTH_CHOICES:
            raise UsageError(f"unknown --mouth {self.mouth!r}", f"choose one of {', '.join(MOUTH_CHOICES)}")
        if self.eyes not in EYE_CHOICES:
            raise UsageError(f"unknown --eyes {self.eyes!r}", f"choose one of {', '.join(EYE_CHOICES)}")
        if self.engine not in ENGINES:
            raise UsageError(f"unknown engine {self.engine!r}", f"choose one of {', '.join(ENGINES)}")
        if not 64 <= self.size <= 1024 or self.size % 16:
            raise UsageError(f"--size {self.size} is out of range", "use a multiple of 16 in 64..1024")
        if self.max_side and self.max_side < 64:
            raise UsageError(f"--max-side {self.max_side} is too small", "use 0 (keep) or ≥ 64")
        if self.crop and self.compare:
            raise UsageError("--crop and --compare cannot be combined")

    def resolved_regions(self) -> tuple[str, str]:
        """(mouth mode, eye mode) with "auto" resolved by the engine."""
        learned = self.engine == "fusion"
        mouth = self.mouth if self.mouth != "auto" else ("generator" if learned else "cavity")
        eyes = self.eyes if self.eyes != "auto" else ("generator" if learned else "warp")
        return mouth, eyes

    def replace(self, **changes) -> "InferenceConfig":
        values = {f.name: getattr(self, f.name) for f in fields(self)}
        values.update(changes)
        return InferenceConfig(**values)


MOTIONS = ("relative", "absolute")
LENGTHS = ("driver", "source", "shortest")
AUDIO_CHOICES = ("driver", "source", "none")
SOURCE_EXPRESSIONS = ("replace", "keep")
TRANSFERS = ("all", "expression", "pose")
REGIONS = ("mouth", "eyes", "brows")


@dataclass(frozen=True)
class MotionConfig:
    """What moves and how (`reenact.motion`).

    mode: "relative" — the driver's changes w.r.t. an anchor frame are applied to the reference's
        own landmarks (keeps the reference's face shape; video only) — or "absolute" — the
        driver's head rotation and component shapes are copied (the only mode for a pose photo).
    transfer: "all", "expression" (keep the reference's head pose and position) or "pose" (keep
        the reference's expression); "auto" (`reenact video`'s default) is resolved by
        `with_transfer_for`: "all" for photos, "expression" for a video source (it keeps its own
        head motion).
    regions: which expressive parts move: any of "mouth", "eyes" (lids and irises), "brows".
    anchor: driver frame index used as the anchor (relative mode); None = chosen automatically.
    smooth: temporal smoothing of the driver's landmarks (video).
    max_gap: frames without a face between two faces that are interpolated (longer gaps hold).
    """

    mode: str = "relative"
    transfer: str = "auto"
    regions: tuple[str, ...] = REGIONS
    anchor: int | None = None
    smooth: bool = True
    max_gap: int = 12

    def __post_init__(self) -> None:
        if self.mode not in MOTIONS:
            raise UsageError(f"unknown --motion {self.mode!r}", f"choose one of {', '.join(MOTIONS)}")
        if self.transfer not in TRANSFERS + ("auto",):
            raise UsageError(f"unknown --transfer {self.transfer!r}", f"choose one of {', '.join(TRANSFERS)}")
        bad = [r for r in self.regions if r not in REGIONS]
        if bad or not self.regions:
            raise UsageError(f"unknown --regions {','.join(bad) or '(none)'}",
                             f"give a comma-separated list of {', '.join(REGIONS)}")
        if self.transfer == "pose" and set(self.regions) != set(REGIONS):
            raise UsageError("--regions has no effect with --transfer pose",
                             "use --transfer all or expression to move only some regions")
        if self.anchor is not None and self.mode != "relative":
            raise UsageError("--anchor applies to relative motion only", "leave it out with --motion absolute")
        if self.anchor is not None and self.anchor < 0:
            raise UsageError(f"--anchor {self.anchor} is negative", "give a frame index ≥ 0, or leave it out")
        if self.max_gap < 0:
            raise UsageError(f"max_gap {self.max_gap} is negative")

    def with_transfer_for(self, video_source: bool) -> "MotionConfig":
        """This config with transfer "auto" resolved: "expression" for a video source, else "all"."""
        if self.transfer != "auto":
            return self
        values = {f.name: getattr(self, f.name) for f in fields(self)}
        return MotionConfig(**{**values, "transfer": "expression" if video_source else "all"})


def parse_regions(text: str) -> tuple[str, ...]:
    """"mouth,eyes" → ("mouth", "eyes") (order kept, duplicates and blanks dropped)."""
    return tuple(dict.fromkeys(p.strip().lower() for p in text.split(",") if p.strip()))


def parse_face(text: str) -> str | int:
    """Face choice: "largest" or a 0-based index in left-to-right order."""
    t = str(text).strip().lower()
    if t == "largest":
        return t
    if t.isdigit():
        return int(t)
    raise UsageError(f"face choice {text!r} is not understood",
                     "use 'largest' or a 0-based index counted from the left (0 = leftmost face)")


@dataclass(frozen=True)
class VideoOptions:
    """Video-only settings besides the renderer's (`InferenceConfig`) and the motion's.

    ref_face / driver_face: "largest" or a 0-based index in left-to-right order (`parse_face`);
        the driver's face is chosen where it first appears and then followed by position.
    fps: frame rate of a driver given as a folder of frames (None: 25); not for video files.
    chunk: frames per resumable segment. resume: continue an interrupted render of the same job.
    multi: with several reference photos, "select" (per frame, the one nearest in pose),
        "fuse" (a k-shot generator fuses all) or "auto" (fuse when the engine can, else select).
    Video-to-video (the reference is a video, `reenact.v2v`):
    reference_frames: a folder given as the reference is a video source's frames (at `fps`),
        not photos of the person.
    length: the output's length: the "driver"'s, the "source"'s, or the "shortest"; the shorter
        video plays forward and backward (ping-pong) to fill it.
    audio: the "driver"'s audio (default), the "source"'s, or "none" ("none" also for photos).
    source_expression: "replace" (the moved parts follow the driver alone, from the source's
        rest face) or "keep" (the driver's change is added to the source's own expression).
    resting: a video source under "replace": draw each frame's lower face from the nearest (in
        head pose) of a few resting frames of the source, so that its own speech does not show
        through the dubbed mouth (`v2v.resting_bank`); frames with a hand over the mouth keep
        their own lower face (`reenact.occlusion`); off by default: another object in front of
        the mouth would be painted over, and it renders twice (see docs/video-to-video.md).
    preset: the x264 preset of the rendered video (crf 18 either way; `media.PRESETS`). The
        default "veryfast-dia" is x264's "veryfast" with a cheaper motion search, and from 720p
        on fewer partitions (`media.x264_settings`: 10–25 % less encoder CPU, files within ±2 %
        of "veryfast"'s, PSNR within 0.15 dB); "veryfast"
        encodes a 1080p frame in about 40 % of "medium"'s CPU time, visually the same (≈ 0.5 dB
        PSNR less, files of similar size); "medium" or slower for the smallest files.
    """

    motion: MotionConfig = MotionConfig()
    ref_face: str | int = "largest"
    driver_face: str | int = "largest"
    fps: float | None = None
    chunk: int = 250
    resume: bool = False
    multi: str = "auto"
    reference_frames: bool = False
    length: str = "driver"
    audio: str = "driver"
    source_expression: str = "replace"
    resting: bool = False
    preset: str = "veryfast-dia"

    def __post_init__(self) -> None:
        for what, v, allowed in (("--length", self.length, LENGTHS), ("--audio", self.audio, AUDIO_CHOICES),
                                 ("--source-expression", self.source_expression, SOURCE_EXPRESSIONS)):
            if v not in allowed:
                raise UsageError(f"unknown {what} {v!r}", f"choose one of {', '.join(allowed)}")
        for what, v in (("--face", self.ref_face), ("--driver-face", self.driver_face)):
            if v != "largest" and not (isinstance(v, int) and v >= 0):
                raise UsageError(f"{what} {v!r} is not understood", "use 'largest' or a 0-based index from the left")
        if self.fps is not None and not 0 < self.fps <= 1000:
            raise UsageError(f"--fps {self.fps:g} is out of range", "give a frame rate in (0, 1000]")
        if self.multi not in ("auto", "select", "fuse"):
            raise UsageError(f"--multi {self.multi!r} is not understood", "use auto, select or fuse")
        from reenact.media import PRESETS

        if self.preset not in PRESETS:
            raise UsageError(f"unknown --preset {self.preset!r}", f"choose one of {', '.join(PRESETS)}")
        if self.chunk < 1:
            raise UsageError(f"--chunk-frames {self.chunk} is too small", "use at least 1 (default 250)")
