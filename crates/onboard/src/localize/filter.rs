//! A constant-velocity Kalman filter over the frame measurements, with gating, careful initialisation and
//! latency compensation.
//!
//! State `[n, e, vn, ve]` (metres and m/s in the local north/east frame), white-acceleration process noise
//! (continuous spectral density `accel_sigma_mps2²`, so the position variance grows with `dt³/3`). A
//! [`Measurement`]'s 95 % radius becomes an isotropic measurement covariance `(accuracy95_m / K95)² I`.
//!
//! Use: [`PositionFilter::update`] with each frame's measurement stamped at its exposure time, and
//! [`PositionFilter::estimate_at`] at publish time: it predicts the state forward (latency compensation)
//! without changing the filter.
//!
//! # Life cycle: no fix is better than a wrong one
//!
//! - **Anchored.** While GNSS is healthy the pipeline feeds the autopilot's position as an *anchor*
//!   ([`PositionFilter::anchor`]): a single anchor starts the filter, and every later one updates it (or,
//!   if the filter disagrees beyond the gate, restarts it there: a filter started from visual matches may
//!   be wrong, a healthy GNSS is not). Visual measurements are gated against the anchored state. A state
//!   that descends from an anchor is never reset by gated measurements, however many agree with each other:
//!   when GNSS goes away it keeps the anchored state, accepts only measurements that pass the gate, coasts
//!   (and stops publishing after `max_coast_s`) while only gated ones arrive, and restarts cold only after
//!   `reinit_gap_s` without an accepted measurement.
//! - **Cold start** (no anchor). A single match may be wrong, so the filter starts only once
//!   `init_measurements` recent measurements (within `init_window_s`) agree with each other: every pair
//!   closer than the sum of their 95 % radii plus `max_speed_mps` times their time apart; AND they come from
//!   clearly different views: two of them lie at least `init_min_spread_m` apart and farther than the sum
//!   of their quantisation radii (the tiles of one view, right or wrong, stay within that of each other: a
//!   repeated look-alike view jitters by up to 13 m at a 20 m stride, where its radii sum to 29 m).
//!   The vehicle must fly about one and a half tile strides within `init_window_s` (6 s: 5 m/s at a 20 m
//!   stride). A slowly changing view keeps
//!   matching the same wrong tile, so a wrong match repeated agrees with itself; requiring the view to change
//!   (the vehicle moved, or other tiles won) is what makes the agreement evidence. A stricter minimum margin
//!   for initialisation would not do: a weak model is confidently wrong (a wrong tile can win by a large
//!   margin, frame after frame), so margin does not separate right from wrong where it matters, and it would
//!   also refuse right matches of a weak but correct model. The price: a hovering vehicle does
//!   not cold-start (it does from an anchor). Until then [`UpdateOutcome::NotInitialised`].
//! - **Running.** A measurement whose innovation has a squared Mahalanobis distance above the χ²(2) quantile
//!   at `gate_probability` (13.8 at 0.999) is [`UpdateOutcome::Gated`]: a correct measurement is gated one
//!   time in a thousand, a match hundreds of metres off always.
//! - **Reset.** After `max_consecutive_gated` gated measurements in a row the filter, not the measurements, is
//!   presumed wrong ([`UpdateOutcome::Diverged`]): it starts again from the gated measurements (which
//!   re-initialise it if they agree with each other). A measurement after more than `reinit_gap_s` without
//!   an accepted one also starts it again: after a long gap the old state says little.
//!
//! # The reported accuracy
//!
//! `accuracy95_m = max(K95 · sqrt(λmax(P_pos)), floor)`, `K95 = sqrt(χ²₂(0.95)) = 2.4477` (the 95 % radius of a
//! circular Gaussian with the largest axis's sigma; conservative for an elliptic one), and `floor` the last
//! accepted measurement's [`Measurement::quantisation95_m`] (an anchor's: its own accuracy, with no tile
//! quantisation; GNSS errors are shared by consecutive samples too, so many anchors never claim better than
//! one). The floor is there because the Kalman filter
//! assumes independent measurement errors, and tile retrieval errors are not independent: the same tile wins
//! for many consecutive frames (at 10 m/s, 5 Hz and a 20 m stride, ten frames), so its offset from the truth
//! is the same in all of them. Averaging N such frames shrinks `P` by N but not the error. The filter can
//! smooth the noise on top of the quantisation, never the quantisation itself.
//!
//! An estimate is refused ([`NoEstimate`]) when the last accepted measurement is older than `max_coast_s`
//! or the accuracy is worse than `max_accuracy_m`.

use std::ops::SubAssign;

use nalgebra::{Matrix2, Matrix4, Vector2, Vector4};
use serde::Deserialize;

use super::estimator::{Measurement, K95};
use super::positive;

