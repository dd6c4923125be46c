"""The HTTP service, run for real: uvicorn on 127.0.0.1 (a free port, background thread: the ``serve`` fixture
of conftest.py), driven with httpx.

Uses the fixture models exported once per session by ``tests/test_onnx.py``.
"""

from __future__ import annotations

import concurrent.futures
import io
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("jax2onnx")
pytest.importorskip("onnxruntime")
pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")
httpx = pytest.importorskip("httpx")
from PIL import Image  # noqa: E402

from stylegan_jax.apis import watermark  # noqa: E402
from stylegan_jax.apis.inference import InferenceSession, payload_bits  # noqa: E402
from stylegan_jax.apis.server import create_app  # noqa: E402
from tests.conftest import LiveServer  # noqa: E402
from tests.test_onnx import exported_model  # noqa: E402

KEY = "test-server-key"
PAYLOAD = b"\x5a\xc3\x96"  # 24 bits
BITS = payload_bits(PAYLOAD)
TIMEOUT = httpx.Timeout(60.0)


@pytest.fixture(scope="module")
def t_session(tmp_path_factory) -> InferenceSession:
    # One onnxruntime thread per run: the burst test then really measures admission control, not core contention.
    return InferenceSession(exported_model(tmp_path_factory, "t").path, watermark_key=KEY, payload=PAYLOAD,
                            intra_op_threads=1)


@pytest.fixture(scope="module")
def server(serve, t_session) -> LiveServer:
    return serve(create_app(t_session, max_concurrency=2, max_queue=1))


@pytest.fixture(scope="module")
def cond_server(serve, tmp_path_factory) -> LiveServer:
    session = InferenceSession(exported_model(tmp_path_factory, "r").path, watermark_key=KEY, payload=PAYLOAD,
                               intra_op_threads=1)
    return serve(create_app(session, max_concurrency=1))


@pytest.fixture(scope="module")
def client(server) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=TIMEOUT) as c:
        yield c


def decode_png(response: httpx.Response) -> np.ndarray:
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "image/png"
    img = Image.open(io.BytesIO(response.content))
    assert img.format == "PNG" and img.mode == "RGB"
    return np.asarray(img)


def assert_marked(img: np.ndarray) -> None:
    det = watermark.detect(img, KEY, BITS.size)
    assert det.present and np.array_equal(det.bits, BITS), det.score


def assert_json_error(response: httpx.Response, status: int, needle: str) -> None:
    assert response.status_code == status, (response.status_code, response.text)
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert set(body) == {"error"} and needle in body["error"], body


# ---- happy paths ------------------------------------------------------------------------------------------------


def test_get_generate_returns_a_watermarked_png(client: httpx.Client, t_session: InferenceSession) -> None:
    r = client.get("/generate", params={"seed": 42, "psi": 0.7})
    img = decode_png(r)
    assert img.shape == (64, 64, 3) and r.headers["x-seed"] == "42" and r.headers["x-watermark-bits"] == "24"
    assert_marked(img)
    # Same seed, same picture; and it is exactly the session's output for the official seed latent (PNG is lossless).
    np.testing.assert_array_equal(decode_png(client.get("/generate", params={"seed": 42, "psi": 0.7})), img)
    np.testing.assert_array_equal(img, t_session.generate_seed(42, psi=0.7)[0])
    assert not np.array_equal(decode_png(client.get("/generate", params={"seed": 43, "psi": 0.7})), img)


def test_post_generate_returns_a_watermarked_png(client: httpx.Client, t_session: InferenceSession) -> None:
    z = np.random.RandomState(5).randn(64)
    img = decode_png(client.post("/generate", json={"z": z.tolist(), "psi": 0.5}))
    assert img.shape == (64, 64, 3)
    assert_marked(img)
    np.testing.assert_array_equal(img, t_session.generate(z[None], psi=0.5)[0])
    # A one-row nested list and a default psi (1) are accepted.
    assert decode_png(client.post("/generate", json={"z": [z.tolist()]})).shape == (64, 64, 3)


