//! Dot-product kernels: one f32 query against one stored row (f32 or f16), accumulated in f32.
//!
//! [`Kernel::detect`] picks the best one this CPU runs, once per search; every kernel is also callable
//! by name so the tests can hold each against the scalar reference.

use half::f16;

/// A dot-product implementation. Rows are f32 or f16; the query and the accumulation are always f32.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kernel {
    /// Portable Rust: eight independent accumulators (which the compiler vectorises where it can).
    Scalar,
    /// x86-64 AVX2 + FMA, with F16C (`vcvtph2ps`) for f16 rows.
    Avx2,
    /// x86-64 AVX-512F (16 lanes; `vcvtph2ps` on zmm for f16 rows).
    Avx512,
    /// aarch64 Advanced SIMD (NEON); f16 rows are widened in blocks through `half` (which uses the FP16
    /// conversion instructions when the CPU has them) because NEON's f16 types are not stable Rust yet.
    Neon,
}

impl Kernel {
    /// The fastest kernel this CPU supports.
    pub fn detect() -> Kernel {
        Kernel::available()
            .into_iter()
            .next()
            .unwrap_or(Kernel::Scalar)
    }

    /// Every kernel this CPU supports, fastest first; always ends with [`Kernel::Scalar`].
    pub fn available() -> Vec<Kernel> {
        let mut kernels = Vec::new();
        #[cfg(target_arch = "x86_64")]
        {
            if is_x86_feature_detected!("avx512f") {
                kernels.push(Kernel::Avx512);
            }
            if is_x86_feature_detected!("avx2")
                && is_x86_feature_detected!("fma")
                && is_x86_feature_detected!("f16c")
            {
                kernels.push(Kernel::Avx2);
            }
        }
        #[cfg(target_arch = "aarch64")]
        {
            if std::arch::is_aarch64_feature_detected!("neon") {
                kernels.push(Kernel::Neon);
            }
        }
        kernels.push(Kernel::Scalar);
        kernels
    }

    /// Short lower-case name (`scalar`, `avx2`, `avx512`, `neon`), as printed by the benchmark.
    pub fn name(self) -> &'static str {
        match self {
            Kernel::Scalar => "scalar",
            Kernel::Avx2 => "avx2",
            Kernel::Avx512 => "avx512",
            Kernel::Neon => "neon",
        }
    }

    /// Whether this CPU can run the kernel.
    pub fn is_supported(self) -> bool {
        Kernel::available().contains(&self)
    }
}

impl std::fmt::Display for Kernel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// A dot product of a query and a row of the same length.
///
/// Safety: the caller guarantees `query.len() == row.len()` and that the CPU has the kernel's features.
pub(crate) type DotFn<E> = unsafe fn(&[f32], &[E]) -> f32;

/// A stored embedding element: f32 or f16.
pub trait Element: Copy + Send + Sync + 'static {
    /// The element as f32.
    fn to_f32(self) -> f32;
    /// Size in bytes.
    const BYTES: usize;
    #[doc(hidden)]
    fn dot_fn(kernel: Kernel) -> DotFn<Self>;
}

impl Element for f32 {
    fn to_f32(self) -> f32 {
        self
    }
    const BYTES: usize = 4;
    fn dot_fn(kernel: Kernel) -> DotFn<f32> {
        match kernel {
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx512 if kernel.is_supported() => x86::dot_f32_avx512,
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx2 if kernel.is_supported() => x86::dot_f32_avx2,
            #[cfg(target_arch = "aarch64")]
            Kernel::Neon if kernel.is_supported() => arm::dot_f32_neon,
            _ => dot_f32_scalar,
        }
    }
}

impl Element for f16 {
    fn to_f32(self) -> f32 {
        f16::to_f32(self)
    }
    const BYTES: usize = 2;
    fn dot_fn(kernel: Kernel) -> DotFn<f16> {
        match kernel {
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx512 if kernel.is_supported() => x86::dot_f16_avx512,
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx2 if kernel.is_supported() => x86::dot_f16_avx2,
            #[cfg(target_arch = "aarch64")]
            Kernel::Neon if kernel.is_supported() => arm::dot_f16_neon,
            _ => dot_f16_scalar,
        }
    }
}

