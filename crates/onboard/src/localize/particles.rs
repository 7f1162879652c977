//! A particle filter over the tile similarities: the localizer for a retrieval model too weak to trust one
//! frame at a time.
//!
//! The [estimator](super::estimator) + [Kalman filter](super::filter) path turns each frame into one
//! position, or refuses it when another place is nearly as similar. A weak model (the demo model) is
//! ambiguous in most frames, so that path refuses most of them and soon stops publishing once GNSS is lost.
//! Yet the true tile is usually among the frame's ten best, and the vehicle moves only a metre between frames
//! (figures for the bundled scenario: sim/README.md, "The two localizers"). A particle filter uses
//! that evidence: every frame reweights positions by how similar the tiles there are, and the motion model
//! keeps only the places a vehicle could have flown through. A look-alike that wins one frame does not win
//! the next ones from a place that moved consistently; a look-alike that keeps winning splits the cloud, and
//! the reported accuracy widens with it.
//!
//! # The state and the motion
//!
//! Each particle is a vehicle position and velocity `[n, e, vn, ve]` in the local north/east frame (metres,
//! m/s). Between two inputs `dt` apart, each particle moves on with its velocity, plus a white acceleration
//! of spectral density `accel_sigma_mps2²` (`[localize.filter]`, shared with the Kalman filter): the velocity
//! gets `N(0, accel_sigma² dt)` per axis, the position `N(0, accel_sigma² dt³ / 3)`. Speeds above
//! `max_speed_mps` are scaled back to it.
//!
//! # The likelihood of a frame
//!
//! A frame gives the similarities `s_i` of the tiles around the cloud (the localize stage searches a window
//! around the cloud, [`ParticleFilter::search_window`]), as *vehicle* positions: each tile centre minus the
//! view centre's offset from the vehicle (from rectification). The similarity field at a position `x` is the
//! Gaussian-kernel average of the tiles near it, `s(x) = Σ k_i s_i / Σ k_i`, `k_i = exp(-|x - t_i|² / 2σ²)`,
//! `σ = kernel_strides · stride` (half a stride: a view half-way between two tiles is as similar to both);
//! a position with no tile within one stride takes the frame's lowest similarity. A particle's weight is
//! multiplied by `exp((s(x) - s_best) / temperature)`.
//!
//! The temperature does two jobs. It converts cosine similarities into likelihood ratios, and it discounts
//! frames that are not independent: at 5 frames a second and 1 m of travel a frame, consecutive frames see
//! nearly the same ground, and multiplying their likelihoods as if they were independent makes the filter
//! far too sure of itself. Too cold a temperature tracks as well on median, but its fixes exceed their
//! accuracy too often; a warmer one keeps the second mode of a look-alike alive long enough for the reported
//! accuracy to widen. Why the default 0.2 suits the demo model: sim/README.md, "The two localizers".
//!
//! A frame whose best places lie away from the cloud, so that the cloud's mean likelihood relative to the
//! frame's best place (its *agreement*) is below `min_agreement`, is not used: a corrupt frame, a wrong
//! attitude or a confusing view would otherwise drag the cloud; the cloud coasts on instead (and stops
//! publishing after `max_coast_s`). The gate holds only while the cloud still says where the vehicle is:
//! once seconds without a usable frame have grown its 95 % radius beyond `reacquire_strides` tile strides,
//! frames are used again so that it can narrow (re-acquire) within the region the vehicle can have reached;
//! it publishes again only once it is narrower than `max_accuracy_strides`.
//!
//! Resampling (systematic, when the effective sample size drops below half) moves particles to the likely
//! places, with a small jitter so that copies of one particle spread again.
//!
//! # Anchors
//!
//! A healthy GNSS position ([`ParticleFilter::anchor`]) starts the filter (particles drawn around it with its
//! accuracy and velocities with a sigma of half `max_speed_mps`) and, while the filter runs, reweights the
//! particles by its Gaussian likelihood; an anchor that the cloud does not contain at `gate_probability`
//! restarts the filter there. Consecutive anchors teach the particles the velocity, which is what carries the
//! cloud when GNSS is lost. **There is no visual-only start**: global localisation from nothing is not what
//! a weak model can do safely, so without an anchor the filter publishes nothing ([`NoEstimate`]). Use the
//! Kalman path (`method = "kalman"`, `visual_start = true`) for a strong model that must start without GNSS.
//!
//! # The reported accuracy
//!
//! `accuracy95_m = max(r95, floor)`: `r95` is the radius around the weighted mean that holds 95 % of the
//! weight (at the requested time, each particle moved on with its own velocity, so it grows while coasting),
//! and `floor` the last input's own: for a frame, the tile quantisation `stride · √2 / 2` combined with the
//! camera offset's accuracy (the localizer's), as in the Kalman path (errors that consecutive frames share
//! never average out); for an anchor, its accuracy. No estimate is given when the last frame with evidence or
//! anchor is older than `max_coast_s`, or when the accuracy is worse than `max_accuracy_m` or
//! `max_accuracy_strides` tile strides.
//!
//! # A wrong attitude
//!
//! A wrong attitude drags the cloud: 25° of roll error at 30 m moves the view centre 14 m, the shifted
//! frames still agree with the cloud well enough to pass `min_agreement`, and the cloud follows them while its
//! reported accuracy stays small. The Kalman path gates such frames; this filter cannot, so the pipeline
//! refuses them before they get here ([`crate::rectify::attitude_check`]: the attitude jumped without the
//! image moving with it). Both, in the simulation: sim/README.md, "Tests".
//!
//! # Determinism
//!
//! The random numbers come from a ChaCha8 generator seeded by `seed`, drawn only in [`ParticleFilter::anchor`]
//! and [`ParticleFilter::update`] ([`ParticleFilter::estimate_at`] draws none): the same inputs in the same
//! order give the same fixes, which is what lets a recorded flight replay to the live run's fixes.

