"""The notebooks in examples/ run from top to bottom on generated data (never the network).

They are stored with their outputs cleared (checked here too) and executed with nbclient in
a fresh kernel, in an empty temporary folder. The default suite runs them at a fraction of
their size (``MMAP_NINJA_EXAMPLE_SCALE``, a variable only the tests set) to stay fast on two
cores; ``MMAP_NINJA_EXAMPLE_SCALE=1`` runs them at the size a reader gets (100,000 review
files; 1,000 images), as ``.ci/run`` does.
"""

import importlib.util
import json
import os
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
NOTEBOOKS = sorted(EXAMPLES.glob("*.ipynb"))
SRC = Path(__file__).resolve().parent.parent / "src"
# What each notebook imports beyond numpy and tqdm; a missing one skips it, named.
NEEDS = {"imdb.ipynb": [], "images.ipynb": ["PIL", "matplotlib", "torch"]}
TIMEOUT_S = 300  # per cell


def test_every_notebook_is_known() -> None:
    assert sorted(NEEDS) == [nb.name for nb in NOTEBOOKS]


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=[nb.name for nb in NOTEBOOKS])
def test_notebook_is_stored_without_outputs(notebook: Path) -> None:
    cells = json.loads(notebook.read_text(encoding="utf-8"))["cells"]
    dirty = [i for i, cell in enumerate(cells) if cell.get("outputs") or cell.get("execution_count")]
    assert dirty == [], f"{notebook.name}: clear the outputs of cells {dirty} before committing"


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=[nb.name for nb in NOTEBOOKS])
def test_notebook_runs(notebook: Path, tmp_path, monkeypatch) -> None:
    missing = [name for name in ["nbclient", "nbformat", "ipykernel"] + NEEDS[notebook.name] if importlib.util.find_spec(name) is None]
    if missing:
        pytest.skip(f"{notebook.name} needs {', '.join(missing)}, not installed")
    import nbclient
    import nbformat

    monkeypatch.setenv("MMAP_NINJA_EXAMPLE_SCALE", os.environ.get("MMAP_NINJA_EXAMPLE_SCALE", "0.2"))
    # the kernel imports this checkout's mmap_ninja, installed or not
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(SRC), os.environ.get("PYTHONPATH")])))
    nb = nbformat.read(notebook, as_version=4)
    # "python3" is ipykernel's kernel; jupyter_client starts it with this interpreter
    client = nbclient.NotebookClient(nb, timeout=TIMEOUT_S, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}})
    client.execute()
    outputs = "".join(out.get("text", "") for cell in nb.cells for out in cell.get("outputs", []))
    assert "speed-up" in outputs
