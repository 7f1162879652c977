//! The GNSS consistency check: does the GNSS position agree with where the camera says the vehicle is?
//!
//! A spoofer keeps the receiver's fix type, satellites and HDOP perfect, so the [`GnssMonitor`](super::GnssMonitor)
//! cannot see it; only an independent position can. Each frame with both a GNSS position and a visual position
//! (from an estimate GNSS does not anchor: a check against a GNSS-anchored estimate is pulled along by a slow
//! drag) gives an innovation `d` (metres, horizontal) and its normalized square
//!
//! ```text
//!   NIS = |d|² / (σ_gnss² + σ_visual²),   σ = r95 / 2.448   (isotropic 2-D Gaussian: P(r < r95) = 0.95)
//! ```
//!
//! which, when both are honest and independent, is χ² with 2 degrees of freedom (mean 2). The test is a
//! **sliding-window χ²**: the sum of the last `N` NIS, each clipped at [`IntegrityConfig::clip_nis`], against the
//! `1 - α` quantile of χ² with `2N` degrees of freedom.
//!
//! Why this test: its false-alarm probability per frame is derived in closed form (the χ² tail of even degrees
//! of freedom is the Erlang tail, [`chi2_even_tail`]), and clipping only lowers it, so the bound holds with the
//! heavy tails visual fixes have (a look-alike tile puts a fix tens of metres off now and then: one such frame
//! adds at most `clip_nis`, which is below the threshold's margin, so one bad frame never alarms). It catches a
//! jump within a few frames and a drag once the drag's offset is a few σ over a window (the delay for a drag
//! of `v` m/s is derived in [`IntegrityCheck::drag_detection_delay_s`]). A CUSUM would catch a very slow drag
//! a little sooner, but its false-alarm rate has no closed form under clipping and correlation; the window's
//! has, and the window's length bounds how long a recovered GNSS stays suspect.
//!
//! Verdict with hysteresis: [`IntegrityVerdict::Inconsistent`] from the first frame whose statistic exceeds the
//! threshold; back to [`IntegrityVerdict::Consistent`] only after the statistic has stayed below the median
//! of its fault-free distribution for [`IntegrityConfig::recover_after_s`].
//!
//! Caveat, measured rather than assumed: consecutive visual fixes are correlated (the localizer smooths), so
//! the per-frame false-alarm rate of the window test on real flights is not exactly `α`; the configured `α`
//! is the design value and the simulation measures the real one.

use std::collections::VecDeque;

use crate::geodesy::offset_ne_m;

/// σ of an isotropic 2-D Gaussian whose 95 % radius is 1 (`√(2 ln 20)` = 2.448 σ holds 95 %).
pub const SIGMA_PER_R95: f64 = 1.0 / 2.447_746_830_680_816;

/// Settings of the consistency check.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct IntegrityConfig {
    /// Frames in the window (`N`).
    pub window: usize,
    /// False-alarm probability per frame under the model (`α`).
    pub false_alarm_per_frame: f64,
    /// The most one frame's NIS adds to the window.
    pub clip_nis: f64,
    /// How long the statistic must stay below its fault-free median before GNSS is consistent again, s.
    pub recover_after_s: f64,
}

impl Default for IntegrityConfig {
    fn default() -> Self {
        IntegrityConfig {
            window: 10,
            // At ~3 frames a second: one false alarm per ~10^6 s (12 days) of flight under the model.
            false_alarm_per_frame: 3e-7,
            clip_nis: 16.0,
            recover_after_s: 30.0,
        }
    }
}

/// The check's verdict.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum IntegrityVerdict {
    /// Not enough frames in the window yet to judge.
    Unknown,
    /// GNSS agrees with the camera.
    Consistent,
    /// GNSS disagrees with the camera (spoofing suspected) since `since_s`.
    Inconsistent {
        /// When the alarm was raised, seconds (the caller's clock).
        since_s: f64,
        /// The latest horizontal disagreement, metres.
        distance_m: f64,
    },
}

/// One frame's comparison.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Innovation {
    /// Horizontal distance GNSS − visual, metres.
    pub distance_m: f64,
    /// Its normalized square (before clipping).
    pub nis: f64,
    /// The window's statistic after this frame (sum of clipped NIS).
    pub statistic: f64,
    /// The alarm threshold.
    pub threshold: f64,
}

