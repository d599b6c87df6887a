"""The web page at GET /, in a real headless Chromium (Debian's chromium + chromium-driver) driven by Selenium."""

import os
import shutil
import tempfile

import httpx
import numpy as np
import pytest
import soundfile as sf
from helpers.audio import CLIP_S, GENRES, SR, needs_espeak, speech, tone
from helpers.processes import Server

CHROMIUM, CHROMEDRIVER = shutil.which("chromium"), shutil.which("chromedriver")
if not (CHROMIUM and CHROMEDRIVER):
    message = "the web page test needs chromium and chromium-driver (apt-get install chromium chromium-driver)"
    if os.environ.get("CI", "").lower() == "true":  # CI installs them: their absence there is a failure
        raise RuntimeError(message)
    pytest.skip(message, allow_module_level=True)

from selenium import webdriver  # noqa: E402
from selenium.webdriver.chrome.service import Service as ChromeService  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402


@pytest.fixture(scope="module")
def server(trained, tmp_path_factory):
    server = Server(tmp_path_factory.mktemp("web"), "--model_path", str(trained["checkpoint"]))
    server.wait_ready()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    profile = tempfile.mkdtemp(prefix="chromium-profile-")
    for flag in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--use-fake-device-for-media-stream",  # a microphone that beeps, for the recording test
        "--use-fake-ui-for-media-stream",  # microphone access granted without a prompt
        f"--user-data-dir={profile}",
        "--window-size=1000,1100",
    ):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=ChromeService(CHROMEDRIVER), options=options)  # no Selenium Manager download
    yield driver
    driver.quit()
    shutil.rmtree(profile, ignore_errors=True)


@pytest.fixture(scope="module")
def shots(tmp_path_factory):
    return tmp_path_factory.mktemp("screenshots")


def upload(browser, path) -> None:
    browser.find_element(By.ID, "file").send_keys(str(path))


def shown_result(browser, timeout: float = 60) -> tuple[str, dict[str, float]]:
    """The genre and the bars (genre -> probability) the page shows once it has an answer."""
    WebDriverWait(browser, timeout).until(lambda b: b.find_element(By.ID, "result").is_displayed())
    genre = browser.find_element(By.ID, "genre").get_attribute("textContent")
    bars = {
        bar.get_attribute("data-genre"): float(bar.get_attribute("data-probability"))
        for bar in browser.find_elements(By.CSS_SELECTOR, "#bars .bar")
    }
    return genre, bars


def shown_error(browser, timeout: float = 60) -> str:
    WebDriverWait(browser, timeout).until(lambda b: b.find_element(By.ID, "error").is_displayed())
    return browser.find_element(By.ID, "error").text


def test_a_clip_shows_its_genre_and_a_bar_per_genre(server, browser, shots, real_dataset):
    clip = sorted((real_dataset / "genres_original").glob("*/*.wav"))[0]  # a real GTZAN recording
    expected = httpx.post(f"{server.url}/predict", files={"file": (clip.name, clip.read_bytes())}, timeout=60).json()
    browser.get(server.url + "/")
    upload(browser, clip)
    genre, bars = shown_result(browser)
    assert genre == expected["genre"]
    assert bars == pytest.approx(expected["probabilities"]) and set(bars) == set(GENRES)
    assert browser.find_element(By.CSS_SELECTOR, "#bars .bar.top").get_attribute("data-genre") == genre
    assert not browser.find_element(By.ID, "timeline-box").is_displayed()  # one window: no timeline
    tagged = httpx.post(f"{server.url}/predict?tags=true", files={"file": (clip.name, clip.read_bytes())}, timeout=60)
    shown = [f"{t['tag']} {round(100 * t['probability'])}%" for t in tagged.json()["tags"]]
    assert browser.find_element(By.ID, "tags").text == "Tags: " + " · ".join(shown)  # musicnn's tags of the audio
    browser.save_screenshot(str(shots / "clip.png"))


