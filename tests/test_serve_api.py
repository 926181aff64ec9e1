"""The HTTP API of ``hashkit serve`` through a real uvicorn process on a free loopback port:
search by upload and by code (equal to ``hashkit search --codes``), range search, items,
info, health, metrics, the token, and every refusal a 4xx with a JSON error."""

from __future__ import annotations

import base64
import http.client
import io
import json
import os
import socket
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image
from serve_helpers import (
    HOST,
    Server,
    get_json,
    make_model,
    multipart,
    request,
    search_codes,
    search_images,
    write_block_images,
)

from hashkit.cli.main import _registered
from hashkit.codes import hamming_distances
from hashkit.store import read_store


def cli(*args):
    result = CliRunner().invoke(_registered(), [str(a) for a in args], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result


def unique_code_rows(store) -> list[int]:
    """Rows whose code no other row shares: a search for them has one item at distance 0."""
    _, first, counts = np.unique(store.codes, axis=0, return_index=True, return_counts=True)
    return sorted(int(r) for r in first[counts == 1])


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("serve")
    model = make_model(root / "model.pt", write_block_images(root / "images"))
    index = root / "index.faiss"
    cli("build-index", root / "images", index, "--model", model, "-q")
    store = read_store(root / "index.h5")
    assert len(unique_code_rows(store)) >= 10, "the test images should mostly get distinct codes"
    return root, index, store


@pytest.fixture(scope="module")
def server(data):
    root, index, _ = data
    with Server(index, "--batch-wait-ms", "2", "--reload-interval", "0") as s:
        yield s


def test_search_by_upload_returns_the_stored_image_itself_first_at_distance_0(data, server):
    _, _, store = data
    for row in unique_code_rows(store)[:3]:
        path = store.paths[row]
        with open(path, "rb") as f:
            status, body = search_images(server, [("query.png", f.read())], {"k": 5})
        assert status == 200, body
        hits = body["results"][0]["hits"]
        assert len(hits) == 5 and body["results"][0]["query"] == "query.png"
        assert hits[0] == {
            "rank": 1,
            "id": int(store.ids[row]),
            "distance": 0,
            "path": path,
            "label": os.path.basename(os.path.dirname(path)),
        }
        assert all(h["distance"] > 0 for h in hits[1:])


def test_search_of_several_uploads_answers_each_in_order(data, server):
    _, _, store = data
    rows = unique_code_rows(store)[:4]
    files = []
    for row in rows:
        with open(store.paths[row], "rb") as f:
            files.append((f"q{row}.png", f.read()))
    status, body = search_images(server, files, {"k": 1})
    assert status == 200, body
    assert [r["query"] for r in body["results"]] == [name for name, _ in files]
    assert [r["hits"][0]["id"] for r in body["results"]] == [int(store.ids[r]) for r in rows]


def test_search_by_code_equals_hashkit_search_codes(data, server):
    root, index, store = data
    out = cli("search", index, "--codes", root / "index.h5", "-k", "7", "--json", "--no-gpu")
    expected = [query["results"] for query in json.loads(out.stdout)]
    codes = [c.tobytes().hex() for c in store.codes]
    status, body = search_codes(server, {"codes": codes, "k": 7})
    assert status == 200, body
    got = [r["hits"] for r in body["results"]]
    assert len(got) == len(expected) == len(store.ids)
    for hits, want in zip(got, expected):
        assert [(h["id"], h["distance"], h["path"]) for h in hits] == [
            (w["id"], w["distance"], w["path"]) for w in want
        ]
    b64 = [base64.b64encode(c.tobytes()).decode() for c in store.codes]
    status, body64 = search_codes(server, {"codes": b64, "encoding": "base64", "k": 7})
    assert status == 200 and [r["hits"] for r in body64["results"]] == got


def test_radius_search_returns_every_item_within_the_radius_nearest_first(data, server):
    root, index, store = data
    radius = 12
    status, body = search_codes(
        server, {"codes": [store.codes[0].tobytes().hex()], "radius": radius}
    )
    assert status == 200, body
    d = hamming_distances(store.codes[:1], store.codes)[0]
    hits = body["results"][0]["hits"]
    assert sorted(h["id"] for h in hits) == sorted(int(i) for i in store.ids[d <= radius])
    assert [h["distance"] for h in hits] == sorted(int(x) for x in d[d <= radius])
    out = cli("search", index, store.paths[0], "--radius", radius, "--json", "--no-gpu")
    [query] = json.loads(out.stdout)
    cli_hits = query["results"]
    assert [(h["id"], h["distance"]) for h in cli_hits] == [(h["id"], h["distance"]) for h in hits]


def test_item_endpoints_give_path_label_code_thumbnail_and_similar_items(data, server):
    _, _, store = data
    row = unique_code_rows(store)[0]
    item_id = int(store.ids[row])
    status, item = get_json(server, f"/api/items/{item_id}")
    assert status == 200
    assert item == {
        "id": item_id,
        "path": store.paths[row],
        "label": os.path.basename(os.path.dirname(store.paths[row])),
        "code": store.codes[row].tobytes().hex(),
        "bits": 32,
    }
    status, headers, png = request(server, "GET", f"/api/items/{item_id}/image?size=16")
    assert status == 200 and headers["content-type"] == "image/png"
    thumb = Image.open(io.BytesIO(png))
    assert thumb.format == "PNG" and max(thumb.size) == 16
    status, similar = get_json(server, f"/api/items/{item_id}/similar?k=4")
    assert status == 200
    _, by_code = search_codes(server, {"codes": [item["code"]], "k": 4})
    assert similar["results"][0]["hits"] == by_code["results"][0]["hits"]
    assert similar["results"][0]["hits"][0]["id"] == item_id


def test_info_health_and_metrics(data, server):
    _, _, store = data
    status, info = get_json(server, "/api/info")
    assert status == 200
    assert info["index"]["count"] == len(store.ids) and info["index"]["bits"] == 32
    assert info["index"]["type"] == "flat" and info["range_search"] is True
    assert info["model"]["bits"] == 32 and info["batching"]["wait_ms"] == 2.0
    assert get_json(server, "/healthz") == (
        200,
        {"status": "ok", "index_count": len(store.ids), "index_version": 1},
    )
    request(server, "GET", "/api/items/999999")
    status, headers, text = request(server, "GET", "/metrics")
    text = text.decode()
    assert status == 200 and headers["content-type"].startswith("text/plain")
    assert f"hashkit_index_codes {float(len(store.ids))}" in text
    assert 'hashkit_http_requests_total{method="GET",route="/api/info",status="200"}' in text
    assert 'hashkit_http_errors_total{route="/api/items/{item_id}",status="404"}' in text
    assert 'hashkit_http_request_duration_seconds_bucket{le="0.001",route="/healthz"}' in text
    assert "hashkit_search_batch_queries_count" in text


def test_openapi_documents_the_search_bodies_with_examples(server):
    status, spec = get_json(server, "/openapi.json")
    assert status == 200
    body = spec["paths"]["/api/search"]["post"]["requestBody"]["content"]
    assert set(body) == {"application/json", "multipart/form-data"}
    assert body["application/json"]["examples"]["range"]["value"]["radius"] == 2
    assert "/api/items/{item_id}/image" in spec["paths"]


def test_the_page_and_its_static_files_are_served(server):
    status, headers, html = request(server, "GET", "/")
    assert status == 200 and b'<ol id="grid">' in html
    assert "default-src 'self'" in headers["content-security-policy"]
    for name in ("app.js", "style.css"):
        assert request(server, "GET", f"/static/{name}")[0] == 200


def _png(size=(8, 8), mode="RGB") -> bytes:
    out = io.BytesIO()
    Image.new(mode, size).save(out, format="PNG")
    return out.getvalue()


def _bomb_png() -> bytes:
    """A 5000 x 5000 PNG (25 Mpixels, over the default 16.8 M limit) of a few kilobytes."""
    out = io.BytesIO()
    Image.new("1", (5000, 5000)).save(out, format="PNG")
    return out.getvalue()


BAD_UPLOADS = [
    ("not an image", b"hello, world", 400),
    ("empty file", b"", 400),
    ("truncated PNG", _png((64, 64))[:60], 400),
    (
        "PostScript named .png",
        b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\nshowpage\n",
        400,
    ),
    ("decompression bomb", _bomb_png(), 413),
]


@pytest.mark.parametrize("what,data_bytes,status", BAD_UPLOADS, ids=[b[0] for b in BAD_UPLOADS])
def test_a_bad_upload_is_a_4xx_with_a_clear_json_error(server, what, data_bytes, status):
    got, body = search_images(server, [("upload.png", data_bytes)])
    assert got == status, body
    assert body["error"].startswith("upload.png: ") and "\n" not in body["error"]
    assert "BytesIO" not in body["error"]
    assert get_json(server, "/healthz")[0] == 200  # the worker survived


BAD_REQUESTS = [
    ("k = 0", {"codes": ["00000000"], "k": 0}, 422, "k:"),
    ("k over the limit", {"codes": ["00000000"], "k": 1001}, 422, "k:"),
    ("k and radius", {"codes": ["00000000"], "k": 3, "radius": 2}, 422, "not both"),
    ("radius over bits", {"codes": ["00000000"], "radius": 33}, 422, "radius"),
    ("negative radius", {"codes": ["00000000"], "radius": -1}, 422, "radius"),
    ("unknown field", {"codes": ["00000000"], "kk": 3}, 422, "kk"),
    ("no codes", {"codes": []}, 422, "codes"),
    ("bad hex", {"codes": ["zz"]}, 400, "not valid hex"),
    ("bad base64", {"codes": ["@@@@"], "encoding": "base64"}, 400, "not valid base64"),
    ("short code", {"codes": ["00"]}, 400, "has 1 bytes"),
    ("long code", {"codes": ["0000000000"]}, 400, "has 5 bytes"),
    ("unknown encoding", {"codes": ["00"], "encoding": "rot13"}, 422, "encoding"),
]


@pytest.mark.parametrize(
    "what,payload,status,words", BAD_REQUESTS, ids=[b[0] for b in BAD_REQUESTS]
)
def test_a_bad_code_search_is_a_4xx_with_a_clear_json_error(server, what, payload, status, words):
    got, body = search_codes(server, payload)
    assert got == status, body
    assert words in body["error"]


def test_malformed_bodies_and_media_types_are_4xx(server):
    status, _, body = request(
        server, "POST", "/api/search", b"{not json", {"Content-Type": "application/json"}
    )
    assert status == 422 and "error" in json.loads(body)
    status, _, body = request(server, "POST", "/api/search", b"x", {"Content-Type": "text/plain"})
    assert status == 415 and "multipart/form-data" in json.loads(body)["error"]
    body, content_type = multipart([], {"k": "3"})
    status, _, out = request(server, "POST", "/api/search", body, {"Content-Type": content_type})
    assert status == 400 and "no images" in json.loads(out)["error"]
    body, content_type = multipart([("a.png", _png())], {"k": "many"})
    status, _, out = request(server, "POST", "/api/search", body, {"Content-Type": content_type})
    assert status == 422 and json.loads(out)["error"].startswith("k:")
    status, _, out = request(
        server, "POST", "/api/search", b"--x\r\n", {"Content-Type": "multipart/form-data"}
    )
    assert 400 <= status < 500 and "error" in json.loads(out)


@pytest.mark.parametrize("n", [257, 258, 300])
def test_more_than_256_uploaded_images_is_413(server, n):
    status, body = search_images(server, [(f"{i}.png", _png()) for i in range(n)])
    assert status == 413 and "limit is 256" in body["error"], body


def test_an_unknown_similar_query_parameter_is_422(data, server):
    _, _, store = data
    item_id = int(store.ids[0])
    status, body = get_json(server, f"/api/items/{item_id}/similar?kk=3")
    assert status == 422 and body["error"].startswith("kk: "), body
    status, body = get_json(server, f"/api/items/{item_id}/similar?k=3&radius=2")
    assert status == 422 and "not both" in body["error"]
    status, body = get_json(server, f"/api/items/{item_id}/similar?k=3")
    assert status == 200 and len(body["results"][0]["hits"]) == 3


@pytest.mark.parametrize(
    "path,route", [("/static/app.js", "/static"), ("/docs", "/docs"), ("/openapi.json", None)]
)
def test_static_files_and_api_pages_are_counted_under_their_route_not_other(server, path, route):
    counted = 'hashkit_http_requests_total{method="GET",route="%s",status="200"}'
    before = metric(server, counted % (route or path)), metric(server, counted % "other")
    assert request(server, "GET", path)[0] == 200
    assert wait_for_metric(server, counted % (route or path), before[0] + 1) == before[0] + 1
    assert metric(server, counted % "other") == before[1]
    assert request(server, "GET", "/no/such/path")[0] == 404
    assert metric(server, 'hashkit_http_errors_total{route="other",status="404"}') >= 1


@pytest.mark.parametrize(
    "path",
    [
        "/api/items/999999",
        "/api/items/-1",
        "/api/items/abc",
        "/api/items/1.5/image",
        "/api/items/99999999999999999999999/image",
        "/api/items/../../../../etc/passwd",
        "/api/items/%2e%2e%2f%2e%2e%2fetc%2fpasswd/image",
        "/api/items/1%2F..%2F..%2F..%2Fetc%2Fpasswd/image",
        "/api/items//etc/passwd/image",
        "/api/items/0/image/../../../../etc/passwd",
        "/api/items/0/image?path=/etc/passwd&size=9999",
        "/static/../../../../etc/passwd",
        "/static/%2e%2e/%2e%2e/%2e%2e/%2e%2e/etc/passwd",
        "/static/..%2f..%2f..%2f..%2fetc%2fpasswd",
        "//etc/passwd",
    ],
)
def test_no_request_reads_a_file_outside_the_store(server, path):
    status, headers, body = request(server, "GET", path)
    assert 400 <= status < 500, (status, body[:200])
    assert b"root:" not in body
    assert json.loads(body)["error"]


def test_stored_images_that_became_symlinks_or_non_images_are_not_served(tmp_path):
    paths = write_block_images(tmp_path / "images", classes=1, per_class=4)
    model = make_model(tmp_path / "model.pt", paths)
    cli("build-index", tmp_path / "images", tmp_path / "index.faiss", "--model", model, "-q")
    ids = {p: i for i, p in enumerate(read_store(tmp_path / "index.h5").paths)}
    secret = tmp_path / "secret.txt"
    secret.write_text("root:x:0:0:top secret\n")
    outside = tmp_path / "outside.png"
    outside.write_bytes(_png((24, 24)))
    os.replace(paths[0], tmp_path / "moved.png")
    os.symlink(secret, paths[0])
    os.replace(paths[1], tmp_path / "moved1.png")
    os.symlink(outside, paths[1])
    paths[2].write_text("root:x:0:0:not an image any more\n")
    os.remove(paths[3])
    with Server(tmp_path / "index.faiss", "--reload-interval", "0") as s:
        for p in paths:
            status, _, body = request(s, "GET", f"/api/items/{ids[str(p)]}/image")
            assert status == 404, (p, status)
            assert b"root:" not in body and json.loads(body)["error"]


@pytest.fixture(scope="module")
def odd_files(tmp_path_factory):
    """A service whose stored images are a TIFF, a PPM, a PNG and one PNG that became a
    directory after indexing; yields the server and the item ids by file suffix."""
    root = tmp_path_factory.mktemp("odd")
    paths = write_block_images(root / "images", classes=1, per_class=4)
    for i, suffix in ((0, ".tif"), (1, ".ppm")):
        Image.open(paths[i]).save(paths[i].with_suffix(suffix))
        paths[i].unlink()
        paths[i] = paths[i].with_suffix(suffix)
    model = make_model(root / "model.pt", paths)
    cli("build-index", root / "images", root / "index.faiss", "--model", model, "-q")
    ids = {
        p: i for i, p in zip(read_store(root / "index.h5").ids, read_store(root / "index.h5").paths)
    }
    by_kind = {".tif": ids[str(paths[0])], ".ppm": ids[str(paths[1])], "dir": ids[str(paths[2])]}
    paths[2].unlink()
    paths[2].mkdir()
    with Server(root / "index.faiss", "--reload-interval", "0") as s:
        yield s, by_kind


@pytest.mark.parametrize("suffix", [".tif", ".ppm"])
def test_items_stored_as_tiff_or_ppm_have_png_thumbnails(odd_files, suffix):
    server, ids = odd_files
    status, headers, png = request(server, "GET", f"/api/items/{ids[suffix]}/image?size=16")
    assert status == 200 and headers["content-type"] == "image/png", png[:200]
    thumb = Image.open(io.BytesIO(png))
    assert thumb.format == "PNG" and thumb.size == (16, 16)


def test_a_stored_image_that_became_a_directory_is_404_and_leaks_no_file_descriptor(odd_files):
    server, ids = odd_files

    def open_fds() -> int:
        return len(os.listdir(f"/proc/{server.process.pid}/fd"))

    path = f"/api/items/{ids['dir']}/image"
    request(server, "GET", path)
    before = open_fds()
    answers = [request(server, "GET", path) for _ in range(40)]
    assert open_fds() < before + 5
    for status, _, body in answers:
        assert status == 404 and "not a regular file" in json.loads(body)["error"], body


@pytest.fixture(scope="module")
def strict_server(data):
    """The same index behind a token, a 50 KiB body limit and a 1 s body timeout."""
    _, index, _ = data
    args = ("--max-upload-mb", "0.05", "--body-timeout", "1", "--reload-interval", "0")
    with Server(index, *args, env={"HASHKIT_TOKEN": "s3cret"}) as s:
        yield s


AUTH = {"Authorization": "Bearer s3cret"}


def test_token_guards_the_api_and_metrics_but_not_health_or_the_page(strict_server):
    s = strict_server
    for path in ("/api/info", "/metrics", "/api/items/0"):
        status, headers, body = request(s, "GET", path)
        assert status == 401 and headers["www-authenticate"] == "Bearer", path
        assert "bearer token" in json.loads(body)["error"]
        assert request(s, "GET", path, headers={"Authorization": "Bearer nope"})[0] == 401
        assert request(s, "GET", path, headers={"Authorization": "s3cret"})[0] == 401
        assert request(s, "GET", path, headers=AUTH)[0] == 200
    assert search_codes(s, {"codes": ["00000000"]})[0] == 401
    assert search_codes(s, {"codes": ["00000000"]}, AUTH)[0] == 200
    assert request(s, "GET", "/healthz")[0] == 200
    assert request(s, "GET", "/")[0] == 200


def test_upload_and_query_count_limits_are_413(strict_server):
    s = strict_server
    big = os.urandom(80 * 1024)
    status, body = search_images(s, [("big.png", big)], headers=AUTH)
    assert status == 413 and "limit" in body["error"]
    body_bytes, content_type = multipart([("big.png", big)])

    def chunks():  # no Content-Length: the limit must hold while reading
        for i in range(0, len(body_bytes), 8192):
            yield body_bytes[i : i + 8192]

    status, _, out = request(
        s, "POST", "/api/search", chunks(), {"Content-Type": content_type, **AUTH}
    )
    assert status == 413 and "limit" in json.loads(out)["error"]
    status, body = search_codes(s, {"codes": ["00000000"] * 257}, AUTH)
    assert status == 413 and "257 queries" in body["error"]
    assert get_json(s, "/healthz")[0] == 200


@pytest.mark.parametrize("sent", [b"", b'{"codes": ["00'])
def test_a_body_that_stops_arriving_is_a_408_after_the_body_timeout(strict_server, sent):
    head = "Authorization: Bearer s3cret\r\nContent-Type: application/json\r\n"
    start = time.monotonic()
    with send_partial_request(strict_server, head + "Content-Length: 100\r\n", sent) as conn:
        conn.settimeout(20)
        answer = http.client.HTTPResponse(conn)
        answer.begin()
        body = answer.read()
    assert answer.status == 408, body
    assert "timeout" in json.loads(body)["error"] and time.monotonic() - start < 15
    assert get_json(strict_server, "/healthz")[0] == 200


def test_code_only_service_on_an_hnsw_12_bit_index(tmp_path):
    """No model: image queries are refused; hnsw has no range search; 12-bit codes must keep
    their 4 padding bits zero."""
    from hashkit.codes import pack_codes
    from hashkit.store import CodeStore, write_store

    rng = np.random.default_rng(0)
    codes = pack_codes(rng.integers(0, 2, (200, 12)))
    write_store(tmp_path / "codes.h5", CodeStore(codes, np.arange(200, dtype=np.int64), 12))
    cli("build-index", tmp_path / "codes.h5", tmp_path / "hnsw.faiss", "--type", "hnsw")
    with Server(tmp_path / "hnsw.faiss", "--reload-interval", "0") as s:
        status, body = search_images(s, [("a.png", _png())])
        assert status == 400 and "--model" in body["error"]
        status, body = search_codes(s, {"codes": [codes[5].tobytes().hex()], "radius": 1})
        assert status == 400 and "range search" in body["error"] and "hnsw" in body["error"]
        dirty = codes[5].copy()
        dirty[1] |= ~pack_codes(np.ones((1, 12)))[0, 1]
        status, body = search_codes(s, {"codes": [dirty.tobytes().hex()]})
        assert status == 400 and "padding bits" in body["error"]
        status, body = search_codes(s, {"codes": [codes[5].tobytes().hex()], "k": 3})
        assert status == 200 and body["results"][0]["hits"][0]["distance"] == 0
        status, body = search_codes(
            s, {"codes": [codes[5].tobytes().hex()], "k": 3, "ef_search": 200}
        )
        assert status == 200 and body["results"][0]["hits"][0]["distance"] == 0


@pytest.mark.parametrize(
    "breakage,words",
    [
        ("garbage index", "index"),
        ("missing store", "code store not found"),
        ("garbage sidecar", "index.faiss.json"),
        ("missing model", "model not found"),
    ],
)
def test_a_broken_index_store_or_model_at_start_is_one_error_line_and_exit_1(
    tmp_path, breakage, words
):
    model = make_model(tmp_path / "model.pt")
    write_block_images(tmp_path / "images", classes=1, per_class=3)
    index = tmp_path / "index.faiss"
    cli("build-index", tmp_path / "images", index, "--model", model, "-q")
    if breakage == "garbage index":
        index.write_bytes(b"this is not a faiss index")
    elif breakage == "missing store":
        (tmp_path / "index.h5").unlink()
    elif breakage == "garbage sidecar":
        (tmp_path / "index.faiss.json").write_text("{not json")
    else:
        model.unlink()
    result = CliRunner().invoke(_registered(), ["serve", str(index), "--port", "0"])
    assert result.exit_code == 1, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("hashkit: error: "), result.stderr
    assert words in lines[0] and "Traceback" not in result.output


def metric(server, sample: str) -> float:
    """The value of one sample (name and labels as exposed) in /metrics, 0 when absent."""
    text = request(server, "GET", "/metrics")[2].decode()
    for line in text.splitlines():
        if line.startswith(sample + " "):
            return float(line.split()[-1])
    return 0.0


def wait_for_metric(server, sample: str, at_least: float, timeout_s: float = 30) -> float:
    """The sample's value once it reaches ``at_least`` (a request is counted just after its
    answer is sent, so right after the answer it may not be yet), or its value at the timeout."""
    deadline = time.monotonic() + timeout_s
    while (value := metric(server, sample)) < at_least and time.monotonic() < deadline:
        time.sleep(0.05)
    return value


def send_partial_request(server, head: str, body: bytes = b"") -> socket.socket:
    """A connection that has sent the request line, ``head`` headers and ``body``."""
    conn = socket.create_connection((HOST, server.port), timeout=30)
    conn.sendall(f"POST /api/search HTTP/1.1\r\nHost: {HOST}\r\n{head}\r\n".encode() + body)
    return conn


def test_a_client_that_disconnects_mid_upload_is_a_499_not_a_server_error(server):
    search = 'hashkit_http_requests_total{method="POST",route="/api/search",status="%s"}'
    before = {status: metric(server, search % status) for status in (499, 500)}
    log_start = server.log.stat().st_size
    body, content_type = multipart([("a.png", _png((64, 64)))])
    head = f"Content-Type: {content_type}\r\nContent-Length: {len(body) + 100000}\r\n"
    with send_partial_request(server, head, body[: len(body) // 2]):
        time.sleep(0.3)
    assert wait_for_metric(server, search % 499, before[499] + 1) == before[499] + 1
    assert metric(server, search % 500) == before[500]
    with open(server.log, "rb") as f:
        f.seek(log_start)
        logged = f.read().decode()
    assert "Traceback" not in logged and len(logged.splitlines()) <= 1, logged


@pytest.fixture(scope="module")
def ivf_server(data):
    """An IVF index of 4 lists over the same store; a 200 ms batch window, so that requests
    sent together share a batch."""
    root, _, _ = data
    cli("build-index", root / "index.h5", root / "ivf.faiss", "--type", "ivf", "--nlist", "4")
    with Server(root / "ivf.faiss", "--batch-wait-ms", "200", "--reload-interval", "0") as s:
        yield s


def test_an_nprobe_over_nlist_is_422_and_its_batch_mates_are_answered(data, ivf_server):
    _, _, store = data
    code = store.codes[0].tobytes().hex()
    payloads = [{"codes": [code], "nprobe": 99999999999999999999}] + [{"codes": [code]}] * 3
    with ThreadPoolExecutor(len(payloads)) as pool:
        answers = list(pool.map(lambda p: search_codes(ivf_server, p), payloads))
    assert [status for status, _ in answers] == [422, 200, 200, 200], answers
    assert answers[0][1]["error"].startswith("nprobe: ") and "4 lists" in answers[0][1]["error"]
    assert search_codes(ivf_server, {"codes": [code], "nprobe": 5})[0] == 422
    assert search_codes(ivf_server, {"codes": [code], "nprobe": 4})[0] == 200
    item_id = int(store.ids[0])
    status, body = get_json(ivf_server, f"/api/items/{item_id}/similar?nprobe={10**20}")
    assert status == 422 and body["error"].startswith("nprobe: ")
    assert get_json(ivf_server, f"/api/items/{item_id}/similar?nprobe=4")[0] == 200


@pytest.fixture(scope="module")
def hnsw_server(data):
    root, _, _ = data
    cli("build-index", root / "index.h5", root / "hnsw.faiss", "--type", "hnsw")
    with Server(root / "hnsw.faiss", "--reload-interval", "0") as s:
        yield s


@pytest.mark.parametrize("ef_search", [10001, 100000000, 2147483648])
def test_an_ef_search_over_the_cap_is_422(data, hnsw_server, ef_search):
    _, _, store = data
    code = store.codes[0].tobytes().hex()
    status, body = search_codes(hnsw_server, {"codes": [code], "ef_search": ef_search})
    assert status == 422 and body["error"].startswith("ef_search: "), body
    item_id = int(store.ids[0])
    status, body = get_json(hnsw_server, f"/api/items/{item_id}/similar?ef_search={ef_search}")
    assert status == 422 and body["error"].startswith("ef_search: "), body
    status, body = search_codes(hnsw_server, {"codes": [code], "ef_search": 10000, "k": 3})
    assert status == 200 and body["results"][0]["hits"][0]["distance"] == 0


def test_nflip_that_would_probe_too_many_hash_keys_is_refused(tmp_path):
    from hashkit.codes import pack_codes
    from hashkit.serve.app import _search_params
    from hashkit.serve.errors import Unprocessable
    from hashkit.serve.schemas import SearchOptions
    from hashkit.serve.snapshot import refresh_snapshot
    from hashkit.store import CodeStore, write_store

    codes = pack_codes(np.random.default_rng(0).integers(0, 2, (300, 32)))
    write_store(tmp_path / "codes.h5", CodeStore(codes, np.arange(300, dtype=np.int64), 32))
    cli("build-index", tmp_path / "codes.h5", tmp_path / "mh.faiss", "--type", "multihash",
        "--nhash", "1", "--hash-bits", "24")  # fmt: skip
    snapshot = refresh_snapshot(None, tmp_path / "mh.faiss")
    assert _search_params(SearchOptions(nflip=5), snapshot).nflip == 5  # 55,455 keys
    for nflip in (6, 25):  # 190,051 keys; more flips than hash bits
        with pytest.raises(Unprocessable, match="too many probes"):
            _search_params(SearchOptions(nflip=nflip), snapshot)


def test_a_port_in_use_is_one_error_line_and_exit_1(data):
    import socket

    _, index, _ = data
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = CliRunner().invoke(_registered(), ["serve", str(index), "--port", str(port)])
    assert result.exit_code == 1
    assert result.stderr.strip() == f"hashkit: error: cannot listen on 127.0.0.1:{port}: " + (
        "Address already in use"
    )
