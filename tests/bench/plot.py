#!/usr/bin/env python3
"""Draw the soak's CSV (tests/bench/soak.sh) as an SVG line chart, with the standard library only.

    python3 tests/bench/plot.py SOAK_CSV [--out-dir docs/bench]

Writes OUT_DIR/soak.svg (panels over time: the gateway's RSS in MiB, with its anonymous and
file-backed parts; the req/s it answered per interval against the target rate; the CPU of the
gateway, of the load (wrk and the mock) and of the rest of the machine) and copies the CSV to
OUT_DIR/soak.csv. The title carries the date and the figures: RSS at the start, at
the end and its maximum, and its slope in MiB per minute over the last 8 minutes (a least-squares
fit; over the whole run if it is shorter), called flat when it grows at most 0.1 MiB/min (1 MiB in
10 minutes; memory given back is no leak).
Prints the figures as one JSON line.
"""

import argparse
import csv
import json
import math
import os
import shutil
import sys
from html import escape

SLOPE_WINDOW_S = 480  # the last 8 minutes
# The verdict "flat": the fitted slope over that window at most this (1 MiB per 10 minutes).
FLAT_MIB_PER_MIN = 0.1


def read_csv(path):
    meta, lines = {}, []
    with open(path, newline="") as f:
        for line in f:
            if line.startswith("#"):
                key, _, value = line[1:].strip().partition("=")
                meta[key.strip()] = value.strip()
            elif line.strip():
                lines.append(line)
    rows = list(csv.DictReader(lines))
    if not rows:
        sys.exit(f"plot.py: no samples in {path}")
    return meta, rows


def num(row, key):
    v = row.get(key, "")
    return float(v) if v not in ("", None) else None


def mean(values):
    vs = [v for v in values if v is not None]
    return round(sum(vs) / len(vs), 1) if vs else None


def slope_per_min(points):
    """Least-squares slope of (seconds, MiB) points, in MiB per minute, and the points' centre
    (the fitted line passes through it); (0.0, None) for fewer than two distinct times."""
    if len(points) < 2:
        return 0.0, None
    n = len(points)
    mx = sum(p[0] for p in points) / n
    my = sum(p[1] for p in points) / n
    sxx = sum((p[0] - mx) ** 2 for p in points)
    if sxx == 0:
        return 0.0, None
    sxy = sum((p[0] - mx) * (p[1] - my) for p in points)
    return 60 * sxy / sxx, (mx, my)


def nice_ticks(lo, hi, count=5):
    """Round tick values covering [lo, hi] (lo is kept when it is 0)."""
    span = hi - lo if hi > lo else (abs(hi) or 1)
    raw = span / count
    mag = 10 ** math.floor(math.log10(raw))
    step = min((m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw), default=10 * mag)
    first = math.floor(lo / step) * step
    last = math.ceil(hi / step) * step
    ticks, v = [], first
    while v <= last + step / 1e6:
        ticks.append(round(v, 10))
        v += step
    return ticks


def dur(secs):
    """A duration for the title: seconds under two minutes, else minutes."""
    return f"{secs:g} s" if secs < 120 else f"{secs / 60:.3g} min"


def fmt(v):
    if abs(v) >= 1000:
        return f"{v:,.0f}"
    if v == int(v):
        return str(int(v))
    return f"{v:g}"


