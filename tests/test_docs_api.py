"""docs/api.md: every Python block runs, in order, as one script (from a scratch folder that
sees the bundled examples/)."""

from __future__ import annotations

import os
import re

from tests.conftest import REPO

DOC = REPO / "docs" / "api.md"


def test_api_doc_examples_run(tmp_path, monkeypatch, capsys):
    blocks = re.findall(r"```python\n(.*?)```", DOC.read_text(encoding="utf-8"), flags=re.S)
    assert len(blocks) >= 5
    os.symlink(REPO / "examples", tmp_path / "examples")
    monkeypatch.chdir(tmp_path)
    scope: dict = {"__name__": "__doc__"}
    for i, code in enumerate(blocks):
        exec(compile(code, f"{DOC.name} block {i + 1}", "exec"), scope)
    printed = capsys.readouterr().out
    assert "(360, 640, 3) uint8" in printed and "(256, 256, 3)" in printed and "24 (360, 640, 3)" in printed
    assert (tmp_path / "result.png").is_file() and (tmp_path / "out.mp4").is_file()
