"""Dense baseline for bench/gpu_sweep.c (issue 5): PyTorch's
scaled_dot_product_attention on the same layers (one query token, 32 query
heads over 8 KV heads, D=128, fp16), timed as gpu_sweep times its calls:
one call plus a synchronize, median of 51 after 10 warm-ups (and one
warm-up shape before any is timed, so the first shape does not pay for
PyTorch's start-up); and per call of 51 calls queued with one synchronize,
best of 3 (gpu_sweep's queued_us). Also the device-to-device copy bandwidth
(bytes read + written).

usage: python3 bench/sdpa.py [--batch B ...] [--tokens T ...]  -> CSV on stdout
"""
import argparse
import statistics
import time

import torch
import torch.nn.functional as F


def timed(fn, reps=51):
    for _ in range(10):
        fn()
    torch.cuda.synchronize()
    t = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        torch.cuda.synchronize()
        t.append(time.perf_counter() - t0)
    return statistics.median(t)


def queued(fn, reps=51):
    t = []
    for _ in range(3):
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        for _ in range(reps):
            fn()
        torch.cuda.synchronize()
        t.append((time.perf_counter() - t0) / reps)
    return min(t)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--batch", type=int, nargs="+", default=[1, 8, 32])
    ap.add_argument("--bits", type=int, nargs="+", help="ignored: dense attention has no code width "
                    "(accepted so that a sweep's arguments can be passed on)")
    ap.add_argument("--tokens", type=int, nargs="+",
                    default=[1024 << i for i in range(8)])
    a = ap.parse_args()
    src = torch.empty(2 << 30, dtype=torch.uint8, device="cuda")
    dst = torch.empty_like(src)
    sec = timed(lambda: dst.copy_(src))
    print(f"# device-to-device copy: {2 * src.numel() / sec / 1e12:.2f} TB/s (read + write)")
    del src, dst
    q = torch.randn(1, 32, 1, 128, dtype=torch.float16, device="cuda")
    k = torch.randn(1, 8, 1024, 128, dtype=torch.float16, device="cuda")
    timed(lambda: F.scaled_dot_product_attention(q, k, k, enable_gqa=True))
    print("batch,tokens,sdpa_us,sdpa_queued_us")
    for b in a.batch:
        for t in a.tokens:
            q = torch.randn(b, 32, 1, 128, dtype=torch.float16, device="cuda")
            k = torch.randn(b, 8, t, 128, dtype=torch.float16, device="cuda")
            v = torch.randn(b, 8, t, 128, dtype=torch.float16, device="cuda")
            def fn():
                return F.scaled_dot_product_attention(q, k, v, enable_gqa=True)
            sec = timed(fn)
            print(f"{b},{t},{sec * 1e6:.2f},{queued(fn) * 1e6:.2f}", flush=True)
            del q, k, v
            torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
