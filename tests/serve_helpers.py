"""Helpers for the ``hashkit serve`` tests: a tiny model and image folder, a real service
process on a free 127.0.0.1 port, and a stdlib HTTP client (no extra test dependency)."""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from hashkit.bundle import Bundle, save_bundle
from hashkit.models import HashNet, NetworkConfig

HOST = "127.0.0.1"
START_TIMEOUT_S = 90


def make_model(path: Path, images=(), bits: int = 32, size: int = 24, seed: int = 0) -> Path:
    """A randomly initialised RGB model bundle whose outputs are centred on ``images`` (paths),
    so that different images get codes far apart, as a trained model would give them."""
    from hashkit.data.base import open_image
    from hashkit.encode import input_transform

    torch.manual_seed(seed)
    config = NetworkConfig(bits=bits, input_size=size, channels=3, mean=[0.5] * 3, std=[0.5] * 3)
    net = HashNet(config).eval()
    if images:
        transform = input_transform(config)
        with torch.no_grad():
            x = torch.stack([transform(open_image(str(p))) for p in images])
            net.net.head[-1].bias -= net.net(x).mean(0)
    rotation = np.eye(bits, dtype=np.float32)
    save_bundle(Bundle(config, net.state_dict(), rotation), path)
    return path


def write_block_images(root: Path, classes: int = 3, per_class: int = 8, size: int = 24, seed=0):
    """``root/class<c>/<i>.png``: each image random 4 x 4 colour blocks on its class's tint, so
    that images differ a lot and a random network gives them different codes."""
    rng = np.random.default_rng(seed)
    paths = []
    for c in range(classes):
        folder = root / f"class{c}"
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            blocks = rng.integers(0, 256, (4, 4, 3))
            blocks[..., c % 3] = np.maximum(blocks[..., c % 3], 160)
            image = np.kron(blocks, np.ones((size // 4, size // 4, 1))).astype(np.uint8)
            path = folder / f"{i:03d}.png"
            Image.fromarray(image).save(path)
            paths.append(path)
    return paths


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def hashkit_command(*args) -> list[str]:
    return [sys.executable, "-m", "hashkit.cli.main", *[str(a) for a in args]]


class Server:
    """``hashkit serve INDEX ARGS...`` in a child process on a free loopback port."""

    def __init__(self, index: Path, *args, env: dict | None = None, log: Path | None = None):
        self.port = free_port()
        self.base = f"http://{HOST}:{self.port}"
        self.log = log or index.parent / f"serve-{self.port}.log"
        command = hashkit_command("serve", index, "--port", self.port, *args)
        self._log_file = open(self.log, "wb")  # noqa: SIM115 - closed in stop()
        self.process = subprocess.Popen(
            command,
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
            env={**os.environ, **(env or {})},
        )
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            if self.process.poll() is not None:
                self.stop()
                raise RuntimeError(f"hashkit serve exited: {self.log.read_text()}")
            with contextlib.suppress(OSError):
                if request(self, "GET", "/healthz", timeout=2)[0] == 200:
                    return
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"hashkit serve did not start: {self.log.read_text()}")
            time.sleep(0.2)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        self._log_file.close()

    def __enter__(self) -> Server:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def request(server: Server, method: str, path: str, body=None, headers=None, timeout=60):
    """``(status, headers dict (lower-case names), body bytes)``; dict bodies go as JSON."""
    headers = dict(headers or {})
    if isinstance(body, dict):
        body = json.dumps(body).encode()
        headers.setdefault("Content-Type", "application/json")
    conn = http.client.HTTPConnection(HOST, server.port, timeout=timeout)
    try:
        conn.request(method, path, body=body, headers=headers)
        response = conn.getresponse()
        return (
            response.status,
            {k.lower(): v for k, v in response.getheaders()},
            response.read(),
        )
    finally:
        conn.close()


def get_json(server: Server, path: str, headers=None):
    status, _, body = request(server, "GET", path, headers=headers)
    return status, json.loads(body)


def multipart(files: list[tuple[str, bytes]], fields: dict | None = None) -> tuple[bytes, str]:
    """A multipart/form-data body with ``files`` in the field ``images``; returns
    ``(body, content type)``."""
    boundary = uuid.uuid4().hex
    parts = []
    for name, value in (fields or {}).items():
        head = f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n'
        parts.append(f"{head}{value}\r\n".encode())
    for filename, data in files:
        parts.append(
            f'--{boundary}\r\nContent-Disposition: form-data; name="images"; '
            f'filename="{filename}"\r\nContent-Type: application/octet-stream\r\n\r\n'.encode()
            + data
            + b"\r\n"
        )
    parts.append(f"--{boundary}--\r\n".encode())
    return b"".join(parts), f"multipart/form-data; boundary={boundary}"


def search_images(server: Server, files, fields=None, headers=None):
    body, content_type = multipart(files, fields)
    status, _, payload = request(
        server, "POST", "/api/search", body, {"Content-Type": content_type, **(headers or {})}
    )
    return status, json.loads(payload)


def search_codes(server: Server, payload: dict, headers=None):
    status, _, body = request(server, "POST", "/api/search", payload, headers)
    return status, json.loads(body)
