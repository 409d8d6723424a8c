"""The viewer speaks the browser's language: Spanish for a Spanish browser, English for an English one, with a
switch; every label in both; tokens shown as text. Real headless Chromium against the real server."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import Select, WebDriverWait
from tokenizers import Tokenizer

from service.picture import shown

CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
STATIC = Path(__file__).resolve().parents[2] / "service" / "static"
pytestmark = pytest.mark.skipif(
    not (Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists()),
    reason="needs Debian's chromium and chromium-driver (installed by .ci/run)",
)


def _browser(profile: Path, language: str) -> webdriver.Chrome:
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (
        "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", f"--user-data-dir={profile}", "--window-size=1400,2200",
        f"--lang={language}", f"--accept-lang={language}",
    ):  # fmt: skip
        options.add_argument(flag)
    options.add_experimental_option("prefs", {"intl.accept_languages": language})
    return webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)


@pytest.fixture(scope="module", params=["es-ES,es", "en-US,en"], ids=["spanish", "english"])
def browser(request, tmp_path_factory):
    driver = _browser(tmp_path_factory.mktemp("chromium-profile"), request.param)
    yield request.param[:2], driver
    driver.quit()


def _text(driver, selector: str) -> str:
    return driver.find_element(By.CSS_SELECTOR, selector).text


def _analyse(driver, server, model: str, text: str) -> None:
    driver.get(server.url + "/ui/")
    body = driver.find_element(By.TAG_NAME, "body")
    WebDriverWait(driver, 30).until(lambda d: body.get_attribute("data-models"))
    Select(driver.find_element(By.ID, "model")).select_by_value(model)
    box = driver.find_element(By.ID, "text")
    box.clear()
    box.send_keys(text)
    driver.find_element(By.ID, "run").click()
    WebDriverWait(driver, 60).until(lambda d: body.get_attribute("data-ready"))
    assert body.get_attribute("data-ready") == "true", _text(driver, "#status")


WORDS = {  # what each language shows, static labels and labels viewer.js writes
    "es": {"#run": "Analizar", "#overview h2": "Capas × cabezas", "#statistics h2": "Estadísticas por cabeza",
           "#grid .head-label": "cabeza 0", "#stats th": "capa"},
    "en": {"#run": "Analyse", "#overview h2": "Layers × heads", "#statistics h2": "Per-head statistics",
           "#grid .head-label": "head 0", "#stats th": "layer"},
}  # fmt: skip


def test_the_page_speaks_the_browsers_language(browser, server) -> None:
    language, driver = browser
    _analyse(driver, server, "decoder-dense", "¿Dónde está la niña?\n")
    assert driver.execute_script("return navigator.languages[0]").startswith(language)
    assert driver.execute_script("return document.documentElement.lang") == language
    for selector, word in WORDS[language].items():
        assert _text(driver, selector) == word, (selector, _text(driver, selector))
    other = WORDS["en" if language == "es" else "es"]
    assert _text(driver, "#run") != other["#run"]
    status = _text(driver, "#status")
    assert ("capas × cabezas: " if language == "es" else "layers × heads: ") in status, status


def test_the_switch_changes_every_label_and_is_remembered(browser, server) -> None:
    language, driver = browser
    other = "en" if language == "es" else "es"
    _analyse(driver, server, "decoder-dense", "El gato come pan.")
    Select(driver.find_element(By.ID, "language")).select_by_value(other)
    for selector, word in WORDS[other].items():  # including what viewer.js drew before the switch
        assert _text(driver, selector) == word, (selector, _text(driver, selector))
    kinds = {"es": "decodificador", "en": "decoder"}
    assert kinds[other] in _text(driver, "#model")
    driver.get(server.url + "/ui/")  # reloaded: the choice stays
    assert _text(driver, "#run") == WORDS[other]["#run"]
    Select(driver.find_element(By.ID, "language")).select_by_value(language)
    assert _text(driver, "#run") == WORDS[language]["#run"]


def test_every_label_exists_in_both_languages(browser, server) -> None:
    _, driver = browser
    driver.get(server.url + "/ui/")
    es, en = driver.execute_script("return [Object.keys(MESSAGES.es), Object.keys(MESSAGES.en)]")
    assert sorted(es) == sorted(en)
    keys = driver.execute_script(
        "return [...document.querySelectorAll('[data-i18n]')].map((e) => e.dataset.i18n)"
        ".concat([...document.querySelectorAll('[data-i18n-placeholder]')].map((e) => e.dataset.i18nPlaceholder))"
        ".concat([...document.querySelectorAll('[data-i18n-title]')].map((e) => e.dataset.i18nTitle))"
    )
    assert len(keys) > 30 and set(keys) <= set(es)
    source = "".join((STATIC / name).read_text(encoding="utf-8") for name in ("viewer.js", "cross.js"))
    used = set(re.findall(r'\bt\("([\w.]+)"', source))
    assert used and used <= set(es), sorted(used - set(es))
    es_values = driver.execute_script("return Object.values(MESSAGES.es)")
    en_values = driver.execute_script("return Object.values(MESSAGES.en)")
    assert len(set(es_values) - set(en_values)) > 50  # translated, not copied


def test_the_gradient_target_is_shown_as_text(browser, server, tiny_checkpoints) -> None:
    _, driver = browser
    text = "El perro come.\nLa gata bebe leche.\n"
    _analyse(driver, server, "decoder-dense", text)
    answer = server.post("/attention", {"inputs": text, "model": "decoder-dense"}).json()
    target = answer["gradient"]["target"]
    tokenizer = Tokenizer.from_file(str(tiny_checkpoints / "decoder-dense" / "tokenizer.json"))
    assert target["text"] == tokenizer.decode([target["token_id"]], skip_special_tokens=False)
    assert f"«{shown(target['text'])}»" in _text(driver, "#gradient-target")
    labels = driver.execute_script(
        "return [...document.querySelectorAll('#rollout span')].map((s) => s.textContent)"
    )
    assert "↵" in labels and not any(c in "".join(labels) for c in "ĠĊ")  # the line break, not «Ċ»
