"""The HTTP layer: a FastAPI application over a :class:`~hashkit.serve.service.Service`.

Routes: ``POST /api/search``, ``GET /api/items/{id}`` (``/image``, ``/similar``),
``GET /api/info``, ``GET /healthz``, ``GET /metrics``, the web page at ``/`` and the OpenAPI
page at ``/docs``. With a token, ``/api`` and ``/metrics`` require ``Authorization: Bearer``.
Every refusal is a 4xx with ``{"error": "<one line>"}``.
"""

from __future__ import annotations

import asyncio
import logging
import math
import secrets
import time
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import APIRouter, Depends, FastAPI, Query, Request
from fastapi import Path as PathParam
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from fastapi.staticfiles import StaticFiles
from pydantic import ValidationError
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

from hashkit import __version__
from hashkit.errors import HashkitError
from hashkit.index import RANGE_SEARCH_TYPES, index_params
from hashkit.serve.batching import Answer, Job, SearchParams
from hashkit.serve.errors import (
    NotFound,
    PayloadTooLarge,
    RequestError,
    RequestTimeout,
    Unauthorized,
    Unprocessable,
    UnsupportedMediaType,
)
from hashkit.serve.monitoring import MetricsMiddleware
from hashkit.serve.queries import decode_codes
from hashkit.serve.schemas import (
    MAX_EF_SEARCH,
    MAX_K,
    CodeSearch,
    ErrorBody,
    Item,
    SearchOptions,
    SearchResponse,
)
from hashkit.serve.service import Service
from hashkit.serve.snapshot import Snapshot

log = logging.getLogger("hashkit.serve")

STATIC_DIR = Path(__file__).parent / "static"
# nginx's status for a client that closed the connection before its answer: never sent, only
# counted, so that a client going away is neither a server error nor a silent success.
CLIENT_CLOSED_REQUEST = 499
MAX_ID = 2**63 - 1
# Multi-hash probes every key within nflip flips of each hash: sum of C(hash_bits, i), i <= nflip.
MAX_NFLIP_PROBES = 1 << 16
# The page's own scripts and styles only; thumbnails are same-origin or blob: URLs.
PAGE_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' blob: data:",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}

_ERRORS = {
    status: {"model": ErrorBody, "description": text}
    for status, text in (
        (400, "Bad request: unreadable image or code, wrong parameter for the index"),
        (401, "Missing or wrong bearer token"),
        (404, "No such item, or it has no image"),
        (413, "Upload, image or query count over the service's limits"),
        (415, "Body is neither JSON (codes) nor multipart/form-data (images)"),
        (422, "A value out of range or an unknown field"),
    )
}
_FORM_SCHEMA = {
    "type": "object",
    "required": ["images"],
    "properties": {
        "images": {
            "type": "array",
            "items": {"type": "string", "format": "binary"},
            "description": "One or more image files (PNG, JPEG, BMP, WebP, GIF).",
        },
        **{
            name: {"type": "integer", "description": field.description}
            for name, field in SearchOptions.model_fields.items()
        },
    },
}
_SEARCH_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {"schema": _FORM_SCHEMA},
            "application/json": {
                "schema": CodeSearch.model_json_schema(),
                "examples": {
                    "hex": {"summary": "k nearest", "value": {"codes": ["0f3a91c4"], "k": 5}},
                    "range": {
                        "summary": "within Hamming radius 2",
                        "value": {"codes": ["DzqRxA=="], "encoding": "base64", "radius": 2},
                    },
                },
            },
        },
    }
}


