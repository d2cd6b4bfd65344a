#!/usr/bin/env python3
"""mha-runtime vs torch.nn.MultiheadAttention on this machine, alternately in one run.

Run through scripts/bench_vs_torch.sh (builds the bench worker, makes the torch venv), or, on a
machine without network access, with a prebuilt worker and any python3 that has torch:

    python3 scripts/bench_vs_torch.py --bin path/to/bench_attention --threads 1,2,8,16

Three sets of named cases: `shapes` (the seven batch-first self-attention shapes the speed work
started from), `calls` (the calls people make: torch's default sequence-first layout with a
padding mask, the default call that returns averaged weights, a ViT layer, decoder
cross-attention, a decode step, kdim/vdim, many tiny sequences, long causal, a GPT-2 layer, the
same with a padding mask, a decoder layer's float `tgt_mask` without `is_causal` and a padding
mask (as nn.TransformerDecoderLayer calls it), ALiBi's per-head position bias as a 3-D float
mask, alone and with a padding mask) and
`sdpa` (functional attention: torch's F.scaled_dot_product_attention on the CPU, its flash
kernel, against mha_runtime::scaled_dot_product_attention through the `bench_sdpa serve` worker
that lies beside the layer's worker: (1, 32 heads, 2048, 128) plain and causal, grouped-query
32 query / 8 key-value heads plain and causal, a decode step L=1 against S=4096, a mid size).

For every case and thread count, rounds alternate: torch with its fast path on, torch with it
off, then mha-runtime (the `bench_attention serve` worker), each timing ITERS calls. torch runs
in eval mode under inference_mode with set_num_threads = ours; its faster setting (by the median
over all rounds) is the one compared. The ms columns are medians over all rounds; the ratio is
the median over rounds of each round's torch / ours (medians of the round's calls), a paired
comparison: the two sides of a round run back to back, in the same state of a machine whose
speed changes by 30-50% for minutes at a time, where the ratio of the two overall medians flips
with the share of slow rounds each side happened to get. GFLOP/s counts the useful work: the four projections
2·N·(L·E·E + S·kdim·E + S·vdim·E + L·E·E) and the two attention products 4·N·L·S·E, of which
a causal case has only the (L+1)/2L below the diagonal; an `sdpa` case has only the attention
products, 4·N·Hq·(query, key pairs)·E with torch's top-left causal alignment (query i sees keys
0..=i); % peak is against the FMA peak the worker measures at that thread count. `--phases` adds the fast path's per-phase times
(MHA_PHASE_TIMES, see mha_runtime::fast::phase_times) per call.
"""

import argparse
import math
import os
import statistics
import subprocess
import sys
import time
import warnings

import torch

# The causal-with-padding call gives torch its float causal mask (generate_square_subsequent_mask)
# and a bool padding mask, as such code does; torch supports it and warns that it is deprecated.
warnings.filterwarnings("ignore", message="Support for mismatched key_padding_mask and attn_mask")

