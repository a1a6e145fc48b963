#!/usr/bin/env python3
"""Writes the generated part of docs/benchmarks.md from scripts/bench.sh's
results: the machine, the settings, a table per scenario, the targets, the
freshness numbers, resident memory and the plots.

The curves of "how cost grows" (catalog size, write rate, RSS over the soak)
are drawn here as plain SVG line charts, with no plotting library to install.

Only the text between the `generated:begin` and `generated:end` markers is
replaced, so the hand-written analysis around it survives a re-run.
"""

import argparse
import json
import math
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
    return per_1000((report.get("db_queries") or {}).get("per_1000_requests"))


def per_1000(value):
    return "-" if value is None else f"{value:.1f}"



def ms1(us):
    return f"{us / 1000:.1f}" if us is not None else "-"


def kv(path):
    if not path.exists():
        return {}
    out = {}
    for line in path.read_text().splitlines():
        parts = line.split()
        if len(parts) == 2:
            try:
                out[parts[0]] = float(parts[1])
            except ValueError:
                pass
    return out


def opt(res, name):
    path = res / f"{name}.json"
    return load(path) if path.exists() else None


def runs_text(r):
    if not r.get("runs_rps"):
        return ""
    return " / ".join(f"{x / 1000:.1f}k" for x in r["runs_rps"])


# ------------------------------------------------------------------ SVG ----

def nice_ticks(lo, hi, n=5):
    if hi <= lo:
        hi = lo + 1
    raw = (hi - lo) / n
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    start = math.floor(lo / step) * step
    ticks = []
    t = start
    while t <= hi + step * 0.5:
        ticks.append(t)
        t += step
    return ticks


def fmt_num(v):
    if abs(v) >= 1_000_000:
        return f"{v / 1_000_000:g}M"
    if abs(v) >= 1000:
        return f"{v / 1000:g}k"
    return f"{v:g}"


def panel(x0, y0, w, h, title, xlabel, ylabel, points, logx):
    """One line chart at (x0, y0): a list of SVG elements."""
    el = []
    if not points:
        return el
    xs = [p[0] for p in points]
    ys = [p[1] for p in points]
    fx = (lambda v: math.log10(v)) if logx else (lambda v: v)
    xlo, xhi = fx(min(xs)), fx(max(xs))
    if xhi == xlo:
        xhi = xlo + 1
    yticks = nice_ticks(0, max(ys) * 1.1 if max(ys) > 0 else 1)
    ylo, yhi = yticks[0], yticks[-1]
    L, R, T, B = 60, 15, 28, 40
    pw, ph = w - L - R, h - T - B

    def px(v):
        return x0 + L + (fx(v) - xlo) / (xhi - xlo) * pw

    def py(v):
        return y0 + T + ph - (v - ylo) / (yhi - ylo) * ph

    el.append(f'<text x="{x0 + w / 2}" y="{y0 + 16}" text-anchor="middle" font-weight="bold">{title}</text>')
    el.append(f'<rect x="{x0 + L}" y="{y0 + T}" width="{pw}" height="{ph}" fill="none" stroke="#999"/>')
    for t in yticks:
        y = py(t)
        el.append(f'<line x1="{x0 + L}" y1="{y:.1f}" x2="{x0 + L + pw}" y2="{y:.1f}" stroke="#eee"/>')
        el.append(f'<text x="{x0 + L - 5}" y="{y + 4:.1f}" text-anchor="end">{fmt_num(t)}</text>')
    for v in xs:
        x = px(v)
        el.append(f'<text x="{x:.1f}" y="{y0 + T + ph + 15}" text-anchor="middle">{fmt_num(v)}</text>')
    el.append(f'<text x="{x0 + L + pw / 2}" y="{y0 + h - 6}" text-anchor="middle">{xlabel}</text>')
    el.append(f'<text x="{x0 + 14}" y="{y0 + T + ph / 2}" text-anchor="middle" '
              f'transform="rotate(-90 {x0 + 14} {y0 + T + ph / 2})">{ylabel}</text>')
    path = " ".join(f"{px(x):.1f},{py(y):.1f}" for x, y in points)
    el.append(f'<polyline points="{path}" fill="none" stroke="#1f77b4" stroke-width="2"/>')
    for x, y in points:
        el.append(f'<circle cx="{px(x):.1f}" cy="{py(y):.1f}" r="3.5" fill="#1f77b4"/>')
    return el


