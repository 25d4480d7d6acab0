"""``GET /metrics``: Prometheus text from a registry of the app's own (never the global one).

HTTP responses are counted as they end; the engine's figures (requests by kind and outcome,
queue depth, active requests, time to first audio, real-time factor, tokens per second) are read
from `Engine.stats` at each scrape.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

TTFA_BUCKETS = (0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0, 30.0)
RTF_BUCKETS = (0.1, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 4.0, 8.0, 16.0)
TPS_BUCKETS = (1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0, 1000.0)
LATENCY_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)


class _EngineCollector(Collector):
    """The engine's counts and gauges, read when scraped."""

    def __init__(self, engine: Any) -> None:
        self.engine = engine

    def collect(self) -> Iterator[Any]:
        requests = CounterMetricFamily(
            "ccsm_requests",
            "Engine requests by kind and outcome",
            labels=["kind", "outcome"],
        )
        for (kind, outcome), n in sorted(dict(self.engine.stats.requests).items()):
            requests.add_metric([kind, outcome], n)
        yield requests
        yield GaugeMetricFamily("ccsm_queue_depth", "Requests waiting for a turn", value=self.engine.queue_depth)
        yield GaugeMetricFamily("ccsm_active_requests", "Requests being generated", value=self.engine.active)


class Metrics:
    """The app's metrics: `observe_http` per response, `render` per scrape."""

    def __init__(self, engine: Any) -> None:
        self.engine = engine
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.http = Counter(
            "ccsm_http_requests",
            "HTTP responses",
            ["method", "route", "status"],
            registry=r,
        )
        self.http_errors = Counter("ccsm_http_errors", "HTTP responses with status >= 400", ["status"], registry=r)
        self.latency = Histogram(
            "ccsm_http_request_seconds",
            "Time to the response's end",
            ["route"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.ttfa = Histogram(
            "ccsm_time_to_first_audio_seconds", "Speech: submit to first audio", buckets=TTFA_BUCKETS, registry=r
        )
        self.rtf = Histogram(
            "ccsm_real_time_factor", "Speech: generation seconds per audio second", buckets=RTF_BUCKETS, registry=r
        )
        self.tps = Histogram(
            "ccsm_text_tokens_per_second", "Text: generated tokens per second", buckets=TPS_BUCKETS, registry=r
        )
        r.register(_EngineCollector(engine))
        self._seen = {"ttfa_s": 0, "rtf": 0, "tokens_per_s": 0}
        self._lock = threading.Lock()

    def observe_http(self, method: str, route: str, status: int, seconds: float) -> None:
        self.http.labels(method, route, str(status)).inc()
        if status >= 400:
            self.http_errors.labels(str(status)).inc()
        self.latency.labels(route).observe(seconds)

    def _sync(self) -> None:
        """Move the engine's new per-request figures into the histograms."""
        stats = self.engine.stats
        with self._lock:
            for key, values, hist in (
                ("ttfa_s", stats.ttfa_s, self.ttfa),
                ("rtf", stats.rtf, self.rtf),
                ("tokens_per_s", stats.tokens_per_s, self.tps),
            ):
                total = stats.observed[key]
                new = min(total - self._seen[key], len(values))
                for v in list(values)[len(values) - new :]:
                    hist.observe(v)
                self._seen[key] = total

    def render(self) -> tuple[bytes, str]:
        """The exposition text and its content type."""
        self._sync()
        return generate_latest(self.registry), CONTENT_TYPE_LATEST
