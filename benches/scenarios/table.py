#!/usr/bin/env python3
"""Turn the runner's TSV files into the Markdown tables of BENCHMARKS.md.

usage: table.py OUTDIR   (reads env.txt, scenarios.tsv, results.tsv, fairness.tsv)
"""
import os
import statistics
import sys


def num(x):
    try:
        v = float(x)
        return None if v != v else v
    except ValueError:
        return None


def med(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def fmt(v, nd=1):
    if v is None:
        return "—"
    if nd == 1 and v < 10:
        nd = 2
    return f"{v:.{nd}f}"


def kv(note, key):
    """The value of key=value in a note, or None."""
    for word in note.split():
        if word.startswith(key + "="):
            return word.split("=", 1)[1]
    return None


def link_loss(args):
    """Average loss rate (%) that linkem applies in the data direction, from its arguments."""
    words = args.split()
    for i, w in enumerate(words[:-1]):
        if w in ("--loss", "--ge-burst"):
            v = words[i + 1].split("/")[0].split(":")[0].rstrip("%")
            return num(v)
    return 0.0


def read_tsv(path):
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [line.rstrip("\n").split("\t") for line in f if line.strip()]


def main():
    out = sys.argv[1]
    env = open(os.path.join(out, "env.txt")).read().strip() if os.path.exists(os.path.join(out, "env.txt")) else ""
    scen = read_tsv(os.path.join(out, "scenarios.tsv"))
    res = read_tsv(os.path.join(out, "results.tsv"))
    fair = read_tsv(os.path.join(out, "fairness.tsv"))

    print("```")
    print(env)
    print("```")
    print()
    if scen:
        print("| scenario | link | linkem arguments | measured ping RTT (ms) | linkem packets (both directions) |")
        print("|---|---|---|---|---|")
        for name, label, args, rtt, drops in scen:
            if name == "fair":
                continue
            print(f"| {name} | {label} | `{args}` | {rtt} | {drops} |")
        print()

    # group results: keep first-seen order of scenarios and contenders
    order, groups = [], {}
    for row in res:
        sc, c, run, status, gp, cs, cr = row[:7]
        note = row[7] if len(row) > 7 else ""
        key = (sc, c)
        if key not in groups:
            order.append(key)
            groups[key] = []
        groups[key].append((status, num(gp), num(cs), num(cr), note))

    bbr = {}
    for (sc, c), runs in groups.items():
        if c == "iperf3-bbr":
            bbr[sc] = med([g for s, g, *_ in runs if s in ("ok", "capped")])

    print("| scenario | contender | goodput Mbit/s (median) | min–max | runs ok/capped/total | CPU s sender | CPU s receiver | × iperf3-bbr | notes |")
    print("|---|---|--:|---|---|--:|--:|--:|---|")
    for sc, c in order:
        runs = groups[(sc, c)]
        good = [r for r in runs if r[0] in ("ok", "capped")]
        skipped = [r for r in runs if r[0] == "skip"]
        failed = [r for r in runs if r[0] == "fail"]
        if not good:
            why = skipped[0][4] if skipped else (failed[0][4] if failed else "")
            what = "skipped" if skipped else f"failed {len(failed)}/{len(runs)}"
            if skipped and why.startswith(("skipped", "pending")):
                what = why
            elif skipped:
                what = f"skipped: {why}"
            else:
                what = f"{what}: {why}"
            print(f"| {sc} | {c} | — | — | 0/0/{len(runs)} | — | — | — | {what} |")
            continue
        gps = [r[1] for r in good]
        g = med(gps)
        n_cap = sum(1 for r in good if r[0] == "capped")
        notes = []
        if n_cap:
            notes.append(f"time-capped in {n_cap} run(s): bytes moved in the cap")
        if failed:
            notes.append(f"{len(failed)} failed: {failed[0][4][:80]}")
        if c.startswith("iperf3"):
            retr = [r[4].split("=")[1] for r in good if r[4].startswith("retransmits=")]
            if retr:
                notes.append("retransmits " + "/".join(retr))
        xs = []
        for r in good:
            b, t = num(kv(r[4], "bytes") or ""), num(kv(r[4], "xsecs") or "")
            if r[0] == "ok" and b and t:
                xs.append(b * 8 / t / 1e6)
        if xs:
            notes.append(f"xfer's own timer (no connect/login): {fmt(med(xs))} Mbit/s")
        want = "udp" if c.startswith("xfer-udp") else "tcp"
        vias = [kv(r[4], "via") for r in good if kv(r[4], "via")]
        if any(v != want for v in vias):
            notes.append(f"transport used: {'/'.join(vias)}")
        reds = [num(kv(r[4], "redundant") or "") for r in good]
        if any(x is not None for x in reds):
            notes.append(f"redundant {fmt(med(reds), 2)}% of the file")
        ratio = ""
        if sc in bbr and bbr[sc]:
            ratio = f"{g / bbr[sc]:.2f}"
        print(
            f"| {sc} | {c} | **{fmt(g)}** | {fmt(min(gps))}–{fmt(max(gps))} | "
            f"{len(good) - n_cap}/{n_cap}/{len(runs)} | {fmt(med([r[2] for r in good]), 2)} | "
            f"{fmt(med([r[3] for r in good]), 2)} | {ratio or '—'} | {'; '.join(notes)} |"
        )
    print()

    # redundancy of the UDP rows against the loss the link applied to the data
    loss = {row[0]: link_loss(row[2]) for row in scen}
    red_rows = [(sc, c) for sc, c in order if c in ("xfer-udp", "xfer-udp-get")]
    if red_rows:
        print("Redundant bytes (payload bytes sent more than once, % of the file) vs the link's loss rate")
        print("in the data direction; target: at most 1.2x the loss rate.")
        print()
        print("| scenario | contender | link loss % | redundant % (median) | min–max | × loss | sender-declared lost datagrams (median) | datagram bytes | kernel UDP buffer drops (median) |")
        print("|---|---|--:|--:|---|--:|--:|--:|--:|")
        for sc, c in red_rows:
            runs = [r for r in groups[(sc, c)] if r[0] in ("ok", "capped")]
            reds = [num(kv(r[4], "redundant") or "") for r in runs]
            reds = [x for x in reds if x is not None]
            if not reds:
                continue
            m = med(reds)
            lo = loss.get(sc)
            ratio = f"{m / lo:.2f}" if lo else "—"
            lost = med([num(kv(r[4], "lost") or "") for r in runs])
            dgs = sorted({kv(r[4], "dgram") for r in runs if kv(r[4], "dgram")})
            drops = med([num(kv(r[4], "bufdrops") or "") for r in runs])
            print(
                f"| {sc} | {c} | {fmt(lo, 2) if lo is not None else '?'} | {m:.2f} | {min(reds):.2f}–{max(reds):.2f} | {ratio} | "
                f"{'—' if lost is None else f'{lost:.0f}'} | {'/'.join(dgs) or '?'} | {'—' if drops is None else f'{drops:.0f}'} |"
            )
        print()

    if fair:
        print("Fairness: one bulk contender and one iperf3 TCP BBR flow start together and share the link; medians over the runs.")
        print()
        print("| contender | contender Mbit/s | iperf3-bbr Mbit/s | contender's share | runs |")
        print("|---|--:|--:|--:|---|")
        forder, fg = [], {}
        for row in fair:
            _, c, run, status, cg, bg = row[:6]
            note = row[6] if len(row) > 6 else ""
            if c not in fg:
                forder.append(c)
                fg[c] = []
            fg[c].append((status, num(cg), num(bg), note))
        for c in forder:
            runs = fg[c]
            ok = [r for r in runs if r[0] == "ok" and r[1] is not None and r[2] is not None]
            if not ok:
                why = runs[0][3] if runs else ""
                print(f"| {c} | — | — | — | skipped: {why} |")
                continue
            shares = [r[1] / (r[1] + r[2]) * 100 for r in ok if r[1] + r[2] > 0]
            print(
                f"| {c} | {fmt(med([r[1] for r in ok]))} | {fmt(med([r[2] for r in ok]))} | "
                f"{fmt(med(shares))}% | {len(ok)}/{len(runs)} |"
            )
        print()


if __name__ == "__main__":
    main()
