//! Benchmark worker for `scaled_dot_product_attention` (for a driver that alternates it with
//! torch's `F.scaled_dot_product_attention` in one run, as `scripts/bench_vs_torch.py` does for
//! the layer).
//!
//! ```text
//! cargo run --release -p mha-runtime --example bench_sdpa -- serve
//!     reads lines `run N HQ HKV L S E CAUSAL THREADS ITERS` (CAUSAL: 0 | 1), answers each with
//!     `ok T1 T2 ...` (milliseconds per call), and `quit`.
//! ```
//! Inputs are `(N, HQ, L, E)` queries and `(N, HKV, S, E)` keys and values (`enable_gqa` when
//! `HKV != HQ`), uniform in `[-1, 1)`.

use std::io::{BufRead, Write};
use std::time::Instant;

use mha_runtime::{scaled_dot_product_attention, SdpaOptions};
use ndarray::{ArrayD, IxDyn};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

fn random(shape: &[usize], seed: u64) -> ArrayD<f32> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    ArrayD::from_shape_simple_fn(IxDyn(shape), || rng.random::<f32>() * 2.0 - 1.0)
}

fn run(args: &[usize]) -> Result<Vec<f64>, String> {
    let &[n, hq, hkv, l, s, e, causal, threads, iters] = args else {
        return Err("expected: run N HQ HKV L S E CAUSAL THREADS ITERS".into());
    };
    let q = random(&[n, hq, l, e], 1);
    let k = random(&[n, hkv, s, e], 2);
    let v = random(&[n, hkv, s, e], 3);
    let options = SdpaOptions::default()
        .with_is_causal(causal != 0)
        .with_enable_gqa(hkv != hq);
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .map_err(|e| e.to_string())?;
    pool.install(|| {
        let call = || scaled_dot_product_attention(q.view(), k.view(), v.view(), &options);
        call().map_err(|e| e.to_string())?; // warm-up
        (0..iters)
            .map(|_| {
                let start = Instant::now();
                let out = call().map_err(|e| e.to_string())?;
                std::hint::black_box(out);
                Ok(start.elapsed().as_secs_f64() * 1e3)
            })
            .collect()
    })
}

fn main() {
    if std::env::args().nth(1).as_deref() != Some("serve") {
        eprintln!("usage: bench_sdpa serve");
        std::process::exit(2);
    }
    let stdout = std::io::stdout();
    for line in std::io::stdin().lock().lines() {
        let Ok(line) = line else { break };
        let mut words = line.split_whitespace();
        let reply = match words.next() {
            Some("quit") | None => break,
            Some("run") => {
                let args: Result<Vec<usize>, _> = words.map(str::parse).collect();
                match args.map_err(|e| e.to_string()).and_then(|a| run(&a)) {
                    Ok(times) => {
                        let times: Vec<String> = times.iter().map(|t| format!("{t:.4}")).collect();
                        format!("ok {}", times.join(" "))
                    }
                    Err(e) => format!("error {e}"),
                }
            }
            Some(other) => format!("error unknown command {other:?}"),
        };
        let mut out = stdout.lock();
        writeln!(out, "{reply}").and_then(|()| out.flush()).ok();
    }
}
