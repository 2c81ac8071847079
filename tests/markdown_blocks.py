"""Run the ```python blocks of a Markdown page, in order, as a reader would (README, docs/).

Shared by ``test_readme.py`` and ``test_docs.py``. A block that imports an optional peer
which is not installed here is skipped, and so are the blocks after it (they may use what it
made); the skip names the peer.
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
# A class defined in a block reaches n_jobs worker processes only by value, with cloudpickle.
_CLASS_TO_WORKERS = re.compile(r"n_jobs\s*=\s*(?!None\b)")
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
        if _CLASS_TO_WORKERS.search(block) and re.search(r"^class ", block, flags=re.M) \
                and importlib.util.find_spec("cloudpickle") is None:
            missing.append("cloudpickle (a class defined in the page goes to the n_jobs workers by value)")
        if missing:  # an optional extra that is not installed: the blocks from here on may need it
            skipped.append(f"blocks {number} and after need {missing[0]}")
            break
        try:
            exec(compile(block, f"{label} python block {number}", "exec"), namespace)
        except Exception as e:
            pytest.fail(f"{label} python block {number} failed: {e!r}\n{block}")
    if skipped:
        pytest.skip(f"ran the {label} blocks before; not installed: " + "; ".join(skipped))
