//! Which instruction set the fast kernels run on: detected at run time, overridable for tests
//! and benchmarks.
//!
//! [`Isa`] names a level; the kernels run on a [`Level`], the capability token of a level,
//! which only the token types' detection can produce (see `simd`).

use std::sync::atomic::{AtomicU8, Ordering};

use super::simd::Portable;
#[cfg(target_arch = "x86_64")]
use super::simd::{Avx2, Avx512};

/// An instruction-set level the fast kernels are compiled for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Isa {
    /// Plain Rust on 8-lane arrays (the compiler's baseline vectorisation); runs everywhere.
    Portable,
    /// x86-64 AVX2 with FMA, 8 lanes.
    Avx2Fma,
    /// x86-64 AVX-512F, 16 lanes.
    Avx512,
}

impl Isa {
    /// Every level, most portable first.
    pub const ALL: [Isa; 3] = [Isa::Portable, Isa::Avx2Fma, Isa::Avx512];

    /// The name used by the `MHA_FAST_ISA` environment variable.
    pub fn name(self) -> &'static str {
        match self {
            Isa::Portable => "portable",
            Isa::Avx2Fma => "avx2",
            Isa::Avx512 => "avx512",
        }
    }

    /// Parses a name of [`Isa::name`].
    pub fn from_name(name: &str) -> Option<Isa> {
        Isa::ALL
            .into_iter()
            .find(|isa| isa.name() == name.trim().to_ascii_lowercase())
    }

    /// Whether this CPU can run kernels of this level.
    pub fn is_supported(self) -> bool {
        self.token().is_some()
    }

    /// The capability token of this level, when this CPU runs it (the one place the CPU is
    /// asked).
    pub(crate) fn token(self) -> Option<Level> {
        match self {
            Isa::Portable => Some(Level::Portable(Portable)),
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2Fma => Avx2::try_new().map(Level::Avx2),
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 => Avx512::try_new().map(Level::Avx512),
            #[cfg(not(target_arch = "x86_64"))]
            _ => None,
        }
    }

    /// The levels this CPU can run, most portable first.
    pub fn supported() -> Vec<Isa> {
        Isa::ALL
            .into_iter()
            .filter(|isa| isa.is_supported())
            .collect()
    }

    /// The best level this CPU can run.
    pub fn detected() -> Isa {
        Isa::ALL
            .into_iter()
            .rev()
            .find(|isa| isa.is_supported())
            .unwrap_or(Isa::Portable)
    }

    fn code(self) -> u8 {
        match self {
            Isa::Portable => 1,
            Isa::Avx2Fma => 2,
            Isa::Avx512 => 3,
        }
    }

    fn from_code(code: u8) -> Option<Isa> {
        Isa::ALL.into_iter().find(|isa| isa.code() == code)
    }
}

impl std::fmt::Display for Isa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// The capability token of a level this CPU runs: what the kernels are dispatched on.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Level {
    /// Portable Rust.
    Portable(Portable),
    /// AVX2 + FMA.
    #[cfg(target_arch = "x86_64")]
    Avx2(Avx2),
    /// AVX-512F.
    #[cfg(target_arch = "x86_64")]
    Avx512(Avx512),
}

impl Level {
    /// The token of `isa`, or the portable one when this CPU cannot run `isa`.
    pub(crate) fn or_portable(isa: Isa) -> Level {
        isa.token().unwrap_or(Level::Portable(Portable))
    }
}

/// The selection: 0 = not decided yet, else an [`Isa`] code.
static SELECTED: AtomicU8 = AtomicU8::new(0);

/// The level the fast kernels use: the one set by [`force_isa`], else the `MHA_FAST_ISA`
/// environment variable (`portable`, `avx2`, `avx512`; ignored when unknown or not supported by
/// this CPU), else the best level the CPU supports.
pub fn selected_isa() -> Isa {
    if let Some(isa) = Isa::from_code(SELECTED.load(Ordering::Relaxed)) {
        return isa;
    }
    let from_env = std::env::var("MHA_FAST_ISA")
        .ok()
        .and_then(|name| Isa::from_name(&name))
        .filter(|isa| isa.is_supported());
    let isa = from_env.unwrap_or_else(Isa::detected);
    SELECTED.store(isa.code(), Ordering::Relaxed);
    isa
}

/// Forces the level every later fast-path call uses (process-wide); `None` goes back to the
/// environment variable / detection. Fails, changing nothing, when this CPU cannot run `isa`.
///
/// ```
/// use mha_runtime::fast::{force_isa, selected_isa, Isa};
///
/// force_isa(Some(Isa::Portable))?;
/// assert_eq!(selected_isa(), Isa::Portable);
/// force_isa(None)?;
/// # Ok::<(), mha_runtime::fast::UnsupportedIsa>(())
/// ```
pub fn force_isa(isa: Option<Isa>) -> Result<(), UnsupportedIsa> {
    match isa {
        Some(isa) if !isa.is_supported() => Err(UnsupportedIsa(isa)),
        Some(isa) => {
            SELECTED.store(isa.code(), Ordering::Relaxed);
            Ok(())
        }
        None => {
            SELECTED.store(0, Ordering::Relaxed);
            Ok(())
        }
    }
}

/// [`force_isa`] was asked for a level this CPU cannot run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UnsupportedIsa(pub Isa);

impl std::fmt::Display for UnsupportedIsa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "this CPU cannot run the `{}` kernels", self.0)
    }
}

impl std::error::Error for UnsupportedIsa {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for isa in Isa::ALL {
            assert_eq!(Isa::from_name(isa.name()), Some(isa));
        }
        assert_eq!(Isa::from_name(" AVX512 "), Some(Isa::Avx512));
        assert_eq!(Isa::from_name("sse"), None);
    }

    #[test]
    fn detected_is_supported() {
        assert!(Isa::detected().is_supported());
        assert!(Isa::supported().contains(&Isa::Portable));
    }
}
