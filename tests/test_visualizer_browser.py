"""The visualizer page in a real headless Chromium (Debian's /usr/bin/chromium driven by Playwright for Python):
moving the seed, psi, rotation and translation controls changes the image, which equals pixel for pixel what the
page's ``stylegan-jax generate`` command writes; dragging gives fractional seeds; layer activations, the download,
and a bad value's error message on the page. Screenshots go to the test's tmp dir.

Without a browser these tests skip, except in CI (``CI`` set), where they fail: .ci/run installs chromium."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import PIL.Image
import pytest

pytest.importorskip("fastapi")

from stylegan_jax.apis.visualizer import create_app  # noqa: E402
from tests.test_visualizer import RES, Server, build_workdir, run_generate  # noqa: E402

pytestmark = pytest.mark.browser

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]
WAIT_MS = 180_000  # a render that compiles a new shape takes seconds on a loaded 2-core machine


def _missing_browser() -> str | None:
    if not (Path(CHROMIUM).is_file() and os.access(CHROMIUM, os.X_OK)):
        return f"{CHROMIUM} not found (apt-get install chromium)"
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "playwright is not installed (pip install playwright; no 'playwright install' needed)"
    return None


@pytest.fixture(scope="module")
def chromium() -> str:
    """The browser, checked before anything is built: missing, the tests fail in CI and skip elsewhere."""
    missing = _missing_browser()
    if missing:
        if os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no"):
            pytest.fail(f"browser tests must run in CI: {missing}")
        pytest.skip(missing)
    return CHROMIUM


@pytest.fixture(scope="module")
def server(chromium, tmp_path_factory) -> Iterator[Server]:
    workdir = build_workdir(tmp_path_factory.mktemp("vis_browser"))
    with Server(create_app(workdir)) as s:
        yield s


@pytest.fixture(scope="module")
def page(chromium, server, tmp_path_factory):
    from playwright.sync_api import sync_playwright

    profile = tmp_path_factory.mktemp("chromium-profile")  # a fresh user-data dir
    with sync_playwright() as p:
        context = p.chromium.launch_persistent_context(
            str(profile), executable_path=chromium, headless=True, args=CHROMIUM_ARGS, accept_downloads=True,
            viewport={"width": 1280, "height": 960})
        try:
            pg = context.new_page()
            pg.set_default_timeout(WAIT_MS)
            errors: list[str] = []
            pg.on("pageerror", lambda e: errors.append(str(e)))
            pg.goto(server.url)
            wait_shown(pg)
            pg.page_errors = errors
            yield pg
        finally:
            context.close()
            shutil.rmtree(profile, ignore_errors=True)


def wait_shown(pg) -> None:
    """Until the image on the page is the one for the current settings and no request is in flight."""
    pg.wait_for_function("document.body.dataset.state === 'idle' && "
                         "document.getElementById('image').dataset.query === params()", timeout=WAIT_MS)


def shown_pixels(pg) -> np.ndarray:
    """The displayed image's pixels as the browser decoded them (drawn on a canvas at its natural size)."""
    rgba = pg.evaluate("""() => {
        const img = document.getElementById('image');
        const canvas = document.createElement('canvas');
        canvas.width = img.naturalWidth;
        canvas.height = img.naturalHeight;
        const ctx = canvas.getContext('2d');
        ctx.drawImage(img, 0, 0);
        return Array.from(ctx.getImageData(0, 0, canvas.width, canvas.height).data);
    }""")
    return np.asarray(rgba, np.uint8).reshape(RES, RES, 4)[..., :3]


def assert_matches_generate(pg, outdir: Path) -> np.ndarray:
    command = pg.input_value("#command")
    assert "writes this image exactly" in pg.inner_text("#command-note"), command
    img = shown_pixels(pg)
    np.testing.assert_array_equal(img, run_generate(command, outdir), err_msg=command)
    return img


def press(pg, selector: str, key: str, times: int) -> None:
    pg.focus(selector)
    for _ in range(times):
        pg.keyboard.press(key)


