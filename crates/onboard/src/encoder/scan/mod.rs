//! The selective scan: Mamba's S6 recurrence, the one op of the Vim encoder that ONNX lacks.
//!
//! This module owns the kernel behind the custom op `SelectiveScan` (domain `vimgeo`); the ONNX
//! Runtime and tract adapters are thin wrappers that hand it plain slices. Semantics follow
//! mamba_ssm's `selective_scan_ref` with a real `A` and input-dependent `B`, `C` of shape
//! `[batch, state, len]`. Per batch `b` and channel `d`, with `h[N] = 0`:
//!
//! ```text
//! dt     = delta[b,d,t] + delta_bias[d];  if delta_softplus: dt = dt > 20 ? dt : ln(1 + e^dt)
//! h[n]   = e^(dt A[d,n]) h[n] + dt B[b,n,t] u[b,d,t]
//! y[b,d,t] = (Σ_n h[n] C[b,n,t] + D[d] u[b,d,t]) * silu(z[b,d,t])
//! ```
//!
//! for `t = 0..len`, or `t = len-1 down to 0` when `reverse` (flip, scan, flip back). Missing
//! optional inputs drop their term.
//!
//! Use [`selective_scan`] (fastest kernel for this CPU, parallel over channels on the current rayon
//! pool), or [`selective_scan_with`] to pick a [`Kernel`] and [`Threading`] (tests, benchmarks).
//! [`selective_scan_reference`] is the plain scalar loop every kernel is tested against, and
//! [`bench()`] / [`bench_reference`] time them on Vim-like random inputs.
//!
//! How it is fast: `B` and `C` are packed once per batch into `[len, 2 * state]` rows so each step
//! reads two contiguous vectors; the step is vectorised over the state (N = 16 is one AVX-512
//! register, two AVX2 or four NEON ones, held in registers; other N use whole registers plus a
//! scalar tail); the decay `e^(dt A)` is a vectorised Cephes `2^x` polynomial on `dt (A log2 e)`
//! (≈ 1 ulp) since the `N` exponentials per step are most of the work; each step's `h * C` vector
//! is stored and reduced `WIDTH` steps at a time by one transpose-and-add instead of one
//! horizontal sum per step; softplus, `D` and `silu(z)` run vectorised along the sequence, outside
//! the recurrence, without divisions; channels are split across rayon tasks in chunks.
//!
//! Kernels: AVX-512F, AVX2 + FMA (x86-64, detected at run time), NEON (aarch64), and a portable
//! one without intrinsics. All share one generic implementation (`simd.rs`); each ISA only supplies
//! its register operations behind a token that proves the CPU has them.

mod bench;
#[cfg(target_arch = "aarch64")]
mod neon;
mod simd;
#[cfg(target_arch = "x86_64")]
mod x86;

use std::fmt;
use std::str::FromStr;

use rayon::prelude::*;

pub use bench::{bench, bench_reference, BenchReport};

/// The widest register any kernel uses, in f32 lanes.
const MAX_WIDTH: usize = 16;

/// The sizes of one scan. Inputs are row-major and contiguous in the shapes named on
/// [`ScanInputs`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ScanDims {
    /// B: images in the batch.
    pub batch: usize,
    /// D: channels (Vim-S: 2 × 384 = 768).
    pub dim: usize,
    /// L: sequence length (Vim-S at 384 px: 577 tokens).
    pub len: usize,
    /// N: SSM state size per channel (Vim: 16).
    pub state: usize,
}

/// The input tensors of one scan, as flat row-major f32 slices.
#[derive(Clone, Copy, Debug)]
pub struct ScanInputs<'a> {
    /// `u[batch, dim, len]`: the sequence being scanned.
    pub u: &'a [f32],
    /// `delta[batch, dim, len]`: step sizes, before `delta_bias` and softplus.
    pub delta: &'a [f32],
    /// `A[dim, state]`: the (real) state matrix diagonal; Vim's is negative.
    pub a: &'a [f32],
    /// `B[batch, state, len]`: input projection per step.
    pub b: &'a [f32],
    /// `C[batch, state, len]`: output projection per step.
    pub c: &'a [f32],
    /// `D[dim]`: skip connection weight.
    pub d: Option<&'a [f32]>,
    /// `z[batch, dim, len]`: gate, applied as `y * silu(z)`.
    pub z: Option<&'a [f32]>,
    /// `delta_bias[dim]`: added to `delta` before softplus.
    pub delta_bias: Option<&'a [f32]>,
}

/// The op's attributes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ScanOptions {
    /// Apply softplus (mamba's, threshold 20) to `delta + delta_bias`.
    pub delta_softplus: bool,
    /// Scan from the last step to the first (Vim's backward direction).
    pub reverse: bool,
}

