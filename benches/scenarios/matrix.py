#!/usr/bin/env python3
"""The link matrix's table (Markdown, stdout) and chart (OUTDIR/matrix.svg) from matrix.sh's runs.

usage: matrix.py OUTDIR   (reads OUTDIR/*/results.tsv, scenarios.tsv, fairness.tsv)

C, the payload ceiling of a cell, is rate x (1 - loss) x payload / packet: with a datagram of D
bytes (the size the runs report, 1472 on a 1500-byte MTU), xfer's payload is D minus 48 bytes
(18 header, 14 data fields, 16 AEAD tag) and the IP packet is D plus 28 (IPv4 20, UDP 8). The
loss is what linkem applies in the data direction (the Gilbert-Elliott average for bursts).
"""
import glob
import os
import re
import statistics
import sys

XFER_OVERHEAD = 48  # src/udp/packet.rs DATA_OVERHEAD: header 18 + data fields 14 + tag 16
IP_UDP = 28
CELL = re.compile(r"^m([0-9.]+)-r([0-9.]+)-(?:l([0-9.]+)|g([0-9.]+)x([0-9.]+))$")
COLUMNS = ["iperf3-bbr", "iperf3-cubic", "xfer-put", "xfer-udp", "xfer-auto", "quic"]
HEAD = ["TCP BBR", "TCP cubic", "xfer TCP", "xfer UDP", "xfer auto", "quinn"]


def num(x):
    try:
        v = float(x)
        return None if v != v else v
    except (TypeError, ValueError):
        return None


def kv(note, key):
    for word in note.split():
        if word.startswith(key + "="):
            return word.split("=", 1)[1]
    return None


def read_tsv(path):
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [line.rstrip("\n").split("\t") for line in f if line.strip()]


def parse_cell(name):
    m = CELL.match(name)
    if not m:
        return None
    rate, rtt = float(m.group(1)), float(m.group(2))
    if m.group(3) is not None:
        return {"rate": rate, "rtt": rtt, "loss": float(m.group(3)), "burst": None}
    return {"rate": rate, "rtt": rtt, "loss": float(m.group(4)), "burst": float(m.group(5))}


def ceiling(cell, dgram):
    return cell["rate"] * (1 - cell["loss"] / 100) * (dgram - XFER_OVERHEAD) / (dgram + IP_UDP)


def label(cell):
    r = f"{cell['rate']:g}"
    loss = f"GE {cell['loss']:g}%x{cell['burst']:g}" if cell["burst"] else f"{cell['loss']:g}%"
    return f"{r}/{cell['rtt']:g}/{loss}"


def collect(out, part_glob):
    """cell -> contender -> list of (status, goodput, note); cell order as first seen."""
    order, cells = [], {}
    for part in sorted(glob.glob(os.path.join(out, part_glob))):
        for row in read_tsv(os.path.join(part, "results.tsv")):
            sc, c, _run, status, gp = row[:5]
            note = row[7] if len(row) > 7 else ""
            if sc not in cells:
                order.append(sc)
                cells[sc] = {}
            cells[sc].setdefault(c, []).append((status, num(gp), note))
    return order, cells


def median_of(runs):
    good = [g for s, g, _ in runs if s in ("ok", "capped") and g is not None]
    return statistics.median(good) if good else None


def fmt(v, capped=False):
    if v is None:
        return "—"
    s = f"{v:.2f}" if v < 10 else f"{v:.1f}"
    return s + ("ᶜ" if capped else "")


def cell_rows(order, cells):
    rows = []
    for sc in order:
        cell = parse_cell(sc)
        if not cell:
            continue
        got = cells[sc]
        udp = got.get("xfer-udp", [])
        dgrams = [num(kv(n, "dgram")) for s, _, n in udp if num(kv(n, "dgram"))]
        dgram = statistics.median(dgrams) if dgrams else 1472
        meds = {c: median_of(got.get(c, [])) for c in COLUMNS}
        capped = {c: any(s == "capped" for s, _, _ in got.get(c, [])) for c in COLUMNS}
        failed = {c: [n for s, _, n in got.get(c, []) if s == "fail"] for c in COLUMNS}
        reds = [num(kv(n, "redundant")) for s, _, n in udp if s in ("ok", "capped")]
        reds = [r for r in reds if r is not None]
        vias = [kv(n, "via") for s, _, n in got.get("xfer-auto", []) if kv(n, "via")]
        rows.append({
            "name": sc, "cell": cell, "C": ceiling(cell, dgram), "med": meds, "capped": capped,
            "failed": failed, "red": statistics.median(reds) if reds else None, "via": "/".join(vias),
        })
    rows.sort(key=lambda r: (r["cell"]["rate"], r["cell"]["rtt"], r["cell"]["burst"] or 0, r["cell"]["loss"]))
    return rows


