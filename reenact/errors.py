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
