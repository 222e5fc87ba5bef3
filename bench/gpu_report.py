"""Joins bench/gpu_sweep.c's CSV with bench/sdpa.py's into a Markdown table
(time per call and per queued call, fraction of the copy bandwidth on the
compressed bytes, speedup over dense fp16 attention timed the same two
ways) and a PNG plot of the queued speedup against T. Plain Python: the
PNG is drawn here, without plotting libraries.

usage: python3 bench/gpu_report.py SWEEP.csv SDPA.csv OUT.png > table.md
"""
import csv
import math
import struct
import sys
import zlib


def rows(path):
    lines = [l for l in open(path) if l.strip() and not l.startswith("#")]
    lines = lines[:1] + [l for l in lines[1:] if l != lines[0]]  # one header of several runs
    return list(csv.DictReader(lines)), [l for l in open(path) if l.startswith("#")]


def png(path, w, h, px):
    raw = b"".join(b"\0" + bytes(px[y * w * 3:(y + 1) * w * 3]) for y in range(h))

    def chunk(tag, data):
        c = struct.pack(">I", len(data)) + tag + data
        return c + struct.pack(">I", zlib.crc32(tag + data) & 0xffffffff)

    with open(path, "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
                + chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b""))


def plot(series, path):
    """series: {label: [(log2 T, speedup)]}; log2 axes; a line at speedup 1."""
    w, h, m = 720, 480, 50
    px = bytearray([255] * (w * h * 3))
    xs = [x for s in series.values() for x, _ in s]
    ys = [math.log2(y) for s in series.values() for _, y in s if y > 0]
    x0, x1 = min(xs), max(xs)
    y0, y1 = min(ys + [-1.0]), max(ys + [1.0])

    def at(x, y):
        return (m + (x - x0) / (x1 - x0) * (w - 2 * m), h - m - (y - y0) / (y1 - y0) * (h - 2 * m))

    def put(x, y, c):
        if 0 <= x < w and 0 <= y < h:
            px[(y * w + x) * 3:(y * w + x) * 3 + 3] = bytes(c)

    def line(a, b, c):
        n = int(max(abs(b[0] - a[0]), abs(b[1] - a[1]))) + 1
        for i in range(n + 1):
            x = a[0] + (b[0] - a[0]) * i / n
            y = a[1] + (b[1] - a[1]) * i / n
            for dx in (0, 1):
                for dy in (0, 1):
                    put(int(x) + dx, int(y) + dy, c)

    line(at(x0, y0), at(x1, y0), (0, 0, 0))
    line(at(x0, y0), at(x0, y1), (0, 0, 0))
    for x in range(int(x0), int(x1) + 1):  # ticks at each power of two of T
        p = at(x, y0)
        line((p[0], p[1]), (p[0], p[1] + 6), (0, 0, 0))
    for y in range(math.ceil(y0), int(y1) + 1):  # speedup 2^y
        p = at(x0, y)
        line((p[0] - 6, p[1]), (p[0], p[1]), (0, 0, 0))
    line(at(x0, 0.0), at(x1, 0.0), (160, 160, 160))
    colors = [(31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189),
              (140, 86, 75), (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207),
              (0, 0, 128), (128, 0, 0)]
    for (label, s), c in zip(sorted(series.items()), colors):
        pts = [at(x, math.log2(y)) for x, y in sorted(s) if y > 0]
        for a, b in zip(pts, pts[1:]):
            line(a, b, c)
    png(path, w, h, px)
    return list(zip(sorted(series), colors))


def main():
    sweep, notes = rows(sys.argv[1])
    sdpa, snotes = rows(sys.argv[2])
    dense = {(r["batch"], r["tokens"]): r for r in sdpa}
    bw = None
    for n in snotes:
        if "copy" in n:
            bw = float(n.split(":")[1].split()[0]) * 1e12
    for n in notes + snotes:
        print(n.strip())
    print()
    print("Per call: one call and its synchronization (mf_attend_ex; sdpa + synchronize). Queued: per call "
          "of 51 calls queued with one synchronization (mf_attend_async + mf_attend_wait; sdpa), as a "
          "decode loop runs them. GB/s: compressed bytes over the queued time.")
    print()
    print("| batch | T | s | bits | compressed MB | attend us | queued us | GB/s (fraction of copy) "
          "| dense sdpa us | dense queued us | speedup | queued speedup | encoder GB/s |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    series = {}

    def num(x, f):
        return f"{x:{f}}" if x else "-"

    for r in sweep:
        us = float(r["attend_us"])
        qus = float(r["queued_us"]) if r.get("queued_us") else None
        mb = int(r["compressed_bytes"]) / 1e6
        d = dense.get((r["batch"], r["tokens"]), {})
        dus = float(d["sdpa_us"]) if d.get("sdpa_us") else None
        dq = float(d["sdpa_queued_us"]) if d.get("sdpa_queued_us") else None
        gbs = int(r["compressed_bytes"]) / (qus or us) / 1e3
        frac = f"{gbs * 1e9 / bw:.2f}" if bw else "-"
        sp = dus / us if dus else None
        qsp = dq / qus if dq and qus else None
        print(f"| {r['batch']} | {r['tokens']} | {r['sparsity']} | {r['bits']} | {mb:.1f} | {us:.1f} | "
              f"{num(qus, '.1f')} | {gbs:.0f} ({frac}) | {num(dus, '.1f')} | {num(dq, '.1f')} | "
              f"{num(sp, '.2f')} | {num(qsp, '.2f')} | {r['encode_GBps']} |")
        if qsp or sp:
            key = f"b{r['batch']} s{r['sparsity']} {r['bits']}-bit"
            series.setdefault(key, []).append((math.log2(int(r["tokens"])), qsp or sp))
    if series and len(sys.argv) > 3:
        legend = plot(series, sys.argv[3])
        print()
        print(f"Plot {sys.argv[3]}: queued speedup over dense sdpa (log2; per-call speedup where no queued "
              "figure) against log2 T (10..17); grey: 1x. Colours:")
        for label, c in legend:
            print(f"- rgb{c}: {label}")


if __name__ == "__main__":
    main()
