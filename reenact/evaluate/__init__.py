"""Evaluation: measured quality (identity, pose, expression, self-reenactment, FID) and speed.

    protocols.py   which (reference, driver) pairs: celeba-id, clips, or any folders
    pictures.py    decoded pictures and their landmarks, loaded once
    expression.py  landmark expression descriptor (reused by video stability checks)
    metrics.py     the metrics, one output or one sequence at a time
    runner.py      render every pair with every engine (pipeline.Reenactor) and measure it
    summary.py     metric definitions, aggregation, metrics.json (schema "reenact.eval/1")
    report.py      metrics.json, report.md, report.html, contact sheets, atomic report folder
    sheet.py       thumbnails and contact sheets
    bench.py       per-stage latency and fps at 256², per engine and execution provider

`make_protocol` and `evaluate` are what `reenact eval` calls. Importing this package is cheap
(no torch, no mediapipe); the auxiliary networks load only when a metric needs them.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from reenact.errors import MediaError, UsageError

if TYPE_CHECKING:  # pragma: no cover
    from reenact.evaluate.protocols import Protocol
    from reenact.evaluate.runner import EvalSettings, Progress

PROTOCOLS = ("celeba-id", "clips")
DATA_ENV = "REENACT_DATA"


def data_root(data: str | Path | None = None) -> Path:
    """Folder holding celeba-id/ and clips/: `data`, else $REENACT_DATA, else ../shared/data."""
    return Path(data or os.environ.get(DATA_ENV) or Path("..") / "shared" / "data")


def make_protocol(name: str | None, *, refs: list | None = None, drivers: list | None = None,
                  pairs_csv: str | Path | None = None, data: str | Path | None = None, seed: int = 0,
                  limit: int | None = None, references: int = 1) -> "Protocol":
    """A ready-made protocol by name, or references × drivers from files/folders.
    `references` > 1: photos per identity for k-shot evaluation (celeba-id only)."""
    from reenact.evaluate import protocols

    if limit is not None and limit < 0:
        raise UsageError(f"--limit {limit} is negative", "give a number of pairs, or 0 for all")
    if name and (refs or drivers):
        raise UsageError("--protocol cannot be combined with --refs/--drivers")
    if references > 1 and name != "celeba-id":
        raise UsageError("--k needs --protocol celeba-id (several photos of each test identity)")
    if name == "celeba-id":
        proto = protocols.celeba_id(_need(data_root(data) / "celeba-id"), seed=seed, references=references)
    elif name == "clips":
        proto = protocols.clips(_need(data_root(data) / "clips" / "pcavs-vox2"), seed=seed)
    elif name:
        raise UsageError(f"unknown protocol {name!r}", f"choose one of {', '.join(PROTOCOLS)}")
    elif refs and drivers:
        proto = protocols.folders(refs, drivers, pairs_csv=pairs_csv)
    else:
        raise UsageError("nothing to evaluate", "give --protocol celeba-id|clips, or --refs and --drivers")
    return protocols.limit(proto, limit, seed)


def _need(folder: Path) -> Path:
    if not folder.is_dir():
        raise MediaError(f"protocol data not found at {folder}",
                         f"pass --data DIR (the folder holding celeba-id/ and clips/) or set {DATA_ENV}")
    return folder


def protocol_files(protocol: "Protocol", settings: "EvalSettings | None" = None) -> list[str]:
    """Every file the evaluation reads (photos, videos, weights): the report folder, replaced as
    a whole, must hold none of them."""
    items = [i for pair in protocol.pairs for i in (pair.reference, pair.driver)] + list(protocol.real)
    items += [i for bank in getattr(protocol, "banks", {}).values() for i in bank]
    weights = [getattr(settings, k, None) for k in ("weights", "mouth_weights", "eyes_weights")]
    return sorted({str(getattr(i, "path", i)) for i in items} | {w for w in weights if w})


def evaluate(protocol: "Protocol", settings: "EvalSettings", out_dir: str | Path, *, overwrite: bool = False,
             progress: "Progress | None" = None, command: str | None = None) -> dict:
    """Run the evaluation and write the report folder atomically; returns the metrics.json dict."""
    from reenact.evaluate import report, runner

    report.check_target(out_dir, overwrite=overwrite, inputs=protocol_files(protocol, settings))
    with report.staging(out_dir, overwrite=overwrite) as tmp:
        result = runner.run(protocol, settings, sink=report.ImageFolder(tmp), progress=progress)
        return report.write(result, tmp, command=command)