def test_controls_render_what_generate_writes(page, tmp_path: Path) -> None:
    pg = page
    assert pg.is_visible("#class-row") and not pg.is_disabled("#rotate") and pg.is_disabled("#noise")
    first = assert_matches_generate(pg, tmp_path / "initial")
    pg.screenshot(path=str(tmp_path / "initial.png"), full_page=True)

    pg.fill("#seed", "7")  # typing a seed
    wait_shown(pg)
    seed7 = assert_matches_generate(pg, tmp_path / "seed")
    assert not np.array_equal(seed7, first)

    press(pg, "#psi", "ArrowLeft", 30)  # psi 1 -> 0.7 with the keyboard, one render per key press at most
    wait_shown(pg)
    assert float(pg.input_value("#psi")) == pytest.approx(0.7)
    psi = assert_matches_generate(pg, tmp_path / "psi")
    assert not np.array_equal(psi, seed7) and "--psi 0.7" in pg.input_value("#command")

    press(pg, "#rotate", "ArrowRight", 15)  # rotate the Fourier input by 15 degrees
    press(pg, "#tx", "ArrowRight", 10)      # and translate it by 0.1
    wait_shown(pg)
    moved = assert_matches_generate(pg, tmp_path / "rotate")
    assert not np.array_equal(moved, psi)
    assert "--rotate 15" in pg.input_value("#command") and "--translate=0.1,0" in pg.input_value("#command")
    pg.screenshot(path=str(tmp_path / "rotated.png"), full_page=True)

    pg.fill("#class", "2")
    wait_shown(pg)
    other_class = assert_matches_generate(pg, tmp_path / "class")
    assert not np.array_equal(other_class, moved)
    assert not pg.page_errors, pg.page_errors


def test_drag_through_latent_space_layers_and_download(page, tmp_path: Path) -> None:
    pg = page
    pg.fill("#seed", "4")
    wait_shown(pg)
    before = shown_pixels(pg)
    box = pg.locator("#image").bounding_box()
    x, y = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
    pg.mouse.move(x, y)
    pg.mouse.down()
    pg.mouse.move(x + 25, y, steps=5)  # 100 px per seed: 4 -> 4.25
    pg.mouse.up()
    wait_shown(pg)
    assert float(pg.input_value("#seed")) == pytest.approx(4.25)
    assert "fractional" in pg.inner_text("#command-note")
    dragged = shown_pixels(pg)
    assert not np.array_equal(dragged, before)

    layer = pg.locator("#layer option").nth(2).get_attribute("value")
    pg.select_option("#layer", layer)
    wait_shown(pg)
    assert pg.is_visible("#activation") and layer in pg.inner_text("#activation-caption")
    pg.uncheck("#rms")
    pg.fill("#channel", "5")
    wait_shown(pg)
    assert "channel 5" in pg.inner_text("#activation-caption")
    np.testing.assert_array_equal(shown_pixels(pg), dragged)  # the activation view does not touch the image
    pg.screenshot(path=str(tmp_path / "activations.png"), full_page=True)

    with pg.expect_download() as info:
        pg.click("#download")
    path = tmp_path / info.value.suggested_filename
    info.value.save_as(path)
    assert path.name.startswith("seed0004_4.25")
    np.testing.assert_array_equal(np.asarray(PIL.Image.open(path)), dragged)  # no key: the plain image


def test_bad_value_shows_the_error_on_the_page(page, tmp_path: Path) -> None:
    pg = page
    pg.fill("#seed", "-3")
    pg.wait_for_function("document.body.dataset.state === 'error'", timeout=WAIT_MS)
    assert pg.is_visible("#error")
    assert "seed must be in [0, 4294967295], got -3" in pg.inner_text("#error")
    pg.screenshot(path=str(tmp_path / "error.png"), full_page=True)
    pg.fill("#seed", "2")
    wait_shown(pg)
    assert not pg.is_visible("#error")
    assert_matches_generate(pg, tmp_path / "recovered")
    assert all((tmp_path / n).stat().st_size > 0 for n in ["error.png"])
