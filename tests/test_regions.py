"""Region generators (mouth, eyes): crop geometry, the training-pair maker, tiny training, export
parity, the redrawing engine and its CLI options. Synthetic faces only (no shared data)."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from reenact import geometry as g
from reenact import regions, warp
from tests import synth
from tests.gen_helpers import CacheWriter, REPO, synthetic_face

pytestmark = pytest.mark.usefixtures("one_thread")


def test_region_crop_and_paste_round_trip() -> None:
    pts = synth.face(256, yaw=12, roll=6)
    img = synth.textured(256, seed=1)
    for box in [regions.mouth_box(pts, 64), *regions.eye_boxes(pts, 48).values()]:
        patch = box.extract(img)
        assert patch.shape == (box.size, box.size, 3)
        back = box.paste(np.zeros_like(img), patch, np.ones((box.size, box.size), np.float32))
        # Inside the box the pasted patch reproduces the image (up to resampling); outside: untouched.
        cx, cy = (int(round(v)) for v in box.centre)
        r = int(box.side / 4)
        inner = (slice(cy - r, cy + r), slice(cx - r, cx + r))
        assert np.abs(back[inner].astype(int) - img[inner]).mean() < 6
        assert back[: max(0, cy - int(box.side)), :].max(initial=0) == 0


def test_paste_over_the_crop_it_was_drawn_on_adds_only_the_change() -> None:
    pts = synth.face(256, yaw=10)
    img = synth.textured(256, seed=2)
    box = regions.mouth_box(pts, 32)  # a coarse region: the crop loses the texture's fine detail
    under = box.extract(img)
    mask = np.ones((32, 32), np.float32)
    assert np.array_equal(box.paste(img, under, mask, under=under), img)  # no change drawn: none pasted
    plain = box.paste(img, under, mask)  # pasting the crop itself blurs the face crop under the box
    cx, cy = (int(round(v)) for v in box.centre)
    r = int(box.side / 4)
    inner = (slice(cy - r, cy + r), slice(cx - r, cx + r))
    assert np.abs(plain[inner].astype(int) - img[inner]).mean() > 2
    brighter = box.paste(img, np.clip(under.astype(int) + 20, 0, 255).astype(np.uint8), mask, under=under)
    change = brighter[inner].astype(int) - img[inner]
    assert np.median(change) == 20 and np.abs(brighter[:cy - int(box.side)].astype(int) - img[:cy - int(box.side)]).max() == 0


@pytest.mark.parametrize("canvas", [None, np.array([[0.8, -0.3, 40.0], [0.3, 0.8, -25.0]])])
@pytest.mark.parametrize("drawn_over", [False, True])
def test_paste_of_a_small_mask_touches_only_its_reach_and_all_of_it(canvas, drawn_over) -> None:
    """A paste works only where the mask's resampling is not 0 (a mouth opening is a few per
    cent of its box): the same pixels as resampling the mask over the whole image."""
    img = synth.textured(320, seed=3)
    box = regions.RegionBox((150.0, 170.0), 120.0, 64, mirrored=True).on(canvas)
    ramp = np.linspace(0, 255, 64, dtype=np.float32)
    patch = np.stack([np.add.outer(ramp, ramp) / 2, np.add.outer(ramp, -ramp) / 2 + 128, ramp[None].repeat(64, 0)],
                     -1).astype(np.uint8)
    under = np.full_like(patch, 90) if drawn_over else None
    for y, x, h, w in ((20, 30, 6, 12), (0, 0, 3, 3), (60, 50, 4, 14)):  # in the middle, at two corners
        mask = np.zeros((64, 64), np.float32)
        mask[y:y + h, x:x + w] = 0.9
        got = box.paste(img, patch, mask, under=under)
        to_image = cv2.invertAffineTransform(box._place()[0])
        alpha = cv2.warpAffine(mask, to_image, (320, 320), flags=cv2.INTER_LINEAR)[..., None]
        top = cv2.warpAffine(patch.astype(np.float32) - (0 if under is None else under), to_image, (320, 320),
                             flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        want = img * (1 - alpha) + top * alpha if under is None else img + top * alpha
        want = np.clip(want + 0.5, 0, 255).astype(np.uint8)
        # (sub-pixel rounding of the shifted origin moves a sharp mask edge by up to 1/32 pixel)
        differs = np.abs(got.astype(int) - want).max(2)
        assert differs.max() <= 8 and differs.mean() < 0.01
        moved = np.abs(want.astype(int) - img).max(2) > 8
        assert moved.sum() > 20 and (got != img).any(2)[moved].all()  # every pixel it should change
        assert np.array_equal(got[alpha[..., 0] == 0], img[alpha[..., 0] == 0])  # and no other


def test_mouth_area_mask_covers_the_lips_and_fades_before_the_crop_edges() -> None:
    from reenact import parsing

    pts = synth.open_mouth(synth.face(256, yaw=8), 0.2)
    box = regions.mouth_box(pts, 64)
    pose = parsing.parsing_map(box.points(pts), 64)
    mask = regions.mouth_area_mask(pose)
    lips = pose[[parsing.INDEX[c] for c in ("upper_lip", "lower_lip", "mouth")]].sum(0) > 0.99
    assert mask.shape == (64, 64) and lips.any() and mask[lips].min() > 0.95
    ring = np.ones((64, 64), bool)
    ring[2:-2, 2:-2] = False
    assert mask[ring].max() == 0  # a wide mouth fills this synthetic crop: the window keeps the edges
    inner_only = regions.mouth_mask(box.points(pts), 64)  # the opening blend: the lips stay the warp's
    assert mask.sum() > 2 * inner_only.sum()


def test_mouth_blend_leaves_the_inner_lip_edge_to_the_warp() -> None:
    pts = synth.open_mouth(synth.face(256), 0.25)
    rp = regions.mouth_box(pts, 64).points(pts)
    at = lambda m, xy: float(m[int(round(xy[1])), int(round(xy[0]))])  # noqa: E731
    edge = rp[list(g.LIPS_INNER), :2]
    centre = rp[[13, 14], :2].mean(0)
    blend = regions.mouth_mask(rp, 64)
    assert at(blend, centre) > 0.95  # the redraw fills the inside of the opening
    assert max(at(blend, p) for p in edge) < 0.35  # the warp keeps the inner lip edge where the target puts it
    loss = regions.mouth_training_mask(rp, 64)  # training still supervises the edge
    assert min(at(loss, p) for p in edge) > 0.9


def test_mirrored_eye_box_maps_the_left_eye_onto_right_eye_indices() -> None:
    pts = synth.face(256)
    boxes = regions.eye_boxes(pts, 48)
    right, left = boxes["right"].points(pts), boxes["left"].points(pts)
    # A frontal face is symmetric: the mirrored left eye lands where the right eye does.
    assert np.abs(right[list(g.RIGHT_EYE), :2] - left[list(g.RIGHT_EYE), :2]).max() < 0.5


def test_closing_edits_close_and_keep_the_rest() -> None:
    pts = synth.open_mouth(synth.face(256), 0.25)
    assert regions.mouth_opening(pts) > 0.03
    closed = regions.close_mouth(pts, 1.0)
    assert regions.mouth_opening(closed) < 0.1 * regions.mouth_opening(pts)
    eyes = regions.close_eyes(pts, 1.0)
    assert regions.eye_opening(eyes, "right") < 0.02 and regions.eye_opening(pts, "right") > 0.1
    far = [i for i in g.FACE_OVAL[:5]]  # the forehead does not move with the lips or lids
    assert np.allclose(closed[far], pts[far]) and np.allclose(eyes[far], pts[far])


def _open_mouth_photo(size: int = 256, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A synthetic face with an open mouth whose inside is bright (white 'teeth')."""
    img, pts = synthetic_face(size, np.random.default_rng(seed))
    pts = synth.open_mouth(pts, 0.22)
    inner = np.round(pts[list(g.LIPS_INNER), :2] * 16).astype(np.int32)
    img = img.copy()
    cv2.fillPoly(img, [inner], (235, 235, 230), lineType=cv2.LINE_AA, shift=4)
    return img, pts


