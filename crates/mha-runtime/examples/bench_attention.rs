//! Benchmark worker for `scripts/bench_vs_torch.py`: times `MultiheadAttention::forward` on
//! request, reports the fast path's per-phase times, measures the machine's FMA peak and a
//! forward call's peak RSS.
//!
//! ```text
//! cargo run --release -p mha-runtime --example bench_attention -- serve
//!     reads lines and answers each with `ok ...` or `error ...`:
//!     run THREADS ITERS CASE    `ok T1 T2 ...` (milliseconds per call)
//!     cpu THREADS ITERS CASE    `ok cpu_ms=MS wall_ms=MS`: per call, CPU time of the pool's
//!                               threads (time other processes took the cores not counted;
//!                               idle spinning counted) and wall time
//!     reset                     zeroes the phase times
//!     phases                    `ok pack=MS qkv_projection=MS ...` (accumulated; the worker
//!                               must run with MHA_PHASE_TIMES=1 for them to be non-zero)
//!     peak THREADS              `ok GFLOPS CPU_GFLOPS`: FMA peak on THREADS threads, by wall
//!                               time and per CPU-second of each thread (times THREADS)
//!     linear THREADS ITERS ROWS IN OUT
//!                               `ok cpu_s=S wall_s=S T1 T2 ...`: one projection GEMM with
//!                               bias (S: CPU and wall seconds of all ITERS calls)
//!     quit
//! cargo run --release -p mha-runtime --example bench_attention -- rss B L E H
//!     one need_weights=False batch-first self-attention forward; prints `peak_rss_mb X`.
//! ```
//!
//! A CASE is `key=value` words (any order; defaults in brackets): `b` `l` `e` `h` (required),
//! `s` [l], `kdim` [e], `vdim` [e], `layout` `bf` | `sf` [bf] (batch-first `(N, L, E)` or
//! torch's default sequence-first `(L, N, E)`), `inputs` `self` | `kv` | `sep` [self] (query =
//! key = value; key = value, a separate memory; three tensors), `weights` `none` | `avg` |
//! `perhead` [none], `causal` 0 | 1 | 2 [0] (a float causal `attn_mask`: 1 with
//! `is_causal=True`, 2 without, as `nn.TransformerDecoderLayer` passes its `tgt_mask`),
//! `kpm` 0 | 1 [0] (a bool `key_padding_mask`: batch element `i` pads its last
//! `i · S / (2N)` keys), `bias` 0 | 1 [0] (ALiBi's relative position bias as a 3-D float
//! `attn_mask` `(N·H, L, S)`: head `h` adds `-|i - j| · 2^(-8(h+1)/H)`, as models that carry a
//! per-head bias pass it to `nn.MultiheadAttention`). Eval mode; inputs uniform in [-1, 1).

use std::collections::HashMap;
use std::io::{BufRead, Write};
use std::time::Instant;

