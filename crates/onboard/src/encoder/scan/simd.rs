//! The one scan algorithm, written once over a small vector-ISA trait, plus the vector maths it needs
//! (exp, ln, softplus, silu).
//!
//! Each instruction set implements [`Simd`] on a zero-sized *token*: `x86` and `neon` hold the
//! intrinsic ones, which can only be obtained after the CPU has been checked for the features
//! they need, so every trait method is safe to call; [`Portable`] (the `Scalar` kernel) and
//! [`Scalar`] (single lanes, for the tail of an N that is not a whole number of registers) live
//! here. The generic code below is `#[inline(always)]` all the way down so that it is compiled
//! inside each kernel's `#[target_feature]` entry point, where the intrinsics inline into straight
//! vector code.
//!
//! Accuracy (measured over their ranges, every kernel): `exp` ≤ 1.3 ulp, `exp2` ≤ 1.2 ulp,
//! `ln_ge1` ≤ 0.8 ulp, `recip` ≤ 2.7 ulp.

use super::{Job, MAX_WIDTH};

/// A vector instruction set seen through a capability token.
///
/// `min`/`max` follow x86's operand rule (the *second* operand is returned when either is NaN), so
/// `max(splat(lo), x)` propagates a NaN in `x`; every implementation keeps that rule.
pub(super) trait Simd: Copy {
    /// One register of `WIDTH` f32 lanes.
    type V: Copy;
    /// Lanes per register; at most [`MAX_WIDTH`].
    const WIDTH: usize;

    fn splat(self, x: f32) -> Self::V;
    /// Loads the first `WIDTH` values of `s`; panics if `s` is shorter.
    fn load(self, s: &[f32]) -> Self::V;
    /// Stores into the first `WIDTH` values of `s`; panics if `s` is shorter.
    fn store(self, v: Self::V, s: &mut [f32]);
    fn add(self, a: Self::V, b: Self::V) -> Self::V;
    fn sub(self, a: Self::V, b: Self::V) -> Self::V;
    fn mul(self, a: Self::V, b: Self::V) -> Self::V;
    /// `1 / a` to within 3 ulp for normal `a` ≥ 1 (an estimate refined by Newton–Raphson, far
    /// cheaper than a vector division).
    fn recip(self, a: Self::V) -> Self::V;
    /// `a * b + c`, fused where the ISA has it.
    fn mul_add(self, a: Self::V, b: Self::V, c: Self::V) -> Self::V;
    /// `c - a * b`, fused where the ISA has it.
    fn neg_mul_add(self, a: Self::V, b: Self::V, c: Self::V) -> Self::V;
    /// `a < b ? a : b` per lane (returns `b` when either is NaN).
    fn min(self, a: Self::V, b: Self::V) -> Self::V;
    /// `a > b ? a : b` per lane (returns `b` when either is NaN).
    fn max(self, a: Self::V, b: Self::V) -> Self::V;
    /// For `x` in `[-127, 127]`: `(k, t)` with `k = round(x)` (nearest, ties to even) and `t` the
    /// ISA's handle on `2^k` for [`Simd::mul_pow2`]. A NaN `x` may give anything for `t`.
    fn round_pow2(self, x: Self::V) -> (Self::V, Self::V);
    /// `p * 2^k` for the `t` that [`Simd::round_pow2`] returned with `k`; 0 or a value below
    /// `f32::MIN_POSITIVE` for `k = -127`; NaN when `p` is NaN.
    fn mul_pow2(self, p: Self::V, t: Self::V) -> Self::V;
    /// For positive normal `a`: `(m, e)` with `a = m * 2^e`, `m` in `[0.5, 1)`, `e` integral.
    fn frexp(self, a: Self::V) -> (Self::V, Self::V);
    /// Per lane: `if a < b { then } else { otherwise }`.
    fn select_lt(self, a: Self::V, b: Self::V, then: Self::V, otherwise: Self::V) -> Self::V;
    /// Sum of all lanes.
    fn hsum(self, a: Self::V) -> f32;
    /// `rows` holds `WIDTH` rows of `WIDTH` values; lane `j` of the result is the sum of row `j`.
    /// Panics if `rows` is shorter than `WIDTH * WIDTH`.
    fn hsum_rows(self, rows: &[f32]) -> Self::V;