def test_conditional_model_takes_a_class(cond_server: LiveServer) -> None:
    with httpx.Client(base_url=cond_server.url, timeout=TIMEOUT) as c:
        img = decode_png(c.get("/generate", params={"seed": 1, "class": 3, "psi": 0.5}))
        assert img.shape == (64, 64, 3)
        assert_marked(img)
        z = np.random.RandomState(1).randn(64).tolist()
        post = decode_png(c.post("/generate", json={"z": z, "c": [0, 0, 0, 1, 0], "psi": 0.5}))
        np.testing.assert_array_equal(post, img)
        assert_json_error(c.get("/generate", params={"seed": 1}), 400,
                          "the model is conditional (c_dim=5): class=K with K in 0..4 is required")
        assert_json_error(c.get("/generate", params={"seed": 1, "class": 5}), 400, "class must be in [0, 4]")
        assert_json_error(c.post("/generate", json={"z": z}), 400, "conditional")
        assert_json_error(c.post("/generate", json={"z": z, "c": [1, 0]}), 400, "c must have 5 numbers")
        assert c.get("/info").json()["c_dim"] == 5


def test_healthz_and_info(client: httpx.Client) -> None:
    h = client.get("/healthz")
    assert h.status_code == 200 and h.json()["status"] == "ok"
    info = client.get("/info").json()
    assert (info["z_dim"], info["c_dim"], info["img_resolution"], info["num_ws"]) == (64, 0, 64, 16)
    assert info["metadata"]["generator_config"]["class"] == "stylegan3.Generator"
    assert info["limits"]["max_concurrency"] == 2 and info["psi_range"] == [-1.0, 2.0]
    assert KEY not in client.get("/info").text


# ---- bad input ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("params, needle", [
    ({}, "seed is required"),
    ({"seed": "abc"}, "seed must be an integer"),
    ({"seed": -1}, "seed must be in"),
    ({"seed": 2**32}, "seed must be in"),
    ({"seed": 1, "psi": "x"}, "psi must be a number"),
    ({"seed": 1, "psi": 3}, "psi must be in"),
    ({"seed": 1, "psi": "nan"}, "psi must be in"),
    ({"seed": 1, "psi": "inf"}, "psi must be in"),
    ({"seed": 1, "class": 0}, "unconditional"),
    ({"seed": 1, "foo": 1}, "unknown query parameter"),
])
def test_bad_get_parameters_give_400(client: httpx.Client, params: dict, needle: str) -> None:
    assert_json_error(client.get("/generate", params=params), 400, needle)


Z = [0.0] * 64


@pytest.mark.parametrize("body, needle", [
    (b"not json", "not valid JSON"),
    (b"[1, 2]", "JSON object"),
    (b"{}", "z is required"),
    (b'{"z": [1, 2, 3]}', "z must have 64 numbers"),
    (b'{"z": "abc"}', "z must be a list"),
    (b'{"z": [' + b",".join([b'"a"'] * 64) + b"]}", "only numbers"),
    (b'{"z": [' + b",".join([b"1e39"] * 64) + b"]}", "out-of-range"),
    (b'{"z": [' + b",".join([b"NaN"] * 64) + b"]}", "non-finite"),
    (b'{"z": [' + b",".join([b"0"] * 64) + b'], "psi": 5}', "psi must be in"),
    (b'{"z": [' + b",".join([b"0"] * 64) + b'], "psi": "0.5x"}', "psi must be a number"),
    (b'{"z": [' + b",".join([b"0"] * 64) + b'], "psi": null}', "psi must be a number"),
    (b'{"z": [' + b",".join([b"0"] * 64) + b'], "c": [1]}', "unconditional"),
    (b'{"z": [' + b",".join([b"0"] * 64) + b'], "seed": 1}', "unknown field"),
])
def test_bad_post_bodies_give_400(client: httpx.Client, body: bytes, needle: str) -> None:
    r = client.post("/generate", content=body, headers={"content-type": "application/json"})
    assert_json_error(r, 400, needle)


def test_oversized_body_unknown_route_and_method(client: httpx.Client) -> None:
    assert_json_error(client.post("/generate", content=b"[" + b"0," * 40000 + b"0]"), 413, "over")
    assert_json_error(client.get("/nope"), 404, "Not Found")
    assert_json_error(client.delete("/generate"), 405, "Method Not Allowed")


# ---- bounded concurrency --------------------------------------------------------------------------------------------