def write_svg(path, title, panels, cols=2, w=380, h=250):
    """panels: [(title, xlabel, ylabel, [(x, y)...], logx)]."""
    rows = math.ceil(len(panels) / cols)
    width, height = cols * w, rows * h + 30
    el = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
          f'font-family="sans-serif" font-size="11">',
          f'<rect width="{width}" height="{height}" fill="white"/>',
          f'<text x="{width / 2}" y="18" text-anchor="middle" font-size="14" font-weight="bold">{title}</text>']
    for i, (t, xl, yl, pts, logx) in enumerate(panels):
        el += panel((i % cols) * w, 30 + (i // cols) * h, w, h, t, xl, yl, pts, logx)
    el.append("</svg>")
    path.write_text("\n".join(el) + "\n")


# --------------------------------------------------------------- tables ----

def ceiling_rows(res):
    rows = [
        "| workers | target | req/s (median round) | rounds | × nginx | p50 ms | p99 ms (median round) | p99 range | p99 ÷ nginx p99 | answered from |",
        "|---:|---|---:|---|---:|---:|---:|---|---:|---|",
    ]
    facts = {}
    for w in ("w1", "w2"):
        nginx = opt(res, f"1-nginx-{w}")
        if not nginx:
            continue
        n_rps = nginx["throughput_rps"]
        n_p99 = nginx["reads"]["latency_us"]["p99"]
        for name in (f"1-nginx-{w}", f"2-l1-{w}", f"3-l2-{w}"):
            r = opt(res, name)
            if not r:
                continue
            lat = r["reads"]["latency_us"]
            rng = r.get("runs_p99_us") or [lat["p99"]]
            facts[name] = (r["throughput_rps"] / n_rps, lat["p99"] / n_p99 if n_p99 else None)
            rows.append(
                f"| {w[1]} | {r['label']} | {r['throughput_rps']:,.0f} | {runs_text(r)} | "
                f"{r['throughput_rps'] / n_rps:.2f} | {ms(lat['p50'])} | {ms(lat['p99'])} | "
                f"{ms(min(rng))}–{ms(max(rng))} | {lat['p99'] / n_p99:.2f} | {tiers(r)} |"
            )
    r = opt(res, "4-nocache")
    if r:
        lat = r["reads"]["latency_us"]
        rows.append(f"| default | {r['label']} | {r['throughput_rps']:,.0f} | {runs_text(r)} | - | "
                    f"{ms(lat['p50'])} | {ms(lat['p99'])} | - | - | {tiers(r)} |")
    return rows, facts


def scenario_rows(res, ceiling):
    rows = [
        "| scenario | req/s | × nginx (2 workers) | p50 ms | p90 ms | p99 ms | p99.9 ms | max ms | Postgres queries / 1000 req | answered from | errors | client CPU |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|",
    ]
    for name in ["5-zipf", "5b-zipf-70", "5c-zipf-nocache", "5d-zipf-evict", "5e-zipf-readonly"]:
        r = opt(res, name)
        if not r:
            continue
        lat = r["reads"]["latency_us"]
        rps = r["throughput_rps"]
        ratio = f"{rps / ceiling:.2f}" if ceiling else "-"
        cpu = (r.get("client_cpu") or {}).get("percent_of_one_core")
        cpu = f"{cpu:.0f}% of a core" if cpu is not None else "-"
        rows.append(
            f"| {r['label']} | {rps:,.0f} | {ratio} | {ms(lat['p50'])} | {ms(lat['p90'])} | {ms(lat['p99'])} "
            f"| {ms(lat['p99_9'])} | {ms(lat['max'])} | {queries(r)} | {tiers(r)} | {r['errors']} | {cpu} |"
        )
    return rows


def writes_done(res, name):
    r = opt(res, name)
    return (r["writes"]["ok"], r) if r else (0, None)


def cost_per_1000(res, name):
    """{group: CPU seconds per 1000 writes}, writes, achieved rate."""
    cpu = opt(res, f"{name}-cpu")
    n, r = writes_done(res, name)
    if not cpu or not n:
        return None, 0, 0
    per = {g: v["net_s"] / n * 1000 for g, v in cpu["groups"].items()}
    return per, n, r["writes"]["throughput_rps"]


def cost_and_freshness(res, variants, first_column, intro):
    """A table of RabbitMQ's and every process's CPU per write, with the
    freshness of the same setting, one row per (label, result name); the
    lines of the section, or none if no variant ran."""
    rows = []
    for label, name in variants:
        p, _, _ = cost_per_1000(res, name)
        f = opt(res, f"{name}-fresh")
        if p is not None or f is not None:
            rows.append((label, p, f))
    if not rows:
        return []
    out = intro + [
        "",
        f"| {first_column} | RabbitMQ CPU ms per write | all processes ms per write | freshness p50 ms | p99 ms | max ms | stale after convergence |",
        "|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for label, p, f in rows:
        lag = f["lag_us"] if f else None
        out.append(
            f"| {label} | {p['rabbitmq']:.2f} | {sum(p.values()):.2f} | {ms(lag['p50']) if lag else '-'} | "
            f"{ms(lag['p99']) if lag else '-'} | {ms(lag['max']) if lag else '-'} | "
            f"{f['stale_after_convergence'] if f else '-'} |"
            if p else f"| {label} | - | - | - | - | - | - |"
        )
    return out + [""]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--results", type=Path, required=True)
    ap.add_argument("--doc", type=Path, required=True)
    ap.add_argument("--plots", type=Path, required=True)
    ap.add_argument("--products", required=True)
    ap.add_argument("--duration", required=True)
    ap.add_argument("--warmup", required=True)
    ap.add_argument("--rounds", default="3")
    ap.add_argument("--soak", default="600s")
    ap.add_argument("--reprice-read-rate", default="10000")
    ap.add_argument("--connections", required=True)
    ap.add_argument("--client-threads", required=True)
    ap.add_argument("--quick", default="no")
    ap.add_argument("--mode", default="refresh")
    ap.add_argument("--relay-linger-ms", default="10")
    a = ap.parse_args()
    res = a.results
    a.plots.mkdir(parents=True, exist_ok=True)
    rel = os.path.relpath(a.plots, a.doc.parent)

    mem = kv(res / "memory.txt")
    workers = int(mem.get("workers-default", 1))
    nginx_w2 = opt(res, "1-nginx-w2") or opt(res, "1-nginx-w1")
    ceiling2 = nginx_w2["throughput_rps"]
    zipf = load(res / "5-zipf.json")
    zipf70 = load(res / "5b-zipf-70.json")
    zipf_nocache = load(res / "5c-zipf-nocache.json")
    readonly = load(res / "5e-zipf-readonly.json")
    fresh = load(res / "6-freshness.json")
    fresh_runs = [load(res / f) for f in ("6a-freshness-idle.json", "6-freshness.json", "6c-freshness-saturated.json")
                  if (res / f).exists()]

    out = [BEGIN, ""]
    if a.quick == "yes":
        out += ["> **Quick run** (`--quick`): small catalogs and short windows. Not for publishing.", ""]
    out += ["### Machine", ""] + machine() + [""]
    out += [
        "### Settings",
        "",
        f"`scripts/bench.sh`: {int(a.products):,} products seeded through the bulk endpoint; every load scenario "
        f"runs `catalog-bench load -c {a.connections} -d {a.duration} --warmup {a.warmup} --threads {a.client_threads}` "
        "(closed loop: each connection sends its next request when the previous answer arrives; 5b is open loop "
        "at a fixed rate, latency measured from the intended send time). Services: release build, default "
        f"settings except `invalidator.mode = {a.mode}` (5d: evict), all on this machine. read-api A and B run "
        f"the default HTTP workers (cores − 1, at least 1: {workers} here) with both caches. The ceiling "
        f"targets set their workers explicitly (1 or 2) and are compared with nginx at the same worker count, "
        f"in {a.rounds} alternating round(s). Before the Zipf runs, `catalog-bench warm` reads every product "
        "once on A and B: the runs measure a warm, steady state, not the first touch of each key.",
        "",
        "### The ceiling at equal workers",
        "",
        "One hot product, the same client for every target. × nginx and p99 ÷ nginx p99 are against nginx "
        "with the same number of workers, from the same round set.",
        "",
    ]
    rows, facts = ceiling_rows(res)
    out += rows + [""]
    out += [
        "### Zipf and the cache's worth",
        "",
        f"Two read-api instances ({workers} worker(s) each) against nginx with 2 workers.",
        "",
    ]
    out += scenario_rows(res, ceiling2) + [""]

    # The cost of a write.
    per, n200, rate200 = cost_per_1000(res, "7-cost")
    cost_total = sum(per.values()) if per else None
    out += ["### The cost of a write", ""]
    if per:
        out += [
            f"PATCH only, paced at 200/s ({n200:,} writes, {rate200:.0f}/s achieved), two read-api instances "
            "subscribed; CPU (user + system) of every server process over the window, minus each one's idle "
            "rate measured just before (`scripts/bench_cpu.py`). The client is not counted.",
            "",
            "| process | CPU seconds per 1000 writes |",
            "|---|---:|",
        ]
        for g, v in sorted(per.items(), key=lambda kv_: -kv_[1]):
            out.append(f"| {g} | {v:.2f} |")
        out += [f"| **total** | **{cost_total:.2f}** |", ""]
    rate_rows = []
    for rate in (10, 100, 1000):
        p, n, achieved = cost_per_1000(res, f"7-rate-{rate}")
        f = opt(res, f"7-rate-{rate}-fresh")
        if p is None and f is None:
            continue
        lag = f["lag_us"] if f else None
        rate_rows.append((rate, achieved, sum(p.values()) if p else None, lag, f))
    if rate_rows:
        out += [
            "By write rate (CPU from a PATCH-only run at that rate; freshness from a separate "
            "`catalog-bench freshness` run at the same rate, 2 instances polled):",
            "",
            "| writes/s asked | achieved | CPU ms per write (all processes) | freshness p50 ms | p99 ms | max ms | stale after convergence |",
            "|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for rate, achieved, total, lag, f in rate_rows:
            out.append(
                f"| {rate} | {achieved:,.0f} | {total:.2f} | {ms(lag['p50']) if lag else '-'} | "
                f"{ms(lag['p99']) if lag else '-'} | {ms(lag['max']) if lag else '-'} | "
                f"{f['stale_after_convergence'] if f else '-'} |"
            )
        out.append("")
        write_svg(a.plots / "write-rate.svg", "How cost grows with the write rate", [
            ("Freshness p99", "writes per second", "ms",
             [(r, lag["p99"] / 1000) for r, _, _, lag, _ in rate_rows if lag], True),
            ("CPU per write, all processes", "writes per second", "ms",
             [(r, t) for r, _, t, _, _ in rate_rows if t is not None], True),
        ])
        out += [f"![How cost grows with the write rate]({rel}/write-rate.svg)", ""]

    variants = [(n, f"7-instances-{n}") for n in (1, 2, 4)]
    out += cost_and_freshness(res, variants, "read-api instances", [
        "By the number of read-api instances subscribed (200 PATCH/s; each instance has its own "
        "transient queue bound to the events exchange, so RabbitMQ delivers every event once per instance "
        "plus once to the invalidator's quorum queue):",
    ])
    variants = [("0 (default)", "7-linger-off"), (a.relay_linger_ms, "7-linger")]
    out += cost_and_freshness(res, variants, "relay_linger_ms", [
        "With the relay lingering (`write_api.relay_linger_ms`: a woken pass starts no sooner than "
        "that after the last pass that sent something): 200 PATCH/s, two read-api instances, "
        "the two settings one right after the other (write-api restarted between them), each a CPU run "
        "then a freshness run (4 writers over 100 products, 2 instances polled):",
    ])

    # Repricing.
    rp = opt(res, "8-reprice")
    if rp:
        out += ["### Repricing the whole catalog", "",
                f"`catalog-bench reprice`: every product gets a new price through `PATCH /products/bulk` "
                f"({rp.get('batch_size', '?')} items a request, {rp.get('concurrency', '?')} in flight"
                f"{paced(rp)}) while "
                f"Zipf reads run on A and B at {int(a.reprice_read_rate):,}/s (open loop). Freshness: sampled "
                "products of each batch polled on both instances from the bulk answer until the new version "
                "shows. After convergence every product is read once on each instance.",
                "", *reprice_rows(rp), ""]

    # Memory.
    out += memory_section(res, mem, a, rel)

    # Catalog size.
    out += size_section(res, a, rel)

    # Targets.
    def target(name, ok, measured):
        return f"| {name} | {measured} | {'met' if ok else '**missed**'} |"

    zipf_q = (zipf.get("db_queries") or {}).get("per_1000_requests")
    p99_70 = zipf70["reads"]["latency_us"]["p99"]
    lag = fresh["lag_us"]
    out += ["### Targets", "", "| target | measured | |", "|---|---|---|"]
    for w in ("w1", "w2"):
        if f"2-l1-{w}" in facts:
            ratio, p99r = facts[f"2-l1-{w}"]
            out.append(target(f"L1 hit ≥ 1.0 × nginx, {w[1]} worker(s) each", ratio >= 1.0, f"{ratio:.2f} ×"))
            out.append(target(f"L1 hit p99 ≤ 1.5 × nginx p99, {w[1]} worker(s) each",
                              p99r is not None and p99r <= 1.5, f"{p99r:.2f} ×"))
        if f"3-l2-{w}" in facts:
            ratio, _ = facts[f"3-l2-{w}"]
            out.append(target(f"L2 hit ≥ 0.7 × nginx, {w[1]} worker(s) each", ratio >= 0.7, f"{ratio:.2f} ×"))
    if cost_total is not None:
        out.append(target("a write ≤ 1.5 ms of CPU across all processes (200/s)", cost_total <= 1.5,
                          f"{cost_total:.2f} ms"))
    lingered, _, _ = cost_per_1000(res, "7-linger")
    if lingered:
        total = sum(lingered.values())
        out.append(target(f"a write ≤ 1.5 ms of CPU (200/s, relay linger {a.relay_linger_ms} ms)",
                          total <= 1.5, f"{total:.2f} ms"))
    if rp:
        fr = rp["freshness"]
        rd = rp.get("reads_during_run") or {}
        out.append(target(f"reprice {rp['products']:,} products in ≤ 60 s", rp["apply_s"] <= 60,
                          f"{rp['apply_s']:.1f} s ({rp['events_per_s']:,.0f} events/s)"))
        out.append(target("read p99 ≤ 20 ms while repricing", rd.get("p99_ms", float("nan")) <= 20, f"{rd.get('p99_ms', float('nan')):.1f} ms"))
        out.append(target("0 stale reads after the reprice converged", rp["stale_after_convergence"] == 0,
                          f"{rp['stale_after_convergence']} of {rp.get('verified_reads', 0):,} reads"))
    over = memory_overhead(mem)
    if over is not None:
        out.append(target("≤ 1 KB of overhead per L1 entry beyond the cached bytes", over <= 1024,
                          f"{over:,.0f} B"))
    soak = soak_summary(res)
    if soak:
        out.append(target(f"RSS flat within 10 % over the {a.soak} Zipf run after warm-up",
                          abs(soak["growth_pct"]) <= 10,
                          f"{soak['growth_pct']:+.1f} % ({soak['first_mb']:.0f} → {soak['last_mb']:.0f} MB, "
                          f"max {soak['max_mb']:.0f} MB)"))
    out += [
        target("Zipf: ≤ 5 Postgres queries / 1000 requests", zipf_q is not None and zipf_q <= 5,
               f"{zipf_q:.1f}" if zipf_q is not None else "-"),
        target("Zipf ≥ 0.7 × nginx (2 workers)", zipf["throughput_rps"] >= 0.7 * ceiling2,
               f"{zipf['throughput_rps'] / ceiling2:.2f} × with 1 % writes "
               f"({zipf['throughput_rps'] / zipf_nocache['throughput_rps']:.1f} × the no-cache run); "
               f"read-only: {readonly['throughput_rps'] / ceiling2:.2f} ×"),
        target("Zipf p99 ≤ 5 ms at 70 % of saturation", p99_70 <= 5000, f"{p99_70 / 1000:.2f} ms"),
        target("freshness p99 ≤ 10 ms (at 70 % load)", lag["p99"] <= 10_000, f"{lag['p99'] / 1000:.2f} ms"),
        target("freshness max ≤ 100 ms (at 70 % load)", lag["max"] <= 100_000, f"{lag['max'] / 1000:.2f} ms"),
        target("0 stale reads after convergence (freshness runs)",
               all(f["stale_after_convergence"] == 0 for f in fresh_runs),
               " / ".join(str(f["stale_after_convergence"]) for f in fresh_runs)),
        target("0 regressions", all(f["regressions"] == 0 for f in fresh_runs),
               " / ".join(str(f["regressions"]) for f in fresh_runs)),
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
        "### Plots",
        "",
        f"![Read latency by scenario]({rel}/latency.svg)",
        "",
        f"![Freshness lag]({rel}/freshness.svg)",
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


def paced(rp):
    """How the apply was paced, as the prose says it."""
    rate = rp.get("rate")
    return f", paced at {rate:,.0f} products/s" if rate else ""


def reprice_rows(rp):
    fr = rp["freshness"]
    rd = rp.get("reads_during_run") or {}
    bulk = rp.get("bulk") or {}
    return [
        "| products | time to apply | events/s | bulk request p50 / p99 ms | freshness p50 / p99 / max ms (samples, timeouts) | reads during the run: req/s, p99 / max ms, errors | stale after convergence | write errors |",
        "|---:|---:|---:|---|---|---|---:|---:|",
        f"| {rp['products']:,} | {rp['apply_s']:.1f} s | {rp['events_per_s']:,.0f} | "
        f"{bulk.get('p50_ms', float('nan')):.1f} / {bulk.get('p99_ms', float('nan')):.1f} | "
        f"{fr['p50_ms']:.1f} / {fr['p99_ms']:.1f} / {fr['max_ms']:.1f} ({fr['samples']:,}, {fr['timeouts']}) | "
        f"{rd.get('rps', 0):,.0f}, {rd.get('p99_ms', float('nan')):.1f} / {rd.get('max_ms', float('nan')):.1f}, {rd.get('errors', 0)} | "
        f"{rp['stale_after_convergence']} of {rp.get('verified_reads', 0):,} | {rp.get('errors', 0)} |",
    ]


def memory_overhead(mem):
    """Bytes of RSS per L1 entry beyond the cached bytes, from warming A."""
    entries = mem.get("l1-entries-after-warm")
    if not entries:
        return None
    grown = (mem["rss-kb-after-warm"] - mem["rss-kb-at-start"]) * 1024
    return grown / entries - mem.get("body-bytes-avg", 0)


def soak_summary(res):
    path = res / "9-soak.tsv"
    if not path.exists():
        return None
    rows = [line.split("\t") for line in path.read_text().splitlines()[1:] if line.strip()]
    rows = [(float(t), float(r) / 1024) for t, r, *_ in rows if r]
    if len(rows) < 2:
        return None
    first, last = rows[0][1], rows[-1][1]
    return {
        "rows": rows,
        "first_mb": first,
        "last_mb": last,
        "max_mb": max(r for _, r in rows),
        "growth_pct": (last - first) / first * 100,
    }


def memory_section(res, mem, a, rel):
    out = ["### Memory", ""]
    over = memory_overhead(mem)
    if over is not None:
        entries = mem["l1-entries-after-warm"]
        grown = (mem["rss-kb-after-warm"] - mem["rss-kb-at-start"]) / 1024
        out += [
            f"read-api A from its start (before the seed) until every product was read once: RSS "
            f"{mem['rss-kb-at-start'] / 1024:.0f} → "
            f"{mem['rss-kb-after-warm'] / 1024:.0f} MB for {entries:,.0f} L1 entries whose bodies average "
            f"{mem.get('body-bytes-avg', 0):,.0f} B: {grown * 1024 * 1024 / entries:,.0f} B of RSS per entry, "
            f"**{over:,.0f} B of overhead per entry** beyond the cached body (key, moka's bookkeeping, the "
            "entry's state and allocator slack). L1's own weight (`cache_l1_bytes`) charges "
            f"{mem.get('l1-bytes-after-warm', 0) / entries:,.0f} B an entry: the body plus a fixed 400 B, and at "
            "least `l1_max_bytes / l1_capacity`, so it bounds RSS from above.",
            "",
        ]
    soak = soak_summary(res)
    if soak:
        out += [
            f"RSS of read-api A over {a.soak} of Zipf with 1 % writes on A and B, right after warming "
            f"(sampled every few seconds): {soak['first_mb']:.1f} MB at the start, {soak['last_mb']:.1f} MB at "
            f"the end, {soak['max_mb']:.1f} MB at most: **{soak['growth_pct']:+.1f} %**.",
            "",
        ]
        write_svg(a.plots / "soak.svg", "read-api A resident memory over the Zipf run",
                  [("RSS", "seconds", "MB", soak["rows"], False)], cols=1, w=600, h=260)
        out += [f"![RSS over the soak]({rel}/soak.svg)", ""]
    after = {k[7:]: v for k, v in mem.items() if k.startswith("rss-mb-")}
    if after:
        out += ["RSS at the end of the main run: " + ", ".join(f"{k} {v:.0f} MB" for k, v in after.items()) + ".",
                ""]
    return out


def size_section(res, a, rel):
    rows = []
    for path in sorted(res.glob("10-size-*-seed.json"), key=lambda p: int(p.name.split("-")[2])):
        size = int(path.name.split("-")[2])
        seed = load(path)
        m = kv(res / f"10-size-{size}.txt")
        z = opt(res, f"10-size-{size}-zipf")
        entries = m.get("l1-entries-after-warm", 0)
        grown = (m.get("rss-kb-after-warm", 0) - m.get("rss-kb-at-start", 0)) * 1024
        body = m.get("body-bytes-avg", 0)
        x = (z or {}).get("x_cache") or {}
        total = sum(x.values()) or 1
        rows.append({
            "size": size,
            "seed_s": seed["elapsed_s"],
            "seed_rate": seed["products_per_s"],
            "entries": m.get("l1-entries-after-warm", 0),
            "rss_per_entry": grown / entries if entries > 0 else None,
            "overhead": grown / entries - body if entries > 0 else None,
            "l1": 100 * x.get("hit_l1", 0) / total,
            "l2": 100 * x.get("hit_l2", 0) / total,
            "queries": ((z or {}).get("db_queries") or {}).get("per_1000_requests"),
            "rps": (z or {}).get("throughput_rps"),
        })
    if not rows:
        return []
    out = [
        "### How cost grows with the catalog",
        "",
        "For each size: a fresh database, write-api, the invalidator and one read-api (defaults); seed "
        "through the bulk endpoint, warm every product once, then Zipf(1.0) read-only on that instance with "
        "the settings above. RSS per L1 entry is read-api's RSS growth from its start (before the seed: "
        "L1 fills from the creation events) to the end of the warm-up, divided by the L1 entries then; "
        "L1 is bounded by `cache.l1_max_bytes` (128 MiB), so a large catalog keeps only its hottest part in L1.",
        "",
        "| products | seed time | seed rate | L1 entries after warm | RSS per L1 entry | of which overhead | Zipf: L1 / L2 hits | Postgres queries / 1000 req | req/s |",
        "|---:|---:|---:|---:|---:|---:|---|---:|---:|",
    ]
    for r in rows:
        out.append(
            f"| {r['size']:,} | {r['seed_s']:.1f} s | {r['seed_rate']:,.0f}/s | {r['entries']:,.0f} | "
            f"{r['rss_per_entry']:,.0f} B | {r['overhead']:,.0f} B | {r['l1']:.1f} % / {r['l2']:.1f} % | "
            f"{per_1000(r['queries'])} | {r['rps'] or 0:,.0f} |"
            if r["rss_per_entry"] is not None else
            f"| {r['size']:,} | {r['seed_s']:.1f} s | {r['seed_rate']:,.0f}/s | - | - | - | "
            f"{r['l1']:.1f} % / {r['l2']:.1f} % | {per_1000(r['queries'])} | {r['rps'] or 0:,.0f} |"
        )
    out.append("")
    write_svg(a.plots / "catalog-size.svg", "How cost grows with the catalog", [
        ("Seed time", "products", "seconds", [(r["size"], r["seed_s"]) for r in rows], True),
        ("RSS per L1 entry", "products", "bytes",
         [(r["size"], r["rss_per_entry"]) for r in rows if r["rss_per_entry"] is not None], True),
        ("Zipf L1 hit ratio", "products", "%", [(r["size"], r["l1"]) for r in rows], True),
        ("Postgres queries per 1000 requests", "products", "queries",
         [(r["size"], r["queries"]) for r in rows if r["queries"] is not None], True),
    ])
    out += [f"![How cost grows with the catalog]({rel}/catalog-size.svg)", ""]
    return out


if __name__ == "__main__":
    main()