def test_round_trip_pair_opens_a_dark_cavity_where_the_truth_is_bright() -> None:
    from reenact.train.regions import PairSpec, make_pairs, round_trip

    img, pts = _open_mouth_photo()
    spec = PairSpec("mouth", 64)
    ref_img, ref_pts = round_trip(spec, img, pts, 1.0)
    assert regions.mouth_opening(ref_pts) < 0.005  # the reference's mouth is closed
    (sample,) = make_pairs(spec, img, pts, ref_img, ref_pts, np.random.default_rng(0))
    inside = regions.fill_polygon(64, regions.mouth_box(pts, 64).points(pts)[list(g.LIPS_INNER)]) > 0.9
    lum = lambda a: a.astype(float).mean(-1)[inside].mean()  # noqa: E731
    assert lum(sample["target"]) > 200  # the truth shows the teeth
    assert lum(sample["warped"]) < 90  # the warp's render: the dark cavity, the artefact to undo
    assert sample["mask"][inside].min() > 0.9 and sample["mask"][0, 0] < 0.01
    assert sample["grid_c"].shape == (64, 64, 2) and np.abs(sample["grid_c"]).max() <= 1.5


def _region_cache(path: Path, n: int = 6) -> Path:
    writer = CacheWriter(path, size=128, quality=90)
    for i in range(n):
        img, pts = _open_mouth_photo(128, seed=i)
        writer.add(f"synth_{i:03d}.png", i % 3, img, pts)
    writer.finish({"source": "synthetic", "identities": None, "split": "train"})
    return path


