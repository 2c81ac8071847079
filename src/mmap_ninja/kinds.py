"""The registry of kinds of maps: what each kind is called and how it opens, builds, counts,
merges, inspects and repairs itself.

Every module that needs something kind-specific asks here instead of comparing names:
``kinds.get("ragged").open(path)``, ``kinds.on_disk(path)`` for the kind a directory holds.

Spellings. Each kind has ONE name on the API side (``get``, ``records.json``,
``RecordsMmap.fields``, ``mmap_ninja.dask``'s ``kind=``): "ragged", "strings", "numpy"
(same-shape), "records", "megatron". ``disk`` is what its ``type.ninja`` holds, as 0.9.0
writes it ("string" for strings maps); a kind without a ``type.ninja`` has None. The old
spellings "string", "same-shape" and "array" are still accepted by ``get`` (earlier
releases took them) and mean the same kind.

Adding a kind: write one module that builds a ``Kind`` and calls ``register`` (see
``docs/extending.md``; ``tests/example_kind.py`` is a complete small one). The kinds of
this library register themselves in ``builtin_kinds.py``, imported on the first lookup.
"""

from __future__ import annotations

import importlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Union

from . import layout, ondisk

PathLike = Union[str, "os.PathLike[str]"]

_ALIASES = {"string": "strings", "same-shape": "numpy", "array": "numpy", "str": "strings", "image": "images"}
_BUILTINS = "mmap_ninja.builtin_kinds"  # imported by name on the first lookup: no import cycle


@dataclass(frozen=True)
class Kind:
    """What the library needs of a kind of map. Only ``name`` and ``open`` are required."""

    name: str  # the one spelling on the API side
    open: Callable[..., Any]  # open(path, mode=None, count=None): the map (count: map only that many samples)
    wraps: bool = False  # open also takes wrapper_fn= (samples pass through it when read)
    disk: Optional[str] = None  # what type.ninja holds; None: the kind has no type.ninja
    encoder: Optional[Callable[[Dict[str, Any]], Any]] = None  # build: the builder's options -> an encoder (build.py)
    count: Optional[Callable[[Path], int]] = None  # the samples committed on disk
    merger: Optional[Callable[..., Any]] = None  # merge: merger(tmp, one_dataset, bar=None) appends maps into tmp
    inspect: Optional[Callable[[Path], Dict[str, Any]]] = None  # what ``mmap-ninja info`` reports
    repair: Optional[Callable[[Path, int], None]] = None  # cut back to its first n samples
    is_map: Optional[Callable[[Path], bool]] = None  # for kinds without type.ninja: does ``path`` hold one
    product: Optional[Callable[[Dict[str, Any]], Any]] = None  # what the build engine builds (default: build.MapProduct)
    field: Any = None  # as a field of a records map: spec, create, writer, append (records_fields.RaggedField...)

    def __reduce__(self) -> tuple:
        # by name, with the module that defines it: a worker process imports that module, which
        # registers the kind there too (a kind defined in __main__ or a notebook cannot be sent)
        return (_registered, (self.name, getattr(self.open, "__module__", None)))


def _registered(name: str, module: Optional[str]) -> Kind:
    """The kind ``name`` in this process, importing ``module`` (which registers it) if needed."""
    _load_builtins()
    if name not in _KINDS and module:
        importlib.import_module(module)
    return get(name)


_KINDS: Dict[str, Kind] = {}
_loaded = False


def register(kind: Kind) -> Kind:
    """Add ``kind`` to the registry (replacing one of the same name); returns it."""
    if kind.name in _ALIASES:
        raise ValueError(f"{kind.name!r} is an old spelling of the kind {_ALIASES[kind.name]!r}; choose another name")
    for other in _KINDS.values():
        if kind.disk is not None and other.disk == kind.disk and other.name != kind.name:
            raise ValueError(f"kinds {other.name!r} and {kind.name!r} would both be {kind.disk!r} on disk")
    if kind.disk is not None:
        ondisk.add_kind(kind.disk)
    _KINDS[kind.name] = kind
    return kind


def _load_builtins() -> None:
    global _loaded
    if not _loaded:
        _loaded = True
        importlib.import_module(_BUILTINS)


def names() -> List[str]:
    """The names of every registered kind."""
    _load_builtins()
    return list(_KINDS)


def get(name: Any) -> Kind:
    """The kind called ``name`` (or an old spelling of it), or a ValueError naming the kinds."""
    _load_builtins()
    kind = _KINDS.get(_ALIASES.get(name, name)) if isinstance(name, str) else None
    if kind is None:
        raise ValueError(f"unknown kind of map {name!r}: use one of {', '.join(map(repr, _KINDS))}")
    return kind


def by_disk(disk: Optional[str]) -> Optional[Kind]:
    """The kind whose ``type.ninja`` holds ``disk``, or None."""
    _load_builtins()
    return next((k for k in _KINDS.values() if disk is not None and k.disk == disk), None)


def on_disk(path: PathLike) -> Optional[Kind]:
    """The kind of the map at ``path``: by its ``type.ninja``, else by the kinds that have none."""
    _load_builtins()
    kind = by_disk(layout.read_kind(Path(path)))
    if kind is not None:
        return kind
    return next((k for k in _KINDS.values() if k.is_map is not None and k.is_map(Path(path))), None)
