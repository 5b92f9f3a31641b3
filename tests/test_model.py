"""Shape tests for every network of reenact.model (tiny widths, CPU, fast)."""

from __future__ import annotations

import pytest
import torch

from reenact import parsing
from reenact.model import DiscriminatorConfig, Generator, ModelConfig, MultiScaleDiscriminator, feature_names
from reenact.model.appearance import AppearanceAE
from reenact.model.atm import AppearanceTransfer
from reenact.model.decoder import SpadeDecoder, warp_features
from reenact.model.spade import SPADE, SPADEResBlock

pytestmark = pytest.mark.usefixtures("one_thread")

TINY = ModelConfig(size=64, base_channels=8, max_channels=32, levels=4, latent_channels=16, spade_hidden=16)


def _identity_grid(n: int, s: int) -> torch.Tensor:
    lin = (torch.arange(s, dtype=torch.float32) * 2 + 1) / s - 1
    y, x = torch.meshgrid(lin, lin, indexing="ij")
    return torch.stack([x, y], -1).expand(n, s, s, 2).contiguous()


def test_config_validates_and_round_trips() -> None:
    assert ModelConfig.from_dict(TINY.to_dict()) == TINY
    assert TINY.injected == (4, 3, 2, 1) and TINY.parsing_channels == parsing.N_CHANNELS
    assert [TINY.width(k) for k in range(5)] == [8, 16, 32, 32, 32]
    for bad in ({"injection": "add"}, {"size": 72}, {"levels": 5}, {"inject_levels": 6}):
        with pytest.raises(ValueError):
            ModelConfig(**{**TINY.to_dict(), **bad})
    with pytest.raises(ValueError, match="unknown"):
        ModelConfig.from_dict({**TINY.to_dict(), "sise": 3})


def test_spade_unit_and_block_shapes() -> None:
    x, seg = torch.randn(2, 8, 16, 16), torch.rand(2, 12, 16, 16)
    assert SPADE(channels=8, parsing_channels=12, hidden=4)(x, seg).shape == (2, 8, 16, 16)
    block = SPADEResBlock(fin=8, fout=5, parsing_channels=12, hidden=4)
    assert block.learned_shortcut and block(x, seg).shape == (2, 5, 16, 16)


def test_spade_is_parameter_free_norm_modulated_by_parsing() -> None:
    unit = SPADE(channels=3, parsing_channels=12, hidden=4)
    x = torch.randn(1, 3, 8, 8)
    a, b = unit(x, torch.zeros(1, 12, 8, 8)), unit(x, torch.ones(1, 12, 8, 8))
    assert not torch.allclose(a, b)  # the parsing map drives the modulation
    assert not any("norm" in n for n, _ in unit.named_parameters())  # instance norm has no affine


def test_appearance_autoencoder_shapes() -> None:
    feats, recon = AppearanceAE(TINY)(torch.rand(2, 3, 64, 64) * 2 - 1)
    assert recon.shape == (2, 3, 64, 64) and recon.abs().max() <= 1
    assert [tuple(f.shape) for f in feats] == [(2, 32, 4, 4), (2, 32, 8, 8), (2, 32, 16, 16), (2, 16, 32, 32)]
    assert feature_names(TINY) == ["appearance_4", "appearance_8", "appearance_16", "appearance_32"]


@pytest.mark.parametrize("injection", ["concat", "adain", "spade"])
@pytest.mark.parametrize("feature_warp", [False, True])
def test_generator_shapes(injection: str, feature_warp: bool) -> None:
    cfg = ModelConfig(**{**TINY.to_dict(), "injection": injection, "feature_warp": feature_warp})
    g = Generator(cfg)
    grid = _identity_grid(2, 64) if feature_warp else None
    out, recon = g(torch.rand(2, 3, 64, 64) * 2 - 1, torch.rand(2, 12, 64, 64), grid)
    assert out.shape == recon.shape == (2, 3, 64, 64) and out.abs().max() <= 1
    out.mean().backward()
    assert all(p.grad is not None for n, p in g.decoder.named_parameters())


def test_decoder_rejects_missing_inputs() -> None:
    d = SpadeDecoder(ModelConfig(**{**TINY.to_dict(), "feature_warp": True}))
    feats, _ = AppearanceAE(TINY)(torch.zeros(1, 3, 64, 64))
    with pytest.raises(ValueError, match="warp_grid"):
        d(torch.zeros(1, 12, 64, 64), feats)
    with pytest.raises(ValueError, match="appearance features"):
        d(torch.zeros(1, 12, 64, 64), feats[:2], _identity_grid(1, 64))


def test_identity_grid_leaves_features_unchanged() -> None:
    f = torch.randn(1, 4, 16, 16)
    assert torch.allclose(warp_features(f, _identity_grid(1, 64)), f, atol=1e-5)


def test_atm_shapes_and_start_blend() -> None:
    atm = AppearanceTransfer(channels=6, appearance_channels=4)
    x = torch.randn(2, 6, 8, 8)
    assert atm(x, torch.randn(2, 4, 8, 8)).shape == (2, 6, 8, 8)


def test_multiscale_discriminator_shapes() -> None:
    d = MultiScaleDiscriminator(DiscriminatorConfig(scales=2, channels=8, layers=3), parsing_channels=12)
    outs = d(torch.rand(2, 3, 64, 64), torch.rand(2, 12, 64, 64))
    assert len(outs) == 2 and all(len(o) == 5 for o in outs)
    assert outs[0][-1].shape[:2] == (2, 1) and outs[1][-1].shape[-1] < outs[0][-1].shape[-1]