use std::collections::HashMap;

use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::StandardNormal;
use serde::Deserialize;

use super::estimator::K95;
use super::filter::{AnchorOutcome, FilterConfig, FilterEstimate, NoEstimate, ANCHOR_MARGIN};
use super::positive;

/// Resampled particles are jittered by this many tile strides (one sigma), so copies spread again.
const RESAMPLE_JITTER_STRIDES: f64 = 0.03;

/// The particle filter's own settings. A `[localize.particles]` TOML table; missing fields take the defaults.
/// The motion and publishing limits it shares with the Kalman filter come from `[localize.filter]`
/// (`accel_sigma_mps2`, `max_speed_mps`, `gate_probability` for anchors, `max_coast_s`, `max_accuracy_m`,
/// `max_velocity_sigma_mps`, `anchor_max_age_s`).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ParticleConfig {
    /// Number of particles.
    pub particles: usize,
    /// Likelihood temperature, in cosine-similarity units: a tile `temperature` less similar than the
    /// frame's best makes a place `e` times less likely. Model and frame-rate dependent; see the module docs.
    pub temperature: f64,
    /// Sigma of the kernel that interpolates the similarity field between tile centres, in tile strides.
    pub kernel_strides: f64,
    /// No estimate when the 95 % accuracy exceeds this many tile strides (of the last frame's tiles).
    pub max_accuracy_strides: f64,
    /// A frame whose agreement with the cloud (the cloud's mean likelihood relative to the frame's best
    /// place, 0..=1) is below this is not used ([`ParticleOutcome::Disagrees`]): the particle filter's
    /// gate. The default sits below the agreement of nearly all normal frames of the demo model at
    /// temperature 0.2; a higher one can lose the track (sim/README.md, "The two localizers").
    pub min_agreement: f64,
    /// The gate is not applied while the cloud's 95 % radius exceeds this many tile strides (more than
    /// `max_accuracy_strides`, so a cloud narrow enough to publish is always gated). A cloud that wide, grown
    /// by seconds without a usable frame (a camera stall, frames refused by the attitude check), no longer
    /// says where the vehicle is, only where it can be: there is nothing for a frame to disagree with, and
    /// gating every frame would keep it from ever narrowing again (after 10 s of refused frames, no fix would
    /// come until GNSS returned). With 3 the cloud narrows again within seconds (sim/README.md, "Tests").
    pub reacquire_strides: f64,
    /// Tiles the localize stage asks the search for (at least the stage's own `top_k`): all the tiles
    /// around the cloud should be there, not only the best few.
    pub search_k: usize,
    /// Seed of the random numbers (the same inputs and seed give the same fixes).
    pub seed: u64,
}