def verdicts(r):
    """The issue's per-cell targets: list of (what, met) for the ones that apply."""
    m, C, cell = r["med"], r["C"], r["cell"]
    udp, bbr = m["xfer-udp"], m["iperf3-bbr"]
    out = []
    if udp is not None:
        out.append(("UDP ≥ 0.93 C", udp >= 0.93 * C))
        if bbr:
            out.append(("UDP ≥ 0.97 BBR", udp >= 0.97 * bbr))
            if cell["loss"] >= 5 or (cell["rtt"] >= 200 and cell["loss"] >= 1):
                out.append(("UDP ≥ 1.5 BBR", udp >= 1.5 * bbr))
    best = max([v for v in (m["xfer-put"], udp) if v is not None], default=None)
    if m["xfer-auto"] is not None and best:
        out.append(("auto ≥ 0.97 best", m["xfer-auto"] >= 0.97 * best))
    if r["red"] is not None:
        limit = 1.2 * cell["loss"]
        out.append(("redundant ≤ 1.2 loss", r["red"] <= max(limit, 0.1)))
    return out


def print_table(rows):
    print("Goodput in Mbit/s of file bytes (xfer: size / client wall time, connection and verification")
    print("included; iperf3: receiver's figure; quinn: memory to memory, handshake included). ᶜ: stopped")
    print("at the time cap, bytes moved / cap. Cell = rate Mbit/s / RTT ms / loss.")
    print()
    print("| cell | C | " + " | ".join(HEAD) + " | UDP / C | UDP / BBR | auto / best | redundant % | targets missed |")
    print("|---|--:|" + "--:|" * len(HEAD) + "--:|--:|--:|--:|---|")
    for r in rows:
        m = r["med"]
        cols = [fmt(m[c], r["capped"][c]) if m[c] is not None or not r["failed"][c] else "failed" for c in COLUMNS]
        udp, bbr = m["xfer-udp"], m["iperf3-bbr"]
        best = max([v for v in (m["xfer-put"], udp) if v is not None], default=None)
        uc = f"{udp / r['C']:.2f}" if udp is not None else "—"
        ub = f"{udp / bbr:.2f}" if udp is not None and bbr else "—"
        ab = f"{m['xfer-auto'] / best:.2f}" if m["xfer-auto"] is not None and best else "—"
        if r["via"] and r["via"] != "udp":
            ab += f" ({r['via']})"
        red = f"{r['red']:.2f}" if r["red"] is not None else "—"
        missed = [w for w, ok in verdicts(r) if not ok]
        print(f"| {label(r['cell'])} | {r['C']:.1f} | " + " | ".join(cols) +
              f" | {uc} | {ub} | {ab} | {red} | {', '.join(missed) or 'none'} |")
    print()
    tally = {}
    for r in rows:
        for w, ok in verdicts(r):
            t = tally.setdefault(w, [0, 0])
            t[0] += ok
            t[1] += 1
    print("| target | cells met / cells measured |")
    print("|---|--:|")
    for w, (ok, n) in tally.items():
        print(f"| {w} | {ok} / {n} |")
    print()


def print_fairness(out):
    rows = []
    for part in sorted(glob.glob(os.path.join(out, "fair-*"))):
        for row in read_tsv(os.path.join(part, "fairness.tsv")):
            _, c, run, status, cg, og = row[:6]
            note = row[6] if len(row) > 6 else ""
            cg, og = num(cg), num(og)
            if status == "ok" and cg is not None and og is not None and cg + og > 0:
                rows.append((kv(note, "against") or "bbr", c, run, cg, og, cg / (cg + og)))
    if not rows:
        return
    print("Fairness, 30 s on 100 Mbit/s, 50 ms, 0% loss (queue 1 BDP), both flows starting together:")
    print()
    print("| against | contender | contender Mbit/s | TCP flow Mbit/s | contender's share | target |")
    print("|---|---|--:|--:|--:|---|")
    for against, c, run, cg, og, share in rows:
        target = "40–60%" if against == "bbr" else "cubic keeps ≥ 25%"
        met = 0.4 <= share <= 0.6 if against == "bbr" else (1 - share) >= 0.25
        print(f"| iperf3 {against} | {c} | {cg:.1f} | {og:.1f} | {share * 100:.1f}% | {target}: {'met' if met else 'missed'} |")
    print()


def print_short(out):
    order, cells = collect(out, "short")
    rows = cell_rows(order, cells)
    if not rows:
        return
    print("Short transfers: 8 s of the link's raw rate, xfer UDP upload, wall clock (connection and")
    print("verification included); target ≥ 0.85 C at RTT ≤ 100 ms.")
    print()
    print("| cell | C | xfer UDP | UDP / C | own timer (no connect/login) | target |")
    print("|---|--:|--:|--:|--:|---|")
    for r in rows:
        udp = r["med"]["xfer-udp"]
        runs = cells[r["name"]].get("xfer-udp", [])
        own = [num(kv(n, "bytes")) * 8 / num(kv(n, "xsecs")) / 1e6 for s, _, n in runs
               if s == "ok" and num(kv(n, "bytes")) and num(kv(n, "xsecs"))]
        ownf = f"{statistics.median(own):.1f}" if own else "—"
        if udp is None:
            print(f"| {label(r['cell'])} | {r['C']:.1f} | — | — | {ownf} | not measured |")
            continue
        met = "met" if udp >= 0.85 * r["C"] else "missed"
        print(f"| {label(r['cell'])} | {r['C']:.1f} | {fmt(udp, r['capped']['xfer-udp'])} | {udp / r['C']:.2f} | {ownf} | {met} |")
    print()