/// The sliding-window χ² check. See the module documentation.
#[derive(Debug, Clone)]
pub struct IntegrityCheck {
    config: IntegrityConfig,
    window: VecDeque<f64>,
    threshold: f64,
    /// The median of the window's fault-free statistic: below it, GNSS counts as agreeing.
    calm: f64,
    verdict: IntegrityVerdict,
    /// Since when the statistic has been below `calm` while inconsistent.
    calm_since_s: Option<f64>,
}

impl IntegrityCheck {
    /// A check with `config` (`window` ≥ 1, `0 < false_alarm_per_frame < 1`, `clip_nis` > 0).
    pub fn new(config: IntegrityConfig) -> IntegrityCheck {
        let n = config.window.max(1);
        let dof = 2 * n;
        IntegrityCheck {
            threshold: chi2_even_quantile(dof, config.false_alarm_per_frame),
            calm: chi2_even_quantile(dof, 0.5),
            config: IntegrityConfig {
                window: n,
                ..config
            },
            window: VecDeque::with_capacity(n),
            verdict: IntegrityVerdict::Unknown,
            calm_since_s: None,
        }
    }

    /// The alarm threshold on the window's statistic.
    pub fn threshold(&self) -> f64 {
        self.threshold
    }

    /// The current verdict.
    pub fn verdict(&self) -> IntegrityVerdict {
        self.verdict
    }

    /// Compares one frame's GNSS position with the visual one (WGS84 degrees, 95 % radii in metres) at `t_s`
    /// (seconds, any monotonic origin), and moves the verdict. Non-finite input is ignored (`None`).
    pub fn observe(
        &mut self,
        t_s: f64,
        gnss: (f64, f64, f64),
        visual: (f64, f64, f64),
    ) -> Option<Innovation> {
        let (glat, glon, g95) = gnss;
        let (vlat, vlon, v95) = visual;
        if ![t_s, glat, glon, g95, vlat, vlon, v95]
            .iter()
            .all(|v| v.is_finite())
            || g95 <= 0.0
            || v95 <= 0.0
        {
            return None;
        }
        let (n, e) = offset_ne_m(vlat, vlon, glat, glon);
        let distance_m = n.hypot(e);
        let variance = (g95 * SIGMA_PER_R95).powi(2) + (v95 * SIGMA_PER_R95).powi(2);
        let nis = distance_m * distance_m / variance;
        if self.window.len() == self.config.window {
            self.window.pop_front();
        }
        self.window.push_back(nis.min(self.config.clip_nis));
        let statistic: f64 = self.window.iter().sum();
        let full = self.window.len() == self.config.window;
        self.verdict = match self.verdict {
            IntegrityVerdict::Inconsistent { since_s, .. } => {
                if statistic < self.calm {
                    let calm_since = *self.calm_since_s.get_or_insert(t_s);
                    if t_s - calm_since >= self.config.recover_after_s {
                        self.calm_since_s = None;
                        IntegrityVerdict::Consistent
                    } else {
                        IntegrityVerdict::Inconsistent {
                            since_s,
                            distance_m,
                        }
                    }
                } else {
                    self.calm_since_s = None;
                    IntegrityVerdict::Inconsistent {
                        since_s,
                        distance_m,
                    }
                }
            }
            _ if statistic > self.threshold => IntegrityVerdict::Inconsistent {
                since_s: t_s,
                distance_m,
            },
            _ if full => IntegrityVerdict::Consistent,
            v => v,
        };
        Some(Innovation {
            distance_m,
            nis,
            statistic,
            threshold: self.threshold,
        })
    }

    /// The derived detection delay, seconds, for a drag of `speed_mps` starting from agreement, at `rate_hz`
    /// frames a second with the given 95 % radii: the first time the window's expected statistic (noise mean
    /// 2 per frame plus the drag's offset squared over the variance, each clipped) exceeds the threshold.
    /// `None` when the drag is never detected within an hour (it hides in the noise).
    pub fn drag_detection_delay_s(
        &self,
        speed_mps: f64,
        rate_hz: f64,
        gnss_r95: f64,
        visual_r95: f64,
    ) -> Option<f64> {
        let variance = (gnss_r95 * SIGMA_PER_R95).powi(2) + (visual_r95 * SIGMA_PER_R95).powi(2);
        let n = self.config.window;
        (1..=(3600.0 * rate_hz) as usize).find_map(|k| {
            let t = k as f64 / rate_hz;
            let expected: f64 = (0..n.min(k))
                .map(|i| {
                    let offset = speed_mps * (t - i as f64 / rate_hz);
                    (2.0 + offset * offset / variance).min(self.config.clip_nis)
                })
                .sum::<f64>()
                + 2.0 * n.saturating_sub(k) as f64;
            (expected > self.threshold).then_some(t)
        })
    }
}