def create_app(service: Service) -> FastAPI:
    """The ASGI application; its lifespan starts and stops the service's threads."""
    settings = service.settings

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        service.start()
        try:
            yield
        finally:
            service.stop()

    app = FastAPI(
        title="hashkit",
        version=__version__,
        summary="Search binary image codes (SDSH) in a FAISS index by image or by code.",
        lifespan=lifespan,
    )
    app.add_middleware(MetricsMiddleware, metrics=service.metrics)
    _add_error_handlers(app)

    bearer = HTTPBearer(auto_error=False, description="The token given to `hashkit serve`.")

    def require_token(
        credentials: HTTPAuthorizationCredentials | None = Depends(bearer),  # noqa: B008
    ) -> None:
        given = b"" if credentials is None else credentials.credentials.encode()
        if not secrets.compare_digest(given, settings.token.encode()):
            raise Unauthorized("missing or wrong bearer token (Authorization: Bearer TOKEN)")

    guarded = [Depends(require_token)] if settings.token is not None else []
    api = APIRouter(prefix="/api", dependencies=guarded, responses=_ERRORS)

    @api.post(
        "/search",
        response_model=SearchResponse,
        openapi_extra=_SEARCH_BODY,
        summary="Search by uploaded images (multipart) or by packed codes (JSON)",
    )
    async def search(request: Request) -> JSONResponse:
        """Per query, the `k` nearest items (default 10) or, with `radius`, every item within
        that Hamming distance. Images go in the multipart field `images` (one or more files)
        with the options as form fields; codes go in a JSON body."""
        start = time.perf_counter()
        body = _limited(request, settings.max_upload_bytes, settings.body_timeout_s)
        media = request.headers.get("content-type", "").split(";")[0].strip().lower()
        snapshot = service.snapshot
        if media == "application/json":
            try:
                req = CodeSearch.model_validate_json(await body.body())
            except ValidationError as exc:
                raise Unprocessable(_validation_message(exc.errors())) from None
            _check_query_count(len(req.codes), settings.max_queries)
            codes = decode_codes(req.codes, req.encoding, snapshot.bits)
            job = Job(_search_params(req, snapshot), codes=codes)
            names, kind = req.codes, "code"
        elif media == "multipart/form-data":
            names, images, options = await _read_form(body, settings.max_queries)
            job = Job(_search_params(options, snapshot), images=images)
            kind = "image"
        else:
            raise UnsupportedMediaType(
                "send application/json with packed codes, or multipart/form-data with images"
            )
        answer = await _run(service, job)
        service.metrics.queries.labels(kind).inc(len(names))
        return _search_response(answer, names, start)

    @api.get("/items/{item_id}", response_model=Item, summary="An item's path, class and code")
    async def item(item_id: int = PathParam(..., ge=0, le=MAX_ID)) -> dict:  # noqa: B008
        snapshot, row = _item_row(service, item_id)
        return {
            "id": item_id,
            "path": snapshot.paths[row],
            "label": snapshot.label_of(row),
            "code": snapshot.codes[row].tobytes().hex(),
            "bits": snapshot.bits,
        }

    @api.get(
        "/items/{item_id}/image",
        response_class=Response,
        responses={200: {"content": {"image/png": {}}, "description": "A PNG thumbnail"}},
        summary="A thumbnail of the item's stored image (by id only)",
    )
    def item_image(
        item_id: int = PathParam(..., ge=0, le=MAX_ID),  # noqa: B008
        size: int = Query(160, ge=16, le=512, description="Longest side in pixels."),  # noqa: B008
    ) -> Response:
        from hashkit.serve.thumbnails import thumbnail_png

        snapshot, row = _item_row(service, item_id)
        png = thumbnail_png(
            snapshot.paths[row],
            size,
            max_pixels=settings.max_pixels,
            max_bytes=settings.max_upload_bytes,
            what=f"item {item_id}",
        )
        return Response(
            png, media_type="image/png", headers={"Cache-Control": "private, max-age=300"}
        )

    @api.get(
        "/items/{item_id}/similar",
        response_model=SearchResponse,
        summary="Search with a stored item's code",
    )
    async def similar(
        item_id: int = PathParam(..., ge=0, le=MAX_ID),  # noqa: B008
        options: SearchOptions = Query(),  # noqa: B008 - the same options as a search, typos refused
    ) -> JSONResponse:
        start = time.perf_counter()
        snapshot, row = _item_row(service, item_id)
        job = Job(
            _search_params(options, snapshot),
            codes=snapshot.codes[row : row + 1],
            item_ids=[item_id],
        )
        answer = await _run(service, job)
        service.metrics.queries.labels("code").inc()
        return _search_response(answer, [f"item {item_id}"], start)

    @api.get("/info", summary="The index (as `hashkit info` shows it), model and limits")
    async def info() -> dict:
        snapshot = service.snapshot
        encoder = service.encoder
        return {
            "index": snapshot.describe(),
            "model": None
            if encoder is None
            else {
                "path": str(encoder.bundle.path),
                "bits": encoder.bundle.bits,
                "network": encoder.bundle.network.to_dict(),
                "model_fingerprint": encoder.bundle.fingerprint,
                "device": str(encoder.device),
            },
            "class_names": snapshot.class_names,
            "range_search": snapshot.searcher.info.type in RANGE_SEARCH_TYPES,
            "limits": {
                "max_upload_bytes": settings.max_upload_bytes,
                "max_pixels": settings.max_pixels,
                "max_queries": settings.max_queries,
                "max_k": MAX_K,
                "max_ef_search": MAX_EF_SEARCH,
                "max_range_hits": settings.max_range_hits,
                "body_timeout_s": settings.body_timeout_s,
            },
            "batching": {"max_batch": settings.max_batch, "wait_ms": settings.batch_wait_ms},
            "reload_interval_s": settings.reload_interval_s,
            "token_required": settings.token is not None,
        }

    app.include_router(api)

    @app.get("/healthz", summary="Liveness: answers while the service runs")
    async def healthz() -> dict:
        snapshot = service.snapshot
        return {"status": "ok", "index_count": snapshot.count, "index_version": snapshot.version}

    @app.get(
        "/metrics",
        dependencies=guarded,
        response_class=Response,
        summary="Prometheus metrics (text format)",
    )
    async def metrics() -> Response:
        return Response(service.metrics.exposition(), media_type=service.metrics.content_type)

    @app.get("/", include_in_schema=False)
    async def page() -> FileResponse:
        return FileResponse(STATIC_DIR / "index.html", headers=PAGE_HEADERS)

    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    return app