/// Scalar f32 dot product (eight lanes, summed pairwise at the end).
unsafe fn dot_f32_scalar(q: &[f32], r: &[f32]) -> f32 {
    dot_lanes(q, r, |x| x)
}

/// Scalar f16 dot product.
unsafe fn dot_f16_scalar(q: &[f32], r: &[f16]) -> f32 {
    dot_lanes(q, r, f16::to_f32)
}

#[inline(always)]
fn dot_lanes<E: Copy>(q: &[f32], r: &[E], widen: impl Fn(E) -> f32) -> f32 {
    let mut acc = [0.0f32; 8];
    let mut qc = q.chunks_exact(8);
    let mut rc = r.chunks_exact(8);
    for (qb, rb) in (&mut qc).zip(&mut rc) {
        for l in 0..8 {
            acc[l] += qb[l] * widen(rb[l]);
        }
    }
    let mut s = ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]));
    for (&a, &b) in qc.remainder().iter().zip(rc.remainder()) {
        s += a * widen(b);
    }
    s
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    use half::f16;

    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn dot_f32_avx512(q: &[f32], r: &[f32]) -> f32 {
        let n = q.len().min(r.len());
        let (qp, rp) = (q.as_ptr(), r.as_ptr());
        let mut a0 = _mm512_setzero_ps();
        let mut a1 = _mm512_setzero_ps();
        let mut a2 = _mm512_setzero_ps();
        let mut a3 = _mm512_setzero_ps();
        let mut i = 0;
        while i + 64 <= n {
            a0 = _mm512_fmadd_ps(_mm512_loadu_ps(qp.add(i)), _mm512_loadu_ps(rp.add(i)), a0);
            a1 = _mm512_fmadd_ps(
                _mm512_loadu_ps(qp.add(i + 16)),
                _mm512_loadu_ps(rp.add(i + 16)),
                a1,
            );
            a2 = _mm512_fmadd_ps(
                _mm512_loadu_ps(qp.add(i + 32)),
                _mm512_loadu_ps(rp.add(i + 32)),
                a2,
            );
            a3 = _mm512_fmadd_ps(
                _mm512_loadu_ps(qp.add(i + 48)),
                _mm512_loadu_ps(rp.add(i + 48)),
                a3,
            );
            i += 64;
        }
        while i + 16 <= n {
            a0 = _mm512_fmadd_ps(_mm512_loadu_ps(qp.add(i)), _mm512_loadu_ps(rp.add(i)), a0);
            i += 16;
        }
        if i < n {
            let mask: __mmask16 = (1u16 << (n - i)) - 1;
            let qv = _mm512_maskz_loadu_ps(mask, qp.add(i));
            let rv = _mm512_maskz_loadu_ps(mask, rp.add(i));
            a1 = _mm512_fmadd_ps(qv, rv, a1);
        }
        _mm512_reduce_add_ps(_mm512_add_ps(_mm512_add_ps(a0, a1), _mm512_add_ps(a2, a3)))
    }

    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn dot_f16_avx512(q: &[f32], r: &[f16]) -> f32 {
        let n = q.len().min(r.len());
        let qp = q.as_ptr();
        // f16 is a transparent u16: load its bits and widen with vcvtph2ps.
        let rp = r.as_ptr() as *const u16;
        macro_rules! load {
            ($p:expr) => {
                _mm512_cvtph_ps(_mm256_loadu_si256($p as *const __m256i))
            };
        }
        let mut a0 = _mm512_setzero_ps();
        let mut a1 = _mm512_setzero_ps();
        let mut a2 = _mm512_setzero_ps();
        let mut a3 = _mm512_setzero_ps();
        let mut i = 0;
        while i + 64 <= n {
            a0 = _mm512_fmadd_ps(_mm512_loadu_ps(qp.add(i)), load!(rp.add(i)), a0);
            a1 = _mm512_fmadd_ps(_mm512_loadu_ps(qp.add(i + 16)), load!(rp.add(i + 16)), a1);
            a2 = _mm512_fmadd_ps(_mm512_loadu_ps(qp.add(i + 32)), load!(rp.add(i + 32)), a2);
            a3 = _mm512_fmadd_ps(_mm512_loadu_ps(qp.add(i + 48)), load!(rp.add(i + 48)), a3);
            i += 64;
        }
        while i + 16 <= n {
            a0 = _mm512_fmadd_ps(_mm512_loadu_ps(qp.add(i)), load!(rp.add(i)), a0);
            i += 16;
        }
        let mut s =
            _mm512_reduce_add_ps(_mm512_add_ps(_mm512_add_ps(a0, a1), _mm512_add_ps(a2, a3)));
        while i < n {
            s += *qp.add(i) * r[i].to_f32();
            i += 1;
        }
        s
    }

    #[target_feature(enable = "avx2,fma")]
    unsafe fn hsum256(v: __m256) -> f32 {
        let lo = _mm256_castps256_ps128(v);
        let hi = _mm256_extractf128_ps(v, 1);
        let s = _mm_add_ps(lo, hi);
        let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
        let s = _mm_add_ss(s, _mm_shuffle_ps(s, s, 0b01));
        _mm_cvtss_f32(s)
    }

    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn dot_f32_avx2(q: &[f32], r: &[f32]) -> f32 {
        let n = q.len().min(r.len());
        let (qp, rp) = (q.as_ptr(), r.as_ptr());
        let mut a0 = _mm256_setzero_ps();
        let mut a1 = _mm256_setzero_ps();
        let mut a2 = _mm256_setzero_ps();
        let mut a3 = _mm256_setzero_ps();
        let mut i = 0;
        while i + 32 <= n {
            a0 = _mm256_fmadd_ps(_mm256_loadu_ps(qp.add(i)), _mm256_loadu_ps(rp.add(i)), a0);
            a1 = _mm256_fmadd_ps(
                _mm256_loadu_ps(qp.add(i + 8)),
                _mm256_loadu_ps(rp.add(i + 8)),
                a1,
            );
            a2 = _mm256_fmadd_ps(
                _mm256_loadu_ps(qp.add(i + 16)),
                _mm256_loadu_ps(rp.add(i + 16)),
                a2,
            );
            a3 = _mm256_fmadd_ps(
                _mm256_loadu_ps(qp.add(i + 24)),
                _mm256_loadu_ps(rp.add(i + 24)),
                a3,
            );
            i += 32;
        }
        while i + 8 <= n {
            a0 = _mm256_fmadd_ps(_mm256_loadu_ps(qp.add(i)), _mm256_loadu_ps(rp.add(i)), a0);
            i += 8;
        }
        let mut s = hsum256(_mm256_add_ps(_mm256_add_ps(a0, a1), _mm256_add_ps(a2, a3)));
        while i < n {
            s += *qp.add(i) * *rp.add(i);
            i += 1;
        }
        s
    }

    #[target_feature(enable = "avx2,fma,f16c")]
    pub(super) unsafe fn dot_f16_avx2(q: &[f32], r: &[f16]) -> f32 {
        let n = q.len().min(r.len());
        let qp = q.as_ptr();
        let rp = r.as_ptr() as *const u16;
        macro_rules! load {
            ($p:expr) => {
                _mm256_cvtph_ps(_mm_loadu_si128($p as *const __m128i))
            };
        }
        let mut a0 = _mm256_setzero_ps();
        let mut a1 = _mm256_setzero_ps();
        let mut a2 = _mm256_setzero_ps();
        let mut a3 = _mm256_setzero_ps();
        let mut i = 0;
        while i + 32 <= n {
            a0 = _mm256_fmadd_ps(_mm256_loadu_ps(qp.add(i)), load!(rp.add(i)), a0);
            a1 = _mm256_fmadd_ps(_mm256_loadu_ps(qp.add(i + 8)), load!(rp.add(i + 8)), a1);
            a2 = _mm256_fmadd_ps(_mm256_loadu_ps(qp.add(i + 16)), load!(rp.add(i + 16)), a2);
            a3 = _mm256_fmadd_ps(_mm256_loadu_ps(qp.add(i + 24)), load!(rp.add(i + 24)), a3);
            i += 32;
        }
        while i + 8 <= n {
            a0 = _mm256_fmadd_ps(_mm256_loadu_ps(qp.add(i)), load!(rp.add(i)), a0);
            i += 8;
        }
        let mut s = hsum256(_mm256_add_ps(_mm256_add_ps(a0, a1), _mm256_add_ps(a2, a3)));
        while i < n {
            s += *qp.add(i) * r[i].to_f32();
            i += 1;
        }
        s
    }
}

