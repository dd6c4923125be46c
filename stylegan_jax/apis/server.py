"""``stylegan-jax serve``: an HTTP service that generates watermarked PNGs from an exported ONNX generator.

Endpoints (all errors are JSON ``{"error": "..."}``)::

    GET  /generate?seed=S[&psi=P][&class=K]   PNG of the official seed convention (np.random.RandomState(S)
                                              .randn(1, z_dim)); class K for conditional models
    POST /generate  {"z": [...], "psi": P, "c": [...]}
                                              PNG for one latent (z_dim floats, or [[...]] with one row);
                                              "c" (c_dim numbers) for conditional models, "psi" optional
    GET  /healthz                             {"status": "ok", "in_flight": n, ...}
    GET  /info                                model metadata, psi range, watermark bit count, limits

FastAPI resolves the endpoints' ``Request`` annotation from this module's globals, hence the top-level
fastapi imports (``stylegan-jax`` imports this module only for ``serve``).

Status codes: 200 PNG; 400 bad parameters (message names the parameter); 404/405 unknown route/method;
413 body over 64 KiB; 503 when the server is at capacity (``Retry-After: 1``); 500 if the model produced
non-finite output (never for client input).

Every PNG carries the keyed provenance watermark (:mod:`stylegan_jax.apis.watermark`); there is no way to
ask for an unmarked image. Headers: ``X-Seed`` (GET), ``X-Psi``, ``X-Watermark-Bits``.

Concurrency: a generation runs in a worker thread (onnxruntime releases the GIL) so the event loop keeps
answering ``/healthz``. At most ``max_concurrency`` generations run at once and at most ``max_queue`` more
wait for a slot; a request beyond that is answered 503 at once instead of piling up (latency stays bounded
and memory cannot grow with the offered load). The default, ``max_queue = max_concurrency``, keeps the
slots busy between requests without letting waiting time exceed about one generation.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import logging
import math
import os
import sys
from typing import Any

import numpy as np
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from stylegan_jax.apis.inference import (
    DEFAULT_PAYLOAD,
    DEFAULT_WATERMARK_KEY,
    PSI_RANGE,
    SEED_MAX,
    InferenceError,
    InferenceInputError,
    InferenceSession,
    ModelLoadError,
)

__all__ = ["Limiter", "add_arguments", "add_watermark_arguments", "busy_response", "command", "create_app",
           "encode_png", "error_response", "install_error_handlers", "parse_int", "watermark_from_args"]

MAX_BODY_BYTES = 64 * 1024  # a 512-float latent is ~10 KiB of JSON
KEY_ENV = "STYLEGAN_JAX_WATERMARK_KEY"
logger = logging.getLogger("stylegan_jax.server")


def encode_png(image: np.ndarray) -> bytes:
    """uint8 ``HxWx3`` (or ``HxWx1``) -> PNG bytes (lossless, so the watermark is delivered intact)."""
    from PIL import Image

    img = image[..., 0] if image.shape[-1] == 1 else image
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="PNG", compress_level=6)
    return buf.getvalue()


class Limiter:
    """Admission control: ``slots`` concurrent generations plus ``queue`` waiting; beyond that, refuse.

    All bookkeeping happens on the event loop thread (no await between the check and the increment), so a
    plain counter is race-free.
    """

    def __init__(self, slots: int, queue: int) -> None:
        if slots < 1:
            raise ValueError(f"max_concurrency must be >= 1, got {slots}")
        if queue < 0:
            raise ValueError(f"max_queue must be >= 0, got {queue}")
        self.slots, self.queue = slots, queue
        self.admitted = 0  # running + waiting
        self.running = 0
        self.rejected = 0
        self.served = 0
        self._semaphore: asyncio.Semaphore | None = None

    def try_admit(self) -> bool:
        if self.admitted >= self.slots + self.queue:
            self.rejected += 1
            return False
        self.admitted += 1
        return True

    async def run(self, fn: Any, *args: Any) -> Any:
        """Run ``fn(*args)`` in a worker thread once a slot is free; the caller must have been admitted."""
        import anyio.to_thread

        if self._semaphore is None:  # created lazily: it must belong to the server's event loop
            self._semaphore = asyncio.Semaphore(self.slots)
        try:
            async with self._semaphore:
                self.running += 1
                try:
                    return await anyio.to_thread.run_sync(fn, *args)
                finally:
                    self.running -= 1
                    self.served += 1
        finally:
            self.admitted -= 1


def error_response(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    """The JSON error body of every non-200 answer: ``{"error": message}``."""
    return JSONResponse({"error": message}, status_code=status, headers=headers)


_error = error_response


def busy_response(limiter: Limiter, what: str = "generations") -> JSONResponse:
    """503 with ``Retry-After: 1`` for a request the limiter refused."""
    return error_response(503, f"server busy: {limiter.slots} {what} running and {limiter.queue} waiting; "
                               "retry shortly", {"Retry-After": "1"})


def install_error_handlers(app: FastAPI) -> None:
    """Answer every HTTP error, validation error and unhandled exception with the JSON error body (500s logged)."""

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> Any:
        return error_response(exc.status_code, str(exc.detail), getattr(exc, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError) -> Any:
        return error_response(400, "; ".join(str(e.get("msg", e)) for e in exc.errors()) or "invalid request")

    @app.exception_handler(Exception)
    async def _internal_error(request: Request, exc: Exception) -> Any:
        logger.exception("unhandled error on %s %s", request.method, request.url.path)
        return error_response(500, "internal server error")


def parse_int(name: str, raw: str | None, lo: int, hi: int, error: type[Exception] = InferenceInputError) -> int:
    """The integer query parameter ``name`` (text ``raw``) in ``[lo, hi]``; ``error(message naming it)`` if it is
    missing, not a base-10 integer or out of range (shared with the visualizer, which raises its own error)."""
    if raw is None or raw.strip() == "":
        raise error(f"{name} is required")
    try:
        value = int(raw.strip(), 10)
    except ValueError:
        raise error(f"{name} must be an integer, got {raw[:50]!r}") from None
    if not lo <= value <= hi:
        raise error(f"{name} must be in [{lo}, {hi}], got {value}")
    return value


def _parse_psi(raw: Any) -> float:
    """psi from a query string or JSON value: finite, in PSI_RANGE (the session checks again)."""
    if isinstance(raw, bool) or raw is None:
        raise InferenceInputError(f"psi must be a number, got {json.dumps(raw)}")
    if isinstance(raw, str):
        try:
            value = float(raw.strip())
        except ValueError:
            raise InferenceInputError(f"psi must be a number, got {raw[:50]!r}") from None
    elif isinstance(raw, int | float):
        value = float(raw)
    else:
        raise InferenceInputError(f"psi must be a number, got {type(raw).__name__}")
    if math.isnan(value) or not PSI_RANGE[0] <= value <= PSI_RANGE[1]:
        raise InferenceInputError(f"psi must be in [{PSI_RANGE[0]:g}, {PSI_RANGE[1]:g}], got {raw}")
    return value


def _number_list(name: str, raw: Any, length: int) -> np.ndarray:
    """A JSON list of ``length`` numbers (or a one-row nested list) -> float32 ``(1, length)``."""
    if isinstance(raw, list) and len(raw) == 1 and isinstance(raw[0], list):
        raw = raw[0]
    if not isinstance(raw, list):
        raise InferenceInputError(f"{name} must be a list of {length} numbers, got {type(raw).__name__}")
    if len(raw) != length:
        raise InferenceInputError(f"{name} must have {length} numbers, got {len(raw)}")
    if not all(isinstance(v, int | float) and not isinstance(v, bool) for v in raw):
        raise InferenceInputError(f"{name} must contain only numbers")
    arr = np.asarray(raw, np.float64)
    if not np.all(np.isfinite(arr)) or np.any(np.abs(arr) > np.finfo(np.float32).max):
        raise InferenceInputError(f"{name} contains non-finite or out-of-range values")
    return arr.astype(np.float32)[None]


def create_app(session: InferenceSession, *, max_concurrency: int = 2, max_queue: int | None = None) -> FastAPI:
    """The FastAPI application serving ``session`` (see the module docstring for the API).

    ``max_queue`` defaults to ``max_concurrency``. Serve it with uvicorn (``uvicorn.run(app, ...)``).
    """
    limiter = Limiter(max_concurrency, max_concurrency if max_queue is None else max_queue)
    app = FastAPI(title="stylegan-jax", description="StyleGAN3 / StyleGAN2 generator (ONNX Runtime), watermarked PNGs",
                  docs_url=None, redoc_url=None, openapi_url=None)
    app.state.session = session
    app.state.limiter = limiter
    install_error_handlers(app)

    def render(z: np.ndarray, c: np.ndarray | None, psi: float) -> bytes:
        return encode_png(session.generate(z, c, psi, watermark=True)[0])

    async def generate(z: np.ndarray, c: np.ndarray | None, psi: float, headers: dict[str, str]) -> Any:
        session.check_inputs(z, c, psi)  # cheap: reject bad input before taking a slot
        if not limiter.try_admit():
            return busy_response(limiter)
        try:
            png = await limiter.run(render, z, c, psi)
        except InferenceError as e:
            logger.error("%s", e)
            return _error(500, str(e))
        headers = {**headers, "X-Psi": repr(psi), "X-Watermark-Bits": str(session.payload.size),
                   "Cache-Control": "no-store"}
        return Response(content=png, media_type="image/png", headers=headers)

    @app.get("/generate")
    async def generate_get(request: Request) -> Any:
        q = request.query_params
        unknown = sorted(set(q) - {"seed", "psi", "class"})
        try:
            if unknown:
                raise InferenceInputError(f"unknown query parameter(s) {unknown}; expected seed, psi, class")
            seed = parse_int("seed", q.get("seed"), 0, SEED_MAX)
            psi = _parse_psi(q.get("psi", "1"))
            c = None
            if session.c_dim > 0:
                if q.get("class") is None:
                    raise InferenceInputError(f"the model is conditional (c_dim={session.c_dim}): class=K with K in "
                                              f"0..{session.c_dim - 1} is required")
                c = np.eye(session.c_dim, dtype=np.float32)[[parse_int("class", q.get("class"), 0,
                                                                        session.c_dim - 1)]]
            elif q.get("class") is not None:
                raise InferenceInputError("the model is unconditional: it takes no class")
            z = np.random.RandomState(seed).randn(1, session.z_dim).astype(np.float32)
            return await generate(z, c, psi, {"X-Seed": str(seed)})
        except InferenceInputError as e:
            return _error(400, str(e))

    @app.post("/generate")
    async def generate_post(request: Request) -> Any:
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > MAX_BODY_BYTES:
            return _error(413, f"request body over {MAX_BODY_BYTES} bytes")
        body = bytearray()
        async for chunk in request.stream():  # bounded read: a lying or absent content-length cannot exhaust memory
            body += chunk
            if len(body) > MAX_BODY_BYTES:
                return _error(413, f"request body over {MAX_BODY_BYTES} bytes")
        try:
            try:
                payload = json.loads(body)
            except (ValueError, UnicodeDecodeError) as e:
                raise InferenceInputError(f"body is not valid JSON ({e})") from None
            if not isinstance(payload, dict):
                raise InferenceInputError('body must be a JSON object like {"z": [...], "psi": 0.7}')
            unknown = sorted(set(payload) - {"z", "psi", "c"})
            if unknown:
                raise InferenceInputError(f"unknown field(s) {unknown}; expected z, psi, c")
            if "z" not in payload:
                raise InferenceInputError(f"z is required (a list of {session.z_dim} numbers)")
            z = _number_list("z", payload["z"], session.z_dim)
            psi = _parse_psi(payload.get("psi", 1.0))
            c = None
            if session.c_dim > 0:
                if payload.get("c") is None:
                    raise InferenceInputError(f"the model is conditional: c (a list of {session.c_dim} numbers, "
                                              "one-hot for a class) is required")
                c = _number_list("c", payload["c"], session.c_dim)
            elif payload.get("c") is not None:
                raise InferenceInputError("the model is unconditional (c_dim = 0): omit c")
            return await generate(z, c, psi, {})
        except InferenceInputError as e:
            return _error(400, str(e))

    @app.get("/healthz")
    async def healthz() -> dict[str, Any]:
        return {"status": "ok", "in_flight": limiter.admitted, "running": limiter.running,
                "served": limiter.served, "rejected": limiter.rejected}

    @app.get("/info")
    async def info() -> dict[str, Any]:
        return {**session.info(), "limits": {"max_concurrency": limiter.slots, "max_queue": limiter.queue,
                                             "max_body_bytes": MAX_BODY_BYTES, "seed_range": [0, SEED_MAX]}}

    return app


# ---------------------------------------------------------------------------------------------------------------------
# CLI: stylegan-jax serve --model g.onnx --port P [--host 127.0.0.1] [--max-concurrency K] [--watermark-key ...]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, help="ONNX generator written by 'stylegan-jax export'")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--host", default="127.0.0.1", help="bind address (default: local only)")
    parser.add_argument("--max-concurrency", type=int, default=2, help="generations running at once")
    parser.add_argument("--max-queue", type=int, default=None,
                        help="requests allowed to wait for a slot before 503 (default: = --max-concurrency)")
    add_watermark_arguments(parser, f"watermark key (default: ${KEY_ENV}, else a public default key: set your own)")
    parser.add_argument("--threads", type=int, default=None,
                        help="onnxruntime threads per generation (default: cores / max-concurrency)")
    parser.add_argument("--providers", default=None,
                        help="comma-separated onnxruntime execution providers (default: accelerators, then CPU)")
    parser.add_argument("--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"])


def add_watermark_arguments(parser: argparse.ArgumentParser, key_help: str) -> None:
    """``--watermark-key`` / ``--watermark-payload`` (shared by ``serve`` and ``visualize``)."""
    parser.add_argument("--watermark-key", default=None, help=key_help)
    parser.add_argument("--watermark-payload", default=None,
                        help=f"payload as hex bytes, e.g. 0badc0de (default: {DEFAULT_PAYLOAD.hex()} = "
                             f"{DEFAULT_PAYLOAD.decode()!r})")


def watermark_from_args(args: argparse.Namespace) -> tuple[str | None, bytes]:
    """``(key, payload)`` from ``--watermark-key`` (else ``$STYLEGAN_JAX_WATERMARK_KEY``, else None) and
    ``--watermark-payload``; raises ``ValueError`` for a payload that is not hex bytes."""
    key = args.watermark_key or os.environ.get(KEY_ENV) or None
    try:
        payload = bytes.fromhex(args.watermark_payload) if args.watermark_payload else DEFAULT_PAYLOAD
    except ValueError:
        raise ValueError(f"--watermark-payload must be hex bytes, got {args.watermark_payload!r}") from None
    if not payload:
        raise ValueError("--watermark-payload must not be empty")
    return key, payload


def command(args: argparse.Namespace) -> int:
    import uvicorn

    try:
        key, payload = watermark_from_args(args)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if key is None:
        print(f"warning: no --watermark-key or ${KEY_ENV}: using the public default key", file=sys.stderr)
        key = DEFAULT_WATERMARK_KEY
    if args.max_concurrency < 1 or (args.max_queue is not None and args.max_queue < 0):
        print("error: --max-concurrency must be >= 1 and --max-queue >= 0", file=sys.stderr)
        return 2
    threads = args.threads or max(1, (os.cpu_count() or 1) // args.max_concurrency)
    providers = [p.strip() for p in args.providers.split(",") if p.strip()] if args.providers else None
    try:
        session = InferenceSession(args.model, providers=providers, watermark_key=key, payload=payload,
                                   intra_op_threads=threads)
    except (ModelLoadError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    app = create_app(session, max_concurrency=args.max_concurrency, max_queue=args.max_queue)
    print(f"serving {args.model} ({session.img_resolution}x{session.img_resolution}, z_dim {session.z_dim}, "
          f"c_dim {session.c_dim}) on http://{args.host}:{args.port}", file=sys.stderr)
    uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level)
    return 0
