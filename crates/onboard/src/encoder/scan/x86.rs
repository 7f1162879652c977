//! x86-64 kernels: AVX-512F (16 lanes) and AVX2 + FMA (8 lanes).
//!
//! Each ISA is a zero-sized token ([`Avx512`], [`Avx2Fma`]) that only `try_new` makes, after
//! `is_x86_feature_detected!` has confirmed the features; holding one is the proof every `unsafe`
//! block in its impl relies on. The entry points wrap the generic scan in a `#[target_feature]`
//! function so that the intrinsics inline.

use std::arch::x86_64::*;

use super::simd::{scan_rows, Simd, POW2_MAGIC};
use super::Job;

/// Proof that the CPU has AVX-512F.
#[derive(Clone, Copy, Debug)]
pub(super) struct Avx512(());

impl Avx512 {
    pub(super) fn try_new() -> Option<Self> {
        is_x86_feature_detected!("avx512f").then_some(Self(()))
    }
}

/// Proof that the CPU has AVX2 and FMA.
#[derive(Clone, Copy, Debug)]
pub(super) struct Avx2Fma(());

impl Avx2Fma {
    pub(super) fn try_new() -> Option<Self> {
        (is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma")).then_some(Self(()))
    }
}

/// Scans rows `first_row..` into `out` with AVX-512F.
pub(super) fn scan_rows_avx512(simd: Avx512, job: &Job, first_row: usize, out: &mut [f32]) {
    #[target_feature(enable = "avx512f")]
    fn inner(simd: Avx512, job: &Job, first_row: usize, out: &mut [f32]) {
        scan_rows(simd, job, first_row, out)
    }
    // SAFETY: an `Avx512` token exists only when avx512f was detected on this CPU.
    unsafe { inner(simd, job, first_row, out) }
}

/// Scans rows `first_row..` into `out` with AVX2 and FMA.
pub(super) fn scan_rows_avx2(simd: Avx2Fma, job: &Job, first_row: usize, out: &mut [f32]) {
    #[target_feature(enable = "avx2,fma")]
    fn inner(simd: Avx2Fma, job: &Job, first_row: usize, out: &mut [f32]) {
        scan_rows(simd, job, first_row, out)
    }
    // SAFETY: an `Avx2Fma` token exists only when avx2 and fma were detected on this CPU.
    unsafe { inner(simd, job, first_row, out) }
}

// SAFETY (every `unsafe` block in this impl): `self` is an `Avx512` token, so avx512f is present;
// loads and stores first check that the slice holds 16 values.
impl Simd for Avx512 {
    type V = __m512;
    const WIDTH: usize = 16;

