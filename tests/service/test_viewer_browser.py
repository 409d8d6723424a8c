"""The viewer page in a real headless Chromium against the real running server (the ``server`` fixture)."""

import os
import shutil
from pathlib import Path

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import Select, WebDriverWait

CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
pytestmark = pytest.mark.skipif(
    not (Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists()),
    reason="needs Debian's chromium and chromium-driver (installed by .ci/run)",
)

# Pixels of a canvas, summarised in the page: how many distinct colours it shows.
DISTINCT_COLOURS = """
const canvas = arguments[0];
const data = canvas.getContext('2d').getImageData(0, 0, canvas.width, canvas.height).data;
const seen = new Set();
for (let i = 0; i < data.length; i += 4) seen.add((data[i] << 16) | (data[i + 1] << 8) | data[i + 2]);
return seen.size;
"""


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    profile = tmp_path_factory.mktemp("chromium-profile")
    for flag in (
        "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        f"--user-data-dir={profile}", "--window-size=1400,2200",
    ):  # fmt: skip
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    yield driver
    driver.quit()


def _analyse(driver, server, model, text=None):
    driver.get(server.url + "/ui/")
    body = driver.find_element(By.TAG_NAME, "body")
    WebDriverWait(driver, 30).until(lambda d: body.get_attribute("data-models"))
    Select(driver.find_element(By.ID, "model")).select_by_value(model)
    if text is not None:
        box = driver.find_element(By.ID, "text")
        box.clear()
        box.send_keys(text)
    driver.find_element(By.ID, "run").click()
    WebDriverWait(driver, 60).until(lambda d: body.get_attribute("data-ready"))
    assert body.get_attribute("data-ready") == "true", driver.find_element(By.ID, "status").text


def _save_screenshot(driver, tmp_path, name):
    shot = tmp_path / name
    driver.save_screenshot(str(shot))
    if os.environ.get("ATENCION_ARTIFACTS"):
        folder = Path(os.environ["ATENCION_ARTIFACTS"])
        folder.mkdir(parents=True, exist_ok=True)
        shutil.copy(shot, folder / name)
    return shot


def _severe(driver):
    return [entry for entry in driver.get_log("browser") if entry["level"] == "SEVERE"]


def test_causal_sparse_model_grid_arcs_and_detail(browser, server, tmp_path):
    _analyse(browser, server, "decoder-sparse")
    info = server.get("/info").json()
    config = next(m for m in info["models"] if m["name"] == "decoder-sparse")["config"]
    thumbs = browser.find_elements(By.CSS_SELECTOR, "canvas.thumb")
    assert len(thumbs) == config["n_layers"] * config["n_heads"]
    for thumb in thumbs:  # attention colours plus the layout's grey: never a blank canvas
        assert browser.execute_script(DISTINCT_COLOURS, thumb) >= 2

    arcs = browser.find_elements(By.CSS_SELECTOR, "#arcs line")
    assert arcs, "the arc view drew nothing"
    ends = [(int(a.get_attribute("data-query")), int(a.get_attribute("data-key"))) for a in arcs]
    assert all(key <= query for query, key in ends), "a causal model attends to a future token"

    last = thumbs[-1]
    last.click()
    detail = browser.find_element(By.ID, "detail")
    assert (detail.get_attribute("data-layer"), detail.get_attribute("data-head")) == (
        last.get_attribute("data-layer"),
        last.get_attribute("data-head"),
    )
    assert (
        f"Layer {last.get_attribute('data-layer')}, head {last.get_attribute('data-head')}"
        in browser.find_element(By.ID, "detail-title").text
    )
    large = browser.find_element(By.ID, "detail-canvas")
    assert browser.execute_script(DISTINCT_COLOURS, large) > 3
    assert browser.execute_script("return arguments[0].toDataURL('image/png')", large).startswith(
        "data:image/png"
    )
    ActionChains(browser).move_to_element_with_offset(large, 20, 20).perform()  # lands on a cell near the end
    assert "→" in browser.find_element(By.ID, "hover").text

    _save_screenshot(browser, tmp_path, "viewer-decoder-sparse.png")
    assert not _severe(browser)


