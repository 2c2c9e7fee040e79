"""fashion_tf.app in a real browser: `python -m fashion_tf.app` serving a tiny real run on 127.0.0.1, driven by
headless Chromium from the system packages through Selenium (driver path given, nothing downloaded).

Where Chromium, chromedriver or Selenium is missing these tests skip with the reason, unless
FASHION_TF_REQUIRE_BROWSER=1 (CI sets it), which turns the skip into a failure.
"""

from __future__ import annotations

import os

import numpy as np
import pytest

pytest.importorskip("keras")
pytest.importorskip("streamlit")

from fashion_tf.app import browser  # noqa: E402
from fashion_tf.app.options import AppOptions  # noqa: E402
from test_app import N_IMAGES, SINGLE_CHOICE, independent_margins, thresholds_of  # noqa: E402
from test_evaluate import TinyRun  # noqa: E402

REQUIRE_BROWSER = "FASHION_TF_REQUIRE_BROWSER"


@pytest.fixture(scope="module")
def chrome_ready() -> None:
    problem = browser.browser_problem()
    if problem:
        if os.environ.get(REQUIRE_BROWSER) == "1":
            pytest.fail(f"{REQUIRE_BROWSER}=1 but the browser tests cannot run: {problem}")
        pytest.skip(f"browser tests need headless Chromium: {problem}")


@pytest.fixture(scope="module")
def tiny(chrome_ready, app_run) -> TinyRun:
    return app_run  # conftest.py: build_app_run, once per session


@pytest.fixture(scope="module")
def served(tiny, tmp_path_factory):
    """(url, server process, driver): the app as a user starts it, and one browser for the module."""
    log = tmp_path_factory.mktemp("app_log") / "server.log"
    with browser.serve_app(AppOptions(run_dir=tiny.run_dir, port=0), log_path=log) as (url, process), \
            browser.chromium(1400, 1800) as driver:
        yield url, process, driver


def _card_text(driver, caption: str) -> str:
    """The text of the smallest block of the page holding both `caption` (an image's name) and its labels."""
    from selenium.webdriver.common.by import By

    image = browser.wait_for(driver, lambda drv: drv.find_element(
        By.XPATH, f"//*[@data-testid='stImage'][contains(., '{caption}')]"), what=f"the image {caption}")
    return image.find_element(
        By.XPATH, "ancestor::*[@data-testid='stVerticalBlock'][.//*[contains(text(), 'category')]][1]").text


def _expected_lines(tiny: TinyRun, row: int) -> list[str]:
    """The group lines a user reads for image `row`: labels over their thresholds, one for a single-choice group."""
    scores, thresholds, lm = tiny.scores()[row], thresholds_of(tiny), tiny.label_map
    lines = []
    for group in lm.group_names():
        passing = [i for i in sorted(lm.group_members(group), key=lambda i: -scores[i]) if scores[i] >= thresholds[i]]
        passing = passing[:1] if group in SINGLE_CHOICE else passing
        kind = " (one label)" if group in SINGLE_CHOICE else ""
        shown = ", ".join(f"{lm.names[i]} {scores[i]:.2f}" for i in passing) or "none above its threshold"
        lines.append(f"{group}{kind}: {shown}")
    return lines


def test_upload_two_images_and_a_corrupt_one_in_the_browser(served, tiny, tmp_path):
    import psutil

    url, process, driver = served
    corrupt = tmp_path / "corrupt.jpg"
    corrupt.write_bytes(b"\xff\xd8\xff\xe0" + b"not really a JPEG" * 10)
    driver.get(url)
    browser.wait_for_text(driver, "Label photos")
    browser.upload_files(driver, [tiny.image_dir / "img000.png", tiny.image_dir / "img005.png", corrupt])
    browser.click_text(driver, "Label images", "button")

    browser.wait_for_text(driver, "corrupt.jpg: not a readable image (JPEG, PNG, GIF or BMP)")
    browser.wait_for_text(driver, "Results table")
    for name, row in (("img000.png", 0), ("img005.png", 5)):
        card = _card_text(driver, name)
        for line in _expected_lines(tiny, row):
            assert line in card, f"{line!r} not shown for {name}:\n{card}"
        assert "not a readable image" not in card
    assert browser.external_requests(driver, url.rstrip("/")) == []  # no usage statistics, no CDN: nothing left 127.0.0.1
    listening = [c.laddr for c in psutil.Process(process.pid).net_connections("tcp") if c.status == psutil.CONN_LISTEN]
    assert listening and {address.ip for address in listening} == {"127.0.0.1"}


def test_mistakes_gallery_opens_and_filters_by_group_and_label(served, tiny):
    from selenium.webdriver.common.by import By

    url, _, driver = served
    lm = tiny.label_map
    driver.get(url)
    browser.click_text(driver, "Look inside the run", "label")

    def expected(columns) -> list[str]:
        margins = independent_margins(tiny, columns)
        return [tiny.ids[i] for i in sorted(np.flatnonzero(margins > 1e-9), key=lambda i: -margins[i])]

    def shown_cards() -> list[str]:
        texts = [element.text for element in driver.find_elements(By.CSS_SELECTOR, '[data-testid="stMarkdownContainer"]')]
        return [text.split(" · margin")[0] for text in texts if " · margin " in text]

    every = expected(np.arange(len(lm)))
    browser.wait_for_text(driver, f"{len(every)} of {N_IMAGES} validation images have a wrong decision,")
    browser.wait_for(driver, lambda drv: shown_cards() == every, what="the gallery's cards")
    images = driver.find_elements(By.CSS_SELECTOR, '[data-testid="stImage"] img')
    browser.wait_for(driver, lambda drv: all(drv.execute_script("return arguments[0].complete && arguments[0].naturalWidth", image) == 32
                                             for image in images), what="the gallery's images")
    assert len(images) == len(every)

    browser.choose_option(driver, "Label group", "accessory")
    accessory = expected(lm.group_members("accessory"))
    browser.wait_for_text(driver, f"{len(accessory)} of {N_IMAGES} validation images have a wrong decision in accessory")
    browser.wait_for(driver, lambda drv: shown_cards() == accessory, what="the accessory mistakes")

    browser.choose_option(driver, "Label", f"{lm.names[7]} (accessory)")
    hat = expected(np.array([7]))
    browser.wait_for_text(driver, f"{len(hat)} of {N_IMAGES} validation images have a wrong decision on {lm.names[7]}")
    browser.wait_for(driver, lambda drv: shown_cards() == hat, what="the hat mistakes")
    assert set(hat) < set(every)
