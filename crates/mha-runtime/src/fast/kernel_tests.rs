//! The attention kernels against a naive f64 implementation, on every ISA this CPU runs.

use super::attention::{flash, with_weights, OutLayout, Problem, SeqRef, BLOCK_K};
use super::split_keys::flash_split_keys;
use super::{Isa, Split};
use crate::prepare::{FullyMaskedRows, MaskRows, PaddingRows};

/// A small deterministic generator (tests only).
struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        self.0 >> 33
    }
    fn uniform(&mut self) -> f32 {
        (self.next() % 1_000_000) as f32 / 500_000.0 - 1.0
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

#[derive(Debug, Clone, Copy)]
enum MaskKind {
    None,
    /// `(N, 1, 1, S')`, some keys `-inf`.
    KeyPadding,
    /// `(1, 1, L, S')` finite values and `-inf`.
    Shared,
    /// `(N, H, L, S')` with whole rows `-inf`.
    PerHead,
}

struct Case {
    batch: usize,
    heads: usize,
    head_dim: usize,
    q_len: usize,
    src_len: usize,
    extra: usize,
    mask: MaskKind,
    /// With a `Shared` or `PerHead` mask: a key padding part `(N, S')` (some keys `-inf`, the
    /// others finite) that the kernels add to each row first, as torch merges the two masks.
    padded: bool,
    causal: bool,
    fully_masked: FullyMaskedRows,
    seq_first: bool,
}

struct Data {
    q: Vec<f32>,
    k: Vec<f32>,
    v: Vec<f32>,
    extra_k: Vec<f32>,
    extra_v: Vec<f32>,
    mask: Vec<f32>,
    mask_strides: [usize; 3],
    padding: Option<Vec<f32>>,
}

fn make(case: &Case, rng: &mut Lcg) -> Data {
    let e = case.heads * case.head_dim;
    let total = case.src_len + case.extra;
    let mut gen = |len: usize, scale: f32| {
        (0..len)
            .map(|_| rng.uniform() * scale)
            .collect::<Vec<f32>>()
    };
    let q = gen(case.batch * case.q_len * e, 2.0);
    let k = gen(case.batch * case.src_len * e, 2.0);
    let v = gen(case.batch * case.src_len * e, 1.0);
    let extra_k = gen(case.extra * e, 1.0);
    let extra_v = gen(case.extra * e, 1.0);
    let (dims, strides) = match case.mask {
        MaskKind::None => ([0, 0, 0], [0, 0, 0]),
        MaskKind::KeyPadding => ([case.batch, 1, 1], [total, 0, 0]),
        // A single query row broadcasts (stride 0), as `ScoreMask::rows` gives it.
        MaskKind::Shared => (
            [1, 1, case.q_len],
            [0, 0, if case.q_len == 1 { 0 } else { total }],
        ),
        MaskKind::PerHead => (
            [case.batch, case.heads, case.q_len],
            [case.heads * case.q_len * total, case.q_len * total, total],
        ),
    };
    let rows = dims[0] * dims[1] * dims[2];
    let mut mask = vec![0.0f32; rows * total];
    for r in 0..rows {
        let whole_row = matches!(case.mask, MaskKind::PerHead) && rng.below(5) == 0;
        for j in 0..total {
            let x = &mut mask[r * total + j];
            if j >= case.src_len {
                continue; // appended keys are padded with 0, as torch pads
            }
            *x = match case.mask {
                MaskKind::KeyPadding if rng.below(3) == 0 => f32::NEG_INFINITY,
                MaskKind::Shared if rng.below(4) == 0 => f32::NEG_INFINITY,
                MaskKind::Shared => rng.uniform(),
                _ if whole_row => f32::NEG_INFINITY,
                MaskKind::PerHead if rng.below(4) == 0 => f32::NEG_INFINITY,
                _ => 0.0,
            };
        }
        if whole_row {
            mask[r * total..(r + 1) * total].fill(f32::NEG_INFINITY);
        }
    }
    let padded = case.padded && matches!(case.mask, MaskKind::Shared | MaskKind::PerHead);
    let padding = padded.then(|| {
        (0..case.batch * total)
            .map(|i| match i % total {
                j if j >= case.src_len => 0.0,
                _ if rng.below(3) == 0 => f32::NEG_INFINITY,
                _ => rng.uniform(),
            })
            .collect()
    });
    Data {
        q,
        k,
        v,
        extra_k,
        extra_v,
        mask,
        mask_strides: strides,
        padding,
    }
}

fn problem<'a>(case: &Case, data: &'a Data) -> Problem<'a> {
    let e = case.heads * case.head_dim;
    let (bs_q, rs_q, bs_k, rs_k) = if case.seq_first {
        (e, case.batch * e, e, case.batch * e)
    } else {
        (case.q_len * e, e, case.src_len * e, e)
    };
    let seq = |data: &'a [f32], bs, rs| SeqRef {
        data,
        offset: 0,
        batch_stride: bs,
        row_stride: rs,
        head_stride: case.head_dim,
    };
    Problem {
        batch: case.batch,
        heads: case.heads,
        head_dim: case.head_dim,
        q_len: case.q_len,
        src_len: case.src_len,
        q: seq(&data.q, bs_q, rs_q),
        k: seq(&data.k, bs_k, rs_k),
        v: seq(&data.v, bs_k, rs_k),
        extra_k: &data.extra_k,
        extra_v: &data.extra_v,
        mask: match case.mask {
            MaskKind::None => None,
            _ => Some(MaskRows {
                data: &data.mask,
                batch_stride: data.mask_strides[0],
                head_stride: data.mask_strides[1],
                row_stride: data.mask_strides[2],
                padding: data.padding.as_ref().map(|padding| PaddingRows {
                    data: padding,
                    batch_stride: case.src_len + case.extra,
                }),
            }),
        },
        causal: case.causal,
        scale: (1.0 / case.head_dim as f64).sqrt() as f32,
        fully_masked: case.fully_masked,
        dropout: None,
    }
}

