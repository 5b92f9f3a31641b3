"""Export a trained generator to ONNX, check it, and verify it against PyTorch — one function.

`export_generator(CKPT, "weights/NAME.onnx")` writes two graphs (F runs once per reference, D once
per frame, so a video or a k-shot bank computes F's features only once):

  NAME.appearance.onnx  input  reference       N×3×S×S float32 RGB in [-1, 1]
                        output appearance_<r>  N×C×r×r for each injected scale r (coarsest first)
  NAME.onnx             input  appearance_<r>  (as above), pose_parsing N×12×S×S in [0, 1]
                               [warp_grid N×S×S×2: the landmark warp's backward map, normalised
                               for grid_sample (align_corners=False) — only when feature_warp]
                        output image           N×3×S×S float32 RGB in [-1, 1]

The region variant (`variant = "region"`, a mouth or eye generator) writes the same two files;
NAME.onnx then takes `warped` N×3×S×S (the warp's render of the region, RGB in [-1, 1]) after
pose_parsing instead of a warp grid.

The k-shot variant (`ModelConfig.variant = "kshot"`) writes instead:

  NAME.embedder.onnx    inputs reference N×3×S×S, reference_parsing N×12×S×S (its own parsing
                               map) [+ pose_parsing N×12×S×S with a targeted embedder]
                        outputs embedding_<r> N×C×r×r, responsibility_<r> N×1×r×r (logits)
  NAME.onnx             inputs embedding_<r> N×K×C×r×r, responsibility_<r> N×K×1×r×r (the K
                               references' embedder outputs stacked on a dynamic K axis),
                               pose_parsing N×12×S×S
                        output image N×3×S×S

The embedder runs once per reference (per frame and reference with a targeted embedder, whose
input includes the pose); the fusion (softmax over K) is inside NAME.onnx.

Opset `OPSET` (17: GridSample and InstanceNormalization as single ops). Metadata (both files,
`reenact.*` keys): kind, version, opset, model_config (JSON), step, precision, weights (ema/raw),
inputs, outputs, variant; the generator also names its per-reference file (`reenact.appearance`
or `reenact.embedder`). Both graphs pass `onnx.checker.check_model(full_check=True)`; then ONNX
Runtime (CPU) runs F→D (E_k→fusion→D with K = 1 and K = 3) on random and on face-like inputs and
the max |ORT − torch| of the image must stay within the tolerance (`TOLERANCE` fp32,
`TOLERANCE_FP16` with fp16-stored weights), else nothing is written.
`fp16=True` stores weights as float16 (each followed by a Cast to float32: half the file size,
computation stays fp32, so it runs on every provider).
"""

from __future__ import annotations

import json
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from reenact import __version__, media
from reenact.errors import MissingWeights, OutputError, ReenactError, from_os_error
from reenact.model import (AppearanceGraph, DecoderGraph, EmbedderGraph, Generator, KShotDecoderGraph,
                           KShotGenerator, ModelConfig, build_generator, embedding_names, feature_names)
from reenact.model.kshot import per_reference
from reenact.validate import type_problem

OPSET = 17
TOLERANCE = 1e-3
TOLERANCE_FP16 = 5e-2


@dataclass(frozen=True)
class ExportReport:
    """generator / appearance: written paths (appearance: the per-reference graph, F's
    NAME.appearance.onnx or the k-shot embedder's NAME.embedder.onnx); max_abs_diff: per check
    ("random", "face"; k-shot: "random/k=1", "random/k=3", …) the max |ORT − torch| of the output
    image; feature_diff: the same for the per-reference graph's outputs; bytes: file sizes."""

    generator: Path
    appearance: Path
    max_abs_diff: dict[str, float]
    feature_diff: dict[str, float]
    tolerance: float
    opset: int
    fp16: bool
    step: int
    bytes: dict[str, int]
    variant: str = "thesis"


def _beside(generator_path: str | os.PathLike, part: str) -> Path:
    p = Path(generator_path)
    stem = p.name[: -len(".onnx")] if p.name.endswith(".onnx") else p.name
    return p.with_name(f"{stem}.{part}.onnx")