    /// Loads `s` (which may be shorter than `WIDTH`) into the low lanes, zero-filling the rest.
    #[inline(always)]
    fn load_partial(self, s: &[f32]) -> Self::V {
        if s.len() >= Self::WIDTH {
            self.load(s)
        } else {
            let mut buf = [0.0f32; MAX_WIDTH];
            buf[..s.len()].copy_from_slice(s);
            self.load(&buf)
        }
    }

    /// Stores the low `s.len()` lanes of `v` (all of them when `s` is at least `WIDTH` long).
    #[inline(always)]
    fn store_partial(self, v: Self::V, s: &mut [f32]) {
        if s.len() >= Self::WIDTH {
            self.store(v, s)
        } else {
            let mut buf = [0.0f32; MAX_WIDTH];
            self.store(v, &mut buf);
            let n = s.len();
            s.copy_from_slice(&buf[..n]);
        }
    }
}

/// One lane of plain f32 arithmetic: the tail of the general-N path and the building block of
/// [`Portable`]. `mul_add` is unfused, so it never becomes a libm `fmaf` call on targets without
/// FMA.
#[derive(Clone, Copy, Debug)]
pub(super) struct Scalar;

impl Simd for Scalar {
    type V = f32;
    const WIDTH: usize = 1;

    #[inline(always)]
    fn splat(self, x: f32) -> f32 {
        x
    }
    #[inline(always)]
    fn load(self, s: &[f32]) -> f32 {
        s[0]
    }
    #[inline(always)]
    fn store(self, v: f32, s: &mut [f32]) {
        s[0] = v;
    }
    #[inline(always)]
    fn add(self, a: f32, b: f32) -> f32 {
        a + b
    }
    #[inline(always)]
    fn sub(self, a: f32, b: f32) -> f32 {
        a - b
    }
    #[inline(always)]
    fn mul(self, a: f32, b: f32) -> f32 {
        a * b
    }
    #[inline(always)]
    fn recip(self, a: f32) -> f32 {
        1.0 / a
    }
    #[inline(always)]
    fn mul_add(self, a: f32, b: f32, c: f32) -> f32 {
        a * b + c
    }
    #[inline(always)]
    fn neg_mul_add(self, a: f32, b: f32, c: f32) -> f32 {
        c - a * b
    }
    #[inline(always)]
    fn min(self, a: f32, b: f32) -> f32 {
        if a < b {
            a
        } else {
            b
        }
    }
    #[inline(always)]
    fn max(self, a: f32, b: f32) -> f32 {
        if a > b {
            a
        } else {
            b
        }
    }
    #[inline(always)]
    fn round_pow2(self, x: f32) -> (f32, f32) {
        let kf = x + POW2_MAGIC;
        (kf - POW2_MAGIC, f32::from_bits(kf.to_bits() << 23))
    }
    #[inline(always)]
    fn mul_pow2(self, p: f32, t: f32) -> f32 {
        p * t
    }
    #[inline(always)]
    fn frexp(self, a: f32) -> (f32, f32) {
        let bits = a.to_bits();
        let e = ((bits >> 23) & 0xff) as i32 - 126;
        let m = f32::from_bits((bits & 0x807f_ffff) | 0x3f00_0000);
        (m, e as f32)
    }
    #[inline(always)]
    fn select_lt(self, a: f32, b: f32, then: f32, otherwise: f32) -> f32 {
        if a < b {
            then
        } else {
            otherwise
        }
    }
    #[inline(always)]
    fn hsum(self, a: f32) -> f32 {
        a
    }
    #[inline(always)]
    fn hsum_rows(self, rows: &[f32]) -> f32 {
        rows[0]
    }
}

/// The portable kernel (`Kernel::Scalar`): four lanes as a plain array, no intrinsics. Every
/// method is lane-wise scalar code that LLVM turns into the target's baseline vector code (SSE2 on
/// x86-64), about 3.5x faster than one lane while still running on any CPU. (Closures are fine
/// here, unlike in the intrinsic kernels: there are no target features for them to miss.)
#[derive(Clone, Copy, Debug)]
pub(super) struct Portable;

