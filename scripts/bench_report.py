#!/usr/bin/env python3
"""Writes the generated part of docs/benchmarks.md from scripts/bench.sh's
results: the machine, the settings, a table per scenario, the targets, the
freshness numbers, resident memory and the plots.

Only the text between the `generated:begin` and `generated:end` markers is
replaced, so the hand-written analysis around it survives a re-run.
"""

import argparse
import json
import os
import platform
import subprocess
from pathlib import Path

BEGIN = "<!-- generated:begin (scripts/bench.sh rewrites this part) -->"
END = "<!-- generated:end -->"


def load(path):
    with open(path) as f:
        return json.load(f)


def sh(cmd):
    try:
        return subprocess.run(cmd, shell=True, capture_output=True, text=True, timeout=10).stdout.strip()
    except Exception:  # noqa: BLE001 - best effort facts about the machine
        return ""


def machine():
    cpu = sh("grep -m1 'model name' /proc/cpuinfo | cut -d: -f2").strip() or platform.processor()
    cores = os.cpu_count()
    mem = sh("awk '/MemTotal/ {printf \"%.0f GiB\", $2/1024/1024}' /proc/meminfo")
    postgres = sh("psql --version | cut -d' ' -f3") or "?"
    redis = sh("redis-server --version | sed -E 's/.*v=([0-9.]+).*/\\1/'") or "?"
    rabbit = sh("rabbitmqctl version 2>/dev/null") or "?"
    nginx = sh("nginx -v 2>&1 | cut -d/ -f2") or "?"
    rustc = sh("rustc --version")
    return [
        f"- CPU: {cpu}, {cores} cores (client and servers share them)",
        f"- Memory: {mem}; kernel {platform.release()}",
        f"- Postgres {postgres}, Redis {redis}, RabbitMQ {rabbit}, nginx {nginx}",
        f"- {rustc}, release profile (thin LTO)",
    ]


def ms(us):
    return f"{us / 1000:.2f}" if us is not None else "-"


def tiers(report):
    x = report.get("x_cache") or {}
    total = sum(x.values()) or 1
    parts = []
    for key, name in (("hit_l1", "L1"), ("hit_l2", "L2"), ("miss", "miss")):
        if x.get(key):
            parts.append(f"{name} {100 * x[key] / total:.1f}%")
    return ", ".join(parts) or "-"


def queries(report):
    db = report.get("db_queries")
    if not db or db.get("per_1000_requests") is None:
        return "-"
    return f"{db['per_1000_requests']:.1f}"


