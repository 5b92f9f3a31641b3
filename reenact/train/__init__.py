"""Training only (never imported by inference): prepared data cache, samples with boundary
resampling, losses, the training loop, checkpoints and multi-process (DDP) support.

  config.py      TrainConfig from TOML (model, data, [losses] weights, discriminator, run settings)
  cache.py       `reenact data prepare`: aligned crops + landmarks, JPEG shards, memory-mapped
  data.py        ReenactDataset (boundary resampling / identity pairs, augmentation), StepBatchSampler
  losses.py      L1 (auto-encoder, reenactment), perceptual, identity, LSGAN, feature matching
  loop.py        Trainer / train(): AMP, EMA, logs, sample grids, stop on steps/time/signals
  checkpoint.py  atomic (optionally split, bf16) checkpoints with RNG states
  ddp.py         torchrun entry point and process-group helpers
"""