type F4 = [f32; 4];

#[inline(always)]
fn lanes(f: impl Fn(usize) -> f32) -> F4 {
    [f(0), f(1), f(2), f(3)]
}

impl Simd for Portable {
    type V = F4;
    const WIDTH: usize = 4;

    #[inline(always)]
    fn splat(self, x: f32) -> F4 {
        [x; 4]
    }
    #[inline(always)]
    fn load(self, s: &[f32]) -> F4 {
        let mut v = [0.0; 4];
        v.copy_from_slice(&s[..4]);
        v
    }
    #[inline(always)]
    fn store(self, v: F4, s: &mut [f32]) {
        s[..4].copy_from_slice(&v);
    }
    #[inline(always)]
    fn add(self, a: F4, b: F4) -> F4 {
        lanes(|i| Scalar.add(a[i], b[i]))
    }
    #[inline(always)]
    fn sub(self, a: F4, b: F4) -> F4 {
        lanes(|i| Scalar.sub(a[i], b[i]))
    }
    #[inline(always)]
    fn mul(self, a: F4, b: F4) -> F4 {
        lanes(|i| Scalar.mul(a[i], b[i]))
    }
    #[inline(always)]
    fn recip(self, a: F4) -> F4 {
        lanes(|i| Scalar.recip(a[i]))
    }
    #[inline(always)]
    fn mul_add(self, a: F4, b: F4, c: F4) -> F4 {
        lanes(|i| Scalar.mul_add(a[i], b[i], c[i]))
    }
    #[inline(always)]
    fn neg_mul_add(self, a: F4, b: F4, c: F4) -> F4 {
        lanes(|i| Scalar.neg_mul_add(a[i], b[i], c[i]))
    }
    #[inline(always)]
    fn min(self, a: F4, b: F4) -> F4 {
        lanes(|i| Scalar.min(a[i], b[i]))
    }
    #[inline(always)]
    fn max(self, a: F4, b: F4) -> F4 {
        lanes(|i| Scalar.max(a[i], b[i]))
    }
    #[inline(always)]
    fn round_pow2(self, x: F4) -> (F4, F4) {
        let kt: [(f32, f32); 4] = [
            Scalar.round_pow2(x[0]),
            Scalar.round_pow2(x[1]),
            Scalar.round_pow2(x[2]),
            Scalar.round_pow2(x[3]),
        ];
        (lanes(|i| kt[i].0), lanes(|i| kt[i].1))
    }
    #[inline(always)]
    fn mul_pow2(self, p: F4, t: F4) -> F4 {
        lanes(|i| Scalar.mul_pow2(p[i], t[i]))
    }
    #[inline(always)]
    fn frexp(self, a: F4) -> (F4, F4) {
        let me: [(f32, f32); 4] = [
            Scalar.frexp(a[0]),
            Scalar.frexp(a[1]),
            Scalar.frexp(a[2]),
            Scalar.frexp(a[3]),
        ];
        (lanes(|i| me[i].0), lanes(|i| me[i].1))
    }
    #[inline(always)]
    fn select_lt(self, a: F4, b: F4, then: F4, otherwise: F4) -> F4 {
        lanes(|i| Scalar.select_lt(a[i], b[i], then[i], otherwise[i]))
    }
    #[inline(always)]
    fn hsum(self, a: F4) -> f32 {
        (a[0] + a[1]) + (a[2] + a[3])
    }
    #[inline(always)]
    fn hsum_rows(self, rows: &[f32]) -> F4 {
        let rows = &rows[..16];
        lanes(|i| self.hsum(self.load(&rows[4 * i..])))
    }
}

/// 1.5 * 2^23 + 127. Adding it to x in [-127, 127] rounds x to an integer k (the float's ulp is 1
/// there, and the hardware rounds to nearest even) and leaves k + 127, the IEEE exponent of 2^k,
/// in the low mantissa bits: shifting the bits left by 23 gives 2^k (0 for k = -127), and
/// subtracting the constant back gives k.
pub(super) const POW2_MAGIC: f32 = 12_583_039.0;

