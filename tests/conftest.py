import json
import os
from pathlib import Path

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