/// The filter's settings. A `[localize.filter]` TOML table; missing fields take the defaults.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FilterConfig {
    /// Square root of the white-acceleration spectral density, m/s² (about the vehicle's typical
    /// acceleration: a 10 m/s turn of 100 m radius is 1 m/s²).
    pub accel_sigma_mps2: f64,
    /// Probability that a correct measurement passes the gate (χ²(2) quantile; 0.999 → 13.8).
    pub gate_probability: f64,
    /// Mutually consistent measurements needed to start (at least 2).
    pub init_measurements: usize,
    /// Measurements older than this (relative to the newest) no longer count towards initialisation, s.
    pub init_window_s: f64,
    /// The fastest the vehicle flies, m/s: bounds the consistency test and the initial velocity sigma (half).
    pub max_speed_mps: f64,
    /// This many gated measurements in a row reset the filter.
    pub max_consecutive_gated: u32,
    /// A measurement after this long without an accepted one restarts the filter, s (at least `max_coast_s`).
    /// The default equals `max_coast_s`: once the filter has stopped publishing, its gate has grown with the
    /// coast, and a single wrong match passing that wide gate would become the state: the filter would follow
    /// it far off while reporting a small accuracy (a case with 10 s: the comments of
    /// `sim/scenarios/yell-gnss-denied.toml`). The price: a restart needs the cold-start agreement (or an
    /// anchor) after every gap longer than the coast limit.
    pub reinit_gap_s: f64,
    /// No estimate when the last accepted measurement is older than this, s.
    pub max_coast_s: f64,
    /// No estimate when the 95 % accuracy is worse than this, m.
    pub max_accuracy_m: f64,
    /// The velocity is reported only when its largest one-sigma is at most this, m/s.
    pub max_velocity_sigma_mps: f64,
    /// The filter counts as anchored while its last accepted anchor ([`PositionFilter::anchor`]) is at most
    /// this old, s: it then never re-initialises from visual measurements.
    pub anchor_max_age_s: f64,
    /// A cold start (no anchor) needs two of its consistent measurements to lie at least this far apart, m,
    /// and farther than the sum of their quantisation radii (one view's tiles stay within that), so they
    /// come from clearly different views: the vehicle moved. 0 leaves only the quantisation test.
    pub init_min_spread_m: f64,
    /// Whether the filter may start, or restart after a divergence or a gap, from visual measurements alone
    /// (a cold start). `false`: only an anchor starts it; without one it publishes nothing. For a model whose
    /// wrong matches can form a consistent track (the demo model does), this is the safe setting.
    pub visual_start: bool,
}

impl Default for FilterConfig {
    fn default() -> Self {
        Self {
            accel_sigma_mps2: 1.0,
            gate_probability: 0.999,
            init_measurements: 3,
            init_window_s: 6.0,
            max_speed_mps: 40.0,
            max_consecutive_gated: 5,
            reinit_gap_s: 3.0,
            max_coast_s: 3.0,
            max_accuracy_m: 60.0,
            max_velocity_sigma_mps: 2.0,
            anchor_max_age_s: 2.0,
            init_min_spread_m: 10.0,
            visual_start: true,
        }
    }
}

impl FilterConfig {
    /// Checks every field; the error names the first bad one (as `localize.filter.<field>`) and why.
    pub fn validate(&self) -> Result<(), super::ConfigError> {
        let bad =
            |field: &str, reason: String| super::ConfigError::invalid("filter", field, reason);
        if !positive(self.accel_sigma_mps2) {
            return bad(
                "accel_sigma_mps2",
                format!("is {}; it must be positive", self.accel_sigma_mps2),
            );
        }
        if !(self.gate_probability > 0.5 && self.gate_probability < 1.0) {
            return bad(
                "gate_probability",
                format!("is {}; it must be in (0.5, 1)", self.gate_probability),
            );
        }
        if self.init_measurements < 2 {
            return bad(
                "init_measurements",
                format!(
                    "is {}; a single first match may be wrong: at least 2",
                    self.init_measurements
                ),
            );
        }
        if !positive(self.init_window_s) {
            return bad(
                "init_window_s",
                format!("is {}; it must be positive", self.init_window_s),
            );
        }
        if !positive(self.max_speed_mps) {
            return bad(
                "max_speed_mps",
                format!("is {}; it must be positive", self.max_speed_mps),
            );
        }
        if self.max_consecutive_gated == 0 {
            return bad(
                "max_consecutive_gated",
                "is 0; it must be at least 1".into(),
            );
        }
        if !positive(self.max_coast_s) {
            return bad(
                "max_coast_s",
                format!("is {}; it must be positive", self.max_coast_s),
            );
        }
        if !(self.reinit_gap_s.is_finite() && self.reinit_gap_s >= self.max_coast_s) {
            return bad(
                "reinit_gap_s",
                format!(
                    "is {}; it must be at least max_coast_s ({})",
                    self.reinit_gap_s, self.max_coast_s
                ),
            );
        }
        if !positive(self.max_accuracy_m) {
            return bad(
                "max_accuracy_m",
                format!("is {}; it must be positive", self.max_accuracy_m),
            );
        }
        if !(self.max_velocity_sigma_mps >= 0.0 && self.max_velocity_sigma_mps.is_finite()) {
            return bad(
                "max_velocity_sigma_mps",
                format!(
                    "is {}; it must be finite and not negative",
                    self.max_velocity_sigma_mps
                ),
            );
        }
        if !positive(self.anchor_max_age_s) {
            return bad(
                "anchor_max_age_s",
                format!("is {}; it must be positive", self.anchor_max_age_s),
            );
        }
        if !(self.init_min_spread_m.is_finite() && self.init_min_spread_m >= 0.0) {
            return bad(
                "init_min_spread_m",
                format!(
                    "is {}; it must be finite and not negative",
                    self.init_min_spread_m
                ),
            );
        }
        Ok(())
    }

    /// The gate: the χ²(2) quantile at `gate_probability` (closed form for 2 degrees of freedom).
    pub fn gate_d2(&self) -> f64 {
        -2.0 * (1.0 - self.gate_probability).ln()
    }
}

