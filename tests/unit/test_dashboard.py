"""deploy/grafana/kinfer-dashboard.json: a Grafana dashboard over metrics the code produces.

The broker tier (tests/integration/test_metrics_scrape.py) checks the same names against a real
scrape of a running worker and gateway; this checks them against the metrics code in-process.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from streams.flow import InFlightLimit
from streams.gateway.metrics import GatewayMetrics
from streams.lag import LagTracker
from streams.metrics import WorkerMetrics, render
from streams.model_table import ModelTable

DASHBOARD = Path(__file__).resolve().parents[2] / "deploy" / "grafana" / "kinfer-dashboard.json"
METRIC = re.compile(r"\bkinfer_[a-z0-9_]+\b")


def dashboard() -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return doc


def panels() -> list[dict[str, Any]]:
    return [p for p in dashboard()["panels"] if p["type"] != "row"]


def queried_metrics() -> set[str]:
    """Every series name the dashboard's PromQL expressions read."""
    return {name for p in panels() for t in p["targets"] for name in METRIC.findall(t["expr"])}


def sample_names(body: bytes) -> set[str]:
    return {s.name for f in text_string_to_metric_families(body.decode()) for s in f.samples}


def test_a_prometheus_datasource_variable_feeds_every_panel() -> None:
    [variable] = dashboard()["templating"]["list"]
    assert (variable["type"], variable["query"]) == ("datasource", "prometheus")
    wanted = {"type": "prometheus", "uid": f"${{{variable['name']}}}"}
    for panel in panels():
        assert panel["datasource"] == wanted, panel["title"]
        assert all(t["datasource"] == wanted for t in panel["targets"]), panel["title"]


def test_the_panels_cover_what_an_operator_looks_for() -> None:
    titles = " | ".join(p["title"].lower() for p in panels())
    for topic in ("throughput", "latency", "batch size", "padding", "lag", "errors by code"):
        assert topic in titles, topic
    latency = [p for p in panels() if "latency" in p["title"].lower()]
    assert all("histogram_quantile(0.99" in str(p["targets"]) for p in latency)


def test_panels_do_not_overlap_and_ids_are_unique() -> None:
    every = dashboard()["panels"]
    assert len({p["id"] for p in every}) == len(every)
    cells: set[tuple[int, int]] = set()
    for panel in every:
        box = panel["gridPos"]
        assert box["x"] + box["w"] <= 24, panel["title"]
        mine = {
            (x, y)
            for x in range(box["x"], box["x"] + box["w"])
            for y in range(box["y"], box["y"] + box["h"])
        }
        assert not mine & cells, f"{panel['title']} overlaps another panel"
        cells |= mine


def test_every_queried_metric_is_produced_by_the_code() -> None:
    lag = LagTracker()
    lag.observe(("requests", 0), end=2, committed=1, now=1.0)
    worker = WorkerMetrics()
    worker.watch(in_flight=InFlightLimit(8), lag=lag, models=ModelTable(), ready=lambda: True)
    worker.answered(
        model="m",
        version="1",
        code="INVALID_JSON",
        inputs=0,
        kafka_timestamp=1.0,
        queue_ms=None,
        dead_letter_code="INVALID_JSON",
    )
    worker.answered(
        model="m",
        version="1",
        code="OK",
        inputs=2,
        kafka_timestamp=1.0,
        queue_ms=1.0,
        dead_letter_code=None,
    )
    worker.batch_observer("m", "1")(2, {"compute_ms": 1.0, "real_tokens": 3, "computed_tokens": 4})
    gateway = GatewayMetrics()
    gateway.request_done(protocol="http", endpoint="infer", model="m", status="200", seconds=0.1)
    produced = sample_names(render(worker.registry, None)[0])
    produced |= sample_names(render(gateway.registry, None)[0])
    missing = queried_metrics() - produced
    assert not missing, f"the dashboard queries metrics nobody produces: {sorted(missing)}"
    assert len(queried_metrics()) >= 12