use mha_runtime::{
    generate_square_subsequent_mask, ForwardOptions, Mask, MultiheadAttention,
    MultiheadAttentionConfig,
};
use ndarray::{Array2, Array3, ArrayD, IxDyn};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// One benchmark case, parsed from `key=value` words.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Spec {
    b: usize,
    l: usize,
    s: usize,
    e: usize,
    h: usize,
    kdim: usize,
    vdim: usize,
    seq_first: bool,
    inputs: Inputs,
    weights: Weights,
    causal: bool,
    /// `is_causal=True` beside the causal mask.
    causal_hint: bool,
    kpm: bool,
    bias: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Inputs {
    SelfAttention,
    SharedKeyValue,
    Separate,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Weights {
    None,
    Averaged,
    PerHead,
}

impl Spec {
    fn parse(words: &[&str]) -> Result<Self, String> {
        let mut map = HashMap::new();
        for w in words {
            let (k, v) = w
                .split_once('=')
                .ok_or_else(|| format!("expected key=value, got `{w}`"))?;
            if map.insert(k, v).is_some() {
                return Err(format!("`{k}` given twice"));
            }
        }
        let mut num = |k: &str, default: Option<usize>| -> Result<usize, String> {
            match map.remove(k) {
                Some(v) => v.parse().map_err(|_| format!("`{k}`: not a number: `{v}`")),
                None => default.ok_or_else(|| format!("`{k}` is required")),
            }
        };
        let (b, l, e, h) = (
            num("b", None)?,
            num("l", None)?,
            num("e", None)?,
            num("h", None)?,
        );
        let (s, kdim, vdim) = (
            num("s", Some(l))?,
            num("kdim", Some(e))?,
            num("vdim", Some(e))?,
        );
        let (causal_code, kpm) = (num("causal", Some(0))?, num("kpm", Some(0))? != 0);
        if causal_code > 2 {
            return Err(format!("`causal`: 0, 1 or 2, got {causal_code}"));
        }
        let (causal, causal_hint) = (causal_code != 0, causal_code == 1);
        let bias = num("bias", Some(0))? != 0;
        if bias && causal_code != 0 {
            return Err("`bias` and `causal` each give the attn_mask: one of them".into());
        }
        let seq_first = match map.remove("layout").unwrap_or("bf") {
            "bf" => false,
            "sf" => true,
            other => return Err(format!("`layout`: bf or sf, got `{other}`")),
        };
        let inputs = match map.remove("inputs").unwrap_or("self") {
            "self" => Inputs::SelfAttention,
            "kv" => Inputs::SharedKeyValue,
            "sep" => Inputs::Separate,
            other => return Err(format!("`inputs`: self, kv or sep, got `{other}`")),
        };
        let weights = match map.remove("weights").unwrap_or("none") {
            "none" => Weights::None,
            "avg" => Weights::Averaged,
            "perhead" => Weights::PerHead,
            other => return Err(format!("`weights`: none, avg or perhead, got `{other}`")),
        };
        if let Some(k) = map.keys().next() {
            return Err(format!("unknown key `{k}`"));
        }
        if inputs == Inputs::SelfAttention && (s != l || kdim != e || vdim != e) {
            return Err("self-attention needs s = l and kdim = vdim = e".into());
        }
        if inputs == Inputs::SharedKeyValue && kdim != vdim {
            return Err("a shared key / value tensor needs kdim = vdim".into());
        }
        Ok(Self {
            b,
            l,
            s,
            e,
            h,
            kdim,
            vdim,
            seq_first,
            inputs,
            weights,
            causal,
            causal_hint,
            kpm,
            bias,
        })
    }
}

struct Case {
    spec: Spec,
    layer: MultiheadAttention,
    query: ArrayD<f32>,
    key: Option<ArrayD<f32>>,
    value: Option<ArrayD<f32>>,
    padding: Option<ArrayD<bool>>,
    causal_mask: Option<Array2<f32>>,
    alibi: Option<Array3<f32>>,
}

fn make_case(spec: &Spec) -> Result<Case, String> {
    let config = MultiheadAttentionConfig::new(spec.e, spec.h)
        .with_batch_first(!spec.seq_first)
        .with_kdim((spec.kdim != spec.e).then_some(spec.kdim))
        .with_vdim((spec.vdim != spec.e).then_some(spec.vdim));
    let layer = MultiheadAttention::random(config, 0).map_err(|err| err.to_string())?;
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    let mut tensor = |len: usize, dim: usize| {
        let shape = if spec.seq_first {
            [len, spec.b, dim]
        } else {
            [spec.b, len, dim]
        };
        ArrayD::from_shape_simple_fn(IxDyn(&shape), || rng.random::<f32>() * 2.0 - 1.0)
    };
    let query = tensor(spec.l, spec.e);
    let (key, value) = match spec.inputs {
        Inputs::SelfAttention => (None, None),
        Inputs::SharedKeyValue => (Some(tensor(spec.s, spec.kdim)), None),
        Inputs::Separate => (
            Some(tensor(spec.s, spec.kdim)),
            Some(tensor(spec.s, spec.vdim)),
        ),
    };
    let padding = spec.kpm.then(|| {
        ArrayD::from_shape_fn(IxDyn(&[spec.b, spec.s]), |i| {
            i[1] >= spec.s - i[0] * spec.s / (2 * spec.b)
        })
    });
    Ok(Case {
        spec: spec.clone(),
        layer,
        query,
        key,
        value,
        padding,
        causal_mask: spec.causal.then(|| generate_square_subsequent_mask(spec.l)),
        alibi: spec.bias.then(|| alibi(spec.b, spec.h, spec.l, spec.s)),
    })
}

/// ALiBi's bias `-|i - j| · 2^(-8(h+1)/H)` for query `i`, key `j` of head `h`, as a
/// `(N·H, L, S)` float `attn_mask`.
fn alibi(b: usize, h: usize, l: usize, s: usize) -> Array3<f32> {
    Array3::from_shape_fn((b * h, l, s), |(bh, i, j)| {
        let slope = (-8.0 * ((bh % h) + 1) as f32 / h as f32).exp2();
        -slope * i.abs_diff(j) as f32
    })
}

fn forward_once(case: &Case) -> Result<(), String> {
    let mut options = ForwardOptions::default()
        .with_need_weights(case.spec.weights != Weights::None)
        .with_average_attn_weights(case.spec.weights != Weights::PerHead);
    if let Some(mask) = &case.causal_mask {
        options = options
            .with_attn_mask(Mask::Float(mask.view().into_dyn()))
            .with_is_causal(case.spec.causal_hint);
    }
    if let Some(bias) = &case.alibi {
        options = options.with_attn_mask(Mask::Float(bias.view().into_dyn()));
    }
    if let Some(padding) = &case.padding {
        options = options.with_key_padding_mask(Mask::Bool(padding.view()));
    }
    let q = case.query.view();
    let k = case.key.as_ref().map_or(q.clone(), |k| k.view());
    let v = case.value.as_ref().map_or(k.clone(), |v| v.view());
    let out = case
        .layer
        .forward(q, k, v, &options)
        .map_err(|e| e.to_string())?;
    std::hint::black_box(out);
    Ok(())
}

fn parse<const N: usize>(words: &[&str]) -> Result<[usize; N], String> {
    let mut out = [0usize; N];
    if words.len() != N {
        return Err(format!("expected {N} numbers, got {}", words.len()));
    }
    for (slot, w) in out.iter_mut().zip(words) {
        *slot = w.parse().map_err(|_| format!("not a number: `{w}`"))?;
    }
    Ok(out)
}

fn pool(
    threads: usize,
    pools: &mut HashMap<usize, rayon::ThreadPool>,
) -> Result<&rayon::ThreadPool, String> {
    match pools.entry(threads) {
        std::collections::hash_map::Entry::Occupied(e) => Ok(e.into_mut()),
        std::collections::hash_map::Entry::Vacant(e) => {
            let p = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .map_err(|err| err.to_string())?;
            Ok(e.insert(p))
        }
    }
}

/// The case and pool of a `run` / `cpu` request (`THREADS ITERS CASE`), and ITERS.
fn case_and_pool<'c>(
    words: &[&str],
    cases: &'c mut HashMap<Spec, Case>,
    pools: &'c mut HashMap<usize, rayon::ThreadPool>,
) -> Result<(&'c Case, &'c rayon::ThreadPool, usize), String> {
    let [threads, iters] = parse::<2>(words.get(..2).ok_or("THREADS ITERS CASE")?)?;
    let spec = Spec::parse(&words[2..])?;
    let case = match cases.entry(spec) {
        std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
        std::collections::hash_map::Entry::Vacant(e) => {
            let case = make_case(e.key())?;
            e.insert(case)
        }
    };
    Ok((case, pool(threads, pools)?, iters))
}

