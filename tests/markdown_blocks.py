"""Run the ```python blocks of a Markdown page, in order, as a reader would (README, docs/).

Shared by ``test_readme.py`` and ``test_docs.py``. A block that imports an optional peer
which is not installed here is skipped, and the skip names it; the blocks after it still run
(a page's blocks must not depend on a block that needs an extra).
"""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path
from typing import List

import pytest

# Imports that come from an extra or a peer, not from numpy/tqdm: a block importing one that
# is missing is skipped with its name.
OPTIONAL = ("torch", "PIL", "matplotlib", "dask", "distributed", "zstandard", "cloudpickle",
            "megatron", "boto3", "botocore", "moto", "fsspec", "s3fs", "nbclient", "nbformat")
_IMPORT = re.compile(r"^\s*(?:import|from) (" + "|".join(OPTIONAL) + r")\b", flags=re.M)


def python_blocks(path: Path) -> List[str]:
    """The ```python blocks of the Markdown file at ``path``, in order."""
    return re.findall(r"^```python\n(.*?)^```", path.read_text(encoding="utf-8"), flags=re.S | re.M)


def run_blocks(path: Path, label: str) -> None:
    """Run every python block of ``path`` in the current directory, one namespace for all."""
    namespace: dict = {"__name__": "__main__"}
    skipped = []
    for number, block in enumerate(python_blocks(path), 1):
        missing = [name for name in _IMPORT.findall(block) if importlib.util.find_spec(name) is None]
        if missing:  # an optional extra that is not installed: run the other blocks
            skipped.append(f"block {number} needs {missing[0]}")
            continue
        try:
            exec(compile(block, f"{label} python block {number}", "exec"), namespace)
        except Exception as e:
            pytest.fail(f"{label} python block {number} failed: {e!r}\n{block}")
    if skipped:
        pytest.skip(f"ran the other {label} blocks; not installed: " + "; ".join(skipped))