def test_encoder_spanish_tokens_statistics_and_scale_switch(browser, server, tmp_path):
    text = "¿Dónde está la niña? El gato [MASK] en la casa."
    _analyse(browser, server, "encoder-dense", text)
    shown = [span.text for span in browser.find_elements(By.CSS_SELECTOR, "#rollout span")]
    assert "niña" in shown and "¿" in shown and "[MASK]" in shown
    rows = browser.find_elements(By.CSS_SELECTOR, "#stats tbody tr")
    assert len(rows) == len(browser.find_elements(By.CSS_SELECTOR, "canvas.thumb")) == 4
    assert browser.find_elements(By.CSS_SELECTOR, "#gradient span"), "no gradient × attention strip"
    assert "position" in browser.find_element(By.ID, "gradient-target").text

    thumb = browser.find_elements(By.CSS_SELECTOR, "canvas.thumb")[0]
    before = browser.execute_script("return arguments[0].toDataURL()", thumb)
    Select(browser.find_element(By.ID, "scale")).select_by_value("absolute")
    thumb = browser.find_elements(By.CSS_SELECTOR, "canvas.thumb")[0]
    assert browser.execute_script("return arguments[0].toDataURL()", thumb) != before

    rows[3].click()
    detail = browser.find_element(By.ID, "detail")
    assert (detail.get_attribute("data-layer"), detail.get_attribute("data-head")) == ("1", "1")
    _save_screenshot(browser, tmp_path, "viewer-encoder-dense.png")
    assert not _severe(browser)


def test_bad_input_is_shown_as_a_clear_message(browser, server):
    driver = browser
    driver.get(server.url + "/ui/")
    body = driver.find_element(By.TAG_NAME, "body")
    WebDriverWait(driver, 30).until(lambda d: body.get_attribute("data-models"))
    driver.find_element(By.ID, "layers").send_keys("7")
    driver.find_element(By.ID, "run").click()
    WebDriverWait(driver, 60).until(lambda d: body.get_attribute("data-ready"))
    assert body.get_attribute("data-ready") == "error"
    status = driver.find_element(By.ID, "status")
    assert "422" in status.text and "layers" in status.text and "error" in status.get_attribute("class")
    # the only console error is the browser's own note about the 422 response
    assert all("422" in entry["message"] for entry in _severe(driver))


def test_translator_cross_attention_source_by_target(browser, server, tmp_path):
    text = "La niña lee un libro en el jardín."
    _analyse(browser, server, "translator", text)
    assert browser.find_element(By.ID, "cross").is_displayed()
    assert not browser.find_element(By.ID, "overview").is_displayed()
    thumbs = browser.find_elements(By.CSS_SELECTOR, "canvas.cross-thumb")
    assert len(thumbs) == 2 * 2  # layers × heads of the tiny translator
    payload = server.post(
        "/attention", {"inputs": text, "model": "translator", "parameters": {"gradient": False}}
    )
    S, T = len(payload.json()["source_tokens"]), len(payload.json()["tokens"])
    for thumb in thumbs:  # one pixel per (target, source) cell, never blank
        size = browser.execute_script("return [arguments[0].width, arguments[0].height]", thumb)
        assert size == [S, T]
        assert browser.execute_script(DISTINCT_COLOURS, thumb) >= 3
    large = browser.find_element(By.ID, "cross-canvas")
    assert browser.execute_script(DISTINCT_COLOURS, large) > 5
    assert "rows: target, columns: source" in browser.find_element(By.ID, "cross-title").text
    shown = [span.text for span in browser.find_elements(By.CSS_SELECTOR, "#cross-rollout span")]
    assert "niña" in "".join(shown) and len(shown) == S
    assert browser.find_elements(By.CSS_SELECTOR, "#cross-gradient span")
    thumbs[-1].click()
    assert "layer 1, head 1" in browser.find_element(By.ID, "cross-title").text
    _save_screenshot(browser, tmp_path, "viewer-translator.png")
    assert not _severe(browser)
    _analyse(browser, server, "decoder-dense")  # back to a one-stack model: its own sections again
    assert not browser.find_element(By.ID, "cross").is_displayed()
    assert browser.find_element(By.ID, "overview").is_displayed()