/// The implementations of the scan; which exist depends on the CPU (see [`Kernel::available`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kernel {
    /// x86-64 with AVX-512F: 16 lanes.
    Avx512,
    /// x86-64 with AVX2 and FMA: 8 lanes.
    Avx2Fma,
    /// aarch64 NEON: 4 lanes.
    Neon,
    /// Portable code without intrinsics (four-lane arrays the compiler vectorises for the baseline
    /// ISA, e.g. SSE2); always available.
    Scalar,
}

/// How a scan uses threads.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Threading {
    /// All channels on the calling thread.
    Single,
    /// Chunks of channels as tasks on the current rayon pool (the global one unless the caller
    /// runs inside `ThreadPool::install`).
    #[default]
    Rayon,
}

/// Names an input of the scan in errors.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ScanInput {
    U,
    Delta,
    A,
    B,
    C,
    D,
    Z,
    DeltaBias,
    /// The output buffer.
    Y,
}

/// Why a scan was refused. The scan never panics on bad shapes; it returns one of these.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ScanError {
    /// An input (or the output buffer) does not hold the number of values its shape needs.
    #[error(
        "selective scan: {input} has {actual} values, but its shape {axes} = {shape:?} needs {expected}"
    )]
    Length {
        input: ScanInput,
        /// The axis names of its shape, e.g. `[batch, dim, len]`.
        axes: &'static str,
        /// The shape those axes have for these dims.
        shape: Vec<usize>,
        expected: usize,
        actual: usize,
    },
    /// The element count of some tensor does not fit in `usize`.
    #[error("selective scan: dims {dims:?} are too large (element count overflows usize)")]
    TooLarge { dims: ScanDims },
    /// The kernel asked for cannot run on this CPU.
    #[error(
        "selective scan: kernel {kernel} is not available on this CPU (available: {available})"
    )]
    KernelUnavailable {
        kernel: Kernel,
        /// The kernels this CPU can run, comma-separated.
        available: String,
    },
    /// A kernel name that [`Kernel::from_str`] does not know.
    #[error("selective scan: unknown kernel {name:?} (expected avx512, avx2, neon or scalar)")]
    UnknownKernel { name: String },
}

impl fmt::Display for ScanInput {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ScanInput::U => "u",
            ScanInput::Delta => "delta",
            ScanInput::A => "A",
            ScanInput::B => "B",
            ScanInput::C => "C",
            ScanInput::D => "D",
            ScanInput::Z => "z",
            ScanInput::DeltaBias => "delta_bias",
            ScanInput::Y => "the output y",
        })
    }
}

impl Kernel {
    /// Every kernel, fastest first.
    const ALL: [Kernel; 4] = [
        Kernel::Avx512,
        Kernel::Avx2Fma,
        Kernel::Neon,
        Kernel::Scalar,
    ];

    /// The fastest kernel this CPU can run (cheap: std caches the CPU feature bits).
    pub fn detect() -> Kernel {
        Kernel::ALL
            .into_iter()
            .find(|k| k.is_available())
            .unwrap_or(Kernel::Scalar)
    }

    /// Every kernel this CPU can run, fastest first; always ends with [`Kernel::Scalar`].
    pub fn available() -> Vec<Kernel> {
        Kernel::ALL
            .into_iter()
            .filter(|k| k.is_available())
            .collect()
    }

    /// Whether this CPU can run the kernel (checked at run time, not compile time).
    pub fn is_available(self) -> bool {
        self.token().is_some()
    }

    /// The kernel's short name, as [`FromStr`] reads it.
    pub fn name(self) -> &'static str {
        match self {
            Kernel::Avx512 => "avx512",
            Kernel::Avx2Fma => "avx2",
            Kernel::Neon => "neon",
            Kernel::Scalar => "scalar",
        }
    }

    /// Detects the CPU features the kernel needs and returns the token that proves them.
    fn token(self) -> Option<Token> {
        match self {
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx512 => x86::Avx512::try_new().map(Token::Avx512),
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx2Fma => x86::Avx2Fma::try_new().map(Token::Avx2Fma),
            #[cfg(target_arch = "aarch64")]
            Kernel::Neon => neon::Neon::try_new().map(Token::Neon),
            Kernel::Scalar => Some(Token::Scalar),
            #[allow(unreachable_patterns)]
            _ => None,
        }
    }
}

impl fmt::Display for Kernel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Kernel {
    type Err = ScanError;

    fn from_str(s: &str) -> Result<Kernel, ScanError> {
        match s.to_ascii_lowercase().as_str() {
            "avx512" | "avx512f" => Ok(Kernel::Avx512),
            "avx2" | "avx2fma" | "avx2-fma" => Ok(Kernel::Avx2Fma),
            "neon" => Ok(Kernel::Neon),
            "scalar" => Ok(Kernel::Scalar),
            _ => Err(ScanError::UnknownKernel { name: s.to_owned() }),
        }
    }
}

