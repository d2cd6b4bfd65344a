#!/usr/bin/env python3
"""mha-runtime vs torch.nn.MultiheadAttention on this machine, alternately in one run.

Run through scripts/bench_vs_torch.sh (builds the bench binary, makes the torch venv), or:

    .venvs/torch/bin/python scripts/bench_vs_torch.py --bin target/release/examples/bench_attention

For every shape and thread count, rounds alternate: torch with its fast path on, torch with it
off, then mha-runtime (the `bench_attention serve` worker), each timing ITERS calls; medians
are over all rounds. torch runs in eval mode under inference_mode with set_num_threads = ours,
batch-first self-attention. GFLOP/s counts the dense work 2·B·L·E²·4 (projections) +
4·B·L²·E (scores and weighted sum), the same for causal rows; % peak is against the FMA peak
measured by the worker at that thread count. The ratio is torch's faster setting / ours.
"""

import argparse
import math
import statistics
import subprocess
import sys
import time

import torch

SHAPES = [
    # (B, L, E, H, mode); mode: none = need_weights=False, avg = weights averaged, causal
    (1, 128, 512, 8, "none"),
    (8, 128, 512, 8, "none"),
    (4, 512, 512, 8, "none"),
    (1, 2048, 512, 8, "none"),
    (2, 1024, 1024, 16, "none"),
    (4, 512, 512, 8, "avg"),
    (4, 512, 512, 8, "causal"),
]


class Worker:
    """The Rust benchmark worker behind a line protocol."""

    def __init__(self, binary):
        self.proc = subprocess.Popen(
            [binary, "serve"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1
        )

    def ask(self, line):
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()
        reply = self.proc.stdout.readline().strip()
        if not reply.startswith("ok"):
            raise RuntimeError(f"bench worker: {line!r} -> {reply!r}")
        return [float(x) for x in reply.split()[1:]]

    def run(self, shape, threads, iters):
        b, l, e, h, mode = shape
        return self.ask(f"run {b} {l} {e} {h} {mode} {threads} {iters}")

    def close(self):
        try:
            self.proc.stdin.write("quit\n")
            self.proc.stdin.flush()
        except BrokenPipeError:
            pass
        self.proc.wait(timeout=30)


class TorchCase:
    def __init__(self, shape):
        b, l, e, h, mode = shape
        torch.manual_seed(0)
        self.mode = mode
        self.layer = torch.nn.MultiheadAttention(e, h, batch_first=True).eval()
        self.x = torch.rand(b, l, e) * 2 - 1
        self.mask = (
            torch.nn.Transformer.generate_square_subsequent_mask(l) if mode == "causal" else None
        )

    def call(self):
        x = self.x
        if self.mode == "none":
            return self.layer(x, x, x, need_weights=False)
        if self.mode == "avg":
            return self.layer(x, x, x, need_weights=True, average_attn_weights=True)
        return self.layer(x, x, x, need_weights=False, attn_mask=self.mask, is_causal=True)

    def run(self, fastpath, iters):
        torch.backends.mha.set_fastpath_enabled(fastpath)
        times = []
        with torch.inference_mode():
            for _ in range(iters):
                start = time.perf_counter()
                self.call()
                times.append((time.perf_counter() - start) * 1e3)
        return times


def flops(shape):
    b, l, e, h, mode = shape
    return 2 * b * l * e * e * 4 + 4 * b * l * l * e


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bin", required=True, help="path of the bench_attention example binary")
    parser.add_argument("--threads", default="1,2", help="thread counts, comma-separated")
    parser.add_argument("--rounds", type=int, default=7, help="alternating rounds per row")
    parser.add_argument("--round-ms", type=float, default=150.0, help="target time per side per round")
    parser.add_argument("--rss-len", type=int, default=16384, help="L of the peak-RSS check (0 = skip)")
    args = parser.parse_args()
    threads_list = [int(t) for t in args.threads.split(",") if t]

    worker = Worker(args.bin)
    rows = []
    try:
        peaks = {t: worker.ask(f"peak {t}")[0] for t in threads_list}
        print(f"torch {torch.__version__}; measured FMA peak: "
              + ", ".join(f"{t} thread(s) {p:.0f} GFLOP/s" for t, p in peaks.items()))
        print()
        header = (f"{'shape (B,L,E,H)':<22}{'mode':<8}{'thr':>4}{'torch ms':>10}{'(fast)':>8}"
                  f"{'ours ms':>10}{'GFLOP/s':>9}{'% peak':>8}{'torch/ours':>12}")
        print(header)
        print("-" * len(header))
        for threads in threads_list:
            torch.set_num_threads(threads)
            for shape in SHAPES:
                case = TorchCase(shape)
                # Warm up both sides and size the rounds.
                case.run(True, 1)
                case.run(False, 1)
                worker.run(shape, threads, 1)
                probe = min(statistics.median(case.run(True, 3)), statistics.median(worker.run(shape, threads, 3)))
                iters = max(1, min(200, int(args.round_ms / max(probe, 1e-3))))
                samples = {"on": [], "off": [], "ours": []}
                for _ in range(args.rounds):
                    samples["on"] += case.run(True, iters)
                    samples["off"] += case.run(False, iters)
                    samples["ours"] += worker.run(shape, threads, iters)
                med = {k: statistics.median(v) for k, v in samples.items()}
                torch_best = min(med["on"], med["off"])
                which = "on" if med["on"] <= med["off"] else "off"
                gflops = flops(shape) / (med["ours"] * 1e-3) / 1e9
                ratio = torch_best / med["ours"]
                rows.append((threads, ratio))
                b, l, e, h, mode = shape
                print(f"{f'({b},{l},{e},{h})':<22}{mode:<8}{threads:>4}{torch_best:>10.3f}{which:>8}"
                      f"{med['ours']:>10.3f}{gflops:>9.1f}{100 * gflops / peaks[threads]:>7.0f}%{ratio:>11.2f}x",
                      flush=True)
    finally:
        worker.close()

    if args.rss_len:
        out = subprocess.run([args.bin, "rss", "1", str(args.rss_len), "512", "8"], capture_output=True, text=True)
        if out.returncode != 0:
            print(f"peak RSS check failed to run: {out.stderr.strip()}")
        else:
            rss = float(out.stdout.split()[-1])
            verdict = "under" if rss < 300 else "OVER"
            print(f"\npeak RSS, B=1 L={args.rss_len} E=512 H=8 need_weights=False: {rss:.0f} MB ({verdict} 300 MB)")

    print()
    for threads in threads_list:
        ratios = [r for t, r in rows if t == threads]
        geo = math.exp(sum(math.log(r) for r in ratios) / len(ratios))
        print(f"{threads} thread(s): geomean {geo:.2f}x, min {min(ratios):.2f}x")
    final = [r for t, r in rows if t == max(threads_list)]
    geo = math.exp(sum(math.log(r) for r in final) / len(final))
    print(f"(final line: {max(threads_list)} threads)")
    print(f"geomean speedup vs torch: {geo:.2f}x (min {min(final):.2f}x)")


if __name__ == "__main__":
    sys.exit(main())