def test_same_video_pairs_take_the_reference_from_another_frame_of_that_video(tmp_path: Path) -> None:
    from reenact.train import regions as rp

    writer = CacheWriter(tmp_path / "videos", size=128, quality=90)
    for video in range(2):
        for i in range(10):  # every frame has another ≥ MIN_VIDEO_GAP away
            img, pts = _open_mouth_photo(128, seed=10 * video + i)
            writer.add(f"v{video}.mp4@{i}", video, img, pts)
    writer.finish({"source": "synthetic", "identities": "one per video", "split": "videos"})
    photos = _region_cache(tmp_path / "photos", n=3)
    pack = rp.RegionPack(rp.build_pack(photos, tmp_path / "pack", region="mouth", size=32, identity_pairs=0.0,
                                       video_cache=tmp_path / "videos"))
    assert pack.meta["same_video"] == 20 and pack.meta["same_person"] == 0 and pack.meta["round_trip"] == 3 + 20
    kinds, idents = pack.arrays["kind"], pack.arrays["identity"]
    assert set(idents[kinds == rp.SAME_VIDEO]) == {rp.VIDEO_IDENTITY_OFFSET, rp.VIDEO_IDENTITY_OFFSET + 1}
    from reenact.train.cache import FaceCache

    cache = FaceCache(tmp_path / "videos")  # the stored (JPEG) frames the pairs were cut from
    crops = {(int(cache.identity[j]), j % 10): regions.mouth_box(cache.points(j).astype(np.float64), 32)
             .extract(cache.image(j)) for j in range(len(cache))}
    targets = pack.arrays["target"][kinds == rp.SAME_VIDEO]
    references = pack.arrays["reference"][kinds == rp.SAME_VIDEO]
    for k, (target, reference) in enumerate(zip(targets, references)):
        video, i = k // 10, k % 10
        assert np.array_equal(target, crops[video, i])
        (source,) = [key for key, crop in crops.items() if np.array_equal(crop, reference)]
        assert source[0] == video and abs(source[1] - i) >= rp.MIN_VIDEO_GAP


