//! Runs every case of parity fixture directories (`mha-golden-fixtures/1` or
//! `sdpa-golden-fixtures/1`, told apart by `index.json`'s `format`) through `mha-runtime` on every
//! dispatch path and compares with PyTorch's outputs.
//!
//!     cargo run --release -p mha-parity -- [--reference] DIR [DIR ...]
//!
//! Paths: the exact reference path and the fast kernels of every instruction-set level this CPU
//! runs; `--reference` checks the reference path only. Prints one line per case with the max abs
//! error of the output (and of MultiheadAttention's weights) over the paths, then
//! `N passed, M failed` last; exits with status 1 when any case fails (2 on unreadable input).

use std::process::ExitCode;

use mha_parity::{detect_format, run_dir_on, DispatchPath, Tolerance};

fn main() -> ExitCode {
    let mut paths = DispatchPath::all();
    let mut dirs: Vec<String> = Vec::new();
    for arg in std::env::args().skip(1) {
        if arg == "--reference" {
            paths = vec![DispatchPath::Reference];
        } else {
            dirs.push(arg);
        }
    }
    if dirs.is_empty() {
        eprintln!("usage: mha-parity [--reference] DIR [DIR ...]");
        return ExitCode::from(2);
    }
    let tol = Tolerance::default();
    let path_names: Vec<String> = paths.iter().map(ToString::to_string).collect();
    let (mut passed, mut failed) = (0usize, 0usize);
    for dir in &dirs {
        let run = detect_format(dir).and_then(|f| Ok((f, run_dir_on(dir, tol, &paths)?)));
        let (format, reports) = match run {
            Ok(r) => r,
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::from(2);
            }
        };
        let format = format.name();
        println!(
            "{dir}: {} cases ({format}) on {} (atol {:e}, rtol {:e})",
            reports.len(),
            path_names.join(", "),
            tol.atol,
            tol.rtol
        );
        for r in &reports {
            let fmt = |e: Option<f32>| e.map_or_else(|| "-".to_string(), |e| format!("{e:.3e}"));
            println!(
                "  {:<4} {:<60} output {:>10}  weights {:>10}",
                if r.passed() { "ok" } else { "FAIL" },
                r.name,
                fmt(r.output_max_abs_err),
                fmt(r.weights_max_abs_err)
            );
            for f in &r.failures {
                println!("         {f}");
            }
            if r.passed() {
                passed += 1;
            } else {
                failed += 1;
            }
        }
    }
    println!("{passed} passed, {failed} failed");
    if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