// Cephes single-precision coefficients (S. L. Moshier), quoted as published.
#[allow(clippy::excessive_precision)]
mod consts {
    /// Below ln(2^-126) the result would be subnormal; we return exactly 0 (absolute error < 1.2e-38).
    pub const EXP_LO: f32 = -87.336_544_750_553_1;
    /// Largest input whose `k = round(x / ln 2)` stays at 127; larger inputs saturate to e^EXP_HI.
    pub const EXP_HI: f32 = 88.376_25;
    /// ln 2 split in two so that `k * LN2_HI` is exact for |k| ≤ 127.
    pub const LN2_HI: f32 = 0.693_359_375;
    pub const LN2_LO: f32 = -2.121_944_400_546_905_827_679e-4;
    pub const EXP_P: [f32; 6] = [
        1.987_569_150_0e-4,
        1.398_199_950_7e-3,
        8.333_451_907_3e-3,
        4.166_579_589_4e-2,
        1.666_666_545_9e-1,
        5.000_000_120_1e-1,
    ];
    /// 2^f - 1 = f * P(f) on [-0.5, 0.5] (Cephes exp2f).
    pub const EXP2_P: [f32; 6] = [
        1.535_336_188_319_500e-4,
        1.339_887_440_266_574e-3,
        9.618_437_357_674_640e-3,
        5.550_332_471_162_809e-2,
        2.402_264_791_363_012e-1,
        6.931_472_028_550_421e-1,
    ];
    pub const SQRT_HALF: f32 = std::f32::consts::FRAC_1_SQRT_2;
    pub const LN_P: [f32; 9] = [
        7.037_683_629_2e-2,
        -1.151_461_031_0e-1,
        1.167_699_874_0e-1,
        -1.242_014_084_6e-1,
        1.424_932_278_7e-1,
        -1.666_805_766_5e-1,
        2.000_071_476_5e-1,
        -2.499_999_399_3e-1,
        3.333_333_117_4e-1,
    ];
}
use consts::*;

/// mamba's (torch's) softplus threshold: above it softplus(x) is x itself.
pub(super) const SOFTPLUS_THRESHOLD: f32 = 20.0;

/// e^x, for softplus and silu. Within 1.3 ulp on `[EXP_LO, EXP_HI]`; exactly 0 below (including
/// -inf), e^EXP_HI (≈ 2.4e38, finite) above (including +inf); NaN stays NaN.
#[inline(always)]
pub(super) fn exp<S: Simd>(s: S, x: S::V) -> S::V {
    // Constant first: a NaN in `x` survives the clamp (see `Simd`).
    let xc = s.min(s.splat(EXP_HI), s.max(s.splat(EXP_LO), x));
    // x = k ln2 + r, |r| ≤ ln2 / 2.
    let (k, t) = s.round_pow2(s.mul(xc, s.splat(std::f32::consts::LOG2_E)));
    let r = s.neg_mul_add(k, s.splat(LN2_HI), xc);
    let r = s.neg_mul_add(k, s.splat(LN2_LO), r);
    let mut p = s.splat(EXP_P[0]);
    for &c in &EXP_P[1..] {
        p = s.mul_add(p, r, s.splat(c));
    }
    let r2 = s.mul(r, r);
    let p = s.mul_add(p, r2, s.add(r, s.splat(1.0)));
    let e = s.mul_pow2(p, t);
    s.select_lt(x, s.splat(EXP_LO), s.splat(0.0), e)
}

/// 2^x, for the recurrence's decay factors `2^(dt A log2 e)`: x is clamped to [-127, 127] (so no
/// inf or NaN from finite or infinite input; NaN stays NaN), and results below 2^-126.5 may come
/// out as 0 or subnormal; within 1.2 ulp elsewhere. Cheaper than [`exp`] (no Cody–Waite split, no
/// mask), which matters: it runs N times per step. Rounding `A log2 e` to f32 perturbs the decay by
/// at most |dt A| 2^-24 relative, i.e. below 2.2e-8 absolute.
#[inline(always)]
pub(super) fn exp2<S: Simd>(s: S, x: S::V) -> S::V {
    let xc = s.min(s.splat(127.0), s.max(s.splat(-127.0), x));
    let (k, t) = s.round_pow2(xc);
    let f = s.sub(xc, k);
    let mut p = s.splat(EXP2_P[0]);
    for &c in &EXP2_P[1..] {
        p = s.mul_add(p, f, s.splat(c));
    }
    let p = s.mul_add(p, f, s.splat(1.0));
    s.mul_pow2(p, t)
}