/// `P(X > x)` for `X` ~ χ² with `dof` (even, ≥ 2) degrees of freedom: the Erlang tail
/// `e^(−x/2) Σ_{i<dof/2} (x/2)^i / i!`.
pub fn chi2_even_tail(dof: usize, x: f64) -> f64 {
    if x <= 0.0 {
        return 1.0;
    }
    let half = x / 2.0;
    let mut term = 1.0;
    let mut sum = 1.0;
    for i in 1..(dof / 2).max(1) {
        term *= half / i as f64;
        sum += term;
    }
    (sum * (-half).exp()).min(1.0)
}

/// The `x` with `P(X > x) = tail` for `X` ~ χ² with `dof` (even) degrees of freedom, by bisection.
pub fn chi2_even_quantile(dof: usize, tail: f64) -> f64 {
    let tail = tail.clamp(1e-300, 1.0);
    let (mut lo, mut hi) = (0.0f64, 1.0f64);
    while chi2_even_tail(dof, hi) > tail {
        hi *= 2.0;
    }
    for _ in 0..200 {
        let mid = 0.5 * (lo + hi);
        if chi2_even_tail(dof, mid) > tail {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    0.5 * (lo + hi)
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;
    use rand_distr::{Distribution, StandardNormal};

    use super::*;
    use crate::geodesy::offset_lat_lon;

    const LAT: f64 = 44.7;
    const LON: f64 = -110.5;

    #[test]
    fn the_chi2_tail_and_quantile_match_known_values() {
        // χ²₂ is exponential with mean 2; χ²₄'s 95 % point is 9.4877; χ²₂₀'s 99.9 % point is 45.315.
        assert!((chi2_even_tail(2, 3.0) - (-1.5f64).exp()).abs() < 1e-12);
        assert!((chi2_even_quantile(4, 0.05) - 9.4877).abs() < 1e-3);
        assert!((chi2_even_quantile(20, 0.001) - 45.315).abs() < 1e-2);
        let q = chi2_even_quantile(20, 3e-7);
        assert!((chi2_even_tail(20, q) - 3e-7).abs() < 1e-12);
    }

    /// A GNSS position `north`, `east` metres from the visual one at the test's place.
    fn at(north: f64, east: f64) -> (f64, f64) {
        offset_lat_lon(LAT, LON, north, east)
    }

    /// Feeds frames at `rate_hz` for `seconds` with honest noise (σ from the radii) plus `offset(t)`; returns
    /// the first alarm time and the number of frames whose statistic exceeded the threshold.
    fn fly(
        check: &mut IntegrityCheck,
        seed: u64,
        seconds: f64,
        rate_hz: f64,
        offset: impl Fn(f64) -> (f64, f64),
    ) -> (Option<f64>, u64) {
        let (g95, v95) = (5.0, 7.0);
        let sigma = ((g95 * SIGMA_PER_R95).powi(2) + (v95 * SIGMA_PER_R95).powi(2)).sqrt();
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut first = None;
        let mut over = 0;
        let frames = (seconds * rate_hz) as usize;
        for k in 0..frames {
            let t = k as f64 / rate_hz;
            let (dn, de) = offset(t);
            let n: f64 = StandardNormal.sample(&mut rng);
            let e: f64 = StandardNormal.sample(&mut rng);
            let (glat, glon) = at(dn + sigma * n, de + sigma * e);
            let i = check
                .observe(t, (glat, glon, g95), (LAT, LON, v95))
                .unwrap();
            if i.statistic > i.threshold {
                over += 1;
            }
            if first.is_none() && matches!(check.verdict(), IntegrityVerdict::Inconsistent { .. }) {
                first = Some(t);
            }
        }
        (first, over)
    }

    #[test]
    fn the_false_alarm_rate_is_what_the_chi2_tail_says() {
        // With α = 1e-3 the count is measurable: 200 000 honest frames should exceed the threshold ~200
        // times (Poisson-ish, the overlapping windows make it burstier).
        let mut check = IntegrityCheck::new(IntegrityConfig {
            false_alarm_per_frame: 1e-3,
            clip_nis: f64::INFINITY,
            ..IntegrityConfig::default()
        });
        let (_, over) = fly(&mut check, 1, 200_000.0 / 3.0, 3.0, |_| (0.0, 0.0));
        eprintln!("alpha 1e-3: {over} of 200000 honest frames over the threshold");
        assert!(
            (100..=320).contains(&over),
            "{over} frames over the threshold"
        );
        // The shipped setting: no frame over it in 200 000 honest frames (18.5 hours at 3 Hz).
        let mut check = IntegrityCheck::new(IntegrityConfig::default());
        let (first, over) = fly(&mut check, 2, 200_000.0 / 3.0, 3.0, |_| (0.0, 0.0));
        assert_eq!((first, over), (None, 0));
    }

    #[test]
    fn a_jump_is_caught_within_a_few_frames_and_one_wild_fix_is_not_an_alarm() {
        let mut check = IntegrityCheck::new(IntegrityConfig::default());
        let (first, _) = fly(&mut check, 3, 60.0, 3.0, |t| {
            if t >= 30.0 {
                (0.0, 50.0)
            } else {
                (0.0, 0.0)
            }
        });
        let delay = first.expect("a 50 m jump is caught") - 30.0;
        eprintln!("jump 50 m: caught after {delay:.2} s");
        assert!(delay <= 2.0, "caught {delay} s after the jump");
        // One look-alike 80 m off among honest frames: clipped, no alarm.
        let mut check = IntegrityCheck::new(IntegrityConfig::default());
        let (first, _) = fly(&mut check, 4, 60.0, 3.0, |t| {
            if (30.0..30.3).contains(&t) {
                (80.0, 0.0)
            } else {
                (0.0, 0.0)
            }
        });
        assert_eq!(first, None);
    }

    #[test]
    fn a_slow_drag_is_caught_near_its_derived_delay_and_gnss_recovers_after_calm() {
        for (speed, seed) in [(0.3, 5), (1.0, 6), (5.0, 7)] {
            let mut check = IntegrityCheck::new(IntegrityConfig::default());
            let derived = check
                .drag_detection_delay_s(speed, 3.0, 5.0, 7.0)
                .expect("derived");
            let start = 20.0;
            let (first, _) = fly(&mut check, seed, start + 4.0 * derived + 30.0, 3.0, |t| {
                (0.0, speed * (t - start).max(0.0))
            });
            let delay = first.expect("the drag is caught") - start;
            eprintln!(
                "drag {speed} m/s: caught after {delay:.1} s ({:.1} m off), derived {derived:.1} s",
                speed * delay
            );
            // The derived delay is for the expected statistic; noise moves it either way a little.
            assert!(
                delay > 0.0 && delay <= 1.6 * derived + 2.0,
                "{speed} m/s: caught after {delay:.1} s, derived {derived:.1} s"
            );
        }
        // Recovery: a 100 m jump for 20 s, then honest again; consistent only after 30 s of calm.
        let mut check = IntegrityCheck::new(IntegrityConfig::default());
        let mut verdicts = Vec::new();
        let mut rng = ChaCha8Rng::seed_from_u64(8);
        for k in 0..(120 * 3) {
            let t = f64::from(k) / 3.0;
            let jump = if (20.0..40.0).contains(&t) {
                100.0
            } else {
                0.0
            };
            let n: f64 = StandardNormal.sample(&mut rng);
            let (glat, glon) = at(3.5 * n, jump);
            check.observe(t, (glat, glon, 5.0), (LAT, LON, 7.0));
            verdicts.push((t, check.verdict()));
        }
        let inconsistent = |t0: f64| {
            verdicts
                .iter()
                .find(|(t, _)| *t >= t0)
                .is_some_and(|(_, v)| matches!(v, IntegrityVerdict::Inconsistent { .. }))
        };
        assert!(!inconsistent(19.0) && inconsistent(25.0) && inconsistent(60.0));
        assert!(
            !inconsistent(90.0),
            "consistent again after 30 s of agreement"
        );
    }

    #[test]
    fn non_finite_input_is_ignored() {
        let mut check = IntegrityCheck::new(IntegrityConfig::default());
        assert!(check
            .observe(0.0, (f64::NAN, LON, 5.0), (LAT, LON, 7.0))
            .is_none());
        assert!(check
            .observe(0.0, (LAT, LON, 0.0), (LAT, LON, 7.0))
            .is_none());
        assert_eq!(check.verdict(), IntegrityVerdict::Unknown);
    }
}