def test_a_long_track_shows_its_timeline(server, browser, shots, tmp_path):
    path = tmp_path / "three genres.flac"
    sf.write(path, np.concatenate([tone(g, i, seconds=40) for i, g in enumerate(GENRES)]), SR)
    files = {"file": (path.name, path.read_bytes())}
    expected = httpx.post(f"{server.url}/predict?segments=true", files=files, timeout=60).json()["segments"]
    browser.get(server.url + "/")
    upload(browser, path)
    shown_result(browser)
    assert browser.find_element(By.ID, "timeline-box").is_displayed()
    pieces = browser.find_elements(By.CSS_SELECTOR, "#timeline .seg")
    assert [p.get_attribute("data-genre") for p in pieces] == [s["genre"] for s in expected] and len(pieces) == 4
    assert pieces[0].get_attribute("data-genre") == "low" and pieces[-1].get_attribute("data-genre") == "high"
    widths = [p.rect["width"] for p in pieces]
    assert min(widths) > 0.9 * max(widths)  # windows of 30 s get equal room on the strip
    browser.save_screenshot(str(shots / "timeline.png"))


@needs_espeak
def test_speech_shows_not_sure_instead_of_a_genre(server, browser, shots, tmp_path):
    path = speech(tmp_path / "news.wav")
    browser.get(server.url + "/")
    upload(browser, path)
    genre, bars = shown_result(browser)
    assert genre == "Not sure" and set(bars) == set(GENRES)
    assert "does not sound like music (speech-like)" in browser.find_element(By.ID, "meta").text
    browser.save_screenshot(str(shots / "not-music.png"))


@pytest.mark.parametrize(
    ("name", "data", "message"),
    [
        ("broken.wav", b"RIFF\x24\x00\x00\x00WAVEfmt garbage", "broken.wav: not a readable audio file"),
        ("notes.txt", b"shopping list: milk, eggs", "notes.txt: is a text file"),
    ],
)
def test_a_bad_file_shows_a_clear_error(server, browser, shots, tmp_path, name, data, message):
    (tmp_path / name).write_bytes(data)
    browser.get(server.url + "/")
    upload(browser, tmp_path / name)
    assert message in shown_error(browser)
    assert not browser.find_element(By.ID, "result").is_displayed()
    browser.save_screenshot(str(shots / f"error-{name}.png"))


@pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="the browser records WebM/Opus, which needs ffmpeg")
def test_a_recording_from_the_microphone_is_classified(server, browser):
    browser.get(server.url + "/")
    record = browser.find_element(By.ID, "record")
    record.click()
    long_enough = f"Stop (0:{round(CLIP_S):02d})"  # a recording the model judges
    WebDriverWait(browser, CLIP_S + 10).until(lambda b: long_enough in record.text)
    record.click()
    answered = WebDriverWait(browser, 60).until(
        lambda b: [e for e in (b.find_element(By.ID, "result"), b.find_element(By.ID, "error")) if e.is_displayed()]
    )
    assert answered[0].get_attribute("id") == "result", answered[0].text
    genre, bars = shown_result(browser)
    # Chromium's fake microphone beeps a steady tone: the page says it is not music instead of naming a genre
    assert genre == "Not sure" and set(bars) == set(GENRES)
    meta = browser.find_element(By.ID, "meta").text
    assert meta.startswith("recording.") and "does not sound like music" in meta


def test_the_page_fits_a_phone_screen(server, browser, shots, tmp_path):
    path = tmp_path / "song.wav"
    sf.write(path, tone("mid", 3, seconds=65), SR)
    phone = {"width": 390, "height": 844, "deviceScaleFactor": 1, "mobile": True}  # narrower than a window can be
    browser.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", phone)
    try:
        browser.get(server.url + "/")
        upload(browser, path)
        assert shown_result(browser)[0] == "mid"
        overflow = browser.execute_script("return document.documentElement.scrollWidth - window.innerWidth")
        assert overflow <= 0, "the page scrolls sideways on a phone"
        browser.save_screenshot(str(shots / "phone.png"))
    finally:
        browser.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})


def test_swagger_ui_renders_offline(server, browser):
    browser.get(server.url + "/docs")
    WebDriverWait(browser, 30).until(lambda b: b.find_elements(By.CSS_SELECTOR, ".opblock-summary-path"))
    paths = {e.text for e in browser.find_elements(By.CSS_SELECTOR, ".opblock-summary-path")}
    assert {"/predict", "/models", "/health"} <= {p.replace("\u200b", "") for p in paths}
