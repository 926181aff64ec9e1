"""hashkit: deep supervised hashing with spherical embedding (SDSH) and FAISS binary indexes.

The parts that need no torch (codes, metrics, store, index) import without it.
"""

import os

__version__ = "0.1.0"

# OpenMP threads (torch, faiss) that wait for work by spinning, libgomp's default, make
# training 4-7x slower as soon as other processes share the cores; waiting threads that sleep
# cost little (benchmarks/speed/training.md). This only takes effect when hashkit is imported
# before torch and faiss load OpenMP (as the command line does), and never overrides a choice
# made in the environment.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from hashkit.errors import HashkitError

__all__ = ["HashkitError", "__version__"]
