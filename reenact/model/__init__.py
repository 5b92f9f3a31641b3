"""Pure torch networks of the method (no losses, no file I/O, no OpenCV).

  config.py         ModelConfig (frozen; saved in checkpoints and ONNX metadata)
  appearance.py     F: appearance auto-encoder (reference → latent → reconstruction + features)
  spade.py          SPADE unit and residual SPADE block
  atm.py            AdaIN appearance-transfer module (injection = "adain")
  decoder.py        D: SPADE decoder driven by the pose guide, F's features injected per scale
  generator.py      G = F + D, and the two export views (appearance graph, decoder graph)
  discriminator.py  multi-scale PatchGAN (training only; pure module)
"""

from reenact.model.config import ModelConfig
from reenact.model.discriminator import DiscriminatorConfig, MultiScaleDiscriminator
from reenact.model.generator import AppearanceGraph, DecoderGraph, Generator, feature_names

__all__ = ["AppearanceGraph", "DecoderGraph", "DiscriminatorConfig", "Generator", "ModelConfig",
           "MultiScaleDiscriminator", "feature_names"]