/// Naive attention in f64: (output `(N, L, E)` batch-major, per-head weights `(N, H, L, S')`).
fn naive(case: &Case, p: &Problem<'_>) -> (Vec<f64>, Vec<f64>) {
    let (n_, h_, d, l_, total) = (
        case.batch,
        case.heads,
        case.head_dim,
        case.q_len,
        p.total_keys(),
    );
    let e = h_ * d;
    let key = |n: usize, j: usize| -> Vec<f64> {
        if j < case.src_len {
            let at = p.k.offset + n * p.k.batch_stride + j * p.k.row_stride;
            p.k.data[at..at + e].iter().map(|&x| x as f64).collect()
        } else {
            p.extra_k[(j - case.src_len) * e..(j - case.src_len + 1) * e]
                .iter()
                .map(|&x| x as f64)
                .collect()
        }
    };
    let value = |n: usize, j: usize| -> Vec<f64> {
        if j < case.src_len {
            let at = p.v.offset + n * p.v.batch_stride + j * p.v.row_stride;
            p.v.data[at..at + e].iter().map(|&x| x as f64).collect()
        } else {
            p.extra_v[(j - case.src_len) * e..(j - case.src_len + 1) * e]
                .iter()
                .map(|&x| x as f64)
                .collect()
        }
    };
    let mut out = vec![0.0f64; n_ * l_ * e];
    let mut weights = vec![0.0f64; n_ * h_ * l_ * total];
    for n in 0..n_ {
        for h in 0..h_ {
            for i in 0..l_ {
                let qa = p.q.offset + n * p.q.batch_stride + i * p.q.row_stride + h * d;
                let q = &p.q.data[qa..qa + d];
                let mut s: Vec<f64> = (0..total)
                    .map(|j| {
                        let k = key(n, j);
                        let dot: f64 = (0..d).map(|c| q[c] as f64 * k[h * d + c]).sum();
                        let mut x = dot * p.scale as f64;
                        if let Some(m) = &p.mask {
                            x += m.value(n, h, i, j) as f64;
                        }
                        if p.causal && j > i {
                            x = f64::NEG_INFINITY;
                        }
                        x
                    })
                    .collect();
                let max = s.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                if max == f64::NEG_INFINITY {
                    let fill = if case.fully_masked == FullyMaskedRows::Nan {
                        f64::NAN
                    } else {
                        0.0
                    };
                    s.iter_mut().for_each(|x| *x = fill);
                } else {
                    s.iter_mut().for_each(|x| *x = (*x - max).exp());
                    let sum: f64 = s.iter().sum();
                    s.iter_mut().for_each(|x| *x /= sum);
                }
                for j in 0..total {
                    weights[((n * h_ + h) * l_ + i) * total + j] = s[j];
                    let v = value(n, j);
                    for c in 0..d {
                        out[(n * l_ + i) * e + h * d + c] += s[j] * v[h * d + c];
                    }
                }
            }
        }
    }
    (out, weights)
}