/// `cpu THREADS ITERS CASE`: CPU and wall milliseconds per call.
fn cpu(
    words: &[&str],
    cases: &mut HashMap<Spec, Case>,
    pools: &mut HashMap<usize, rayon::ThreadPool>,
) -> Result<String, String> {
    let (case, pool, iters) = case_and_pool(words, cases, pools)?;
    let cpu_before = pool_cpu_seconds(pool);
    let start = Instant::now();
    pool.install(|| (0..iters).try_for_each(|_| forward_once(case)))?;
    let wall = start.elapsed().as_secs_f64();
    let cpu = pool_cpu_seconds(pool) - cpu_before;
    let per_call = |s: f64| s * 1e3 / iters.max(1) as f64;
    Ok(format!(
        "cpu_ms={:.4} wall_ms={:.4}",
        per_call(cpu),
        per_call(wall)
    ))
}

fn run(
    words: &[&str],
    cases: &mut HashMap<Spec, Case>,
    pools: &mut HashMap<usize, rayon::ThreadPool>,
) -> Result<String, String> {
    let (case, pool, iters) = case_and_pool(words, cases, pools)?;
    let times = pool.install(|| {
        let mut times = Vec::with_capacity(iters);
        for _ in 0..iters {
            let start = Instant::now();
            forward_once(case)?;
            times.push(start.elapsed().as_secs_f64() * 1e3);
        }
        Ok::<_, String>(times)
    })?;
    Ok(times
        .iter()
        .map(|x| format!("{x:.4}"))
        .collect::<Vec<_>>()
        .join(" "))
}

