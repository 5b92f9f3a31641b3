"""gan / fusion engines with an exported tiny generator: rendering, the FusionNet mask, engine
selection, and `reenact image --engine gan|fusion` end to end."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from reenact import engines, fusion, parsing, warp
from reenact.config import InferenceConfig
from reenact.errors import MissingWeights
from reenact.export import export_generator
from reenact.landmarks import Face
from reenact.pipeline import Reenactor, Reference
from tests import synth
from tests.gen_helpers import trained_checkpoint

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def weights(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("gen-engines")
    return export_generator(trained_checkpoint(tmp, steps=1), tmp / "tiny.onnx").generator


def _frame() -> tuple[np.ndarray, Face, np.ndarray]:
    """A 240² frame with a synthetic face, its Face, and a target with an open mouth."""
    pts = synth.face(240, yaw=10, scale=0.6)
    frame = synth.textured(240, seed=3)
    return frame, Face(points=pts.astype(np.float32)), synth.open_mouth(pts, 0.25)


@pytest.mark.parametrize("name", ["gan", "fusion"])
def test_engines_render_crops_and_paste_masks(weights: Path, name: str) -> None:
    engine = engines.build_engine(InferenceConfig(engine=name, weights=str(weights)))
    assert engine.name == name and isinstance(engine, engines.GanEngine)
    frame, face, target = _frame()
    state = engine.prepare(frame, face)
    assert state.image.shape == (64, 64, 3) and len(state.extra.features) == 4
    rgb, mask = engine.render(state, target)
    assert rgb.shape == (64, 64, 3) and rgb.dtype == np.uint8 and mask.shape == (64, 64)
    assert 0 <= mask.min() and mask.max() <= 1 and mask[0].max() < 1e-3 and mask[32, 32] > 0.9


def test_fusion_takes_the_warp_inside_the_shared_face_and_the_gan_elsewhere(weights: Path) -> None:
    frame, face, target = _frame()
    engine = engines.build_engine(InferenceConfig(engine="fusion", weights=str(weights)))
    gan = engines.build_engine(InferenceConfig(engine="gan", weights=str(weights)))
    state, gstate = engine.prepare(frame, face), gan.prepare(frame, face)
    out, _ = engine.render(state, target)
    gan_out, _ = gan.render(gstate, target)
    points = state.crop.points_to_crop(target)
    map_x, map_y = warp.backward_map(state.extra.source, points)
    mask = fusion.fusion_mask(state.extra.region, points, map_x, map_y)
    pm = parsing.parsing_map(points, 64)
    assert mask[parsing.face_mask(pm) < 0.01].max() < 0.05  # outside the target's face: GAN
    assert mask[pm[parsing.INDEX["mouth"]] > 0.99].max() < 0.5  # the opened mouth: mostly GAN
    assert mask.max() > 0.95
    far = mask < 1e-3
    assert np.abs(out[far].astype(int) - gan_out[far]).max() <= 1


def test_fusion_mask_is_exclusive_of_the_mouth_interior() -> None:
    pts = synth.open_mouth(synth.face(128), 0.3)
    pm = parsing.parsing_map(pts, 128)
    region = fusion.face_region(pm)
    assert region[pm[parsing.INDEX["mouth"]] > 0.99].max() < 1e-6
    ys, xs = np.mgrid[0:128, 0:128].astype(np.float32)
    mask = fusion.fusion_mask(region, pts, xs, ys)  # identity maps: reference = target
    assert mask[64, 40] > 0.9 and mask[pm[parsing.INDEX["mouth"]] > 0.99].max() < 0.3
    blended = fusion.blend(np.zeros((128, 128, 3), np.uint8), np.full((128, 128, 3), 200, np.uint8), mask)
    assert blended[64, 40, 0] > 180 and blended[2, 2, 0] == 0


def test_engine_selection_and_missing_weights(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, weights: Path) -> None:
    from reenact import redraw

    monkeypatch.setattr(engines, "DEFAULT_WEIGHTS", tmp_path / "absent.onnx")
    monkeypatch.setattr(redraw, "bundled", lambda region: tmp_path / f"absent-{region}.onnx")
    assert engines.default_engine() == "warp"
    with pytest.raises(MissingWeights, match="needs trained generator weights"):
        engines.build_engine(InferenceConfig(engine="gan"))
    with pytest.raises(MissingWeights, match="mouth generator is not installed"):  # fusion = warp + regions
        engines.build_engine(InferenceConfig(engine="fusion"))
    with pytest.raises(MissingWeights, match="not found"):
        engines.build_engine(InferenceConfig(engine="gan", weights=str(tmp_path / "nope.onnx")))
    monkeypatch.setattr(engines, "DEFAULT_WEIGHTS", weights)
    assert engines.default_engine() == "fusion"
    assert isinstance(engines.build_engine(InferenceConfig(engine="fusion")), engines.FusionEngine)


def test_reenactor_pastes_the_gan_face_into_the_frame(weights: Path) -> None:
    frame, face, target = _frame()
    config = InferenceConfig(engine="fusion", weights=str(weights))
    r = Reenactor(Reference(image=frame, face=face, n_faces=1), config)
    out = r.render(Face(points=target.astype(np.float32)))
    assert out.shape == frame.shape and not np.array_equal(out, frame)
    assert np.array_equal(out[:5, :5], frame[:5, :5])  # far from the face: untouched


@pytest.mark.parametrize("engine", ["gan", "fusion"])
def test_cli_image_with_exported_weights(shared_data: Path, weights: Path, tmp_path: Path, engine: str) -> None:
    from reenact import media
    from reenact.cli import app

    ref = shared_data / "clips" / "lia-vox" / "taylor.png"
    pose = shared_data / "samples" / "pyfeat" / "0-f1-su-ph.jpg"
    target = tmp_path / f"{engine}.png"
    r = CliRunner().invoke(app, ["image", str(ref), str(pose), "--engine", engine, "--weights", str(weights),
                                 "-o", str(target)])
    assert r.exit_code == 0, r.output
    assert media.read_image(target).shape == media.read_image(ref).shape
    r = CliRunner().invoke(app, ["image", str(ref), str(pose), "--engine", engine, "-o", str(tmp_path / "x.png")])
    from reenact import redraw

    # Without --weights: gan needs the whole-face model; fusion falls back to the region generators.
    available = engines.DEFAULT_WEIGHTS.is_file() or (engine == "fusion" and redraw.bundled("mouth").is_file())
    assert (r.exit_code == 0) if available else (r.exit_code == 6 and "weights" in r.output), r.output


def test_inference_imports_neither_torch_nor_training_code() -> None:
    import subprocess
    import sys

    code = ("import sys, reenact.engines, reenact.pipeline, reenact.runtime, reenact.fusion; "
            "bad = [m for m in ('torch', 'reenact.train', 'reenact.model') if m in sys.modules]; "
            "sys.exit(f'imported {bad}' if bad else 0)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env={**__import__("os").environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])})
    assert proc.returncode == 0, proc.stderr
