"""The report of a soak: ``report.txt``, ``report.html`` (the same text and
charts of latency, throughput, memory and descriptors with the faults
marked, drawn with the uPlot the console vendors, inlined so that the page
stands alone) and ``report.json`` (everything, samples included)."""

from __future__ import annotations

import html
import json
import re
from collections import defaultdict
from pathlib import Path
from typing import Any

from soak.faults import track_of
from soak.ledger import Verdict

#: Which faults can take the service away from the subscribers of a store.
TRACK = {"redis": "cluster", "sqlite": "sqlite"}

VENDOR = Path(__file__).resolve().parent.parent / "notifier" / "static" / "console" / "vendor"


# figures


def slope(points: list[tuple[float, float]]) -> float | None:
    """Least-squares slope of ``(t, y)`` points, per second."""
    if len(points) < 3:
        return None
    n = len(points)
    mt = sum(t for t, _ in points) / n
    my = sum(y for _, y in points) / n
    var = sum((t - mt) ** 2 for t, _ in points)
    if var == 0:
        return None
    return sum((t - mt) * (y - my) for t, y in points) / var


def _median(values: list[float]) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[len(ordered) // 2]


def _quantile(values: list[float], share: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


def left_idle(samples: list[dict[str, Any]], bound: float) -> dict[str, Any]:
    """Each daemon's memory once every subscriber has left: the RSS of its
    process of the end (it may have been restarted), at the process's
    first sample and at the run's last, when no client is left. More than
    *bound* MiB above the first fails: what connections held was not
    given back."""
    result: dict[str, Any] = {"bound": bound, "daemons": [], "failures": []}
    last: dict[str, Any] = {}
    for sample in samples:
        for name, figures in sample["daemons"].items():
            if name != "harness" and figures.get("pid") is not None and figures.get("rss") is not None:
                last[name] = figures["pid"]
    for name, pid in sorted(last.items()):
        points = [(s["t"], s["daemons"][name]["rss"] / 1048576) for s in samples
                  if s["daemons"].get(name, {}).get("pid") == pid and s["daemons"][name].get("rss") is not None]
        (start_t, start), (end_t, end) = points[0], points[-1]
        ok = end - start <= bound
        result["daemons"].append({"daemon": name, "pid": pid, "from": start_t, "to": end_t,
                                  "rss_start": start, "rss_idle": end, "ok": ok})
        if not ok:
            result["failures"].append(f"{name} (pid {pid}) kept {end - start:.1f} MiB more than at its start "
                                      f"once its subscribers had left ({start:.1f} -> {end:.1f}), bound {bound:g}")
    return result


def flatness(samples: list[dict[str, Any]], warmup: float, bound: float, judge_span: float) -> dict[str, Any]:
    """Per daemon and per process lifetime (segments of one pid), each
    after a *warmup* of its own (from the start of the run, or from its
    restart): the slope of RSS (MiB/hour) and of descriptors (an hour);
    RSS past *bound* fails a segment at least *judge_span* long. The same
    for each Redis server's ``used_memory`` (after the run's warm-up), and
    the trend of p99 latency."""
    result: dict[str, Any] = {"warmup": warmup, "bound": bound, "judge_span": judge_span,
                              "daemons": [], "redis": [], "latency": None, "failures": []}
    segments: dict[tuple[str, Any], list[dict[str, Any]]] = defaultdict(list)
    born: dict[tuple[str, Any], float] = {}
    for sample in samples:
        for name, figures in sample["daemons"].items():
            if name != "harness" and figures.get("pid") is not None and figures.get("rss") is not None:
                key = (name, figures["pid"])
                born.setdefault(key, sample["t"])
                if sample["t"] >= max(warmup, born[key] + warmup if born[key] > 0.5 else warmup):
                    segments[key].append({"t": sample["t"], **figures})
    for (name, pid), points in sorted(segments.items(), key=lambda item: (item[0][0], item[1][0]["t"])):
        span = points[-1]["t"] - points[0]["t"]
        rss = slope([(p["t"], p["rss"] / 1048576) for p in points])
        fds = slope([(p["t"], p["fds"]) for p in points if p.get("fds") is not None])
        journal = slope([(p["t"], p["journal_rss"] / 1048576) for p in points if p.get("journal_rss")])
        entry = {"daemon": name, "pid": pid, "from": points[0]["t"], "to": points[-1]["t"], "span": span,
                 "rss_first": points[0]["rss"] / 1048576, "rss_last": points[-1]["rss"] / 1048576,
                 "rss_mib_per_hour": None if rss is None else rss * 3600,
                 "fds_first": points[0].get("fds"), "fds_last": points[-1].get("fds"),
                 "fds_per_hour": None if fds is None else fds * 3600,
                 "journal_mib_per_hour": None if journal is None else journal * 3600,
                 "judged": span >= judge_span}
        if entry["judged"] and entry["rss_mib_per_hour"] is not None:
            entry["rss_ok"] = entry["rss_mib_per_hour"] <= bound
            if not entry["rss_ok"]:
                result["failures"].append(f"{name} (pid {pid}) RSS grew {entry['rss_mib_per_hour']:.1f} MiB/hour "
                                          f"over {span / 60:.0f} min, bound {bound:g}")
        result["daemons"].append(entry)
    redis: dict[str, list[tuple[float, float]]] = defaultdict(list)
    for sample in samples:
        if sample["t"] < warmup:
            continue
        for name, used in sample["redis"].items():
            if used is not None:
                redis[name].append((sample["t"], used / 1048576))
    for name, used_points in sorted(redis.items()):
        value = slope(used_points)
        result["redis"].append({"server": name, "first": used_points[0][1], "last": used_points[-1][1],
                                "mib_per_hour": None if value is None else value * 3600})
    p99 = [(s["t"], s["p99"]) for s in samples if s["t"] >= warmup and s.get("p99") is not None]
    if p99:
        third = max(1, len(p99) // 3)
        value = slope(p99)
        result["latency"] = {"p99_first_third_ms": _median([v for _, v in p99[:third]]),
                             "p99_last_third_ms": _median([v for _, v in p99[-third:]]),
                             "p99_ms_per_hour": None if value is None else value * 3600}
    return result


def outages(found: list[Any], windows: list[tuple[float, float, str]], t0: float) -> dict[str, Any]:
    """Subscribers without service, by the fault going on when it began."""
    by_kind: dict[str, list[Any]] = defaultdict(list)
    for outage in found:
        if outage.slow:
            by_kind["slow consumers (dropped)"].append(outage)
            continue
        kind = next((k for start, end, k in windows
                     if start <= outage.start <= end and track_of(k) == TRACK.get(outage.store)), "no fault")
        by_kind[kind].append(outage)
    summary = {}
    for kind, items in sorted(by_kind.items()):
        durations = [o.end - o.start for o in items]
        summary[kind] = {
            "count": len(items), "median_s": _median(durations), "p99_s": _quantile(durations, 0.99),
            "max_s": max(durations),
            "by_transport": dict(sorted(_count(o.transport for o in items).items())),
            "why": dict(sorted(_count(o.why.split(" (")[0] for o in items).items(), key=lambda kv: -kv[1])[:6]),
        }
    return summary


def publish_delays(retried: list[tuple[float, float, int, str]], windows: list[tuple[float, float, str]],
                   t0: float) -> dict[str, Any]:
    """Publishes that needed more than one attempt, by the fault during them."""
    by_kind: dict[str, list[float]] = defaultdict(list)
    for first, acked, _, store in retried:
        kind = next((k for start, end, k in windows
                     if start <= acked and end >= first and track_of(k) == TRACK.get(store)), "no fault")
        by_kind[kind].append(acked - first)
    return {kind: {"count": len(values), "median_s": _median(values), "max_s": max(values)}
            for kind, values in sorted(by_kind.items())}


def _count(values: Any) -> dict[str, int]:
    counts: dict[str, int] = defaultdict(int)
    for value in values:
        counts[value] += 1
    return counts


def scan_logs(paths: list[Path]) -> dict[str, Any]:
    """Tracebacks and errors the daemons logged."""
    found: dict[str, Any] = {}
    for path in paths:
        if not path.exists():
            continue
        text = path.read_text(errors="replace")
        tracebacks = [m.start() for m in re.finditer(r"Traceback \(most recent call last\)", text)]
        lines = text.splitlines()
        errors = [line for line in lines if re.search(r"Unhandled|CRITICAL|\[-\] .*[Ee]rror", line)]
        excerpts = []
        for at in tracebacks[:3]:
            excerpts.append(text[max(0, at - 300):at + 1500])
        found[path.parent.name] = {"lines": len(lines), "tracebacks": len(tracebacks),
                                   "error_lines": len(errors), "first_errors": errors[:10], "excerpts": excerpts}
    return found


def verdict_dict(verdict: Verdict, t0: float) -> dict[str, Any]:
    losses = verdict.losses
    return {
        "published": verdict.published, "acknowledged": verdict.acknowledged, "given_up": verdict.given_up,
        "handed": verdict.handed, "streams": verdict.streams, "lost_deliveries": len(losses),
        "lost_messages": verdict.lost_messages, "duplicates": len(verdict.duplicates),
        "out_of_order": len(verdict.out_of_order), "conflicts": len(verdict.conflicts),
        "dropped_duplicates": verdict.dropped_duplicates, "notices": verdict.notices,
        "notices_unjustified": [{**n, "t": round(n["t"] - t0, 2)} for n in verdict.notices_unjustified[:5000]],
        "unjustified_count": len(verdict.notices_unjustified),
        "unjustified_clients": len({n["client"] for n in verdict.notices_unjustified}),
        "unjustified_by_daemon": dict(_count(n["daemon"] for n in verdict.notices_unjustified)),
        "unjustified_span": [round(min(n["t"] for n in verdict.notices_unjustified) - t0, 1),
                             round(max(n["t"] for n in verdict.notices_unjustified) - t0, 1)]
        if verdict.notices_unjustified else None,
        "lost_with_notice": verdict.lost_with_notice,
        "epoch_changes": verdict.epoch_changes[:20], "unfinished": verdict.unfinished,
        "by_transport": verdict.by_transport,
        "loss_examples": [{"client": x.client, "transport": x.transport, "center": x.center, "id": x.id,
                           "key": x.key, "acked_at": None if x.acked_at is None else round(x.acked_at - t0, 2)}
                          for x in losses[:30]],
        "duplicate_examples": verdict.duplicates[:30], "order_examples": verdict.out_of_order[:30],
        "conflict_examples": verdict.conflicts[:30],
    }


# text


def _f(value: Any, digits: int = 1) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def text(result: dict[str, Any]) -> str:
    out: list[str] = []
    add = out.append
    minutes = result["duration"] / 60
    add(f"notifier soak: seed {result['seed']}, {minutes:.1f} min of load"
        f"{' (short)' if result['short'] else ''}, started {result['started']}, wall {result['wall']:.0f} s")
    add(f"code: {result['git']}")
    o = result["options"]
    add(f"load: {o['clients']} subscribers on Redis + {o['sqlite_clients']} on SQLite at once; "
        f"{o['rate']:g} + {o['sqlite_rate']:g} publishes a second; SQLite on "
        f"{'a tmpfs of its own' if o['small_fs'] else 'the disk (full disk: RLIMIT_FSIZE stand-in)'}")
    add("")
    add("RESULT: " + ("PASS" if not result["failures"] else "FAIL"))
    for failure in result["failures"]:
        add(f"  - {failure}")
    ledger = result["ledger"]
    if ledger:
        add("")
        add("Messages")
        add(f"  published {ledger['published']}, acknowledged {ledger['acknowledged']}, "
            f"given up unacknowledged {ledger['given_up']}")
        add(f"  delivered (handed to the application) {ledger['handed']} over {ledger['streams']} subscriber streams")
        add(f"  lost {ledger['lost_messages']} messages ({ledger['lost_deliveries']} deliveries), "
            f"duplicated {ledger['duplicates']}, out of order {ledger['out_of_order']}, "
            f"id conflicts {ledger['conflicts']}, epoch changes {len(ledger['epoch_changes'])}")
        add(f"  duplicates the client dropped by id (as notifier.js does) {ledger['dropped_duplicates']}")
        add(f"  recovered:false {ledger['notices']} times, {ledger['lost_with_notice']} acknowledged messages "
            f"reported lost with it (not counted as lost)")
        if ledger["unjustified_count"]:
            add(f"  recovered:false without lost history: {ledger['unjustified_count']} times, "
                f"{ledger['unjustified_clients']} subscribers, by daemon {ledger['unjustified_by_daemon']}, "
                f"from {ledger['unjustified_span'][0]} s to {ledger['unjustified_span'][1]} s")
        if ledger["unfinished"]:
            add(f"  streams without a final read (judged up to their last message): {ledger['unfinished']}")
        add("  by transport:            streams   delivered   lost  dup  order")
        for transport, c in sorted(ledger["by_transport"].items()):
            add(f"    {transport:<22}{c['streams']:>8}{c['handed']:>12}{c['lost']:>7}{c['duplicates']:>5}"
                f"{c['out_of_order']:>7}")
        for title, field in (("lost", "loss_examples"), ("duplicates", "duplicate_examples"),
                             ("out of order", "order_examples"), ("conflicts", "conflict_examples"),
                             ("recovered:false without lost history", "notices_unjustified")):
            if ledger[field]:
                add(f"  first {title}:")
                for item in ledger[field][:10]:
                    add(f"    {json.dumps(item)}")
    hooks = result["webhooks"]
    add("")
    add("Webhooks")
    add(f"  requests {hooks['requests']} (answered 200: {hooks['answered']['200']}, 500 on purpose: "
        f"{hooks['answered']['500']}, left hanging: {hooks['answered']['hang']}); distinct ids {hooks['ids']}, "
        f"handled {hooks['handled']}")
    add(f"  events handled {hooks['events']}; bad signatures {hooks['bad_signatures']}; "
        f"repeats of an id already answered 200: {hooks['repeats_after_handled']}")
    add(f"  never handled {len(hooks['never_handled'])}, out of turn {len(hooks['alternation'])}, "
        f"occupancy events missing {len(hooks['missing'])}; excused by a fault as documented: "
        f"{len(hooks['excused'])}")
    for field in ("never_handled", "alternation", "missing", "excused"):
        for item in hooks[field][:5]:
            add(f"    {field}: {json.dumps(item)}")
    add("")
    add(f"Faults ({len(result['faults'])} carried out of {result['faults_planned']} planned)")
    for fault in result["faults"]:
        took = "-" if fault["ended"] is None else f"{fault['ended'] - fault['started']:.1f}"
        add(f"  {_f(fault['started'], 0):>6} s  {fault['kind']:<22} {fault['target']:<10} hold {fault['hold']:>5.1f} s,"
            f" over after {took} s  {'; '.join(fault['notes'])}")
    add("")
    add("Without service, by the fault going on when it began (subscribers)")
    add("  fault                    outages  median s    p99 s    max s  transports")
    for kind, s in result["outages"].items():
        add(f"  {kind:<24}{s['count']:>8}{_f(s['median_s'], 2):>10}{_f(s['p99_s'], 2):>9}{_f(s['max_s'], 2):>9}  "
            + ", ".join(f"{k} {v}" for k, v in s["by_transport"].items()))
    add("  publishes acknowledged after more than one attempt:")
    for kind, s in result["publish_delays"].items():
        add(f"    {kind:<24}{s['count']:>6} publishes, median {_f(s['median_s'], 2)} s, max {_f(s['max_s'], 2)} s")
    add("  publish attempts: " + ", ".join(f"{k} {v}" for k, v in sorted(result["attempts"].items(),
                                                                         key=lambda kv: -kv[1])))
    flat = result["flatness"]
    add("")
    judged = (f"RSS bound {flat['bound']:g} MiB/hour over spans of {flat['judge_span'] / 60:g} min or more"
              if flat["judge_span"] != float("inf") else "not judged: too short a run")
    add(f"Flatness after {flat['warmup']:.0f} s of warm-up ({judged})")
    add("  daemon    pid        from     to   RSS MiB first/last  MiB/hour   fds first/last  fds/hour")
    for d in flat["daemons"]:
        mark = "" if not d["judged"] else ("  ok" if d.get("rss_ok") else "  OVER")
        add(f"  {d['daemon']:<9}{d['pid']:<9}{d['from']:>6.0f}{d['to']:>7.0f}   {d['rss_first']:>7.1f} "
            f"{d['rss_last']:>7.1f}   {_f(d['rss_mib_per_hour']):>8}   {_f(d['fds_first']):>6} {_f(d['fds_last']):>6}"
            f"  {_f(d['fds_per_hour']):>8}{mark}"
            + (f"  journal {_f(d['journal_mib_per_hour'])} MiB/h" if d.get("journal_mib_per_hour") is not None
               else ""))
    idle = result.get("left_idle")
    if idle:
        add(f"  once every subscriber had left (bound: {idle['bound']:g} MiB over the process's start):")
        for d in idle["daemons"]:
            add(f"    {d['daemon']:<9}{d['pid']:<9}RSS {d['rss_start']:.1f} MiB at {d['from']:.0f} s, "
                f"{d['rss_idle']:.1f} MiB at {d['to']:.0f} s{'' if d['ok'] else '  OVER'}")
    for r in flat["redis"]:
        add(f"  Redis {r['server']}: used_memory {r['first']:.1f} -> {r['last']:.1f} MiB, "
            f"{_f(r['mib_per_hour'])} MiB/hour")
    if flat["latency"]:
        lat = flat["latency"]
        add(f"  p99 delivery latency: {_f(lat['p99_first_third_ms'])} ms in the first third, "
            f"{_f(lat['p99_last_third_ms'])} ms in the last; slope {_f(lat['p99_ms_per_hour'])} ms/hour")
    add("")
    add("Daemons")
    add(f"  ended by themselves: {len(result['deaths'])}" + "".join(f"\n    {json.dumps(d)}" for d in result["deaths"]))
    add(f"  answers no client should get: {result['anomaly_count']}")
    for anomaly in result["anomalies"][:10]:
        add(f"    {json.dumps(anomaly)[:300]}")
    for name, log in result["logs"].items():
        add(f"  log of {name}: {log['lines']} lines, {log['tracebacks']} tracebacks, {log['error_lines']} error lines")
        for line in log["first_errors"][:5]:
            add(f"    {line[:240]}")
    add(f"  final reads still behind after {30} s: {result['final_reads_behind']}")
    if result["harness_errors"]:
        add("Harness errors")
        for error in result["harness_errors"][:10]:
            add(f"  {error[:300]}")
    add("  connection ends: " + ", ".join(f"{k} {v}" for k, v in sorted(result["ends"].items(),
                                                                        key=lambda kv: -kv[1])[:12]))
    return "\n".join(out) + "\n"


# html


def _series(samples: list[dict[str, Any]], pick: Any) -> list[Any]:
    return [pick(s) for s in samples]


def charts(result: dict[str, Any]) -> list[dict[str, Any]]:
    samples = result["samples"]
    xs = [s["t"] for s in samples]
    daemons = sorted({name for s in samples for name in s["daemons"]})
    redis = sorted({name for s in samples for name in s["redis"]})
    transports = sorted({name for s in samples for name in s["connected"]})

    def mib(v: Any) -> Any:
        return None if v is None else round(v / 1048576, 2)

    return [
        {"title": "Throughput (a second)", "unit": "/s", "x": xs, "series": [
            {"label": "published", "data": _series(samples, lambda s: s["published"])},
            {"label": "acknowledged", "data": _series(samples, lambda s: s["acked"])},
            {"label": "delivered", "data": _series(samples, lambda s: s["handed"]), "axis": 1}]},
        {"title": "Delivery latency (ms, log scale)", "unit": "ms", "log": True, "x": xs, "series": [
            {"label": "p50", "data": _series(samples, lambda s: s["p50"])},
            {"label": "p99", "data": _series(samples, lambda s: s["p99"])},
            {"label": "max", "data": _series(samples, lambda s: s["max"])}]},
        {"title": "Daemon RSS (MiB)", "unit": "MiB", "x": xs, "series": [
            {"label": name, "data": _series(samples, lambda s, n=name: mib(s["daemons"].get(n, {}).get("rss")))}
            for name in daemons if name != "harness"] + [
            {"label": "sqlite journal",
             "data": _series(samples, lambda s: mib(s["daemons"].get("sqlite", {}).get("journal_rss")))}]},
        {"title": "Redis used_memory (MiB)", "unit": "MiB", "x": xs, "series": [
            {"label": name, "data": _series(samples, lambda s, n=name: mib(s["redis"].get(n)))} for name in redis]},
        {"title": "Daemon open file descriptors", "unit": "", "x": xs, "series": [
            {"label": name, "data": _series(samples, lambda s, n=name: s["daemons"].get(n, {}).get("fds"))}
            for name in daemons if name != "harness"]},
        {"title": "CPU (% of one core)", "unit": "%", "x": xs, "series": [
            {"label": name, "data": _series(samples, lambda s, n=name: s["daemons"].get(n, {}).get("cpu"))}
            for name in daemons]},
        {"title": "Connected subscribers by transport", "unit": "", "x": xs, "series": [
            {"label": name, "data": _series(samples, lambda s, n=name: s["connected"].get(n, 0))}
            for name in transports]},
        {"title": "Lost and duplicated so far (provisional)", "unit": "", "x": xs, "series": [
            {"label": "lost", "data": _series(samples, lambda s: s["lost"])},
            {"label": "duplicated", "data": _series(samples, lambda s: s["duplicates"])}]},
    ]


PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<title>notifier soak, seed {seed}</title>
<style>{css}
body {{ font: 14px/1.4 system-ui, sans-serif; margin: 1.5em 2em; color: #222; }}
pre {{ background: #f6f6f6; padding: 1em; overflow-x: auto; font-size: 12px; }}
.chart {{ margin: 1.5em 0; }} h2 {{ font-size: 16px; margin: 1.2em 0 .2em; }}
.legend-faults span {{ display: inline-block; margin-right: 1em; font-size: 12px; }}
.legend-faults i {{ display: inline-block; width: 12px; height: 12px; margin-right: 4px; vertical-align: middle; }}
</style>
<!-- uPlot {version}, inlined from notifier/static/console/vendor/:
{license}
-->
<script>{js}</script>
</head><body>
<h1>notifier soak: {headline}</h1>
<p class="legend-faults" id="legend"></p>
<div id="charts"></div>
<h2>Report</h2>
<pre>{text}</pre>
<script>
const REPORT = {data};
const COLORS = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f"];
const FAULT_COLORS = {{"daemon-kill9": "rgba(214,39,40,.16)", "daemon-sigterm": "rgba(255,127,14,.16)",
  "redis-master-kill": "rgba(148,103,189,.18)", "redis-replica-kill": "rgba(140,86,75,.16)",
  "redis-net-cut": "rgba(31,119,180,.16)", "sqlite-kill-mid-batch": "rgba(227,119,194,.2)",
  "sqlite-disk-full": "rgba(44,160,44,.16)", "webhook-down": "rgba(127,127,127,.14)"}};
const legend = document.getElementById("legend");
for (const [kind, color] of Object.entries(FAULT_COLORS)) {{
  const span = document.createElement("span");
  const solid = color.replace(/,[.0-9]+\\)$/, ",.6)");
  span.innerHTML = '<i style="background:' + solid + '"></i>' + kind;
  legend.appendChild(span);
}}
function faultBands(u) {{
  const ctx = u.ctx;
  ctx.save();
  for (const f of REPORT.faults) {{
    if (f.started === null) continue;
    const end = f.ended === null ? f.started : f.ended;
    const x0 = u.valToPos(f.started, "x", true), x1 = u.valToPos(end, "x", true);
    ctx.fillStyle = FAULT_COLORS[f.kind] || "rgba(0,0,0,.1)";
    ctx.fillRect(x0, u.bbox.top, Math.max(2, x1 - x0), u.bbox.height);
  }}
  ctx.restore();
}}
const width = () => Math.min(1200, document.body.clientWidth - 40);
for (const chart of REPORT.charts) {{
  const div = document.createElement("div");
  div.className = "chart";
  div.innerHTML = "<h2></h2>";
  div.firstChild.textContent = chart.title;
  document.getElementById("charts").appendChild(div);
  const twoAxes = chart.series.some(s => s.axis === 1);
  const opts = {{
    width: width(), height: 240,
    scales: {{x: {{time: false}}, y: chart.log ? {{distr: 3}} : {{}}, y2: {{}}}},
    axes: [{{label: "seconds from the start of the load"}}, {{label: chart.unit, scale: "y"}}]
      .concat(twoAxes ? [{{side: 1, scale: "y2", grid: {{show: false}}}}] : []),
    series: [{{label: "t"}}].concat(chart.series.map((s, i) => ({{
      label: s.label, stroke: COLORS[i % COLORS.length], width: 1.5, spanGaps: false,
      scale: s.axis === 1 ? "y2" : "y"}}))),
    hooks: {{drawClear: [faultBands]}},
  }};
  const data = [chart.x].concat(chart.series.map(s => s.data.map(v => chart.log && v !== null && v <= 0 ? null : v)));
  new uPlot(opts, data, div);
}}
</script>
</body></html>
"""


def page(result: dict[str, Any], report_text: str) -> str:
    css = (VENDOR / "uPlot.min.css").read_text()
    js = (VENDOR / "uPlot.iife.min.js").read_text()
    license_text = (VENDOR / "LICENSE").read_text().replace("--", "- -")
    readme = (VENDOR / "README").read_text()
    version = re.search(r"uPlot (\S+)", readme)
    data = {"faults": result["faults"], "charts": charts(result)}
    headline = (f"seed {result['seed']}, {result['duration'] / 60:.1f} min, "
                + ("PASS" if not result["failures"] else "FAIL"))
    return PAGE.format(seed=result["seed"], css=css, js=js, license=license_text,
                       version=version.group(1) if version else "", headline=html.escape(headline),
                       text=html.escape(report_text),
                       data=json.dumps(data, separators=(",", ":")).replace("</", "<\\/"))


def write(out: Path, result: dict[str, Any]) -> None:
    report_text = text(result)
    (out / "report.txt").write_text(report_text)
    (out / "report.html").write_text(page(result, report_text))
    (out / "report.json").write_text(json.dumps(result, indent=1, default=str))