def _add_error_handlers(app: FastAPI) -> None:
    def error(status: int, message: str, headers: dict | None = None) -> JSONResponse:
        return JSONResponse({"error": message}, status_code=status, headers=headers)

    @app.exception_handler(HashkitError)
    async def hashkit_error(request: Request, exc: HashkitError) -> JSONResponse:
        status = getattr(exc, "status", 400)
        headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
        return error(status, str(exc), headers)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        return error(422, _validation_message(exc.errors()))

    @app.exception_handler(ClientDisconnect)
    async def client_gone(request: Request, exc: ClientDisconnect) -> JSONResponse:
        log.info("client closed the connection during %s %s", request.method, request.url.path)
        return error(CLIENT_CLOSED_REQUEST, "client closed the request")

    @app.exception_handler(Exception)
    async def internal(request: Request, exc: Exception) -> JSONResponse:
        return error(500, f"internal error ({type(exc).__name__}); see the service's log")

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return error(exc.status_code, str(exc.detail), getattr(exc, "headers", None))


def _validation_message(errors) -> str:
    """Pydantic's errors as one line: ``k: Input should be ... ; radius: ...``."""
    parts = []
    for e in errors:
        loc = ".".join(str(x) for x in e.get("loc", ()) if x not in ("body", "query", "path"))
        parts.append(f"{loc}: {e.get('msg', 'invalid')}" if loc else str(e.get("msg", "invalid")))
    return "; ".join(parts) or "invalid request"


def _limited(request: Request, max_bytes: int, timeout_s: float) -> Request:
    """The request with a body reader that refuses more than ``max_bytes`` (413), whether or
    not the client declared a Content-Length, and a body that stalls for ``timeout_s`` seconds
    (408): uvicorn times out idle connections between requests, never a body that stops
    arriving."""
    declared = request.headers.get("content-length", "")
    too_large = f"request body over the limit of {max_bytes} bytes"
    if declared.isdigit() and int(declared) > max_bytes:
        raise PayloadTooLarge(too_large)
    received = 0

    async def receive():
        nonlocal received
        try:
            message = await asyncio.wait_for(request.receive(), timeout_s)
        except TimeoutError:
            raise RequestTimeout(
                f"request body timeout: no bytes for {timeout_s:g} s after {received} bytes"
            ) from None
        if message["type"] == "http.request":
            received += len(message.get("body", b""))
            if received > max_bytes:
                raise PayloadTooLarge(too_large)
        return message

    return Request(request.scope, receive)


