//! `#[attention_layer]` as users meet it: layers that compile and work, and every mistake the
//! macro reports, pinned with rustc's output (`.stderr` beside each case).

#[test]
fn ui() {
    let cases = trybuild::TestCases::new();
    cases.pass("tests/ui/pass/*.rs");
    cases.compile_fail("tests/ui/fail/*.rs");
}
