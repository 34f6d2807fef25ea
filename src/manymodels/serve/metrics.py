"""The server's Prometheus metrics, on /metrics.

With several worker processes (`serve --workers N`), `PROMETHEUS_MULTIPROC_DIR` is set before any
worker starts and every process writes its values there; /metrics, answered by whichever worker,
adds them up (prometheus_client's multiprocess mode), so a scrape sees the whole server.
"""

from __future__ import annotations

import os

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client import multiprocess as _multiprocess

PREFIX = "manymodels_serve_"
MULTIPROCESS_ENV = "PROMETHEUS_MULTIPROC_DIR"
# Seconds: single-row answers take about a millisecond; cold loads and large batches far more.
LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)

_registry = CollectorRegistry()

requests = Counter(
    PREFIX + "requests", "Requests answered, by endpoint and HTTP status.", ["endpoint", "status"], registry=_registry
)
latency = Histogram(
    PREFIX + "request_seconds", "Time to answer a request, by endpoint.", ["endpoint"],
    buckets=LATENCY_BUCKETS, registry=_registry,
)
rows = Counter(PREFIX + "rows", "Rows predicted, by the model that served them (segment, fallback, damaged, none).",
               ["source"], registry=_registry)
cache_hits = Counter(PREFIX + "model_cache_hits", "Segment models found already loaded.", registry=_registry)
cache_misses = Counter(PREFIX + "model_cache_misses", "Segment models loaded on a request.", registry=_registry)
models_loaded = Gauge(PREFIX + "models_loaded", "Segment models held in memory (every worker's).",
                      registry=_registry, multiprocess_mode="livesum")
serving_version = Gauge(PREFIX + "version", "The registered version served (0: a run served by id).",
                        registry=_registry, multiprocess_mode="livemax")
swaps = Counter(PREFIX + "swaps", "Times a new version replaced the one served.", registry=_registry)
swap_failures = Counter(PREFIX + "swap_failures", "New versions that failed to load (the old one kept serving).",
                        registry=_registry)
files_ok = Gauge(PREFIX + "files_readable", "0 while a file the served version needs did not read (being reloaded).",
                 registry=_registry)
files_ok.set(1)
tracking_up = Gauge(PREFIX + "tracking_reachable", "1 when the last look at the tracking server answered.",
                    registry=_registry, multiprocess_mode="livemin")


def exposition() -> bytes:
    """The text Prometheus scrapes: this process's metrics, or every worker's added up."""
    if os.environ.get(MULTIPROCESS_ENV):
        merged = CollectorRegistry()
        _multiprocess.MultiProcessCollector(merged)
        return generate_latest(merged)
    return generate_latest(_registry)