# name -> case words for the worker (see examples/bench_attention.rs for the keys).
SHAPES = [
    ("(1,128,512,8)", "b=1 l=128 e=512 h=8"),
    ("(8,128,512,8)", "b=8 l=128 e=512 h=8"),
    ("(4,512,512,8)", "b=4 l=512 e=512 h=8"),
    ("(1,2048,512,8)", "b=1 l=2048 e=512 h=8"),
    ("(2,1024,1024,16)", "b=2 l=1024 e=1024 h=16"),
    ("(4,512,512,8) avg", "b=4 l=512 e=512 h=8 weights=avg"),
    ("(4,512,512,8) causal", "b=4 l=512 e=512 h=8 causal=1"),
]
CALLS = [
    ("seq-first + padding", "b=8 l=256 e=512 h=8 layout=sf kpm=1"),
    ("default call (avg w)", "b=4 l=256 e=512 h=8 layout=sf weights=avg"),
    ("ViT-B/16 L=197", "b=4 l=197 e=768 h=12"),
    ("decoder cross S>>L", "b=4 l=64 s=1024 e=512 h=8 layout=sf inputs=kv"),
    ("decode step L=1", "b=8 l=1 s=2048 e=512 h=8 inputs=kv"),
    ("kdim/vdim cross", "b=4 l=256 s=384 e=512 h=8 kdim=256 vdim=128 inputs=sep"),
    ("tiny seqs 512x16", "b=512 l=16 e=128 h=4"),
    ("causal L=4096", "b=1 l=4096 e=512 h=8 causal=1"),
    ("GPT-2 layer causal", "b=2 l=1024 e=768 h=12 causal=1"),
    ("GPT-2 causal + padding", "b=2 l=1024 e=768 h=12 causal=1 kpm=1"),
    ("decoder tgt_mask + padding", "b=2 l=1024 e=768 h=12 causal=2 kpm=1 layout=sf"),
    ("ALiBi bias 3-D mask", "b=4 l=512 e=512 h=8 bias=1"),
    ("ALiBi 3-D + padding", "b=4 l=512 e=512 h=8 bias=1 kpm=1 layout=sf"),
]
# name -> (batch, query heads, key/value heads, L, S, head size, causal) for `bench_sdpa`.
SDPA = [
    ("(1,32,2048,128)", "n=1 hq=32 hkv=32 l=2048 s=2048 e=128"),
    ("(1,32,2048,128) causal", "n=1 hq=32 hkv=32 l=2048 s=2048 e=128 causal=1"),
    ("GQA 32/8 L=2048", "n=1 hq=32 hkv=8 l=2048 s=2048 e=128"),
    ("GQA 32/8 L=2048 causal", "n=1 hq=32 hkv=8 l=2048 s=2048 e=128 causal=1"),
    ("decode L=1 S=4096 32/8", "n=1 hq=32 hkv=8 l=1 s=4096 e=128"),
    ("(4,16,512,64)", "n=4 hq=16 hkv=16 l=512 s=512 e=64"),
]
SETS = {"shapes": SHAPES, "calls": CALLS, "sdpa": SDPA}
# Projection GEMMs (rows, in, out) of the projection-bound shapes: the fused QKV projection of
# (8,128,512,8) and (2,1024,1024,16), and an output projection.
GEMMS = [(1024, 512, 1536), (2048, 1024, 3072), (1024, 512, 512)]


def parse_case(words):
    spec = dict(w.split("=", 1) for w in words.split())
    case = {k: int(spec[k]) for k in ("b", "l", "e", "h")}
    case["s"] = int(spec.get("s", case["l"]))
    case["kdim"] = int(spec.get("kdim", case["e"]))
    case["vdim"] = int(spec.get("vdim", case["e"]))
    case["layout"] = spec.get("layout", "bf")
    case["inputs"] = spec.get("inputs", "self")
    case["weights"] = spec.get("weights", "none")
    case["causal"] = spec.get("causal", "0") != "0"
    case["causal_hint"] = spec.get("causal", "0") == "1"
    case["kpm"] = spec.get("kpm", "0") != "0"
    case["bias"] = spec.get("bias", "0") != "0"
    return case


def flops(c):
    b, l, s, e = c["b"], c["l"], c["s"], c["e"]
    proj = 2 * b * (l * e * e + s * c["kdim"] * e + s * c["vdim"] * e + l * e * e)
    pairs = l * s
    if c["causal"]:
        pairs = l * (l + 1) // 2
    return proj + 4 * b * pairs * e


def parse_sdpa(words):
    spec = dict(w.split("=", 1) for w in words.split())
    c = {k: int(spec[k]) for k in ("n", "hq", "hkv", "l", "s", "e")}
    c["causal"] = spec.get("causal", "0") != "0"
    return c


def sdpa_flops(c):
    """The two attention products over the (query, key) pairs that take part."""
    l, s = c["l"], c["s"]
    # top-left causal alignment: query i sees keys 0..=i (all of them once i >= S - 1)
    pairs = sum(min(i + 1, s) for i in range(l)) if c["causal"] else l * s
    return 4 * c["n"] * c["hq"] * pairs * c["e"]


