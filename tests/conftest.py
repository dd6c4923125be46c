from __future__ import annotations

import contextlib
import json
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

FIXTURES = Path(__file__).parent / "fixtures"


class Fixture(dict):
    """An official-format .npz fixture: keys as arrays plus the decoded ``meta``."""

    def __init__(self, path: Path):
        with np.load(path) as data:
            super().__init__({k: data[k] for k in data.files})
        self.meta = json.loads(str(self["meta"]))
        self.path = path


@pytest.fixture(scope="session")
def load_fixture():
    cache = {}

    def load(name: str) -> Fixture:
        if name not in cache:
            cache[name] = Fixture(FIXTURES / name)
        return cache[name]

    return load


def pytest_configure(config):
    os.environ.setdefault("JAX_PLATFORMS", "cpu")
    # The command line's default compile cache lives in the user's home: the CLI subprocesses of the tests use the
    # session's cache_dir (JAX_COMPILATION_CACHE_DIR) where they ask for one, and none otherwise.
    os.environ.setdefault("STYLEGAN_JAX_COMPILE_CACHE", "off")


def pytest_xdist_auto_num_workers(config) -> int:
    """Workers for ``-n auto`` (pyproject addopts; at most ``--maxprocesses 4``): one more than the cores for the
    default suite. Much of its time is XLA compiling, mostly on one thread, so on a 2-core machine two workers leave
    a core idle while both compile; a third keeps both busy (README, "Run the tests"). The slow tests (training
    runs of several OS processes, whose peers wait 30 s for each other) keep one worker per core."""
    cores = os.cpu_count() or 1
    return cores + 1 if config.getoption("markexpr") == "not slow" else cores


class LiveServer:
    """uvicorn serving the ASGI ``app`` on 127.0.0.1 in a daemon thread, on a port the OS picks; ``url`` is its base
    address. A context manager: started on entry, stopped on exit (the API tests of ``serve`` and ``visualize``)."""

    def __init__(self, app: Any) -> None:
        import uvicorn

        self.app = app
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))  # uvicorn serves on this very socket: no race for the port
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.server = uvicorn.Server(uvicorn.Config(app, log_level="warning", timeout_graceful_shutdown=5))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)

    def __enter__(self) -> LiveServer:
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc: Any) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=15)
        self.sock.close()


@pytest.fixture(scope="module")
def serve() -> Iterator[Callable[[Any], LiveServer]]:
    """``serve(app) -> LiveServer``: the app served over real HTTP until the end of the test module."""
    with contextlib.ExitStack() as stack:
        yield lambda app: stack.enter_context(LiveServer(app))


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory) -> Path:
    """A persistent JAX compilation cache for the training commands the tests run in subprocesses, so that each
    process does not pay the compile again. Shared by the pytest-xdist workers (their base temp dirs are siblings
    under one root); concurrent writers are safe, a half-written entry is only a cache miss."""
    base = tmp_path_factory.getbasetemp()
    root = base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base
    path = root / "jax_cache"
    path.mkdir(exist_ok=True)
    return path


# Modules in decreasing running time (serial, on the 2-core CI machine), run first so that the
# pytest-xdist workers (``--dist loadscope``: one module per worker at a time) finish together instead of one
# worker running the longest module alone at the end (pyproject: --no-loadscope-reorder keeps this order).
# test_training.py goes before test_training_resume.py so that the latter finds its programs in the compilation
# cache.
_LONGEST_FIRST = ["test_training.py", "test_train_step.py", "test_generator.py", "test_path_length.py",
                  "test_equivariance.py", "test_augment.py", "test_losses.py", "test_onnx.py", "test_notebooks.py",
                  "test_inference.py", "test_projector.py", "test_multihost.py", "test_visualizer_browser.py",
                  "test_shape_quality.py", "test_visualizer.py", "test_fid.py", "test_ops.py", "test_parity.py",
                  "test_training_resume.py"]


def pytest_collection_modifyitems(config, items):
    rank = {name: i for i, name in enumerate(_LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: order within a module kept
