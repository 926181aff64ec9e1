"""Memory bound of the evaluator: 10,000 queries x 1,000,000 codes at 32 bits, exact mAP.

/usr/bin/time -v python benchmarks/eval_memory.py   # see "Maximum resident set size"
"""

import time

import numpy as np

from hashkit.codes import pack_codes
from hashkit.metrics import mean_average_precision

rng = np.random.default_rng(0)
centres = rng.random((10, 32)) < 0.5


def synth(n):
    y = rng.integers(0, 10, n)
    return pack_codes(centres[y] ^ (rng.random((n, 32)) < 0.25)), y


xb, yb = synth(1_000_000)
xq, yq = synth(10_000)
t = time.perf_counter()
m = mean_average_precision(xq, xb, yq, yb, 32)
print(f"10,000 x 1,000,000 at 32 bits: mAP {m:.4f} in {time.perf_counter() - t:.1f}s")
