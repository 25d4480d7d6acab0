"""The page of `ccsm serve`, in Debian's chromium driven by selenium, against the real server.

The server runs the demo model (random weights: its audio is noise, which is all the page needs)
in a subprocess; the browser plays into a null sink (headless, autoplay allowed), so the audio
clock advances and the page's `window.ccsmStats` counts played samples. chromium and chromedriver
come from Debian (`make install` installs them with apt-get); the test never downloads a browser.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from PIL import Image
from selenium import webdriver
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions
from selenium.webdriver.support.ui import Select, WebDriverWait

from ccsm_core.loading.sources import smollm2_path

CHROMIUM = shutil.which("chromium")
CHROMEDRIVER = shutil.which("chromedriver")
FRAME = 1920  # samples per 80 ms frame at 24 kHz
ROOT = Path(__file__).parents[1]

pytestmark = pytest.mark.skipif(
    not (CHROMIUM and CHROMEDRIVER),
    reason="chromium/chromedriver not installed (make install installs them from Debian)",
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ccsm() -> str:
    beside = Path(sys.executable).with_name("ccsm")
    found = str(beside) if beside.exists() else shutil.which("ccsm")
    assert found, "the ccsm command is not installed"
    return found


class Server:
    def __init__(self, url: str, log: Path) -> None:
        self.url, self.log = url, log

    def log_tail(self) -> str:
        return self.log.read_text(errors="replace")[-4000:]

    def get(self, path: str) -> dict:
        with urllib.request.urlopen(self.url + path, timeout=30) as response:
            return json.load(response)

    def post_error(self, path: str, body: dict) -> tuple[int, dict]:
        """POST JSON that should fail: the status and the error body."""
        request = urllib.request.Request(
            self.url + path, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
        )
        try:
            with urllib.request.urlopen(request, timeout=60) as response:
                return response.status, {}
        except urllib.error.HTTPError as error:
            return error.code, json.loads(error.read())


@contextlib.contextmanager
def _serve(home: Path, *options: str, **env: str) -> Iterator[Server]:
    """`ccsm serve --model demo [OPTIONS]` on a free port, data and cache under HOME, until the block ends."""
    port = _free_port()
    env = dict(os.environ, CCSM_DATA_DIR=str(home / "data"), XDG_CACHE_HOME=str(home / "cache"), **env)
    log = home / "server.log"
    command = [_ccsm(), "serve", "--model", "demo", "--host", "127.0.0.1", "--port", str(port), *options]
    with open(log, "wb") as out:
        proc = subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT, cwd=home)
    server = Server(f"http://127.0.0.1:{port}", log)
    try:
        deadline = time.monotonic() + 90
        while True:
            if proc.poll() is not None:
                pytest.fail(f"ccsm serve exited with {proc.returncode}:\n{server.log_tail()}")
            try:
                with urllib.request.urlopen(server.url + "/health", timeout=5) as response:
                    if response.status == 200:
                        break
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"ccsm serve did not answer /health within 90 s:\n{server.log_tail()}")
            time.sleep(0.25)
        yield server
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=15)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    # with the bundled SmolLM2 (`make install` installs it) the chat tab streams real replies
    text = ("--text-model", "smollm2") if smollm2_path() is not None else ()
    with _serve(tmp_path_factory.mktemp("server"), *text) as running:
        yield running


@pytest.fixture(scope="module")
def downloads(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("downloads")


@pytest.fixture(scope="module")
def driver(downloads: Path) -> Iterator[webdriver.Chrome]:
    assert CHROMIUM and CHROMEDRIVER and Path(CHROMEDRIVER).is_file()
    options = Options()
    options.binary_location = CHROMIUM
    for argument in (
        "--headless=new",
        "--no-sandbox",
        "--disable-dev-shm-usage",
        "--autoplay-policy=no-user-gesture-required",
        "--window-size=1100,1000",
    ):
        options.add_argument(argument)
    options.add_experimental_option(
        "prefs", {"download.default_directory": str(downloads), "download.prompt_for_download": False}
    )
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    # an explicit driver path: selenium never runs its manager (which would download a browser)
    browser = webdriver.Chrome(options=options, service=Service(executable_path=CHROMEDRIVER))
    try:
        yield browser
    finally:
        browser.quit()


def _stats(driver: webdriver.Chrome) -> dict:
    return driver.execute_script("return Object.assign({}, window.ccsmStats)")


def _text(driver: webdriver.Chrome, element_id: str) -> str:
    return driver.find_element(By.ID, element_id).text


def _console(driver: webdriver.Chrome) -> str:
    try:
        return "\n".join(entry["message"] for entry in driver.get_log("browser"))
    except Exception:  # the log is a chromium extra; without it, nothing to add
        return ""


def _open_page(driver: webdriver.Chrome, server: Server) -> None:
    driver.get(server.url + "/")
    WebDriverWait(driver, 30).until(lambda d: d.execute_script("return !!window.ccsmStats"))


def _open(driver: webdriver.Chrome, server: Server) -> None:
    _open_page(driver, server)
    # the picker is filled from /v1/audio/voices once the page loads
    WebDriverWait(driver, 30).until(lambda d: len(Select(d.find_element(By.ID, "voice")).options) >= 2)


def _fill(driver: webdriver.Chrome, element_id: str, value: str) -> None:
    element = driver.find_element(By.ID, element_id)
    element.clear()
    element.send_keys(value)


def _speak(driver: webdriver.Chrome, server: Server, timeout: float = 120) -> int:
    """Click Speak; wait until the request ends and some audio has started. The samples received."""
    before = _stats(driver)
    driver.find_element(By.ID, "speak").click()

    def ended(d: webdriver.Chrome) -> bool:
        now = _stats(d)
        return now["requests"] > before["requests"] and now["active"] == 0

    WebDriverWait(driver, timeout).until(ended)
    after = _stats(driver)
    assert after["errors"] == before["errors"], (
        f"status: {_text(driver, 'status')}\n{_console(driver)}\n{server.log_tail()}"
    )
    received = after["samplesReceived"] - before["samplesReceived"]
    assert received > 0 and received % FRAME == 0, received
    WebDriverWait(driver, 30).until(lambda d: _stats(d)["samplesPlayed"] > before["samplesPlayed"])
    assert _text(driver, "status").startswith("Done"), _text(driver, "status")
    return received


def _one_second_wav(path: Path) -> Path:
    t = np.arange(24000) / 24000
    sf.write(path, (0.3 * np.sin(2 * np.pi * 220 * t)).astype(np.float32), 24000, subtype="PCM_16")
    return path


def test_speech_streams_plays_and_downloads(server: Server, driver: webdriver.Chrome, downloads: Path) -> None:
    _open(driver, server)
    _fill(driver, "text", "Hello there.")
    Select(driver.find_element(By.ID, "voice")).select_by_visible_text("speaker 0")
    _fill(driver, "seed", "7")
    received = _speak(driver, server)

    # every sample played in the end, and the WAV download holds what was received
    WebDriverWait(driver, 30).until(lambda d: _stats(d)["samplesPlayed"] == _stats(d)["samplesReceived"])
    driver.find_element(By.ID, "download").click()
    saved = downloads / "ccsm-speech.wav"
    WebDriverWait(driver, 30).until(lambda d: saved.exists() and not list(downloads.glob("*.crdownload")))
    audio, rate = sf.read(saved, dtype="int16")
    assert rate == 24000 and audio.ndim == 1 and len(audio) == received
    assert np.abs(audio.astype(np.int32)).max() > 0


def test_uploaded_voice_is_picked_and_speaks(server: Server, driver: webdriver.Chrome, tmp_path: Path) -> None:
    _open(driver, server)
    _fill(driver, "upload-name", "tester")
    _fill(driver, "upload-speaker", "1")
    _fill(driver, "upload-text", "A short test recording.")
    driver.find_element(By.ID, "upload-audio").send_keys(str(_one_second_wav(tmp_path / "clip.wav")))
    driver.find_element(By.ID, "upload").click()

    def picker(d: webdriver.Chrome) -> Select:
        return Select(d.find_element(By.ID, "voice"))

    WebDriverWait(driver, 60).until(lambda d: "tester" in [o.get_attribute("value") for o in picker(d).options])
    assert picker(driver).first_selected_option.get_attribute("value") == "tester", _text(driver, "status")
    voices = {v["name"]: v for v in server.get("/v1/audio/voices")["data"]}
    assert "tester" in voices and voices["tester"]["speaker"] == 1 and voices["tester"]["turns"] == 1

    _fill(driver, "text", "Now in the new voice.")
    _fill(driver, "seed", "3")
    _speak(driver, server)

    png = driver.get_screenshot_as_png()
    shot = tmp_path / "page.png"
    shot.write_bytes(png)
    output = ROOT / "build" / "test-output"
    output.mkdir(parents=True, exist_ok=True)
    (output / "page.png").write_bytes(png)
    with Image.open(shot) as image:
        colors = image.convert("RGB").getcolors(maxcolors=1 << 24)
    assert colors is not None and len(colors) > 20, f"the screenshot looks blank: {shot}"

    # the same name again: the server's conflict shows, until "replace" is ticked
    def upload(replace: bool) -> None:
        before = _stats(driver)["errors"]
        _fill(driver, "upload-name", "tester")
        _fill(driver, "upload-text", "A short test recording.")
        driver.find_element(By.ID, "upload-audio").send_keys(str(tmp_path / "clip.wav"))
        if replace:
            driver.find_element(By.ID, "upload-replace").click()
        driver.find_element(By.ID, "upload").click()
        WebDriverWait(driver, 60).until(
            lambda d: _stats(d)["errors"] > before or _text(d, "status").startswith("Saved voice")
        )

    upload(replace=False)
    assert "exists" in _text(driver, "status"), _text(driver, "status")
    upload(replace=True)
    assert _text(driver, "status") == "Saved voice tester (speaker 0).", _text(driver, "status")

    # deleting the picked voice asks first, then the picker falls back to speaker 0
    driver.find_element(By.ID, "delete-voice").click()
    WebDriverWait(driver, 10).until(expected_conditions.alert_is_present()).accept()
    WebDriverWait(driver, 30).until(lambda d: _text(d, "status") == "Deleted voice tester.")
    assert picker(driver).first_selected_option.get_attribute("value") == "0"
    assert "tester" not in [o.get_attribute("value") for o in picker(driver).options]
    assert "tester" not in [v["name"] for v in server.get("/v1/audio/voices")["data"]]


def test_server_errors_show_in_the_status_line(server: Server, driver: webdriver.Chrome) -> None:
    _open(driver, server)
    body = {"model": "csm", "input": "Hi.", "voice": "no-such-voice", "response_format": "pcm"}
    status, error = server.post_error("/v1/audio/speech", {**body, "stream_format": "audio"})
    assert status >= 400 and error["error"]["message"], (status, error)

    driver.execute_script(
        "const s = document.getElementById('voice'); s.add(new Option('missing', 'no-such-voice')); "
        "s.value = 'no-such-voice';"
    )
    _fill(driver, "text", "Hi.")
    before = _stats(driver)
    driver.find_element(By.ID, "speak").click()
    WebDriverWait(driver, 60).until(lambda d: _stats(d)["errors"] > before["errors"] and _stats(d)["active"] == 0)
    assert error["error"]["message"] in _text(driver, "status")


def test_chat_tab_follows_the_models(server: Server, driver: webdriver.Chrome) -> None:
    _open(driver, server)
    text_models = [m["id"] for m in server.get("/v1/models")["data"] if m["id"] != "csm"]
    driver.find_element(By.ID, "chat-tab").click()
    assert driver.find_element(By.ID, "chat-panel").is_displayed()
    assert not driver.find_element(By.ID, "speech-panel").is_displayed()
    if not text_models:
        WebDriverWait(driver, 30).until(lambda d: "No text model" in _text(d, "chat-note"))
        assert not driver.find_element(By.ID, "chat-send").is_enabled()
        return
    WebDriverWait(driver, 30).until(lambda d: d.find_element(By.ID, "chat-send").is_enabled())
    driver.find_element(By.ID, "chat-speak").click()  # and the reply is spoken when it is complete
    before = _stats(driver)
    _fill(driver, "chat-input", "Say hello in three words.")
    driver.find_element(By.ID, "chat-send").click()
    reply = (By.CSS_SELECTOR, "#chat-log .message.assistant p")
    WebDriverWait(driver, 120).until(lambda d: d.find_element(*reply).text.strip())
    WebDriverWait(driver, 120).until(lambda d: d.find_element(By.ID, "chat-send").is_enabled())
    message = driver.find_element(By.CSS_SELECTOR, "#chat-log .message.assistant")
    assert "failed" not in message.get_attribute("class"), _text(driver, "status")
    WebDriverWait(driver, 120).until(lambda d: _stats(d)["requests"] > before["requests"] and _stats(d)["active"] == 0)
    after = _stats(driver)
    assert after["errors"] == before["errors"], _text(driver, "status")
    spoken = after["samplesReceived"] - before["samplesReceived"]
    assert spoken > 0 and spoken % FRAME == 0, spoken


def test_api_key_is_sent_and_kept(driver: webdriver.Chrome, tmp_path: Path) -> None:
    with _serve(tmp_path, CCSM_API_KEY="page-secret") as keyed:
        driver.get(keyed.url + "/")  # the page itself needs no key; the API does
        driver.execute_script("localStorage.clear()")
        _open_page(driver, keyed)
        WebDriverWait(driver, 30).until(lambda d: _stats(d)["errors"] > 0)
        assert "Could not list the voices" in _text(driver, "status")

        _fill(driver, "api-key", "page-secret")
        driver.find_element(By.ID, "text").click()  # leaving the field saves the key
        WebDriverWait(driver, 30).until(lambda d: d.execute_script("return localStorage.getItem('ccsm.apiKey')"))
        _open_page(driver, keyed)  # a reload keeps the key
        assert driver.find_element(By.ID, "api-key").get_attribute("value") == "page-secret"
        _fill(driver, "text", "Hi.")
        _fill(driver, "seed", "1")
        _speak(driver, keyed)
        driver.find_element(By.ID, "chat-tab").click()  # no --text-model: nothing to chat with
        WebDriverWait(driver, 30).until(lambda d: "No text model" in _text(d, "chat-note"))
        assert not driver.find_element(By.ID, "chat-send").is_enabled()
        driver.execute_script("localStorage.clear()")
