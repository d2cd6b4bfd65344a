//! Runs every case of parity fixture directories (format `mha-golden-fixtures/1`) through
//! `MultiheadAttention` and compares with PyTorch's outputs.
//!
//!     cargo run --release -p mha-runtime --example parity -- [--reference] DIR [DIR ...]
//!
//! `--reference` checks the exact reference path instead of `forward` (the fast kernels). Prints one line per case with the max abs error of the output and the weights, then
//! `N passed, M failed`; exits with status 1 when any case fails (2 on unreadable input).

use std::process::ExitCode;

use mha_runtime::parity::{run_dir_with, ForwardPath, Tolerance};

fn main() -> ExitCode {
    let mut path = ForwardPath::Default;
    let mut dirs: Vec<String> = Vec::new();
    for arg in std::env::args().skip(1) {
        if arg == "--reference" {
            path = ForwardPath::Reference;
        } else {
            dirs.push(arg);
        }
    }
    if dirs.is_empty() {
        eprintln!("usage: parity [--reference] DIR [DIR ...]");
        return ExitCode::from(2);
    }
    let tol = Tolerance::default();
    let (mut passed, mut failed) = (0usize, 0usize);
    for dir in &dirs {
        let reports = match run_dir_with(dir, tol, path) {
            Ok(r) => r,
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::from(2);
            }
        };
        println!(
            "{dir}: {} cases, {} path (atol {:e}, rtol {:e})",
            reports.len(),
            if path == ForwardPath::Reference {
                "reference"
            } else {
                "default"
            },
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