/// A detected kernel: holding one proves the CPU can run it.
#[derive(Clone, Copy, Debug)]
enum Token {
    #[cfg(target_arch = "x86_64")]
    Avx512(x86::Avx512),
    #[cfg(target_arch = "x86_64")]
    Avx2Fma(x86::Avx2Fma),
    #[cfg(target_arch = "aarch64")]
    Neon(neon::Neon),
    Scalar,
}

/// One validated scan, shared by the tasks that run its rows.
struct Job<'a> {
    dims: ScanDims,
    inputs: &'a ScanInputs<'a>,
    opts: ScanOptions,
    /// B and C packed per batch as `[batch, len, 2 * state]`: row `t` is `B[:, t]` then `C[:, t]`.
    bc: &'a [f32],
}

/// Runs the scan with the fastest kernel for this CPU, parallel over channels on the current rayon
/// pool. `out` receives `y[batch, dim, len]`.
pub fn selective_scan(
    dims: ScanDims,
    inputs: &ScanInputs<'_>,
    opts: ScanOptions,
    out: &mut [f32],
) -> Result<(), ScanError> {
    selective_scan_with(Kernel::detect(), Threading::Rayon, dims, inputs, opts, out)
}

/// Runs the scan with a chosen kernel and threading. Every kernel computes the same rows the same
/// way whatever the threading, so `Single` and `Rayon` give bit-identical results.
pub fn selective_scan_with(
    kernel: Kernel,
    threading: Threading,
    dims: ScanDims,
    inputs: &ScanInputs<'_>,
    opts: ScanOptions,
    out: &mut [f32],
) -> Result<(), ScanError> {
    validate(dims, inputs, out.len())?;
    let token = kernel.token().ok_or_else(|| ScanError::KernelUnavailable {
        kernel,
        available: Kernel::available()
            .iter()
            .map(|k| k.name())
            .collect::<Vec<_>>()
            .join(", "),
    })?;
    let ScanDims {
        batch,
        dim,
        len,
        state,
    } = dims;
    if batch * dim * len == 0 {
        return Ok(());
    }

    let per_batch = len * 2 * state;
    let mut bc = vec![0.0f32; batch * per_batch];
    if per_batch > 0 {
        let pack = |(b, dst): (usize, &mut [f32])| pack_bc(dims, inputs, b, dst);
        match threading {
            Threading::Single => bc.chunks_mut(per_batch).enumerate().for_each(pack),
            Threading::Rayon => bc.par_chunks_mut(per_batch).enumerate().for_each(pack),
        }
    }
    let job = Job {
        dims,
        inputs,
        opts,
        bc: &bc,
    };

    let rows = batch * dim;
    match threading {
        Threading::Single => scan_rows(token, &job, 0, out),
        Threading::Rayon => {
            // A few tasks per thread balance the load; a floor keeps tiny scans from paying more
            // in task overhead than they compute.
            let per_task = rows
                .div_ceil(4 * rayon::current_num_threads())
                .max(MIN_ROWS_PER_TASK);
            out.par_chunks_mut(per_task * len)
                .enumerate()
                .for_each(|(i, chunk)| scan_rows(token, &job, i * per_task, chunk));
        }
    }
    Ok(())
}

/// Rows (channels) below which a rayon task is not worth its overhead.
const MIN_ROWS_PER_TASK: usize = 8;

/// Scans the rows `first_row..` whose outputs are `out` with the kernel `token` proves.
fn scan_rows(token: Token, job: &Job, first_row: usize, out: &mut [f32]) {
    match token {
        #[cfg(target_arch = "x86_64")]
        Token::Avx512(simd) => x86::scan_rows_avx512(simd, job, first_row, out),
        #[cfg(target_arch = "x86_64")]
        Token::Avx2Fma(simd) => x86::scan_rows_avx2(simd, job, first_row, out),
        #[cfg(target_arch = "aarch64")]
        Token::Neon(simd) => neon::scan_rows_neon(simd, job, first_row, out),
        Token::Scalar => simd::scan_rows(simd::Portable, job, first_row, out),
    }
}

/// Transposes batch `b` of B and C (`[state, len]` each) into `dst` as `[len, 2 * state]` rows.
fn pack_bc(dims: ScanDims, inputs: &ScanInputs<'_>, b: usize, dst: &mut [f32]) {
    let (len, n) = (dims.len, dims.state);
    let src_b = &inputs.b[b * n * len..(b + 1) * n * len];
    let src_c = &inputs.c[b * n * len..(b + 1) * n * len];
    for (t, row) in dst.chunks_exact_mut(2 * n).enumerate() {
        let (rb, rc) = row.split_at_mut(n);
        for i in 0..n {
            rb[i] = src_b[i * len + t];
            rc[i] = src_c[i * len + t];
        }
    }
}

