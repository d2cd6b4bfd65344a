//! `#[attention_layer]` as users meet it: layers that compile and work, and every mistake the
//! macro reports, pinned with rustc's output (`.stderr` beside each case).

use std::io::Write;

#[test]
fn ui() {
    // Straight to the terminal (libtest captures `eprintln!`): trybuild first builds `mha` and its
    // dependencies in its own target folder, which from clean takes minutes and prints nothing.
    let _ = writeln!(
        std::io::stderr(),
        "macro_ui: trybuild builds `mha` and its dependencies in target/tests/trybuild first \
         (minutes from clean, seconds after), then compiles each case under tests/ui/"
    );
    let cases = trybuild::TestCases::new();
    cases.pass("tests/ui/pass/*.rs");
    cases.compile_fail("tests/ui/fail/*.rs");
}