fn close(got: f32, want: f64) -> bool {
    if want.is_nan() {
        return got.is_nan();
    }
    (got as f64 - want).abs() <= 1e-5 + 1e-4 * want.abs()
}

fn check_case(case: &Case, seed: u64) {
    let mut rng = Lcg(seed);
    let data = make(case, &mut rng);
    let p = problem(case, &data);
    let (want_out, want_w) = naive(case, &p);
    let e = case.heads * case.head_dim;
    let (bs, rs) = if case.seq_first {
        (e, case.batch * e)
    } else {
        (case.q_len * e, e)
    };
    let total = p.total_keys();
    let at = |n: usize, i: usize| n * bs + i * rs;
    for isa in Isa::supported() {
        let mut outs = Vec::new();
        let layout = OutLayout::rows(bs, rs, p.head_dim);
        let inline = Split::Inline { concurrent: 1 };
        for (name, split) in [("flash", Split::Pool), ("flash inline", inline)] {
            let mut out = vec![f32::NAN; case.batch * case.q_len * e];
            flash::<0>(isa, &p, &mut out, layout, split);
            outs.push((name, out));
        }
        if case.head_dim == 8 {
            let mut out = vec![f32::NAN; case.batch * case.q_len * e];
            flash::<8>(isa, &p, &mut out, layout, Split::Pool);
            outs.push(("flash<8>", out));
        }
        for chunk in [BLOCK_K, 2 * BLOCK_K] {
            let mut out = vec![f32::NAN; case.batch * case.q_len * e];
            flash_split_keys::<0>(isa, &p, &mut out, layout, chunk);
            outs.push(("split keys", out));
        }
        for per_head in [true, false] {
            let mut out = vec![f32::NAN; case.batch * case.q_len * e];
            let heads = if per_head { case.heads } else { 1 };
            let mut w = vec![f32::NAN; case.batch * heads * case.q_len * total];
            with_weights::<0>(isa, &p, &mut out, layout, &mut w, per_head);
            for n in 0..case.batch {
                for i in 0..case.q_len {
                    for j in 0..total {
                        let want = if per_head {
                            (0..case.heads)
                                .map(|h| {
                                    want_w[((n * case.heads + h) * case.q_len + i) * total + j]
                                })
                                .collect()
                        } else {
                            vec![
                                (0..case.heads)
                                    .map(|h| {
                                        want_w[((n * case.heads + h) * case.q_len + i) * total + j]
                                    })
                                    .sum::<f64>()
                                    / case.heads as f64,
                            ]
                        };
                        for (hh, want) in want.into_iter().enumerate() {
                            let got = w[((n * heads + hh) * case.q_len + i) * total + j];
                            assert!(close(got, want), "{isa} weights per_head={per_head} n={n} h={hh} i={i} j={j}: {got} vs {want}");
                        }
                    }
                }
            }
            outs.push(("weights", out));
        }
        for (kind, out) in outs {
            for n in 0..case.batch {
                for i in 0..case.q_len {
                    for c in 0..e {
                        let got = out[at(n, i) + c];
                        let want = want_out[(n * case.q_len + i) * e + c];
                        assert!(
                            close(got, want),
                            "{isa} {kind} n={n} i={i} c={c}: {got} vs {want}"
                        );
                    }
                }
            }
        }
    }
}