/// What one measurement did to the filter. Each variant is something the pipeline logs and counts.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum UpdateOutcome {
    /// The measurement passed the gate and updated the state.
    Accepted {
        /// Its squared Mahalanobis distance.
        d2: f64,
    },
    /// The measurement completed a consistent set: the filter started from `measurements` of them.
    Initialised {
        /// How many measurements it started from.
        measurements: usize,
    },
    /// The measurement disagrees with the filter and was not used.
    Gated {
        /// Its squared Mahalanobis distance.
        d2: f64,
        /// Gated measurements in a row, this one included.
        consecutive: u32,
    },
    /// Gated once too often in a row: the filter reset and is initialising again from the gated measurements.
    Diverged {
        /// The last squared Mahalanobis distance.
        d2: f64,
        /// Gated measurements in a row.
        consecutive: u32,
    },
    /// The filter is initialising: the measurement was kept, but not enough agree yet, or those that agree
    /// all come from (nearly) the same view.
    NotInitialised {
        /// Mutually consistent measurements, this one included.
        consistent: usize,
        /// How many are needed.
        needed: usize,
        /// The largest distance between two of the consistent measurements, m (a start needs
        /// `init_min_spread_m`).
        spread_m: f64,
    },
    /// The measurement is not newer than the filter's last one (out of order or repeated).
    Stale {
        /// Its exposure time, µs.
        t_us: u64,
        /// The filter's latest measurement time, µs.
        filter_t_us: u64,
    },
    /// The measurement is not finite or its accuracy is not positive.
    Invalid,
}

impl UpdateOutcome {
    /// A short stable name for counting outcomes.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Accepted { .. } => "accepted",
            Self::Initialised { .. } => "initialised",
            Self::Gated { .. } => "gated",
            Self::Diverged { .. } => "diverged",
            Self::NotInitialised { .. } => "not_initialised",
            Self::Stale { .. } => "stale",
            Self::Invalid => "invalid",
        }
    }
}

/// What one anchor (a reference position from a healthy GNSS) did to the filter.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum AnchorOutcome {
    /// The filter was not running: it started from this anchor alone.
    Initialised,
    /// The anchor agreed with the running filter and updated it.
    Accepted {
        /// Its squared Mahalanobis distance.
        d2: f64,
    },
    /// The anchor disagreed with the running filter (beyond the gate): the filter, started from visual
    /// measurements only, is presumed wrong and restarts from the anchor.
    Reset {
        /// Its squared Mahalanobis distance.
        d2: f64,
    },
    /// The anchor is older than the filter's latest measurement.
    Stale {
        /// Its time, µs.
        t_us: u64,
        /// The filter's latest measurement time, µs.
        filter_t_us: u64,
    },
    /// The position is not finite or its accuracy is not positive.
    Invalid,
}

impl AnchorOutcome {
    /// A short stable name for counting outcomes.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Initialised => "anchor_initialised",
            Self::Accepted { .. } => "anchor_accepted",
            Self::Reset { .. } => "anchor_reset",
            Self::Stale { .. } => "anchor_stale",
            Self::Invalid => "anchor_invalid",
        }
    }

    /// Whether the anchor went into the filter.
    pub fn is_used(&self) -> bool {
        matches!(
            self,
            Self::Initialised | Self::Accepted { .. } | Self::Reset { .. }
        )
    }
}

/// Why there is no estimate. Each variant is a reason the pipeline logs and counts.
#[derive(Debug, Clone, Copy, PartialEq, thiserror::Error)]
pub enum NoEstimate {
    /// The filter has not (or no longer) started.
    #[error("the position filter is not initialised")]
    NotInitialised,
    /// The last accepted measurement is too old.
    #[error(
        "coasting for {since_s:.1} s since the last accepted measurement (limit {max_s:.1} s)"
    )]
    Coasting {
        /// Seconds since the last accepted measurement.
        since_s: f64,
        /// The configured limit.
        max_s: f64,
    },
    /// The accuracy is too poor to publish.
    #[error("95 % accuracy {accuracy95_m:.1} m is worse than the limit {max_m:.1} m")]
    TooInaccurate {
        /// The accuracy.
        accuracy95_m: f64,
        /// The configured limit.
        max_m: f64,
    },
}

impl NoEstimate {
    /// A short stable name for counting refusals.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::NotInitialised => "not_initialised",
            Self::Coasting { .. } => "coasting",
            Self::TooInaccurate { .. } => "too_inaccurate",
        }
    }
}

/// The filter's state at a requested time.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FilterEstimate {
    /// The time the state refers to, µs (as requested).
    pub t_us: u64,
    /// Position, metres north/east.
    pub ne_m: [f64; 2],
    /// Velocity north/east, m/s, when it is observed (largest sigma within `max_velocity_sigma_mps`).
    pub vel_ne_mps: Option<[f64; 2]>,
    /// One-sigma of the velocity along its worst axis, m/s (the filter's own; tile quantisation makes the
    /// velocity noisier than a GNSS one).
    pub velocity_sigma_mps: f64,
    /// Radius containing the true position with at least 95 % probability, metres (see the module docs).
    pub accuracy95_m: f64,
    /// Position covariance, m².
    pub position_cov_m2: [[f64; 2]; 2],
    /// Seconds since the last accepted measurement (negative when asked for an earlier time).
    pub since_measurement_s: f64,
    /// The last accepted measurement's margin ([`ANCHOR_MARGIN`] when it was an anchor).
    pub margin: f32,
    /// Whether an anchor was accepted within `anchor_max_age_s` of `t_us`.
    pub anchored: bool,
}

/// The margin an anchor carries (a reference position is as unambiguous as a match can be).
pub const ANCHOR_MARGIN: f32 = 1.0;

#[derive(Debug, Clone, Copy)]
struct Stamped {
    t_us: u64,
    m: Measurement,
}

#[derive(Debug, Clone)]
struct Running {
    /// Time of `x`/`p`: the latest measurement processed (accepted or gated).
    t_us: u64,
    x: Vector4<f64>,
    p: Matrix4<f64>,
    last_accepted: Stamped,
    consecutive_gated: u32,
    /// The measurements of the current run of gated ones, to restart from.
    gated: Vec<Stamped>,
    /// The time of the last accepted anchor, µs.
    last_anchor_us: Option<u64>,
    /// The state descends from an anchor (no visual-only restart since): gated measurements never reset
    /// it; it coasts until `reinit_gap_s` instead.
    anchored_lineage: bool,
    /// The item processed at `t_us` was an anchor: a frame with the same exposure time is not stale.
    at_anchor: bool,
}

