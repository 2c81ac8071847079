"""Every ```python block of README.md runs, in order, so the documentation cannot rot."""

import importlib.util
import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parent.parent / "README.md"
BLOCKS = re.findall(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), flags=re.S)


def test_readme_has_examples() -> None:
    assert len(BLOCKS) >= 5


def test_readme_python_blocks_run(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    skipped = []
    for number, block in enumerate(BLOCKS, 1):
        needs = re.findall(r"^\s*(?:import|from) (torch|PIL|matplotlib|dask|distributed)\b", block, flags=re.M)
        missing = [m for m in needs if importlib.util.find_spec(m) is None]
        if missing:  # an optional extra that is not installed: run the other blocks
            skipped.append(f"block {number} needs {missing[0]}")
            continue
        try:
            exec(compile(block, f"README.md python block {number}", "exec"), namespace)
        except Exception as e:
            pytest.fail(f"README python block {number} failed: {e!r}\n{block}")
    if skipped:
        pytest.skip("ran the other README blocks; not installed: " + "; ".join(skipped))