def appearance_path(generator_path: str | os.PathLike) -> Path:
    """NAME.onnx → NAME.appearance.onnx (beside it)."""
    return _beside(generator_path, "appearance")


def embedder_path(generator_path: str | os.PathLike) -> Path:
    """NAME.onnx → NAME.embedder.onnx (the k-shot variant's per-reference graph, beside it)."""
    return _beside(generator_path, "embedder")


def load_generator(checkpoint: str | os.PathLike, *,
                   use_ema: bool = True) -> tuple[Generator | KShotGenerator, dict]:
    """The fp32 generator of a training checkpoint (EMA weights when present and wanted), in eval
    mode; a `KShotGenerator` for the k-shot variant."""
    from reenact.train.checkpoint import load_checkpoint

    state = load_checkpoint(checkpoint)
    problem = type_problem(ModelConfig, state.get("model_config"), "model_config.")
    try:
        if problem:
            raise TypeError(problem)
        g = build_generator(ModelConfig.from_dict(state["model_config"]))
        weights = state["ema"] if use_ema and state.get("ema") is not None else state["generator"]
        g.load_state_dict({k: v.float() for k, v in weights.items()})
        int(state["step"])
    except (KeyError, TypeError, ValueError, AttributeError, RuntimeError) as e:  # a damaged or forged dict
        reason = next(iter(str(e).strip().splitlines()), "")[:200] or type(e).__name__
        raise MissingWeights(f"{checkpoint} is not a usable reenact checkpoint ({reason})",
                             "pass RUN/checkpoints/last.pt written by `reenact train`") from None
    return g.eval(), state


def export_generator(checkpoint: str | os.PathLike, output: str | os.PathLike, *, fp16: bool = False,
                     tolerance: float | None = None, use_ema: bool = True, overwrite: bool = False) -> ExportReport:
    """Export, check and verify (see module doc). Raises OutputError (exists, unwritable),
    MissingWeights (bad checkpoint) or ReenactError (parity above tolerance: nothing written)."""
    gen_path = Path(output)
    if gen_path.suffix != ".onnx":
        raise OutputError(f"{gen_path} must end in .onnx")
    if not gen_path.parent.is_dir():  # as every command: a missing folder is not created
        raise OutputError(f"output folder {gen_path.parent} does not exist",
                          hint=f"create it first: mkdir -p {gen_path.parent}")
    _probe_writable(gen_path.parent)  # before the minutes of export, not after
    media.check_not_an_input(gen_path, (checkpoint,))
    g, state = load_generator(checkpoint, use_ema=use_ema)
    cfg, tol = g.config, tolerance if tolerance is not None else (TOLERANCE_FP16 if fp16 else TOLERANCE)
    kshot = cfg.variant == "kshot"
    app_path = embedder_path(output) if kshot else appearance_path(output)
    media.check_not_an_input(app_path, (checkpoint,))
    for p in (gen_path, app_path):  # both checked before either is written: no half export
        if p.is_dir():
            raise OutputError(f"{p} is a folder", "give a file name NAME.onnx")
        if p.exists() and not overwrite:
            raise OutputError(f"{p} already exists", "pass --overwrite to replace it")
    meta = {"version": __version__, "opset": str(OPSET), "model_config": cfg.to_json(), "step": str(state["step"]),
            "precision": "fp16-weights" if fp16 else "fp32", "variant": cfg.variant,
            "weights": "ema" if use_ema and state.get("ema") is not None else "raw"}
    tmp_gen, tmp_app = (p.with_name(f".{p.name}.{os.getpid()}.tmp") for p in (gen_path, app_path))
    try:
        (_export_kshot_graphs if kshot else _export_graphs)(g, tmp_app, tmp_gen, meta, app_name=app_path.name,
                                                             fp16=fp16)
        diffs, feat = (parity_kshot if kshot else parity)(g, tmp_app, tmp_gen)
        if max(diffs.values()) > tol:
            raise ReenactError(f"ONNX Runtime and PyTorch disagree: max |diff| {max(diffs.values()):.2e} > {tol:.0e}",
                               "nothing was written; report this with the checkpoint, or raise --tolerance knowingly")
        os.replace(tmp_app, app_path)
        os.replace(tmp_gen, gen_path)
    except OSError as e:  # read-only folder, disk full: nothing is left behind
        raise from_os_error(e, "output") from None
    finally:
        tmp_gen.unlink(missing_ok=True)
        tmp_app.unlink(missing_ok=True)
    sizes = {"generator": gen_path.stat().st_size, "appearance": app_path.stat().st_size}
    return ExportReport(gen_path, app_path, diffs, feat, tol, OPSET, fp16, int(state["step"]), sizes, cfg.variant)