def test_video_cache_holds_every_strided_frame_as_one_identity(tmp_path: Path) -> None:
    from reenact.train.cache import FaceCache, prepare_video_cache

    summary = prepare_video_cache([REPO / "examples" / "drive.mp4"], tmp_path / "v", size=128, stride=50)
    cache = FaceCache(summary.path)
    assert list(cache.names) == ["drive.mp4@0", "drive.mp4@50", "drive.mp4@100"]
    assert set(cache.identity.tolist()) == {0} and cache.meta["split"] == "videos"
    assert cache.image(0).shape == (128, 128, 3) and 0 < cache.points(0)[:, 0].min() < cache.points(0)[:, 0].max() < 128


def test_videos_without_a_video_cache_are_a_config_error() -> None:
    from reenact.errors import UsageError
    from reenact.train.config import DataConfig

    with pytest.raises(UsageError, match="video_cache"):
        DataConfig(videos=("a.mp4",))
    assert DataConfig(videos=["a.mp4"], video_cache="c").videos == ("a.mp4",)


def _tiny_region_config(tmp: Path, region: str):
    from reenact.train.config import TrainConfig

    base = TrainConfig.from_toml(REPO / "configs" / "region-tiny.toml").to_dict()
    base["model"]["region"] = region
    base["data"].update(cache=str(_region_cache(tmp / "cache")) if not (tmp / "cache").exists() else str(tmp / "cache"),
                        region_pack=str(tmp / f"pack-{region}"))
    return TrainConfig.from_dict(base)


@pytest.fixture(scope="module")
def tiny_models(tmp_path_factory) -> dict[str, Path]:
    """Per region: a 2-step training on synthetic faces, exported → {region: NAME.onnx}."""
    from reenact.export import export_generator
    from reenact.train import loop
    from reenact.train.regions import build_pack

    tmp = tmp_path_factory.mktemp("regions")
    out = {}
    for region in ("mouth", "eyes"):
        cfg = _tiny_region_config(tmp, region)
        build_pack(cfg.data.cache, cfg.data.region_pack, region=region, size=cfg.model.size)
        result = loop.train(cfg, tmp / f"run-{region}")
        assert result.step == 2 and (tmp / f"run-{region}" / "samples").is_dir()
        logged = result.history[-1]
        assert {"raw/l1", "raw/gan", "raw/self_consistency", "raw/triple_consistency"} <= set(logged)
        out[region] = export_generator(result.checkpoint, tmp / f"{region}-32.onnx").generator
    return out


def _ship(models: dict[str, Path], monkeypatch) -> Path:
    """Make the tiny models the bundled ones: weights dir, sizes and a manifest with their sha256."""
    import hashlib
    import json

    from reenact import redraw

    folder = next(iter(models.values())).parent
    monkeypatch.setattr(redraw, "WEIGHTS_DIR", folder)
    monkeypatch.setattr(redraw, "REGION_SIZES", {"mouth": 32, "eyes": 32})
    entries = {}
    for region, path in models.items():
        files = [path, path.with_name(path.name.replace(".onnx", ".appearance.onnx"))]
        entries[path.stem] = {"files": {f.name: {"sha256": hashlib.sha256(f.read_bytes()).hexdigest()}
                                        for f in files}}
    (folder / "manifest.json").write_text(json.dumps({"models": entries}))
    return folder


def test_tiny_region_training_exports_with_ort_parity(tiny_models: dict[str, Path]) -> None:
    from reenact.runtime import RegionRuntime

    for region, path in tiny_models.items():
        rt = RegionRuntime(path, expect=region)
        assert rt.region == region and rt.size == 32
        assert path.with_name(f"{region}-32.appearance.onnx").is_file()
        other = "eyes" if region == "mouth" else "mouth"
        with pytest.raises(Exception, match="not the"):
            RegionRuntime(path, expect=other)


def test_export_parity_is_checked_for_region_models(tiny_models, tmp_path: Path) -> None:
    from reenact.export import export_generator

    ckpt = tiny_models["mouth"].parent / "run-mouth" / "checkpoints" / "last.pt"
    report = export_generator(ckpt, tmp_path / "m.onnx")
    assert report.variant == "region" and max(report.max_abs_diff.values()) < 1e-3