#[derive(Debug, Clone)]
enum State {
    Initialising { buffer: Vec<Stamped> },
    Running(Box<Running>),
}

/// The constant-velocity position filter. See the module docs.
#[derive(Debug, Clone)]
pub struct PositionFilter {
    config: FilterConfig,
    state: State,
}

fn seconds(from_us: u64, to_us: u64) -> f64 {
    (to_us as i128 - from_us as i128) as f64 * 1e-6
}

fn transition(dt: f64) -> Matrix4<f64> {
    let mut f = Matrix4::identity();
    f[(0, 2)] = dt;
    f[(1, 3)] = dt;
    f
}

/// White-acceleration process noise over `|dt|` (continuous spectral density `sigma²`).
fn process_noise(dt: f64, sigma: f64) -> Matrix4<f64> {
    let dt = dt.abs();
    let q = sigma * sigma;
    let (pp, pv, vv) = (q * dt.powi(3) / 3.0, q * dt.powi(2) / 2.0, q * dt);
    let mut m = Matrix4::zeros();
    for i in 0..2 {
        m[(i, i)] = pp;
        m[(i, i + 2)] = pv;
        m[(i + 2, i)] = pv;
        m[(i + 2, i + 2)] = vv;
    }
    m
}

fn measurement_cov(m: &Measurement) -> Matrix2<f64> {
    let sigma = m.accuracy95_m / K95;
    Matrix2::identity() * (sigma * sigma)
}

fn largest_eigenvalue(m: &Matrix2<f64>) -> f64 {
    let (a, b, c) = (m[(0, 0)], 0.5 * (m[(0, 1)] + m[(1, 0)]), m[(1, 1)]);
    let mean = 0.5 * (a + c);
    mean + (0.25 * (a - c).powi(2) + b * b).sqrt()
}

/// The state and covariance `dt` seconds later.
fn predicted(
    x: &Vector4<f64>,
    p: &Matrix4<f64>,
    dt: f64,
    sigma_a: f64,
) -> (Vector4<f64>, Matrix4<f64>) {
    let f = transition(dt);
    (f * x, f * p * f.transpose() + process_noise(dt, sigma_a))
}

impl Running {
    fn is_anchored(&self, t_us: u64, max_age_s: f64) -> bool {
        self.last_anchor_us
            .is_some_and(|a| seconds(a, t_us).abs() <= max_age_s)
    }

    fn predict(&mut self, t_us: u64, sigma_a: f64) {
        (self.x, self.p) = predicted(&self.x, &self.p, seconds(self.t_us, t_us), sigma_a);
        self.t_us = t_us;
    }

    /// Innovation and its squared Mahalanobis distance, or `None` when S is singular.
    fn innovation(&self, m: &Measurement) -> Option<(Vector2<f64>, Matrix2<f64>, f64)> {
        let nu = Vector2::new(m.ne_m[0] - self.x[0], m.ne_m[1] - self.x[1]);
        let s = self.p.fixed_view::<2, 2>(0, 0).into_owned() + measurement_cov(m);
        let s_inv = s.try_inverse()?;
        let d2 = (nu.transpose() * s_inv * nu)[(0, 0)];
        Some((nu, s_inv, d2))
    }

    /// Kalman update in Joseph form (stays symmetric positive definite).
    fn correct(&mut self, nu: Vector2<f64>, s_inv: Matrix2<f64>, m: &Measurement) {
        let k = self.p.fixed_view::<4, 2>(0, 0).into_owned() * s_inv;
        self.x += k * nu;
        let mut i_kh = Matrix4::identity();
        i_kh.fixed_view_mut::<4, 2>(0, 0).sub_assign(&k);
        let r = measurement_cov(m);
        self.p = i_kh * self.p * i_kh.transpose() + k * r * k.transpose();
        self.p = 0.5 * (self.p + self.p.transpose());
    }
}

impl PositionFilter {
    /// A filter waiting for its first measurements. `config` should be validated ([`FilterConfig::validate`]).
    pub fn new(config: FilterConfig) -> Self {
        Self {
            config,
            state: State::Initialising { buffer: Vec::new() },
        }
    }

    /// The configuration.
    pub fn config(&self) -> &FilterConfig {
        &self.config
    }

    /// Whether the filter is running (initialised).
    pub fn is_initialised(&self) -> bool {
        matches!(self.state, State::Running(_))
    }

    /// Forgets everything: the next measurements initialise it again.
    pub fn reset(&mut self) {
        self.state = State::Initialising { buffer: Vec::new() };
    }

