"""``hashkit serve``."""

from __future__ import annotations

import click

from hashkit.cli.options import FilePath, device_option

LOOPBACK = ("127.0.0.1", "localhost", "::1")


@click.command("serve")
@click.argument("index_path", metavar="INDEX", type=FilePath(exists=True, dir_okay=False))
@click.option(
    "--model",
    type=FilePath(exists=True, dir_okay=False),
    default=None,
    help="Model bundle for image queries  [default: the one the index was built with]",
)
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", type=click.IntRange(0, 65535), default=8000, show_default=True)
@click.option(
    "--token",
    envvar="HASHKIT_TOKEN",
    default=None,
    help="Require 'Authorization: Bearer TOKEN' on /api and /metrics  [env: HASHKIT_TOKEN]",
)
@click.option(
    "--batch-wait-ms",
    type=click.FloatRange(0, 1000),
    default=0.0,
    show_default=True,
    help="How long a batch waits for more queries after its first (0: it takes the queries "
    "that queued while the last batch ran).",
)
@click.option(
    "--max-batch",
    type=click.IntRange(1, 4096),
    default=64,
    show_default=True,
    help="Most queries encoded and searched together (1: no batching).",
)
@click.option(
    "--max-upload-mb",
    type=click.FloatRange(0, min_open=True),
    default=16.0,
    show_default=True,
    help="Largest request body (and stored image file) accepted.",
)
@click.option(
    "--max-pixels",
    type=click.IntRange(1),
    default=4096 * 4096,
    show_default=True,
    help="Largest image accepted, in pixels (decompression bombs).",
)
@click.option(
    "--body-timeout",
    type=click.FloatRange(0, min_open=True),
    default=30.0,
    show_default=True,
    help="Seconds a request body may stall (no bytes arriving) before a 408.",
)
@click.option(
    "--reload-interval",
    type=click.FloatRange(0),
    default=1.0,
    show_default=True,
    help="Seconds between checks for a changed index (0: never reload).",
)
@click.option(
    "--gpu/--no-gpu",
    default=None,
    help="Search a flat index with GpuIndexBinaryFlat  [default: when faiss sees a GPU]",
)
@device_option
@click.option("--access-log", is_flag=True, help="Log every request (uvicorn's access log).")
def serve_command(
    index_path, model, host, port, token, batch_wait_ms, max_batch, max_upload_mb, max_pixels,
    body_timeout, reload_interval, gpu, device, access_log,
):  # fmt: skip
    """Serve an index over HTTP: a JSON API, Prometheus metrics and a search page.

    Loads the index, its code store and its model once, batches queries that arrive
    together, and switches to the new index when `hashkit add` changes it. Open
    http://HOST:PORT/ for the page and /docs for the API. Needs `pip install hashkit[serve]`.

    \b
    Examples:
      hashkit serve out.faiss
      HASHKIT_TOKEN=s3cret hashkit serve out.faiss --host 0.0.0.0 --port 8080
      hashkit serve out.faiss --max-batch 1     # no batching
    """
    from pathlib import Path

    from hashkit.errors import HashkitError

    try:
        import uvicorn

        from hashkit.serve import ServeSettings, Service, create_app
    except ImportError as exc:
        raise HashkitError(
            f"hashkit serve needs its extra: pip install 'hashkit[serve]' ({exc})"
        ) from None
    settings = ServeSettings(
        index_path=Path(index_path),
        model_path=Path(model) if model else None,
        token=token or None,
        batch_wait_ms=batch_wait_ms,
        max_batch=max_batch,
        max_upload_bytes=int(max_upload_mb * 1024 * 1024),
        max_pixels=max_pixels,
        body_timeout_s=body_timeout,
        reload_interval_s=reload_interval,
        device=device,
        gpu=gpu,
    )
    listener = _listen(host, port)
    service = Service(settings)
    snapshot = service.snapshot
    if snapshot.searcher.alignment.warning():
        click.echo(f"hashkit: warning: {snapshot.searcher.alignment.warning()}", err=True)
    if host not in LOOPBACK and settings.token is None:
        click.echo(
            f"hashkit: warning: listening on {host} without --token: anyone who can reach "
            "this port can search the index and see its images",
            err=True,
        )
    if not service.has_model:
        click.echo("hashkit: warning: no model: searches by code only (pass --model)", err=True)
    url_host = f"[{host}]" if ":" in host else host
    click.echo(
        f"serving {index_path} ({snapshot.count} codes, {snapshot.bits} bits) on "
        f"http://{url_host}:{listener.getsockname()[1]}/",
        err=True,
    )
    config = uvicorn.Config(create_app(service), access_log=access_log, log_level="info")
    uvicorn.Server(config).run(sockets=[listener])


def _listen(host: str, port: int):
    """A socket bound to (host, port) before anything is loaded, so that a port in use is one
    clear error line at once (and --port 0 picks a free port)."""
    import socket

    from hashkit.errors import HashkitError

    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
        listener = socket.socket(family, kind, proto)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(address)
    except OSError as exc:
        raise HashkitError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    return listener
