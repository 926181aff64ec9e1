"""The search page in a real headless browser: Debian's chromium driven by Selenium through the
system chromedriver (nothing is downloaded). ``make test`` installs both with apt-get.

The test uploads an image, waits for the grid, checks the first hit, clicks a result, and
saves screenshots at desktop and phone width (in HASHKIT_SCREENSHOT_DIR when set). With
HASHKIT_SERVE_INDEX and HASHKIT_SERVE_QUERY it runs on that index and query image instead
of its own tiny one: that is how docs/serve-page.png was made on the demo index.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
from click.testing import CliRunner
from serve_helpers import Server, make_model, write_block_images

from hashkit.cli.main import _registered
from hashkit.store import read_store

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
WAIT_S = 60
DESKTOP = (1280, 860)
PHONE = (390, 844)


@pytest.fixture(scope="module")
def browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service as ChromeService

    missing = [p for p in (CHROMIUM, CHROMEDRIVER) if not Path(p).exists()]
    assert not missing, (
        f"missing {', '.join(missing)}: apt-get install chromium chromium-driver (make test does)"
    )
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in (
        "--headless=new",
        "--no-sandbox",  # CI runs as root
        "--disable-dev-shm-usage",
        "--disable-gpu",
        "--hide-scrollbars",
        f"--window-size={DESKTOP[0]},{DESKTOP[1]}",
    ):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(options=options, service=ChromeService(CHROMEDRIVER))
    yield driver
    driver.quit()


@pytest.fixture(scope="module")
def page_data(tmp_path_factory):
    """``(index, query image, expected first hit id or None)``."""
    if os.environ.get("HASHKIT_SERVE_INDEX"):
        index, query = os.environ["HASHKIT_SERVE_INDEX"], os.environ["HASHKIT_SERVE_QUERY"]
        return Path(index), Path(query), None
    root = tmp_path_factory.mktemp("page")
    paths = write_block_images(root / "images", classes=3, per_class=10, size=32)
    model = make_model(root / "model.pt", paths, size=32)
    index = root / "index.faiss"
    result = CliRunner().invoke(
        _registered(), ["build-index", str(root / "images"), str(index), "--model", str(model)]
    )
    assert result.exit_code == 0, result.output
    store = read_store(root / "index.h5")
    row = next(
        r for r in range(len(store.ids)) if (store.codes == store.codes[r]).all(axis=1).sum() == 1
    )
    return index, Path(store.paths[row]), int(store.ids[row])


def screenshot_dir(tmp_path: Path) -> Path:
    folder = Path(os.environ.get("HASHKIT_SCREENSHOT_DIR", tmp_path))
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def wait(driver, condition, what: str):
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, WAIT_S, poll_frequency=0.1).until(
        lambda d: condition(d), message=f"timed out waiting for {what}"
    )


def hits(driver):
    return driver.find_elements("css selector", "#grid .hit")


def thumbnails_loaded(driver, n: int) -> bool:
    return driver.execute_script(
        "return Array.from(document.querySelectorAll('#grid img')).slice(0, arguments[0])"
        ".every(i => i.complete && i.naturalWidth > 0)",
        n,
    )


def searches(driver) -> int:
    return int(driver.find_element("id", "grid").get_attribute("data-searches") or 0)


def search_with_upload(driver, query: Path, k: int):
    before = searches(driver)
    driver.find_element("id", "file").send_keys(str(query.resolve()))
    wait(driver, lambda d: searches(d) > before, "the results of the upload")
    assert len(hits(driver)) == k
    wait(driver, lambda d: thumbnails_loaded(d, 6), "the first thumbnails")
    return hits(driver)


def severe_console_errors(driver) -> list[str]:
    return [e["message"] for e in driver.get_log("browser") if e["level"] == "SEVERE"]


def test_page_upload_grid_click_and_screenshots(browser, page_data, tmp_path):
    from selenium.webdriver.common.action_chains import ActionChains

    index, query, expected_id = page_data
    out = screenshot_dir(tmp_path)
    with Server(index, "--reload-interval", "0") as server:
        browser.set_window_size(*DESKTOP)
        browser.get(server.base + "/")
        wait(browser, lambda d: "images" in d.find_element("id", "index-info").text, "index info")
        first = search_with_upload(browser, query, 20)[0]
        assert first.get_attribute("data-rank") == "1"
        assert first.get_attribute("data-distance") == "0"
        assert "d = 0" in first.text
        if expected_id is not None:
            assert first.get_attribute("data-id") == str(expected_id)
            assert first.find_element("class name", "label").text == query.parent.name
        timing = browser.find_element("id", "timing").text
        assert re.search(r"20 results · \d+\.\d ms in the service · \d+ ms round trip", timing)
        assert browser.find_element("id", "query-name").text == query.name

        second = hits(browser)[1]
        second_id = second.get_attribute("data-id")
        before = searches(browser)
        second.click()
        wait(browser, lambda d: searches(d) > before, "the results of the clicked item")
        assert browser.find_element("id", "query-name").text.startswith(f"item {second_id}")
        assert hits(browser)[0].get_attribute("data-distance") == "0"
        at_zero = [
            h.get_attribute("data-id") for h in hits(browser) if h.text and "d = 0" in h.text
        ]
        assert second_id in at_zero

        # Back to the uploaded query for the picture, then desktop and phone screenshots.
        search_with_upload(browser, query, 20)
        ActionChains(browser).move_to_element(browser.find_element("tag name", "header")).perform()
        browser.save_screenshot(str(out / "serve-page.png"))
        browser.set_window_size(*PHONE)
        wait(
            browser,
            lambda d: (
                d.execute_script(
                    "return getComputedStyle(document.getElementById('grid'))"
                    ".gridTemplateColumns.split(' ').length"
                )
                == 3
            ),
            "three columns at phone width",
        )
        assert browser.execute_script(
            "return document.documentElement.scrollWidth <= window.innerWidth"
        ), "the page scrolls sideways at phone width"
        browser.save_screenshot(str(out / "serve-page-phone.png"))
        assert severe_console_errors(browser) == []
    for name in ("serve-page.png", "serve-page-phone.png"):
        assert (out / name).stat().st_size > 10_000


def test_page_asks_for_the_token_and_then_searches_with_it(browser, page_data, tmp_path):
    index, query, _ = page_data
    with Server(index, "--reload-interval", "0", env={"HASHKIT_TOKEN": "s3cret"}) as server:
        browser.set_window_size(*DESKTOP)
        browser.get(server.base + "/")
        browser.execute_script("sessionStorage.clear()")
        browser.get(server.base + "/")
        form = browser.find_element("id", "token-form")
        wait(browser, lambda d: form.is_displayed(), "the token form")
        browser.find_element("id", "token").send_keys("s3cret")
        form.find_element("tag name", "button").click()
        wait(browser, lambda d: not form.is_displayed(), "the token to be accepted")
        first = search_with_upload(browser, query, 20)[0]
        assert first.get_attribute("data-distance") == "0"
        src = first.find_element("tag name", "img").get_attribute("src")
        assert src.startswith("blob:")  # fetched with the Authorization header
        browser.get_log("browser")  # the 401 of the first /api/info is expected
