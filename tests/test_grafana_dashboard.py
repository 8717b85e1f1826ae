"""etc/grafana-dashboard.json: valid JSON whose queries name only metrics
that the daemon's ``/metrics`` really exports."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support import ADMIN_TOKEN, Api, Recorder

DASHBOARD = Path(__file__).resolve().parent.parent / "etc" / "grafana-dashboard.json"

#: PromQL words that are neither functions (followed by "(") nor metrics.
KEYWORDS = frozenset({
    "by", "without", "on", "ignoring", "group_left", "group_right", "bool", "and", "or", "unless",
    "offset", "inf", "nan",
})
#: Samples a family of each type exposes, by suffix of its name.
SUFFIXES = {
    "histogram": ("_bucket", "_sum", "_count", "_created"),
    "summary": ("_sum", "_count", "_created"),
    "counter": ("_created",),
}


def _dashboard() -> dict[str, Any]:
    with DASHBOARD.open(encoding="utf-8") as f:
        document: dict[str, Any] = json.load(f)
    return document


def _panels(panels: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for panel in panels:
        yield panel
        yield from _panels(panel.get("panels", []))


def _queries(dashboard: dict[str, Any]) -> Iterator[tuple[str, str]]:
    """(where, PromQL) of every panel target and templating query."""
    for panel in _panels(dashboard["panels"]):
        for target in panel.get("targets", []):
            yield f"panel {panel['title']!r}", target["expr"]
    for variable in dashboard["templating"]["list"]:
        if variable["type"] == "query":
            query = variable["query"]
            yield f"variable {variable['name']!r}", query["query"] if isinstance(query, dict) else query


def metric_names(expr: str) -> set[str]:
    """The metric names *expr* refers to: its identifiers, less strings, label
    matchers, ranges, grouping label lists, function names, keywords and
    Grafana's ``$variables``."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    # label_values(metric, label): the label is no metric
    text = re.sub(r"\blabel_values\s*\(([^,()]*),\s*\w+\s*\)", r"label_values(\1)", text)
    text = re.sub(r"\{[^}]*\}", " ", text)
    text = re.sub(r"\[[^\]]*\]", " ", text)
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text)
    text = re.sub(r"\$\{?\w+\}?", " ", text)
    names = set()
    for match in re.finditer(r"(?<![\w.])([A-Za-z_:][\w:]*)(\s*\()?", text):
        name, call = match.groups()
        if call is None and name not in KEYWORDS:
            names.add(name)
    return names


def exported_metrics() -> set[str]:
    """Every sample name ``/metrics`` of a daemon (the api listener's app over
    an in-memory store) exposes, families without samples included."""
    api = Api()
    auth = api.add_publisher("site")
    assert api.put_center(auth, "news").status == 201
    api.hub("site", "news").subscribe(Recorder("websocket"))
    assert api.publish(auth, "news", "hello").status == 201
    answer = api.request("GET", "/metrics", admin=ADMIN_TOKEN)
    assert answer.status == 200, answer
    names = set()
    for line in answer.body.decode().splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ", 3)
            names.add(name)
            names.update(name + suffix for suffix in SUFFIXES.get(kind, ()))
        elif line and not line.startswith("#"):
            names.add(re.split(r"[{ ]", line, maxsplit=1)[0])
    return names


def test_metric_names_parsing() -> None:
    assert metric_names('sum by (transport) (notifier_connections{instance=~"$instance"})') == {
        "notifier_connections"}
    assert metric_names("sum(rate(a_total[$__rate_interval])) / sum(rate(b_total[5m])) > 0") == {
        "a_total", "b_total"}
    assert metric_names("label_values(notifier_uptime_seconds, instance)") == {"notifier_uptime_seconds"}
    assert metric_names("topk(10, up offset 5m) and on (job) nope") == {"up", "nope"}


def test_the_dashboard_is_grafana_json() -> None:
    dashboard = _dashboard()
    assert dashboard["title"]
    assert 36 <= dashboard["schemaVersion"] <= 41
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    ids = [panel["id"] for panel in _panels(dashboard["panels"])]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    for panel in _panels(dashboard["panels"]):
        if panel["type"] != "row":
            assert panel["targets"], panel["title"]
            assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel["title"]


def test_every_metric_the_dashboard_names_is_exported() -> None:
    exported = exported_metrics()
    assert {"notifier_connections", "notifier_messages_in_total"} <= exported
    used: dict[str, str] = {}
    for where, expr in _queries(_dashboard()):
        names = metric_names(expr)
        assert names, f"{where}: no metric in {expr!r}"
        for name in names:
            used.setdefault(name, where)
    unknown = {name: where for name, where in used.items() if name not in exported}
    assert not unknown, f"metrics the daemon does not export: {unknown}"


@pytest.mark.parametrize("name", ["notifier_store_errors_total", "notifier_publish_seconds_bucket"])
def test_a_metric_that_does_not_exist_is_caught(name: str) -> None:
    assert name not in exported_metrics()
    assert name in metric_names(f'sum(rate({name}{{instance=~"$instance"}}[$__rate_interval]))')
