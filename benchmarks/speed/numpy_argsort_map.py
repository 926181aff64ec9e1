"""The plain numpy way to score two labelled code stores: the baseline of eval_command.py.

    python benchmarks/speed/numpy_argsort_map.py QUERY.h5 DATABASE.h5

Prints the mAP over the whole database (ties by database order). Distances come in blocks of
queries from one matrix product of +/-1 codes; each query's distance row is then ranked by
``np.argsort(kind="stable")`` and its AP summed over the relevant items in that order.
"""

from __future__ import annotations

import sys

import h5py
import numpy as np

from hashkit.codes import unpack_codes


def read(path):
    with h5py.File(path, "r") as f:
        return f["codes"][()], f["labels"][()], int(f.attrs["bits"])


def main() -> None:
    xq, lq, bits = read(sys.argv[1])
    xb, lb, _ = read(sys.argv[2])
    bq = unpack_codes(xq, bits).astype(np.float32) * 2 - 1
    bb = unpack_codes(xb, bits).astype(np.float32) * 2 - 1
    aps = np.zeros(len(xq))
    for start in range(0, len(xq), 100):
        dist = (bits - bq[start : start + 100] @ bb.T) / 2
        for row, q in enumerate(range(start, min(start + 100, len(xq)))):
            relevant = lb[np.argsort(dist[row], kind="stable")] == lq[q]
            hits = np.flatnonzero(relevant)
            if len(hits):
                aps[q] = np.mean(np.arange(1, len(hits) + 1) / (hits + 1))
    print(f"{aps.mean():.12f}")


if __name__ == "__main__":
    main()
