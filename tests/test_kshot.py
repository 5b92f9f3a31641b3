"""k-shot variant (issue 6): fusion properties, shapes, K = 1 equivalence, training, resume,
export with a dynamic K axis, runtime and engine. Tiny widths, one thread, synthetic data."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from reenact import engines, runtime
from reenact.config import InferenceConfig
from reenact.errors import ReenactError, UsageError
from reenact.export import embedder_path, export_generator, load_generator
from reenact.landmarks import Face
from reenact.model import Generator, KShotGenerator, ModelConfig, build_generator, fuse
from reenact.model.kshot import responsibilities
from reenact.train import checkpoint as ckpt
from reenact.train import loop
from reenact.train.cache import FaceCache
from reenact.train.config import TrainConfig
from reenact.train.data import KShotBatchSampler, KShotDataset
from tests import synth
from tests.gen_helpers import REPO, assert_resume_matches, synthetic_cache, tiny_config

pytestmark = pytest.mark.usefixtures("one_thread")

KSHOT = ModelConfig(size=64, base_channels=8, max_channels=32, levels=4, latent_channels=16, spade_hidden=16,
                    injection="spade", variant="kshot", k_max=3)


def _generator(config: ModelConfig = KSHOT, seed: int = 0) -> KShotGenerator:
    torch.manual_seed(seed)
    g = build_generator(config).eval()
    for head in g.embedder.responsibility:  # trained-looking heads, so the weights are not uniform
        torch.nn.init.normal_(head.weight, std=0.5)
    return g


def _inputs(n: int, k: int, size: int = 64, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return (torch.rand(n, k, 3, size, size, generator=gen) * 2 - 1, torch.rand(n, k, 12, size, size, generator=gen),
            torch.rand(n, 12, size, size, generator=gen))


# ------------------------------------------------------------------ fusion


def test_fusion_weights_sum_to_one_and_masked_references_weigh_nothing() -> None:
    logits = torch.randn(2, 4, 1, 5, 5) * 3
    w = responsibilities(logits)
    assert w.shape == (2, 4, 1, 5, 5) and (w > 0).all()
    assert torch.allclose(w.sum(1), torch.ones(2, 1, 5, 5), atol=1e-6)
    mask = torch.tensor([[True, False, True, True], [False, False, True, False]])
    wm = responsibilities(logits, mask)
    assert torch.allclose(wm.sum(1), torch.ones(2, 1, 5, 5), atol=1e-6)
    assert (wm[~mask] == 0).all() and torch.equal(wm[1, 2], torch.ones(1, 5, 5))
    with pytest.raises(ValueError, match="at least one"):
        responsibilities(logits, torch.tensor([[True] * 4, [False] * 4]))


def test_a_reference_with_zero_responsibility_has_no_effect() -> None:
    feats, logits = torch.randn(2, 3, 6, 4, 4), torch.randn(2, 3, 1, 4, 4)
    base = fuse(feats, logits)
    # a 4th reference with a −∞ logit everywhere, or masked out (even with NaN/∞ features)
    extra_f = torch.cat([feats, torch.randn(2, 1, 6, 4, 4)], 1)
    extra_l = torch.cat([logits, torch.full((2, 1, 1, 4, 4), float("-inf"))], 1)
    assert torch.allclose(fuse(extra_f, extra_l), base, atol=1e-6, rtol=0)
    garbage = torch.cat([feats[:, :1], torch.full((2, 1, 6, 4, 4), float("nan")), feats[:, 1:]], 1)
    logits4 = torch.cat([logits[:, :1], torch.full((2, 1, 1, 4, 4), float("inf")), logits[:, 1:]], 1)
    mask = torch.tensor([[True, False, True, True]] * 2)
    assert torch.allclose(fuse(garbage, logits4, mask), base, atol=1e-6, rtol=0)


def test_fusion_is_permutation_invariant_and_one_reference_passes_through() -> None:
    feats, logits = torch.randn(2, 5, 6, 4, 4), torch.randn(2, 5, 1, 4, 4)
    perm = torch.tensor([3, 0, 4, 2, 1])
    assert torch.allclose(fuse(feats[:, perm], logits[:, perm]), fuse(feats, logits), atol=1e-6)
    assert torch.equal(fuse(feats[:, :1], logits[:, :1]), feats[:, 0])  # weight exactly 1


# ------------------------------------------------------------------ networks


def test_kshot_generator_shapes_and_config_checks() -> None:
    g = _generator()
    refs, ref_pm, pm = _inputs(2, 3)
    with torch.no_grad():
        image, recon = g(refs, ref_pm, pm)
        feats, logits, _ = g.embedder(refs[:, 0], ref_pm[:, 0])
    assert image.shape == (2, 3, 64, 64) and image.abs().max() <= 1 and recon.shape == (2, 3, 3, 64, 64)
    assert [tuple(f.shape) for f in feats] == [(2, 32, 4, 4), (2, 32, 8, 8), (2, 32, 16, 16), (2, 16, 32, 32)]
    assert [tuple(lg.shape) for lg in logits] == [(2, 1, 4, 4), (2, 1, 8, 8), (2, 1, 16, 16), (2, 1, 32, 32)]
    with pytest.raises(ValueError, match="takes no"):
        g.embedder(refs[:, 0], ref_pm[:, 0], pm)
    for bad in ({"feature_warp": True}, {"variant": "many"}, {"k_max": 0}):
        with pytest.raises(ValueError):
            ModelConfig(**{**KSHOT.to_dict(), **bad})
    with pytest.raises(ValueError, match="targeted"):
        ModelConfig(targeted_embedder=True)
    assert isinstance(build_generator(ModelConfig(size=64, injection="spade")), Generator)


def test_k1_equals_the_single_reference_path() -> None:
    g = _generator()
    refs, ref_pm, pm = _inputs(2, 1)
    with torch.no_grad():
        image, _ = g(refs, ref_pm, pm)
        feats, _, _ = g.embedder(refs[:, 0], ref_pm[:, 0])
        single = g.decoder(pm, feats)  # D on one reference's features, no fusion at all
    assert torch.equal(image, single)


def test_masked_reference_and_order_do_not_change_the_image() -> None:
    g = _generator()
    refs, ref_pm, pm = _inputs(2, 3)
    with torch.no_grad():
        three, _ = g(refs, ref_pm, pm)
        four, _ = g(torch.cat([refs, torch.rand_like(refs[:, :1])], 1), torch.cat([ref_pm, ref_pm[:, :1]], 1), pm,
                    mask=torch.tensor([[True, True, True, False]] * 2))
        perm = torch.tensor([2, 0, 1])
        shuffled, _ = g(refs[:, perm], ref_pm[:, perm], pm)
    assert torch.allclose(four, three, atol=1e-5) and torch.allclose(shuffled, three, atol=1e-5)


def test_more_references_change_the_output_and_targeted_embedder_sees_the_pose() -> None:
    g = _generator()
    refs, ref_pm, pm = _inputs(1, 3)
    with torch.no_grad():
        one, _ = g(refs[:, :1], ref_pm[:, :1], pm)
        three, _ = g(refs, ref_pm, pm)
    assert not torch.allclose(one, three)
    targeted = _generator(ModelConfig(**{**KSHOT.to_dict(), "targeted_embedder": True}))
    with torch.no_grad():
        image, _ = targeted(refs, ref_pm, pm)
        _, logits_a, _ = targeted.embedder(refs[:, 0], ref_pm[:, 0], pm)
        _, logits_b, _ = targeted.embedder(refs[:, 0], ref_pm[:, 0], torch.zeros_like(pm))
    assert image.shape == (1, 3, 64, 64) and not torch.allclose(logits_a[-1], logits_b[-1])


# ------------------------------------------------------------------ training


def test_hinge_losses() -> None:
    from reenact.train.losses import discriminator_loss, generator_adversarial

    scores = lambda v: [[torch.zeros(2, 4, 3, 3), torch.full((2, 1, 3, 3), v)]]  # noqa: E731  one scale
    assert discriminator_loss(scores(-2.0), scores(2.0), "hinge") == 0  # both beyond the margin
    assert discriminator_loss(scores(0.0), scores(0.0), "hinge") == 2
    assert discriminator_loss(scores(-2.0), scores(2.0), "hinge", mismatch_d=scores(0.0)) == 0.5
    assert generator_adversarial(scores(0.5), "hinge") == -0.5 and generator_adversarial(scores(1.0)) == 0
    assert discriminator_loss(scores(0.0), scores(1.0)) == 0  # LSGAN: ½ (0² + 0²)


def kshot_config(cache, **changes):
    """configs/kshot-tiny.toml pointing at `cache` (see gen_helpers.tiny_config)."""
    return tiny_config(cache, toml="kshot-tiny.toml", **changes)


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("kshot-train") / "cache"
    synthetic_cache(path, n=12, size=64)  # 3 identities × 4 photos
    return path


def test_samples_hold_k_references_of_the_targets_person(cache: Path) -> None:
    cfg = kshot_config(cache)
    ds = KShotDataset(FaceCache(cache), cfg.data, seed=0, k_default=3)
    loaded: list[int] = []
    load = ds._load
    ds._load = lambda j, rng: loaded.append(j) or load(j, rng)  # record which photos a sample uses
    for i in range(6):
        loaded.clear()
        s = ds[(i, 100 + i, 3)]
        ref0, target, extra = loaded[0], loaded[1], loaded[2:]
        assert ref0 == i and target != i and target not in extra and len(set(extra)) == 2 == len(extra)
        assert len({int(ds.cache.identity[j]) for j in loaded}) == 1 and s["identity"] == ds.cache.identity[i]
        assert s["references"].shape == (3, 3, 64, 64) and s["reference_parsing"].shape == (3, 12, 64, 64)
        assert np.array_equal(s["references"][0], s["reference"]) and s["masked"] == 1
    assert ds[(0, 7)]["references"].shape[0] == 3  # (index, key): k_default
    sampler = KShotBatchSampler(12, 2, seed=0, k_max=3)
    ks = [sampler.batch_at(step)[0][2] for step in range(40)]
    assert set(ks) == {1, 2, 3} and ks == [sampler.batch_at(step)[1][2] for step in range(40)]
    assert {b[2] for b in KShotBatchSampler(12, 2, seed=0, k_max=3, k_fixed=2).batch_at(5)} == {2}
    with pytest.raises(UsageError, match="k_max"):
        kshot_config(cache, data={"references": 4})
    for name in ("kshot-tiny", "kshot-128", "kshot-256"):
        assert TrainConfig.from_toml(REPO / "configs" / f"{name}.toml").model.variant == "kshot"


def test_two_training_steps_of_the_fusion_variant(cache: Path, tmp_path: Path) -> None:
    result = loop.train(kshot_config(cache), tmp_path / "run", max_steps=2)
    assert (result.step, result.reason) == (2, "max_steps")
    for row in result.history:
        assert {"raw/l1", "raw/l1_ae", "raw/gan", "raw/identity_gan", "raw/feature_matching", "d_loss",
                "d_id_loss", "k"} <= set(row) and row["k"] in (1, 2, 3)
        assert all(np.isfinite(v) for v in row.values())
    state = ckpt.load_checkpoint(result.checkpoint)
    assert state["model_config"]["variant"] == "kshot" and state["identity_discriminator"] is not None
    assert any(k.startswith("embedder.responsibility") for k in state["generator"])
    assert (tmp_path / "run" / "samples" / "step_000002.png").stat().st_size > 0


@pytest.mark.shared
def test_two_steps_on_real_photos_of_two_people(shared_data: Path, tmp_path: Path) -> None:
    import csv

    from reenact.train.cache import prepare_cache

    rows = list(csv.DictReader((shared_data / "celeba-id" / "identities.csv").read_text().splitlines()))
    people = sorted({r["identity"] for r in rows if r["split"] == "train"})[:2]
    keep = [r for p in people for r in [r for r in rows if r["identity"] == p][:4]]
    ids = tmp_path / "ids.csv"
    with open(ids, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=["file", "identity", "split"])
        writer.writeheader()
        writer.writerows(keep)
    prepare_cache(shared_data / "celeba-id" / "images", tmp_path / "cache", identities=ids, size=64)
    result = loop.train(kshot_config(tmp_path / "cache", data={"references": 3}), tmp_path / "run", max_steps=2)
    assert result.step == 2 and all(row["k"] == 3 and np.isfinite(row["raw/l1"]) for row in result.history)


def test_kshot_resume_matches_an_uninterrupted_run(cache: Path, tmp_path: Path) -> None:
    a, _ = assert_resume_matches(kshot_config(cache), tmp_path, split=1, total=3)
    assert a["identity_discriminator"] is not None and a["model_config"]["variant"] == "kshot"


def test_kshot_losses_can_be_disabled_and_lsgan_still_works(cache: Path, tmp_path: Path) -> None:
    trainer = loop.Trainer(kshot_config(cache, gan_loss="lsgan", losses={"identity_gan": 0.0, "feature_matching": 0.0}),
                           tmp_path / "run")
    logged = loop.run(trainer, max_steps=1, max_minutes=0, stop=lambda: False, progress=None).history[-1]
    assert trainer.d_id is None and "d_id_loss" not in logged and "raw/identity_gan" not in logged
    assert "d_loss" in logged and "raw/gan" in logged


@pytest.mark.slow
def test_kshot_ddp_two_processes_gloo(cache: Path, tmp_path: Path) -> None:
    text = (REPO / "configs" / "kshot-tiny.toml").read_text().replace('".cache/packs/tiny-64"', json.dumps(str(cache)))
    (tmp_path / "k.toml").write_text(text)
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "reenact.train.ddp", "--config", "k.toml", "--out", "run", "--max-steps", "2"]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    state = ckpt.load_checkpoint(tmp_path / "run" / "checkpoints" / "last.pt")
    assert state["step"] == 2 and state["world"] == 2 and state["identity_discriminator"] is not None


# ------------------------------------------------------------------ export, runtime, engines


def _u8(x: torch.Tensor) -> np.ndarray:
    """3×S×S in [-1, 1] → S×S×3 uint8 (as the runtime rounds)."""
    return ((x.permute(1, 2, 0).numpy() + 1) * 127.5 + 0.5).clip(0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def exported(cache: Path, tmp_path_factory):
    """(export report, checkpoint) of a 1-step tiny k-shot run."""
    tmp = tmp_path_factory.mktemp("kshot-export")
    checkpoint = loop.train(kshot_config(cache), tmp / "run", max_steps=1).checkpoint
    return export_generator(checkpoint, tmp / "kshot.onnx"), checkpoint


def test_export_has_a_dynamic_k_axis_and_parity(exported) -> None:
    report, _ = exported
    assert report.variant == "kshot" and report.appearance == embedder_path(report.generator)
    assert report.appearance.name == "kshot.embedder.onnx"
    assert set(report.max_abs_diff) == {"random/k=1", "random/k=3", "face/k=1", "face/k=3"}
    assert max(report.max_abs_diff.values()) < 1e-4
    gen, emb = onnx.load(str(report.generator)), onnx.load(str(report.appearance))
    meta = {p.key: p.value for p in gen.metadata_props}
    assert meta["reenact.variant"] == "kshot" and meta["reenact.embedder"] == "kshot.embedder.onnx"
    assert [i.name for i in emb.graph.input] == ["reference", "reference_parsing"]
    inputs = {i.name: [d.dim_param or d.dim_value for d in i.type.tensor_type.shape.dim] for i in gen.graph.input}
    assert inputs["embedding_4"] == ["N", "K", 32, 4, 4] and inputs["responsibility_32"] == ["N", "K", 1, 32, 32]
    assert list(inputs)[-1] == "pose_parsing"


def test_runtime_fuses_k_references_like_torch(exported) -> None:
    report, checkpoint = exported
    rt = runtime.GeneratorRuntime(report.generator, device="cpu")
    assert rt.variant == "kshot" and not rt.targeted and rt.size == 64
    g, _ = load_generator(checkpoint)
    refs, ref_pm, pose = _inputs(1, 3)
    crops = [_u8(r) for r in refs[0]]
    refs = torch.stack([torch.from_numpy(c.transpose(2, 0, 1) / 127.5 - 1).float() for c in crops])[None]
    bank = [rt.embed(c, pm.numpy()) for c, pm in zip(crops, ref_pm[0])]
    for k in (1, 3):
        with torch.no_grad():
            expected = _u8(g(refs[:, :k], ref_pm[:, :k], pose)[0][0])
        image = rt.generate_k(bank[:k], pose[0].numpy())
        assert image.shape == (64, 64, 3) and image.dtype == np.uint8
        assert np.abs(image.astype(int) - expected).max() <= 1
    shuffled = rt.generate_k(bank[::-1], pose[0].numpy())
    assert np.abs(shuffled.astype(int) - rt.generate_k(bank, pose[0].numpy())).max() <= 1
    with pytest.raises(ReenactError, match="kshot generator"):
        rt.appearance(crops[0])
    with pytest.raises(ValueError, match="at least one"):
        rt.generate_k([], pose[0].numpy())


def test_targeted_embedder_exports_and_runs_per_frame(cache: Path, tmp_path: Path) -> None:
    cfg = kshot_config(cache, model={"targeted_embedder": True})
    report = export_generator(loop.train(cfg, tmp_path / "run", max_steps=1).checkpoint, tmp_path / "t.onnx")
    assert max(report.max_abs_diff.values()) < 1e-4
    assert [i.name for i in onnx.load(str(report.appearance)).graph.input] == ["reference", "reference_parsing",
                                                                              "pose_parsing"]
    rt = runtime.GeneratorRuntime(report.generator, device="cpu")
    refs, ref_pm, pose = _inputs(1, 2)
    bank = [rt.embed(_u8(r), pm.numpy()) for r, pm in zip(refs[0], ref_pm[0])]
    assert rt.targeted and bank[0].outputs is None  # the embedder needs the pose: it runs per frame
    assert rt.generate_k(bank, pose[0].numpy()).shape == (64, 64, 3)


@pytest.mark.parametrize("name", ["gan", "fusion"])
def test_kshot_engines_render_a_bank_in_the_primary_reference(exported, name: str) -> None:
    report, _ = exported
    engine = engines.build_engine(InferenceConfig(engine=name, weights=str(report.generator)))
    assert isinstance(engine, engines.KShotEngine) and engine.name == name
    assert isinstance(engine, engines.FusionEngine) == (name == "fusion")
    frames = [(synth.textured(240, seed=s), synth.face(240, yaw=y, scale=0.6)) for s, y in ((3, 10), (4, -15), (5, 0))]
    states = [engine.prepare(f, Face(points=p.astype(np.float32))) for f, p in frames]
    target = synth.open_mouth(frames[1][1], 0.25)  # in the frame of reference 1
    bank = engine.bank(states, primary=1)
    assert len(bank.extra.embeddings) == 3 and bank.crop is states[1].crop
    rgb, mask = engine.render(bank, target)
    assert rgb.shape == (64, 64, 3) and rgb.dtype == np.uint8 and mask.shape == (64, 64) and mask[32, 32] > 0.9
    one, _ = engine.render(states[1], target)
    assert np.array_equal(one, engine.render(engine.bank(states[1:2]), target)[0])  # K = 1: the same network
    assert not np.array_equal(one, rgb)
    with pytest.raises(ValueError, match="primary"):
        engine.bank(states, primary=3)