class Worker:
    """The Rust benchmark worker behind a line protocol."""

    def __init__(self, binary, phases):
        env = dict(os.environ)
        if phases:
            env["MHA_PHASE_TIMES"] = "1"
        self.proc = subprocess.Popen(
            [binary, "serve"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1, env=env
        )

    def ask(self, line):
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()
        reply = self.proc.stdout.readline().strip()
        if not reply.startswith("ok"):
            raise RuntimeError(f"bench worker: {line!r} -> {reply!r}")
        return reply.split()[1:]

    def run(self, words, threads, iters):
        return [float(x) for x in self.ask(f"run {threads} {iters} {words}")]

    def phases(self, words, threads, iters):
        self.ask("reset")
        self.run(words, threads, iters)
        return {k: float(v) / iters for k, v in (w.split("=") for w in self.ask("phases"))}

    def close(self):
        try:
            self.proc.stdin.write("quit\n")
            self.proc.stdin.flush()
        except BrokenPipeError:
            pass
        self.proc.wait(timeout=30)


class SdpaWorker(Worker):
    """The `bench_sdpa serve` worker: `run N HQ HKV L S E CAUSAL THREADS ITERS`."""

    def run(self, c, threads, iters):
        words = f"{c['n']} {c['hq']} {c['hkv']} {c['l']} {c['s']} {c['e']} {int(c['causal'])}"
        return [float(x) for x in self.ask(f"run {words} {threads} {iters}")]


class SdpaTorchCase:
    """torch.nn.functional.scaled_dot_product_attention on the same shapes (uniform [-1, 1))."""

    def __init__(self, c):
        torch.manual_seed(0)
        self.c = c
        self.q = torch.rand(c["n"], c["hq"], c["l"], c["e"]) * 2 - 1
        self.k = torch.rand(c["n"], c["hkv"], c["s"], c["e"]) * 2 - 1
        self.v = torch.rand(c["n"], c["hkv"], c["s"], c["e"]) * 2 - 1
        self.kwargs = {"is_causal": c["causal"], "enable_gqa": c["hq"] != c["hkv"]}

    def run(self, iters):
        sdpa = torch.nn.functional.scaled_dot_product_attention
        times = []
        with torch.inference_mode():
            for _ in range(iters):
                start = time.perf_counter()
                sdpa(self.q, self.k, self.v, **self.kwargs)
                times.append((time.perf_counter() - start) * 1e3)
        return times


def time_sdpa_case(worker, words, threads, rounds, round_ms):
    """Alternating rounds of torch's SDPA and ours: (torch ms, which, our ms, flops)."""
    c = parse_sdpa(words)
    case = SdpaTorchCase(c)
    case.run(1)
    worker.run(c, threads, 1)
    probe = min(statistics.median(case.run(3)), statistics.median(worker.run(c, threads, 3)))
    iters = max(1, min(200, int(round_ms / max(probe, 1e-3))))
    torch_rounds, our_rounds = [], []
    for _ in range(rounds):
        torch_rounds.append(case.run(iters))
        our_rounds.append(worker.run(c, threads, iters))
    torch_ms = statistics.median(t for r in torch_rounds for t in r)
    ours = statistics.median(t for r in our_rounds for t in r)
    return torch_ms, "sdpa", ours, paired_ratio(torch_rounds, our_rounds), sdpa_flops(c)


def paired_ratio(torch_rounds, our_rounds):
    """Median over rounds of torch's / our median call time in that round."""
    return statistics.median(
        statistics.median(t) / statistics.median(o) for t, o in zip(torch_rounds, our_rounds)
    )


class TorchCase:
    def __init__(self, c):
        torch.manual_seed(0)
        self.c = c
        kdim = c["kdim"] if c["kdim"] != c["e"] else None
        vdim = c["vdim"] if c["vdim"] != c["e"] else None
        batch_first = c["layout"] == "bf"
        self.layer = torch.nn.MultiheadAttention(
            c["e"], c["h"], batch_first=batch_first, kdim=kdim, vdim=vdim
        ).eval()

        def tensor(length, dim):
            shape = (c["b"], length, dim) if batch_first else (length, c["b"], dim)
            return torch.rand(*shape) * 2 - 1

        self.q = tensor(c["l"], c["e"])
        if c["inputs"] == "self":
            self.k = self.v = self.q
        elif c["inputs"] == "kv":
            self.k = self.v = tensor(c["s"], c["kdim"])
        else:
            self.k, self.v = tensor(c["s"], c["kdim"]), tensor(c["s"], c["vdim"])
        self.kwargs = {
            "need_weights": c["weights"] != "none",
            "average_attn_weights": c["weights"] != "perhead",
        }
        if c["causal"]:
            self.kwargs["attn_mask"] = torch.nn.Transformer.generate_square_subsequent_mask(c["l"])
            self.kwargs["is_causal"] = c["causal_hint"]
        if c["bias"]:
            b, h, l, s = c["b"], c["h"], c["l"], c["s"]
            slopes = torch.exp2(-8.0 * torch.arange(1, h + 1, dtype=torch.float32) / h)
            distance = (torch.arange(l)[:, None] - torch.arange(s)[None, :]).abs().float()
            self.kwargs["attn_mask"] = (-slopes[:, None, None] * distance).repeat(b, 1, 1)
        if c["kpm"]:
            b, s = c["b"], c["s"]
            pos = torch.arange(s)
            self.kwargs["key_padding_mask"] = torch.stack([pos >= s - i * s // (2 * b) for i in range(b)])

    def run(self, fastpath, iters):
        torch.backends.mha.set_fastpath_enabled(fastpath)
        times = []
        with torch.inference_mode():
            for _ in range(iters):
                start = time.perf_counter()
                self.layer(self.q, self.k, self.v, **self.kwargs)
                times.append((time.perf_counter() - start) * 1e3)
        return times


def geomean(xs):
    return math.exp(sum(math.log(x) for x in xs) / len(xs))


PHASES = ["pack", "qkv_projection", "layout_copy", "attention", "out_projection", "fan_out"]


def gemm_table(worker, threads_list, peaks, rounds):
    """The projection GEMMs alone; rates per CPU-second of the pool's threads (so other
    processes on a shared machine do not count), against the FMA peak measured the same way."""
    print("\nprojection GEMM (rows x in -> out, with bias): GFLOP per CPU-second x threads, "
          "% of the FMA peak measured the same way ("
          + ", ".join(f"{t} thread(s) {p:.0f}" for t, p in peaks.items()) + ")")
    print(f"{'GEMM':<20}{'thr':>4}{'GFLOP/s':>10}{'% peak':>8}")
    for threads in threads_list:
        for rows, k, n in GEMMS:
            flop = 2 * rows * k * n
            iters = max(3, int(2e9 / flop))
            cpu = sum(float(worker.ask(f"linear {threads} {iters} {rows} {k} {n}")[0].split("=")[1])
                      for _ in range(rounds))
            rate = flop * iters * rounds / max(cpu, 1e-9) / 1e9 * threads
            print(f"{f'{rows}x{k}->{n}':<20}{threads:>4}{rate:>10.1f}{100 * rate / peaks[threads]:>7.0f}%", flush=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bin", required=True, help="path of the bench_attention worker binary")
    parser.add_argument("--sdpa-bin", default="",
                        help="path of the bench_sdpa worker binary (default: bench_sdpa beside --bin)")
    parser.add_argument("--threads", default="1,2", help="thread counts, comma-separated (e.g. 1,2,8,16)")
    parser.add_argument("--sets", default="shapes,calls,sdpa",
                        help="case sets: shapes, calls, sdpa (comma-separated)")
    parser.add_argument("--cases", default="", help="only the cases whose name contains one of these (comma-separated)")
    parser.add_argument("--rounds", type=int, default=7, help="alternating rounds per row")
    parser.add_argument("--round-ms", type=float, default=150.0, help="target time per side per round")
    parser.add_argument("--rss-len", type=int, default=16384, help="L of the peak-RSS check (0 = skip)")
    parser.add_argument("--phases", action="store_true", help="also print the fast path's per-phase times")
    parser.add_argument("--gemm", action="store_true",
                        help="also time the projection GEMMs alone (per CPU-second, vs the FMA peak)")
    args = parser.parse_args()
    threads_list = [int(t) for t in args.threads.split(",") if t]
    sets = [s for s in args.sets.split(",") if s]
    filters = [f for f in args.cases.split(",") if f]
    for s in sets:
        if s not in SETS:
            parser.error(f"unknown set {s!r}; known: {', '.join(SETS)}")

    worker = Worker(args.bin, args.phases)
    sdpa_worker = None
    if "sdpa" in sets:
        sdpa_bin = args.sdpa_bin or os.path.join(os.path.dirname(os.path.abspath(args.bin)), "bench_sdpa")
        sdpa_worker = SdpaWorker(sdpa_bin, False)
    rows = []
    phase_rows = []
    try:
        peak_replies = {t: worker.ask(f"peak {t}") for t in threads_list}
        peaks = {t: float(r[0]) for t, r in peak_replies.items()}
        cpu_peaks = {t: float(r[1]) for t, r in peak_replies.items()}
        print(f"torch {torch.__version__}; measured FMA peak: "
              + ", ".join(f"{t} thread(s) {p:.0f} GFLOP/s" for t, p in peaks.items()))
        if args.gemm:
            gemm_table(worker, threads_list, cpu_peaks, args.rounds)
        header = (f"{'case':<24}{'thr':>4}{'torch ms':>10}{'(fast)':>7}"
                  f"{'mha ms':>10}{'GFLOP/s':>9}{'% peak':>8}{'torch/mha':>11}")
        for set_name in sets:
            print(f"\n[{set_name}]")
            print(header)
            print("-" * len(header))
            for threads in threads_list:
                torch.set_num_threads(threads)
                for name, words in SETS[set_name]:
                    if filters and not any(f in name for f in filters):
                        continue
                    if set_name == "sdpa":
                        torch_best, which, ours, ratio, work = time_sdpa_case(
                            sdpa_worker, words, threads, args.rounds, args.round_ms)
                        gflops = work / (ours * 1e-3) / 1e9
                        rows.append((set_name, threads, ratio))
                        print(f"{name:<24}{threads:>4}{torch_best:>10.3f}{which:>7}{ours:>10.3f}"
                              f"{gflops:>9.1f}{100 * gflops / peaks[threads]:>7.0f}%{ratio:>10.2f}x", flush=True)
                        continue
                    c = parse_case(words)
                    case = TorchCase(c)
                    # Warm up both sides and size the rounds.
                    case.run(True, 1)
                    case.run(False, 1)
                    worker.run(words, threads, 1)
                    probe = min(statistics.median(case.run(True, 3)), statistics.median(worker.run(words, threads, 3)))
                    iters = max(1, min(200, int(args.round_ms / max(probe, 1e-3))))
                    rounds = {"on": [], "off": [], "ours": []}
                    for _ in range(args.rounds):
                        rounds["on"].append(case.run(True, iters))
                        rounds["off"].append(case.run(False, iters))
                        rounds["ours"].append(worker.run(words, threads, iters))
                    med = {k: statistics.median(t for r in v for t in r) for k, v in rounds.items()}
                    which = "on" if med["on"] <= med["off"] else "off"
                    torch_best = med[which]
                    gflops = flops(c) / (med["ours"] * 1e-3) / 1e9
                    ratio = paired_ratio(rounds[which], rounds["ours"])
                    rows.append((set_name, threads, ratio))
                    print(f"{name:<24}{threads:>4}{torch_best:>10.3f}{which:>7}{med['ours']:>10.3f}"
                          f"{gflops:>9.1f}{100 * gflops / peaks[threads]:>7.0f}%{ratio:>10.2f}x", flush=True)
                    if args.phases:
                        phase_rows.append((name, threads, worker.phases(words, threads, iters)))
    finally:
        worker.close()
        if sdpa_worker is not None:
            sdpa_worker.close()

    if phase_rows:
        print("\nper-phase ms per call (MHA_PHASE_TIMES; fan_out = idle thread time in parallel regions)")
        head = f"{'case':<24}{'thr':>4}" + "".join(f"{p:>15}" for p in PHASES)
        print(head)
        print("-" * len(head))
        for name, threads, ph in phase_rows:
            print(f"{name:<24}{threads:>4}" + "".join(f"{ph.get(p, 0.0):>15.3f}" for p in PHASES))

    if args.rss_len:
        out = subprocess.run([args.bin, "rss", "1", str(args.rss_len), "512", "8"], capture_output=True, text=True)
        if out.returncode != 0:
            print(f"peak RSS check failed to run: {out.stderr.strip()}")
        else:
            rss = float(out.stdout.split()[-1])
            verdict = "under" if rss < 300 else "OVER"
            print(f"\npeak RSS, B=1 L={args.rss_len} E=512 H=8 need_weights=False: {rss:.0f} MB ({verdict} 300 MB)")

    if not rows:
        print("no case matched")
        return 1
    print()
    for set_name in sets:
        for threads in threads_list:
            ratios = [r for s, t, r in rows if s == set_name and t == threads]
            if ratios:
                print(f"{set_name}, {threads} thread(s): geomean {geomean(ratios):.2f}x, min {min(ratios):.2f}x")
    ratios = [r for _, _, r in rows]
    print(f"(final line: every case at every thread count, {len(ratios)} rows)")
    print(f"geomean speedup vs torch: {geomean(ratios):.2f}x (min {min(ratios):.2f}x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
