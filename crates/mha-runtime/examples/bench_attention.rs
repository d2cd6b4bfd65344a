//! Benchmark worker for `scripts/bench_vs_torch.py`: times `MultiheadAttention::forward` on
//! request, measures the machine's FMA peak and a forward call's peak RSS.
//!
//! ```text
//! cargo run --release -p mha-runtime --example bench_attention -- serve
//!     reads lines `run B L E H MODE THREADS ITERS` (MODE: none | avg | causal | perhead),
//!     answers each with `ok T1 T2 ...` (milliseconds per call), `peak THREADS` with
//!     `ok GFLOPS`, and `quit`.
//! cargo run --release -p mha-runtime --example bench_attention -- rss B L E H
//!     one need_weights=False forward; prints `peak_rss_mb X`.
//! ```
//! Inputs are batch-first `(B, L, E)`, self-attention, eval mode.

use std::collections::HashMap;
use std::io::{BufRead, Write};
use std::time::Instant;

use mha_runtime::{
    generate_square_subsequent_mask, ForwardOptions, Mask, MultiheadAttention,
    MultiheadAttentionConfig,
};
use ndarray::{Array2, ArrayD, IxDyn};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

type Shape = (usize, usize, usize, usize);

struct Case {
    layer: MultiheadAttention,
    x: ArrayD<f32>,
    /// Built on first use: `L × L` floats.
    causal_mask: std::sync::OnceLock<Array2<f32>>,
}

fn make_case((b, l, e, h): Shape) -> Result<Case, String> {
    let config = MultiheadAttentionConfig::new(e, h).with_batch_first(true);
    let layer = MultiheadAttention::random(config, 0).map_err(|err| err.to_string())?;
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    let x = ArrayD::from_shape_simple_fn(IxDyn(&[b, l, e]), || rng.random::<f32>() * 2.0 - 1.0);
    Ok(Case {
        layer,
        x,
        causal_mask: std::sync::OnceLock::new(),
    })
}

fn forward_once(case: &Case, mode: &str) -> Result<(), String> {
    let options = match mode {
        "none" => ForwardOptions::default().with_need_weights(false),
        "avg" => ForwardOptions::default(),
        "perhead" => ForwardOptions::default().with_average_attn_weights(false),
        "causal" => ForwardOptions::default()
            .with_need_weights(false)
            .with_attn_mask(Mask::Float(
                case.causal_mask
                    .get_or_init(|| generate_square_subsequent_mask(case.x.shape()[1]))
                    .view()
                    .into_dyn(),
            ))
            .with_is_causal(true),
        other => return Err(format!("unknown mode `{other}`")),
    };
    let x = case.x.view();
    let out = case
        .layer
        .forward(x.clone(), x.clone(), x, &options)
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

fn serve() -> Result<(), String> {
    let mut cases: HashMap<Shape, Case> = HashMap::new();
    let mut pools: HashMap<usize, rayon::ThreadPool> = HashMap::new();
    let stdin = std::io::stdin();
    let mut stdout = std::io::stdout();
    for line in stdin.lock().lines() {
        let line = line.map_err(|e| e.to_string())?;
        let words: Vec<&str> = line.split_whitespace().collect();
        let reply = match words.as_slice() {
            ["quit"] => break,
            ["run", rest @ ..] if rest.len() == 7 => (|| {
                let [b, l, e, h] = parse::<4>(&rest[..4])?;
                let mode = rest[4];
                let [threads, iters] = parse::<2>(&rest[5..])?;
                let key = (b, l, e, h);
                let case = match cases.entry(key) {
                    std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
                    std::collections::hash_map::Entry::Vacant(e) => e.insert(make_case(key)?),
                };
                let pool = pool(threads, &mut pools)?;
                pool.install(|| {
                    let mut times = Vec::with_capacity(iters);
                    for _ in 0..iters {
                        let start = Instant::now();
                        forward_once(case, mode)?;
                        times.push(start.elapsed().as_secs_f64() * 1e3);
                    }
                    Ok::<_, String>(times)
                })
                .map(|t| {
                    t.iter()
                        .map(|x| format!("{x:.4}"))
                        .collect::<Vec<_>>()
                        .join(" ")
                })
            })(),
            ["peak", threads] => (|| {
                let [threads] = parse::<1>(&[threads])?;
                let pool = pool(threads, &mut pools)?;
                Ok(format!("{:.1}", fma_peak_gflops(pool, threads)))
            })(),
            _ => Err(format!("unknown command `{line}`")),
        };
        let text = match reply {
            Ok(t) => format!("ok {t}"),
            Err(e) => format!("error {e}"),
        };
        writeln!(stdout, "{text}").map_err(|e| e.to_string())?;
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

/// Best of several runs of an FMA-bound loop on `threads` threads, in GFLOP/s.
fn fma_peak_gflops(pool: &rayon::ThreadPool, threads: usize) -> f64 {
    const ROUNDS: u64 = 20_000_000;
    let mut best = 0.0f64;
    for _ in 0..5 {
        let start = Instant::now();
        let flops: u64 = pool.broadcast(|_| fma_loop(ROUNDS)).iter().sum();
        let secs = start.elapsed().as_secs_f64();
        best = best.max(flops as f64 / secs / 1e9);
    }
    let _ = threads;
    best
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
            let case = make_case((b, l, e, h))?;
            forward_once(&case, "none")?;
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