/// Checks every slice against `dims`, naming the first that does not fit.
fn validate(dims: ScanDims, x: &ScanInputs<'_>, out_len: usize) -> Result<(), ScanError> {
    let ScanDims {
        batch,
        dim,
        len,
        state,
    } = dims;
    let too_large = ScanError::TooLarge { dims };
    let count = |shape: &[usize]| {
        shape
            .iter()
            .try_fold(1usize, |acc, &s| acc.checked_mul(s))
            .ok_or_else(|| too_large.clone())
    };
    // Also guards the packed B/C buffer, which holds 2 * batch * state * len values.
    count(&[2, batch, state, len])?;
    let check = |input, axes, shape: Vec<usize>, actual: usize| {
        let expected = count(&shape)?;
        if actual == expected {
            Ok(())
        } else {
            Err(ScanError::Length {
                input,
                axes,
                shape,
                expected,
                actual,
            })
        }
    };
    let bdl = || vec![batch, dim, len];
    check(ScanInput::U, "[batch, dim, len]", bdl(), x.u.len())?;
    check(ScanInput::Delta, "[batch, dim, len]", bdl(), x.delta.len())?;
    check(ScanInput::A, "[dim, state]", vec![dim, state], x.a.len())?;
    let bnl = || vec![batch, state, len];
    check(ScanInput::B, "[batch, state, len]", bnl(), x.b.len())?;
    check(ScanInput::C, "[batch, state, len]", bnl(), x.c.len())?;
    if let Some(d) = x.d {
        check(ScanInput::D, "[dim]", vec![dim], d.len())?;
    }
    if let Some(z) = x.z {
        check(ScanInput::Z, "[batch, dim, len]", bdl(), z.len())?;
    }
    if let Some(bias) = x.delta_bias {
        check(ScanInput::DeltaBias, "[dim]", vec![dim], bias.len())?;
    }
    check(ScanInput::Y, "[batch, dim, len]", bdl(), out_len)
}

/// The oracle: mamba's `selective_scan_ref` as a plain f32 loop with std's `exp`, one step at a
/// time in the order the scan visits them. Slow; for tests and benchmarks.
pub fn selective_scan_reference(
    dims: ScanDims,
    inputs: &ScanInputs<'_>,
    opts: ScanOptions,
    out: &mut [f32],
) -> Result<(), ScanError> {
    validate(dims, inputs, out.len())?;
    let ScanDims {
        batch,
        dim,
        len,
        state,
    } = dims;
    let x = inputs;
    let mut h = vec![0.0f32; state];
    for b in 0..batch {
        for d in 0..dim {
            h.fill(0.0);
            let row = (b * dim + d) * len;
            for step in 0..len {
                let t = if opts.reverse { len - 1 - step } else { step };
                let mut dt = x.delta[row + t];
                if let Some(bias) = x.delta_bias {
                    dt += bias[d];
                }
                if opts.delta_softplus {
                    dt = softplus_reference(dt);
                }
                let ut = x.u[row + t];
                let mut y = 0.0f32;
                for (n, hn) in h.iter_mut().enumerate() {
                    let bc = (b * state + n) * len + t;
                    *hn = (dt * x.a[d * state + n]).exp() * *hn + dt * x.b[bc] * ut;
                    y += *hn * x.c[bc];
                }
                if let Some(dv) = x.d {
                    y += dv[d] * ut;
                }
                if let Some(z) = x.z {
                    let zt = z[row + t];
                    y *= zt / (1.0 + (-zt).exp());
                }
                out[row + t] = y;
            }
        }
    }
    Ok(())
}

/// torch's softplus with mamba's threshold, in std f32 maths.
fn softplus_reference(x: f32) -> f32 {
    if x > simd::SOFTPLUS_THRESHOLD {
        x
    } else {
        x.exp().ln_1p()
    }
}

#[cfg(test)]
mod tests {
    use super::bench::RandomInputs;
    use super::simd::{self, Simd};
    use super::*;

    /// Every combination of the optional inputs: (D, z, delta_bias).
    const PRESENCE: [(bool, bool, bool); 8] = [
        (false, false, false),
        (true, false, false),
        (false, true, false),
        (false, false, true),
        (true, true, false),
        (true, false, true),
        (false, true, true),
        (true, true, true),
    ];

    fn dims(batch: usize, dim: usize, len: usize, state: usize) -> ScanDims {
        ScanDims {
            batch,
            dim,
            len,
            state,
        }
    }

    fn run(
        kernel: Kernel,
        threading: Threading,
        d: ScanDims,
        x: &ScanInputs,
        o: ScanOptions,
    ) -> Vec<f32> {
        let mut out = vec![f32::NAN; d.batch * d.dim * d.len];
        selective_scan_with(kernel, threading, d, x, o, &mut out).unwrap();
        out
    }

    fn reference(d: ScanDims, x: &ScanInputs, o: ScanOptions) -> Vec<f32> {
        let mut out = vec![f32::NAN; d.batch * d.dim * d.len];
        selective_scan_reference(d, x, o, &mut out).unwrap();
        out
    }

