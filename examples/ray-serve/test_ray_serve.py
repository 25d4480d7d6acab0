"""serve_ccsm.py: two Ray Serve replicas answer speech requests and share one voices folder."""

from __future__ import annotations

import io
import socket
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

ray = pytest.importorskip("ray", reason="ray is not installed: pip install 'ray[serve]>=2.10'")
httpx = pytest.importorskip("httpx")

import numpy as np  # noqa: E402
import serve_ccsm  # noqa: E402
import soundfile as sf  # noqa: E402
from ray import serve  # noqa: E402

HERE = Path(__file__).resolve().parent
HEADER = serve_ccsm.REPLICA_HEADER
TIMEOUT = 300.0  # Ray's start and each replica's model load are slow on two cores


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    cache, data = tmp_path_factory.mktemp("cache"), tmp_path_factory.mktemp("data")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("XDG_CACHE_HOME", str(cache))  # serve_ccsm forwards it to the replicas
        mp.setenv("CCSM_DATA_DIR", str(data))
        from ccsm_core.loading.demo import ensure_demo

        ensure_demo()  # once, before two replicas would both make it
        port = free_port()
        # the replicas unpickle CcsmServer by reference: they import serve_ccsm from here
        ray.init(num_cpus=2, include_dashboard=False, runtime_env={"env_vars": {"PYTHONPATH": str(HERE)}})
        try:
            serve.start(http_options={"host": "127.0.0.1", "port": port})
            serve.run(serve_ccsm.build("demo", "numpy", replicas=2), name="ccsm", route_prefix="/")
            url = f"http://127.0.0.1:{port}"
            with httpx.Client(base_url=url, timeout=TIMEOUT) as client:
                deadline = time.monotonic() + TIMEOUT
                while True:
                    try:
                        if client.get("/health").status_code == 200:
                            break
                    except httpx.TransportError:
                        pass
                    assert time.monotonic() < deadline, "the deployment never answered /health"
                    time.sleep(1)
                yield client, data / "voices"
        finally:
            try:
                serve.shutdown()
            finally:
                ray.shutdown()


def speech(client, i: int, max_audio_ms: int = 240, voice: str = "0"):
    body = {
        "model": "csm",
        "input": f"Request number {i}.",
        "voice": voice,
        "response_format": "wav",
        "seed": i,
        "max_audio_ms": max_audio_ms,
    }
    return client.post("/v1/audio/speech", json=body)


def check_wav(r) -> None:
    assert r.status_code == 200, r.text
    assert r.content[:4] == b"RIFF" and r.content[8:12] == b"WAVE"
    audio, rate = sf.read(io.BytesIO(r.content))
    assert rate == 24000 and 0 < len(audio) <= 240 * 24


def from_another_replica(client, send, replica: str, rounds: int = 20):
    """A response to ``send()`` from a replica other than ``replica``. Ray's proxy gives a request
    to the less busy replica (ties may always go the same way), so ``send`` is repeated while a
    longer speech request keeps one replica busy."""
    with ThreadPoolExecutor(1) as pool:
        for i in range(rounds):
            busy = pool.submit(speech, client, 100 + i, 4000)
            while not busy.done():
                r = send()
                if r.headers[HEADER] != replica:
                    busy.result()
                    return r
            assert busy.result().status_code == 200
    pytest.fail(f"only replica {replica} answered")


def test_replicas_share_the_work(server):
    client, _ = server
    with ThreadPoolExecutor(4) as pool:
        responses = list(pool.map(lambda i: speech(client, i), range(4)))
    for r in responses:
        check_wav(r)
    seen = {r.headers[HEADER] for r in responses}
    if len(seen) == 1:  # all four went to one replica: make sure that the other one answers too
        r = from_another_replica(client, lambda: speech(client, 5), next(iter(seen)))
        check_wav(r)
        seen.add(r.headers[HEADER])
    assert len(seen) == 2, seen


def test_a_voice_saved_through_one_replica_is_seen_by_the_other(server):
    client, voices_dir = server
    buf = io.BytesIO()
    sf.write(buf, np.zeros(24000 // 2, dtype=np.float32), 24000, format="WAV")
    files = {"audio": ("ann.wav", buf.getvalue(), "audio/wav")}
    r = client.post("/v1/audio/voices", data={"name": "ann", "speaker": "0", "text": "Hi."}, files=files)
    assert r.status_code == 201, r.text
    saver = r.headers[HEADER]
    assert (voices_dir / "ann.ccsmvoice").exists()  # $CCSM_DATA_DIR reached the replicas

    r = from_another_replica(client, lambda: client.get("/v1/audio/voices"), saver)
    assert r.status_code == 200, r.text
    assert "ann" in [v["name"] for v in r.json()["data"]]
    check_wav(from_another_replica(client, lambda: speech(client, 9, voice="ann"), saver))