/// ln x for finite x ≥ 1 (what softplus needs); about 1 ulp there.
#[inline(always)]
pub(super) fn ln_ge1<S: Simd>(s: S, x: S::V) -> S::V {
    let one = s.splat(1.0);
    let (m, e) = s.frexp(x);
    // Keep the reduced argument in [sqrt(1/2) - 1, sqrt(2) - 1).
    let half = s.splat(SQRT_HALF);
    let e = s.select_lt(m, half, s.sub(e, one), e);
    let m = s.select_lt(m, half, s.sub(s.add(m, m), one), s.sub(m, one));
    let z = s.mul(m, m);
    let mut y = s.splat(LN_P[0]);
    for &c in &LN_P[1..] {
        y = s.mul_add(y, m, s.splat(c));
    }
    let y = s.mul(s.mul(y, m), z);
    let y = s.mul_add(e, s.splat(LN2_LO), y);
    let y = s.neg_mul_add(s.splat(0.5), z, y);
    let r = s.add(m, y);
    s.mul_add(e, s.splat(LN2_HI), r)
}

/// mamba's softplus: `x` if `x > 20`, else `ln(1 + e^x)`.
#[inline(always)]
pub(super) fn softplus<S: Simd>(s: S, x: S::V) -> S::V {
    let one = s.splat(1.0);
    let e = exp(s, x);
    let w = s.add(one, e);
    // log1p(e) = ln(w) + c / w where c = e - (w - 1) is the rounding error of w = 1 + e (exact
    // for w < 2^24; above, c / w is far below an ulp of the result). When w rounds to 1 this is
    // 0 + e, the right answer for tiny e, with no branch.
    let c = s.sub(e, s.sub(w, one));
    let l1p = s.mul_add(c, s.recip(w), ln_ge1(s, w));
    s.select_lt(s.splat(SOFTPLUS_THRESHOLD), x, x, l1p)
}

/// silu(z) = z / (1 + e^-z).
#[inline(always)]
pub(super) fn silu<S: Simd>(s: S, z: S::V) -> S::V {
    let e = exp(s, s.sub(s.splat(0.0), z));
    s.mul(z, s.recip(s.add(s.splat(1.0), e)))
}

/// Applies `f` to `x` vector by vector into `out` (same length), padding the tail.
#[cfg(test)]
pub(super) fn map<S: Simd>(s: S, x: &[f32], out: &mut [f32], f: impl Fn(S::V) -> S::V) {
    for (xs, ys) in x.chunks(S::WIDTH).zip(out.chunks_mut(S::WIDTH)) {
        s.store_partial(f(s.load_partial(xs)), ys);
    }
}

/// Per-task scratch, allocated once per chunk of rows.
struct Scratch {
    /// dt for each step of the current row.
    dt: Vec<f32>,
    /// dt * u for each step of the current row.
    dtu: Vec<f32>,
    /// A[d, :] * log2(e), so the decay e^(dt A) is 2^(dt A log2 e).
    a2: Vec<f32>,
    /// The state h[N] for the general-N path.
    h: Vec<f32>,
    /// One vector of `h * C` partial sums per step, `len` rounded up to whole `WIDTH` blocks, so
    /// that the horizontal sums happen `WIDTH` steps at a time ([`Simd::hsum_rows`]).
    partials: Vec<f32>,
}

