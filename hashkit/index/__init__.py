"""FAISS binary indexes over packed codes, the JSON sidecar that ties an index to its code
store and model, and incremental adds.

An index file is plain FAISS (``faiss.read_index_binary`` reads it); its ids are the code
store's ``ids``. One concept per module:

- :mod:`hashkit.index.build`: index types, the factory string, building, search parameters;
- :mod:`hashkit.index.sidecar`: the ``out.faiss.json`` sidecar, ``read_index``/``write_index``;
- :mod:`hashkit.index.compat`: bits/fingerprint checks and index-vs-store alignment;
- :mod:`hashkit.index.gpu`: GpuIndexBinaryFlat with the store's ids;
- :mod:`hashkit.index.describe`: what ``hashkit info`` shows;
- :mod:`hashkit.index.append`: atomic incremental adds (``hashkit add``).
"""

from hashkit.index.append import (
    AddReport,
    IndexAppender,
    add_images,
    append_code_batches,
)
from hashkit.index.build import (
    INDEX_TYPES,
    RANGE_SEARCH_TYPES,
    build_index,
    default_hash_bits,
    default_nlist,
    index_description,
    index_ids,
    index_params,
    index_type_of,
    range_search,
    search,
    set_search_params,
)
from hashkit.index.compat import Alignment, check_alignment, check_compatible
from hashkit.index.describe import describe_index
from hashkit.index.gpu import (
    GPU_MAX_K,
    DeviceFlatIndex,
    flat_codes,
    gpu_count,
    search_index_for,
    to_gpu,
)
from hashkit.index.sidecar import (
    SIDECAR_FORMAT,
    IndexInfo,
    prepare_index_files,
    read_index,
    sidecar_path,
    write_index,
)

__all__ = [
    "GPU_MAX_K",
    "INDEX_TYPES",
    "RANGE_SEARCH_TYPES",
    "SIDECAR_FORMAT",
    "AddReport",
    "Alignment",
    "DeviceFlatIndex",
    "IndexAppender",
    "IndexInfo",
    "add_images",
    "append_code_batches",
    "build_index",
    "check_alignment",
    "check_compatible",
    "default_hash_bits",
    "default_nlist",
    "describe_index",
    "flat_codes",
    "gpu_count",
    "index_description",
    "index_ids",
    "index_params",
    "index_type_of",
    "prepare_index_files",
    "range_search",
    "read_index",
    "search",
    "search_index_for",
    "set_search_params",
    "sidecar_path",
    "to_gpu",
    "write_index",
]