def _probe_writable(folder: Path) -> None:
    """OutputError unless a file can be created in `folder` (read-only mounts, permissions)."""
    probe = folder / f".reenact-export-probe.{os.getpid()}"
    try:
        probe.touch(exist_ok=False)
        probe.unlink()
    except OSError as e:
        raise from_os_error(e, "output", hint="choose a folder you can write to") from None


def _inputs(cfg: ModelConfig, n: int = 1) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """(reference, parsing, D's third input): the warp grid (feature_warp), the warp render of the
    region (region variant) or None."""
    s = cfg.size
    ref = torch.rand(n, 3, s, s) * 2 - 1
    third = identity_grid(n, s) if cfg.feature_warp else None
    if cfg.variant == "region":
        third = torch.rand(n, 3, s, s) * 2 - 1
    return ref, torch.rand(n, cfg.parsing_channels, s, s), third


def third_input_name(cfg: ModelConfig) -> str | None:
    """ONNX name of D's input after pose_parsing: warp_grid, warped (region variant) or none."""
    return "warped" if cfg.variant == "region" else ("warp_grid" if cfg.feature_warp else None)


def _export_graphs(g: Generator, app_path: Path, gen_path: Path, meta: dict, *, app_name: str, fp16: bool) -> None:
    cfg = g.config
    names = feature_names(cfg)
    ref, parsing, grid = _inputs(cfg)
    with torch.no_grad():
        feats = AppearanceGraph(g)(ref)
    dyn = {name: {0: "N"} for name in ["reference", *names, "pose_parsing", "warp_grid", "warped", "image"]}
    gen_inputs = [*names, "pose_parsing"] + ([third_input_name(cfg)] if grid is not None else [])
    args = (*feats, parsing) + ((grid,) if grid is not None else ())
    _to_onnx(((AppearanceGraph(g), (ref,), ["reference"], names, app_path),
              (DecoderGraph(g), args, gen_inputs, ["image"], gen_path)), dyn)
    _finish(app_path, {**meta, "kind": "appearance", "inputs": json.dumps(["reference"]), "outputs": json.dumps(names)}, fp16)
    _finish(gen_path, {**meta, "kind": "generator", "appearance": app_name, "inputs": json.dumps(gen_inputs),
                       "outputs": json.dumps(["image"])}, fp16)


def _export_kshot_graphs(g: KShotGenerator, emb_path: Path, gen_path: Path, meta: dict, *, app_name: str,
                         fp16: bool) -> None:
    cfg = g.config
    feats, resps = embedding_names(cfg)
    emb_inputs = ["reference", "reference_parsing"] + (["pose_parsing"] if cfg.targeted_embedder else [])
    refs, ref_pm, pose = _kshot_inputs(cfg, n=1, k=2)
    example = (refs[0], ref_pm[0]) + ((pose.expand(2, -1, -1, -1),) if cfg.targeted_embedder else ())
    with torch.no_grad():
        outs = EmbedderGraph(g)(*example)
    stacked = tuple(o[None] for o in outs)  # 1×K×…: one sample with its K = 2 references
    dyn = {name: {0: "N"} for name in ["reference", "reference_parsing", "pose_parsing", *feats, *resps, "image"]}
    dec_dyn = {name: {0: "N", 1: "K"} for name in [*feats, *resps]}
    gen_inputs = [*feats, *resps, "pose_parsing"]
    _to_onnx(((EmbedderGraph(g), example, emb_inputs, [*feats, *resps], emb_path),), dyn)
    _to_onnx(((KShotDecoderGraph(g), (*stacked, pose), gen_inputs, ["image"], gen_path),), {**dyn, **dec_dyn})
    _finish(emb_path, {**meta, "kind": "embedder", "inputs": json.dumps(emb_inputs),
                       "outputs": json.dumps([*feats, *resps])}, fp16)
    _finish(gen_path, {**meta, "kind": "generator", "embedder": app_name, "inputs": json.dumps(gen_inputs),
                       "outputs": json.dumps(["image"])}, fp16)