def _frame_and_target(open_amount: float = 0.25):
    from reenact.landmarks import Face

    pts = synth.face(240, yaw=8, scale=0.6)
    frame = synth.textured(240, seed=3)
    return frame, Face(points=pts.astype(np.float32)), synth.open_mouth(pts, open_amount)


def test_fusion_engine_redraws_only_the_opening_mouth(tiny_models: dict[str, Path]) -> None:
    from reenact import engines
    from reenact.config import InferenceConfig

    cfg = InferenceConfig(engine="fusion", mouth_weights=str(tiny_models["mouth"]), eyes="warp")
    fusion = engines.build_engine(cfg)
    plain = engines.build_engine(InferenceConfig(engine="warp"))
    assert fusion.name == "fusion" and fusion.redrawer is not None and plain.redrawer is None
    frame, face, target = _frame_and_target()
    a, b = fusion.prepare(frame, face), plain.prepare(frame, face)
    out, mask = fusion.render(a, target)
    ref, _ = plain.render(b, target)
    diff = np.abs(out.astype(int) - ref).sum(-1) > 0
    pts = a.crop.points_to_crop(target)
    mouth = regions.mouth_box(pts, 64)
    ys, xs = np.nonzero(diff)
    assert diff.any()
    assert np.all(np.abs(xs - mouth.centre[0]) <= mouth.side / 2 + 2)
    assert np.all(np.abs(ys - mouth.centre[1]) <= mouth.side / 2 + 2)
    closed_out, _ = fusion.render(a, face.points)  # the reference's own (closed) mouth: untouched
    closed_ref, _ = plain.render(b, face.points)
    assert np.array_equal(closed_out, closed_ref)


def test_area_blend_trains_on_from_an_opening_model_and_redraws_every_mouth(tiny_models, tmp_path: Path) -> None:
    from reenact import engines
    from reenact.config import InferenceConfig
    from reenact.export import export_generator
    from reenact.model.config import ModelConfig
    from reenact.runtime import RegionRuntime
    from reenact.train import loop
    from reenact.train.config import TrainConfig

    def changed(model: dict, max_steps: int) -> TrainConfig:
        values = _tiny_region_config(tiny_models["mouth"].parent, "mouth").to_dict()
        values["model"].update(model)
        return TrainConfig.from_dict({**values, "max_steps": max_steps})

    run = tiny_models["mouth"].parent / "run-mouth"
    cfg = changed({"blend": "area"}, 4)
    result = loop.train(cfg, tmp_path / "run", resume=run / "checkpoints" / "last.pt")  # blend changes no weight
    assert result.step == 4
    model = export_generator(result.checkpoint, tmp_path / "mouth-area.onnx").generator
    assert RegionRuntime(model, expect="mouth").blend == "area"
    with pytest.raises(Exception, match="differs"):
        loop.train(changed({"blend": "area", "base_channels": 4}, 6), tmp_path / "run2", resume=result.checkpoint)
    assert not ModelConfig(variant="region", region="mouth").same_weights(ModelConfig(variant="region", region="eyes"))
    with pytest.raises(ValueError, match="blend"):
        ModelConfig(variant="region", region="eyes", blend="area")

    fusion = engines.build_engine(InferenceConfig(engine="fusion", mouth_weights=str(model), eyes="warp"))
    plain = engines.build_engine(InferenceConfig(engine="warp"))
    frame, face, _ = _frame_and_target()
    a, b = fusion.prepare(frame, face), plain.prepare(frame, face)
    out, _ = fusion.render(a, face.points)  # a closed mouth is redrawn too, inside the mouth box only
    ref, _ = plain.render(b, face.points)
    ys, xs = np.nonzero(np.abs(out.astype(int) - ref).sum(-1) > 0)
    mouth = regions.mouth_box(a.crop.points_to_crop(face.points), 64)
    assert len(xs) > 0
    assert np.all(np.abs(xs - mouth.centre[0]) <= mouth.side / 2 + 2)
    assert np.all(np.abs(ys - mouth.centre[1]) <= mouth.side / 2 + 2)


