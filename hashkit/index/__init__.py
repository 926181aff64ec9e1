"""FAISS binary indexes over packed codes, the JSON sidecar that ties an index to its code
store and model, and incremental adds.

An index file is plain FAISS (``faiss.read_index_binary`` reads it); its ids are the code
store's ``ids``. One concept per module:

- :mod:`hashkit.index.build`: index types, the factory string, building, search parameters;
- :mod:`hashkit.index.sidecar`: the ``out.faiss.json`` sidecar and ``read_index``;
- :mod:`hashkit.index.commit`: the writers' lock and commit journal (``write_index``), and
  consistent reads (``read_snapshot``);
- :mod:`hashkit.index.create`: ``build-index`` from a code store or an image folder;
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
    check_factory,
    check_nflip,
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
from hashkit.index.commit import (
    IndexSnapshot,
    commit_files,
    finish_interrupted_commit,
    index_model,
    journal_path,
    lock_index,
    read_snapshot,
    write_index,
)
from hashkit.index.compat import Alignment, check_alignment, check_compatible
from hashkit.index.create import BuildReport, create_index
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
    NotAnIndexError,
    load_sidecar,
    prepare_index_files,
    read_index,
    sidecar_path,
)

__all__ = [
    "GPU_MAX_K",
    "INDEX_TYPES",
    "RANGE_SEARCH_TYPES",
    "SIDECAR_FORMAT",
    "AddReport",
    "Alignment",
    "BuildReport",
    "DeviceFlatIndex",
    "IndexAppender",
    "IndexInfo",
    "IndexSnapshot",
    "NotAnIndexError",
    "add_images",
    "append_code_batches",
    "build_index",
    "check_alignment",
    "check_compatible",
    "check_factory",
    "check_nflip",
    "commit_files",
    "create_index",
    "default_hash_bits",
    "default_nlist",
    "describe_index",
    "finish_interrupted_commit",
    "flat_codes",
    "gpu_count",
    "index_description",
    "index_ids",
    "index_model",
    "index_params",
    "index_type_of",
    "journal_path",
    "load_sidecar",
    "lock_index",
    "prepare_index_files",
    "range_search",
    "read_index",
    "read_snapshot",
    "search",
    "search_index_for",
    "set_search_params",
    "sidecar_path",
    "to_gpu",
    "write_index",
]