/// Scans the rows `first_row..` (row = b * dim + d) whose outputs are `out`, `len` values each.
#[inline(always)]
pub(super) fn scan_rows<S: Simd>(s: S, job: &Job, first_row: usize, out: &mut [f32]) {
    let dims = job.dims;
    let (len, state) = (dims.len, dims.state);
    if len == 0 {
        return;
    }
    let w = S::WIDTH;
    let mut scratch = Scratch {
        dt: vec![0.0; len],
        dtu: vec![0.0; len],
        a2: vec![0.0; state],
        h: vec![0.0; state],
        partials: vec![0.0; len.div_ceil(w) * w * w],
    };
    for (i, y) in out.chunks_exact_mut(len).enumerate() {
        let row = first_row + i;
        let (b, d) = (row / dims.dim, row % dims.dim);
        scan_row(s, job, b, d, y, &mut scratch);
    }
}

#[inline(always)]
fn scan_row<S: Simd>(s: S, job: &Job, b: usize, d: usize, y: &mut [f32], scratch: &mut Scratch) {
    let dims = job.dims;
    let (len, n) = (dims.len, dims.state);
    let w = S::WIDTH;
    let x = job.inputs;
    let row = (b * dims.dim + d) * len;
    let u = &x.u[row..row + len];
    let delta = &x.delta[row..row + len];
    let bc = &job.bc[b * len * 2 * n..(b + 1) * len * 2 * n];
    for (a2, &a) in scratch.a2.iter_mut().zip(&x.a[d * n..(d + 1) * n]) {
        *a2 = a * std::f32::consts::LOG2_E;
    }

    // 1. dt and dt*u for the whole row, vectorised along L.
    let bias = s.splat(x.delta_bias.map_or(0.0, |v| v[d]));
    let (dt, dtu) = (&mut scratch.dt[..], &mut scratch.dtu[..]);
    for ((dl, ul), (dtl, dtul)) in delta
        .chunks(w)
        .zip(u.chunks(w))
        .zip(dt.chunks_mut(w).zip(dtu.chunks_mut(w)))
    {
        let mut v = s.add(s.load_partial(dl), bias);
        if job.opts.delta_softplus {
            v = softplus(s, v);
        }
        s.store_partial(v, dtl);
        s.store_partial(s.mul(v, s.load_partial(ul)), dtul);
    }

    // 2. The recurrence; y holds sum_n h[n] C[n] afterwards.
    let reverse = job.opts.reverse;
    let (dt, dtu, a2) = (&scratch.dt[..], &scratch.dtu[..], &scratch.a2[..]);
    let partials = &mut scratch.partials[..];
    match (n % w == 0).then_some(n / w) {
        Some(0) => y.fill(0.0),
        Some(1) => recur_fixed::<S, 1>(s, reverse, a2, bc, dt, dtu, partials, y),
        Some(2) => recur_fixed::<S, 2>(s, reverse, a2, bc, dt, dtu, partials, y),
        Some(3) => recur_fixed::<S, 3>(s, reverse, a2, bc, dt, dtu, partials, y),
        Some(4) => recur_fixed::<S, 4>(s, reverse, a2, bc, dt, dtu, partials, y),
        _ => recur_any(s, reverse, a2, bc, dt, dtu, y, &mut scratch.h),
    }

    // 3. y = (y + D u) * silu(z), vectorised along L.
    let dv = x.d.map(|v| v[d]);
    let z = x.z.map(|z| &z[row..row + len]);
    for (i, (yl, ul)) in y.chunks_mut(w).zip(u.chunks(w)).enumerate() {
        let mut v = s.load_partial(yl);
        if let Some(dv) = dv {
            v = s.mul_add(s.splat(dv), s.load_partial(ul), v);
        }
        if let Some(z) = z {
            let zl = &z[i * w..(i * w + w).min(len)];
            v = s.mul(v, silu(s, s.load_partial(zl)));
        }
        s.store_partial(v, yl);
    }
}

// No closures in the hot paths below: a closure is compiled on its own, without the caller's
// target features, so its intrinsics would become calls.