def test_eyes_are_redrawn_only_where_the_lids_open_wider(tiny_models: dict[str, Path]) -> None:
    from reenact import engines
    from reenact.config import InferenceConfig
    from reenact.landmarks import Face

    cfg = InferenceConfig(engine="fusion", eyes_weights=str(tiny_models["eyes"]), mouth="cavity")
    engine, plain = engines.build_engine(cfg), engines.build_engine(InferenceConfig(engine="warp"))
    pts = synth.face(240, scale=0.6)
    half_closed = Face(points=synth.close_eyes(pts, 0.6).astype(np.float32))
    frame = synth.textured(240, seed=4)
    a, b = engine.prepare(frame, half_closed), plain.prepare(frame, half_closed)
    opened, _ = engine.render(a, pts)  # the target opens the eyes: redrawn
    assert not np.array_equal(opened, plain.render(b, pts)[0])
    closing = synth.close_eyes(pts, 0.8)  # the target closes them further: the warp's own
    assert np.array_equal(engine.render(a, closing)[0], plain.render(b, closing)[0])


def test_a_redrawn_eye_is_no_brighter_than_the_references_light() -> None:
    from reenact.redraw import within_light

    rng = np.random.default_rng(0)
    dim = rng.integers(40, 120, (48, 48, 3)).astype(np.uint8)  # a dim frame's eye crop
    glowing = np.full((48, 48, 3), 250, np.uint8)  # a sclera drawn as in well-lit photos
    out = within_light(glowing, dim)
    assert out.max() <= 120 and np.array_equal(out.max((0, 1)), np.percentile(dim.reshape(-1, 3), 99, axis=0).round())
    natural = rng.integers(40, 100, (48, 48, 3)).astype(np.uint8)  # already within the light: untouched
    assert np.array_equal(within_light(natural, np.full_like(dim, 130)), natural)


def test_driver_mouth_baseline_fills_the_opening_with_the_drivers_mouth() -> None:
    from reenact import engines
    from reenact.config import InferenceConfig
    from reenact.redraw import DriverFace

    frame, face, target = _frame_and_target()
    driver_img, driver_pts = _open_mouth_photo(256, seed=5)  # bright teeth inside the driver's mouth
    engine = engines.build_engine(InferenceConfig(engine="warp", mouth="driver"))
    assert engine.needs_driver
    state = engine.prepare(frame, face)
    out, _ = engine.render(state, target, DriverFace(driver_img, driver_pts))
    cavity, _ = engines.build_engine(InferenceConfig(engine="warp")).render(
        engines.build_engine(InferenceConfig(engine="warp")).prepare(frame, face), target)
    pts = state.crop.points_to_crop(target)
    size = out.shape[0]
    inside = regions.fill_polygon(size, pts[list(g.LIPS_INNER)]) > 0.9
    assert out[inside].mean() > cavity[inside].mean() + 40  # brighter than the dark cavity


def test_region_model_given_as_whole_face_weights_is_refused(tiny_models: dict[str, Path]) -> None:
    from reenact import engines
    from reenact.config import InferenceConfig
    from reenact.errors import MissingWeights

    with pytest.raises(MissingWeights, match="region generator"):
        engines.build_engine(InferenceConfig(engine="gan", weights=str(tiny_models["mouth"])))


def test_default_engine_is_fusion_once_the_mouth_generator_ships(tmp_path: Path, monkeypatch) -> None:
    from reenact import engines, redraw

    monkeypatch.setattr(engines, "DEFAULT_WEIGHTS", tmp_path / "absent.onnx")
    monkeypatch.setattr(redraw, "bundled", lambda region: tmp_path / f"{region}.onnx")
    assert engines.default_engine() == "warp"
    (tmp_path / "mouth.onnx").write_bytes(b"")
    assert engines.default_engine() == "fusion"


