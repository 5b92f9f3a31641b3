"""k-shot variant (issue 6): fusion properties, shapes, K = 1 equivalence, training, resume,
export with a dynamic K axis, runtime and engine. Tiny widths, one thread, synthetic data."""

from __future__ import annotations

import pytest
import torch

from reenact.model import Generator, KShotGenerator, ModelConfig, build_generator, fuse
from reenact.model.kshot import responsibilities
from tests.gen_helpers import one_thread  # noqa: F401

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