    /// Feeds one frame's measurement, stamped at its exposure time (µs, same clock as [`Self::estimate_at`]).
    pub fn update(&mut self, t_us: u64, m: &Measurement) -> UpdateOutcome {
        let finite = m.ne_m.iter().all(|x| x.is_finite())
            && m.accuracy95_m.is_finite()
            && m.accuracy95_m > 0.0
            && m.quantisation95_m.is_finite()
            && m.quantisation95_m >= 0.0;
        if !finite {
            return UpdateOutcome::Invalid;
        }
        let stamped = Stamped { t_us, m: *m };
        let cfg = &self.config;
        match &mut self.state {
            State::Initialising { buffer } => {
                if let Some(last) = buffer.last() {
                    if t_us <= last.t_us {
                        return UpdateOutcome::Stale {
                            t_us,
                            filter_t_us: last.t_us,
                        };
                    }
                }
                buffer.push(stamped);
                self.try_initialise()
            }
            State::Running(run) => {
                if t_us < run.t_us || (t_us == run.t_us && !run.at_anchor) {
                    return UpdateOutcome::Stale {
                        t_us,
                        filter_t_us: run.t_us,
                    };
                }
                if seconds(run.last_accepted.t_us, t_us) > cfg.reinit_gap_s {
                    log::info!(
                        "position filter: {:.1} s without an accepted measurement, re-initialising",
                        seconds(run.last_accepted.t_us, t_us)
                    );
                    self.state = State::Initialising {
                        buffer: vec![stamped],
                    };
                    return self.try_initialise();
                }
                run.predict(t_us, cfg.accel_sigma_mps2);
                run.at_anchor = false;
                let Some((nu, s_inv, d2)) = run.innovation(m) else {
                    return UpdateOutcome::Invalid;
                };
                if d2 <= cfg.gate_d2() {
                    run.correct(nu, s_inv, m);
                    run.last_accepted = stamped;
                    run.consecutive_gated = 0;
                    run.gated.clear();
                    return UpdateOutcome::Accepted { d2 };
                }
                run.consecutive_gated = run.consecutive_gated.saturating_add(1);
                let consecutive = run.consecutive_gated;
                // A state that descends from an anchor is trusted over any run of visual matches that
                // disagree with it (a slowly changing view keeps matching the same wrong tile): it coasts,
                // and only `reinit_gap_s` without an accepted measurement restarts it.
                if run.anchored_lineage || !cfg.visual_start {
                    return UpdateOutcome::Gated { d2, consecutive };
                }
                run.gated.push(stamped);
                if consecutive < cfg.max_consecutive_gated {
                    return UpdateOutcome::Gated { d2, consecutive };
                }
                log::warn!(
                    "position filter: {consecutive} measurements gated in a row (last d² {d2:.1}), re-initialising"
                );
                let buffer = std::mem::take(&mut run.gated);
                self.state = State::Initialising { buffer };
                UpdateOutcome::Diverged { d2, consecutive }
            }
        }
    }

    /// Feeds a reference position (a healthy GNSS, through the autopilot) at `t_us` (µs, the frames' clock):
    /// local metres north/east and its 95 % radius. It is a measurement without the tile-quantisation floor:
    /// its floor is its own accuracy (GNSS errors, too, are shared by consecutive samples, so averaging
    /// anchors must not claim better than one of them).
    ///
    /// A filter that is not running starts from this anchor alone; a running one takes it as a measurement,
    /// or, when it disagrees beyond the gate, restarts from it (a healthy GNSS outranks visual matches).
    /// Either way the state then descends from an anchor: until it is restarted after `reinit_gap_s`
    /// without an accepted measurement, runs of gated visual measurements never reset it.
    pub fn anchor(&mut self, t_us: u64, ne_m: [f64; 2], accuracy95_m: f64) -> AnchorOutcome {
        if !(ne_m.iter().all(|x| x.is_finite()) && accuracy95_m.is_finite() && accuracy95_m > 0.0) {
            return AnchorOutcome::Invalid;
        }
        let stamped = Stamped {
            t_us,
            m: Measurement {
                ne_m,
                accuracy95_m,
                quantisation95_m: accuracy95_m,
                margin: ANCHOR_MARGIN,
                best_similarity: 1.0,
                cluster_size: 1,
                spread_m: 0.0,
            },
        };
        let cfg = &self.config;
        match &mut self.state {
            State::Initialising { buffer } => {
                if let Some(last) = buffer.last() {
                    if t_us < last.t_us {
                        return AnchorOutcome::Stale {
                            t_us,
                            filter_t_us: last.t_us,
                        };
                    }
                }
                self.start_from_anchor(stamped);
                AnchorOutcome::Initialised
            }
            State::Running(run) => {
                if t_us < run.t_us {
                    return AnchorOutcome::Stale {
                        t_us,
                        filter_t_us: run.t_us,
                    };
                }
                run.predict(t_us, cfg.accel_sigma_mps2);
                let Some((nu, s_inv, d2)) = run.innovation(&stamped.m) else {
                    self.start_from_anchor(stamped);
                    return AnchorOutcome::Reset { d2: f64::NAN };
                };
                if d2 > cfg.gate_d2() {
                    log::warn!(
                        "position filter: an anchor disagrees with the state (d² {d2:.1}), restarting from it"
                    );
                    self.start_from_anchor(stamped);
                    return AnchorOutcome::Reset { d2 };
                }
                run.correct(nu, s_inv, &stamped.m);
                run.last_accepted = stamped;
                run.last_anchor_us = Some(t_us);
                run.anchored_lineage = true;
                run.at_anchor = true;
                run.consecutive_gated = 0;
                run.gated.clear();
                AnchorOutcome::Accepted { d2 }
            }
        }
    }

    /// Whether an anchor was accepted within `anchor_max_age_s` of `t_us`.
    pub fn is_anchored(&self, t_us: u64) -> bool {
        match &self.state {
            State::Running(run) => run.is_anchored(t_us, self.config.anchor_max_age_s),
            State::Initialising { .. } => false,
        }
    }

    /// Runs from one anchor: its position and covariance, velocity unknown (as a cold start).
    fn start_from_anchor(&mut self, a: Stamped) {
        let sigma_v = self.config.max_speed_mps / 2.0;
        let mut p = Matrix4::zeros();
        p.fixed_view_mut::<2, 2>(0, 0)
            .copy_from(&measurement_cov(&a.m));
        p[(2, 2)] = sigma_v * sigma_v;
        p[(3, 3)] = sigma_v * sigma_v;
        self.state = State::Running(Box::new(Running {
            t_us: a.t_us,
            x: Vector4::new(a.m.ne_m[0], a.m.ne_m[1], 0.0, 0.0),
            p,
            last_accepted: a,
            consecutive_gated: 0,
            gated: Vec::new(),
            last_anchor_us: Some(a.t_us),
            anchored_lineage: true,
            at_anchor: true,
        }));
    }