class Panel:
    """One chart area: maps data to pixels and draws axes, grid and ticks."""

    def __init__(self, x0, y0, w, h, xticks, yticks):
        self.x0, self.y0, self.w, self.h = x0, y0, w, h
        self.xmin, self.xmax = xticks[0], xticks[-1]
        self.ymin, self.ymax = yticks[0], yticks[-1]
        self.xticks, self.yticks = xticks, yticks

    def px(self, x):
        return self.x0 + (x - self.xmin) / (self.xmax - self.xmin) * self.w

    def py(self, y):
        return self.y0 + self.h - (y - self.ymin) / (self.ymax - self.ymin) * self.h

    def frame(self, out, xlabel, ylabel):
        for t in self.yticks:
            y = self.py(t)
            out.append(f'<line x1="{self.x0}" y1="{y:.1f}" x2="{self.x0 + self.w}" y2="{y:.1f}" class="grid"/>')
            out.append(f'<line x1="{self.x0 - 5}" y1="{y:.1f}" x2="{self.x0}" y2="{y:.1f}" class="axis"/>')
            out.append(f'<text x="{self.x0 - 8}" y="{y + 4:.1f}" text-anchor="end">{fmt(t)}</text>')
        for t in self.xticks:
            x = self.px(t)
            yb = self.y0 + self.h
            out.append(f'<line x1="{x:.1f}" y1="{self.y0}" x2="{x:.1f}" y2="{yb}" class="grid"/>')
            out.append(f'<line x1="{x:.1f}" y1="{yb}" x2="{x:.1f}" y2="{yb + 5}" class="axis"/>')
            out.append(f'<text x="{x:.1f}" y="{yb + 19}" text-anchor="middle">{fmt(t)}</text>')
        out.append(
            f'<rect x="{self.x0}" y="{self.y0}" width="{self.w}" height="{self.h}" class="axis" fill="none"/>'
        )
        out.append(
            f'<text x="{self.x0 + self.w / 2}" y="{self.y0 + self.h + 38}" text-anchor="middle">{escape(xlabel)}</text>'
        )
        cx, cy = self.x0 - 52, self.y0 + self.h / 2
        out.append(
            f'<text x="{cx}" y="{cy}" text-anchor="middle" transform="rotate(-90 {cx} {cy})">{escape(ylabel)}</text>'
        )

    def line(self, out, points, cls):
        pts = " ".join(f"{self.px(x):.1f},{self.py(y):.1f}" for x, y in points if y is not None)
        if pts:
            out.append(f'<polyline points="{pts}" class="{cls}" fill="none"/>')

    def legend(self, out, items):
        x, y = self.x0 + 12, self.y0 + 18
        for label, cls in items:
            out.append(f'<line x1="{x}" y1="{y - 4}" x2="{x + 24}" y2="{y - 4}" class="{cls}"/>')
            out.append(f'<text x="{x + 30}" y="{y}">{escape(label)}</text>')
            x += 52 + 7 * len(label)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("csv")
    here = os.path.dirname(os.path.abspath(__file__))
    ap.add_argument("--out-dir", default=os.path.join(here, "..", "..", "docs", "bench"))
    args = ap.parse_args()

    meta, rows = read_csv(args.csv)
    t = [num(r, "t_s") for r in rows]
    mib = lambda r, k: (num(r, k) / 1024 if num(r, k) is not None else None)  # noqa: E731
    rss = [mib(r, "rss_kib") for r in rows]
    anon = [mib(r, "rss_anon_kib") for r in rows]
    filed = [mib(r, "rss_file_kib") for r in rows]
    rps = [num(r, "req_s") for r in rows]
    busy = [num(r, "machine_busy_pct") for r in rows]
    others = [num(r, "others_cpu_pct") for r in rows]
    # Older CSVs have no slot column.
    slots = [mib(r, "slot_resident_kib") for r in rows]
    # Fiber stacks that have run a plugin: the unused warm ones and those in use.
    stacks = [
        (num(r, "stacks_warm") or 0) + (num(r, "plugin_instances") or 0) if num(r, "stacks_warm") is not None else None
        for r in rows
    ]

    gw_cpu = [num(r, "cpu_pct") for r in rows]
    load_cpu = [num(r, "load_cpu_pct") for r in rows]

    # The first row (t = 0) is taken just before the paced load starts (the gateway idle after
    # the peak measurement); "start" is the first sample under the soak's load, and the slope is
    # fitted to samples under load only.
    first = next((i for i, v in enumerate(rps) if v is not None), 0)
    t_end = t[-1]
    window = [(x, y) for x, y in list(zip(t, rss))[first:] if x >= t_end - SLOPE_WINDOW_S]
    slope, centre = slope_per_min(window)
    loaded = [v for v in rps if v is not None]
    target = float(meta.get("target_rps", "0") or 0)
    r1 = lambda v: round(v, 1) if v is not None else None  # noqa: E731
    figures = {
        "date": meta.get("date", ""),
        "git": meta.get("git", ""),
        "duration_s": t_end,
        "peak_rps": float(meta.get("peak_rps", "0") or 0),
        "target_rps": target,
        "rps_mean": mean(loaded),
        "rps_min": min(loaded) if loaded else None,
        "rps_max": max(loaded) if loaded else None,
        "intervals_off_target_5pct": sum(1 for v in loaded if target and abs(v - target) > 0.05 * target),
        "rss_idle_before_mib": r1(rss[0]),
        "rss_start_mib": r1(rss[first]),
        "rss_start_t_s": t[first],
        "rss_end_mib": r1(rss[-1]),
        "rss_max_mib": r1(max(rss)),
        "rss_anon_start_mib": r1(anon[first]),
        "rss_anon_end_mib": r1(anon[-1]),
        "rss_file_start_mib": r1(filed[first]),
        "rss_file_end_mib": r1(filed[-1]),
        "slope_mib_per_min": round(slope, 3),
        "slope_window_s": window[-1][0] - window[0][0] if window else 0,
        "rss_flat": slope <= FLAT_MIB_PER_MIN,
        # What the plugin runtime's unused slots kept resident, and the fiber stacks that ran
        # a plugin: both step up only with a new peak of instances alive at once.
        "slot_resident_start_mib": r1(slots[first]),
        "slot_resident_end_mib": r1(slots[-1]),
        "stacks_used_start": stacks[first],
        "stacks_used_end": stacks[-1],
        "gateway_cpu_pct_mean": mean(gw_cpu),
        "load_cpu_pct_mean": mean(load_cpu),
        "machine_busy_pct_mean": mean(busy),
        "others_cpu_pct_mean": mean(others),
        "others_cpu_pct_max": max((v for v in others if v is not None), default=None),
    }

    # Minutes on the x axis unless the run is short.
    in_min = t_end >= 120
    xs = [x / 60 for x in t] if in_min else t
    xlabel = "time since the soak started (min)" if in_min else "time since the soak started (s)"
    xticks = nice_ticks(0, xs[-1] if xs[-1] > 0 else 1, 10)

    W, H = 1000, 890
    left, right = 90, 30
    pw = W - left - right
    rss_ticks = nice_ticks(0, max(rss) * 1.15, 5)
    rps_ticks = nice_ticks(0, max(loaded + [target]) * 1.15 if loaded else 1, 5)
    cpus = [v for v in gw_cpu + load_cpu + others if v is not None]
    cpu_ticks = nice_ticks(0, max(cpus + [100]) * 1.15, 4)
    top = Panel(left, 125, pw, 200, xticks, rss_ticks)
    middle = Panel(left, 395, pw, 180, xticks, rps_ticks)
    bottom = Panel(left, 645, pw, 160, xticks, cpu_ticks)

    date = meta.get("date", "")[:10]
    title = (
        f"Tollgate soak, {date}: {target:,.0f} req/s ({meta.get('soak_pct', '?')}% of the "
        f"{figures['peak_rps']:,.0f} req/s peak) for {dur(t_end)}"
    )
    subtitle = (
        f"RSS under load: start {figures['rss_start_mib']} MiB, end {figures['rss_end_mib']} MiB, "
        f"max {figures['rss_max_mib']} MiB; slope {slope:+.3f} MiB/min over the last {dur(figures['slope_window_s'])} "
        + (f"(flat: grows at most {FLAT_MIB_PER_MIN} MiB/min)" if figures["rss_flat"] else f"(not flat: grows more than {FLAT_MIB_PER_MIN} MiB/min)")
    )
    billing = "billing on" if meta.get("billing") != "0" else "billing off"
    notes = [
        f"Gateway: auth, the openai wasm plugin, {billing}, a weighted key pool, the call log; git {meta.get('git', '?')}. "
        f"Data: soak.csv beside this file.",
        f"Load: wrk, {meta.get('conns', '?')} connections paced to the target (tests/bench/soak.lua). "
        f"A sample every {meta.get('sample_secs', '?')} s; rates and CPU over each interval.",
        f"RSS at t = 0 (idle, just before the load): {figures['rss_idle_before_mib']} MiB. "
        f"{meta.get('cores', '?')} cores shared by the gateway, wrk, the mock and other jobs "
        f"(these took {figures['others_cpu_pct_mean']}% of a core on average).",
    ]

    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" viewBox="0 0 {W} {H}" '
        f'font-family="Helvetica, Arial, sans-serif" font-size="12">',
        "<style>"
        ".grid{stroke:#e4e4e4;stroke-width:1}.axis{stroke:#333;stroke-width:1}"
        ".rss{stroke:#1f5fbf;stroke-width:2}.anon{stroke:#7aa6e6;stroke-width:1.2;stroke-dasharray:5 3}"
        ".file{stroke:#9b9b9b;stroke-width:1.2;stroke-dasharray:2 3}.fit{stroke:#d4380d;stroke-width:1.5;stroke-dasharray:8 4}"
        ".rps{stroke:#2a8a3e;stroke-width:1.6}.target{stroke:#d4380d;stroke-width:1.2;stroke-dasharray:6 4}"
        ".gw{stroke:#1f5fbf;stroke-width:1.4}.load{stroke:#2a8a3e;stroke-width:1.2}.others{stroke:#b8860b;stroke-width:1.2;stroke-dasharray:4 3}"
        "text{fill:#222}.title{font-size:16px;font-weight:bold}.sub{font-size:13px}.note{font-size:11px;fill:#555}"
        "</style>",
        f'<rect width="{W}" height="{H}" fill="white"/>',
        f'<text x="{left}" y="26" class="title">{escape(title)}</text>',
        f'<text x="{left}" y="48" class="sub">{escape(subtitle)}</text>',
    ]
    for k, note in enumerate(notes):
        out.append(f'<text x="{left}" y="{68 + 15 * k}" class="note">{escape(note)}</text>')

    top.frame(out, xlabel, "gateway RSS (MiB)")
    top.line(out, list(zip(xs, filed)), "file")
    top.line(out, list(zip(xs, anon)), "anon")
    top.line(out, list(zip(xs, rss)), "rss")
    legend = [("VmRSS", "rss"), ("RssAnon", "anon"), ("RssFile", "file")]
    if centre is not None and len(window) >= 2:
        (mx, my), a, b = centre, window[0][0], window[-1][0]
        conv = (lambda s: s / 60) if in_min else (lambda s: s)
        fit_pts = [(conv(a), my + slope / 60 * (a - mx)), (conv(b), my + slope / 60 * (b - mx))]
        top.line(out, fit_pts, "fit")
        legend.append((f"fit over the last {dur(figures['slope_window_s'])}: {slope:+.3f} MiB/min", "fit"))
    top.legend(out, legend)

    middle.frame(out, xlabel, "answered 2xx (req/s)")
    if target:
        middle.line(out, [(xs[0], target), (xs[-1], target)], "target")
    middle.line(out, [(x, y) for x, y in zip(xs, rps) if y is not None], "rps")
    rate_label = "req/s per interval"
    if loaded:
        rate_label += f" (mean {figures['rps_mean']:,.0f}, min {figures['rps_min']:,.0f}, max {figures['rps_max']:,.0f})"
    middle.legend(out, [(rate_label, "rps"), (f"target {target:,.0f}", "target")])

    bottom.frame(out, xlabel, "CPU (% of one core)")
    bottom.line(out, [(x, y) for x, y in zip(xs, others) if y is not None], "others")
    bottom.line(out, [(x, y) for x, y in zip(xs, load_cpu) if y is not None], "load")
    bottom.line(out, [(x, y) for x, y in zip(xs, gw_cpu) if y is not None], "gw")
    bottom.legend(out, [("gateway", "gw"), ("wrk + mock", "load"), ("other jobs, softirq, steal", "others")])
    out.append("</svg>")

    os.makedirs(args.out_dir, exist_ok=True)
    svg_path = os.path.join(args.out_dir, "soak.svg")
    with open(svg_path, "w") as f:
        f.write("\n".join(out) + "\n")
    csv_path = os.path.join(args.out_dir, "soak.csv")
    if os.path.abspath(csv_path) != os.path.abspath(args.csv):
        shutil.copyfile(args.csv, csv_path)
    print(json.dumps(figures))
    print(f"[bench] wrote {svg_path} and {csv_path}", file=sys.stderr)


if __name__ == "__main__":
    main()
