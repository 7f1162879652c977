//! Timing the scan on Vim-like random inputs (for the CLI's benchmark command and for the tests'
//! input generator).

use std::fmt;
use std::time::Instant;

use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::StandardNormal;

use super::{
    selective_scan_reference, selective_scan_with, Kernel, ScanDims, ScanError, ScanInputs,
    ScanOptions, Threading,
};

/// What one benchmark measured.
#[derive(Clone, Debug, PartialEq)]
pub struct BenchReport {
    pub dims: ScanDims,
    /// The kernel timed; `None` for the scalar reference loop.
    pub kernel: Option<Kernel>,
    pub threading: Threading,
    /// Timed scans (after one untimed warm-up).
    pub iters: usize,
    pub ms_min: f64,
    pub ms_p50: f64,
    pub ms_mean: f64,
    /// Largest `|y - y_ref| / max(1, |y_ref|)` against [`selective_scan_reference`] on the same
    /// inputs (0 for the reference itself): the kernel's accuracy on this machine.
    pub max_err: f32,
}

impl fmt::Display for BenchReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let d = self.dims;
        let kernel = self.kernel.map_or("reference", Kernel::name);
        let threads = match self.threading {
            Threading::Single => "1 thread".to_owned(),
            Threading::Rayon => format!("rayon x{}", rayon::current_num_threads()),
        };
        write!(
            f,
            "selective scan B={} D={} L={} N={} {kernel:>9} {threads:>9}: p50 {:.3} ms, min {:.3} ms, \
             mean {:.3} ms over {} scans; max err vs reference {:.1e}",
            d.batch, d.dim, d.len, d.state, self.ms_p50, self.ms_min, self.ms_mean, self.iters, self.max_err
        )
    }
}

/// The options Vim uses: softplus on, with D, z and delta_bias; forward direction.
const VIM_OPTIONS: ScanOptions = ScanOptions {
    delta_softplus: true,
    reverse: false,
};

/// Times `iters` scans of `dims` with `kernel` on Vim-like random inputs, and checks the result
/// once against the reference loop.
pub fn bench(
    dims: ScanDims,
    kernel: Kernel,
    threading: Threading,
    iters: usize,
) -> Result<BenchReport, ScanError> {
    let data = RandomInputs::vim_like(dims, true, 0x5eed);
    let x = data.view(true, true, true);
    let mut out = vec![0.0f32; data.u.len()];
    let run = |out: &mut [f32]| selective_scan_with(kernel, threading, dims, &x, VIM_OPTIONS, out);
    let mut report = time(dims, Some(kernel), threading, iters, &mut out, run)?;
    let mut want = vec![0.0f32; out.len()];
    selective_scan_reference(dims, &x, VIM_OPTIONS, &mut want)?;
    report.max_err = out
        .iter()
        .zip(&want)
        .map(|(&y, &w)| (y - w).abs() / w.abs().max(1.0))
        .fold(
            0.0,
            |m, e| if e.is_nan() { f32::INFINITY } else { m.max(e) },
        );
    Ok(report)
}

/// Times `iters` runs of the scalar reference loop, single-threaded.
pub fn bench_reference(dims: ScanDims, iters: usize) -> Result<BenchReport, ScanError> {
    let data = RandomInputs::vim_like(dims, true, 0x5eed);
    let x = data.view(true, true, true);
    let mut out = vec![0.0f32; data.u.len()];
    let run = |out: &mut [f32]| selective_scan_reference(dims, &x, VIM_OPTIONS, out);
    time(dims, None, Threading::Single, iters, &mut out, run)
}

