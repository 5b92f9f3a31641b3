"""Report files: metrics.json, report.md, report.html, one contact sheet PNG per engine, thumbnails.

Everything is written into a hidden staging folder beside the target and renamed into place at
the end (`staging`), so a report folder is never half-written: an interrupted run leaves the
previous report (or nothing) behind. Layout of a report folder:

    metrics.json            schema "reenact.eval/1" (see `summary`)
    report.md               tables (k-shot runs: the k table too) + metric definitions + sheets
    report.html             the same, with every pair's pictures beside its numbers
    contact-<engine>.png    rows = drivers, columns = references (one reference)
    images/in/*.jpg         reference and driver thumbnails
    images/out/<engine>/*.jpg  output thumbnails (cropped with the reference's face box);
                            k-shot runs: images/out/<engine>-k<k>-<mode>/
"""

from __future__ import annotations

import html
import json
import math
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from reenact import media
from reenact.errors import OutputError
from reenact.evaluate import summary
from reenact.evaluate.kshot import Variant
from reenact.evaluate.runner import EvalResult

TABLE_KEYS = ("detect_rate", "id_cos", "id_acc", "yaw_err", "pitch_err", "roll_err", "expr_err",
              "expr_corr", "l1", "psnr", "ssim", "lpips", "fid")
KSHOT_TABLE_KEYS = ("detect_rate", "id_cos", "id_acc", "id_truth", "yaw_err", "pitch_err", "roll_err",
                    "expr_err", "ssim_face", "lpips")
KSHOT_NOTE = ("Each identity has {kmax} reference photos of the person; the first is the primary "
              "(motion is retargeted onto it and outputs are pasted into its frame). "
              "single (k = 1): the one-shot baseline, the same outputs as the summary table. "
              "select: each pair is rendered from the one of the first k references nearest in head "
              "pose and expression to the retargeted driver. fuse: a k-shot generator fuses all k "
              "(not available with the warp engine or a one-reference model). The reference baseline "
              "outputs the primary photo (single) or the selected photo itself (select). "
              "ID cos compares the output with the primary reference, ID truth with the driver photo "
              "(another photo of the same person; same-identity pairs only). served: % of the outputs "
              "rendered from reference 1 (the primary) / 2 / … k.")
REGION_TABLE_KEYS = ("mouth_lpips", "mouth_psnr", "mouth_ssim", "mouth_kid", "eyes_lpips", "eyes_psnr", "eyes_ssim")
_BY_KEY = {m.key: m for m in summary.METRICS}


def check_target(target: str | Path, *, overwrite: bool, inputs: tuple = ()) -> Path:
    """Raise OutputError unless `target` can become the report folder: replacing it must not
    delete any of `inputs` (paths of photos, videos, folders, CSV files, weights)."""
    from reenact import media

    target = Path(target)
    media.check_output_folder(target, inputs)
    if target.exists() and not target.is_dir():
        raise OutputError(f"{target} exists and is not a folder", "choose another -o")
    if target.exists() and not overwrite:
        raise OutputError(f"{target} already exists", "use --overwrite to replace it, or another -o")
    return target


@contextmanager
def staging(target: str | Path, *, overwrite: bool) -> Iterator[Path]:
    """Yield an empty staging folder beside `target`; on success it replaces `target`."""
    target = check_target(target, overwrite=overwrite)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    except OSError as e:
        raise OutputError(f"cannot create a folder beside {target}: {e}") from None
    try:
        yield tmp
        old = None
        if target.exists():
            old = target.with_name(f".{target.name}.old-{os.getpid()}")
            target.rename(old)
        tmp.rename(target)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


class ImageFolder:
    """Thumbnail sink for the runner: JPEGs under `root/images/`."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    def save(self, name: str, rgb) -> str:
        rel = Path("images") / name
        (self.root / rel).parent.mkdir(parents=True, exist_ok=True)
        media.write_image(self.root / rel, rgb, overwrite=True)
        return rel.as_posix()


def cell(key: str, value: float | None) -> str:
    """A metric value formatted for tables ("—" when there is none)."""
    return "—" if value is None else format(value, _BY_KEY[key].fmt)


def table(rows: list[dict], keys: tuple[str, ...] = TABLE_KEYS) -> tuple[list[str], list[list[str]]]:
    """(header, cells) of the summary table: engine, subset, outputs, then `keys`."""
    head = ["engine", "subset", "n"] + [_BY_KEY[k].title + (" ↑" if _BY_KEY[k].better == "higher" else " ↓")
                                        for k in keys]
    body = []
    for r in rows:
        if r["status"] != "ok":  # "unavailable: no weights (why…)": the table shows the gist
            body.append([r["engine"], r["subset"], r["status"].split(" (")[0]] + [""] * len(keys))
            continue
        body.append([r["engine"], r["subset"], str(r["outputs"])] + [cell(k, r["metrics"][k]) for k in keys])
    return head, body


def served_cell(row: dict) -> str:
    """Shares of a k-shot row's outputs per reference ("70/20/10"), "fused", or "—"."""
    if row["served"] is None:
        return "fused" if row["multi"] == "fuse" and row["status"] == "ok" else ""
    n = sum(row["served"])
    return "/".join(f"{100 * c / n:.0f}" for c in row["served"]) if n else "—"