    #[inline(always)]
    fn splat(self, x: f32) -> __m512 {
        unsafe { _mm512_set1_ps(x) }
    }
    #[inline(always)]
    fn load(self, s: &[f32]) -> __m512 {
        assert!(s.len() >= 16);
        unsafe { _mm512_loadu_ps(s.as_ptr()) }
    }
    #[inline(always)]
    fn store(self, v: __m512, s: &mut [f32]) {
        assert!(s.len() >= 16);
        unsafe { _mm512_storeu_ps(s.as_mut_ptr(), v) }
    }
    #[inline(always)]
    fn add(self, a: __m512, b: __m512) -> __m512 {
        unsafe { _mm512_add_ps(a, b) }
    }
    #[inline(always)]
    fn sub(self, a: __m512, b: __m512) -> __m512 {
        unsafe { _mm512_sub_ps(a, b) }
    }
    #[inline(always)]
    fn mul(self, a: __m512, b: __m512) -> __m512 {
        unsafe { _mm512_mul_ps(a, b) }
    }
    #[inline(always)]
    fn recip(self, a: __m512) -> __m512 {
        // 14-bit estimate, one Newton step: r (2 - a r).
        unsafe {
            let r = _mm512_rcp14_ps(a);
            _mm512_mul_ps(r, _mm512_fnmadd_ps(a, r, _mm512_set1_ps(2.0)))
        }
    }
    #[inline(always)]
    fn mul_add(self, a: __m512, b: __m512, c: __m512) -> __m512 {
        unsafe { _mm512_fmadd_ps(a, b, c) }
    }
    #[inline(always)]
    fn neg_mul_add(self, a: __m512, b: __m512, c: __m512) -> __m512 {
        unsafe { _mm512_fnmadd_ps(a, b, c) }
    }
    #[inline(always)]
    fn min(self, a: __m512, b: __m512) -> __m512 {
        unsafe { _mm512_min_ps(a, b) }
    }
    #[inline(always)]
    fn max(self, a: __m512, b: __m512) -> __m512 {
        unsafe { _mm512_max_ps(a, b) }
    }
    #[inline(always)]
    fn round_pow2(self, x: __m512) -> (__m512, __m512) {
        // vscalefps takes k itself: one instruction instead of the exponent-bit construction.
        let k =
            unsafe { _mm512_roundscale_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(x) };
        (k, k)
    }
    #[inline(always)]
    fn mul_pow2(self, p: __m512, k: __m512) -> __m512 {
        unsafe { _mm512_scalef_ps(p, k) }
    }
    #[inline(always)]
    fn frexp(self, a: __m512) -> (__m512, __m512) {
        unsafe {
            let bits = _mm512_castps_si512(a);
            let e = _mm512_sub_epi32(_mm512_srli_epi32::<23>(bits), _mm512_set1_epi32(126));
            let m = _mm512_or_si512(
                _mm512_and_si512(bits, _mm512_set1_epi32(0x807f_ffff_u32 as i32)),
                _mm512_set1_epi32(0x3f00_0000),
            );
            (_mm512_castsi512_ps(m), _mm512_cvtepi32_ps(e))
        }
    }
    #[inline(always)]
    fn select_lt(self, a: __m512, b: __m512, then: __m512, otherwise: __m512) -> __m512 {
        unsafe {
            let lt = _mm512_cmp_ps_mask::<_CMP_LT_OQ>(a, b);
            _mm512_mask_blend_ps(lt, otherwise, then)
        }
    }
    #[inline(always)]
    fn hsum(self, a: __m512) -> f32 {
        unsafe { _mm512_reduce_add_ps(a) }
    }
    #[inline(always)]
    fn hsum_rows(self, rows: &[f32]) -> __m512 {
        // A transpose-and-add tree: halves (256-bit), then quarters, then pairs, then single lanes,
        // 31 shuffles and 15 adds for 16 rows instead of 16 separate reductions. The tree leaves
        // row ORDER[j] in lane j; ORDER is its own inverse, so loading row ORDER[k] into slot k puts
        // row j in lane j.
        const ORDER: [usize; 16] = [0, 2, 1, 3, 8, 10, 9, 11, 4, 6, 5, 7, 12, 14, 13, 15];
        let rows = &rows[..256];
        let mut r = [self.splat(0.0); 16];
        for (k, v) in r.iter_mut().enumerate() {
            *v = self.load(&rows[16 * ORDER[k]..]);
        }
        let mut s = [self.splat(0.0); 8];
        for (i, v) in s.iter_mut().enumerate() {
            *v = self.add_halves(r[i], r[i + 8]);
        }
        let mut t = [self.splat(0.0); 4];
        for (i, v) in t.iter_mut().enumerate() {
            *v = self.add_quarters(s[i], s[i + 4]);
        }
        // SAFETY: see the impl.
        unsafe {
            let u0 = _mm512_add_ps(
                _mm512_shuffle_ps::<0x44>(t[0], t[2]),
                _mm512_shuffle_ps::<0xee>(t[0], t[2]),
            );
            let u1 = _mm512_add_ps(
                _mm512_shuffle_ps::<0x44>(t[1], t[3]),
                _mm512_shuffle_ps::<0xee>(t[1], t[3]),
            );
            _mm512_add_ps(
                _mm512_shuffle_ps::<0x88>(u0, u1),
                _mm512_shuffle_ps::<0xdd>(u0, u1),
            )
        }
    }
}

// SAFETY (every `unsafe` block): `self` is an `Avx512` token.
impl Avx512 {
    /// Lanes 0-7: a's low 256 bits + a's high 256 bits; lanes 8-15: the same for b.
    #[inline(always)]
    fn add_halves(self, a: __m512, b: __m512) -> __m512 {
        unsafe {
            _mm512_add_ps(
                _mm512_shuffle_f32x4::<0x44>(a, b),
                _mm512_shuffle_f32x4::<0xee>(a, b),
            )
        }
    }

    /// 128-bit quarters: [a0 + a1, a2 + a3, b0 + b1, b2 + b3].
    #[inline(always)]
    fn add_quarters(self, a: __m512, b: __m512) -> __m512 {
        unsafe {
            _mm512_add_ps(
                _mm512_shuffle_f32x4::<0x88>(a, b),
                _mm512_shuffle_f32x4::<0xdd>(a, b),
            )
        }
    }
}

// SAFETY (every `unsafe` block in this impl): `self` is an `Avx2Fma` token, so avx2 and fma are
// present; loads and stores first check that the slice holds 8 values.
impl Simd for Avx2Fma {
    type V = __m256;
    const WIDTH: usize = 8;

