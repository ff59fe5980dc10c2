"""Tables and charts shared by bench and demo: a Markdown table, the same table in HTML,
horizontal bar charts written as SVG text by hand, and the demo's HTML page.

A row (one workload x one server, medians over its runs) is a dict with the keys
  section, workload, server, baseline (bool), rps, rps_lo, rps_hi, p50_us, p99_us,
  p99_lo, p99_hi, p999_us, srv_usr_us, srv_sys_us, bk_usr_us, bk_sys_us (proxy rows:
  the backend's CPU), core_us (the pinned server core's whole busy time per request),
  rps_ratio, cpu_ratio, used, runs, noisy (bool), note
any of which may be None or missing.
"""
import html
import math

# One colour per server, in the order servers first appear; the baseline is grey.
PALETTE = ["#3b6fb6", "#d9822b", "#3a9a5b", "#b8436b", "#7a5cb8", "#2b9aa6", "#a6762b",
           "#5f7f2b", "#c45a3b", "#4b4b9a"]
BASELINE_COLOUR = "#8a8a8a"


def fmt_rps(x):
    if x is None:
        return "-"
    if x >= 1e6:
        return f"{x / 1e6:.2f}M"
    if x >= 1000:
        return f"{x / 1000:.1f}k"
    return f"{x:.0f}"


def fmt_us(x):
    """Latency: µs below 10 ms, ms above."""
    if x is None:
        return "-"
    if x >= 10000:
        return f"{x / 1000:.1f} ms"
    if x >= 100:
        return f"{x:.0f} µs"
    return f"{x:.1f} µs"


def fmt_cpu(u, s):
    if u is None or s is None:
        return "-"
    return f"{u + s:.2f} ({u:.2f}+{s:.2f})"


def fmt_ratio(x):
    return "-" if x is None else f"{x:.2f}×"


def _has_backend(rows):
    return any(r.get("bk_usr_us") is not None for r in rows)


def table_columns(rows, labels=None):
    """(header, cell function) pairs; the backend column only when a row has one, the ratio
    columns only when a row names a baseline. labels may rename "srv" and "bk"."""
    labels = dict({"srv": "CPU µs/req user+sys", "bk": "backend CPU µs/req"}, **(labels or {}))
    cols = [
        ("workload", lambda r: r["workload"]),
        ("server", lambda r: r["server"] + (" (baseline)" if r.get("baseline") else "")),
        ("req/s", lambda r: fmt_rps(r.get("rps"))),
        ("p50", lambda r: fmt_us(r.get("p50_us"))),
        ("p99", lambda r: fmt_us(r.get("p99_us"))),
        ("p99.9", lambda r: fmt_us(r.get("p999_us"))),
        (labels["srv"], lambda r: fmt_cpu(r.get("srv_usr_us"), r.get("srv_sys_us"))),
    ]
    if _has_backend(rows):
        cols.append((labels["bk"], lambda r: fmt_cpu(r.get("bk_usr_us"),
                                                             r.get("bk_sys_us"))))
    if any(r.get("core_us") is not None for r in rows):
        cols.append(("server core µs/req (all)",
                     lambda r: "-" if r.get("core_us") is None else f"{r['core_us']:.2f}"))
    if any(r.get("baseline_name") for r in rows):
        cols += [("req/s vs baseline", lambda r: fmt_ratio(r.get("rps_ratio"))),
                 ("CPU/req vs baseline", lambda r: fmt_ratio(r.get("cpu_ratio")))]
    cols.append(("runs", _runs_cell))
    return cols


def _runs_cell(r):
    if r.get("runs") is None:
        return "-"
    cell = f"{r.get('used', 0)}/{r['runs']}"
    if r.get("noisy"):
        cell += " noisy"
    if r.get("note"):
        cell += f" ({r['note']})"
    return cell


def markdown_table(rows, labels=None):
    cols = table_columns(rows, labels)
    out = ["| " + " | ".join(h for h, _ in cols) + " |",
           "|" + "|".join("---" if i < 2 else "--:" for i in range(len(cols))) + "|"]
    for r in rows:
        out.append("| " + " | ".join(str(f(r)).replace("|", "\\|") for _, f in cols) + " |")
    return "\n".join(out)


