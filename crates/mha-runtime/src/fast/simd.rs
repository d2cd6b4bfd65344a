//! A minimal SIMD vocabulary the kernels are written in once and compiled per instruction set,
//! with capability tokens in the manner of `pulp`.
//!
//! Each instruction set is a zero-sized token type implementing [`Simd`]. [`Portable`] exists
//! everywhere; [`Avx2`] and [`Avx512`] have private fields and one constructor, `try_new`, which
//! runs the CPU's feature detection, so a token is proof that the CPU runs its instructions and
//! the token's safe methods may use them. Kernels are generic over `S: Simd` and take the token
//! as a value, so no safe function can run AVX2 or AVX-512 code on a CPU without it.
//!
//! Every method is `#[inline(always)]`: [`Simd::vectorize`] calls a [`WithSimd`] operation
//! inside a function compiled with the token's target features, where the kernels (also
//! `#[inline(always)]`) and these methods inline and compile to the instruction set's
//! instructions.

/// An operation generic over the instruction set, run by [`Simd::vectorize`].
pub(crate) trait WithSimd {
    /// What the operation returns.
    type Output;
    /// Runs the operation with `simd`'s instructions (implementations are `#[inline(always)]`).
    fn with_simd<S: Simd>(self, simd: S) -> Self::Output;
}

/// Lane-wise f32 operations on a vector of `LANES` floats, implemented by the capability tokens.
pub(crate) trait Simd: Copy + Send + Sync + 'static {
    /// Floats per vector.
    const LANES: usize;
    /// The vector type.
    type V: Copy;

    /// Runs `op` inside a function compiled with this instruction set's target features.
    fn vectorize<Op: WithSimd>(self, op: Op) -> Op::Output;
    /// All lanes `x`.
    fn splat(self, x: f32) -> Self::V;
    /// Loads `LANES` floats (no alignment needed).
    ///
    /// # Safety
    /// `p..p + LANES` must be readable.
    unsafe fn load(self, p: *const f32) -> Self::V;
    /// Stores `LANES` floats (no alignment needed).
    ///
    /// # Safety
    /// `p..p + LANES` must be writable.
    unsafe fn store(self, p: *mut f32, v: Self::V);
    /// `a * b + c` (fused where the instruction set has FMA).
    fn mul_add(self, a: Self::V, b: Self::V, c: Self::V) -> Self::V;
    /// `a * b`.
    fn mul(self, a: Self::V, b: Self::V) -> Self::V;
    /// `a + b`.
    fn add(self, a: Self::V, b: Self::V) -> Self::V;
    /// `a - b`.
    fn sub(self, a: Self::V, b: Self::V) -> Self::V;
    /// Lane-wise `if a > b { a } else { b }`: `b` when either is NaN (x86's `maxps`), so
    /// `max(x, acc)` ignores a NaN `x` and keeps a NaN-free accumulator NaN-free.
    fn max(self, a: Self::V, b: Self::V) -> Self::V;
    /// `e^x`, about 1 ulp for `x <= 0`; exactly 0 below -87.3 (so `exp(-inf) = 0`), NaN for NaN.
    fn exp(self, x: Self::V) -> Self::V;
    /// Largest lane (of NaN-free lanes).
    fn reduce_max(self, v: Self::V) -> f32;
    /// Sum of the lanes.
    fn reduce_add(self, v: Self::V) -> f32;
    /// A `LANES × LANES` block transposed and scaled into `dst`: `dst[c * ld + r] = rows[r][c] *
    /// scale` ([`Write::Overwrite`]) or `dst[c * ld + r] += rows[r][c] * scale`
    /// ([`Write::Accumulate`]) for `r, c < LANES`, each a plain multiply (exact for a scale of
    /// 1) and add. The x86 tokens shuffle in registers; the default is the scalar loop.
    ///
    /// # Safety
    /// `rows` holds `LANES` pointers to `LANES` readable floats each, and `dst + c * ld + r` is
    /// readable and writable for every `r, c < LANES`.
    #[inline(always)]
    unsafe fn transpose_block(
        self,
        rows: &[*const f32],
        scale: f32,
        dst: *mut f32,
        ld: usize,
        write: Write,
    ) {
        for (r, &row) in rows[..Self::LANES].iter().enumerate() {
            for c in 0..Self::LANES {
                // SAFETY: the caller's guarantee for `r, c < LANES`.
                unsafe { write.apply(&mut *dst.add(c * ld + r), *row.add(c) * scale) };
            }
        }
    }
}