/// `linear THREADS ITERS ROWS IN OUT`: times one projection GEMM with bias (packed once, then
/// one warm-up call).
fn linear(words: &[&str], pools: &mut HashMap<usize, rayon::ThreadPool>) -> Result<String, String> {
    use mha_runtime::fast::bench_support::ProjectionBench;
    let [threads, iters, rows, in_dim, out_dim] = parse::<5>(words)?;
    let pool = pool(threads, pools)?;
    let mut bench = ProjectionBench::new(rows, in_dim, out_dim);
    pool.install(|| bench.run());
    let cpu_before = pool_cpu_seconds(pool);
    let times: Vec<f64> = pool.install(|| {
        (0..iters)
            .map(|_| {
                let start = Instant::now();
                bench.run();
                start.elapsed().as_secs_f64() * 1e3
            })
            .collect()
    });
    let cpu = pool_cpu_seconds(pool) - cpu_before;
    let wall: f64 = times.iter().sum::<f64>() * 1e-3;
    Ok(format!(
        "cpu_s={cpu:.6} wall_s={wall:.6} {}",
        times
            .iter()
            .map(|x| format!("{x:.4}"))
            .collect::<Vec<_>>()
            .join(" ")
    ))
}

/// CPU time the pool's threads have run, in seconds (0 where it cannot be read): unlike wall
/// time, it does not count time other processes took the cores.
fn pool_cpu_seconds(pool: &rayon::ThreadPool) -> f64 {
    pool.broadcast(|_| thread_cpu_seconds()).iter().sum()
}

