"""The landmarker: large faces tracked on a halved frame in video mode (`track_shrink`), small faces found in zoomed windows (image mode; video mode, then tracked in a window)."""

import threading
from pathlib import Path

import cv2
import numpy as np
import pytest

from reenact import geometry as g
from reenact import landmarks, media
from reenact.landmarks import TRACK_FACE_SIDE, TRACK_GROW_BELOW, Face, Landmarker, track_shrink

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def _face(side: float) -> Face:
    """A stand-in face whose landmark box is side × side pixels."""
    points = np.zeros((g.N_LANDMARKS, 3), np.float32)
    points[1, :2] = side
    return Face(points=points)


def test_shrink_halves_while_faces_stay_large_and_does_not_toggle():
    t = TRACK_FACE_SIDE
    assert track_shrink([], 4) == 1  # no face: full size for the next one
    assert track_shrink([_face(2 * t - 1)], 1) == 1
    assert track_shrink([_face(2 * t)], 1) == 2
    assert track_shrink([_face(8 * t)], 1) == 4  # at most TRACK_MAX_SHRINK
    assert track_shrink([_face(8 * t), _face(t)], 4) == 1  # the smallest face decides
    # hysteresis: a face hovering just under 2·t stays halved; only below TRACK_GROW_BELOW back
    assert track_shrink([_face(2 * t - 1)], 2) == 2
    assert track_shrink([_face(2 * TRACK_GROW_BELOW * t - 1)], 2) == 1


def test_video_mode_tracks_a_large_face_on_a_halved_frame_to_the_same_landmarks(monkeypatch):
    small = media.read_image(EXAMPLES / "ref.jpg")  # a face of ~210×265 pixels
    big = cv2.resize(small, None, fx=2, fy=2, interpolation=cv2.INTER_CUBIC)  # ~530 a side

    def track(frame: np.ndarray) -> tuple[np.ndarray, list[int]]:
        """The landmarks of the third of three copies of `frame` (tracked, not detected), and
        the shrink each copy was seen at."""
        with Landmarker(mode="video") as lm:
            seen = []
            for _ in range(3):
                seen.append(lm.shrink)
                points = lm.detect(frame)[0].points
        return points, seen

    halved, seen = track(big)
    assert seen == [1, 2, 2]
    with monkeypatch.context() as m:
        m.setattr(landmarks, "TRACK_FACE_SIDE", 10 ** 6)  # never shrink
        full, seen = track(big)
    assert seen == [1, 1, 1]
    err = np.linalg.norm(full[:, :2] - halved[:, :2], axis=1) / g.face_scale(full)
    assert err.mean() < 0.01 and err.max() < 0.03, (err.mean(), err.max())
    assert track(small)[1] == [1, 1, 1]  # a face under 2 × TRACK_FACE_SIDE: never shrunk


def test_native_log_lines_are_silenced_only_while_a_graph_warms_up(capfd):
    """`_Graph`: what a mediapipe graph writes straight to fd 2 is dropped while it is built and
    for its first QUIET_CALLS calls, then fd 2 is left alone (other threads write there too:
    progress bars, warnings); silencing from several threads at once restores fd 2 after."""
    import os
    import threading

    class Noisy:
        def process(self, rgb):
            os.write(2, b"native log\n")
            return rgb

        def close(self):
            pass

    def make():
        os.write(2, b"loading\n")
        return Noisy()

    graph = landmarks._Graph(make)
    for _ in range(landmarks.QUIET_CALLS + 2):
        graph.process(None)
    assert capfd.readouterr().err == "native log\n" * 2

    started = threading.Barrier(3)

    def quiet_twice():
        with landmarks._quiet_stderr():
            started.wait()
            os.write(2, b"hidden\n")
            started.wait()

    threads = [threading.Thread(target=quiet_twice) for _ in range(2)]
    [t.start() for t in threads]
    started.wait()
    started.wait()
    [t.join() for t in threads]
    os.write(2, b"visible\n")
    assert capfd.readouterr().err == "visible\n"