def scenario_rows(results, ceiling):
    rows = [
        "| scenario | req/s | × nginx | p50 ms | p90 ms | p99 ms | p99.9 ms | max ms | Postgres queries / 1000 req | answered from | errors | client CPU |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|",
    ]
    for name in ["1-nginx", "2-l1", "3-l2", "4-nocache", "5-zipf", "5b-zipf-70", "5c-zipf-nocache",
                 "5d-zipf-evict", "5e-zipf-readonly"]:
        path = results / f"{name}.json"
        if not path.exists():
            continue
        r = load(path)
        lat = r["reads"]["latency_us"]
        rps = r["throughput_rps"]
        ratio = f"{rps / ceiling:.2f}" if ceiling else "-"
        cpu = (r.get("client_cpu") or {}).get("percent_of_one_core")
        cpu = f"{cpu:.0f}% of a core" if cpu is not None else "-"
        label = r["label"]
        if r.get("runs_rps"):
            label += " (runs: " + " / ".join(f"{x / 1000:.1f}k" for x in r["runs_rps"]) + ")"
        rows.append(
            f"| {label} | {rps:,.0f} | {ratio} | {ms(lat['p50'])} | {ms(lat['p90'])} | {ms(lat['p99'])} "
            f"| {ms(lat['p99_9'])} | {ms(lat['max'])} | {queries(r)} | {tiers(r)} | {r['errors']} | {cpu} |"
        )
    return rows


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--results", type=Path, required=True)
    ap.add_argument("--doc", type=Path, required=True)
    ap.add_argument("--products", required=True)
    ap.add_argument("--duration", required=True)
    ap.add_argument("--warmup", required=True)
    ap.add_argument("--connections", required=True)
    ap.add_argument("--client-threads", required=True)
    ap.add_argument("--quick", default="no")
    ap.add_argument("--mode", default="refresh")
    a = ap.parse_args()
    res = a.results

    nginx = load(res / "1-nginx.json")
    ceiling = nginx["throughput_rps"]
    l1 = load(res / "2-l1.json")
    l2 = load(res / "3-l2.json")
    zipf = load(res / "5-zipf.json")
    zipf70 = load(res / "5b-zipf-70.json")
    zipf_nocache = load(res / "5c-zipf-nocache.json")
    readonly = load(res / "5e-zipf-readonly.json")
    fresh = load(res / "6-freshness.json")
    fresh_runs = [load(res / f) for f in ("6a-freshness-idle.json", "6-freshness.json", "6c-freshness-saturated.json")
                  if (res / f).exists()]
    rss = dict(line.split() for line in (res / "rss.txt").read_text().splitlines() if line.strip())

    out = [BEGIN, ""]
    if a.quick == "yes":
        out += ["> **Quick run** (`--quick`): a small catalog and short windows. Not for publishing.", ""]
    out += ["### Machine", ""] + machine() + [""]
    out += [
        "### Settings",
        "",
        f"`scripts/bench.sh`: {int(a.products):,} products seeded through the bulk endpoint; every scenario "
        f"runs `catalog-bench load -c {a.connections} -d {a.duration} --warmup {a.warmup} --threads {a.client_threads}` "
        "(closed loop: each connection sends its next request when the previous answer arrives; 5b is open loop "
        "at a fixed rate, latency measured from the intended send time). Services: release build, 2 HTTP "
        f"workers each, default settings except `invalidator.mode = {a.mode}` (5d: evict), all on this "
        "machine; read-api A and B have both caches, C has L1 disabled, D has caching off. Before the Zipf "
        "runs, `catalog-bench warm` reads every product once on A and B: the runs measure a warm, steady "
        "state, not the first touch of each key.",
        "",
        "### Scenarios",
        "",
    ]
    out += scenario_rows(res, ceiling)
    out += [""]

    def target(name, ok, measured):
        return f"| {name} | {measured} | {'met' if ok else '**missed**'} |"

    zipf_q = (zipf.get("db_queries") or {}).get("per_1000_requests")
    p99_70 = zipf70["reads"]["latency_us"]["p99"]
    lag = fresh["lag_us"]
    out += [
        "### Targets",
        "",
        "| target | measured | |",
        "|---|---|---|",
        target("L1 hit ≥ 0.8 × nginx", l1["throughput_rps"] >= 0.8 * ceiling,
               f"{l1['throughput_rps'] / ceiling:.2f} ×"),
        target("L2 hit ≥ 0.5 × nginx", l2["throughput_rps"] >= 0.5 * ceiling,
               f"{l2['throughput_rps'] / ceiling:.2f} ×"),
        target("Zipf: ≤ 5 Postgres queries / 1000 requests", zipf_q is not None and zipf_q <= 5,
               f"{zipf_q:.1f}" if zipf_q is not None else "-"),
        target("Zipf ≥ 0.7 × nginx", zipf["throughput_rps"] >= 0.7 * ceiling,
               f"{zipf['throughput_rps'] / ceiling:.2f} × with 1 % writes ({zipf['throughput_rps'] / zipf_nocache['throughput_rps']:.1f} × the no-cache run); "
               f"read-only: {readonly['throughput_rps'] / ceiling:.2f} ×"),
        target("Zipf p99 ≤ 5 ms at 70 % of saturation", p99_70 <= 5000, f"{p99_70 / 1000:.2f} ms"),
        target("freshness p99 ≤ 10 ms (at 70 % load)", lag["p99"] <= 10_000, f"{lag['p99'] / 1000:.2f} ms"),
        target("freshness max ≤ 100 ms (at 70 % load)", lag["max"] <= 100_000, f"{lag['max'] / 1000:.2f} ms"),
        target("0 stale reads after convergence", fresh["stale_after_convergence"] == 0,
               str(fresh["stale_after_convergence"])),
        target("0 regressions", fresh["regressions"] == 0, str(fresh["regressions"])),
        target("read-api RSS ≤ 200 MB with 100k L1 entries", int(rss.get("read-a-after-warm", 0)) <= 200,
               f"{rss.get('read-a-after-warm')} MB right after warming, holding "
               f"{int(float(rss.get('l1-entries-after-warm', 0))):,} L1 entries"),
        "",
        "### Freshness",
        "",
        f"PATCHes at {fresh['config']['write_rate']}/s over 50 products while 2 reader tasks per product poll "
        f"each of {len(fresh['instances'])} read-api instances; lag from write-api's 200 to the first read "
        "showing the new version (an upper bound: it includes one read round trip). Background load: none, "
        "the 5b load (paced at 70 % of saturation), and the closed-loop scenario-5 load (saturation).",
        "",
        "| run | observations | p50 ms | p90 ms | p99 ms | p99.9 ms | max ms | timeouts | stale after convergence | regressions | background |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for f in fresh_runs:
        l = f["lag_us"]
        bg = f.get("background")
        bg_text = (f"{bg['throughput_rps']:,.0f} req/s, read p99 {ms(bg['reads']['latency_us']['p99'])} ms"
                   if bg else "none")
        out.append(
            f"| {f['label']} | {f['observations']:,} | {ms(l['p50'])} | {ms(l['p90'])} | {ms(l['p99'])} "
            f"| {ms(l['p99_9'])} | {ms(l['max'])} | {f['timeouts']} | {f['stale_after_convergence']} "
            f"| {f['regressions']} | {bg_text} |"
        )
    out += [
        "",
        "### Resident memory after the run",
        "",
        "| process | RSS |",
        "|---|---:|",
    ]
    for name in ["read-a-after-warm", "read-a", "read-b", "read-l2", "read-nocache", "write-api", "invalidator"]:
        if name in rss:
            out.append(f"| {name} | {rss[name]} MB |")
    out += [
        "",
        f"read-a held {int(float(rss.get('l1-entries-after-warm', 0))):,} L1 entries right after warming and "
        f"{int(float(rss.get('l1-entries-read-a', 0))):,} at the end.",
        "",
        "### Plots",
        "",
        "![Read latency by scenario](bench/latency.svg)",
        "",
        "![Freshness lag](bench/freshness.svg)",
        "",
        END,
    ]
    generated = "\n".join(out)

    doc = a.doc.read_text() if a.doc.exists() else f"# Benchmarks\n\n{BEGIN}\n{END}\n"
    if BEGIN in doc and END in doc:
        head, rest = doc.split(BEGIN, 1)
        _, tail = rest.split(END, 1)
        doc = head + generated + tail
    else:
        doc = doc.rstrip() + "\n\n" + generated + "\n"
    a.doc.write_text(doc)


if __name__ == "__main__":
    main()