impl Default for ParticleConfig {
    fn default() -> Self {
        Self {
            particles: 2000,
            temperature: 0.2,
            kernel_strides: 0.5,
            max_accuracy_strides: 1.0,
            min_agreement: 0.1,
            reacquire_strides: 3.0,
            search_k: 512,
            seed: 0,
        }
    }
}

impl ParticleConfig {
    /// Checks every field; the error names the first bad one (as `localize.particles.<field>`) and why.
    pub fn validate(&self) -> Result<(), super::ConfigError> {
        let bad =
            |field: &str, reason: String| super::ConfigError::invalid("particles", field, reason);
        if !(100..=1_000_000).contains(&self.particles) {
            return bad(
                "particles",
                format!(
                    "is {}; it must be 100..=1000000 (fewer cannot hold two modes)",
                    self.particles
                ),
            );
        }
        if !positive(self.temperature) {
            return bad(
                "temperature",
                format!("is {}; it must be positive", self.temperature),
            );
        }
        if !(self.kernel_strides.is_finite() && (0.1..=2.0).contains(&self.kernel_strides)) {
            return bad(
                "kernel_strides",
                format!("is {}; it must be 0.1..=2", self.kernel_strides),
            );
        }
        if !positive(self.max_accuracy_strides) {
            return bad(
                "max_accuracy_strides",
                format!("is {}; it must be positive", self.max_accuracy_strides),
            );
        }
        if !(0.0..1.0).contains(&self.min_agreement) {
            return bad(
                "min_agreement",
                format!("is {}; it must be in 0..1", self.min_agreement),
            );
        }
        if !(self.reacquire_strides.is_finite()
            && self.reacquire_strides > self.max_accuracy_strides)
        {
            return bad(
                "reacquire_strides",
                format!(
                    "is {}; it must be finite and above max_accuracy_strides ({})",
                    self.reacquire_strides, self.max_accuracy_strides
                ),
            );
        }
        if self.search_k < 2 {
            return bad(
                "search_k",
                format!("is {}; at least 2 tiles are needed", self.search_k),
            );
        }
        Ok(())
    }
}

/// One tile's evidence in a frame: where the vehicle would be if the view were centred on the tile (its
/// centre minus the view centre's offset, local metres north/east), and its similarity.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TileEvidence {
    /// Vehicle position that puts the view centre on the tile centre, metres north/east.
    pub ne_m: [f64; 2],
    /// Cosine similarity of the frame with the tile.
    pub similarity: f32,
}

/// What [`ParticleFilter::update`] did with a frame.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ParticleOutcome {
    /// The frame reweighted the particles.
    Tracked {
        /// Before the update, the cloud's mean likelihood relative to the frame's best place (0..=1): near 1
        /// when the frame's best tiles lie where the cloud is, near 0 when they lie elsewhere.
        agreement: f64,
        /// Whether the particles were resampled.
        resampled: bool,
    },
    /// The frame's best places lie away from the cloud (agreement below `min_agreement`): not used, like a
    /// gated measurement. The cloud coasts on.
    Disagrees {
        /// The agreement found.
        agreement: f64,
    },
    /// No anchor has started the filter yet (there is no visual-only start).
    NotInitialised,
    /// Fewer than two tiles with finite positions and similarities: no evidence.
    NoEvidence,
    /// The frame is not newer than the filter's last input.
    Stale {
        /// Its time, µs.
        t_us: u64,
        /// The filter's latest input time, µs.
        filter_t_us: u64,
    },
    /// The stride or the floor is not a positive finite length.
    Invalid,
}

impl ParticleOutcome {
    /// A short stable name for counting outcomes.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Tracked { .. } => "tracked",
            Self::Disagrees { .. } => "disagrees",
            Self::NotInitialised => "not_initialised",
            Self::NoEvidence => "no_evidence",
            Self::Stale { .. } => "stale",
            Self::Invalid => "invalid",
        }
    }
}