/// How [`Simd::transpose_block`] meets its destination.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Write {
    /// The block replaces what `dst` held.
    Overwrite,
    /// The block is added to what `dst` held.
    Accumulate,
}

impl Write {
    /// Writes `x` to `*dst` this way.
    #[inline(always)]
    pub(crate) fn apply(self, dst: &mut f32, x: f32) {
        match self {
            Write::Overwrite => *dst = x,
            Write::Accumulate => *dst += x,
        }
    }
}

// expf as in Cephes: e^x = 2^n * y(r), x = n ln2 + r (ln2 in two parts), |r| <= ln2 / 2, with
// y(r) = 1 + r (1 + r q(r)) and q a degree-4 fit of (e^r - 1 - r) / r^2 (relative error of y
// 3.1e-9, weighted least squares on Chebyshev nodes): six FMAs where Cephes' degree-7 form
// `1 + r + r^2 p(r)` takes eight operations, 0.8 ulp at most over [-87.3, 0] in f32.
const EXP_LO: f32 = -87.336_55;
const EXP_HI: f32 = 88.376_26;
const LOG2E: f32 = std::f32::consts::LOG2_E;
const LN2_HI: f32 = 0.693_359_4;
const LN2_LO: f32 = -2.121_944_4e-4;
const Q0: f32 = 0.499_999_94;
const Q1: f32 = 0.166_665_21;
const Q2: f32 = 0.041_668_39;
const Q3: f32 = 0.008_368_71;
const Q4: f32 = 0.001_381_461_5;

/// Scalar version of [`Simd::exp`]'s polynomial.
#[inline(always)]
pub(crate) fn exp_scalar(x: f32) -> f32 {
    if x < EXP_LO || x.is_nan() {
        return if x.is_nan() { x } else { 0.0 };
    }
    let x = x.min(EXP_HI);
    let n = (x * LOG2E).round();
    let r = x - n * LN2_HI - n * LN2_LO;
    let q = (((Q4 * r + Q3) * r + Q2) * r + Q1) * r + Q0;
    let y = (q * r + 1.0) * r + 1.0;
    // 2^n for n in [-126, 127].
    let bits = ((n as i32 + 127) as u32) << 23;
    y * f32::from_bits(bits)
}

/// Eight f32 lanes in plain Rust: the portable fallback, runs everywhere.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Portable;

impl Simd for Portable {
    const LANES: usize = 8;
    type V = [f32; 8];

    #[inline(always)]
    fn vectorize<Op: WithSimd>(self, op: Op) -> Op::Output {
        op.with_simd(self)
    }
    #[inline(always)]
    fn splat(self, x: f32) -> Self::V {
        [x; 8]
    }
    #[inline(always)]
    unsafe fn load(self, p: *const f32) -> Self::V {
        // SAFETY: the caller guarantees 8 readable floats.
        unsafe { std::ptr::read_unaligned(p as *const [f32; 8]) }
    }
    #[inline(always)]
    unsafe fn store(self, p: *mut f32, v: Self::V) {
        // SAFETY: the caller guarantees 8 writable floats.
        unsafe { std::ptr::write_unaligned(p as *mut [f32; 8], v) }
    }
    #[inline(always)]
    fn mul_add(self, a: Self::V, b: Self::V, c: Self::V) -> Self::V {
        std::array::from_fn(|i| a[i] * b[i] + c[i])
    }
    #[inline(always)]
    fn mul(self, a: Self::V, b: Self::V) -> Self::V {
        std::array::from_fn(|i| a[i] * b[i])
    }
    #[inline(always)]
    fn add(self, a: Self::V, b: Self::V) -> Self::V {
        std::array::from_fn(|i| a[i] + b[i])
    }
    #[inline(always)]
    fn sub(self, a: Self::V, b: Self::V) -> Self::V {
        std::array::from_fn(|i| a[i] - b[i])
    }
    #[inline(always)]
    fn max(self, a: Self::V, b: Self::V) -> Self::V {
        std::array::from_fn(|i| if a[i] > b[i] { a[i] } else { b[i] })
    }
    #[inline(always)]
    fn exp(self, x: Self::V) -> Self::V {
        std::array::from_fn(|i| exp_scalar(x[i]))
    }
    #[inline(always)]
    fn reduce_max(self, v: Self::V) -> f32 {
        v.into_iter()
            .fold(f32::NEG_INFINITY, |a, b| if a > b { a } else { b })
    }
    #[inline(always)]
    fn reduce_add(self, v: Self::V) -> f32 {
        ((v[0] + v[4]) + (v[1] + v[5])) + ((v[2] + v[6]) + (v[3] + v[7]))
    }
}

