"""Several reference photos: expansion of the command line, per-frame nearest-pose selection in
the pipeline (pasted into the primary's frame), fusion by a k-shot generator, resume replay."""

from __future__ import annotations

import subprocess
import sys

import cv2
import numpy as np
import pytest

from reenact import media
from reenact import references as refs
from reenact.config import InferenceConfig
from reenact.errors import MediaError, UsageError
from reenact.landmarks import Face
from reenact.pipeline import Reenactor, Reference
from tests import synth
from tests.conftest import REPO

EXAMPLES = REPO / "examples"


def reference(yaw: float, seed: int, name: str, size: int = 320) -> Reference:
    pts = synth.face(size, yaw=yaw, scale=0.6)
    return Reference(image=synth.textured(size, seed=seed), face=Face(points=pts.astype(np.float32)),
                     n_faces=1, name=name)


def driver(yaw: float) -> Face:
    return Face(points=synth.face(500, yaw=yaw, scale=0.8).astype(np.float32))


def test_expand_files_folders_and_globs(tmp_path):
    for name in ("b.jpg", "a.png", "c.txt", "d.jpg"):
        (tmp_path / name).write_bytes(b"x")
    (tmp_path / "sub").mkdir()
    got = refs.expand([tmp_path / "d.jpg", tmp_path, str(tmp_path / "*.jpg")])
    assert [p.name for p in got] == ["d.jpg", "a.png", "b.jpg"]  # order kept, duplicates dropped
    with pytest.raises(MediaError, match="no photo matches"):
        refs.expand([str(tmp_path / "zz*.jpg")])
    with pytest.raises(MediaError, match="no photos in the folder"):
        refs.expand([tmp_path / "sub"])


def test_selection_uses_the_reference_nearest_the_rendered_pose():
    bank = [reference(0, 1, "front"), reference(-30, 2, "left"), reference(30, 3, "right")]
    r = Reenactor(bank, InferenceConfig(), multi="select")
    assert r.mode == "select"
    yaws = [0, -28, -31, 27, 33, 2]
    outs = [r.render(driver(y)) for y in yaws]
    assert all(o.shape == bank[0].image.shape for o in outs)  # always the primary's frame
    names = {name: runs for name, _, runs in r.usage()}
    assert names == {"front": [(0, 0), (5, 5)], "left": [(1, 2)], "right": [(3, 4)]}
    # Rendering from reference 2 really uses its pixels: the face differs from the primary's.
    single = Reenactor(bank[0], InferenceConfig())
    assert np.abs(outs[4].astype(int) - single.render(driver(33))).mean() > 5


def test_prepared_states_are_reused_across_k(monkeypatch):
    bank = [reference(0, 1, "front"), reference(-30, 2, "left"), reference(30, 3, "right")]
    full = Reenactor(bank, InferenceConfig(), multi="select")
    monkeypatch.setattr(full.engine, "prepare", lambda *a, **k: pytest.fail("prepared again"))
    for k in (1, 2, 3):
        r = Reenactor(bank[:k], InferenceConfig(), engine=full.engine, multi="select", states=full.states[:k])
        fresh = Reenactor(bank[:k], InferenceConfig(), multi="select")
        assert np.array_equal(r.render(driver(-28)), fresh.render(driver(-28)))
    with pytest.raises(ValueError, match="2 prepared states for 3 references"):
        Reenactor(bank, InferenceConfig(), engine=full.engine, states=full.states[:2])


def test_one_reference_is_the_single_path():
    r = Reenactor([reference(0, 1, "only")], InferenceConfig(), multi="select")
    assert r.mode == "single" and r.usage() == [("only", 0, [])]


def test_advance_replays_the_choice_like_rendering():
    bank = [reference(0, 1, "a"), reference(-30, 2, "b")]
    yaws = [0, -20, -28, -12, -29, 3]
    full = Reenactor(bank, InferenceConfig(), multi="select")
    for y in yaws:
        full.render(driver(y))
    resumed = Reenactor(bank, InferenceConfig(), multi="select")
    for y in yaws[:3]:
        resumed.advance(driver(y))  # a resumed render's completed chunk
    for y in yaws[3:]:
        resumed.render(driver(y))
    assert resumed.usage() == full.usage()


def test_fuse_needs_a_kshot_engine():
    with pytest.raises(UsageError, match="k-shot"):
        Reenactor([reference(0, 1, "a"), reference(20, 2, "b")], InferenceConfig(), multi="fuse")


def test_fuse_with_a_kshot_model(tmp_path, one_thread):
    from reenact.export import export_generator
    from reenact.train import loop
    from tests.gen_helpers import synthetic_cache, tiny_config

    synthetic_cache(tmp_path / "cache", n=12, size=64)  # 3 identities × 4 photos
    cfg = tiny_config(tmp_path / "cache", toml="kshot-tiny.toml")
    weights = export_generator(loop.train(cfg, tmp_path / "run", max_steps=1).checkpoint,
                               tmp_path / "k.onnx").generator
    bank = [reference(0, 1, "a"), reference(-25, 2, "b"), reference(25, 3, "c")]
    config = InferenceConfig(engine="gan", weights=str(weights))
    fused = Reenactor(bank, config)  # auto → fuse
    assert fused.mode == "fuse" and len(fused.state.extra.embeddings) == 3
    one = Reenactor(bank[0], config)
    a, b = fused.render(driver(10)), one.render(driver(10))
    assert a.shape == b.shape == bank[0].image.shape and not np.array_equal(a, b)
    assert Reenactor(bank, config, multi="select").mode == "select"


def test_cli_image_with_a_folder_of_references(tmp_path):
    folder = tmp_path / "refs"
    folder.mkdir()
    ref = cv2.imread(str(EXAMPLES / "ref.jpg"))
    cv2.imwrite(str(folder / "1-front.jpg"), ref)
    cv2.imwrite(str(folder / "2-mirrored.jpg"), ref[:, ::-1])  # the same person turned the other way
    out = tmp_path / "o.png"
    r = subprocess.run([sys.executable, "-m", "reenact", "image", str(folder), str(EXAMPLES / "pose.jpg"),
                        "-o", str(out)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert "2 references; rendered from" in r.stdout
    assert media.read_image(out).shape == ref.shape


@pytest.mark.slow
def test_cli_video_reports_which_reference_served_which_frames(tmp_path):
    ref = cv2.imread(str(EXAMPLES / "ref.jpg"))
    mirrored = tmp_path / "mirrored.jpg"
    cv2.imwrite(str(mirrored), ref[:, ::-1])
    out = tmp_path / "v.mp4"
    r = subprocess.run([sys.executable, "-m", "reenact", "video", str(EXAMPLES / "ref.jpg"), str(EXAMPLES / "drive.mp4"),
                        "--ref", str(mirrored), "--multi", "select", "--chunk-frames", "50", "-o", str(out)],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    lines = {line.split()[1]: line for line in r.stdout.splitlines() if line.startswith("reference ")}
    assert set(lines) == {"ref.jpg", "mirrored.jpg"}
    served = sum(int(line.split()[2]) for line in lines.values())
    assert served == sum(1 for _ in media.VideoReader(out)) == sum(1 for _ in media.VideoReader(EXAMPLES / "drive.mp4"))