/// The cloud: particles and the time they refer to.
#[derive(Debug, Clone)]
struct Cloud {
    pos: Vec<[f64; 2]>,
    vel: Vec<[f64; 2]>,
    weight: Vec<f64>,
    t_us: u64,
}

/// Weighted statistics of a set of positions.
struct Spread {
    mean: [f64; 2],
    cov: [[f64; 2]; 2],
    r_max: f64,
}

/// The particle filter. See the module docs.
#[derive(Debug, Clone)]
pub struct ParticleFilter {
    filter: FilterConfig,
    config: ParticleConfig,
    rng: ChaCha8Rng,
    cloud: Option<Cloud>,
    /// Time of the last anchor or frame with evidence, µs.
    last_input_us: u64,
    last_anchor_us: Option<u64>,
    /// The last input's accuracy floor, m.
    floor_m: f64,
    /// The last frame's tile stride, m (none before a frame: only `max_accuracy_m` then limits).
    stride_m: Option<f64>,
    last_was_anchor: bool,
}

impl ParticleFilter {
    /// A filter with no particles. Both configurations should be validated.
    pub fn new(filter: FilterConfig, config: ParticleConfig) -> Self {
        let rng = ChaCha8Rng::seed_from_u64(config.seed);
        Self {
            filter,
            config,
            rng,
            cloud: None,
            last_input_us: 0,
            last_anchor_us: None,
            floor_m: 0.0,
            stride_m: None,
            last_was_anchor: false,
        }
    }

    /// Forgets the particles (the random generator goes on).
    pub fn reset(&mut self) {
        self.cloud = None;
        self.last_anchor_us = None;
        self.stride_m = None;
    }

    /// Whether an anchor has started the filter.
    pub fn is_initialised(&self) -> bool {
        self.cloud.is_some()
    }

    /// Whether an anchor was accepted within `anchor_max_age_s` of `unix_us`.
    pub fn is_anchored(&self, unix_us: u64) -> bool {
        self.last_anchor_us
            .is_some_and(|a| seconds(unix_us, a).abs() <= self.filter.anchor_max_age_s)
    }

    /// The latest input time, µs, once started.
    fn latest_us(&self) -> Option<u64> {
        self.cloud.as_ref().map(|c| c.t_us)
    }

    /// A reference position (a healthy GNSS) at `t_us`, metres north/east, with its 95 % radius: starts the
    /// filter, reweights it, or restarts it where the cloud does not contain it.
    pub fn anchor(&mut self, t_us: u64, ne_m: [f64; 2], accuracy95_m: f64) -> AnchorOutcome {
        if !(ne_m.iter().all(|x| x.is_finite()) && accuracy95_m.is_finite() && accuracy95_m > 0.0) {
            return AnchorOutcome::Invalid;
        }
        if let Some(filter_t_us) = self.latest_us().filter(|&l| t_us < l) {
            return AnchorOutcome::Stale { t_us, filter_t_us };
        }
        let sigma = accuracy95_m / K95;
        let outcome = if self.cloud.is_none() {
            self.start(t_us, ne_m, sigma);
            AnchorOutcome::Initialised
        } else {
            self.predict(t_us);
            let cloud = self.cloud.as_ref().expect("started");
            let s = spread(&cloud.pos, &cloud.weight);
            let d2 = mahalanobis2(ne_m, &s, sigma * sigma);
            if d2 > chi2_2(self.filter.gate_probability) {
                self.start(t_us, ne_m, sigma);
                AnchorOutcome::Reset { d2 }
            } else {
                let cloud = self.cloud.as_mut().expect("started");
                let log_l: Vec<f64> = cloud
                    .pos
                    .iter()
                    .map(|p| {
                        let (dn, de) = (p[0] - ne_m[0], p[1] - ne_m[1]);
                        -0.5 * (dn * dn + de * de) / (sigma * sigma)
                    })
                    .collect();
                reweight(&mut cloud.weight, &log_l);
                self.resample_if_needed(accuracy95_m);
                AnchorOutcome::Accepted { d2 }
            }
        };
        self.last_input_us = t_us;
        self.last_anchor_us = Some(t_us);
        self.floor_m = accuracy95_m;
        self.last_was_anchor = true;
        outcome
    }