def svg(rows, path):
    """Two panels over the cells: xfer UDP / C (linear, 0.93 line) and xfer UDP / TCP BBR (log)."""
    import math
    rows = [r for r in rows if r["med"]["xfer-udp"] is not None]
    n = max(len(rows), 1)
    left, right, top, ph, gap, bottom = 60, 20, 30, 200, 60, 120
    bw = 22
    width = left + right + n * bw
    height = top + ph + gap + ph + bottom
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="sans-serif" font-size="11">',
           f'<rect width="{width}" height="{height}" fill="white"/>']

    def panel(y0, title, values, lo, hi, logscale, lines, colour):
        def y(v):
            v = min(max(v, lo), hi)
            f = (math.log10(v) - math.log10(lo)) / (math.log10(hi) - math.log10(lo)) if logscale else (v - lo) / (hi - lo)
            return y0 + ph - f * ph
        out.append(f'<text x="{left}" y="{y0 - 10}" font-size="13" font-weight="bold">{title}</text>')
        out.append(f'<rect x="{left}" y="{y0}" width="{n * bw}" height="{ph}" fill="none" stroke="#888"/>')
        ticks = [0.1, 0.2, 0.5, 1, 2, 5, 10, 20, 50] if logscale else [0, 0.2, 0.4, 0.6, 0.8, 1.0]
        for t in ticks:
            if lo <= t <= hi:
                out.append(f'<line x1="{left - 4}" x2="{left}" y1="{y(t):.1f}" y2="{y(t):.1f}" stroke="#888"/>')
                out.append(f'<text x="{left - 6}" y="{y(t) + 4:.1f}" text-anchor="end">{t:g}</text>')
        base = y(1 if logscale else lo)
        for i, v in enumerate(values):
            if v is None:
                continue
            x = left + i * bw + 3
            yt = y(v)
            yb, ye = (min(yt, base), max(yt, base))
            out.append(f'<rect x="{x}" y="{yb:.1f}" width="{bw - 6}" height="{max(ye - yb, 1):.1f}" fill="{colour}"><title>{v:.2f}</title></rect>')
        for v, text, c in lines:
            out.append(f'<line x1="{left}" x2="{left + n * bw}" y1="{y(v):.1f}" y2="{y(v):.1f}" stroke="{c}" stroke-dasharray="4 3"/>')
            out.append(f'<text x="{left + n * bw - 2}" y="{y(v) - 3:.1f}" text-anchor="end" fill="{c}">{text}</text>')

    uc = [r["med"]["xfer-udp"] / r["C"] for r in rows]
    ub = [r["med"]["xfer-udp"] / r["med"]["iperf3-bbr"] if r["med"]["iperf3-bbr"] else None for r in rows]
    panel(top, "xfer UDP / C (payload ceiling)", uc, 0, 1.1, False, [(0.93, "0.93", "#c00"), (1.0, "", "#888")], "#3a6ea5")
    y2 = top + ph + gap
    panel(y2, "xfer UDP / iperf3 TCP BBR (log scale)", ub, 0.1, 50, True,
          [(0.97, "0.97", "#c00"), (1.5, "1.5", "#e80")], "#4a9a4a")
    for i, r in enumerate(rows):
        x = left + i * bw + bw / 2
        yl = y2 + ph + 8
        out.append(f'<text x="{x:.1f}" y="{yl}" transform="rotate(60 {x:.1f} {yl})">{label(r["cell"])}</text>')
    out.append("</svg>")
    with open(path, "w") as f:
        f.write("\n".join(out) + "\n")


def main():
    out = sys.argv[1]
    order, cells = collect(out, "light*")
    # Then heavy cells and extra runner directories (cells*, in name order); a contender
    # measured again in a later directory replaces its earlier runs of that cell.
    extra = ["heavy"] + sorted(os.path.basename(d) for d in glob.glob(os.path.join(out, "cells*")))
    for part in extra:
        o, c = collect(out, part)
        order += [x for x in o if x not in cells]
        for sc, contenders in c.items():
            cells.setdefault(sc, {}).update(contenders)
    rows = cell_rows(order, cells)
    env = os.path.join(out, "light0", "env.txt")
    if os.path.exists(env):
        print("```")
        print(open(env).read().strip())
        print("```")
        print()
    print_table(rows)
    print_fairness(out)
    print_short(out)
    svg(rows, os.path.join(out, "matrix.svg"))


if __name__ == "__main__":
    main()
