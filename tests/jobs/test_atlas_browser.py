"""The atlas in a real browser: headless Chromium (Debian's `chromium` and `chromium-driver`,
installed by .ci/run) driven by Selenium opens it from file:// and from `python -m http.server`;
on the index, every stage page and a sample of channel pages every image has loaded and every
link leads to an existing page; the search box finds a channel; a screenshot of a channel page
is not blank.

Without a browser on this machine the tests are skipped, unless DECONVNET_REQUIRE_BROWSER=1 (as
in CI), where a missing browser is a failure.
"""

from __future__ import annotations

import functools
import io
import os
import shutil
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
from conftest import TINY_ATLAS
from PIL import Image

from deconvnet.jobs.atlas import run_atlas

CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
REQUIRED = os.environ.get("DECONVNET_REQUIRE_BROWSER") == "1"


def _browser_missing() -> str | None:
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed (pip install -e '.[dev]')"
    if not Path(CHROMEDRIVER).is_file() or CHROMIUM is None:
        return "chromium / chromium-driver are not installed (apt-get install chromium chromium-driver)"
    return None


@pytest.fixture(scope="module")
def browser():
    missing = _browser_missing()
    if missing:
        if REQUIRED:
            pytest.fail(f"DECONVNET_REQUIRE_BROWSER=1 but {missing}")
        pytest.skip(missing)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"):
        options.add_argument(argument)
    options.add_argument("--window-size=1280,900")
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(60)
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("atlas_site")
    run_atlas(folder, **TINY_ATLAS)
    return folder


@pytest.fixture(scope="module")
def served(site):
    """The atlas served by Python's http.server on a free local port: its base URL."""
    handler = functools.partial(SimpleHTTPRequestHandler, directory=str(site))
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def images_loaded(driver) -> tuple[int, list[str]]:
    """(images on the page, the sources of those that did not load)."""
    found = driver.execute_script(
        "return Array.from(document.images).map(i => [i.currentSrc || i.src, i.complete && i.naturalWidth > 0]);"
    )
    return len(found), [src for src, ok in found if not ok]


def links(driver) -> list[str]:
    return driver.execute_script("return Array.from(document.links).map(a => a.href);")


def check_page(driver, url: str, min_images: int) -> list[str]:
    """Open `url`; every image loaded; the page's links."""
    driver.get(url)
    count, broken = images_loaded(driver)
    assert count >= min_images, f"{url}: {count} images, expected >= {min_images}"
    assert broken == [], f"{url}: images not loaded: {broken}"
    return links(driver)


def visit_atlas(driver, base: str, site: Path) -> set[str]:
    """From the index, every page a link leads to (the tiny atlas has 11), each opened once:
    every image loaded, a heading, every link inside the atlas and to a file that exists."""
    opened, queue = set(), [f"{base}/index.html"]
    while queue:
        url = queue.pop(0)
        if url in opened:
            continue
        found = check_page(driver, url, 0 if url.endswith("/index.html") else 1)
        assert driver.find_element("tag name", "h1").text, f"{url} did not open as an atlas page"
        opened.add(url)
        for target in (t.split("#")[0] for t in found):
            assert target.startswith(base + "/"), f"{url} links outside the atlas: {target}"
            assert (site / target.removeprefix(base + "/")).is_file(), f"{url} links to a missing {target}"
            queue.append(target)
    return opened


@pytest.mark.slow
def test_the_atlas_opens_from_file_urls_with_every_image_and_link(browser, site):
    opened = visit_atlas(browser, site.as_uri(), site)
    pages = {str(p.relative_to(site)) for p in site.rglob("*.html")}
    assert {u.removeprefix(site.as_uri() + "/") for u in opened} == pages  # every page reached


@pytest.mark.slow
def test_the_atlas_opens_from_http_server(browser, site, served):
    opened = visit_atlas(browser, served, site)
    assert len(opened) == len(list(site.rglob("*.html")))


@pytest.mark.slow
def test_the_search_box_goes_to_a_channel_or_says_it_is_not_there(browser, site):
    from selenium.webdriver.common.by import By

    first = sorted((site / "stage5").glob("channel*.html"))[0]
    number = int(first.stem.removeprefix("channel"))
    browser.get((site / "stage5.html").as_uri())
    box = browser.find_element(By.NAME, "channel")
    box.send_keys("9999")
    box.submit()
    assert "not in this atlas" in browser.find_element(By.CLASS_NAME, "miss").text
    box.clear()
    box.send_keys(str(number))
    box.submit()
    assert browser.current_url.endswith(f"stage5/{first.name}")
    assert f"channel {number}" in browser.find_element(By.TAG_NAME, "h1").text


@pytest.mark.slow
def test_a_channel_page_screenshot_is_not_blank(browser, site):
    page = sorted((site / "stage1").glob("channel*.html"))[0]
    browser.get(page.as_uri())
    shot = np.asarray(Image.open(io.BytesIO(browser.get_screenshot_as_png())).convert("RGB"))
    assert shot.shape[0] > 200 and shot.shape[1] > 200
    assert shot.std() > 10  # not one colour
    assert len(np.unique(shot.reshape(-1, 3), axis=0)) > 200  # pictures, not only text on white
