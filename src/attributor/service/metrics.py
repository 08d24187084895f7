"""Request counters and latency histograms, written in the Prometheus text format (0.0.4).

No client library: a few counters, gauges and histograms kept in dicts under one lock,
rendered by :meth:`Metrics.render` for ``GET /metrics``:

    attributor_requests_total{method,route,status}      every answered request
    attributor_request_errors_total{route,status}       the ones with status >= 400
    attributor_request_duration_seconds{route}           histogram of wall time per request
    attributor_query_stage_seconds{stage}                histogram per query of embed/gradient/search/refine/total
    attributor_queries_total                            query items answered (a batch counts each)
    attributor_query_timeouts_total                     queries cut at the time limit (504)
    attributor_reloads_total{result}                    index reloads, ok or failed
    attributor_requests_in_flight                       gauge
    attributor_index_rows / attributor_index_generation gauges of the index being served

``route`` is the route's template (``/v1/examples/{id}``), so labels stay few.
"""

from __future__ import annotations

import bisect
import threading
from collections import defaultdict
from typing import Callable

__all__ = ["Metrics", "BUCKETS"]

#: histogram upper bounds in seconds (+Inf is added)
BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class _Histogram:
    def __init__(self) -> None:
        self.counts = [0] * (len(BUCKETS) + 1)
        self.sum = 0.0

    def observe(self, seconds: float) -> None:
        self.counts[bisect.bisect_left(BUCKETS, seconds)] += 1
        self.sum += seconds


class Metrics:
    """Thread-safe counters of one service process; ``gauges`` are read when rendering."""

    def __init__(self, gauges: Callable[[], dict[str, float]] | None = None):
        self._lock = threading.Lock()
        self._requests: dict[tuple[str, str, str], int] = defaultdict(int)
        self._errors: dict[tuple[str, str], int] = defaultdict(int)
        self._durations: dict[str, _Histogram] = defaultdict(_Histogram)
        self._stages: dict[str, _Histogram] = defaultdict(_Histogram)
        self._counters: dict[str, int] = defaultdict(int)
        self._reloads: dict[str, int] = defaultdict(int)
        self._gauges = gauges or (lambda: {})
        self.in_flight = 0

    def request(self, method: str, route: str, status: int, seconds: float) -> None:
        with self._lock:
            self._requests[(method, route, str(status))] += 1
            if status >= 400:
                self._errors[(route, str(status))] += 1
            self._durations[route].observe(seconds)

    def query(self, latency_ms: dict[str, float]) -> None:
        """One answered query item and its latency per stage (ms)."""
        with self._lock:
            self._counters["queries"] += 1
            for stage, ms in latency_ms.items():
                self._stages[stage].observe(ms / 1e3)

    def count(self, name: str, by: int = 1) -> None:
        with self._lock:
            self._counters[name] += by

    def reload(self, ok: bool) -> None:
        with self._lock:
            self._reloads["ok" if ok else "failed"] += 1

    def render(self) -> str:
        """The Prometheus text exposition of everything counted so far."""
        with self._lock:
            lines: list[str] = []
            _family(lines, "attributor_requests_total", "counter", "HTTP requests answered.",
                    [({"method": m, "route": r, "status": s}, v) for (m, r, s), v in sorted(self._requests.items())])
            _family(lines, "attributor_request_errors_total", "counter", "HTTP requests answered with status >= 400.",
                    [({"route": r, "status": s}, v) for (r, s), v in sorted(self._errors.items())])
            _histograms(lines, "attributor_request_duration_seconds", "Wall time per HTTP request.", "route", self._durations)
            _histograms(lines, "attributor_query_stage_seconds", "Time per query item in each stage.", "stage", self._stages)
            _family(lines, "attributor_queries_total", "counter", "Query items answered (each of a batch counts).",
                    [({}, self._counters["queries"])])
            _family(lines, "attributor_query_timeouts_total", "counter", "Query requests cut at the time limit (504).",
                    [({}, self._counters["timeouts"])])
            _family(lines, "attributor_reloads_total", "counter", "Index reloads by result.",
                    [({"result": r}, self._reloads[r]) for r in ("ok", "failed")])
            _family(lines, "attributor_requests_in_flight", "gauge", "Requests being answered now.", [({}, self.in_flight)])
        for name, (help_text, value) in _gauge_help(self._gauges()).items():
            _family(lines, name, "gauge", help_text, [({}, value)])
        return "\n".join(lines) + "\n"


def _gauge_help(values: dict[str, float]) -> dict[str, tuple[str, float]]:
    helps = {"attributor_index_rows": "Training rows in the index being served.",
             "attributor_index_generation": "How many times the index was (re)loaded."}
    return {name: (helps.get(name, name), value) for name, value in values.items()}


def _family(lines: list[str], name: str, kind: str, help_text: str, samples: list[tuple[dict[str, str], float]]) -> None:
    lines += [f"# HELP {name} {help_text}", f"# TYPE {name} {kind}"]
    lines += [f"{name}{_labels(labels)} {_number(value)}" for labels, value in samples]


def _histograms(lines: list[str], name: str, help_text: str, label: str, histograms: dict[str, _Histogram]) -> None:
    lines += [f"# HELP {name} {help_text}", f"# TYPE {name} histogram"]
    for key, histogram in sorted(histograms.items()):
        total = 0
        for bound, count in zip([*map(_number, BUCKETS), "+Inf"], histogram.counts):
            total += count
            lines.append(f"{name}_bucket{_labels({label: key, 'le': bound})} {total}")
        lines.append(f"{name}_sum{_labels({label: key})} {_number(histogram.sum)}")
        lines.append(f"{name}_count{_labels({label: key})} {total}")


def _labels(labels: dict[str, str]) -> str:
    return "{" + ",".join(f'{key}="{_escape(value)}"' for key, value in labels.items()) + "}" if labels else ""


def _escape(value: object) -> str:
    """A label value as the text format wants it: backslash, double quote and newline escaped."""
    return str(value).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _number(value: float) -> str:
    return repr(float(value)) if isinstance(value, float) else str(value)