def test_mediapipe_loads_without_pyplot_and_leaves_the_real_one_importable():
    """mediapipe's drawing helpers import matplotlib.pyplot (a third of a video's start-up):
    our import skips it, and pyplot stays importable, for the helpers as for anyone."""
    import subprocess
    import sys

    code = (
        "import sys\n"
        "from reenact import landmarks\n"
        "mp = landmarks._mediapipe()\n"
        "assert mp.solutions.face_mesh.FaceMesh and 'matplotlib' not in sys.modules, sorted(sys.modules)\n"
        "import matplotlib.pyplot as plt\n"
        "assert callable(plt.figure) and plt.__file__.endswith('pyplot.py')\n"
        "assert mp.solutions.drawing_utils.plt.figure is plt.figure  # the helpers' stand-in loads it\n"
        "print('ok')\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stderr[-2000:]


def test_a_small_face_in_a_large_photo_is_found_in_the_zoomed_windows():
    """The full view misses a face this small; the windows (cut from the photo shrunk once, as
    each is seen at most DETECT_MAX_SIDE a side) find it where it is, as the face alone gives it."""
    face = media.read_image(EXAMPLES / "ref.jpg")  # 640×360
    canvas = np.full((2600, 4400, 3), 90, np.uint8)
    canvas[1900:2260, 3500:4140] = face
    with Landmarker(mode="image") as lm:
        assert not lm._detect_view(canvas, 0, 0, 4400, 2600)  # too small for the whole photo
        alone = lm.detect(face)[0]
        found = lm.detect(canvas)
    assert len(found) == 1
    moved = found[0].xy - np.float32([3500, 1900])
    assert np.linalg.norm(moved - alone.xy, axis=1).mean() < 0.03 * g.face_scale(alone.points)  # (1.4 %: its context)


def test_video_mode_finds_a_small_face_in_zoomed_windows_and_follows_it():
    """A face a twelfth of the frame's width is too small for mediapipe's detector on the whole
    frame: the video landmarker finds it in the zoomed windows and tracks it in a window that
    follows it across the frame, to the landmarks the face alone gives (`search="off"`: lost)."""
    face = media.read_image(EXAMPLES / "ref.jpg")  # 640×360, the face ≈ 210 pixels wide
    with Landmarker(mode="video") as lm:  # tracked where it fills the frame
        alone = [lm.detect(face)[0] for _ in range(3)][-1]

    def frames():
        for i in range(24):  # 30 pixels a frame to the right: 690 in all, ≈ 3 face widths
            canvas = np.full((1440, 2560, 3), 90, np.uint8)
            x = 300 + 30 * i
            canvas[700:1060, x:x + 640] = face
            yield canvas, np.float32([x, 700])

    windows, errors, blind_found = set(), [], 0
    with Landmarker(mode="video") as lm, Landmarker(mode="video", search="off") as blind:
        for frame, offset in frames():
            found = lm.detect(frame)
            blind_found += bool(blind.detect(frame))
            windows.add(lm._window)
            if found:
                errors.append(np.linalg.norm(found[0].xy - offset - alone.xy, axis=1).mean())
    assert blind_found == 0  # the whole frame never shows it
    assert len(errors) == 24  # found in every frame
    assert len(windows - {None}) >= 2  # the window moved with the face
    assert max(errors) < 0.025 * g.face_scale(alone.points), max(errors)  # (1.5 %)


def test_a_background_search_finds_the_small_face_beside_the_caller(monkeypatch):
    """`search="background"` (live): the frame that starts a search returns at once, without a
    face; the search runs in a thread of its own, and the first frame after it ends opens the
    window (confirmed on that frame), which then tracks the face in the frames that follow."""
    face = media.read_image(EXAMPLES / "ref.jpg")
    canvas = np.full((1440, 2560, 3), 90, np.uint8)
    canvas[700:1060, 300:940] = face
    threads = []
    real = Landmarker._search_windows

    def search(self, rgb):
        threads.append(threading.current_thread().name)
        return real(self, rgb)

    monkeypatch.setattr(Landmarker, "_search_windows", search)
    with Landmarker(mode="video", search="background") as lm:
        assert lm.detect(canvas) == [] and lm._pending is not None  # started, not waited for
        lm._pending.result()  # (a live picture would go on meanwhile)
        found = [len(lm.detect(canvas)) for _ in range(3)]
    assert found == [1, 1, 1] and len(threads) == 1 and threads[0].startswith("face-search")
    with pytest.raises(ValueError):
        Landmarker(mode="video", search="yes")

def test_a_letter_found_in_the_zoomed_windows_is_not_taken_for_a_face(shared_data, monkeypatch):
    """A title card of the hard-case clip (no face): the zoomed windows' static detector takes
    a letter for a 54-pixel face. The video search drops it twice over: it is under
    SEARCH_MIN_FACE, and the window's own tracker does not find it again."""
    clip = shared_data / "samples" / "pyfeat" / "face_noface.mov"
    frame = next(f for i, f in enumerate(media.VideoReader(clip)) if i == 116)
    with Landmarker(mode="video") as lm:
        lm._searcher = landmarks._mediapipe_face_mesh(True, lm.max_faces)
        assert lm._detect_tiles(frame, deep=True, mesh=lm._searcher)  # what there is to reject
        assert lm.detect(frame) == [] and lm._window is None
    monkeypatch.setattr(landmarks, "SEARCH_MIN_FACE", 0)
    with Landmarker(mode="video") as lm:
        assert lm.detect(frame) == [] and lm._window is None  # the confirmation alone


def _box_face(x0: float, y0: float, side: float) -> Face:
    """A stand-in face whose landmark box is the square (x0, y0)–(x0 + side, y0 + side)."""
    points = np.zeros((g.N_LANDMARKS, 3), np.float32)
    points[:, :2] = (x0, y0)
    points[1, :2] = (x0 + side, y0 + side)
    return Face(points=points)


def test_the_window_is_placed_around_the_face_and_moves_only_when_it_must():
    w, h = 3840, 2160
    face = _box_face(1900, 1000, 100)
    window = landmarks._window_around(face, w, h)
    assert window == (1750, 850, 2150, 1250)  # WINDOW_FACES = 4 face sides, centred
    assert landmarks._window_around(_box_face(10, 1000, 100), w, h)[0] == 0  # shifted into the frame
    assert landmarks._window_around(_box_face(1900, 1000, 800), w, h)[1::2] == (0, h)  # cut to it

    def stays(moved: Face) -> bool:
        return landmarks._well_inside(moved, window, landmarks._window_around(moved, w, h), w, h)

    assert stays(face) and stays(_box_face(2000, 1100, 100))  # one side off: half a side left
    assert not stays(_box_face(2010, 1000, 100)) and not stays(_box_face(1900, 890 - 100, 100))
    assert stays(_box_face(1860, 960, 180)) and not stays(_box_face(1850, 950, 210))  # > 2× the size
    assert not stays(_box_face(1925, 1025, 45))  # < half the size
    edge = landmarks._window_around(_box_face(0, 1000, 100), w, h)  # against the frame's left edge
    assert landmarks._well_inside(_box_face(-20, 1000, 100), edge, edge, w, h)
