"""The app served for real and a headless Chromium to drive it: for the browser tests and the README screenshots.

    with serve_app(options) as url, chromium() as driver:
        driver.get(url)
        wait_for_text(driver, "Label photos")

Chromium and chromedriver come from the system packages (Debian: `apt-get install chromium chromium-driver`);
their paths are always handed to Selenium, so no driver manager downloads anything. `browser_problem()` says
what is missing (None when everything is there). FASHION_TF_CHROMIUM / FASHION_TF_CHROMEDRIVER name other
binaries.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import replace
from pathlib import Path
from typing import Iterator, Sequence

from fashion_tf.app.options import AppOptions
from fashion_tf.fileio import write_bytes_atomic

BROWSER_NAMES = ("chromium", "chromium-browser", "google-chrome")
DRIVER_NAMES = ("chromedriver",)
# Without the background-networking switches Chromium tries to reach Google's services at start-up.
CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--disable-dev-shm-usage", "--hide-scrollbars", "--force-device-scale-factor=1")
START_TIMEOUT = 240.0  # seconds for the server to answer; TensorFlow's import alone takes a while on a busy machine
WAIT_TIMEOUT = 120.0


def _which(env: str, names: Sequence[str]) -> str | None:
    if os.environ.get(env):
        return os.environ[env] if Path(os.environ[env]).is_file() else None
    for name in names:
        found = shutil.which(name) or (f"/usr/bin/{name}" if Path(f"/usr/bin/{name}").is_file() else None)
        if found:
            return found
    return None


def browser_paths() -> tuple[str | None, str | None]:
    """(chromium, chromedriver) found on this machine, each None when absent."""
    return _which("FASHION_TF_CHROMIUM", BROWSER_NAMES), _which("FASHION_TF_CHROMEDRIVER", DRIVER_NAMES)


def browser_problem() -> str | None:
    """Why a browser test cannot run here, or None."""
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed (pip install -e '.[app]')"
    browser, driver = browser_paths()
    missing = [name for name, path in (("chromium", browser), ("chromedriver", driver)) if path is None]
    if missing:
        return (f"{' and '.join(missing)} not found (Debian/Ubuntu: apt-get install -y chromium chromium-driver; "
                "or set FASHION_TF_CHROMIUM / FASHION_TF_CHROMEDRIVER)")
    return None


@contextlib.contextmanager
def chromium(width: int = 1400, height: int = 1800) -> Iterator:
    """A headless Chromium driven by Selenium, with a fresh profile; closed on exit."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    problem = browser_problem()
    if problem:
        raise RuntimeError(problem)
    browser, driver_path = browser_paths()
    with tempfile.TemporaryDirectory(prefix="fashion_tf-chromium-") as profile:
        options = webdriver.ChromeOptions()
        options.binary_location = browser
        for flag in (*CHROMIUM_FLAGS, f"--user-data-dir={profile}", f"--window-size={width},{height}"):
            options.add_argument(flag)
        driver = webdriver.Chrome(service=Service(executable_path=driver_path), options=options)
        try:
            yield driver
        finally:
            driver.quit()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextlib.contextmanager
def serve_app(options: AppOptions, log_path: Path | None = None) -> Iterator[tuple[str, subprocess.Popen]]:
    """`python -m fashion_tf.app` with these options (a free port when options.port is 0), as a user starts it;
    yields (url, process) once the server answers, and stops it on exit."""
    if options.port == 0:
        options = replace(options, port=free_port())
    url = f"http://{options.host}:{options.port}/"
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    with contextlib.ExitStack() as stack:
        log = stack.enter_context(open(log_path, "wb")) if log_path else stack.enter_context(tempfile.TemporaryFile())
        process = subprocess.Popen([sys.executable, "-m", "fashion_tf.app", *options.page_argv()],
                                   stdout=log, stderr=subprocess.STDOUT, env=env)
        try:
            _wait_until_healthy(url, process, log)
            yield url, process
        finally:
            process.terminate()
            try:
                process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def _wait_until_healthy(url: str, process: subprocess.Popen, log) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the app exited with code {process.returncode}: {_tail(log)}")
        with contextlib.suppress(OSError):
            with urllib.request.urlopen(url + "_stcore/health", timeout=2) as answer:
                if answer.status == 200:
                    return
        time.sleep(0.3)
    raise RuntimeError(f"the app did not answer on {url} within {START_TIMEOUT:g}s: {_tail(log)}")


def _tail(log, size: int = 2000) -> str:
    log.flush()
    log.seek(0)
    return log.read()[-size:].decode("utf-8", "replace")