/// This thread's CPU time: `clock_gettime(CLOCK_THREAD_CPUTIME_ID)` (nanoseconds; Linux's
/// `/proc/thread-self/schedstat` counts in scheduler ticks on some kernels, too coarse for a
/// call of a few milliseconds).
#[cfg(all(target_os = "linux", target_pointer_width = "64"))]
fn thread_cpu_seconds() -> f64 {
    #[repr(C)]
    struct Timespec {
        tv_sec: i64,
        tv_nsec: i64,
    }
    extern "C" {
        fn clock_gettime(clock: i32, tp: *mut Timespec) -> i32;
    }
    /// Linux's `CLOCK_THREAD_CPUTIME_ID`.
    const CLOCK_THREAD_CPUTIME_ID: i32 = 3;
    let mut t = Timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `clock_gettime` from the C library writes one `struct timespec` (two 64-bit
    // fields on 64-bit Linux) through the valid pointer.
    let rc = unsafe { clock_gettime(CLOCK_THREAD_CPUTIME_ID, &mut t) };
    if rc == 0 {
        t.tv_sec as f64 + t.tv_nsec as f64 * 1e-9
    } else {
        0.0
    }
}

#[cfg(not(all(target_os = "linux", target_pointer_width = "64")))]
fn thread_cpu_seconds() -> f64 {
    0.0
}

fn serve() -> Result<(), String> {
    let mut cases: HashMap<Spec, Case> = HashMap::new();
    let mut pools: HashMap<usize, rayon::ThreadPool> = HashMap::new();
    let stdin = std::io::stdin();
    let mut stdout = std::io::stdout();
    for line in stdin.lock().lines() {
        let line = line.map_err(|e| e.to_string())?;
        let words: Vec<&str> = line.split_whitespace().collect();
        let reply = match words.as_slice() {
            ["quit"] => break,
            ["run", rest @ ..] => run(rest, &mut cases, &mut pools),
            ["cpu", rest @ ..] => cpu(rest, &mut cases, &mut pools),
            ["reset"] => {
                mha_runtime::fast::reset_phase_times();
                Ok(String::new())
            }
            ["phases"] => Ok(mha_runtime::fast::phase_times()
                .iter()
                .map(|(p, t)| format!("{}={:.4}", p.name(), t.as_secs_f64() * 1e3))
                .collect::<Vec<_>>()
                .join(" ")),
            ["linear", rest @ ..] => linear(rest, &mut pools),
            ["peak", threads] => parse::<1>(&[threads]).and_then(|[threads]| {
                let pool = pool(threads, &mut pools)?;
                let cpu_before = pool_cpu_seconds(pool);
                let (wall_rate, flops) = fma_peak_gflops(pool);
                let cpu = pool_cpu_seconds(pool) - cpu_before;
                Ok(format!(
                    "{wall_rate:.1} {:.1}",
                    flops / cpu.max(1e-9) / 1e9 * threads as f64
                ))
            }),
            _ => Err(format!("unknown command `{line}`")),
        };
        let text = match reply {
            Ok(t) => format!("ok {t}"),
            Err(e) => format!("error {e}"),
        };
        writeln!(stdout, "{}", text.trim_end()).map_err(|e| e.to_string())?;
        stdout.flush().map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// Peak resident set size of this process in MB (Linux `VmHWM`).
fn peak_rss_mb() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

/// Best of several runs of an FMA-bound loop on every thread of `pool`, in GFLOP/s, and the
/// flops done in all.
fn fma_peak_gflops(pool: &rayon::ThreadPool) -> (f64, f64) {
    const ROUNDS: u64 = 20_000_000;
    let mut best = 0.0f64;
    let mut total = 0.0;
    for _ in 0..5 {
        let start = Instant::now();
        let flops: u64 = pool.broadcast(|_| fma_loop(ROUNDS)).iter().sum();
        let secs = start.elapsed().as_secs_f64();
        best = best.max(flops as f64 / secs / 1e9);
        total += flops as f64;
    }
    (best, total)
}

/// Runs independent FMA chains; returns the flops done.
fn fma_loop(rounds: u64) -> u64 {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx512f") {
            // SAFETY: the CPU supports AVX-512F.
            return unsafe { fma_loop_avx512(rounds) };
        }
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
        {
            // SAFETY: the CPU supports AVX2 and FMA.
            return unsafe { fma_loop_avx2(rounds) };
        }
    }
    let mut acc = [1.0f32; 8];
    for _ in 0..rounds {
        for a in acc.iter_mut() {
            *a = *a * 0.999_999 + 1e-7;
        }
    }
    std::hint::black_box(acc);
    rounds * 16
}

/// # Safety
/// The CPU must support AVX-512F.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn fma_loop_avx512(rounds: u64) -> u64 {
    use std::arch::x86_64::*;
    let m = _mm512_set1_ps(0.999_999);
    let c = _mm512_set1_ps(1e-7);
    let mut acc = [_mm512_set1_ps(1.0); 12];
    for _ in 0..rounds / 12 {
        for a in acc.iter_mut() {
            *a = _mm512_fmadd_ps(*a, m, c);
        }
    }
    std::hint::black_box(acc);
    (rounds / 12) * 12 * 32
}

/// # Safety
/// The CPU must support AVX2 and FMA.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn fma_loop_avx2(rounds: u64) -> u64 {
    use std::arch::x86_64::*;
    let m = _mm256_set1_ps(0.999_999);
    let c = _mm256_set1_ps(1e-7);
    let mut acc = [_mm256_set1_ps(1.0); 12];
    for _ in 0..rounds / 12 {
        for a in acc.iter_mut() {
            *a = _mm256_fmadd_ps(*a, m, c);
        }
    }
    std::hint::black_box(acc);
    (rounds / 12) * 12 * 16
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let words: Vec<&str> = args.iter().map(String::as_str).collect();
    let result = match words.as_slice() {
        ["serve"] => serve(),
        ["rss", rest @ ..] => parse::<4>(rest).and_then(|[b, l, e, h]| {
            let spec = Spec::parse(&[
                &format!("b={b}"),
                &format!("l={l}"),
                &format!("e={e}"),
                &format!("h={h}"),
            ])?;
            forward_once(&make_case(&spec)?)?;
            let rss = peak_rss_mb().ok_or("no /proc/self/status")?;
            println!("peak_rss_mb {rss:.1}");
            Ok(())
        }),
        _ => Err("usage: bench_attention serve | rss B L E H".to_string()),
    };
    if let Err(e) = result {
        eprintln!("bench_attention: {e}");
        std::process::exit(2);
    }
}
