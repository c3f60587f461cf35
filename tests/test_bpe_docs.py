"""Run the python blocks of docs/bpe.md, in order, in one namespace, in a fresh folder.

This follows the docs convention (every ```python block of a page runs in the
test suite); the shared runner in tests/test_docs.py, once merged, covers it too.
"""

from __future__ import annotations

import re
from pathlib import Path

PAGE = Path(__file__).resolve().parents[1] / "docs" / "bpe.md"


def test_bpe_page_blocks_run(tmp_path, monkeypatch):
    blocks = re.findall(r"^```python\n(.*?)^```", PAGE.read_text(encoding="utf-8"), flags=re.M | re.S)
    assert len(blocks) >= 5
    monkeypatch.chdir(tmp_path)
    namespace: dict = {"__name__": "docs_bpe"}
    for number, block in enumerate(blocks, start=1):
        exec(compile(block, f"{PAGE.name} block {number}", "exec"), namespace)