def burst(url: str, n: int) -> list[httpx.Response]:
    """``n`` simultaneous GET /generate requests (one client each), all awaited with a hard timeout."""

    def one(i: int) -> httpx.Response:
        with httpx.Client(base_url=url, timeout=TIMEOUT) as c:
            return c.get("/generate", params={"seed": 1000 + i, "psi": 0.7})

    with concurrent.futures.ThreadPoolExecutor(max_workers=n) as pool:
        return list(pool.map(one, range(n), timeout=120))


def check_burst_responses(responses: list[httpx.Response]) -> list[int]:
    codes = [r.status_code for r in responses]
    assert set(codes) <= {200, 503}, codes
    for r in responses:
        if r.status_code == 503:
            assert_json_error(r, 503, "busy")
            assert r.headers["retry-after"] == "1"
        else:
            assert_marked(decode_png(r))
    return codes


def test_burst_is_fully_answered(client: httpx.Client, server: LiveServer) -> None:
    """16 simultaneous requests against 2 slots + 1 queue place: every request is answered (200 or a JSON 503 with
    Retry-After), none hangs, and the server is idle and still serving afterwards."""
    t0 = time.monotonic()
    codes = check_burst_responses(burst(server.url, 16))
    assert codes.count(200) >= 1 and time.monotonic() - t0 < 60, codes
    health = client.get("/healthz").json()
    assert health["in_flight"] == 0 and health["rejected"] >= codes.count(503)
    assert client.get("/generate", params={"seed": 1}).status_code == 200


class Gated:
    """The real session, except that generation waits for ``release``: makes admission deterministic to test."""

    def __init__(self, session: InferenceSession) -> None:
        self.session = session
        self.release = threading.Event()

    def __getattr__(self, name):
        return getattr(self.session, name)

    def generate(self, *args, **kwargs):
        assert self.release.wait(60)
        return self.session.generate(*args, **kwargs)


def wait_for(client: httpx.Client, condition, timeout: float = 20) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        health = client.get("/healthz").json()
        if condition(health):
            return health
        assert time.monotonic() < deadline, health
        time.sleep(0.02)


def test_admission_is_exactly_slots_plus_queue(t_session: InferenceSession) -> None:
    """With generation held, 16 simultaneous requests against 2 slots + 1 queue place: exactly 3 are admitted,
    13 get 503 at once, /healthz keeps answering promptly; once released, the 3 admitted ones complete."""
    gated = Gated(t_session)
    with LiveServer(create_app(gated, max_concurrency=2, max_queue=1)) as s, \
            httpx.Client(base_url=s.url, timeout=TIMEOUT) as c, \
            concurrent.futures.ThreadPoolExecutor(1) as pool:
        pending = pool.submit(burst, s.url, 16)
        health = wait_for(c, lambda h: h["rejected"] == 13 and h["in_flight"] == 3)
        assert health["running"] == 2  # the third waits for a slot
        t0 = time.monotonic()
        assert c.get("/healthz").status_code == 200 and time.monotonic() - t0 < 2
        assert_json_error(c.get("/generate", params={"seed": 2}), 503, "busy")
        gated.release.set()
        codes = check_burst_responses(pending.result(timeout=120))
        assert sorted(codes) == [200] * 3 + [503] * 13, codes
        assert wait_for(c, lambda h: h["in_flight"] == 0)["served"] == 3


# ---- command line ---------------------------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_serve_command(tmp_path_factory) -> None:
    model = exported_model(tmp_path_factory, "t").path
    port = _free_port()
    env = {**os.environ, "STYLEGAN_JAX_WATERMARK_KEY": KEY, "JAX_PLATFORMS": "cpu"}
    cmd = [sys.executable, "-m", "stylegan_jax.cli", "serve", "--model", str(model), "--port", str(port),
           "--max-concurrency", "1", "--watermark-payload", PAYLOAD.hex(), "--log-level", "warning"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            cwd=Path(__file__).parent.parent)
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, proc.stdout.read().decode()
            try:
                if httpx.get(f"{url}/healthz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "serve did not come up"
            time.sleep(0.2)
        assert_marked(decode_png(httpx.get(f"{url}/generate", params={"seed": 7}, timeout=TIMEOUT)))
    finally:
        proc.terminate()
        proc.wait(timeout=20)


def test_serve_command_reports_a_missing_model(tmp_path) -> None:
    from stylegan_jax.cli import main

    missing = tmp_path / "none.onnx"
    assert main(["serve", "--model", str(missing), "--port", "1"]) == 2