def html_table(rows, labels=None):
    cols = table_columns(rows, labels)
    e = html.escape
    out = ["<table>", "<tr>" + "".join(f"<th>{e(h)}</th>" for h, _ in cols) + "</tr>"]
    for r in rows:
        out.append("<tr>" + "".join(f"<td>{e(str(f(r)))}</td>" for _, f in cols) + "</tr>")
    out.append("</table>")
    return "\n".join(out)


def text_table(rows, labels=None):
    """The table for a terminal: aligned columns, no Markdown."""
    cols = table_columns(rows, labels)
    cells = [[h for h, _ in cols]] + [[str(f(r)) for _, f in cols] for r in rows]
    widths = [max(len(c[i]) for c in cells) for i in range(len(cols))]
    lines = []
    for n, c in enumerate(cells):
        lines.append("  ".join(v.ljust(widths[i]) if i < 2 else v.rjust(widths[i])
                               for i, v in enumerate(c)))
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


# ----------------------------------------------------------------------------- SVG

def _nice_max(v):
    """A round axis end at or above v (1, 2, 2.5, 5 × 10^k)."""
    if v <= 0:
        return 1.0
    k = 10 ** math.floor(math.log10(v))
    for m in (1, 2, 2.5, 5, 10):
        if v <= m * k:
            return m * k
    return 10 * k


def colour_map(rows):
    colours, n = {}, 0
    for r in rows:
        s = r["server"]
        if s in colours:
            continue
        if r.get("baseline"):
            colours[s] = BASELINE_COLOUR
        else:
            colours[s] = PALETTE[n % len(PALETTE)]
            n += 1
    return colours


def axis_us(top):
    """Axis labels for a latency chart, all in the same unit."""
    if top >= 10000:
        return lambda v: f"{v / 1000:g} ms"
    return lambda v: f"{v:g} µs"


def bar_chart(title, rows, key, lo_key=None, hi_key=None, fmt=str, unit="", colours=None,
              axis=None):
    """Horizontal bars, one group per workload, one bar per server; a thin whisker spans
    the lowest..highest run when lo_key/hi_key are given. Returns SVG text."""
    e = html.escape
    colours = colours or colour_map(rows)
    groups = []
    for r in rows:
        if not groups or groups[-1][0] != r["workload"]:
            groups.append((r["workload"], []))
        groups[-1][1].append(r)
    vals = [r.get(k) for r in rows for k in (key, hi_key) if k and r.get(k) is not None]
    top = _nice_max(max(vals) if vals else 1.0)
    axis_fmt = axis(top) if axis else fmt
    longest = max((len(r["server"]) + (11 if r.get("baseline") else 0) for r in rows), default=10)
    left = int(min(380, max(140, 6.7 * longest + 16)))
    width, right = left + 500, 90
    plot = width - left - right
    bar_h, gap, head_h = 16, 5, 24
    y = 50
    parts = []
    for workload, rs in groups:
        parts.append(f'<text x="8" y="{y + 15}" class="g">{e(workload)}</text>')
        y += head_h
        for r in rs:
            v = r.get(key)
            label = r["server"] + (" (baseline)" if r.get("baseline") else "")
            parts.append(f'<text x="{left - 8}" y="{y + bar_h - 4}" class="l" '
                         f'text-anchor="end">{e(label)}</text>')
            if v is None:
                parts.append(f'<text x="{left + 4}" y="{y + bar_h - 4}" class="v">'
                             f'no result</text>')
            else:
                w = max(1.0, plot * v / top)
                parts.append(f'<rect x="{left}" y="{y}" width="{w:.1f}" height="{bar_h}" '
                             f'fill="{colours.get(r["server"], PALETTE[0])}"/>')
                lo = r.get(lo_key) if lo_key else None
                hi = r.get(hi_key) if hi_key else None
                tx = left + w + 4
                if lo is not None and hi is not None and hi > lo:
                    x0, x1 = left + plot * lo / top, left + plot * hi / top
                    ym = y + bar_h / 2
                    parts.append(f'<path d="M{x0:.1f} {ym}H{x1:.1f}M{x0:.1f} {ym - 4}V{ym + 4}'
                                 f'M{x1:.1f} {ym - 4}V{ym + 4}" class="w"/>')
                    tx = max(tx, x1 + 4)
                parts.append(f'<text x="{tx:.1f}" y="{y + bar_h - 4}" class="v">'
                             f'{e(fmt(v))}</text>')
            y += bar_h + gap
        y += 6
    # Grid: five vertical lines with their values, drawn under the bars.
    grid = []
    for i in range(6):
        x = left + plot * i / 5
        grid.append(f'<line x1="{x:.1f}" y1="46" x2="{x:.1f}" y2="{y}" class="a"/>')
        grid.append(f'<text x="{x:.1f}" y="{y + 14}" class="t" text-anchor="middle">'
                    f'{e(axis_fmt(top * i / 5))}</text>')
    height = y + 24
    note = "whiskers: lowest..highest run" if lo_key else ""
    return "\n".join([
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" font-family="sans-serif">',
        "<style>.g{font-size:13px;font-weight:bold}.l,.v{font-size:12px}"
        ".t{font-size:10px;fill:#555}.a{stroke:#ddd;stroke-width:1}"
        ".w{stroke:#222;stroke-width:1.2;fill:none}</style>",
        f'<rect width="{width}" height="{height}" fill="#fff"/>',
        f'<text x="8" y="20" font-size="15" font-weight="bold">{e(title)}</text>',
        f'<text x="8" y="36" font-size="11" fill="#555">'
        f'{e(unit)}{" · " + note if note else ""}</text>',
        *grid, *parts, "</svg>", ""])


