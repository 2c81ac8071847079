"""Run a batch of map operations with mmap_ninja 0.9.0 (this file runs in the peer interpreter).

Usage: python upstream_job.py JOB_DIR

JOB_DIR/job.json is a list of operations; arrays they need are in JOB_DIR/inputs.npz, named
by key. Results go to JOB_DIR/results.json, with the arrays read in JOB_DIR/results.npz.
Every operation is run even if an earlier one failed; a failure is recorded as
{"error": "..."} under the operation's id, so one bad case does not hide the others.

Operations (each has "id" and "path"):
  write_ragged  {"samples": [key...], "batch_size": int or null}  from_lists / from_generator
  write_strings {"strings": [...], "zstd_level": int|null, "zstd_train_dictionary_size": int|null}
  write_numpy   {"array": key, "order": "C"|"F"}
  extend_ragged {"samples": [key...]}
  extend_strings {"strings": [...]}
  extend_numpy  {"array": key}
  open_only     {"kind": "ragged"|"string"}: construct the class on the path (0.9.0 makes a
                directory and nothing else)
  read          read every sample one by one and all at once (m[:]), and the kind
                generic.open_existing opens
"""

import json
import sys
import traceback
from pathlib import Path

import numpy as np

import mmap_ninja
from mmap_ninja import generic
from mmap_ninja import numpy as np_ninja
from mmap_ninja.ragged import RaggedMmap
from mmap_ninja.string import StringsMmap


class Results:
    """Results as JSON, with every array stored in an .npz under a generated key."""

    def __init__(self):
        self.arrays = {}

    def value(self, value):
        """A sample as JSON: an array (by key), or a Python scalar (0.9.0 gives them for 0-d samples)."""
        if isinstance(value, np.ndarray):
            key = f"r{len(self.arrays)}"
            self.arrays[key] = np.array(value)  # a plain copy, with its dtype and shape
            return {"array": key}
        key = f"r{len(self.arrays)}"
        self.arrays[key] = np.asarray(value)
        return {"python": type(value).__name__, "value": key}


def read(path, results):
    kind = (path / "type.ninja").read_text()
    opened = generic.open_existing(path)
    out = {"kind": kind, "generic_type": type(opened).__name__}
    if kind == "numpy":
        m = np_ninja.open_existing(path)
        out["whole"] = results.value(np.array(m))
        out["samples"] = [results.value(np.asarray(m[i])) for i in range(len(m))]
    elif kind == "ragged":
        m = RaggedMmap(path)
        out["samples"] = [results.value(m[i]) for i in range(len(m))]
        out["batch"] = [results.value(s) for s in m[:]]
    else:
        m = StringsMmap(path)
        out["strings"] = [m[i] for i in range(len(m))]
        out["batch"] = list(m[:])
        m.close()
    out["len"] = len(m)
    return out


def run(op, inputs, results):
    path = Path(op["path"])
    name = op["op"]
    if name.startswith("write_") or name == "open_only":
        path.parent.mkdir(parents=True, exist_ok=True)  # 0.9.0 creates the map directory only
    if name == "write_ragged":
        samples = [inputs[k] for k in op["samples"]]
        if op.get("batch_size"):
            RaggedMmap.from_generator(path, iter(samples), batch_size=op["batch_size"])
        else:
            RaggedMmap.from_lists(path, samples)
    elif name == "write_strings":
        StringsMmap.from_strings(path, op["strings"], zstd_level=op.get("zstd_level"),
                                 zstd_train_dictionary_size=op.get("zstd_train_dictionary_size"))
    elif name == "write_numpy":
        arr = inputs[op["array"]]
        np_ninja.from_ndarray(path, np.asfortranarray(arr) if op.get("order") == "F" else np.ascontiguousarray(arr))
    elif name == "extend_ragged":
        RaggedMmap(path).extend([inputs[k] for k in op["samples"]])
    elif name == "extend_strings":
        m = StringsMmap(path)
        m.extend(op["strings"])
        m.close()
    elif name == "extend_numpy":
        np_ninja.extend(np_ninja.open_existing(path), inputs[op["array"]])
    elif name == "open_only":
        (RaggedMmap if op["kind"] == "ragged" else StringsMmap)(path)
    elif name == "read":
        return read(path, results)
    else:
        raise ValueError(f"unknown operation {name!r}")
    return {"done": True}


def main():
    job_dir = Path(sys.argv[1])
    if mmap_ninja.__version__ != "0.9.0":
        sys.exit(f"this interpreter imports mmap_ninja {mmap_ninja.__version__} from {mmap_ninja.__file__}, not 0.9.0")
    ops = json.loads((job_dir / "job.json").read_text(encoding="utf-8"))
    with np.load(job_dir / "inputs.npz", allow_pickle=False) as npz:
        inputs = {k: npz[k] for k in npz.files}
    results = Results()
    out = {}
    for op in ops:
        try:
            out[op["id"]] = run(op, inputs, results)
        except Exception:
            out[op["id"]] = {"error": traceback.format_exc(limit=3)}
    np.savez(job_dir / "results.npz", **results.arrays)
    (job_dir / "results.json").write_text(json.dumps(out, ensure_ascii=False), encoding="utf-8")


if __name__ == "__main__":
    main()