def _check_query_count(n: int, limit: int) -> None:
    if n > limit:
        raise PayloadTooLarge(f"{n} queries in one request; the limit is {limit}")


async def _read_form(
    request: Request, max_queries: int
) -> tuple[list[str], list[tuple[str, bytes]], SearchOptions]:
    """The uploaded images ``(name, bytes)`` and the options of a multipart search form."""
    try:
        form = await request.form(max_files=max_queries, max_fields=16)
    except StarletteHTTPException as exc:
        # Starlette stops parsing at the first file over max_files with a 400; a request with
        # too many queries is a 413 whichever way they come (the JSON path counts codes).
        if str(exc.detail).startswith("Too many files"):
            raise PayloadTooLarge(
                f"more than {max_queries} images in one request; the limit is {max_queries}"
            ) from None
        raise
    try:
        files = form.getlist("images")
        if not all(isinstance(f, UploadFile) for f in files):
            raise Unprocessable("images: each must be a file upload")
        fields = {k: v for k, v in form.multi_items() if k != "images"}
        if any(not isinstance(v, str) for v in fields.values()):
            raise Unprocessable("only 'images' may hold files; the options are plain fields")
        try:
            options = SearchOptions.model_validate(fields)
        except ValidationError as exc:
            raise Unprocessable(_validation_message(exc.errors())) from None
        if not files:
            raise RequestError("no images: send one or more files in the form field 'images'")
        names = [f.filename or f"image {i}" for i, f in enumerate(files)]
        images = [(name, await f.read()) for name, f in zip(names, files)]
    finally:
        await form.close()
    return names, images, options


def _search_params(options: SearchOptions, snapshot: Snapshot) -> SearchParams:
    """SearchParams from the request's options, checked against the index (4xx otherwise)."""
    if options.k is not None and options.radius is not None:
        raise Unprocessable("give k or radius, not both")
    kind = snapshot.searcher.info.type
    if options.radius is not None:
        if kind not in RANGE_SEARCH_TYPES:
            raise RequestError(
                f"radius: range search needs a {', '.join(RANGE_SEARCH_TYPES)} index; "
                f"this index is {kind}"
            )
        if options.radius > snapshot.bits:
            raise Unprocessable(f"radius: at most the index's {snapshot.bits} bits")
    if options.nprobe is not None and kind == "ivf":
        nlist = int(index_params(snapshot.searcher.index)["nlist"])
        if options.nprobe > nlist:
            raise Unprocessable(f"nprobe: at most the index's {nlist} lists (its nlist)")
    if options.nflip is not None and kind == "multihash":
        hash_bits = int(index_params(snapshot.searcher.index)["hash_bits"])
        probes = sum(math.comb(hash_bits, i) for i in range(min(options.nflip, hash_bits) + 1))
        if options.nflip > hash_bits or probes > MAX_NFLIP_PROBES:
            raise Unprocessable(
                f"nflip: {options.nflip} flips of {hash_bits}-bit hash keys is too many probes"
            )
    return SearchParams(
        k=options.k or 10,
        radius=options.radius,
        nprobe=options.nprobe,
        ef_search=options.ef_search,
        nflip=options.nflip,
    )


def _item_row(service: Service, item_id: int) -> tuple[Snapshot, int]:
    snapshot = service.snapshot
    row = snapshot.row_of(item_id)
    if row is None:
        raise NotFound(f"no item with id {item_id} in the index")
    return snapshot, row


async def _run(service: Service, job: Job) -> Answer:
    return await asyncio.wrap_future(service.batcher.submit(job))


def _search_response(answer: Answer, names: list[str], start: float) -> JSONResponse:
    return JSONResponse(
        {
            "results": [
                {"query": name, "hits": hits, "truncated": cut}
                for name, hits, cut in zip(names, answer.hits, answer.truncated)
            ],
            "took_ms": round(1000 * (time.perf_counter() - start), 3),
            "index_count": answer.snapshot.count,
            "index_version": answer.snapshot.version,
            "batch_queries": answer.batch_queries,
        }
    )