    /// Particles around an anchor.
    fn start(&mut self, t_us: u64, ne_m: [f64; 2], sigma: f64) {
        let n = self.config.particles;
        let v_sigma = 0.5 * self.filter.max_speed_mps;
        let mut pos = Vec::with_capacity(n);
        let mut vel = Vec::with_capacity(n);
        for _ in 0..n {
            let (a, b) = normal_pair(&mut self.rng);
            pos.push([ne_m[0] + sigma * a, ne_m[1] + sigma * b]);
            let (a, b) = normal_pair(&mut self.rng);
            vel.push(self.capped([v_sigma * a, v_sigma * b]));
        }
        self.cloud = Some(Cloud {
            pos,
            vel,
            weight: vec![1.0 / n as f64; n],
            t_us,
        });
    }

    /// A velocity scaled back to `max_speed_mps` if faster.
    fn capped(&self, v: [f64; 2]) -> [f64; 2] {
        let speed = v[0].hypot(v[1]);
        let max = self.filter.max_speed_mps;
        if speed > max {
            [v[0] * max / speed, v[1] * max / speed]
        } else {
            v
        }
    }

    /// Moves the particles on to `t_us` with the white-acceleration noise (nothing if not later).
    fn predict(&mut self, t_us: u64) {
        let Some(cloud) = self.cloud.as_mut() else {
            return;
        };
        let dt = seconds(t_us, cloud.t_us);
        if dt <= 0.0 {
            return;
        }
        let q = self.filter.accel_sigma_mps2;
        let (sv, sp) = (q * dt.sqrt(), q * (dt * dt * dt / 3.0).sqrt());
        let max = self.filter.max_speed_mps;
        for (p, v) in cloud.pos.iter_mut().zip(cloud.vel.iter_mut()) {
            let (a, b) = normal_pair(&mut self.rng);
            let (c, d) = normal_pair(&mut self.rng);
            p[0] += v[0] * dt + sp * a;
            p[1] += v[1] * dt + sp * b;
            v[0] += sv * c;
            v[1] += sv * d;
            let speed = v[0].hypot(v[1]);
            if speed > max {
                v[0] *= max / speed;
                v[1] *= max / speed;
            }
        }
        cloud.t_us = t_us;
    }

    /// One frame at `t_us`: its tiles as vehicle positions with their similarities, the accuracy floor of
    /// one frame (quantisation and camera offset, metres) and the tile stride, metres.
    pub fn update(
        &mut self,
        t_us: u64,
        tiles: &[TileEvidence],
        floor_m: f64,
        stride_m: f64,
    ) -> ParticleOutcome {
        if !(stride_m.is_finite() && stride_m > 0.0 && floor_m.is_finite() && floor_m > 0.0) {
            return ParticleOutcome::Invalid;
        }
        let Some(latest) = self.latest_us() else {
            return ParticleOutcome::NotInitialised;
        };
        if t_us <= latest && !(t_us == latest && self.last_was_anchor) {
            return ParticleOutcome::Stale {
                t_us,
                filter_t_us: latest,
            };
        }
        let tiles: Vec<TileEvidence> = tiles
            .iter()
            .copied()
            .filter(|t| t.similarity.is_finite() && t.ne_m.iter().all(|x| x.is_finite()))
            .collect();
        if tiles.len() < 2 {
            return ParticleOutcome::NoEvidence;
        }
        self.predict(t_us);
        let field = SimilarityField::new(&tiles, stride_m, self.config.kernel_strides);
        let temperature = self.config.temperature;
        let cloud = self.cloud.as_mut().expect("started");
        let log_l: Vec<f64> = cloud
            .pos
            .iter()
            .map(|p| (field.at(*p) - field.best) / temperature)
            .collect();
        let agreement: f64 = cloud
            .weight
            .iter()
            .zip(&log_l)
            .map(|(w, l)| w * l.exp())
            .sum();
        // The gate, unless the cloud has grown too wide to say where the vehicle is (`reacquire_strides`).
        let mean = spread(&cloud.pos, &cloud.weight).mean;
        let wide = weight_within(
            &cloud.pos,
            &cloud.weight,
            mean,
            self.config.reacquire_strides * stride_m,
        ) < 0.95;
        if agreement < self.config.min_agreement && !wide {
            return ParticleOutcome::Disagrees { agreement };
        }
        reweight(&mut cloud.weight, &log_l);
        let resampled = self.resample_if_needed(stride_m);
        self.last_input_us = t_us;
        self.floor_m = floor_m;
        self.stride_m = Some(stride_m);
        self.last_was_anchor = false;
        ParticleOutcome::Tracked {
            agreement,
            resampled,
        }
    }