    #[inline(always)]
    fn splat(self, x: f32) -> __m256 {
        unsafe { _mm256_set1_ps(x) }
    }
    #[inline(always)]
    fn load(self, s: &[f32]) -> __m256 {
        assert!(s.len() >= 8);
        unsafe { _mm256_loadu_ps(s.as_ptr()) }
    }
    #[inline(always)]
    fn store(self, v: __m256, s: &mut [f32]) {
        assert!(s.len() >= 8);
        unsafe { _mm256_storeu_ps(s.as_mut_ptr(), v) }
    }
    #[inline(always)]
    fn add(self, a: __m256, b: __m256) -> __m256 {
        unsafe { _mm256_add_ps(a, b) }
    }
    #[inline(always)]
    fn sub(self, a: __m256, b: __m256) -> __m256 {
        unsafe { _mm256_sub_ps(a, b) }
    }
    #[inline(always)]
    fn mul(self, a: __m256, b: __m256) -> __m256 {
        unsafe { _mm256_mul_ps(a, b) }
    }
    #[inline(always)]
    fn recip(self, a: __m256) -> __m256 {
        // 12-bit estimate, one Newton step: r (2 - a r).
        unsafe {
            let r = _mm256_rcp_ps(a);
            _mm256_mul_ps(r, _mm256_fnmadd_ps(a, r, _mm256_set1_ps(2.0)))
        }
    }
    #[inline(always)]
    fn mul_add(self, a: __m256, b: __m256, c: __m256) -> __m256 {
        unsafe { _mm256_fmadd_ps(a, b, c) }
    }
    #[inline(always)]
    fn neg_mul_add(self, a: __m256, b: __m256, c: __m256) -> __m256 {
        unsafe { _mm256_fnmadd_ps(a, b, c) }
    }
    #[inline(always)]
    fn min(self, a: __m256, b: __m256) -> __m256 {
        unsafe { _mm256_min_ps(a, b) }
    }
    #[inline(always)]
    fn max(self, a: __m256, b: __m256) -> __m256 {
        unsafe { _mm256_max_ps(a, b) }
    }
    #[inline(always)]
    fn round_pow2(self, x: __m256) -> (__m256, __m256) {
        unsafe {
            let magic = _mm256_set1_ps(POW2_MAGIC);
            let kf = _mm256_add_ps(x, magic);
            let t = _mm256_slli_epi32::<23>(_mm256_castps_si256(kf));
            (_mm256_sub_ps(kf, magic), _mm256_castsi256_ps(t))
        }
    }
    #[inline(always)]
    fn mul_pow2(self, p: __m256, t: __m256) -> __m256 {
        unsafe { _mm256_mul_ps(p, t) }
    }
    #[inline(always)]
    fn frexp(self, a: __m256) -> (__m256, __m256) {
        unsafe {
            let bits = _mm256_castps_si256(a);
            let e = _mm256_sub_epi32(_mm256_srli_epi32::<23>(bits), _mm256_set1_epi32(126));
            let m = _mm256_or_si256(
                _mm256_and_si256(bits, _mm256_set1_epi32(0x807f_ffff_u32 as i32)),
                _mm256_set1_epi32(0x3f00_0000),
            );
            (_mm256_castsi256_ps(m), _mm256_cvtepi32_ps(e))
        }
    }
    #[inline(always)]
    fn select_lt(self, a: __m256, b: __m256, then: __m256, otherwise: __m256) -> __m256 {
        unsafe {
            let lt = _mm256_cmp_ps::<_CMP_LT_OQ>(a, b);
            _mm256_blendv_ps(otherwise, then, lt)
        }
    }
    #[inline(always)]
    fn hsum(self, a: __m256) -> f32 {
        unsafe {
            let s = _mm_add_ps(_mm256_castps256_ps128(a), _mm256_extractf128_ps::<1>(a));
            let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
            let s = _mm_add_ss(s, _mm_movehdup_ps(s));
            _mm_cvtss_f32(s)
        }
    }
    #[inline(always)]
    fn hsum_rows(self, rows: &[f32]) -> __m256 {
        let rows = &rows[..64];
        let mut r = [self.splat(0.0); 8];
        for (k, v) in r.iter_mut().enumerate() {
            *v = self.load(&rows[8 * k..]);
        }
        unsafe {
            // Per 128-bit half: two rounds of pairwise adds give rows 0-3 (g0) and 4-7 (g1) as
            // partial sums over that half; adding the halves finishes them.
            let g0 = _mm256_hadd_ps(_mm256_hadd_ps(r[0], r[1]), _mm256_hadd_ps(r[2], r[3]));
            let g1 = _mm256_hadd_ps(_mm256_hadd_ps(r[4], r[5]), _mm256_hadd_ps(r[6], r[7]));
            _mm256_add_ps(
                _mm256_permute2f128_ps::<0x20>(g0, g1),
                _mm256_permute2f128_ps::<0x31>(g0, g1),
            )
        }
    }
}