/// The recurrence when N is exactly `CHUNKS` registers: the state lives in registers, and each
/// step's `h * C` vector goes to `partials` to be summed `WIDTH` steps at a time.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn recur_fixed<S: Simd, const CHUNKS: usize>(
    s: S,
    reverse: bool,
    a2: &[f32],
    bc: &[f32],
    dt: &[f32],
    dtu: &[f32],
    partials: &mut [f32],
    y: &mut [f32],
) {
    let w = S::WIDTH;
    let mut av = [s.splat(0.0); CHUNKS];
    for (c, v) in av.iter_mut().enumerate() {
        *v = s.load(&a2[c * w..]);
    }
    let mut h = [s.splat(0.0); CHUNKS];
    let steps = bc
        .chunks_exact(2 * CHUNKS * w)
        .zip(dt)
        .zip(dtu)
        .zip(partials[..dt.len() * w].chunks_exact_mut(w));
    if reverse {
        for (((row, &dt), &dtu), p) in steps.rev() {
            step_fixed(s, &av, &mut h, row, dt, dtu, p);
        }
    } else {
        for (((row, &dt), &dtu), p) in steps {
            step_fixed(s, &av, &mut h, row, dt, dtu, p);
        }
    }
    for (yl, rows) in y.chunks_mut(w).zip(partials.chunks_exact(w * w)) {
        s.store_partial(s.hsum_rows(rows), yl);
    }
}

/// One step of [`recur_fixed`]: updates `h` from the packed `row` (B then C) and stores the
/// vector whose lanes sum to `sum_n h[n] C[n]` into `partial`.
#[inline(always)]
fn step_fixed<S: Simd, const CHUNKS: usize>(
    s: S,
    av: &[S::V; CHUNKS],
    h: &mut [S::V; CHUNKS],
    row: &[f32],
    dt: f32,
    dtu: f32,
    partial: &mut [f32],
) {
    let w = S::WIDTH;
    // N from the constants, not from the slice, so that the loads below provably stay in bounds
    // and their checks fold away.
    let n = CHUNKS * w;
    let row = &row[..2 * n];
    let (dtv, dtuv) = (s.splat(dt), s.splat(dtu));
    let mut acc = s.splat(0.0);
    for c in 0..CHUNKS {
        let da = exp2(s, s.mul(dtv, av[c]));
        let bx = s.mul(dtuv, s.load(&row[c * w..]));
        h[c] = s.mul_add(da, h[c], bx);
        acc = if c == 0 {
            s.mul(h[c], s.load(&row[n..]))
        } else {
            s.mul_add(h[c], s.load(&row[n + c * w..]), acc)
        };
    }
    s.store(acc, partial);
}

/// The recurrence for any N: whole registers, then a tail of single lanes; the state lives in `h`.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn recur_any<S: Simd>(
    s: S,
    reverse: bool,
    a2: &[f32],
    bc: &[f32],
    dt: &[f32],
    dtu: &[f32],
    y: &mut [f32],
    h: &mut [f32],
) {
    h.fill(0.0);
    let steps = bc
        .chunks_exact(2 * a2.len())
        .zip(dt)
        .zip(dtu)
        .zip(y.iter_mut());
    if reverse {
        for (((row, &dt), &dtu), y) in steps.rev() {
            *y = step_any(s, a2, h, row, dt, dtu);
        }
    } else {
        for (((row, &dt), &dtu), y) in steps {
            *y = step_any(s, a2, h, row, dt, dtu);
        }
    }
}

/// One step of [`recur_any`]; returns `sum_n h[n] C[n]`.
#[inline(always)]
fn step_any<S: Simd>(s: S, a2: &[f32], h: &mut [f32], row: &[f32], dt: f32, dtu: f32) -> f32 {
    let w = S::WIDTH;
    let n = a2.len();
    let full = n - n % w;
    let (bs, cs) = row.split_at(n);
    let (dtv, dtuv) = (s.splat(dt), s.splat(dtu));
    let mut acc = s.splat(0.0);
    for i in (0..full).step_by(w) {
        let da = exp2(s, s.mul(dtv, s.load(&a2[i..])));
        let hv = s.mul_add(da, s.load(&h[i..]), s.mul(dtuv, s.load(&bs[i..])));
        s.store(hv, &mut h[i..]);
        acc = s.mul_add(hv, s.load(&cs[i..]), acc);
    }
    let mut sum = s.hsum(acc);
    for i in full..n {
        let da = exp2(Scalar, dt * a2[i]);
        h[i] = da * h[i] + dtu * bs[i];
        sum += h[i] * cs[i];
    }
    sum
}