def _to_onnx(graphs, dynamic: dict[str, dict[int, str]]) -> None:
    """torch.onnx.export each (module, example inputs, input names, output names, path); every
    named tensor in `dynamic` gets those dynamic axes."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation and train-mode notes
        for module, example, in_names, out_names, path in graphs:
            torch.onnx.export(module, example, str(path), dynamo=False, opset_version=OPSET, input_names=in_names,
                              output_names=out_names, do_constant_folding=True,
                              dynamic_axes={k: v for k, v in dynamic.items() if k in in_names + out_names})


def _finish(path: Path, meta: dict, fp16: bool) -> None:
    """Add metadata (and fp16 weights), save, run the full ONNX checker."""
    import onnx

    model = onnx.load(str(path))
    if fp16:
        store_weights_fp16(model)
    del model.metadata_props[:]
    for key, value in meta.items():
        model.metadata_props.add(key=f"reenact.{key}", value=str(value))
    model.producer_name, model.producer_version = "reenact", __version__
    onnx.save(model, str(path))
    onnx.checker.check_model(str(path), full_check=True)


def store_weights_fp16(model) -> None:
    """Convert float32 initializers (≥ 16 values) to float16, each followed by a Cast to float32."""
    from onnx import TensorProto, helper, numpy_helper

    graph = model.graph
    inits, casts = [], []
    for init in graph.initializer:
        if init.data_type == TensorProto.FLOAT and int(np.prod(init.dims)) >= 16:
            half = numpy_helper.from_array(numpy_helper.to_array(init).astype(np.float16), init.name + "__fp16")
            inits.append(half)
            casts.append(helper.make_node("Cast", [half.name], [init.name], to=TensorProto.FLOAT, name=init.name + "__cast"))
        else:
            inits.append(init)
    nodes = list(graph.node)
    del graph.initializer[:], graph.node[:]
    graph.initializer.extend(inits)
    graph.node.extend(casts + nodes)


def identity_grid(n: int, size: int) -> torch.Tensor:
    """N×S×S×2 grid that samples every pixel at itself (align_corners=False)."""
    lin = (torch.arange(size, dtype=torch.float32) * 2 + 1) / size - 1
    y, x = torch.meshgrid(lin, lin, indexing="ij")
    return torch.stack([x, y], -1).expand(n, size, size, 2).contiguous()


def face_like_inputs(cfg: ModelConfig, n: int = 2) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Realistic inputs: smooth colour images, the frontal template's parsing map, and a smooth
    warp grid (identity + a few pixels of displacement)."""
    from reenact import align, parsing

    s = cfg.size
    gen = torch.Generator().manual_seed(0)
    ref = torch.nn.functional.interpolate(torch.rand(n, 3, 8, 8, generator=gen) * 2 - 1, size=(s, s),
                                          mode="bicubic", align_corners=False).clamp(-1, 1)
    pm = torch.from_numpy(parsing.parsing_map(align.template(s), s))[None].repeat(n, 1, 1, 1)
    grid = None
    if cfg.feature_warp:
        shift = torch.nn.functional.interpolate(torch.randn(n, 2, 4, 4, generator=gen) * 4 / s, size=(s, s),
                                                mode="bilinear", align_corners=False)
        grid = identity_grid(n, s) + shift.permute(0, 2, 3, 1)
    if cfg.variant == "region":  # the warp render: another smooth image
        grid = torch.nn.functional.interpolate(torch.rand(n, 3, 8, 8, generator=gen) * 2 - 1, size=(s, s),
                                               mode="bicubic", align_corners=False).clamp(-1, 1)
    return ref, pm, grid