def kshot_table(rows: list[dict], keys: tuple[str, ...] = KSHOT_TABLE_KEYS) -> tuple[list[str], list[list[str]]]:
    """(header, cells) of the k table: engine, mode, k, subset, outputs, `keys` that have a value
    in some row (metrics switched off are left out), served."""
    keys = tuple(k for k in keys if any(r["metrics"][k] is not None for r in rows))
    head = ["engine", "mode", "k", "subset", "n"] + [
        _BY_KEY[k].title + (" ↑" if _BY_KEY[k].better == "higher" else " ↓") for k in keys] + ["served %"]
    body = []
    for r in rows:
        lead = [r["engine"], r["multi"], str(r["k"]), r["subset"]]
        if r["status"] != "ok":  # "not available: fusion needs…" → the gist (KSHOT_NOTE says why)
            body.append(lead + [r["status"].split(":")[0]] + [""] * (len(keys) + 1))
            continue
        body.append(lead + [str(r["outputs"])] + [cell(k, r["metrics"][k]) for k in keys] + [served_cell(r)])
    return head, body


def write(result: EvalResult, folder: str | Path, *, command: str | None = None) -> dict:
    """Write metrics.json, the contact sheets, report.md and report.html into `folder`."""
    folder = Path(folder)
    rows = summary.aggregate(result)
    doc = summary.document(result, rows)
    doc["command"] = command
    sheets = {}
    for engine, img in result.sheets.items():
        sheets[engine] = f"contact-{engine}.png"
        media.write_image(folder / sheets[engine], img, overwrite=True)
    doc["files"] = {"contact_sheets": sheets, "markdown": "report.md", "html": "report.html"}
    doc = _finite(doc)
    (folder / "metrics.json").write_text(json.dumps(doc, indent=1, allow_nan=False) + "\n", encoding="utf-8")
    (folder / "report.md").write_text(markdown(doc), encoding="utf-8")
    (folder / "report.html").write_text(html_page(doc, result), encoding="utf-8")
    return doc