    /// Systematic resampling when the effective sample size is below half the particles; the copies are
    /// jittered by [`RESAMPLE_JITTER_STRIDES`] of `scale_m`.
    fn resample_if_needed(&mut self, scale_m: f64) -> bool {
        let Some(cloud) = self.cloud.as_mut() else {
            return false;
        };
        let n = cloud.weight.len();
        let ess = 1.0 / cloud.weight.iter().map(|w| w * w).sum::<f64>();
        if ess >= 0.5 * n as f64 {
            return false;
        }
        let step = 1.0 / n as f64;
        let mut u = self.rng.random::<f64>() * step;
        let mut cumulative = cloud.weight[0];
        let mut i = 0;
        let mut pos = Vec::with_capacity(n);
        let mut vel = Vec::with_capacity(n);
        let jitter = RESAMPLE_JITTER_STRIDES * scale_m;
        for _ in 0..n {
            while u > cumulative && i + 1 < n {
                i += 1;
                cumulative += cloud.weight[i];
            }
            let (a, b) = normal_pair(&mut self.rng);
            pos.push([cloud.pos[i][0] + jitter * a, cloud.pos[i][1] + jitter * b]);
            vel.push(cloud.vel[i]);
            u += step;
        }
        cloud.pos = pos;
        cloud.vel = vel;
        cloud.weight = vec![step; n];
        true
    }

    /// The particles moved on (or back) to `t_us` with their own velocities, without noise.
    fn positions_at(&self, t_us: u64) -> Option<(Vec<[f64; 2]>, &Cloud)> {
        let cloud = self.cloud.as_ref()?;
        let dt = seconds(t_us, cloud.t_us);
        let pos = cloud
            .pos
            .iter()
            .zip(&cloud.vel)
            .map(|(p, v)| [p[0] + v[0] * dt, p[1] + v[1] * dt])
            .collect();
        Some((pos, cloud))
    }

    /// Where to search for the next frame's tiles at `t_us`: the cloud's mean and the distance of its
    /// farthest particle, metres (none before an anchor).
    pub fn search_window(&self, t_us: u64) -> Option<([f64; 2], f64)> {
        let (pos, cloud) = self.positions_at(t_us)?;
        let s = spread(&pos, &cloud.weight);
        Some((s.mean, s.r_max))
    }

    /// The estimate at `t_us` (latency compensation: the particles moved on with their velocities), or why
    /// there is none. Its `margin` is [`ANCHOR_MARGIN`] after an anchor and otherwise the quality in
    /// 0..=1 ([`Self::quality`]).
    pub fn estimate_at(&self, t_us: u64) -> Result<FilterEstimate, NoEstimate> {
        let (pos, cloud) = self.positions_at(t_us).ok_or(NoEstimate::NotInitialised)?;
        let since_s = seconds(t_us, self.last_input_us);
        if since_s > self.filter.max_coast_s {
            return Err(NoEstimate::Coasting {
                since_s,
                max_s: self.filter.max_coast_s,
            });
        }
        let s = spread(&pos, &cloud.weight);
        let accuracy95_m = r95(&pos, &cloud.weight, s.mean).max(self.floor_m);
        let max_m = self.max_accuracy_m();
        if accuracy95_m > max_m {
            return Err(NoEstimate::TooInaccurate {
                accuracy95_m,
                max_m,
            });
        }
        let v = spread(&cloud.vel, &cloud.weight);
        let velocity_sigma_mps = largest_eigenvalue(&v.cov).sqrt();
        let margin = if self.last_was_anchor {
            ANCHOR_MARGIN
        } else {
            self.quality(accuracy95_m)
        };
        Ok(FilterEstimate {
            t_us,
            ne_m: s.mean,
            vel_ne_mps: (velocity_sigma_mps <= self.filter.max_velocity_sigma_mps)
                .then_some(v.mean),
            velocity_sigma_mps,
            accuracy95_m,
            position_cov_m2: s.cov,
            since_measurement_s: since_s,
            margin,
            anchored: self.is_anchored(t_us),
        })
    }

