"""Synthetic data for the start-up benchmark: a tiny model bundle, a query image, and for each
size N a code store of N stored paths (random 32-bit codes; row 0 is the query image with its
own code, so the "stored query comes back first" rule runs) with a flat index over it.

    python benchmarks/speed/startup_data.py OUT_DIR 69000 1000000
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from hashkit.bundle import Bundle, save_bundle
from hashkit.index import create_index
from hashkit.models import HashNet, NetworkConfig
from hashkit.search import Searcher
from hashkit.store import StoreWriter

BITS = 32
BATCH = 100_000


def make(out: Path, sizes: list[int]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    config = NetworkConfig(bits=BITS, input_size=28, channels=1)
    model = out / "model.pt"
    fingerprint = save_bundle(
        Bundle(config, HashNet(config).state_dict(), np.eye(BITS, dtype=np.float32)), model
    )
    query = out / "query.png"
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (28, 28), dtype=np.uint8)).save(query)
    bundle_code = None
    # every size in one run: they share the model (its fingerprint) and the query
    for n in sizes:
        store = out / f"store_{n}.h5"
        with StoreWriter(store, BITS, fingerprint=fingerprint) as writer:
            for start in range(0, n, BATCH):
                m = min(BATCH, n - start)
                codes = rng.integers(0, 256, (m, BITS // 8), dtype=np.uint8)
                paths = [
                    f"/data/images/{i // 1000:04d}/{i:07d}.png" for i in range(start, start + m)
                ]
                if start == 0:
                    paths[0] = str(query.resolve())
                    if bundle_code is None:
                        bundle_code = _query_code(out, model, fingerprint, query, codes)
                    codes[0] = bundle_code
                writer.append(codes, np.arange(start, start + m), paths)
        create_index(store, out / f"index_{n}.faiss", model=model)
    # one query code, for `search --codes`
    with StoreWriter(out / "query_codes.h5", BITS, fingerprint=fingerprint) as writer:
        writer.append(bundle_code[None], np.arange(1), [str(query.resolve())])


def _query_code(out, model, fingerprint, query, codes) -> np.ndarray:
    """The query image's code under the model, via a throw-away one-row index."""
    tmp_store = out / "tmp_store.h5"
    with StoreWriter(tmp_store, BITS, fingerprint=fingerprint) as writer:
        writer.append(codes[:1], np.arange(1), ["x"])
    create_index(tmp_store, out / "tmp.faiss", model=model)
    code = Searcher(out / "tmp.faiss", model).encode_images([str(query)])[0]
    return code


if __name__ == "__main__":
    make(Path(sys.argv[1]), [int(n) for n in sys.argv[2:]])