fn time(
    dims: ScanDims,
    kernel: Option<Kernel>,
    threading: Threading,
    iters: usize,
    out: &mut [f32],
    run: impl Fn(&mut [f32]) -> Result<(), ScanError>,
) -> Result<BenchReport, ScanError> {
    let iters = iters.max(1);
    run(out)?;
    let mut ms = Vec::with_capacity(iters);
    for _ in 0..iters {
        let start = Instant::now();
        run(out)?;
        ms.push(start.elapsed().as_secs_f64() * 1e3);
    }
    ms.sort_by(f64::total_cmp);
    Ok(BenchReport {
        dims,
        kernel,
        threading,
        iters,
        ms_min: ms[0],
        ms_p50: ms[iters / 2],
        ms_mean: ms.iter().sum::<f64>() / iters as f64,
        max_err: 0.0,
    })
}

/// The benchmark's seeded generator: reproducible inputs.
pub(super) struct Rng(ChaCha8Rng);

impl Rng {
    pub(super) fn new(seed: u64) -> Rng {
        Rng(ChaCha8Rng::seed_from_u64(seed))
    }

    /// Uniform in `[lo, hi)`.
    pub(super) fn uniform(&mut self, lo: f32, hi: f32) -> f32 {
        lo + (hi - lo) * self.0.random::<f32>()
    }

    /// Standard normal.
    pub(super) fn normal(&mut self) -> f32 {
        self.0.sample(StandardNormal)
    }

    fn normals(&mut self, count: usize) -> Vec<f32> {
        (0..count).map(|_| self.normal()).collect()
    }
}

/// Owned random inputs shaped like a Vim layer's scan.
pub(super) struct RandomInputs {
    pub(super) u: Vec<f32>,
    pub(super) delta: Vec<f32>,
    pub(super) a: Vec<f32>,
    pub(super) b: Vec<f32>,
    pub(super) c: Vec<f32>,
    pub(super) d: Vec<f32>,
    pub(super) z: Vec<f32>,
    pub(super) delta_bias: Vec<f32>,
}

impl RandomInputs {
    /// u, B, C, z ~ N(0, 1); A = -(1..=N) per channel (Mamba's S4D-real init); D ≈ 1.
    /// With `softplus`, delta ~ N(0, 0.5²) and delta_bias = softplus⁻¹(dt₀) with dt₀ log-uniform in
    /// [0.001, 0.1] (Mamba's dt init); without, delta and delta_bias are small positive steps, so
    /// the state stays bounded either way.
    pub(super) fn vim_like(dims: ScanDims, softplus: bool, seed: u64) -> RandomInputs {
        let ScanDims {
            batch,
            dim,
            len,
            state,
        } = dims;
        let mut rng = Rng::new(seed);
        let bdl = batch * dim * len;
        let bnl = batch * state * len;
        let (delta, delta_bias) = if softplus {
            let delta = rng.normals(bdl).iter().map(|v| 0.5 * v).collect();
            let bias = (0..dim)
                .map(|_| {
                    let dt0 = rng.uniform(0.001f32.ln(), 0.1f32.ln()).exp();
                    dt0 + (-(-dt0).exp_m1()).ln()
                })
                .collect();
            (delta, bias)
        } else {
            let delta = (0..bdl).map(|_| rng.uniform(0.001, 0.1)).collect();
            let bias = (0..dim).map(|_| rng.uniform(0.0, 0.01)).collect();
            (delta, bias)
        };
        RandomInputs {
            u: rng.normals(bdl),
            delta,
            a: (0..dim * state)
                .map(|i| -((i % state + 1) as f32))
                .collect(),
            b: rng.normals(bnl),
            c: rng.normals(bnl),
            d: (0..dim).map(|_| 1.0 + 0.1 * rng.normal()).collect(),
            z: rng.normals(bdl),
            delta_bias,
        }
    }

    /// Borrows the inputs, leaving out the optional ones not asked for.
    pub(super) fn view(&self, with_d: bool, with_z: bool, with_bias: bool) -> ScanInputs<'_> {
        ScanInputs {
            u: &self.u,
            delta: &self.delta,
            a: &self.a,
            b: &self.b,
            c: &self.c,
            d: with_d.then_some(&self.d[..]),
            z: with_z.then_some(&self.z[..]),
            delta_bias: with_bias.then_some(&self.delta_bias[..]),
        }
    }
}