    /// Whether two measurements can both be right: closer than their radii plus the distance flown.
    fn consistent(&self, a: &Stamped, b: &Stamped) -> bool {
        let d = (a.m.ne_m[0] - b.m.ne_m[0]).hypot(a.m.ne_m[1] - b.m.ne_m[1]);
        let dt = seconds(a.t_us, b.t_us).abs();
        d <= a.m.accuracy95_m + b.m.accuracy95_m + self.config.max_speed_mps * dt
    }

    /// With the newest buffered measurement: drop old ones, find those consistent with it and with each
    /// other (newest first), and start when there are enough.
    fn try_initialise(&mut self) -> UpdateOutcome {
        let State::Initialising { buffer } = &mut self.state else {
            return UpdateOutcome::Invalid;
        };
        let Some(newest) = buffer.last().copied() else {
            return UpdateOutcome::Invalid;
        };
        let window = self.config.init_window_s;
        buffer.retain(|s| seconds(s.t_us, newest.t_us) <= window);
        // Bound the buffer: at 30 Hz and a few seconds it stays small anyway.
        if buffer.len() > 256 {
            let excess = buffer.len() - 256;
            buffer.drain(..excess);
        }
        if !self.config.visual_start {
            return UpdateOutcome::NotInitialised {
                consistent: 0,
                needed: self.config.init_measurements,
                spread_m: 0.0,
            };
        }
        let buffer = buffer.clone();
        let mut chosen: Vec<Stamped> = vec![newest];
        for s in buffer.iter().rev().skip(1) {
            if chosen.iter().all(|c| self.consistent(c, s)) {
                chosen.push(*s);
            }
        }
        let needed = self.config.init_measurements;
        // Consistent measurements of one view (the same tiles winning frame after frame) agree with each
        // other whether they are right or wrong: they count only once the view has changed, i.e. two of
        // them are farther apart than one view's tiles can be.
        let mut spread_m: f64 = 0.0;
        let mut views_differ = false;
        for (i, a) in chosen.iter().enumerate() {
            for b in &chosen[i + 1..] {
                let d = (a.m.ne_m[0] - b.m.ne_m[0]).hypot(a.m.ne_m[1] - b.m.ne_m[1]);
                spread_m = spread_m.max(d);
                views_differ |= d >= self.config.init_min_spread_m
                    && d > a.m.quantisation95_m + b.m.quantisation95_m;
            }
        }
        if chosen.len() < needed || !views_differ {
            return UpdateOutcome::NotInitialised {
                consistent: chosen.len(),
                needed,
                spread_m,
            };
        }
        chosen.reverse();
        let first = chosen[0];
        let sigma_v = self.config.max_speed_mps / 2.0;
        let mut p = Matrix4::zeros();
        p.fixed_view_mut::<2, 2>(0, 0)
            .copy_from(&measurement_cov(&first.m));
        p[(2, 2)] = sigma_v * sigma_v;
        p[(3, 3)] = sigma_v * sigma_v;
        let mut run = Running {
            t_us: first.t_us,
            x: Vector4::new(first.m.ne_m[0], first.m.ne_m[1], 0.0, 0.0),
            p,
            last_accepted: first,
            consecutive_gated: 0,
            gated: Vec::new(),
            last_anchor_us: None,
            anchored_lineage: false,
            at_anchor: false,
        };
        for s in &chosen[1..] {
            run.predict(s.t_us, self.config.accel_sigma_mps2);
            if let Some((nu, s_inv, _)) = run.innovation(&s.m) {
                run.correct(nu, s_inv, &s.m);
                run.last_accepted = *s;
            }
        }
        // The newest measurement is the last chosen, so the state is at its time.
        let measurements = chosen.len();
        self.state = State::Running(Box::new(run));
        UpdateOutcome::Initialised { measurements }
    }