#[cfg(target_arch = "aarch64")]
mod arm {
    use std::arch::aarch64::*;

    use half::f16;
    use half::slice::HalfFloatSliceExt;

    #[target_feature(enable = "neon")]
    pub(super) unsafe fn dot_f32_neon(q: &[f32], r: &[f32]) -> f32 {
        let n = q.len().min(r.len());
        let (qp, rp) = (q.as_ptr(), r.as_ptr());
        let mut a0 = vdupq_n_f32(0.0);
        let mut a1 = vdupq_n_f32(0.0);
        let mut a2 = vdupq_n_f32(0.0);
        let mut a3 = vdupq_n_f32(0.0);
        let mut i = 0;
        while i + 16 <= n {
            a0 = vfmaq_f32(a0, vld1q_f32(qp.add(i)), vld1q_f32(rp.add(i)));
            a1 = vfmaq_f32(a1, vld1q_f32(qp.add(i + 4)), vld1q_f32(rp.add(i + 4)));
            a2 = vfmaq_f32(a2, vld1q_f32(qp.add(i + 8)), vld1q_f32(rp.add(i + 8)));
            a3 = vfmaq_f32(a3, vld1q_f32(qp.add(i + 12)), vld1q_f32(rp.add(i + 12)));
            i += 16;
        }
        while i + 4 <= n {
            a0 = vfmaq_f32(a0, vld1q_f32(qp.add(i)), vld1q_f32(rp.add(i)));
            i += 4;
        }
        let mut s = vaddvq_f32(vaddq_f32(vaddq_f32(a0, a1), vaddq_f32(a2, a3)));
        while i < n {
            s += *qp.add(i) * *rp.add(i);
            i += 1;
        }
        s
    }