    /// The largest accuracy that is published, m.
    fn max_accuracy_m(&self) -> f64 {
        let by_stride = self
            .stride_m
            .map_or(f64::INFINITY, |s| s * self.config.max_accuracy_strides);
        self.filter.max_accuracy_m.min(by_stride)
    }

    /// A fix's quality in 0..=1: 1 at the floor, 0 at the largest published accuracy.
    pub fn quality(&self, accuracy95_m: f64) -> f32 {
        let (lo, hi) = (self.floor_m, self.max_accuracy_m());
        if hi <= lo {
            return 1.0;
        }
        (1.0 - (accuracy95_m - lo) / (hi - lo)).clamp(0.0, 1.0) as f32
    }
}

/// `b - a` in seconds (negative when `b` is later).
fn seconds(a_us: u64, b_us: u64) -> f64 {
    (a_us as f64 - b_us as f64) * 1e-6
}

/// Two independent standard normal numbers.
fn normal_pair(rng: &mut ChaCha8Rng) -> (f64, f64) {
    (rng.sample(StandardNormal), rng.sample(StandardNormal))
}

/// Multiplies the weights by `exp(log_l)` and normalises them (in the log domain: no underflow to all
/// zeros). Non-finite log-likelihoods count as impossible.
fn reweight(weight: &mut [f64], log_l: &[f64]) {
    let max = log_l
        .iter()
        .copied()
        .filter(|l| l.is_finite())
        .fold(f64::NEG_INFINITY, f64::max);
    if !max.is_finite() {
        return;
    }
    for (w, l) in weight.iter_mut().zip(log_l) {
        *w *= if l.is_finite() { (l - max).exp() } else { 0.0 };
    }
    let sum: f64 = weight.iter().sum();
    if sum > 0.0 && sum.is_finite() {
        weight.iter_mut().for_each(|w| *w /= sum);
    } else {
        let n = weight.len() as f64;
        weight.iter_mut().for_each(|w| *w = 1.0 / n);
    }
}

/// Weighted mean, covariance and the farthest distance from the mean.
fn spread(points: &[[f64; 2]], weight: &[f64]) -> Spread {
    let mut mean = [0.0; 2];
    for (p, w) in points.iter().zip(weight) {
        mean[0] += w * p[0];
        mean[1] += w * p[1];
    }
    let mut cov = [[0.0; 2]; 2];
    let mut r_max: f64 = 0.0;
    for (p, w) in points.iter().zip(weight) {
        let (dn, de) = (p[0] - mean[0], p[1] - mean[1]);
        cov[0][0] += w * dn * dn;
        cov[0][1] += w * dn * de;
        cov[1][1] += w * de * de;
        r_max = r_max.max(dn.hypot(de));
    }
    cov[1][0] = cov[0][1];
    Spread { mean, cov, r_max }
}

/// The radius around `mean` that holds 95 % of the weight (a sort: only where the accuracy is reported).
fn r95(points: &[[f64; 2]], weight: &[f64], mean: [f64; 2]) -> f64 {
    let mut by_distance: Vec<(f64, f64)> = points
        .iter()
        .zip(weight)
        .map(|(p, w)| ((p[0] - mean[0]).hypot(p[1] - mean[1]), *w))
        .collect();
    by_distance.sort_by(|a, b| a.0.total_cmp(&b.0));
    let mut cumulative = 0.0;
    for (d, w) in &by_distance {
        cumulative += w;
        if cumulative >= 0.95 {
            return *d;
        }
    }
    by_distance.last().map_or(0.0, |d| d.0)
}

/// The weight within `radius` of `mean` (the r95 exceeds `radius` exactly when this is below 0.95).
fn weight_within(points: &[[f64; 2]], weight: &[f64], mean: [f64; 2], radius: f64) -> f64 {
    points
        .iter()
        .zip(weight)
        .filter(|(p, _)| (p[0] - mean[0]).hypot(p[1] - mean[1]) <= radius)
        .map(|(_, w)| w)
        .sum()
}

