"""Every public name of mmap_ninja has a docstring and an entry in the API reference.

A module is public when its source defines ``__all__`` and it is not in ``INTERNAL``; its
public names are its ``__all__``. A new module with ``__all__`` must therefore be documented
in ``docs/api.md`` or declared internal here: a decision, never an accident.
Used two ways, so the rule holds with or without a docs build:

- as a Sphinx extension (``docs/conf.py``): a missing docstring, or a public module that
  ``docs/api.md`` does not document with an ``.. automodule::`` (in an ``eval-rst`` block), is a warning, which
  ``sphinx-build -W`` turns into a failed build;
- from ``tests/test_docs.py``, which fails on the same findings.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import re
from pathlib import Path
from typing import Iterator, List

PACKAGE_DIR = Path(__file__).resolve().parents[2] / "src" / "mmap_ninja"
API_PAGE = Path(__file__).resolve().parents[1] / "api.md"
# Modules whose ``__all__`` gathers names for the package's own modules, not for users.
INTERNAL = {
    "mmap_ninja.layout",  # the on-disk format and the commit protocol, re-exported for the map classes
}
OPTIONAL_IMPORTS = ("torch", "dask", "distributed", "PIL", "zstandard", "cloudpickle", "matplotlib", "boto3", "botocore", "fsspec")


def public_modules() -> List[str]:
    """Dotted names of the public modules: ``__all__`` in their source (read, not imported), not internal."""
    names = []
    for path in sorted(PACKAGE_DIR.rglob("*.py")):
        relative = path.relative_to(PACKAGE_DIR.parent).with_suffix("")
        parts = list(relative.parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        if any(part.startswith("_") for part in parts[1:]):
            continue
        name = ".".join(parts)
        if name not in INTERNAL and re.search(r"^__all__\b", path.read_text(encoding="utf-8"), flags=re.M):
            names.append(name)
    return names


def documented_modules() -> List[str]:
    """The modules ``docs/api.md`` documents with an ``automodule`` directive."""
    return re.findall(r"^\.\. automodule:: (\S+)", API_PAGE.read_text(encoding="utf-8"), flags=re.M)


def missing_optional_imports() -> List[str]:
    """The optional dependencies that are not installed here (autodoc stands in for them)."""
    missing = [name for name in OPTIONAL_IMPORTS if importlib.util.find_spec(name) is None]
    if missing:
        _let_stand_ins_take_items()
    return missing


def _let_stand_ins_take_items() -> None:
    """``mmap_ninja.torch`` registers its collate in PyTorch's ``default_collate_fn_map`` at
    import (``map[torch.Tensor] = ...``); autodoc's stand-in for a missing torch has no
    ``__setitem__``, so the module would not import for the reference. Give it one that
    ignores the item: only the docs build without torch uses stand-ins."""
    try:
        from sphinx.ext.autodoc.mock import _MockObject
    except ImportError:  # no Sphinx, no stand-ins
        return
    if not hasattr(_MockObject, "__setitem__"):
        _MockObject.__setitem__ = lambda self, key, value: None


def _own_members(cls: type) -> Iterator[tuple]:
    for name, value in vars(cls).items():
        if name.startswith("_"):
            continue
        if isinstance(value, (property, staticmethod, classmethod)) or inspect.isfunction(value):
            yield name, value


def _documented(member: object) -> bool:
    """A docstring of its own, or of the method it overrides (autodoc shows that one too)."""
    if isinstance(member, (staticmethod, classmethod)):
        member = member.__func__
    return bool((inspect.getdoc(member) or "").strip())


def missing_docstrings(module_name: str) -> List[str]:
    """``module.name`` (or ``module.Class.method``) of each public function, class, method or
    property without a docstring; the methods a public class inherits from a private module
    of ours count too, since the reference shows them."""
    try:
        module = importlib.import_module(module_name)
    except ImportError as needs_extra:  # an extra not installed here: stand in for it, as autodoc does
        try:
            from sphinx.ext.autodoc.mock import mock
        except ImportError:
            raise ImportError(f"{needs_extra} (and Sphinx, which could stand in for it, is not installed)") from None
        with mock(missing_optional_imports()):
            module = importlib.import_module(module_name)
    if not hasattr(module, "__all__"):
        return [f"{module_name}.__all__ (the module defines no __all__)"]
    missing = []
    for name in module.__all__:
        value = getattr(module, name)
        if not (inspect.isclass(value) or inspect.isfunction(value)):
            continue  # constants are documented in the module's docstring
        if not (value.__doc__ or "").strip():
            missing.append(f"{module_name}.{name}")
        if inspect.isclass(value):
            for base in value.__mro__:
                if not base.__module__.startswith("mmap_ninja"):
                    continue
                for member, function in _own_members(base):
                    if not _documented(function):
                        missing.append(f"{module_name}.{name}.{member}")
    return sorted(set(missing))


def problems() -> List[str]:
    """Every finding, as sentences."""
    found = []
    documented = set(documented_modules())
    for module_name in public_modules():
        if module_name not in documented:
            found.append(f"public module {module_name} (it defines __all__) has no automodule entry in docs/api.md")
        found += [f"public name {name} has no docstring" for name in missing_docstrings(module_name)]
    return found


def _check(app) -> None:
    from sphinx.util import logging

    logger = logging.getLogger(__name__)
    for problem in problems():
        logger.warning(problem)


def setup(app) -> dict:
    app.connect("builder-inited", _check)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