def _kshot_inputs(cfg: ModelConfig, *, n: int, k: int, face: bool = False):
    """(references N×K×3×S×S, their parsing maps N×K×P×S×S, pose N×P×S×S): random, or face-like
    (smooth images, the frontal template's parsing map)."""
    s, p = cfg.size, cfg.parsing_channels
    if face:
        refs, pm, _ = face_like_inputs(cfg, n * k)
        return refs.unflatten(0, (n, k)), pm.unflatten(0, (n, k)), pm[:n]
    return torch.rand(n, k, 3, s, s) * 2 - 1, torch.rand(n, k, p, s, s), torch.rand(n, p, s, s)


def _sessions(*paths: Path) -> list:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    return [ort.InferenceSession(str(p), opts, providers=["CPUExecutionProvider"]) for p in paths]


def parity(g: Generator, app_path: Path, gen_path: Path) -> tuple[dict[str, float], dict[str, float]]:
    """Max |ORT − torch| of the image (F→D end to end) and of F's features, on random and face-like inputs."""
    app, gen = _sessions(app_path, gen_path)
    names = feature_names(g.config)
    diffs, feat_diffs = {}, {}
    for label, (ref, pm, grid) in (("random", _inputs(g.config, 2)), ("face", face_like_inputs(g.config))):
        with torch.no_grad():
            t_feats, _ = g.appearance(ref)
            t_img = g.decoder(pm, t_feats, grid)
        o_feats = app.run(names, {"reference": ref.numpy()})
        feed = {**dict(zip(names, o_feats)), "pose_parsing": pm.numpy()}
        if grid is not None:
            feed[third_input_name(g.config)] = grid.numpy()
        o_img = gen.run(["image"], feed)[0]
        diffs[label] = float(np.abs(o_img - t_img.numpy()).max())
        feat_diffs[label] = max(float(np.abs(o - t.numpy()).max()) for o, t in zip(o_feats, t_feats))
    return diffs, feat_diffs


def parity_kshot(g: KShotGenerator, emb_path: Path, gen_path: Path) -> tuple[dict[str, float], dict[str, float]]:
    """The k-shot variant's check: max |ORT − torch| of the image (E_k per reference → stacked on
    the K axis → fusion + D) and of the embedder's outputs, for K = 1 and K = 3, on random (N = 2)
    and face-like (N = 1) inputs."""
    emb, gen = _sessions(emb_path, gen_path)
    feats, resps = embedding_names(g.config)
    diffs, out_diffs = {}, {}
    for label, n, face in (("random", 2, False), ("face", 1, True)):
        refs3, pm3, pose = _kshot_inputs(g.config, n=n, k=3, face=face)
        for k in (1, 3):
            refs, pm = refs3[:, :k], pm3[:, :k]
            with torch.no_grad():
                t_img, _ = g(refs, pm, pose)
                target = per_reference(pose, k) if g.config.targeted_embedder else None
                t_out = EmbedderGraph(g)(refs.flatten(0, 1), pm.flatten(0, 1), target)
            feed = {"reference": refs.flatten(0, 1).numpy(), "reference_parsing": pm.flatten(0, 1).numpy()}
            if target is not None:
                feed["pose_parsing"] = target.numpy()
            o_out = emb.run([*feats, *resps], feed)
            stacked = {name: o.reshape(n, k, *o.shape[1:]) for name, o in zip([*feats, *resps], o_out)}
            o_img = gen.run(["image"], {**stacked, "pose_parsing": pose.numpy()})[0]
            diffs[f"{label}/k={k}"] = float(np.abs(o_img - t_img.numpy()).max())
            out_diffs[f"{label}/k={k}"] = max(float(np.abs(o - t.numpy()).max()) for o, t in zip(o_out, t_out))
    return diffs, out_diffs