def charts(rows, sections, title_prefix=""):
    """{file name: SVG} — requests/s and p99 for each section present in rows."""
    out = {}
    colours = colour_map(rows)
    for sec, sec_title in sections:
        rs = [r for r in rows if r["section"] == sec]
        if not rs:
            continue
        out[f"{sec}-rps.svg"] = bar_chart(f"{title_prefix}{sec_title}: requests/s (higher is better)",
                                          rs, "rps", "rps_lo", "rps_hi", fmt_rps,
                                          "requests/s, median", colours)
        out[f"{sec}-p99.svg"] = bar_chart(f"{title_prefix}{sec_title}: p99 latency (lower is better)",
                                          rs, "p99_us", "p99_lo", "p99_hi", fmt_us,
                                          "p99, median", colours, axis=axis_us)
    return out


def line_chart(title, subtitle, series, x_ticks, y_log=False, y_fmt=str):
    """Lines, one per (name, [(x, y), ...]) of `series`, each x already mapped to the axis
    (e.g. log10 of a percentile's 1/(1-q)); x_ticks: [(x, label)] under the plot. y is
    linear from 0, or logarithmic (y_log) between the powers of ten around the data.
    Returns SVG text (no script, no external resource)."""
    e = html.escape
    pts = [(x, y) for _, p in series for x, y in p if y is not None and (y > 0 or not y_log)]
    width, height, left, right, top_m, bottom = 720, 360, 70, 190, 46, 40
    plot_w, plot_h = width - left - right, height - top_m - bottom
    xs = [x for x, _ in x_ticks] + [x for x, _ in pts]
    x0, x1 = (min(xs), max(xs)) if xs else (0.0, 1.0)
    if x1 <= x0:
        x1 = x0 + 1
    ys = [y for _, y in pts] or [1.0]
    if y_log:
        lo = 10 ** math.floor(math.log10(min(ys)))
        hi = 10 ** math.ceil(math.log10(max(ys)))
        if hi <= lo:
            hi = lo * 10
        fy = lambda y: top_m + plot_h * (1 - (math.log10(y) - math.log10(lo)) /
                                        (math.log10(hi) - math.log10(lo)))
        y_ticks, v = [], lo
        while v <= hi * 1.0001:
            y_ticks.append(v)
            v *= 10
    else:
        hi = _nice_max(max(ys))
        fy = lambda y: top_m + plot_h * (1 - y / hi)
        y_ticks = [hi * i / 5 for i in range(6)]
    fx = lambda x: left + plot_w * (x - x0) / (x1 - x0)
    parts = []
    for v in y_ticks:
        y = fy(v)
        parts.append(f'<line x1="{left}" y1="{y:.1f}" x2="{left + plot_w}" y2="{y:.1f}" class="a"/>')
        parts.append(f'<text x="{left - 6}" y="{y + 4:.1f}" class="t" text-anchor="end">'
                     f'{e(y_fmt(v))}</text>')
    for x, label in x_ticks:
        parts.append(f'<line x1="{fx(x):.1f}" y1="{top_m}" x2="{fx(x):.1f}" '
                     f'y2="{top_m + plot_h}" class="a"/>')
        parts.append(f'<text x="{fx(x):.1f}" y="{top_m + plot_h + 16}" class="t" '
                     f'text-anchor="middle">{e(label)}</text>')
    for i, (name, p) in enumerate(series):
        colour = PALETTE[i % len(PALETTE)]
        good = [(x, y) for x, y in p if y is not None and (y > 0 or not y_log)]
        if good:
            d = " ".join(f"{'M' if k == 0 else 'L'}{fx(x):.1f} {fy(y):.1f}"
                         for k, (x, y) in enumerate(good))
            parts.append(f'<path d="{d}" stroke="{colour}" stroke-width="2" fill="none"/>')
            parts += [f'<circle cx="{fx(x):.1f}" cy="{fy(y):.1f}" r="2.5" fill="{colour}"/>'
                      for x, y in good]
        ly = top_m + 14 + 18 * i
        parts.append(f'<rect x="{left + plot_w + 12}" y="{ly - 9}" width="12" height="10" '
                     f'fill="{colour}"/>')
        parts.append(f'<text x="{left + plot_w + 30}" y="{ly}" class="l">{e(name)}</text>')
    return "\n".join([
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" font-family="sans-serif">',
        "<style>.l{font-size:12px}.t{font-size:10px;fill:#555}.a{stroke:#ddd;stroke-width:1}"
        "</style>",
        f'<rect width="{width}" height="{height}" fill="#fff"/>',
        f'<text x="8" y="20" font-size="15" font-weight="bold">{e(title)}</text>',
        f'<text x="8" y="36" font-size="11" fill="#555">{e(subtitle)}</text>',
        *parts, "</svg>", ""])