#[test]
fn kernels_match_naive_attention_on_every_isa() {
    let mut rng = Lcg(12345);
    let masks = [
        MaskKind::None,
        MaskKind::KeyPadding,
        MaskKind::Shared,
        MaskKind::PerHead,
    ];
    for round in 0..40 {
        let head_dim = [1, 3, 8, 16, 17, 64][rng.below(6)];
        let case = Case {
            batch: 1 + rng.below(3),
            heads: 1 + rng.below(3),
            head_dim,
            q_len: 1 + rng.below(if head_dim > 16 { 80 } else { 150 }),
            src_len: rng.below(140),
            extra: rng.below(3),
            mask: masks[rng.below(4)],
            padded: rng.below(2) == 0,
            causal: rng.below(4) == 0,
            fully_masked: if rng.below(2) == 0 {
                FullyMaskedRows::Nan
            } else {
                FullyMaskedRows::Zero
            },
            seq_first: rng.below(2) == 0,
        };
        if case.src_len + case.extra == 0 {
            continue;
        }
        check_case(&case, 1000 + round);
    }
}

#[test]
fn long_rows_of_large_logits_do_not_overflow() {
    let case = Case {
        batch: 1,
        heads: 2,
        head_dim: 8,
        q_len: 70,
        src_len: 200,
        extra: 0,
        mask: MaskKind::None,
        padded: false,
        causal: false,
        fully_masked: FullyMaskedRows::Zero,
        seq_first: false,
    };
    let mut rng = Lcg(7);
    let mut data = make(&case, &mut rng);
    data.q.iter_mut().for_each(|x| *x *= 300.0);
    let p = problem(&case, &data);
    let (want, _) = naive(&case, &p);
    for isa in Isa::supported() {
        let mut out = vec![0.0f32; want.len()];
        flash::<0>(
            isa,
            &p,
            &mut out,
            OutLayout::rows(case.q_len * 16, 16, p.head_dim),
            Split::Pool,
        );
        // Logits in the thousands: f32 dot products carry ~1e-4 absolute error into exp, so
        // this checks finiteness and closeness, not the parity tolerance.
        for (g, w) in out.iter().zip(&want) {
            assert!(
                g.is_finite() && (*g as f64 - w).abs() <= 1e-3 * (1.0 + w.abs()),
                "{isa}: {g} vs {w}"
            );
        }
    }
}

/// The split-keys kernel merges chunks as the single pass merges tiles, so non-finite input
/// (a NaN or ±inf in a query, key or value, hidden by the causal mask or not) gives NaN in the
/// same places as [`flash`], on every ISA and for chunks of one and two key tiles.
#[test]
fn split_keys_follows_flash_on_non_finite_input() {
    let mut rng = Lcg(99);
    for round in 0..24 {
        let case = Case {
            batch: 1 + rng.below(2),
            heads: 1 + rng.below(2),
            head_dim: [3, 16, 17][rng.below(3)],
            q_len: 1 + rng.below(140),
            src_len: 1 + rng.below(300),
            extra: 0,
            mask: [MaskKind::None, MaskKind::PerHead][rng.below(2)],
            padded: rng.below(2) == 0,
            causal: rng.below(2) == 0,
            fully_masked: if rng.below(2) == 0 {
                FullyMaskedRows::Nan
            } else {
                FullyMaskedRows::Zero
            },
            seq_first: false,
        };
        let mut data = make(&case, &mut rng);
        let bad = [f32::NAN, f32::INFINITY, f32::NEG_INFINITY][rng.below(3)];
        let target = match rng.below(3) {
            0 => &mut data.q,
            1 => &mut data.k,
            _ => &mut data.v,
        };
        let at = rng.below(target.len());
        target[at] = bad;
        let p = problem(&case, &data);
        let e = case.heads * case.head_dim;
        let (bs, rs) = (case.q_len * e, e);
        for isa in Isa::supported() {
            let mut want = vec![0.0f32; case.batch * case.q_len * e];
            flash::<0>(
                isa,
                &p,
                &mut want,
                OutLayout::rows(bs, rs, p.head_dim),
                Split::Pool,
            );
            for chunk in [BLOCK_K, 2 * BLOCK_K] {
                let mut got = vec![0.0f32; want.len()];
                flash_split_keys::<0>(
                    isa,
                    &p,
                    &mut got,
                    OutLayout::rows(bs, rs, p.head_dim),
                    chunk,
                );
                for (x, (g, w)) in got.iter().zip(&want).enumerate() {
                    let same = if w.is_nan() {
                        g.is_nan()
                    } else {
                        g == w || (g - w).abs() <= 1e-5 + 1e-4 * w.abs()
                    };
                    assert!(same, "round {round} {isa} chunk {chunk} at {x}: {g} vs {w}");
                }
            }
        }
    }
}