def _finite(obj):
    """Replace NaN/inf floats by None (JSON has no NaN), recursively."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    return obj


# --- markdown -----------------------------------------------------------------------------------

def _md_table(head: list[str], body: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)] + ["| " + " | ".join(r) + " |" for r in body]


def fid_lines(doc: dict) -> list[str]:
    if not doc["fid"]:
        return ["FID: not computed (switched off, or too few images)."]
    out = []
    for engine, f in doc["fid"].items():
        flag = "" if f["reliable"] else f" — unreliable (fewer than {summary.FID_RELIABLE_N} images)"
        out.append(f"- {engine}: FID {f['value']:.1f} over {f['n_outputs']} outputs vs {f['n_real']} real{flag}")
    return out


def markdown(doc: dict) -> str:
    """report.md text from a metrics.json document."""
    p = doc["protocol"]
    lines = [f"# reenact eval — {p['name']}", "", p["description"] + ".", "",
             f"{p['pairs']} pairs; engines: " + ", ".join(f"{k} ({v})" for k, v in doc["engines"].items()), ""]
    if doc.get("command"):
        lines += ["```", doc["command"], "```", ""]
    lines += ["## Summary", ""] + _md_table(*table(doc["summary"])) + [""]
    face_keys = ("l1_face", "psnr_face", "ssim_face")
    lines += ["### Pixel metrics inside the face mask", ""] + _md_table(*table(doc["summary"], face_keys)) + [""]
    lines += ["### Mouth and eyes", ""] + _md_table(*table(doc["summary"], REGION_TABLE_KEYS)) + [""]
    lines += ["### FID", ""] + fid_lines(doc) + [""]
    if doc.get("kshot"):
        note = KSHOT_NOTE.format(kmax=max(doc["kshot"]["ks"]))
        lines += ["## k references", "", note, ""] + _md_table(*kshot_table(doc["kshot"]["rows"])) + [""]
    lines += ["## Contact sheets", ""] + [f"![{e}]({f})" for e, f in doc["files"]["contact_sheets"].items()] + [""]
    lines += ["## Metric definitions", ""] + [f"- **{d['title']}** (`{k}`, {d['better']} is better): "
                                              f"{d['definition']}" for k, d in doc["definitions"].items()]
    secs = doc["seconds"]
    lines += ["", f"Wall time {secs.get('total', 0):.0f} s. Schema `{doc['schema']}`, "
              f"reenact {doc['reenact_version']}, {doc['created']}.", ""]
    return "\n".join(lines)


# --- html ---------------------------------------------------------------------------------------

_CSS = ("body{font:14px system-ui,sans-serif;margin:1.5em;color:#222}table{border-collapse:collapse}"
        "td,th{border:1px solid #ccc;padding:3px 6px;text-align:right;vertical-align:top}"
        "th{background:#f2f2f2}td.l{text-align:left}img{display:block}.m{font:11px monospace;"
        "text-align:left;white-space:pre}")


def _html_table(head: list[str], body: list[list[str]]) -> str:
    h = "".join(f"<th>{html.escape(c)}</th>" for c in head)
    rows = "".join("<tr>" + "".join(f"<td{' class=l' if i < 2 else ''}>{html.escape(c)}</td>"
                                    for i, c in enumerate(r)) + "</tr>" for r in body)
    return f"<table><tr>{h}</tr>{rows}</table>"


def _numbers(rec: dict) -> str:
    if rec["status"] != "ok":
        return rec["status"]
    if not rec["detected"]:
        return "no face detected"
    lines = [f"ID  {cell('id_cos', rec['identity'])}"]
    if rec.get("identity_truth") is not None:
        lines[0] += f" truth {cell('id_truth', rec['identity_truth'])}"
    if rec.get("multi") == "select":
        lines.append(f"from ref {rec['served'] + 1} of {rec['k']}")
    lines += ["pose " + "/".join(f"{v:.1f}" for v in rec["pose_error"]) + "°",
             f"expr {cell('expr_err', rec['expression_error'])}"]
    px = rec["pixel"]
    if px:
        lines += [f"PSNR {cell('psnr', px.get('psnr'))} SSIM {cell('ssim', px.get('ssim'))}",
                  f"LPIPS {cell('lpips', px.get('lpips'))}"]
    return "\n".join(lines)


def _label(rec: dict) -> str:
    return Variant(rec["engine"], rec.get("k"), rec.get("multi")).label


def _pair_rows(doc: dict, result: EvalResult) -> str:
    """One row per pair: reference, driver and each variant's (engine's) output with its numbers."""
    columns = list(dict.fromkeys(_label(r) for r in doc["records"]))
    recs = {(_label(r), r["pair"]): r for r in doc["records"]}
    img = lambda src: f'<img src="{html.escape(src)}" loading="lazy">' if src else ""  # noqa: E731
    head = "<tr><th>#</th><th>reference photo</th><th>driver</th>" + "".join(
        f"<th>output: {html.escape(e)}</th>" for e in columns)
    rows = [head + "</tr>"]
    for i, p in enumerate(result.protocol.pairs):
        cells = [f"<td>{i}<br>{html.escape(p.kind)}</td>",
                 f"<td class=l>{img(result.thumbs.get(p.reference.key))}{html.escape(p.reference.label)}</td>",
                 f"<td class=l>{img(result.thumbs.get(p.driver.key))}{html.escape(p.driver.label)}</td>"]
        for e in columns:
            rec = recs.get((e, i))
            cells.append(f"<td class=l>{img(rec and rec['image'])}<div class=m>"
                         f"{html.escape(_numbers(rec)) if rec else ''}</div></td>")
        rows.append("<tr>" + "".join(cells) + "</tr>")
    return "<table>" + "".join(rows) + "</table>"


def _kshot_html(doc: dict) -> list[str]:
    if not doc.get("kshot"):
        return []
    note = KSHOT_NOTE.format(kmax=max(doc["kshot"]["ks"]))
    return ["<h2>k references</h2>", f"<p>{html.escape(note)}</p>", _html_table(*kshot_table(doc["kshot"]["rows"]))]


def html_page(doc: dict, result: EvalResult) -> str:
    """report.html: summary, definitions, contact sheets and every pair's pictures with numbers."""
    p = doc["protocol"]
    defs = "".join(f"<li><b>{html.escape(d['title'])}</b> ({d['better']} is better): "
                   f"{html.escape(d['definition'])}</li>" for d in doc["definitions"].values())
    sheets = "".join(f'<h3>{html.escape(e)}</h3><img src="{html.escape(f)}">'
                     for e, f in doc["files"]["contact_sheets"].items())
    face_keys = ("l1_face", "psnr_face", "ssim_face")
    parts = [f"<!doctype html><meta charset=utf-8><title>reenact eval — {html.escape(p['name'])}</title>",
             f"<style>{_CSS}</style><h1>reenact eval — {html.escape(p['name'])}</h1>",
             f"<p>{html.escape(p['description'])}.</p>",
             "<h2>Summary</h2>", _html_table(*table(doc["summary"])),
             "<h3>Pixel metrics inside the face mask</h3>", _html_table(*table(doc["summary"], face_keys)),
             "<h3>FID</h3><ul>" + "".join(f"<li>{html.escape(x.removeprefix('- '))}</li>"
                                          for x in fid_lines(doc)) + "</ul>",
             *_kshot_html(doc),
             "<h2>Contact sheets</h2>", sheets, "<h2>Pairs</h2>", _pair_rows(doc, result),
             "<h2>Metric definitions</h2><ul>", defs, "</ul>"]
    return "\n".join(parts) + "\n"