# The latency percentiles ringpoll-load reports, and where each sits on a percentile axis
# (log10 of 1/(1-q): p50 at 0.3, p90 at 1, p99 at 2, ...).
PERCENTILES = [("p50", "p50_us", 0.5), ("p90", "p90_us", 0.9), ("p99", "p99_us", 0.99),
               ("p99.9", "p999_us", 0.999), ("p99.99", "p9999_us", 0.9999)]


def percentile_chart(title, runs):
    """Latency against percentile, one line per (name, result dict with *_us keys)."""
    series = []
    for name, res in runs:
        series.append((name, [(math.log10(1 / (1 - q)), res.get(key))
                              for _, key, q in PERCENTILES]))
    ticks = [(math.log10(1 / (1 - q)), label) for label, _, q in PERCENTILES]
    return line_chart(title, "latency at each percentile (log scale), lower is better",
                      series, ticks, y_log=True, y_fmt=lambda v: fmt_us(v).replace(".0 ", " "))


def timeline_chart(title, runs):
    """Requests/s each second, one line per (name, [(seconds, req/s), ...])."""
    end = max((t for _, p in runs for t, _ in p), default=1.0)
    step = max(1, int(math.ceil(end / 10)))
    ticks = [(float(t), f"{t} s") for t in range(0, int(math.ceil(end)) + 1, step)]
    return line_chart(title, "requests/s over each second of the run (warm-up included)",
                      runs, ticks, y_fmt=fmt_rps)


def html_page(title, intro_html, rows, svgs, labels=None):
    e = html.escape
    return "\n".join([
        "<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{e(title)}</title>",
        "<style>body{font-family:sans-serif;max-width:960px;margin:2em auto;padding:0 1em}"
        "table{border-collapse:collapse;font-size:14px;margin:1em 0}"
        "td,th{border:1px solid #ccc;padding:4px 8px;text-align:right}"
        "td:first-child,td:nth-child(2),th{text-align:left}"
        "svg{display:block;margin:1.5em 0;max-width:100%;height:auto}</style>",
        "</head><body>", f"<h1>{e(title)}</h1>", intro_html, html_table(rows, labels),
        *svgs, "</body></html>", ""])