#[cfg(target_arch = "x86_64")]
pub(crate) use x86::{Avx2, Avx512};

// The AVX-512 intrinsics are stable since Rust 1.89, the workspace's rust-version.
#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::*;
    use std::arch::x86_64::*;

    /// AVX2 + FMA, 8 lanes: a value proves that the CPU has both.
    #[derive(Clone, Copy, Debug)]
    pub(crate) struct Avx2 {
        _detected: (),
    }

    impl Avx2 {
        /// The token, when this CPU runs AVX2 and FMA.
        pub(crate) fn try_new() -> Option<Self> {
            (is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma"))
                .then_some(Self { _detected: () })
        }
    }

    /// AVX-512F, 16 lanes: a value proves that the CPU has it.
    #[derive(Clone, Copy, Debug)]
    pub(crate) struct Avx512 {
        _detected: (),
    }

    impl Avx512 {
        /// The token, when this CPU runs AVX-512F.
        pub(crate) fn try_new() -> Option<Self> {
            is_x86_feature_detected!("avx512f").then_some(Self { _detected: () })
        }
    }

    /// Runs `op` with AVX2 and FMA enabled.
    ///
    /// # Safety
    /// The CPU must have AVX2 and FMA.
    #[target_feature(enable = "avx2,fma")]
    unsafe fn with_avx2<Op: WithSimd>(simd: Avx2, op: Op) -> Op::Output {
        op.with_simd(simd)
    }

    /// Runs `op` with AVX-512F enabled.
    ///
    /// # Safety
    /// The CPU must have AVX-512F.
    #[target_feature(enable = "avx512f")]
    unsafe fn with_avx512<Op: WithSimd>(simd: Avx512, op: Op) -> Op::Output {
        op.with_simd(simd)
    }

    // In both impls, every intrinsic needs only the features the token (`self`) proves.
    impl Simd for Avx2 {
        const LANES: usize = 8;
        type V = __m256;

        #[inline(always)]
        fn vectorize<Op: WithSimd>(self, op: Op) -> Op::Output {
            // SAFETY: `self` exists only on a CPU with AVX2 and FMA (`Avx2::try_new`).
            unsafe { with_avx2(self, op) }
        }

        #[inline(always)]
        fn splat(self, x: f32) -> __m256 {
            // SAFETY: `self` proves the CPU runs these instructions.
            unsafe { _mm256_set1_ps(x) }
        }
        #[inline(always)]
        unsafe fn load(self, p: *const f32) -> __m256 {
            // SAFETY: the caller guarantees the readable floats; `self` proves the
            // instruction set.
            unsafe { _mm256_loadu_ps(p) }
        }
        #[inline(always)]
        unsafe fn store(self, p: *mut f32, v: __m256) {
            // SAFETY: the caller guarantees the writable floats; `self` proves the
            // instruction set.
            unsafe { _mm256_storeu_ps(p, v) }
        }
        #[inline(always)]
        fn mul_add(self, a: __m256, b: __m256, c: __m256) -> __m256 {
            // SAFETY: `self` proves the CPU runs these instructions.
            unsafe { _mm256_fmadd_ps(a, b, c) }
        }
        #[inline(always)]
        fn mul(self, a: __m256, b: __m256) -> __m256 {
            // SAFETY: `self` proves the CPU runs these instructions.
            unsafe { _mm256_mul_ps(a, b) }
        }
        #[inline(always)]
        fn add(self, a: __m256, b: __m256) -> __m256 {
            // SAFETY: `self` proves the CPU runs these instructions.
            unsafe { _mm256_add_ps(a, b) }
        }
        #[inline(always)]
        fn sub(self, a: __m256, b: __m256) -> __m256 {
            // SAFETY: `self` proves the CPU runs these instructions.
            unsafe { _mm256_sub_ps(a, b) }
        }
        #[inline(always)]
        fn max(self, a: __m256, b: __m256) -> __m256 {
            // SAFETY: `self` proves the CPU runs these instructions.
            unsafe { _mm256_max_ps(a, b) }
        }
        #[inline(always)]
        fn exp(self, x: __m256) -> __m256 {
            // SAFETY: `self` proves the CPU runs these instructions.
            unsafe {
                // NaN lanes: `keep` is true (unordered) and min/max return their second
                // operand, `x`, so NaN flows through the polynomial.
                let keep = _mm256_cmp_ps::<_CMP_NLT_UQ>(x, _mm256_set1_ps(EXP_LO));
                let x = _mm256_min_ps(
                    _mm256_set1_ps(EXP_HI),
                    _mm256_max_ps(_mm256_set1_ps(EXP_LO), x),
                );
                let n = _mm256_round_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(
                    _mm256_mul_ps(x, _mm256_set1_ps(LOG2E)),
                );
                let r = _mm256_fnmadd_ps(n, _mm256_set1_ps(LN2_HI), x);
                let r = _mm256_fnmadd_ps(n, _mm256_set1_ps(LN2_LO), r);
                let mut q = _mm256_set1_ps(Q4);
                q = _mm256_fmadd_ps(q, r, _mm256_set1_ps(Q3));
                q = _mm256_fmadd_ps(q, r, _mm256_set1_ps(Q2));
                q = _mm256_fmadd_ps(q, r, _mm256_set1_ps(Q1));
                q = _mm256_fmadd_ps(q, r, _mm256_set1_ps(Q0));
                let one = _mm256_set1_ps(1.0);
                let y = _mm256_fmadd_ps(_mm256_fmadd_ps(q, r, one), r, one);
                let bits = _mm256_slli_epi32::<23>(_mm256_add_epi32(
                    _mm256_cvtps_epi32(n),
                    _mm256_set1_epi32(127),
                ));
                let y = _mm256_mul_ps(y, _mm256_castsi256_ps(bits));
                _mm256_and_ps(y, keep)
            }
        }
        #[inline(always)]
        fn reduce_max(self, v: __m256) -> f32 {
            // SAFETY: `self` proves the CPU runs these instructions.
            unsafe {
                let m = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
                let m = _mm_max_ps(m, _mm_movehl_ps(m, m));
                let m = _mm_max_ss(m, _mm_shuffle_ps::<0b01>(m, m));
                _mm_cvtss_f32(m)
            }
        }
        #[inline(always)]
        fn reduce_add(self, v: __m256) -> f32 {
            // SAFETY: `self` proves the CPU runs these instructions.
            unsafe {
                let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
                let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
                let s = _mm_add_ss(s, _mm_shuffle_ps::<0b01>(s, s));
                _mm_cvtss_f32(s)
            }
        }
        #[inline(always)]
        unsafe fn transpose_block(
            self,
            rows: &[*const f32],
            scale: f32,
            dst: *mut f32,
            ld: usize,
            write: Write,
        ) {
            // Plain loops over fixed-size arrays, no closures: a closure passed to a generic
            // helper (`std::array::from_fn`) is compiled without this function's target
            // features, and the intrinsics in it become calls.
            // SAFETY: `self` proves the CPU runs these instructions; the loads and stores are
            // the caller's guarantee (8 rows of 8 floats; 8 columns of 8 floats `ld` apart).
            unsafe {
                let s = _mm256_set1_ps(scale);
                let mut a = [_mm256_setzero_ps(); 8];
                for (r, v) in a.iter_mut().enumerate() {
                    *v = _mm256_mul_ps(_mm256_loadu_ps(rows[r]), s);
                }
                // Within each 128-bit half `h`: rows interleaved in pairs, then in fours, so
                // `u[k]` holds column `4h + k` of rows 0..4 and `u[4 + k]` of rows 4..8.
                let mut t = [_mm256_setzero_ps(); 8];
                for i in (0..8).step_by(2) {
                    t[i] = _mm256_unpacklo_ps(a[i], a[i + 1]);
                    t[i + 1] = _mm256_unpackhi_ps(a[i], a[i + 1]);
                }
                let mut u = [_mm256_setzero_ps(); 8];
                for g in 0..2 {
                    for half in 0..2 {
                        let x = _mm256_castps_pd(t[4 * g + half]);
                        let y = _mm256_castps_pd(t[4 * g + half + 2]);
                        u[4 * g + 2 * half] = _mm256_castpd_ps(_mm256_unpacklo_pd(x, y));
                        u[4 * g + 2 * half + 1] = _mm256_castpd_ps(_mm256_unpackhi_pd(x, y));
                    }
                }
                for k in 0..4 {
                    let cols = [
                        (k, _mm256_permute2f128_ps::<0x20>(u[k], u[4 + k])),
                        (4 + k, _mm256_permute2f128_ps::<0x31>(u[k], u[4 + k])),
                    ];
                    for (c, col) in cols {
                        let at = dst.add(c * ld);
                        let col = match write {
                            Write::Overwrite => col,
                            Write::Accumulate => _mm256_add_ps(_mm256_loadu_ps(at), col),
                        };
                        _mm256_storeu_ps(at, col);
                    }
                }
            }
        }
    }

    impl Simd for Avx512 {
        const LANES: usize = 16;
        type V = __m512;

        #[inline(always)]
        fn vectorize<Op: WithSimd>(self, op: Op) -> Op::Output {
            // SAFETY: `self` exists only on a CPU with AVX-512F (`Avx512::try_new`).
            unsafe { with_avx512(self, op) }
        }

        #[inline(always)]
        fn splat(self, x: f32) -> __m512 {
            // SAFETY: `self` proves the CPU runs these instructions.
            unsafe { _mm512_set1_ps(x) }
        }
        #[inline(always)]
        unsafe fn load(self, p: *const f32) -> __m512 {
            // SAFETY: the caller guarantees the readable floats; `self` proves the
            // instruction set.
            unsafe { _mm512_loadu_ps(p) }
        }
        #[inline(always)]
        unsafe fn store(self, p: *mut f32, v: __m512) {
            // SAFETY: the caller guarantees the writable floats; `self` proves the
            // instruction set.
            unsafe { _mm512_storeu_ps(p, v) }
        }
        #[inline(always)]
        fn mul_add(self, a: __m512, b: __m512, c: __m512) -> __m512 {
            // SAFETY: `self` proves the CPU runs these instructions.
            unsafe { _mm512_fmadd_ps(a, b, c) }
        }
        #[inline(always)]
        fn mul(self, a: __m512, b: __m512) -> __m512 {
            // SAFETY: `self` proves the CPU runs these instructions.
            unsafe { _mm512_mul_ps(a, b) }
        }
        #[inline(always)]
        fn add(self, a: __m512, b: __m512) -> __m512 {
            // SAFETY: `self` proves the CPU runs these instructions.
            unsafe { _mm512_add_ps(a, b) }
        }
        #[inline(always)]
        fn sub(self, a: __m512, b: __m512) -> __m512 {
            // SAFETY: `self` proves the CPU runs these instructions.
            unsafe { _mm512_sub_ps(a, b) }
        }
        #[inline(always)]
        fn max(self, a: __m512, b: __m512) -> __m512 {
            // SAFETY: `self` proves the CPU runs these instructions.
            unsafe { _mm512_max_ps(a, b) }
        }
        #[inline(always)]
        fn exp(self, x: __m512) -> __m512 {
            // SAFETY: `self` proves the CPU runs these instructions.
            unsafe {
                // NaN lanes: `keep` is true (unordered) and min returns its second operand,
                // `x`, so NaN flows through the polynomial.
                let keep = _mm512_cmp_ps_mask::<_CMP_NLT_UQ>(x, _mm512_set1_ps(EXP_LO));
                let x = _mm512_min_ps(_mm512_set1_ps(EXP_HI), x);
                let n = _mm512_roundscale_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(
                    _mm512_mul_ps(x, _mm512_set1_ps(LOG2E)),
                );
                let r = _mm512_fnmadd_ps(n, _mm512_set1_ps(LN2_HI), x);
                let r = _mm512_fnmadd_ps(n, _mm512_set1_ps(LN2_LO), r);
                let mut q = _mm512_set1_ps(Q4);
                q = _mm512_fmadd_ps(q, r, _mm512_set1_ps(Q3));
                q = _mm512_fmadd_ps(q, r, _mm512_set1_ps(Q2));
                q = _mm512_fmadd_ps(q, r, _mm512_set1_ps(Q1));
                q = _mm512_fmadd_ps(q, r, _mm512_set1_ps(Q0));
                let one = _mm512_set1_ps(1.0);
                let y = _mm512_fmadd_ps(_mm512_fmadd_ps(q, r, one), r, one);
                _mm512_maskz_mov_ps(keep, _mm512_scalef_ps(y, n))
            }
        }
        #[inline(always)]
        fn reduce_max(self, v: __m512) -> f32 {
            // SAFETY: `self` proves the CPU runs these instructions.
            unsafe { _mm512_reduce_max_ps(v) }
        }
        #[inline(always)]
        fn reduce_add(self, v: __m512) -> f32 {
            // SAFETY: `self` proves the CPU runs these instructions.
            unsafe { _mm512_reduce_add_ps(v) }
        }
        #[inline(always)]
        unsafe fn transpose_block(
            self,
            rows: &[*const f32],
            scale: f32,
            dst: *mut f32,
            ld: usize,
            write: Write,
        ) {
            // Plain loops over fixed-size arrays, no closures (see the AVX2 version).
            // SAFETY: `self` proves the CPU runs these instructions; the loads and stores are
            // the caller's guarantee (16 rows of 16 floats; 16 columns of 16 floats `ld`
            // apart).
            unsafe {
                let s = _mm512_set1_ps(scale);
                let mut a = [_mm512_setzero_ps(); 16];
                for (r, v) in a.iter_mut().enumerate() {
                    *v = _mm512_mul_ps(_mm512_loadu_ps(rows[r]), s);
                }
                // Within each 128-bit lane `l`: rows interleaved in pairs, then in fours, so
                // `u[4g + k]` holds column `4l + k` of rows `4g..4g + 4`.
                let mut t = [_mm512_setzero_ps(); 16];
                for i in (0..16).step_by(2) {
                    t[i] = _mm512_unpacklo_ps(a[i], a[i + 1]);
                    t[i + 1] = _mm512_unpackhi_ps(a[i], a[i + 1]);
                }
                let mut u = [_mm512_setzero_ps(); 16];
                for g in 0..4 {
                    for half in 0..2 {
                        let x = _mm512_castps_pd(t[4 * g + half]);
                        let y = _mm512_castps_pd(t[4 * g + half + 2]);
                        u[4 * g + 2 * half] = _mm512_castpd_ps(_mm512_unpacklo_pd(x, y));
                        u[4 * g + 2 * half + 1] = _mm512_castpd_ps(_mm512_unpackhi_pd(x, y));
                    }
                }
                // Column `4l + k` gathers lane `l` of u[k], u[4 + k], u[8 + k], u[12 + k].
                for k in 0..4 {
                    let ab_lo = _mm512_shuffle_f32x4::<0x44>(u[k], u[4 + k]);
                    let ab_hi = _mm512_shuffle_f32x4::<0xEE>(u[k], u[4 + k]);
                    let cd_lo = _mm512_shuffle_f32x4::<0x44>(u[8 + k], u[12 + k]);
                    let cd_hi = _mm512_shuffle_f32x4::<0xEE>(u[8 + k], u[12 + k]);
                    let cols = [
                        _mm512_shuffle_f32x4::<0x88>(ab_lo, cd_lo),
                        _mm512_shuffle_f32x4::<0xDD>(ab_lo, cd_lo),
                        _mm512_shuffle_f32x4::<0x88>(ab_hi, cd_hi),
                        _mm512_shuffle_f32x4::<0xDD>(ab_hi, cd_hi),
                    ];
                    for (l, col) in cols.into_iter().enumerate() {
                        let at = dst.add((4 * l + k) * ld);
                        let col = match write {
                            Write::Overwrite => col,
                            Write::Accumulate => _mm512_add_ps(_mm512_loadu_ps(at), col),
                        };
                        _mm512_storeu_ps(at, col);
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct CheckExp;

    impl WithSimd for CheckExp {
        type Output = ();

        #[inline(always)]
        fn with_simd<S: Simd>(self, simd: S) {
            let xs: Vec<f32> = (0..4096)
                .map(|i| -100.0 + i as f32 * 0.0305)
                .chain([0.0, -0.0, f32::NEG_INFINITY, f32::NAN])
                .collect();
            for chunk in xs.chunks(S::LANES) {
                let mut buf = vec![0.0f32; S::LANES];
                buf[..chunk.len()].copy_from_slice(chunk);
                let mut out = vec![0.0f32; S::LANES];
                // SAFETY: both buffers hold LANES floats.
                unsafe { simd.store(out.as_mut_ptr(), simd.exp(simd.load(buf.as_ptr()))) };
                for (x, got) in buf.iter().zip(&out) {
                    if x.is_nan() {
                        assert!(got.is_nan(), "exp(NaN) = {got}");
                        continue;
                    }
                    let want = (*x as f64).exp();
                    let tol =
                        2.0 * f32::EPSILON as f64 * want + if *x < EXP_LO { 2e-38 } else { 0.0 };
                    assert!(
                        ((*got as f64) - want).abs() <= tol,
                        "exp({x}) = {got}, want {want}"
                    );
                }
            }
        }
    }

    struct CheckTranspose;

    impl WithSimd for CheckTranspose {
        type Output = ();

        #[inline(always)]
        fn with_simd<S: Simd>(self, simd: S) {
            let n = S::LANES;
            let ld = n + 3;
            // Row r of a `n × (n + 5)` source, read from column 2 on; NaN and inf pass through.
            let src: Vec<f32> = (0..n * (n + 5))
                .map(|i| match i {
                    7 => f32::NAN,
                    11 => f32::INFINITY,
                    _ => i as f32 * 0.37 - 3.0,
                })
                .collect();
            let rows: Vec<*const f32> = (0..n).map(|r| src[r * (n + 5) + 2..].as_ptr()).collect();
            // What `dst` held: -1 in the block's rows' padding, else a value of its own (-inf
            // once, which an added inf turns to NaN).
            let before = |i: usize| match i {
                5 => f32::NEG_INFINITY,
                _ if i % ld >= n => -1.0,
                _ => i as f32 * -0.5 + 1.0,
            };
            for write in [Write::Overwrite, Write::Accumulate] {
                let mut dst: Vec<f32> = (0..n * ld).map(before).collect();
                // SAFETY: `n` rows with `n` floats from column 2; `dst` holds `n` rows of
                // `ld >= n`.
                unsafe { simd.transpose_block(&rows, 0.125, dst.as_mut_ptr(), ld, write) };
                for r in 0..n {
                    for c in 0..n {
                        let x = src[r * (n + 5) + 2 + c] * 0.125;
                        let want = match write {
                            Write::Overwrite => x,
                            Write::Accumulate => before(c * ld + r) + x,
                        };
                        let got = dst[c * ld + r];
                        assert!(
                            got.to_bits() == want.to_bits() || (got.is_nan() && want.is_nan()),
                            "{write:?} ({r}, {c}): {got} != {want}"
                        );
                    }
                }
                assert!(dst
                    .chunks(ld)
                    .all(|row| row[n..].iter().all(|&x| x == -1.0)));
            }
        }
    }

    #[test]
    fn transpose_block_matches_the_scalar_block_on_every_supported_isa() {
        Portable.vectorize(CheckTranspose);
        #[cfg(target_arch = "x86_64")]
        {
            if let Some(simd) = Avx2::try_new() {
                simd.vectorize(CheckTranspose);
            }
            if let Some(simd) = Avx512::try_new() {
                simd.vectorize(CheckTranspose);
            }
        }
    }

    #[test]
    fn exp_is_accurate_on_every_supported_isa() {
        Portable.vectorize(CheckExp);
        #[cfg(target_arch = "x86_64")]
        {
            if let Some(simd) = Avx2::try_new() {
                simd.vectorize(CheckExp);
            }
            if let Some(simd) = Avx512::try_new() {
                simd.vectorize(CheckExp);
            }
        }
    }
}