/// A causal tile skips the queries that see none of its keys only when its values are finite:
/// a NaN or ±inf value hidden from some queries still makes their output NaN (`0 · v`), as the
/// naive product gives, in the first query block (tile 64..128 of queries 0..128) and a later
/// one.
#[test]
fn causal_skipping_keeps_non_finite_hidden_values() {
    for (bad_key, bad) in [
        (100, f32::NAN),
        (70, f32::INFINITY),
        (200, f32::NEG_INFINITY),
    ] {
        let case = Case {
            batch: 1,
            heads: 2,
            head_dim: 16,
            q_len: 260,
            src_len: 260,
            extra: 0,
            mask: MaskKind::None,
            padded: false,
            causal: true,
            fully_masked: FullyMaskedRows::Zero,
            seq_first: false,
        };
        let mut data = make(&case, &mut Lcg(5));
        let e = case.heads * case.head_dim;
        data.v[bad_key * e + 3] = bad;
        let p = problem(&case, &data);
        let (want, _) = naive(&case, &p);
        assert!(want[3].is_nan() && !want[4].is_nan());
        for isa in Isa::supported() {
            let mut out = vec![0.0f32; want.len()];
            flash::<0>(
                isa,
                &p,
                &mut out,
                OutLayout::rows(case.q_len * e, e, p.head_dim),
                Split::Pool,
            );
            for (x, (g, w)) in out.iter().zip(&want).enumerate() {
                let same = *g as f64 == *w || close(*g, *w);
                assert!(same, "{isa} key {bad_key} at {x}: {g} vs {w}");
            }
        }
    }
}

#[test]
fn output_layouts_whose_rows_overlap_are_refused() {
    let case = Case {
        batch: 2,
        heads: 3,
        head_dim: 8,
        q_len: 4,
        src_len: 5,
        extra: 0,
        mask: MaskKind::None,
        padded: false,
        causal: false,
        fully_masked: FullyMaskedRows::Zero,
        seq_first: false,
    };
    let data = make(&case, &mut Lcg(7));
    let p = problem(&case, &data);
    let run = |layout: OutLayout| {
        let mut out = vec![0.0f32; 2 * 3 * 4 * 8];
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            flash::<0>(Isa::Portable, &p, &mut out, layout, Split::Pool)
        }))
        .is_ok()
    };
    let heads_apart = |head_stride| OutLayout {
        batch_stride: 96,
        row_stride: 8,
        head_stride,
    };
    // Torch's rows (heads side by side) and SDPA's heads apart.
    assert!(run(OutLayout::rows(96, 24, 8)));
    assert!(run(heads_apart(32)));
    // Heads 4 floats apart, rows inside the next head, batch elements on top of each other.
    assert!(!run(OutLayout::rows(96, 24, 4)));
    assert!(!run(heads_apart(16)));
    assert!(!run(OutLayout::rows(0, 24, 8)));
}
