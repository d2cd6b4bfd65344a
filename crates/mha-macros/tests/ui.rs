//! `#[attention_layer]` mistakes as rustc reports them in a user's crate, pinned with its output
//! (`.stderr` beside each case): only what a compiler run proves. That is rustc's rendering of
//! the macro's spans (several errors at their arguments at once; a missing argument at the whole
//! attribute), the stub beside an error that keeps the user's code type-checking (one mistake,
//! one message), and the compiler's hint for a method only the dynamic layer has.
//!
//! Every other argument check, with the text each error points at, is tested without a compiler
//! in `mha-macros-core`'s `tests/diagnostics.rs`; layers that compile and work are tests of the
//! workspace's `tests/macro_parity.rs`. With no pass case here trybuild only type-checks (`cargo
//! check`): it generates no code for `mha`'s dependencies in its own target folder. The test
//! lives in this crate, whose only dev-dependencies are `mha` and `trybuild`, because trybuild's
//! project takes in every dev-dependency of the package under test (the facade's would add
//! criterion, insta, mha-parity).

use std::io::Write;

#[test]
fn ui() {
    // Straight to the terminal (libtest captures `eprintln!`): trybuild first checks `mha` and
    // its dependencies in its own target folder, which from clean takes a while and prints nothing.
    let _ = writeln!(
        std::io::stderr(),
        "macro_ui: trybuild checks `mha` and its dependencies in target/tests/trybuild first \
         (about a minute from clean, seconds after), then each case under tests/ui/fail/"
    );
    // trybuild's project has no `[profile]` of the workspace: without this its build scripts and
    // proc macros (and their dependencies: tera, syn, ...) are built with debug info.
    std::env::set_var("CARGO_PROFILE_DEV_DEBUG", "false");
    std::env::set_var("CARGO_PROFILE_DEV_BUILD_OVERRIDE_DEBUG", "false");
    trybuild::TestCases::new().compile_fail("tests/ui/fail/*.rs");
}
