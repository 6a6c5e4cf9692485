#!/usr/bin/env python3
"""scripts/plot_live.py - kvmig bench --live --json lines -> an SVG plot
(pause and total time against cache size, stop-and-copy and live, log
scales) and a Markdown table on stdout. Standard library only."""
import json
import math
import sys


def main(src, dst):
    rows = [json.loads(l) for l in open(src) if l.strip().startswith("{")]
    if not rows:
        sys.exit(f"{src}: no results")
    rows.sort(key=lambda r: r["size"])
    print("| cache | stop-and-copy pause | stop-and-copy total | live pause | live total "
          "| live rounds | live / stop total |")
    print("|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['size'] / 2**20:.0f} MiB | {r['stop_pause_ms']:.1f} ms "
              f"| {r['stop_total_s']:.3f} s | {r['live_pause_ms']:.1f} ms "
              f"| {r['live_total_s']:.3f} s | {r['live_rounds']:.0f} "
              f"| {r['live_total_s'] / r['stop_total_s']:.2f}x |")
    pauses = [r["live_pause_ms"] for r in rows]
    print(f"\nlive pause largest / smallest: {max(pauses) / min(pauses):.2f}x")

    W, H, L, R, T, B = 760, 360, 70, 20, 40, 60
    gap = 70  # between the panels, room for the second one's axis labels
    pw = (W - L - R - gap) / 2
    xs = [r["size"] / 2**20 for r in rows]
    x0, x1 = math.log10(min(xs)) - 0.15, math.log10(max(xs)) + 0.15
    svg = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" '
           f'font-family="sans-serif" font-size="12">',
           f'<rect width="{W}" height="{H}" fill="white"/>']

    def panel(ox, title, key_stop, key_live, unit, scale):
        vals = [r[key_stop] * scale for r in rows] + [r[key_live] * scale for r in rows]
        y0 = math.floor(math.log10(min(vals)))
        y1 = math.ceil(math.log10(max(vals)))
        y1 = y1 if y1 > y0 else y0 + 1

        def px(x):
            return ox + (math.log10(x) - x0) / (x1 - x0) * pw

        def py(y):
            return T + (1 - (math.log10(y) - y0) / (y1 - y0)) * (H - T - B)

        svg.append(f'<text x="{ox + pw / 2}" y="{T - 15}" text-anchor="middle" '
                   f'font-weight="bold">{title}</text>')
        svg.append(f'<rect x="{ox}" y="{T}" width="{pw}" height="{H - T - B}" '
                   f'fill="none" stroke="#888"/>')
        for e in range(y0, y1 + 1):
            y = py(10 ** e)
            svg.append(f'<line x1="{ox}" x2="{ox + pw}" y1="{y}" y2="{y}" stroke="#ddd"/>')
            svg.append(f'<text x="{ox - 5}" y="{y + 4}" text-anchor="end">{10 ** e:g}</text>')
        svg.append(f'<text x="{ox - 50}" y="{T + (H - T - B) / 2}" text-anchor="middle" '
                   f'transform="rotate(-90 {ox - 50} {T + (H - T - B) / 2})">{unit}</text>')
        for x in xs:
            svg.append(f'<text x="{px(x)}" y="{H - B + 18}" text-anchor="middle">'
                       f'{x:.0f}</text>')
        svg.append(f'<text x="{ox + pw / 2}" y="{H - B + 38}" text-anchor="middle">'
                   f'cache size (MiB)</text>')
        for key, color in ((key_stop, "#c0392b"), (key_live, "#2471a3")):
            pts = " ".join(f"{px(x):.1f},{py(r[key] * scale):.1f}" for x, r in zip(xs, rows))
            svg.append(f'<polyline points="{pts}" fill="none" stroke="{color}" '
                       f'stroke-width="2"/>')
            for x, r in zip(xs, rows):
                svg.append(f'<circle cx="{px(x):.1f}" cy="{py(r[key] * scale):.1f}" r="3" '
                           f'fill="{color}"/>')

    panel(L, "pause (pause to resume)", "stop_pause_ms", "live_pause_ms", "ms", 1)
    panel(L + pw + gap, "total time", "stop_total_s", "live_total_s", "s", 1)
    svg.append(f'<text x="{L}" y="{H - 6}" fill="#c0392b">stop-and-copy</text>')
    svg.append(f'<text x="{L + 110}" y="{H - 6}" fill="#2471a3">live</text>')
    svg.append(f'<text x="{W - R}" y="{H - 6}" text-anchor="end" fill="#555">'
               f'kvmig bench --live, engine {rows[0].get("rate", 0):.0f} tokens/s, '
               f'medians</text>')
    svg.append("</svg>")
    with open(dst, "w") as f:
        f.write("\n".join(svg) + "\n")


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit("usage: plot_live.py RESULTS.jsonl OUT.svg")
    main(sys.argv[1], sys.argv[2])