    /// Largest `|got - want| / max(1, |want|)`; NaN anywhere counts as infinite.
    fn max_err(got: &[f32], want: &[f32]) -> f32 {
        assert_eq!(got.len(), want.len());
        got.iter()
            .zip(want)
            .map(|(&g, &w)| {
                let e = (g - w).abs() / w.abs().max(1.0);
                if e.is_nan() {
                    f32::INFINITY
                } else {
                    e
                }
            })
            .fold(0.0, f32::max)
    }

    #[test]
    fn every_kernel_matches_the_reference() {
        let shapes = [
            dims(1, 8, 37, 16),
            dims(2, 3, 5, 7),
            dims(1, 1, 1, 16),
            dims(2, 5, 19, 17),
            dims(1, 4, 9, 8),
            dims(1, 4, 9, 4),
            dims(2, 2, 33, 48),
            dims(1, 2, 3, 64),
            dims(1, 3, 4, 1),
            dims(1, 2, 5, 0),
            dims(2, 1, 1, 3),
        ];
        for kernel in Kernel::available() {
            for (i, &d) in shapes.iter().enumerate() {
                for softplus in [false, true] {
                    let data = RandomInputs::vim_like(d, softplus, 1000 + i as u64);
                    for reverse in [false, true] {
                        for (with_d, with_z, with_bias) in PRESENCE {
                            let x = data.view(with_d, with_z, with_bias);
                            let o = ScanOptions {
                                delta_softplus: softplus,
                                reverse,
                            };
                            let err = max_err(
                                &run(kernel, Threading::Single, d, &x, o),
                                &reference(d, &x, o),
                            );
                            assert!(
                                err <= 1e-5,
                                "{kernel} {d:?} {o:?} D={with_d} z={with_z} bias={with_bias}: err {err}"
                            );
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn every_kernel_matches_the_reference_at_vim_scale() {
        // A slice of Vim-S: all 577 tokens, 48 of the 768 channels, both directions.
        let d = dims(1, 48, 577, 16);
        let data = RandomInputs::vim_like(d, true, 7);
        let x = data.view(true, true, true);
        for reverse in [false, true] {
            let o = ScanOptions {
                delta_softplus: true,
                reverse,
            };
            let want = reference(d, &x, o);
            for kernel in Kernel::available() {
                let err = max_err(&run(kernel, Threading::Rayon, d, &x, o), &want);
                assert!(err <= 1e-5, "{kernel} reverse={reverse}: err {err}");
            }
        }
    }

    #[test]
    fn wide_deltas_cross_the_softplus_threshold() {
        let d = dims(1, 6, 64, 16);
        let mut data = RandomInputs::vim_like(d, true, 11);
        let mut rng = bench::Rng::new(12);
        for v in &mut data.delta {
            *v = rng.uniform(-40.0, 40.0);
        }
        let x = data.view(true, true, true);
        for reverse in [false, true] {
            let o = ScanOptions {
                delta_softplus: true,
                reverse,
            };
            let want = reference(d, &x, o);
            for kernel in Kernel::available() {
                let err = max_err(&run(kernel, Threading::Single, d, &x, o), &want);
                assert!(err <= 1e-5, "{kernel} reverse={reverse}: err {err}");
            }
        }
    }

    #[test]
    fn reverse_is_flip_scan_flip() {
        let d = dims(2, 3, 23, 16);
        let data = RandomInputs::vim_like(d, true, 5);
        let flip = |v: &[f32]| -> Vec<f32> {
            v.chunks(d.len)
                .flat_map(|r| r.iter().rev().copied())
                .collect()
        };
        let (u, delta, b, c, z) = (
            flip(&data.u),
            flip(&data.delta),
            flip(&data.b),
            flip(&data.c),
            flip(&data.z),
        );
        let flipped = ScanInputs {
            u: &u,
            delta: &delta,
            b: &b,
            c: &c,
            z: Some(&z),
            ..data.view(true, true, true)
        };
        let fwd = ScanOptions {
            delta_softplus: true,
            reverse: false,
        };
        let rev = ScanOptions {
            reverse: true,
            ..fwd
        };
        let want = flip(&reference(d, &flipped, fwd));
        assert_eq!(reference(d, &data.view(true, true, true), rev), want);
        for kernel in Kernel::available() {
            let got = run(
                kernel,
                Threading::Single,
                d,
                &data.view(true, true, true),
                rev,
            );
            assert!(max_err(&got, &want) <= 1e-5, "{kernel}");
        }
    }

    #[test]
    fn rayon_and_single_are_bit_identical() {
        let d = dims(2, 37, 50, 16);
        let data = RandomInputs::vim_like(d, true, 3);
        let x = data.view(true, true, true);
        for kernel in Kernel::available() {
            for reverse in [false, true] {
                let o = ScanOptions {
                    delta_softplus: true,
                    reverse,
                };
                let single = run(kernel, Threading::Single, d, &x, o);
                let pool = rayon::ThreadPoolBuilder::new()
                    .num_threads(3)
                    .build()
                    .unwrap();
                let parallel = pool.install(|| run(kernel, Threading::Rayon, d, &x, o));
                assert_eq!(
                    single.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                    parallel.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                    "{kernel}"
                );
            }
        }
    }

    #[test]
    fn empty_dims_are_fine() {
        for d in [dims(0, 4, 5, 16), dims(1, 0, 5, 16), dims(1, 4, 0, 16)] {
            let data = RandomInputs::vim_like(d, true, 1);
            for kernel in Kernel::available() {
                assert!(run(
                    kernel,
                    Threading::Rayon,
                    d,
                    &data.view(true, true, true),
                    ScanOptions::default()
                )
                .is_empty());
            }
        }
    }

    #[test]
    fn bad_lengths_name_the_input() {
        let d = dims(2, 3, 5, 4);
        let data = RandomInputs::vim_like(d, true, 1);
        let short = vec![0.0f32; 1];
        let good = data.view(true, true, true);
        let cases: [(ScanInput, ScanInputs); 8] = [
            (ScanInput::U, ScanInputs { u: &short, ..good }),
            (
                ScanInput::Delta,
                ScanInputs {
                    delta: &short,
                    ..good
                },
            ),
            (ScanInput::A, ScanInputs { a: &short, ..good }),
            (ScanInput::B, ScanInputs { b: &short, ..good }),
            (ScanInput::C, ScanInputs { c: &short, ..good }),
            (
                ScanInput::D,
                ScanInputs {
                    d: Some(&short),
                    ..good
                },
            ),
            (
                ScanInput::Z,
                ScanInputs {
                    z: Some(&short),
                    ..good
                },
            ),
            (
                ScanInput::DeltaBias,
                ScanInputs {
                    delta_bias: Some(&short),
                    ..good
                },
            ),
        ];
        let mut out = vec![0.0f32; 2 * 3 * 5];
        let o = ScanOptions::default();
        for (input, x) in cases {
            for kernel in Kernel::available() {
                let err =
                    selective_scan_with(kernel, Threading::Rayon, d, &x, o, &mut out).unwrap_err();
                assert!(
                    matches!(err, ScanError::Length { input: i, actual: 1, .. } if i == input),
                    "{err}"
                );
            }
            let err = selective_scan_reference(d, &x, o, &mut out).unwrap_err();
            assert!(
                matches!(err, ScanError::Length { input: i, .. } if i == input),
                "{err}"
            );
        }
        let err = selective_scan(d, &good, o, &mut out[1..]).unwrap_err();
        assert_eq!(
            err,
            ScanError::Length {
                input: ScanInput::Y,
                axes: "[batch, dim, len]",
                shape: vec![2, 3, 5],
                expected: 30,
                actual: 29
            }
        );
        assert!(
            err.to_string().contains("the output y has 29 values"),
            "{err}"
        );

        let huge = dims(usize::MAX / 2, 3, 5, 4);
        assert_eq!(
            selective_scan(huge, &good, o, &mut out).unwrap_err(),
            ScanError::TooLarge { dims: huge }
        );
    }

    #[test]
    fn unavailable_kernels_are_refused() {
        let d = dims(1, 2, 3, 4);
        let data = RandomInputs::vim_like(d, true, 1);
        let mut out = vec![0.0f32; 6];
        for kernel in [Kernel::Avx512, Kernel::Avx2Fma, Kernel::Neon] {
            let result = selective_scan_with(
                kernel,
                Threading::Single,
                d,
                &data.view(true, true, true),
                ScanOptions::default(),
                &mut out,
            );
            if kernel.is_available() {
                assert!(result.is_ok());
            } else {
                assert!(
                    matches!(result, Err(ScanError::KernelUnavailable { kernel: k, .. }) if k == kernel)
                );
            }
        }
        assert_eq!(Kernel::available().last(), Some(&Kernel::Scalar));
        assert_eq!(Kernel::detect(), Kernel::available()[0]);
        for k in [
            Kernel::Avx512,
            Kernel::Avx2Fma,
            Kernel::Neon,
            Kernel::Scalar,
        ] {
            assert_eq!(k.name().parse::<Kernel>().unwrap(), k);
        }
        assert!(matches!(
            "sse9".parse::<Kernel>(),
            Err(ScanError::UnknownKernel { .. })
        ));
    }

    #[derive(Clone, Copy, Debug)]
    enum Math {
        Exp,
        Exp2,
        Ln,
        Recip,
        Softplus,
        Silu,
    }

    fn apply<S: Simd>(s: S, f: Math, xs: &[f32]) -> Vec<f32> {
        let mut out = vec![0.0; xs.len()];
        simd::map(s, xs, &mut out, |v| match f {
            Math::Exp => simd::exp(s, v),
            Math::Exp2 => simd::exp2(s, v),
            Math::Ln => simd::ln_ge1(s, v),
            Math::Recip => s.recip(v),
            Math::Softplus => simd::softplus(s, v),
            Math::Silu => simd::silu(s, v),
        });
        out
    }

    /// `f` on `xs` through each available kernel's vector maths.
    fn each_kernel(f: Math, xs: &[f32]) -> Vec<(Kernel, Vec<f32>)> {
        Kernel::available()
            .into_iter()
            .map(|k| {
                let ys = match k.token().unwrap() {
                    #[cfg(target_arch = "x86_64")]
                    Token::Avx512(s) => apply(s, f, xs),
                    #[cfg(target_arch = "x86_64")]
                    Token::Avx2Fma(s) => apply(s, f, xs),
                    #[cfg(target_arch = "aarch64")]
                    Token::Neon(s) => apply(s, f, xs),
                    Token::Scalar => apply(simd::Portable, f, xs),
                };
                (k, ys)
            })
            .collect()
    }

    fn sweep(lo: f32, hi: f32, count: usize) -> Vec<f32> {
        (0..=count)
            .map(|i| lo + (hi - lo) * (i as f32 / count as f32))
            .collect()
    }

    #[test]
    fn vector_exp_is_accurate_and_finite() {
        let xs = sweep(-87.33, 88.37, 200_001);
        for (k, ys) in each_kernel(Math::Exp, &xs) {
            for (&x, &y) in xs.iter().zip(&ys) {
                let want = (x as f64).exp();
                let rel = ((y as f64 - want) / want).abs();
                assert!(rel < 4e-7, "{k}: exp({x}) = {y}, want {want} (rel {rel:e})");
            }
        }

        let specials = [
            0.0,
            -0.0,
            1.0,
            -1.0,
            -87.4,
            -88.0,
            -100.0,
            -1e4,
            -1e30,
            f32::MIN,
            f32::NEG_INFINITY,
            88.5,
            89.0,
            100.0,
            1e30,
            f32::MAX,
            f32::INFINITY,
        ];
        for (k, ys) in each_kernel(Math::Exp, &specials) {
            for (&x, &y) in specials.iter().zip(&ys) {
                assert!(y.is_finite() && y >= 0.0, "{k}: exp({x}) = {y}");
                if x == 0.0 {
                    assert_eq!(y, 1.0, "{k}");
                } else if x < -87.34 {
                    assert_eq!(y, 0.0, "{k}: exp({x})");
                } else if x > 88.4 {
                    assert!(y > 2e38, "{k}: exp({x}) = {y}");
                }
            }
            let nan = each_kernel(Math::Exp, &[f32::NAN]);
            assert!(
                nan.iter().all(|(_, y)| y[0].is_nan()),
                "{k}: exp(NaN) must stay NaN"
            );
        }
    }

    #[test]
    fn vector_exp2_is_accurate_and_clamped() {
        let xs = sweep(-126.0, 127.0, 200_001);
        for (k, ys) in each_kernel(Math::Exp2, &xs) {
            for (&x, &y) in xs.iter().zip(&ys) {
                let want = (x as f64).exp2();
                let rel = ((y as f64 - want) / want).abs();
                assert!(
                    rel < 3e-7,
                    "{k}: exp2({x}) = {y}, want {want} (rel {rel:e})"
                );
            }
        }
        let specials = [
            0.0,
            -127.0,
            -200.0,
            -1e30,
            f32::NEG_INFINITY,
            127.0,
            200.0,
            f32::INFINITY,
        ];
        for (k, ys) in each_kernel(Math::Exp2, &specials) {
            for (&x, &y) in specials.iter().zip(&ys) {
                assert!(y.is_finite() && y >= 0.0, "{k}: exp2({x}) = {y}");
                if x == 0.0 {
                    assert_eq!(y, 1.0, "{k}");
                } else if x <= -127.0 {
                    assert!(y < f32::MIN_POSITIVE, "{k}: exp2({x}) = {y}");
                } else {
                    assert!(y >= 127.0f32.exp2() * (1.0 - 1e-6), "{k}: exp2({x}) = {y}");
                }
            }
        }
        let nan = each_kernel(Math::Exp2, &[f32::NAN]);
        assert!(
            nan.iter().all(|(_, y)| y[0].is_nan()),
            "exp2(NaN) must stay NaN"
        );
    }

    #[test]
    fn vector_recip_is_accurate_from_one_up() {
        let xs: Vec<f32> = sweep(0.0, 80.0, 100_000).iter().map(|e| e.exp()).collect();
        for (k, ys) in each_kernel(Math::Recip, &xs) {
            for (&x, &y) in xs.iter().zip(&ys) {
                let want = 1.0 / x as f64;
                let rel = ((y as f64 - want) / want).abs();
                assert!(rel < 3e-7, "{k}: 1/{x} = {y}, want {want} (rel {rel:e})");
            }
        }
    }

    fn hsum_rows_matches_sums<S: Simd>(s: S) -> Result<(), String> {
        let w = S::WIDTH;
        let mut rng = bench::Rng::new(9);
        let rows: Vec<f32> = (0..w * w).map(|_| rng.normal()).collect();
        let mut got = vec![0.0; w];
        s.store(s.hsum_rows(&rows), &mut got);
        for (j, (row, &g)) in rows.chunks(w).zip(&got).enumerate() {
            let want: f32 = row.iter().sum();
            if (g - want).abs() > 1e-5 {
                return Err(format!("lane {j}: {g}, want {want}"));
            }
        }
        Ok(())
    }

    #[test]
    fn hsum_rows_puts_row_j_in_lane_j() {
        for kernel in Kernel::available() {
            let result = match kernel.token().unwrap() {
                #[cfg(target_arch = "x86_64")]
                Token::Avx512(s) => hsum_rows_matches_sums(s),
                #[cfg(target_arch = "x86_64")]
                Token::Avx2Fma(s) => hsum_rows_matches_sums(s),
                #[cfg(target_arch = "aarch64")]
                Token::Neon(s) => hsum_rows_matches_sums(s),
                Token::Scalar => hsum_rows_matches_sums(simd::Portable),
            };
            if let Err(e) = result {
                panic!("{kernel}: {e}");
            }
        }
    }

    #[test]
    fn vector_ln_is_accurate_from_one_up() {
        let xs: Vec<f32> = sweep(0.0, 30.0, 100_000).iter().map(|e| e.exp()).collect();
        for (k, ys) in each_kernel(Math::Ln, &xs) {
            for (&x, &y) in xs.iter().zip(&ys) {
                let want = (x as f64).ln();
                let err = (y as f64 - want).abs() / want.abs().max(1.0);
                assert!(err < 3e-7, "{k}: ln({x}) = {y}, want {want}");
            }
        }
    }

    #[test]
    fn softplus_follows_mamba_and_its_threshold() {
        let mut xs = sweep(-100.0, 30.0, 100_000);
        xs.extend([
            19.999, 20.0, 20.000_002, 20.5, 21.0, 100.0, 1e6, 1e-8, -1e-8, 0.0,
        ]);
        for (k, ys) in each_kernel(Math::Softplus, &xs) {
            for (&x, &y) in xs.iter().zip(&ys) {
                if x > 20.0 {
                    assert_eq!(y, x, "{k}: above the threshold softplus is the identity");
                }
                let want = softplus_reference(x);
                let err = (y - want).abs() / want.abs().max(1.0);
                assert!(err < 1e-6, "{k}: softplus({x}) = {y}, want {want}");
                // Small results keep their relative accuracy (matters for tiny dt).
                if want > 1e-30 {
                    assert!(
                        (y - want).abs() / want < 1e-6,
                        "{k}: softplus({x}) = {y}, want {want}"
                    );
                }
            }
        }
        assert_eq!(softplus_reference(20.0), 20.0f32.exp().ln_1p());
        assert_eq!(softplus_reference(20.5), 20.5);
    }

    #[test]
    fn vector_silu_matches_std() {
        let xs = sweep(-120.0, 120.0, 100_000);
        for (k, ys) in each_kernel(Math::Silu, &xs) {
            for (&x, &y) in xs.iter().zip(&ys) {
                let want = x / (1.0 + (-x).exp());
                let err = (y - want).abs() / want.abs().max(1.0);
                assert!(err < 1e-6, "{k}: silu({x}) = {y}, want {want}");
            }
        }
    }

    #[test]
    fn bench_reports_time_and_agreement() {
        let d = dims(1, 8, 33, 16);
        for kernel in Kernel::available() {
            let r = bench(d, kernel, Threading::Rayon, 2).unwrap();
            assert_eq!(r.kernel, Some(kernel));
            assert!(
                r.ms_min >= 0.0 && r.ms_min <= r.ms_p50 && r.max_err <= 1e-5,
                "{r:?}"
            );
        }
        assert_eq!(bench_reference(d, 1).unwrap().kernel, None);
    }

    /// Timings for the report: `cargo test --release -- --ignored --nocapture scan_timings`.
    #[test]
    #[ignore = "timing run, not a check"]
    fn scan_timings() {
        let d = dims(1, 768, 577, 16);
        println!("{}", bench_reference(d, 3).unwrap());
        for kernel in Kernel::available() {
            for threading in [Threading::Single, Threading::Rayon] {
                println!("{}", bench(d, kernel, threading, 30).unwrap());
            }
        }
    }
}
