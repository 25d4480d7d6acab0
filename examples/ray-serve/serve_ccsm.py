"""ccsm's OpenAI-compatible speech server as a Ray Serve deployment with N replicas.

    python serve_ccsm.py --model demo --replicas 2 --port 8000

Each replica loads its own copy of the model, runs its own `Engine` and serves the app that
``ccsm serve`` serves (`ccsm_core.server.app.create_app`). The replica hands every HTTP request
to that app as it stands (ASGI scope, receive, send), so streamed responses stay streamed, and
adds an ``x-ccsm-replica`` header naming the replica that answered. Voices are files in one
directory (``--voices-dir``, else ``$CCSM_DATA_DIR/voices``); put it on storage that every
replica sees and a voice saved through one replica is there for the others.
"""

from __future__ import annotations

import argparse
import os
import time
from typing import Any

import ray
from ray import serve
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

REPLICA_HEADER = "x-ccsm-replica"
# settings that the replicas need from this process's environment, when set here
FORWARDED_ENV = ("CCSM_API_KEY", "CCSM_DATA_DIR", "XDG_CACHE_HOME", "HF_HOME", "HF_HUB_CACHE")


class _Forward(Response):
    """A response that lets ``app`` answer the request itself, tagged with the replica's name."""

    def __init__(self, app: ASGIApp, replica: str) -> None:  # no body of its own
        self.app, self.replica = app, replica.encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        # Ray's proxy gives the request an x-request-id and puts it on the response; the app
        # echoes the same id: keep one copy
        rid = dict(scope.get("headers", [])).get(b"x-request-id")

        async def tagged(message: Any) -> None:
            if message["type"] == "http.response.start":
                headers = [h for h in message.get("headers", []) if h != (b"x-request-id", rid)]
                message = {**message, "headers": [*headers, (REPLICA_HEADER.encode(), self.replica)]}
            await send(message)

        await self.app(scope, receive, tagged)


@serve.deployment
class CcsmServer:
    """One replica: a model, its engine, and the server app over them."""

    def __init__(
        self,
        model: str,
        backend: str | None = None,
        voices_dir: str | None = None,
        max_active: int = 4,
        max_queue: int = 16,
    ) -> None:
        from ccsm_core.server.app import create_app
        from ccsm_core.server.engine import Engine
        from ccsm_core.speech import load_speech

        self.engine = Engine(load_speech(model, backend), max_active=max_active, max_queue=max_queue).start()
        self.app = create_app(self.engine, api_key=os.environ.get("CCSM_API_KEY"), voices_root=voices_dir)
        self.replica = f"{serve.get_replica_context().replica_tag} pid {os.getpid()}"

    async def __call__(self, request: Request) -> Response:
        return _Forward(self.app, self.replica)

    def __del__(self) -> None:
        engine = getattr(self, "engine", None)
        if engine is not None:
            engine.stop()


def build(
    model: str = "demo",
    backend: str | None = None,
    *,
    replicas: int = 2,
    voices_dir: str | None = None,
    max_active: int = 4,
    max_queue: int = 16,
    num_cpus: float = 1,
) -> serve.Application:
    """The application to pass to `serve.run`: ``replicas`` copies of `CcsmServer`."""
    env = {k: os.environ[k] for k in FORWARDED_ENV if os.environ.get(k)}
    if voices_dir:
        voices_dir = os.path.abspath(voices_dir)
    options = {"num_cpus": num_cpus, "runtime_env": {"env_vars": env}}
    deployment = CcsmServer.options(num_replicas=replicas, ray_actor_options=options)
    return deployment.bind(model, backend, voices_dir, max_active, max_queue)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="demo", help="a model folder, .gguf file, repo id, or demo (default)")
    p.add_argument("--backend", default=None, help="a ccsm backend (default: the best available)")
    p.add_argument("--replicas", type=int, default=2, help="how many copies of the server to run (default 2)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8000, help="port to listen on (default 8000)")
    p.add_argument("--voices-dir", default=None, help="the shared voices folder (default $CCSM_DATA_DIR/voices)")
    p.add_argument("--max-active", type=int, default=4, help="requests each replica runs at once (default 4)")
    p.add_argument("--max-queue", type=int, default=16, help="requests each replica keeps waiting (default 16)")
    p.add_argument("--insecure", action="store_true", help="allow a non-loopback --host without CCSM_API_KEY")
    p.add_argument("--num-cpus", type=float, default=1, help="CPUs Ray reserves for each replica (default 1)")
    args = p.parse_args(argv)
    from ccsm_core.commands.serve import is_loopback

    if not os.environ.get("CCSM_API_KEY") and not args.insecure and not is_loopback(args.host):
        p.error(f"--host {args.host} is reachable from other machines: set CCSM_API_KEY, or pass --insecure")

    if args.model == "demo":  # generate it once here rather than in every replica at once
        from ccsm_core.loading.demo import ensure_demo

        ensure_demo()
    app = build(
        args.model,
        args.backend,
        replicas=args.replicas,
        voices_dir=args.voices_dir,
        max_active=args.max_active,
        max_queue=args.max_queue,
        num_cpus=args.num_cpus,
    )
    try:
        serve.start(http_options={"host": args.host, "port": args.port})
        serve.run(app, name="ccsm", route_prefix="/")
        print(f"ccsm: {args.replicas} replicas at http://{args.host}:{args.port}/v1 (Ctrl-C stops them)", flush=True)
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        serve.shutdown()
        ray.shutdown()


if __name__ == "__main__":
    main()