# ---------------------------------------------------------------------------- driving the page
def _literal(text: str) -> str:
    """`text` as an XPath string literal (it may hold both kinds of quote)."""
    if "'" not in text:
        return f"'{text}'"
    return "concat(" + ", \"'\", ".join(f"'{part}'" for part in text.split("'")) + ")"


def wait_for(driver, condition, timeout: float = WAIT_TIMEOUT, what: str = "the page"):
    """condition(driver)'s first true value; elements replaced by a rerun meanwhile only mean "not yet"."""
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.support.ui import WebDriverWait

    wait = WebDriverWait(driver, timeout, poll_frequency=0.2, ignored_exceptions=(StaleElementReferenceException,))
    return wait.until(condition, f"timed out waiting for {what}")


def wait_for_text(driver, text: str, timeout: float = WAIT_TIMEOUT):
    """The first visible element whose own text contains `text`, once there is one."""
    from selenium.webdriver.common.by import By

    xpath = f"//*[contains(text(), {_literal(text)})]"

    def visible(drv):
        return next((element for element in drv.find_elements(By.XPATH, xpath) if element.is_displayed()), False)

    return wait_for(driver, visible, timeout, repr(text))


def wait_for_rendering(driver, timeout: float = WAIT_TIMEOUT) -> None:
    """Until every image on the page has loaded and every chart has drawn (for screenshots)."""
    script = """
        const images = [...document.querySelectorAll('[data-testid="stImage"] img')];
        const charts = [...document.querySelectorAll('[data-testid="stVegaLiteChart"], .vega-embed')];
        return images.every(img => img.complete && img.naturalWidth > 0)
            && charts.every(chart => chart.querySelector('canvas, svg'));"""
    wait_for(driver, lambda drv: drv.execute_script(script), timeout, "images and charts to render")


def full_page_screenshot(driver, path: Path, width: int = 1400, settle_rounds: int = 10) -> Path:
    """A PNG of the whole page: the window is grown to the height of Streamlit's main column until it stops
    changing (images and charts arrive after the text)."""
    measure = ("const main = document.querySelector('[data-testid=\"stMainBlockContainer\"]');"
               "return main ? main.scrollHeight + 80 : document.documentElement.scrollHeight;")
    height = 0
    for _ in range(settle_rounds):
        wait_for_rendering(driver)
        measured = int(driver.execute_script(measure))
        if measured == height:
            break
        height = measured
        driver.set_window_size(width, height)
        time.sleep(1.0)
    write_bytes_atomic(path, driver.get_screenshot_as_png())
    return Path(path)


def click_text(driver, text: str, tag: str = "*") -> None:
    from selenium.webdriver.common.by import By

    wait_for_text(driver, text)
    element = driver.find_element(By.XPATH, f"//{tag}[contains(normalize-space(.), {_literal(text)})]")
    driver.execute_script("arguments[0].scrollIntoView({block: 'center'});", element)
    element.click()


def upload_files(driver, paths: Sequence[Path]) -> None:
    """Hand files to the page's file uploader as a user picking them in the file dialog would."""
    from selenium.webdriver.common.by import By

    field = wait_for(driver, lambda drv: drv.find_element(By.CSS_SELECTOR, '[data-testid="stFileUploader"] input[type="file"]'),
                     what="the file uploader")
    field.send_keys("\n".join(str(Path(path).resolve()) for path in paths))
    for path in paths:
        wait_for_text(driver, Path(path).name)


def choose_option(driver, widget_label: str, option: str) -> None:
    """Pick `option` in the Streamlit selectbox labelled `widget_label`."""
    from selenium.webdriver.common.by import By

    field = wait_for(driver, lambda drv: drv.find_element(By.XPATH, f"//input[@role='combobox'][@aria-label={_literal(widget_label)}]"),
                     what=f"the selectbox {widget_label!r}")
    driver.execute_script("arguments[0].scrollIntoView({block: 'center'});", field)
    field.click()
    choice = wait_for(driver, lambda drv: next(
        (element for element in drv.find_elements(By.XPATH, f"//*[@role='option'][normalize-space(.)={_literal(option)}]")
         if element.is_displayed()), False), what=f"option {option!r}")
    choice.click()


def external_requests(driver, allowed_origin: str) -> list[str]:
    """Every resource the page loaded from anywhere but `allowed_origin` (the app's own address)."""
    names = driver.execute_script("return performance.getEntriesByType('resource').map(e => e.name)")
    return [name for name in names if not name.startswith((allowed_origin, "data:", "blob:"))]
