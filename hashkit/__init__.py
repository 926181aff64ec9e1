"""hashkit: deep supervised hashing with spherical embedding (SDSH) and FAISS binary indexes.

The parts that need no torch (codes, metrics, store, index) import without it.
"""

__version__ = "0.1.0"

from hashkit.errors import HashkitError

__all__ = ["HashkitError", "__version__"]
