"""The README's quickstart snippets run as written (in order, sharing one namespace)."""

from __future__ import annotations

import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_python_blocks_run():
    text = README.read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, flags=re.S)
    assert len(blocks) >= 5
    ns: dict = {}
    for k, code in enumerate(blocks):
        exec(compile(code, f"README block {k}", "exec"), ns)
    assert ns["y"].shape == (4, 10, 32)
    assert ns["result"].states.c.shape == (4, 10, 16)
