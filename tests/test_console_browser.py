"""The console in a real browser: Debian's Chromium, driven by Selenium through the system's
chromedriver (nothing is downloaded), against the real ``txanomaly serve`` on loopback with a
trained model and a stream of synthetic transactions.

A screenshot of each page is saved (not committed) to ``$TXANOMALY_SCREENSHOTS``, by default
``build/console-screenshots/``, at a laptop's window size.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import httpx
import polars as pl
import pytest

from service_fixtures import API_KEY, model_dir, stream
from test_feedback_api import KEY, Server, serving

__all__ = ["model_dir", "stream"]  # fixtures, imported for pytest

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
WINDOW = (1366, 900)  # a common laptop screen
SHOTS = Path(os.environ.get("TXANOMALY_SCREENSHOTS", "build/console-screenshots"))

webdriver = pytest.importorskip("selenium.webdriver")
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support import expected_conditions as ec  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402


def _browser_or_skip() -> None:
    missing = [p for p in (CHROMIUM, CHROMEDRIVER) if shutil.which(p) is None]
    if missing:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"{missing} missing under CI=true: .ci/run installs chromium and "
                        "chromium-driver")
        pytest.skip(f"{missing} not installed (apt-get install chromium chromium-driver)")


@pytest.fixture(scope="module")
def server(model_dir: Path, stream: pl.DataFrame, tmp_path_factory: pytest.TempPathFactory
           ) -> Iterator[Server]:
    _browser_or_skip()
    tmp = tmp_path_factory.mktemp("console")
    with serving(model_dir, tmp, stream, f"sqlite:///{tmp}/console.db") as running_server:
        yield running_server


@pytest.fixture(scope="module")
def browser() -> Iterator[webdriver.Chrome]:
    _browser_or_skip()
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                f"--window-size={WINDOW[0]},{WINDOW[1]}", "--hide-scrollbars"):
        options.add_argument(arg)
    driver = webdriver.Chrome(options=options,
                              service=webdriver.ChromeService(executable_path=CHROMEDRIVER))
    driver.set_page_load_timeout(60)
    try:
        yield driver
    finally:
        driver.quit()


def shot(driver: webdriver.Chrome, name: str) -> None:
    """Save a screenshot of the whole page (the window grown to the page's height)."""
    SHOTS.mkdir(parents=True, exist_ok=True)
    for _ in range(2):  # the window's chrome takes part of its height: measure again
        height = driver.execute_script("return document.documentElement.scrollHeight")
        inner = driver.execute_script("return window.innerHeight")
        size = driver.get_window_size()
        driver.set_window_size(WINDOW[0], min(int(size["height"]) + int(height) - int(inner),
                                              4000))
    driver.save_screenshot(str(SHOTS / f"{name}.png"))
    driver.set_window_size(*WINDOW)


def image_loaded(driver: webdriver.Chrome, css: str) -> bool:
    return bool(driver.execute_script(
        "const i = document.querySelector(arguments[0]);"
        "return !!i && i.complete && i.naturalWidth > 0;", css))


def wait(driver: webdriver.Chrome, condition: object, seconds: float = 30) -> object:
    return WebDriverWait(driver, seconds).until(condition)


def test_review_a_flagged_transaction_in_the_browser(server: Server, browser: webdriver.Chrome):
    b = browser
    # Refused without a session: any console page leads to the sign-in form.
    b.get(f"{server.url}/console/transactions/{server.flagged[0]}")
    wait(b, ec.presence_of_element_located((By.NAME, "key")))
    assert "/console/login" in b.current_url
    shot(b, "0-sign-in")
    b.find_element(By.NAME, "name").send_keys("Alice Analyst")
    b.find_element(By.NAME, "key").send_keys("wrong key")
    b.find_element(By.CSS_SELECTOR, "button.primary").click()
    wait(b, ec.presence_of_element_located((By.CSS_SELECTOR, "p.error")))
    b.find_element(By.NAME, "name").send_keys("Alice Analyst")
    b.find_element(By.NAME, "key").send_keys(API_KEY)
    b.find_element(By.CSS_SELECTOR, "button.primary").click()

    # Signed in, back where we were going: the transaction page.
    wait(b, ec.presence_of_element_located((By.CSS_SELECTOR, "table.reasons")))
    b.get(f"{server.url}/console/")
    rows = wait(b, ec.presence_of_all_elements_located((By.CSS_SELECTOR, "table.queue tbody tr")))
    assert len(rows) == min(len(server.flagged), 50)
    shot(b, "1-queue")
    tid = rows[0].find_element(By.CSS_SELECTOR, "td:nth-child(2) a").text
    rows[0].find_element(By.CSS_SELECTOR, "td:nth-child(2) a").click()

    wait(b, ec.presence_of_element_located((By.CSS_SELECTOR, "table.reasons")))
    assert tid in b.find_element(By.TAG_NAME, "h1").text
    reasons = b.find_elements(By.CSS_SELECTOR, "table.reasons tbody tr")
    assert len(reasons) == 3
    assert all(r.find_element(By.CSS_SELECTOR, "td.num b").text for r in reasons)
    assert "against threshold" in b.find_element(By.CSS_SELECTOR, "p.score").text
    assert "usually" in b.find_element(By.CSS_SELECTOR, "p.usual").text
    wait(b, lambda d: image_loaded(d, "img.plot"))
    shot(b, "2-transaction")

    b.find_element(By.NAME, "note").send_keys("card reported stolen")
    b.find_element(By.CSS_SELECTOR, "button.d-fraud").click()
    notice = wait(b, ec.presence_of_element_located((By.CSS_SELECTOR, "p.notice")))
    assert f"Recorded fraud for {tid}" in notice.text
    # The decided item left the open queue.
    links = [a.text for a in b.find_elements(By.CSS_SELECTOR, "table.queue tbody td a")]
    assert tid not in links

    with server.review() as review:
        (row,) = review.history(tid)
        assert (row.decision, row.note) == ("fraud", "card reported stolen")
        assert row.author.startswith("Alice Analyst (key ")
    with httpx.Client(base_url=server.url, headers=KEY) as client:
        items = client.get("/v1/feedback", params={"transactionId": tid}).json()["items"]
    assert [(i["decision"], i["current"]) for i in items] == [("fraud", True)]

    # The user page and the model page.
    b.get(f"{server.url}/console/transactions/{tid}")
    b.find_element(By.CSS_SELECTOR, "table.kv a[href*='/console/users/']").click()
    wait(b, lambda d: image_loaded(d, "img.plot"))
    assert b.find_elements(By.CSS_SELECTOR, "table.queue tbody tr")
    shot(b, "3-user")
    b.get(f"{server.url}/console/model")
    wait(b, lambda d: all(image_loaded(d, f"img[src$='{n}']")
                          for n in ("u-matrix.png", "hits.png", "flag-rate.png")))
    # The flag rate over time, from the database: the page's figure is the API's.
    with httpx.Client(base_url=server.url, headers=KEY) as client:
        rate = client.get("/v1/flag-rate").json()
    assert rate["stored"] == len(server.ids) and rate["flagged"] >= len(server.flagged)
    shown = b.find_element(By.CSS_SELECTOR, "#flag-rate [data-k='windowRate']").text
    assert shown == f"{100 * rate['flagRate']:.2f} %"
    assert b.find_element(By.CSS_SELECTOR, "#flag-rate [data-k='lastRate']").text.endswith("%")
    size = b.execute_script("const i = document.querySelector(\"img[src$='flag-rate.png']\");"
                            "return [i.naturalWidth, i.clientWidth];")
    assert size[0] >= 400 and size[1] >= 300  # drawn, and not shrunk out of legibility
    # The live tiles fill once the page has refreshed twice (rates need two samples).
    wait(b, lambda d: d.find_element(By.CSS_SELECTOR, "[data-k='rps']").text != "–")
    assert len(b.find_elements(By.CSS_SELECTOR, "section.card table tbody tr")) > 10
    shot(b, "4-model")

    # Signing out ends the session: the console asks again.
    b.find_element(By.CSS_SELECTOR, "form.who button").click()
    wait(b, ec.presence_of_element_located((By.NAME, "key")))
    b.get(f"{server.url}/console/")
    wait(b, ec.presence_of_element_located((By.NAME, "key")))
    assert "/console/login" in b.current_url
