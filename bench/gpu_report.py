"""Joins bench/gpu_sweep.c's CSV with bench/sdpa.py's into a Markdown table
(time per call and per queued call, fraction of the copy bandwidth on the
compressed bytes, speedup over dense fp16 attention timed the same two
ways) and a PNG plot of the queued speedup against T. Plain Python: the
PNG is drawn here, without plotting libraries.

usage: python3 bench/gpu_report.py SWEEP.csv SDPA.csv OUT.png > table.md
"""
import csv
import math
import re
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


# 5 x 7 glyphs (rows top to bottom, bit 4 the leftmost column) for the
# plot's labels
FONT = {
    "0": "0e 11 13 15 19 11 0e", "1": "04 0c 04 04 04 04 0e", "2": "0e 11 01 02 04 08 1f",
    "3": "1f 02 04 02 01 11 0e", "4": "02 06 0a 12 1f 02 02", "5": "1f 10 1e 01 01 11 0e",
    "6": "06 08 10 1e 11 11 0e", "7": "1f 01 02 04 08 08 08", "8": "0e 11 11 0e 11 11 0e",
    "9": "0e 11 11 0f 01 02 0c", "K": "11 12 14 18 14 12 11", "T": "1f 04 04 04 04 04 04",
    "a": "00 00 0e 01 0f 11 0f", "b": "10 10 16 19 11 11 1e", "c": "00 00 0e 10 10 11 0e",
    "d": "01 01 0d 13 11 11 0f", "e": "00 00 0e 11 1f 10 0e", "f": "06 09 08 1c 08 08 08",
    "i": "04 00 0c 04 04 04 0e", "k": "10 10 12 14 18 14 12", "l": "0c 04 04 04 04 04 0e",
    "n": "00 00 16 19 11 11 11", "o": "00 00 0e 11 11 11 0e", "p": "00 00 1e 11 1e 10 10",
    "q": "00 00 0d 13 0f 01 01", "r": "00 00 16 19 10 10 10", "s": "00 00 0e 10 0e 01 1e",
    "t": "08 08 1c 08 08 09 06", "u": "00 00 11 11 11 13 0d", "v": "00 00 11 11 11 0a 04",
    "x": "00 00 11 0a 04 0a 11", "g": "00 00 0f 11 0f 01 0e", ",": "00 00 00 00 06 04 08", ".": "00 00 00 00 00 0c 0c",
    "(": "02 04 08 08 08 04 02", ")": "08 04 02 02 02 04 08", "-": "00 00 00 1f 00 00 00",
    ":": "00 0c 0c 00 0c 0c 00", " ": "00 00 00 00 00 00 00",
}


def plot(series, path):
    """series: {label: [(log2 T, speedup)]}; log2 axes; a line at speedup
    1; 4-bit series dashed; labels and legend drawn in."""
    w, h, m, legend_w = 900, 500, 60, 170
    px = bytearray([255] * (w * h * 3))
    xs = [x for s in series.values() for x, _ in s]
    ys = [math.log2(y) for s in series.values() for _, y in s if y > 0]
    x0, x1 = min(xs), max(xs)
    y0, y1 = math.floor(min(ys + [-1.0])), math.ceil(max(ys + [1.0]))

    def at(x, y):
        return (m + (x - x0) / (x1 - x0) * (w - legend_w - 2 * m),
                h - m - (y - y0) / (y1 - y0) * (h - 2 * m))

    def put(x, y, c):
        if 0 <= x < w and 0 <= y < h:
            px[(y * w + x) * 3:(y * w + x) * 3 + 3] = bytes(c)

    def line(a, b, c, dashed=False):
        n = int(max(abs(b[0] - a[0]), abs(b[1] - a[1]))) + 1
        for i in range(n + 1):
            if dashed and (i // 6) % 2:
                continue
            x = a[0] + (b[0] - a[0]) * i / n
            y = a[1] + (b[1] - a[1]) * i / n
            for dx in (0, 1):
                for dy in (0, 1):
                    put(int(x) + dx, int(y) + dy, c)

    def text(x, y, t, c=(0, 0, 0)):
        """t with its top left corner at (x, y), 6 pixels a character"""
        for k, ch in enumerate(t):
            for r, bits in enumerate(FONT.get(ch, FONT[" "]).split()):
                for col in range(5):
                    if int(bits, 16) >> (4 - col) & 1:
                        put(int(x) + 6 * k + col, int(y) + r, c)

    line(at(x0, y0), at(x1, y0), (0, 0, 0))
    line(at(x0, y0), at(x0, y1), (0, 0, 0))
    for x in range(int(x0), int(x1) + 1):  # ticks at each power of two of T
        p = at(x, y0)
        line((p[0], p[1]), (p[0], p[1] + 6), (0, 0, 0))
        label = f"{2 ** x // 1024}K" if x >= 10 else str(2 ** x)
        text(p[0] - 3 * len(label), p[1] + 10, label)
    for y in range(y0, y1 + 1):  # speedup 2^y
        p = at(x0, y)
        line((p[0] - 6, p[1]), (p[0], p[1]), (0, 0, 0))
        label = f"{2.0 ** y:g}x"
        text(p[0] - 10 - 6 * len(label), p[1] - 3, label)
    line(at(x0, 0.0), at(x1, 0.0), (160, 160, 160))
    text(m, 20, "speedup over dense fp16 sdpa, queued calls (log2)")
    text((w - legend_w) / 2 - 30, h - 22, "T, tokens (log2)")
    colors = [(31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189),
              (140, 86, 75), (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207),
              (0, 0, 128), (128, 0, 0)]
    order = sorted(series, key=lambda k: [float(v) for v in re.findall(r"[0-9.]+", k)])  # batch, s, bits
    for k, (label, c) in enumerate(zip(order, colors)):
        s = series[label]
        dashed = label.endswith("4-bit")
        pts = [at(x, math.log2(y)) for x, y in sorted(s) if y > 0]
        for a, b in zip(pts, pts[1:]):
            line(a, b, c, dashed)
        ly = m + 16 * k
        line((w - legend_w + 10, ly + 3), (w - legend_w + 40, ly + 3), c, dashed)
        text(w - legend_w + 48, ly, label)
    png(path, w, h, px)
    return list(zip(order, colors))


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
              "figure) against log2 T; grey: 1x; 4-bit layers dashed. Colours:")
        for label, c in legend:
            print(f"- rgb{c}: {label}")


if __name__ == "__main__":
    main()
