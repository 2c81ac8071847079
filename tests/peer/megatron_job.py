"""Read and write Megatron corpora with megatron-core itself (run as a subprocess by tests).

Usage: python megatron_job.py JOB_DIR

JOB_DIR/job.json is a list of operations; each has "id", "op" and "prefix":
  dtypes {}: the codes of megatron-core's DType enum, by name
  read   {"multimodal": bool}: IndexedDataset(prefix) -> every sequence, one by one, its dtype,
         document indices and sequence modes
  write  {"dtype": name, "input": key, "document_ends": [...], "modes": key|null}: the
         sequences of JOB_DIR/inputs.npz[key] (flat elements + "<key>.lengths") written with
         IndexedDatasetBuilder, end_document() after each document end
Results go to JOB_DIR/results.json (per id: dtype, or "error"), arrays to JOB_DIR/results.npz.
If megatron-core cannot be imported, results.json is {"unavailable": "<why>"}.
"""

import json
import sys
import traceback
import warnings
from pathlib import Path

import numpy as np


def main(job_dir: Path) -> None:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "Transformer Engine and Apex are not installed"
            import torch
            from megatron.core.datasets.indexed_dataset import DType, IndexedDataset, IndexedDatasetBuilder
    except Exception as e:  # ImportError, or a broken install
        (job_dir / "results.json").write_text(json.dumps({"unavailable": f"{type(e).__name__}: {e}"}))
        return
    jobs = json.loads((job_dir / "job.json").read_text())
    inputs = np.load(job_dir / "inputs.npz") if (job_dir / "inputs.npz").exists() else {}
    results, arrays = {}, {}
    for job in jobs:
        try:
            if job["op"] == "dtypes":
                results[job["id"]] = {"codes": {member.name: member.value for member in DType}}
            elif job["op"] == "read":
                ds = IndexedDataset(job["prefix"], multimodal=job.get("multimodal", False))
                items = [ds[i] for i in range(len(ds))]  # multimodal: (sequence, mode)
                sequences = [np.array(item[0] if ds.multimodal else item) for item in items]
                arrays[f"{job['id']}.flat"] = np.concatenate(sequences) if sequences else np.empty(0, ds.index.dtype)
                arrays[f"{job['id']}.lengths"] = np.array([len(s) for s in sequences], np.int64)
                arrays[f"{job['id']}.documents"] = np.array(ds.document_indices)
                if ds.multimodal:
                    # (its sequence_modes property asserts on an array, so it cannot be used)
                    arrays[f"{job['id']}.modes"] = np.array([int(item[1]) for item in items], np.int8)
                dtypes = {np.dtype(s.dtype).name for s in sequences}
                results[job["id"]] = {"dtype": np.dtype(ds.index.dtype).name, "sequence_dtypes": sorted(dtypes)}
                del ds
            elif job["op"] == "write":
                dtype = getattr(np, job["dtype"])
                modes = inputs[job["modes"]] if job.get("modes") else None
                builder = IndexedDatasetBuilder(job["prefix"] + ".bin", dtype=dtype, multimodal=modes is not None)
                flat, lengths = inputs[job["input"]], inputs[job["input"] + ".lengths"]
                ends = job["document_ends"]  # an empty document repeats its end: end it twice
                start = 0
                for i, length in enumerate(lengths.tolist()):
                    sequence = torch.from_numpy(flat[start : start + length].astype(np.int64))
                    if modes is None:
                        builder.add_item(sequence)
                    else:
                        builder.add_item(sequence, int(modes[i]))
                    start += length
                    for _ in range(ends.count(i + 1)):
                        builder.end_document()
                builder.finalize(job["prefix"] + ".idx")
                results[job["id"]] = {"dtype": job["dtype"]}
        except Exception:
            results[job["id"]] = {"error": traceback.format_exc()}
    np.savez(job_dir / "results.npz", **arrays)
    (job_dir / "results.json").write_text(json.dumps(results))


if __name__ == "__main__":
    main(Path(sys.argv[1]))