    /// The state predicted to `t_us` (publish time), without changing the filter.
    ///
    /// An earlier time than the filter's is predicted backwards with the same (growing) process noise: the
    /// covariance only grows, which is conservative.
    pub fn estimate_at(&self, t_us: u64) -> Result<FilterEstimate, NoEstimate> {
        let State::Running(run) = &self.state else {
            return Err(NoEstimate::NotInitialised);
        };
        let since_s = seconds(run.last_accepted.t_us, t_us);
        if since_s > self.config.max_coast_s {
            return Err(NoEstimate::Coasting {
                since_s,
                max_s: self.config.max_coast_s,
            });
        }
        let (x, p) = predicted(
            &run.x,
            &run.p,
            seconds(run.t_us, t_us),
            self.config.accel_sigma_mps2,
        );
        let p_pos = p.fixed_view::<2, 2>(0, 0).into_owned();
        let sigma = largest_eigenvalue(&p_pos).max(0.0).sqrt();
        let accuracy95_m = (K95 * sigma).max(run.last_accepted.m.quantisation95_m);
        if accuracy95_m.is_nan() || accuracy95_m > self.config.max_accuracy_m {
            return Err(NoEstimate::TooInaccurate {
                accuracy95_m,
                max_m: self.config.max_accuracy_m,
            });
        }
        let p_vel = p.fixed_view::<2, 2>(2, 2).into_owned();
        let vel_sigma = largest_eigenvalue(&p_vel).max(0.0).sqrt();
        let vel_ne_mps = (vel_sigma <= self.config.max_velocity_sigma_mps).then(|| [x[2], x[3]]);
        Ok(FilterEstimate {
            t_us,
            ne_m: [x[0], x[1]],
            vel_ne_mps,
            velocity_sigma_mps: vel_sigma,
            accuracy95_m,
            position_cov_m2: [
                [p_pos[(0, 0)], p_pos[(0, 1)]],
                [p_pos[(1, 0)], p_pos[(1, 1)]],
            ],
            since_measurement_s: since_s,
            margin: run.last_accepted.m.margin,
            anchored: run.is_anchored(t_us, self.config.anchor_max_age_s),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meas(n: f64, e: f64, acc: f64) -> Measurement {
        Measurement {
            ne_m: [n, e],
            accuracy95_m: acc,
            quantisation95_m: acc * 0.8,
            margin: 0.1,
            best_similarity: 0.8,
            cluster_size: 3,
            spread_m: 2.0,
        }
    }

    const S: u64 = 1_000_000;
    const T0: u64 = 1_700_000_000 * S;

    #[test]
    fn gate_value() {
        let cfg = FilterConfig::default();
        assert!((cfg.gate_d2() - 13.8155).abs() < 1e-3);
        assert!((K95 * K95 - (-2.0 * 0.05f64.ln())).abs() < 1e-9);
    }

    #[test]
    fn needs_consistent_measurements_to_start() {
        let mut f = PositionFilter::new(FilterConfig::default());
        assert_eq!(f.estimate_at(T0), Err(NoEstimate::NotInitialised));
        assert_eq!(
            f.update(T0, &meas(0.0, 0.0, 10.0)),
            UpdateOutcome::NotInitialised {
                consistent: 1,
                needed: 3,
                spread_m: 0.0
            }
        );
        // A wrong match far away does not count with the first.
        assert_eq!(
            f.update(T0 + S / 5, &meas(3000.0, 0.0, 10.0)),
            UpdateOutcome::NotInitialised {
                consistent: 1,
                needed: 3,
                spread_m: 0.0
            }
        );
        assert_eq!(
            f.update(T0 + 2 * S / 5, &meas(10.0, 0.0, 10.0)),
            UpdateOutcome::NotInitialised {
                consistent: 2,
                needed: 3,
                spread_m: 10.0
            }
        );
        assert!(f.estimate_at(T0 + 2 * S / 5).is_err());
        assert_eq!(
            f.update(T0 + 3 * S / 5, &meas(20.0, 0.0, 10.0)),
            UpdateOutcome::Initialised { measurements: 3 }
        );
        let e = f.estimate_at(T0 + 3 * S / 5).unwrap();
        assert!(e.ne_m[0] > 0.0 && e.ne_m[0] < 25.0, "{e:?}");
        assert!(!e.anchored);
        assert!(e.accuracy95_m >= 8.0);
        // Stale and repeated measurements are refused.
        assert!(matches!(
            f.update(T0, &meas(0.0, 0.0, 10.0)),
            UpdateOutcome::Stale { .. }
        ));
    }

    #[test]
    fn gates_outliers_and_resets_after_too_many() {
        let cfg = FilterConfig::default();
        let mut f = PositionFilter::new(cfg.clone());
        let mut t = T0;
        for i in 0..20 {
            let o = f.update(t, &meas(2.0 * i as f64, 0.0, 10.0));
            assert!(i < 2 || o != UpdateOutcome::Invalid);
            t += S / 5;
        }
        assert!(f.is_initialised());
        // The wrong place moves like the vehicle would (another view each frame), so it may start a filter.
        let wrong = |k: u32| meas(500.0 + 4.0 * f64::from(k), 500.0, 10.0);
        for k in 1..cfg.max_consecutive_gated {
            match f.update(t, &wrong(k)) {
                UpdateOutcome::Gated { d2, consecutive } => {
                    assert!(d2 > 100.0);
                    assert_eq!(consecutive, k);
                }
                o => panic!("{o:?}"),
            }
            t += S / 5;
        }
        assert!(matches!(
            f.update(t, &wrong(cfg.max_consecutive_gated)),
            UpdateOutcome::Diverged { .. }
        ));
        assert!(!f.is_initialised());
        // The gated measurements agreed with each other: the next one at that place starts the filter there.
        t += S / 5;
        assert!(matches!(
            f.update(t, &wrong(cfg.max_consecutive_gated + 1)),
            UpdateOutcome::Initialised { .. }
        ));
        let e = f.estimate_at(t).unwrap();
        assert!((e.ne_m[0] - 524.0).abs() < 10.0, "{e:?}");
    }

    #[test]
    fn accuracy_floor_coasting_and_latency() {
        let cfg = FilterConfig::default();
        let mut f = PositionFilter::new(cfg.clone());
        let mut t = T0;
        // 10 m/s north, perfect measurements with a 10 m radius and an 8 m floor.
        for i in 0..100 {
            f.update(t, &meas(2.0 * i as f64, 0.0, 10.0));
            t += S / 5;
        }
        let last = t - S / 5;
        let e = f.estimate_at(last).unwrap();
        // The covariance averaged 100 frames, the floor does not let it claim better than quantisation.
        assert!((e.accuracy95_m - 8.0).abs() < 1e-9, "{e:?}");
        assert!(K95 * largest_eigenvalue(&Matrix2::from(e.position_cov_m2)).sqrt() < 8.0);
        let v = e.vel_ne_mps.unwrap();
        assert!((v[0] - 10.0).abs() < 0.5 && v[1].abs() < 0.5, "{v:?}");
        // Latency compensation: half a second later the vehicle is 5 m further north.
        let later = f.estimate_at(last + S / 2).unwrap();
        assert!((later.ne_m[0] - e.ne_m[0] - 5.0).abs() < 0.3);
        assert!(later.accuracy95_m >= e.accuracy95_m);
        // ... and asking did not change the filter.
        assert_eq!(f.estimate_at(last).unwrap(), e);
        // Coasting limit.
        assert!(f.estimate_at(last + 2 * S).is_ok());
        assert!(matches!(
            f.estimate_at(last + 4 * S),
            Err(NoEstimate::Coasting { .. })
        ));
        // A long gap restarts the filter.
        let o = f.update(last + 11 * S, &meas(110.0 * 2.0, 0.0, 10.0));
        assert_eq!(
            o,
            UpdateOutcome::NotInitialised {
                consistent: 1,
                needed: 3,
                spread_m: 0.0
            }
        );
        assert_eq!(
            f.estimate_at(last + 11 * S),
            Err(NoEstimate::NotInitialised)
        );
    }

    #[test]
    fn too_inaccurate_and_invalid() {
        let cfg = FilterConfig {
            max_accuracy_m: 20.0,
            ..FilterConfig::default()
        };
        let mut f = PositionFilter::new(cfg);
        assert_eq!(
            f.update(T0, &meas(f64::NAN, 0.0, 10.0)),
            UpdateOutcome::Invalid
        );
        assert_eq!(f.update(T0, &meas(0.0, 0.0, 0.0)), UpdateOutcome::Invalid);
        for i in 0..3 {
            f.update(T0 + i * S / 5, &meas(35.0 * i as f64, 0.0, 40.0));
        }
        assert!(f.is_initialised());
        assert!(matches!(
            f.estimate_at(T0 + 2 * S / 5),
            Err(NoEstimate::TooInaccurate { .. })
        ));
    }

    #[test]
    fn one_view_repeated_does_not_start_the_filter() {
        let mut f = PositionFilter::new(FilterConfig::default());
        // The same (wrong) tile wins for 3 s: consistent, but one view.
        for i in 0..15 {
            let o = f.update(T0 + i * S / 5, &meas(700.0, -300.0 + 0.1 * i as f64, 10.0));
            assert!(matches!(o, UpdateOutcome::NotInitialised { .. }), "{o:?}");
        }
        assert!(!f.is_initialised());
    }

    #[test]
    fn an_anchor_starts_the_filter_alone_and_outranks_visual_matches() {
        let cfg = FilterConfig::default();
        let mut f = PositionFilter::new(cfg.clone());
        let mut t = T0;
        assert_eq!(f.anchor(t, [f64::NAN, 0.0], 5.0), AnchorOutcome::Invalid);
        assert_eq!(f.anchor(t, [0.0, 0.0], 0.0), AnchorOutcome::Invalid);
        assert_eq!(f.anchor(t, [0.0, 0.0], 5.0), AnchorOutcome::Initialised);
        let e = f.estimate_at(t).unwrap();
        assert!(e.anchored);
        // Honest: no better than the anchor, no tile floor either.
        assert!(e.accuracy95_m >= 5.0 && e.accuracy95_m < 5.5, "{e:?}");
        // 10 m/s north, anchored at 5 Hz with visual matches at the same exposure time.
        for i in 1..50 {
            t += S / 5;
            let n = 2.0 * f64::from(i);
            assert!(matches!(
                f.anchor(t, [n, 0.0], 5.0),
                AnchorOutcome::Accepted { .. }
            ));
            assert!(matches!(
                f.update(t, &meas(n + 3.0, 0.0, 20.0)),
                UpdateOutcome::Accepted { .. }
            ));
        }
        // An anchored filter never diverges on a run of consistent wrong matches; it coasts.
        // 11 frames: 2.2 s, past `anchor_max_age_s` and twice past `max_consecutive_gated`.
        for _ in 0..11 {
            t += S / 5;
            assert!(matches!(
                f.update(t, &meas(800.0, 800.0, 10.0)),
                UpdateOutcome::Gated { .. }
            ));
        }
        assert!(f.is_initialised());
        let e = f.estimate_at(t).unwrap();
        assert!(!e.anchored, "the last anchor is 2.2 s old");
        assert!((e.ne_m[0] - 120.0).abs() < 5.0, "{e:?}");
        assert!(matches!(
            f.estimate_at(t + 2 * S),
            Err(NoEstimate::Coasting { .. })
        ));
        // A filter started from visual matches at the wrong place is reset by the first anchor.
        let mut g = PositionFilter::new(cfg);
        for i in 0..5 {
            g.update(T0 + i * S / 5, &meas(600.0 + 6.0 * i as f64, 0.0, 10.0));
        }
        assert!(g.is_initialised());
        assert!(matches!(
            g.anchor(T0 + S, [0.0, 0.0], 5.0),
            AnchorOutcome::Reset { .. }
        ));
        assert!(g.estimate_at(T0 + S).unwrap().ne_m[0].abs() < 1e-9);
        // An anchor older than the filter's state is refused.
        assert!(matches!(
            g.anchor(T0, [0.0, 0.0], 5.0),
            AnchorOutcome::Stale { .. }
        ));
    }

    #[test]
    fn config_validation_names_the_field() {
        let err = FilterConfig {
            reinit_gap_s: 1.0,
            ..FilterConfig::default()
        }
        .validate()
        .unwrap_err()
        .to_string();
        assert!(err.contains("localize.filter.reinit_gap_s"), "{err}");
        assert!(FilterConfig {
            init_measurements: 1,
            ..FilterConfig::default()
        }
        .validate()
        .is_err());
        assert!(FilterConfig {
            gate_probability: 1.0,
            ..FilterConfig::default()
        }
        .validate()
        .is_err());
        assert!(FilterConfig::default().validate().is_ok());
    }
}
