//! The `vimgeo::SelectiveScan` ONNX operator, engine-neutral: its contract, its checks, its clock.
//!
//! The node (written by `models/vimgeo/export.py`, domain `vimgeo`, version 1):
//! inputs `u[B,D,L] delta[B,D,L] A[D,N] B[B,N,L] C[B,N,L]` and the optional `D[D] z[B,D,L] delta_bias[D]`,
//! int attributes `delta_softplus` and `reverse` (default 0), one output `y[B,D,L]`.
//!
//! The ONNX Runtime and tract adapters (`ort_engine`, `tract_engine`) only move tensors in and out; the
//! shape checks, the call to the one kernel ([`super::scan::selective_scan`]) and the timing live here.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use super::scan::{selective_scan, ScanDims, ScanInputs, ScanOptions};

/// The custom operator's domain.
pub const SCAN_DOMAIN: &str = "vimgeo";
/// The custom operator's type.
pub const SCAN_OP: &str = "SelectiveScan";
/// The domain version this runtime implements.
pub const SCAN_OP_VERSION: u32 = 1;

/// Total time spent inside the kernel, over all engines and threads, in nanoseconds.
static KERNEL_NANOS: AtomicU64 = AtomicU64::new(0);
/// Number of kernel calls.
static KERNEL_CALLS: AtomicU64 = AtomicU64::new(0);

/// How much the SelectiveScan kernel has run in this process, for the benchmark's time share.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ScanKernelTime {
    /// Number of SelectiveScan node evaluations.
    pub calls: u64,
    /// Total time inside the kernel.
    pub total: Duration,
}

impl ScanKernelTime {
    /// The running totals so far; subtract two readings to time a stretch of work.
    pub fn now() -> ScanKernelTime {
        ScanKernelTime {
            calls: KERNEL_CALLS.load(Ordering::Relaxed),
            total: Duration::from_nanos(KERNEL_NANOS.load(Ordering::Relaxed)),
        }
    }

    /// The work done between `earlier` and `self`.
    pub fn since(self, earlier: ScanKernelTime) -> ScanKernelTime {
        ScanKernelTime {
            calls: self.calls - earlier.calls,
            total: self.total.saturating_sub(earlier.total),
        }
    }
}

/// The node's attributes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub(crate) struct ScanAttributes {
    pub delta_softplus: bool,
    pub reverse: bool,
}

/// One input tensor as an engine hands it over: its shape and its contiguous row-major data.
#[derive(Debug, Clone, Copy)]
pub(crate) struct TensorArg<'a> {
    pub shape: &'a [usize],
    pub data: &'a [f32],
}

/// The inputs of one evaluation, in the node's order.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ScanArgs<'a> {
    pub u: TensorArg<'a>,
    pub delta: TensorArg<'a>,
    pub a: TensorArg<'a>,
    pub b: TensorArg<'a>,
    pub c: TensorArg<'a>,
    pub d: Option<TensorArg<'a>>,
    pub z: Option<TensorArg<'a>>,
    pub delta_bias: Option<TensorArg<'a>>,
}

impl<'a> ScanArgs<'a> {
    /// Checks every shape against `u`'s and returns the problem size.
    pub(crate) fn dims(&self) -> Result<ScanDims, String> {
        let [batch, dim, len] = *self.u.shape else {
            return Err(format!(
                "{SCAN_OP}: u must be [B, D, L], got {:?}",
                self.u.shape
            ));
        };
        let [_, state] = *self.a.shape else {
            return Err(format!(
                "{SCAN_OP}: A must be [D, N], got {:?}",
                self.a.shape
            ));
        };
        let checks: [(&str, Option<TensorArg>, &[usize]); 7] = [
            ("delta", Some(self.delta), &[batch, dim, len]),
            ("A", Some(self.a), &[dim, state]),
            ("B", Some(self.b), &[batch, state, len]),
            ("C", Some(self.c), &[batch, state, len]),
            ("D", self.d, &[dim]),
            ("z", self.z, &[batch, dim, len]),
            ("delta_bias", self.delta_bias, &[dim]),
        ];
        for (name, arg, want) in checks {
            if let Some(arg) = arg {
                if arg.shape != want {
                    return Err(format!(
                        "{SCAN_OP}: {name} has shape {:?}, expected {want:?} (u is {:?}, A is {:?})",
                        arg.shape, self.u.shape, self.a.shape
                    ));
                }
                let n: usize = arg.shape.iter().product();
                if arg.data.len() != n {
                    return Err(format!(
                        "{SCAN_OP}: {name} holds {} values for shape {:?}",
                        arg.data.len(),
                        arg.shape
                    ));
                }
            }
        }
        if self.u.data.len() != batch * dim * len {
            return Err(format!(
                "{SCAN_OP}: u holds {} values for shape {:?}",
                self.u.data.len(),
                self.u.shape
            ));
        }
        Ok(ScanDims {
            batch,
            dim,
            len,
            state,
        })
    }
}

/// Runs the kernel on one node's inputs into `out` (`u`'s shape), adding its time to the process clock.
pub(crate) fn evaluate(
    attrs: ScanAttributes,
    args: &ScanArgs<'_>,
    out: &mut [f32],
) -> Result<(), String> {
    let dims = args.dims()?;
    let inputs = ScanInputs {
        u: args.u.data,
        delta: args.delta.data,
        a: args.a.data,
        b: args.b.data,
        c: args.c.data,
        d: args.d.map(|t| t.data),
        z: args.z.map(|t| t.data),
        delta_bias: args.delta_bias.map(|t| t.data),
    };
    let opts = ScanOptions {
        delta_softplus: attrs.delta_softplus,
        reverse: attrs.reverse,
    };
    let start = Instant::now();
    let result = selective_scan(dims, &inputs, opts, out);
    let nanos = u64::try_from(start.elapsed().as_nanos()).unwrap_or(u64::MAX);
    KERNEL_NANOS.fetch_add(nanos, Ordering::Relaxed);
    KERNEL_CALLS.fetch_add(1, Ordering::Relaxed);
    result.map_err(|e| format!("{SCAN_OP} kernel: {e}"))
}
