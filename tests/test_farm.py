"""`reenact batch --ray` (reenact/farm.py) on a local Ray instance: the summary, failures and
--resume of the local batch; a worker killed mid-job fails only that job; an unreachable
address is one clean error. Ray is in the [test] extra; without it the Ray runs skip. Each run
starts its own local Ray instance (`--ray`: ray.init on this machine's CPUs, `--ray local`: a new
one even where a `ray start` cluster runs); the file takes about 40–80 s on 2 cores."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
import typer
from typer.testing import CliRunner

from reenact import engines
from reenact.cli import app
from reenact.config import InferenceConfig
from tests.test_cli import assert_clean_error, reenact
from tests.test_video_production import EXAMPLES, POSE, REF, clips, state  # noqa: F401 (clips: a fixture)

SMALL = "--max-side 320"


@pytest.fixture
def ray_env(monkeypatch):
    """A Ray run that starts its own local instance: no cluster address from the environment."""
    pytest.importorskip("ray", reason='needs the optional ray package: pip install -e ".[ray]"')
    monkeypatch.delenv("RAY_ADDRESS", raising=False)


def rows(out: Path) -> list[dict]:
    return list(csv.DictReader((out / "summary.csv").open()))


@pytest.mark.slow
def test_ray_batch_has_the_summary_failures_and_resume_of_the_local_batch(ray_env, clips, tmp_path):
    cv2.imwrite(str(tmp_path / "noise.png"), (np.random.default_rng(0).random((200, 200, 3)) * 255).astype(np.uint8))
    (tmp_path / "jobs.csv").write_text("reference,driver,output,options\n"
                                       f"{REF},{POSE},img.png,--transfer expression\n"
                                       f"{REF},{clips['short']},vid.mp4,--motion absolute\n"
                                       f"noise.png,{clips['short']},noface.mp4,\n"
                                       f"missing.jpg,{clips['short']},,\n"
                                       f"{REF},{clips['short']},opt.mp4,--regions nose\n")
    # Relative paths, run from the CSV's folder: the workers see them as the driver does.
    args = ["batch", "jobs.csv", "-o", "out", "--job-options", SMALL, "--ray"]
    r = reenact(*args, cwd=tmp_path)
    assert r.returncode == 1 and "3 of 5 jobs failed" in r.stderr and "Traceback" not in r.stderr + r.stdout, r.stderr
    assert "Ray: " in r.stdout and "CPUs" in r.stdout
    out = tmp_path / "out"
    got = rows(out)
    assert list(got[0]) == ["index", "reference", "driver", "output", "status", "exit_code", "error_class", "error",
                            "seconds", "frames"]  # the local batch's columns and values
    assert [(x["status"], x["exit_code"], x["error_class"]) for x in got] == [
        ("ok", "0", ""), ("ok", "0", ""), ("failed", "3", "NoFaceFound"), ("failed", "4", "MediaError"),
        ("failed", "2", "UsageError")]
    assert (got[3]["reference"], got[3]["output"]) == ("missing.jpg", "out/missing-as-short.mp4")
    assert got[3]["error"].startswith("missing.jpg: no such file") and "no face" in got[2]["error"]
    assert got[1]["frames"] == "24" and float(got[1]["seconds"]) > 0
    assert json.loads((out / "summary.json").read_text())["totals"] == {"ok": 2, "failed": 3, "skipped": 0, "not run": 0}
    assert sorted(p.name for p in out.iterdir()) == ["img.png", "summary.csv", "summary.json", "vid.mp4"]
    # The pixels of `reenact image` (a worker reuses its engine from job to job).
    local = tmp_path / "local.png"
    assert reenact("image", REF, POSE, "--transfer", "expression", "-o", local).returncode == 0
    assert local.read_bytes() == (out / "img.png").read_bytes()
    # --resume: finished outputs skipped, failures tried again.
    r = reenact(*args, "--resume", cwd=tmp_path)
    assert r.returncode == 1, r.stderr
    assert [x["status"] for x in rows(out)] == ["skipped", "skipped", "failed", "failed", "failed"]


def _holder(folder: Path) -> int | None:
    """The process holding an open descriptor on `folder` (a video render's locked work folder)."""
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
            if any(os.readlink(f"/proc/{pid}/fd/{fd}") == os.path.realpath(folder) for fd in fds):
                return int(pid)
        except OSError:
            continue
    return None


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="finds the worker through /proc (Linux)")
def test_a_worker_killed_mid_job_fails_that_job_and_resume_finishes_it(ray_env, tmp_path):
    jobs = tmp_path / "jobs.csv"
    jobs.write_text(f"{REF},{EXAMPLES / 'drive.mp4'},vid.mp4,--chunk-frames 4\n{REF},{POSE},img.png\n")
    out = tmp_path / "out"
    args = [sys.executable, "-m", "reenact", "batch", jobs, "-o", out, "--job-options", SMALL, "--ray", "local"]
    proc = subprocess.Popen(list(map(str, args)), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    work = out / ".vid.mp4.reenact-parts"
    deadline, worker = time.time() + 240, None
    while time.time() < deadline and worker is None:
        assert proc.poll() is None, proc.communicate()
        if state(out / "vid.mp4").get("chunks_done"):
            worker = _holder(work)
        time.sleep(0.05)
    assert worker is not None and worker != proc.pid
    os.kill(worker, signal.SIGKILL)  # as the kernel's OOM killer or a lost node would
    stdout, stderr = proc.communicate(timeout=240)
    assert proc.returncode == 1 and "1 of 2 jobs failed" in stderr and "Traceback" not in stderr, stderr
    vid, img = rows(out)
    assert (img["status"], vid["status"], vid["exit_code"]) == ("ok", "failed", "1")
    assert vid["error_class"] == "WorkerCrashedError" and "--resume" in vid["error"]
    assert state(out / "vid.mp4")["chunks_done"]  # the completed chunks are kept
    r = reenact("batch", jobs, "-o", out, "--job-options", SMALL, "--resume", "--ray", "local")
    assert r.returncode == 0, r.stderr
    vid, img = rows(out)
    assert (vid["status"], vid["frames"], img["status"]) == ("ok", "120", "skipped")
    assert sorted(p.name for p in out.iterdir()) == ["img.png", "summary.csv", "summary.json", "vid.mp4"]


@pytest.mark.parametrize("address,words", [
    ("127.0.0.1:1", ["cannot reach the Ray cluster at 127.0.0.1:1"]),
    ("nonsense", ["bad Ray address"]),
    ("ray://127.0.0.1:1", ["cannot reach"]),
])
def test_an_unreachable_ray_address_is_one_clean_error(tmp_path, address, words):
    pytest.importorskip("ray", reason='needs the optional ray package: pip install -e ".[ray]"')
    jobs = tmp_path / "jobs.csv"
    jobs.write_text(f"{REF},{POSE},img.png\n")
    r = reenact("batch", jobs, "-o", tmp_path / "out", "--ray", address, timeout=60)
    assert_clean_error(r, 1, *words)
    assert not (tmp_path / "out").exists()  # nothing written


def test_ray_not_installed_says_how_to_install_it(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` raises ImportError
    jobs = tmp_path / "jobs.csv"
    jobs.write_text(f"{REF},{POSE},img.png\n")
    r = CliRunner().invoke(app, ["batch", str(jobs), "-o", str(tmp_path / "out"), "--ray"])
    assert r.exit_code == 1 and "error:" in r.output and "reenact-face[ray]" in r.output, r.output
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("argv,ray,jobs", [
    (["J.csv", "-o", "o", "--ray"], "", "J.csv"),
    (["--ray", "-o", "o", "J.csv"], "", "J.csv"),
    (["J.csv", "--ray", "auto", "-o", "o"], "auto", "J.csv"),
    (["J.csv", "-o", "o", "--ray", "local"], "local", "J.csv"),
    (["--ray", "head:6379", "J.csv", "-o", "o"], "head:6379", "J.csv"),
    (["--ray=ray://head:10001", "J.csv", "-o", "o"], "ray://head:10001", "J.csv"),
    (["J.csv", "-o", "o"], None, "J.csv"),
])
def test_ray_takes_an_optional_address(argv, ray, jobs):
    cmd = typer.main.get_command(app).commands["batch"]  # type: ignore[attr-defined]
    params = cmd.make_context("batch", argv).params
    assert (params["ray"], str(params["jobs"])) == (ray, jobs)


def test_existing_file_after_ray_is_the_job_list(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "J.csv").write_text("")
    cmd = typer.main.get_command(app).commands["batch"]  # type: ignore[attr-defined]
    params = cmd.make_context("batch", ["--ray", "J.csv", "-o", "o"]).params
    assert (params["ray"], str(params["jobs"])) == ("", "J.csv")


def test_job_resources_need_ray(tmp_path):
    jobs = tmp_path / "jobs.csv"
    jobs.write_text(f"{REF},{POSE},img.png\n")
    assert_clean_error(reenact("batch", jobs, "-o", tmp_path / "out", "--job-gpus", "1"), 2, "--ray")


def test_kept_engines_are_reused_per_config():
    a, b = InferenceConfig(engine="warp"), InferenceConfig(engine="warp", size=128)
    assert engines.build_engine(a) is not engines.build_engine(a)  # the default: built every time
    previous = engines.keep_engines(1)
    try:
        first = engines.build_engine(a)
        assert engines.build_engine(a) is first and engines.build_engine(InferenceConfig(engine="warp")) is first
        assert engines.build_engine(b) is not first
        assert engines.build_engine(a) is not first  # limit 1: a was dropped when b came
    finally:
        engines.keep_engines(previous)
    assert engines.build_engine(a) is not engines.build_engine(a)
