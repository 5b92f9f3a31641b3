"""Export → onnx.checker → ONNX Runtime parity (reenact.export), and the runtime (reenact.runtime)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from typer.testing import CliRunner

from reenact import runtime
from reenact.errors import MissingWeights, OutputError, ReenactError
from reenact.export import OPSET, appearance_path, export_generator, face_like_inputs, load_generator
from tests.gen_helpers import trained_checkpoint

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    torch.set_num_threads(1)
    return trained_checkpoint(tmp_path_factory.mktemp("gen-export"), steps=1)


@pytest.fixture(scope="module")
def exported(checkpoint: Path):
    """The fp32 export of the module's checkpoint (read-only: copy before modifying)."""
    return export_generator(checkpoint, checkpoint.parent.parent / "tiny.onnx")


def test_export_checker_metadata_and_parity(exported, checkpoint: Path) -> None:
    report = exported
    out = report.generator
    assert report.appearance == out.with_name("tiny.appearance.onnx") == appearance_path(out)
    assert max(report.max_abs_diff.values()) < 1e-4 and set(report.max_abs_diff) == {"random", "face"}
    gen, app = onnx.load(str(report.generator)), onnx.load(str(report.appearance))
    onnx.checker.check_model(gen, full_check=True)
    meta = {p.key: p.value for p in gen.metadata_props}
    assert meta["reenact.kind"] == "generator" and meta["reenact.appearance"] == "tiny.appearance.onnx"
    assert json.loads(meta["reenact.model_config"])["size"] == 64 and meta["reenact.step"] == "1"
    assert meta["reenact.opset"] == str(OPSET) and meta["reenact.version"] and meta["reenact.weights"] == "ema"
    assert [i.name for i in gen.graph.input] == ["appearance_4", "appearance_8", "appearance_16", "appearance_32",
                                                 "pose_parsing"]
    assert [o.name for o in gen.graph.output] == ["image"] and [i.name for i in app.graph.input] == ["reference"]
    assert gen.opset_import[0].version == OPSET
    with pytest.raises(OutputError):
        export_generator(checkpoint, out)


def test_runtime_matches_torch_end_to_end(exported, checkpoint: Path) -> None:
    rt = runtime.GeneratorRuntime(exported.generator, device="cpu")
    assert rt.size == 64 and not rt.feature_warp and rt.providers == ["CPUExecutionProvider"]
    g, _ = load_generator(checkpoint)
    ref, pm, _ = face_like_inputs(g.config, n=1)
    ref_u8 = ((ref[0].permute(1, 2, 0).numpy() + 1) * 127.5).round().astype(np.uint8)
    feats = rt.appearance(ref_u8)
    image = rt.generate(feats, pm[0].numpy())
    with torch.no_grad():
        expected, _ = g(torch.from_numpy(ref_u8.transpose(2, 0, 1)[None] / 127.5 - 1).float(), pm)
    expected_u8 = ((expected[0].permute(1, 2, 0).numpy() + 1) * 127.5 + 0.5).clip(0, 255).astype(np.uint8)
    assert image.shape == (64, 64, 3) and image.dtype == np.uint8
    assert np.abs(image.astype(int) - expected_u8).max() <= 1


@pytest.mark.parametrize("changes", [{"injection": "adain"}, {"feature_warp": True}])
def test_variants_export_with_parity(tmp_path: Path, changes: dict) -> None:
    ckpt = trained_checkpoint(tmp_path, steps=1, model=changes)
    report = export_generator(ckpt, tmp_path / "v.onnx")
    assert max(report.max_abs_diff.values()) < 1e-4
    inputs = [i.name for i in onnx.load(str(report.generator)).graph.input]
    assert ("warp_grid" in inputs) == changes.get("feature_warp", False)
    rt = runtime.GeneratorRuntime(report.generator, device="cpu")
    if rt.feature_warp:
        with pytest.raises(ReenactError, match="warp grid"):
            rt.generate(rt.appearance(np.zeros((64, 64, 3), np.uint8)), np.zeros((12, 64, 64), np.float32))


def test_fp16_weights_halve_the_file_within_tolerance(exported, checkpoint: Path, tmp_path: Path) -> None:
    full = exported
    half = export_generator(checkpoint, tmp_path / "b.onnx", fp16=True)
    assert half.bytes["generator"] < 0.6 * full.bytes["generator"]
    assert max(half.max_abs_diff.values()) < half.tolerance and half.tolerance > full.tolerance
    rt = runtime.GeneratorRuntime(half.generator, device="cpu")
    assert rt.metadata["reenact.precision"] == "fp16-weights"


def test_parity_failure_writes_nothing(checkpoint: Path, tmp_path: Path) -> None:
    with pytest.raises(ReenactError, match="disagree"):
        export_generator(checkpoint, tmp_path / "x.onnx", fp16=True, tolerance=1e-9)
    assert list(tmp_path.iterdir()) == []


def test_runtime_rejects_wrong_files(exported, tmp_path: Path) -> None:
    with pytest.raises(MissingWeights, match="not a reenact generator"):
        runtime.GeneratorRuntime(exported.appearance)
    with pytest.raises(MissingWeights, match="not found"):
        runtime.GeneratorRuntime(tmp_path / "missing.onnx")
    lone = tmp_path / "tiny.onnx"
    shutil.copy(exported.generator, lone)  # without its appearance graph
    with pytest.raises(MissingWeights, match="appearance graph"):
        runtime.GeneratorRuntime(lone)
    (tmp_path / "junk.onnx").write_bytes(b"junk")
    with pytest.raises(MissingWeights):
        runtime.GeneratorRuntime(tmp_path / "junk.onnx")


def test_provider_choice(monkeypatch: pytest.MonkeyPatch) -> None:
    both = ["CUDAExecutionProvider", "CPUExecutionProvider"]
    assert runtime.providers(["CPUExecutionProvider"], "auto") == ["CPUExecutionProvider"]
    assert runtime.providers(both, "cpu") == ["CPUExecutionProvider"]
    assert runtime.providers(both, "cuda") == both
    monkeypatch.setattr(runtime.Path, "exists", lambda self: str(self) == "/proc/driver/nvidia/version")
    assert runtime.providers(both, "auto") == both


def test_cli_export(checkpoint: Path, tmp_path: Path) -> None:
    from reenact.cli import app

    (tmp_path / "w").mkdir()  # a missing output folder is exit 5, as for every command
    r = CliRunner().invoke(app, ["export", str(checkpoint), "-o", str(tmp_path / "w" / "m.onnx"), "--fp16"])
    assert r.exit_code == 0, r.output
    assert "exported and verified" in r.output and (tmp_path / "w" / "m.appearance.onnx").exists()
    r = CliRunner().invoke(app, ["export", str(tmp_path / "nope.pt"), "-o", str(tmp_path / "m.onnx")])
    assert r.exit_code == 6 and "does not exist" in r.output
