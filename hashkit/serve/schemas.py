"""Request and response bodies of the HTTP API, with the examples the OpenAPI page shows."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

MAX_K = 1000
# HNSW candidates per query: far beyond any useful recall (k is at most 1000), and small enough
# that one request cannot make FAISS allocate and walk a huge candidate heap.
MAX_EF_SEARCH = 10000

_K = "How many nearest items to return per query (default 10)."
_RADIUS = (
    "Instead of k: every item within this Hamming distance (inclusive), nearest first. "
    "Flat, IVF and multi-hash indexes."
)


class SearchOptions(BaseModel):
    """What to return and how hard to search; parameters that do not apply to the index's type
    are ignored. The multipart form's fields."""

    model_config = ConfigDict(extra="forbid")

    k: int | None = Field(None, ge=1, le=MAX_K, description=_K)
    radius: int | None = Field(None, ge=0, description=_RADIUS)
    nprobe: int | None = Field(
        None, ge=1, description="IVF: lists to visit (at most the index's nlist)."
    )
    ef_search: int | None = Field(
        None, ge=1, le=MAX_EF_SEARCH, description="HNSW: candidates to explore."
    )
    nflip: int | None = Field(None, ge=0, description="Multi-hash: bit flips to probe.")


class CodeSearch(SearchOptions):
    """Search with packed codes (clients that encode images themselves)."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {"codes": ["0f3a91c4"], "k": 5},
                {"codes": ["DzqRxA=="], "encoding": "base64", "radius": 2},
            ]
        },
    )

    codes: list[str] = Field(
        ...,
        min_length=1,
        description="Packed codes, ceil(bits/8) bytes each, in the index's bit order (as "
        "`hashkit encode` stores them), as hex or base64 text.",
    )
    encoding: Literal["hex", "base64"] = "hex"


class Hit(BaseModel):
    rank: int = Field(..., examples=[1])
    id: int = Field(..., description="The item's id in the code store.", examples=[4711])
    distance: int = Field(..., description="Hamming distance to the query.", examples=[0])
    path: str = Field(..., examples=["/data/images/database/Sneaker/04711.png"])
    label: str | None = Field(
        None,
        description="The item's class: its label in the code store, else its folder's name.",
        examples=["Sneaker"],
    )


class QueryResult(BaseModel):
    query: str = Field(..., description="The uploaded file's name, or the code as sent.")
    hits: list[Hit]
    truncated: bool = Field(
        False, description="A range search found more hits than the service returns."
    )


class SearchResponse(BaseModel):
    results: list[QueryResult]
    took_ms: float = Field(..., description="Time in the service, request to answer.")
    index_count: int = Field(..., description="Codes in the index that answered.")
    index_version: int = Field(..., description="Which snapshot answered (1 = the first).")
    batch_queries: int = Field(..., description="Queries searched in the same batch.")


class Item(BaseModel):
    id: int = Field(..., examples=[4711])
    path: str = Field(..., examples=["/data/images/database/Sneaker/04711.png"])
    label: str | None = Field(None, examples=["Sneaker"])
    code: str = Field(..., description="The packed code as hex.", examples=["0f3a91c4"])
    bits: int = Field(..., examples=[32])


class ErrorBody(BaseModel):
    error: str = Field(..., examples=["k: Input should be less than or equal to 1000"])