/// Squared Mahalanobis distance of `x` from the cloud, with `extra_var` (m²) added on both axes.
fn mahalanobis2(x: [f64; 2], s: &Spread, extra_var: f64) -> f64 {
    let (a, b, d) = (
        s.cov[0][0] + extra_var,
        s.cov[0][1],
        s.cov[1][1] + extra_var,
    );
    let det = a * d - b * b;
    let (dn, de) = (x[0] - s.mean[0], x[1] - s.mean[1]);
    if det <= 0.0 || !det.is_finite() {
        return f64::INFINITY;
    }
    (d * dn * dn - 2.0 * b * dn * de + a * de * de) / det
}

/// The χ²(2) quantile at probability `p`: `-2 ln(1 - p)`.
fn chi2_2(p: f64) -> f64 {
    -2.0 * (1.0 - p).ln()
}

/// The largest eigenvalue of a symmetric 2 x 2 matrix.
fn largest_eigenvalue(m: &[[f64; 2]; 2]) -> f64 {
    let (a, b, d) = (m[0][0], m[0][1], m[1][1]);
    let half_trace = 0.5 * (a + d);
    let r = (0.25 * (a - d) * (a - d) + b * b).sqrt();
    (half_trace + r).max(0.0)
}

/// The frame's similarity field: tiles binned in cells of one stride for the kernel sums (a map, not a
/// grid: the tiles of a wide window may be far apart).
struct SimilarityField<'a> {
    tiles: &'a [TileEvidence],
    cell_m: f64,
    cells: HashMap<(i64, i64), Vec<u32>>,
    sigma_m: f64,
    best: f64,
    lowest: f64,
}

impl<'a> SimilarityField<'a> {
    /// Kernel sums reach this many cells around a position (the kernel is negligible beyond 2 strides).
    const REACH: i64 = 2;

    fn new(tiles: &'a [TileEvidence], stride_m: f64, kernel_strides: f64) -> Self {
        let cell_m = stride_m;
        let mut cells: HashMap<(i64, i64), Vec<u32>> = HashMap::new();
        for (i, t) in tiles.iter().enumerate() {
            cells
                .entry(cell_of(t.ne_m, cell_m))
                .or_default()
                .push(i as u32);
        }
        let similarities = tiles.iter().map(|t| f64::from(t.similarity));
        let best = similarities.clone().fold(f64::NEG_INFINITY, f64::max);
        let lowest = similarities.fold(f64::INFINITY, f64::min);
        SimilarityField {
            tiles,
            cell_m,
            cells,
            sigma_m: kernel_strides * stride_m,
            best,
            lowest,
        }
    }

    /// The kernel-weighted similarity at `x`; the frame's lowest where no tile is within one stride.
    fn at(&self, x: [f64; 2]) -> f64 {
        let (r, c) = cell_of(x, self.cell_m);
        let (mut num, mut den) = (0.0, 0.0);
        let mut nearest2 = f64::INFINITY;
        let inv = -0.5 / (self.sigma_m * self.sigma_m);
        for rr in r - Self::REACH..=r + Self::REACH {
            for cc in c - Self::REACH..=c + Self::REACH {
                let Some(cell) = self.cells.get(&(rr, cc)) else {
                    continue;
                };
                for &i in cell {
                    let t = &self.tiles[i as usize];
                    let (dn, de) = (x[0] - t.ne_m[0], x[1] - t.ne_m[1]);
                    let d2 = dn * dn + de * de;
                    nearest2 = nearest2.min(d2);
                    let k = (d2 * inv).exp();
                    num += k * f64::from(t.similarity);
                    den += k;
                }
            }
        }
        if nearest2 > self.cell_m * self.cell_m || den <= 0.0 {
            self.lowest
        } else {
            num / den
        }
    }
}

/// The cell of a position (cells of `cell_m` metres from the local origin).
fn cell_of(x: [f64; 2], cell_m: f64) -> (i64, i64) {
    (
        (x[0] / cell_m).floor() as i64,
        (x[1] / cell_m).floor() as i64,
    )
}
