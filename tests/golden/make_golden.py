"""Write the golden maps under tests/golden/ with the released mmap_ninja 0.9.0.

Run it with an interpreter that has mmap_ninja==0.9.0 (and zstandard) installed, from anywhere:

    /path/to/venv-upstream/bin/python tests/golden/make_golden.py

For each case it writes two directories: ``NAME/`` (the map as 0.9.0's builder writes it from
``initial(NAME)``) and ``NAME.extended/`` (a copy of it after 0.9.0's ``extend`` with
``added(NAME)``). tests/test_golden.py reads them with ours, extends a copy with ours and
builds from scratch with ours, and compares every file byte for byte. The samples live here,
numpy only, so that both interpreters import the same values.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path
from typing import Any, Dict, List

import numpy as np

HERE = Path(__file__).resolve().parent

# The zstd level of the compressed strings map; no dictionary (training one needs many samples).
ZSTD_LEVEL = 3

CASES = ["ragged_flat", "ragged_nested", "strings", "strings_zstd", "numpy"]


def initial(name: str) -> Any:
    """The samples 0.9.0 builds the golden map ``name`` from."""
    if name == "ragged_flat":
        return [np.arange(3, dtype=np.int32), np.array([], dtype=np.int32), np.array([-7, 2**31 - 1], dtype=np.int32)]
    if name == "ragged_nested":
        return [np.arange(6, dtype=np.float32).reshape(2, 3), np.full((1, 3), 0.5, np.float32), np.zeros((3, 1), np.float32)]
    if name in ("strings", "strings_zstd"):
        return ["hello", "", "ninja ⚔ mmap", "a" * 40]
    if name == "numpy":
        return np.arange(24, dtype=np.int16).reshape(4, 3, 2)
    raise KeyError(name)


def added(name: str) -> Any:
    """The samples 0.9.0 appends to a copy of ``name`` to write ``name.extended``."""
    if name == "ragged_flat":
        return [np.array([5], dtype=np.int32), np.arange(4, dtype=np.int32)[::-1].copy()]
    if name == "ragged_nested":
        return [np.ones((2, 2), np.float32)]
    if name in ("strings", "strings_zstd"):
        return ["world", "zz"]
    if name == "numpy":
        return np.arange(12, dtype=np.int16).reshape(2, 3, 2) * -1
    raise KeyError(name)


def expected(name: str, extended: bool = False) -> List[Any]:
    """The samples a reader must see in ``name`` (or ``name.extended``), one per index."""
    samples: List[Any] = list(initial(name))
    if extended:
        samples += list(added(name))
    return samples


def build_kwargs(name: str) -> Dict[str, Any]:
    """Keyword arguments of the builder besides the samples (the same for 0.9.0 and ours)."""
    return {"zstd_level": ZSTD_LEVEL} if name == "strings_zstd" else {}


def build(name: str, out_dir: Path) -> None:
    """Build ``name`` at ``out_dir`` with whichever mmap_ninja is importable (0.9.0 or ours)."""
    from mmap_ninja import numpy as np_ninja
    from mmap_ninja.ragged import RaggedMmap
    from mmap_ninja.string import StringsMmap

    if name.startswith("ragged"):
        RaggedMmap.from_lists(out_dir, initial(name), **build_kwargs(name))
    elif name.startswith("strings"):
        StringsMmap.from_strings(out_dir, initial(name), **build_kwargs(name))
    else:
        np_ninja.from_ndarray(out_dir, initial(name))


def extend(name: str, out_dir: Path) -> None:
    """Extend the map ``name`` at ``out_dir`` with ``added(name)`` through the public API."""
    from mmap_ninja import numpy as np_ninja
    from mmap_ninja.ragged import RaggedMmap
    from mmap_ninja.string import StringsMmap

    if name.startswith("ragged"):
        RaggedMmap(out_dir).extend(added(name))
    elif name.startswith("strings"):
        StringsMmap(out_dir).extend(added(name))
    else:
        np_ninja.extend_dir(out_dir, added(name))


def main() -> None:
    import mmap_ninja

    if getattr(mmap_ninja, "__version__", None) != "0.9.0":
        sys.exit(f"make_golden.py must run under mmap_ninja 0.9.0, found {mmap_ninja.__file__}")
    for name in CASES:
        out, ext = HERE / name, HERE / f"{name}.extended"
        for d in (out, ext):
            shutil.rmtree(d, ignore_errors=True)
        build(name, out)
        shutil.copytree(out, ext)
        extend(name, ext)
        print(f"wrote {out.name}/ and {ext.name}/")


if __name__ == "__main__":
    main()
