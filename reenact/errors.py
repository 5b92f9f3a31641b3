"""One exception family for everything a user can cause or fix.

The library raises these; only `reenact.cli` catches them, prints one red line (message and
hint) and exits with the class's `exit_code`. Anything else escaping is a bug.

Exit codes (documented in the README):
  1  generic ReenactError          4  media unreadable / unsupported / corrupt
  2  bad usage (typer's own code)  5  output problem (exists, not writable)
  3  no face found                 6  missing or invalid weights / auxiliary models
  130 interrupted (Ctrl-C)
"""

from __future__ import annotations

import errno


class ReenactError(Exception):
    """Base class. `hint` says what to do next; it is printed after the message."""

    exit_code = 1

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message if not self.hint else f"{self.message} ({self.hint})"


class UsageError(ReenactError):
    """Options that contradict each other or values out of range."""

    exit_code = 2


class NoFaceFound(ReenactError):
    """No face was detected where one is required (the reference, or every driver frame)."""

    exit_code = 3


class MediaError(ReenactError):
    """A file cannot be read: missing, empty, corrupt or in a format we do not support."""

    exit_code = 4


class UnsupportedMedia(MediaError):
    """The file exists but its type is not one we read (e.g. a .txt given as an image)."""


class CorruptMedia(MediaError):
    """The file claims a supported type but cannot be decoded (zero bytes, truncated...)."""


class OutputError(ReenactError):
    """The output cannot be written: it exists without --overwrite, or the place is not writable."""

    exit_code = 5


class MissingWeights(ReenactError):
    """A model file (generator ONNX, auxiliary network) is absent, corrupt or of the wrong kind."""

    exit_code = 6


class Interrupted(ReenactError):
    """Ctrl-C / SIGTERM during work that keeps what it completed (a resumable video render)."""

    exit_code = 130


# ─────────────────────────── operating-system errors ───────────────────────────

# errno values that only writing produces: always an output problem, whatever the path.
_WRITE_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EFBIG}
# errno values that, on a path we cannot place, most likely concern an input.
_LOOKUP_ERRNOS = {errno.ENOENT, errno.ENOTDIR, errno.EISDIR, errno.ENAMETOOLONG, errno.ELOOP}
_REASONS = {
    errno.ENOENT: "no such file or folder",
    errno.ENAMETOOLONG: "the name is too long for the file system",
    errno.ENOSPC: "no space left on the device",
    errno.EDQUOT: "the disk quota is exceeded",
    errno.EROFS: "the file system is read-only",
    errno.EACCES: "permission denied",
    errno.EPERM: "operation not permitted",
    errno.ENOTDIR: "a part of the path is not a folder",
    errno.EISDIR: "it is a folder",
    errno.EEXIST: "a file is in the way (a folder was expected)",
}
_HINTS = {
    errno.ENOENT: "check the path and its spelling",
    errno.ENAMETOOLONG: "use a shorter file name (most file systems allow 255 bytes)",
    errno.ENOSPC: "free some space and run the command again (a video render continues with --resume)",
    errno.EDQUOT: "free some space and run the command again (a video render continues with --resume)",
    errno.EROFS: "choose a folder you can write to",
    errno.EACCES: "check the permissions of the file and its folder",
    errno.EPERM: "check the permissions of the file and its folder",
}


def from_os_error(e: OSError, role: str | None = None, hint: str | None = None) -> ReenactError:
    """The user-facing error for an operating-system error. role: "input" (exit 4), "output"
    (exit 5) or None (decided by the errno: write-only errors are outputs, lookups inputs,
    anything else exit 1). The message names the path when the error carries one."""
    if e.errno in _WRITE_ERRNOS:
        role = "output"
    elif role is None and e.errno in _LOOKUP_ERRNOS:
        role = "input"
    reason = _REASONS.get(e.errno, e.strerror or str(e))
    where = f" {e.filename}" if e.filename else ""
    verb = {"input": "cannot read", "output": "cannot write"}.get(role, "file system error on")
    cls = {"input": MediaError, "output": OutputError}.get(role, ReenactError)
    return cls(f"{verb}{where}: {reason}", hint or _HINTS.get(e.errno))
