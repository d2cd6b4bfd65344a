//! Runs every case of parity fixture directories (format `mha-golden-fixtures/1`) through
//! `MultiheadAttention` and compares with PyTorch's outputs.
//!
//!     cargo run --release -p mha-runtime --example parity -- DIR [DIR ...]
//!
//! Prints one line per case with the max abs error of the output and the weights, then
//! `N passed, M failed`; exits with status 1 when any case fails (2 on unreadable input).

use std::process::ExitCode;

use mha_runtime::parity::{run_dir, Tolerance};

fn main() -> ExitCode {
    let dirs: Vec<String> = std::env::args().skip(1).collect();
    if dirs.is_empty() {
        eprintln!("usage: parity DIR [DIR ...]");
        return ExitCode::from(2);
    }
    let tol = Tolerance::default();
    let (mut passed, mut failed) = (0usize, 0usize);
    for dir in &dirs {
        let reports = match run_dir(dir, tol) {
            Ok(r) => r,
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::from(2);
            }
        };
        println!(
            "{dir}: {} cases (atol {:e}, rtol {:e})",
            reports.len(),
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