    pub(super) unsafe fn dot_f16_neon(q: &[f32], r: &[f16]) -> f32 {
        const BLOCK: usize = 64;
        let mut buf = [0.0f32; BLOCK];
        let mut s = 0.0f32;
        for (qb, rb) in q.chunks(BLOCK).zip(r.chunks(BLOCK)) {
            let wide = &mut buf[..rb.len()];
            rb.convert_to_f32_slice(wide);
            s += dot_f32_neon(qb, wide);
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reference(q: &[f32], r: &[f32]) -> f64 {
        q.iter().zip(r).map(|(&a, &b)| a as f64 * b as f64).sum()
    }

    #[test]
    fn every_kernel_matches_the_f64_reference_for_awkward_lengths() {
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0
        };
        for n in [
            0usize, 1, 3, 7, 8, 15, 16, 17, 31, 33, 63, 64, 65, 100, 383, 384, 385, 1000,
        ] {
            let q: Vec<f32> = (0..n).map(|_| next()).collect();
            let r32: Vec<f32> = (0..n).map(|_| next()).collect();
            let r16: Vec<f16> = r32.iter().map(|&x| f16::from_f32(x)).collect();
            let r16_wide: Vec<f32> = r16.iter().map(|x| x.to_f32()).collect();
            for kernel in Kernel::available() {
                let got32 = unsafe { f32::dot_fn(kernel)(&q, &r32) } as f64;
                let got16 = unsafe { f16::dot_fn(kernel)(&q, &r16) } as f64;
                let tol = 1e-5 * (n as f64).max(1.0);
                assert!(
                    (got32 - reference(&q, &r32)).abs() < tol,
                    "{kernel} f32 n={n}"
                );
                assert!(
                    (got16 - reference(&q, &r16_wide)).abs() < tol,
                    "{kernel} f16 n={n}"
                );
            }
        }
    }
}