def test_bundled_models_are_picked_by_default(tiny_models: dict[str, Path], monkeypatch) -> None:
    from reenact import engines
    from reenact.config import InferenceConfig

    _ship(tiny_models, monkeypatch)
    monkeypatch.setattr(engines, "DEFAULT_WEIGHTS", tiny_models["mouth"].parent / "absent.onnx")
    assert engines.default_engine() == "fusion"
    engine = engines.build_engine(InferenceConfig(engine="fusion"))
    assert engine.redrawer.mouth_model.path == tiny_models["mouth"]
    assert engine.redrawer.eyes_model.path == tiny_models["eyes"]


def test_a_damaged_bundled_model_is_refused_by_its_manifest(tiny_models, tmp_path: Path, monkeypatch) -> None:
    import shutil

    from reenact import engines
    from reenact.config import InferenceConfig
    from reenact.errors import MissingWeights

    copies = {}
    for region, path in tiny_models.items():
        for f in (path, path.with_name(path.name.replace(".onnx", ".appearance.onnx"))):
            shutil.copy(f, tmp_path / f.name)
        copies[region] = tmp_path / path.name
    _ship(copies, monkeypatch)
    engines.build_engine(InferenceConfig(engine="fusion"))  # intact: fine
    data = bytearray(copies["mouth"].read_bytes())
    data[-100] ^= 0xFF
    copies["mouth"].write_bytes(bytes(data))
    with pytest.raises(MissingWeights, match="sha256"):
        engines.build_engine(InferenceConfig(engine="fusion"))
    engines.build_engine(InferenceConfig(engine="warp"))  # the warp engine still works


@pytest.mark.parametrize("content", [b"", b"not an onnx file", None])
def test_corrupt_or_foreign_region_weights_exit_6(tmp_path: Path, content, tiny_models) -> None:
    from typer.testing import CliRunner

    from reenact.cli import app

    bad = tmp_path / "bad.onnx"
    if content is None:  # a real ONNX file of the other region
        bad = tiny_models["eyes"]
    else:
        bad.write_bytes(content)
    frame, _, _ = _frame_and_target()
    ref = tmp_path / "ref.png"
    cv2.imwrite(str(ref), frame)
    result = CliRunner().invoke(app, ["image", str(ref), str(ref), "-o", str(tmp_path / "o.png"),
                                      "--engine", "fusion", "--mouth-weights", str(bad)])
    assert result.exit_code in (3, 6), result.output  # 3 when no face is found first (synthetic frame)
    assert "Traceback" not in result.output and not (tmp_path / "o.png").exists()


def test_kid_is_near_zero_for_one_distribution_and_grows_with_a_shift() -> None:
    from reenact.evaluate import metrics

    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(200, 16)), rng.normal(size=(200, 16))
    same, shifted = metrics.kid(a, b), metrics.kid(a, b + 0.5)
    assert abs(same) < 0.01 and shifted > 10 * max(abs(same), 1e-4)


def test_region_crops_locate_mouth_and_both_eyes_by_the_landmarks() -> None:
    from reenact.evaluate import metrics

    pts = synth.face(256)
    img = synth.textured(256, seed=2)
    crops = metrics.region_crops(img, pts)
    assert set(crops) == {"mouth", "eye_right", "eye_left"}
    assert all(c.shape == (metrics.REGION_SIZE,) * 2 + (3,) for c in crops.values())
    same = metrics.region_metrics(crops, crops)
    assert same["mouth_psnr"] == 100.0 and same["eyes_ssim"] == pytest.approx(1.0)


def test_extract_blurs_only_around_the_box():
    """A box much larger than its region crop is blurred first; only a window around it is
    blurred, with the same pixels as blurring the whole image (edges and outside boxes too)."""
    image = synth.textured(400, seed=4)
    rng = np.random.default_rng(1)
    for _ in range(40):
        box = regions.RegionBox((float(rng.uniform(-150, 550)), float(rng.uniform(-150, 550))),
                                float(rng.uniform(150, 400)), 48, mirrored=bool(rng.integers(2)))
        sigma = 0.5 * box.side / box.size
        whole = cv2.warpAffine(cv2.GaussianBlur(image, (0, 0), sigma), box.matrix, (48, 48),
                               flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        assert np.array_equal(box.extract(image), whole)
