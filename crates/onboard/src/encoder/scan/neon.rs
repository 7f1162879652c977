//! The aarch64 kernel: NEON (4 lanes), which every aarch64 CPU has (it is part of the base ABI),
//! so the token is free to make and no run-time detection is needed.

use std::arch::aarch64::*;

use super::simd::{scan_rows, Simd, POW2_MAGIC};
use super::Job;

/// Proof that the CPU has NEON (always true on aarch64).
#[derive(Clone, Copy, Debug)]
pub(super) struct Neon(());

impl Neon {
    pub(super) fn try_new() -> Option<Self> {
        std::arch::is_aarch64_feature_detected!("neon").then_some(Self(()))
    }
}

/// Scans rows `first_row..` into `out` with NEON.
pub(super) fn scan_rows_neon(simd: Neon, job: &Job, first_row: usize, out: &mut [f32]) {
    #[target_feature(enable = "neon")]
    fn inner(simd: Neon, job: &Job, first_row: usize, out: &mut [f32]) {
        scan_rows(simd, job, first_row, out)
    }
    // SAFETY: a `Neon` token exists only when neon was detected on this CPU.
    unsafe { inner(simd, job, first_row, out) }
}

// SAFETY (every `unsafe` block in this impl): `self` is a `Neon` token, so neon is present; loads
// and stores first check that the slice holds 4 values.
impl Simd for Neon {
    type V = float32x4_t;
    const WIDTH: usize = 4;

    #[inline(always)]
    fn splat(self, x: f32) -> float32x4_t {
        unsafe { vdupq_n_f32(x) }
    }
    #[inline(always)]
    fn load(self, s: &[f32]) -> float32x4_t {
        assert!(s.len() >= 4);
        unsafe { vld1q_f32(s.as_ptr()) }
    }
    #[inline(always)]
    fn store(self, v: float32x4_t, s: &mut [f32]) {
        assert!(s.len() >= 4);
        unsafe { vst1q_f32(s.as_mut_ptr(), v) }
    }
    #[inline(always)]
    fn add(self, a: float32x4_t, b: float32x4_t) -> float32x4_t {
        unsafe { vaddq_f32(a, b) }
    }
    #[inline(always)]
    fn sub(self, a: float32x4_t, b: float32x4_t) -> float32x4_t {
        unsafe { vsubq_f32(a, b) }
    }
    #[inline(always)]
    fn mul(self, a: float32x4_t, b: float32x4_t) -> float32x4_t {
        unsafe { vmulq_f32(a, b) }
    }
    #[inline(always)]
    fn recip(self, a: float32x4_t) -> float32x4_t {
        // 8-bit estimate, two Newton steps (vrecpsq_f32(a, r) = 2 - a r).
        unsafe {
            let r = vrecpeq_f32(a);
            let r = vmulq_f32(r, vrecpsq_f32(a, r));
            vmulq_f32(r, vrecpsq_f32(a, r))
        }
    }
    #[inline(always)]
    fn mul_add(self, a: float32x4_t, b: float32x4_t, c: float32x4_t) -> float32x4_t {
        // vfmaq_f32(acc, x, y) = acc + x * y.
        unsafe { vfmaq_f32(c, a, b) }
    }
    #[inline(always)]
    fn neg_mul_add(self, a: float32x4_t, b: float32x4_t, c: float32x4_t) -> float32x4_t {
        // vfmsq_f32(acc, x, y) = acc - x * y.
        unsafe { vfmsq_f32(c, a, b) }
    }
    #[inline(always)]
    fn min(self, a: float32x4_t, b: float32x4_t) -> float32x4_t {
        // vminq/vmaxq return NaN if either input is NaN, which satisfies the trait's rule.
        unsafe { vminq_f32(a, b) }
    }
    #[inline(always)]
    fn max(self, a: float32x4_t, b: float32x4_t) -> float32x4_t {
        unsafe { vmaxq_f32(a, b) }
    }
    #[inline(always)]
    fn round_pow2(self, x: float32x4_t) -> (float32x4_t, float32x4_t) {
        unsafe {
            let magic = vdupq_n_f32(POW2_MAGIC);
            let kf = vaddq_f32(x, magic);
            let t = vshlq_n_u32::<23>(vreinterpretq_u32_f32(kf));
            (vsubq_f32(kf, magic), vreinterpretq_f32_u32(t))
        }
    }
    #[inline(always)]
    fn mul_pow2(self, p: float32x4_t, t: float32x4_t) -> float32x4_t {
        unsafe { vmulq_f32(p, t) }
    }
    #[inline(always)]
    fn frexp(self, a: float32x4_t) -> (float32x4_t, float32x4_t) {
        unsafe {
            let bits = vreinterpretq_u32_f32(a);
            let e = vsubq_s32(
                vreinterpretq_s32_u32(vshrq_n_u32::<23>(bits)),
                vdupq_n_s32(126),
            );
            let m = vorrq_u32(
                vandq_u32(bits, vdupq_n_u32(0x807f_ffff)),
                vdupq_n_u32(0x3f00_0000),
            );
            (vreinterpretq_f32_u32(m), vcvtq_f32_s32(e))
        }
    }
    #[inline(always)]
    fn select_lt(
        self,
        a: float32x4_t,
        b: float32x4_t,
        then: float32x4_t,
        otherwise: float32x4_t,
    ) -> float32x4_t {
        unsafe { vbslq_f32(vcltq_f32(a, b), then, otherwise) }
    }
    #[inline(always)]
    fn hsum(self, a: float32x4_t) -> f32 {
        unsafe { vaddvq_f32(a) }
    }
    #[inline(always)]
    fn hsum_rows(self, rows: &[f32]) -> float32x4_t {
        let rows = &rows[..16];
        let (r0, r1) = (self.load(rows), self.load(&rows[4..]));
        let (r2, r3) = (self.load(&rows[8..]), self.load(&rows[12..]));
        // vpaddq(a, b) = [a0 + a1, a2 + a3, b0 + b1, b2 + b3].
        unsafe { vpaddq_f32(vpaddq_f32(r0, r1), vpaddq_f32(r2, r3)) }
    }
}
