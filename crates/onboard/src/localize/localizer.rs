//! The localize stage's front: tile matches in WGS84 → estimator → filter → [`Fix`].
//!
//! [`Localizer::process`] takes one frame's top-k [`Match`]es (best first), the offset of the view centre's
//! ground point from the vehicle (from rectification, metres north/east) and the tile stride in metres; it
//! turns the matches into local north/east candidates, [`estimate`]s the view centre, subtracts the offset
//! and feeds the vehicle position to the [`PositionFilter`]. With `method = "particles"` ([`Method`]) the
//! matches instead go, all of them, as vehicle positions with their similarities to the [`ParticleFilter`];
//! the stage then asks the search for every tile around the cloud ([`Localizer::search_window`],
//! [`Localizer::matches_wanted`]). [`Localizer::fix_at`] then gives the [`Fix`] at publish time (latency
//! compensation), or a typed [`NoFix`].
//!
//! [`Localizer::anchor`] feeds a reference position (the autopilot's, while its GNSS is healthy) to the filter:
//! it starts the filter alone, and the visual measurements are then gated against it (see
//! [`super::filter`]). Never anchor on a position that may derive from our own fixes: when GNSS is denied the
//! autopilot's position may come from them, so the caller anchors only under a healthy GNSS verdict.
//!
//! The local frame ([`LocalFrame`], exact through ECEF) is set at the first match or anchor. While the filter is not
//! running and a frame's best match is more than [`ORIGIN_RECENTRE_M`] from the origin, the origin moves
//! there (and the filter starts afresh), so the tangent plane stays close to the vehicle. Positions go back
//! to the ellipsoid with the plane's drop below the horizon taken into account; the velocity is rotated into
//! the vehicle's own north/east.
//!
//! ```no_run
//! use vimgeo_onboard::localize::{Localizer, LocalizerConfig};
//! # let matches: Vec<vimgeo_onboard::matching::Match> = Vec::new();
//! let mut localizer = Localizer::new(LocalizerConfig::default());
//! let outcome = localizer.process(1_760_000_000_000_000, &matches, [3.0, -1.5], 20.0);
//! log::debug!("frame: {}", outcome.kind());
//! match localizer.fix_at(1_760_000_000_150_000) {
//!     Ok(fix) => println!("{} {} ±{} m", fix.lat_deg, fix.lon_deg, fix.horiz_accuracy_m),
//!     Err(why) => log::info!("no fix: {why}"),
//! }
//! ```

use nalgebra::Vector3;
use serde::Deserialize;

use super::estimator::{estimate, Candidate, EstimatorConfig, Measurement, NoMeasurement};
use super::filter::{
    AnchorOutcome, FilterConfig, FilterEstimate, NoEstimate, PositionFilter, UpdateOutcome,
};
use super::particles::{ParticleConfig, ParticleFilter, ParticleOutcome, TileEvidence};
use super::ConfigError;
use crate::fix::{Fix, FixQuality};
use crate::geodesy::{Geodetic, LocalFrame};
use crate::matching::Match;

/// While the filter is not running, a best match farther than this from the local origin moves the origin.
pub const ORIGIN_RECENTRE_M: f64 = 20_000.0;

/// How matches become positions: `method` in the `[localize]` section.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Method {
    /// One measurement per frame ([`estimate`]: refused when ambiguous) into the Kalman filter
    /// ([`PositionFilter`]). Can start from visual matches alone (`visual_start`). For a model whose top
    /// match is usually right.
    #[default]
    Kalman,
    /// Every frame's similarities around the cloud into a particle filter ([`ParticleFilter`]): uses the
    /// ambiguous frames too, starts only from an anchor. For a weak model (the demo model).
    Particles,
}

/// The `[localize]` section of the onboard configuration. Missing fields take the defaults.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LocalizerConfig {
    /// `kalman` (the default) or `particles`.
    pub method: Method,
    /// `[localize.estimator]`: candidates → measurement.
    pub estimator: EstimatorConfig,
    /// `[localize.filter]`: the Kalman filter, and the motion and publishing limits the particle filter
    /// shares with it.
    pub filter: FilterConfig,
    /// `[localize.particles]`: the particle filter's own settings (with `method = "particles"`).
    pub particles: ParticleConfig,
    /// 95 % radius of the error in the camera offset (rectification: attitude and height errors), metres.
    /// It is added in quadrature to each measurement's accuracy and to the filter's floor (an attitude bias
    /// is shared by consecutive frames).
    pub offset_accuracy95_m: f64,
}

impl Default for LocalizerConfig {
    fn default() -> Self {
        Self {
            method: Method::default(),
            estimator: EstimatorConfig::default(),
            filter: FilterConfig::default(),
            particles: ParticleConfig::default(),
            offset_accuracy95_m: 2.0,
        }
    }
}

impl LocalizerConfig {
    /// Checks every field; the error names the first bad one (its table and key) and why.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.estimator.validate()?;
        self.filter.validate()?;
        self.particles.validate()?;
        if !(self.offset_accuracy95_m.is_finite() && self.offset_accuracy95_m >= 0.0) {
            return ConfigError::invalid(
                "",
                "offset_accuracy95_m",
                format!(
                    "is {}; it must be finite and not negative",
                    self.offset_accuracy95_m
                ),
            );
        }
        Ok(())
    }
}

/// What one frame did. Each variant is something the pipeline logs and counts ([`LocalizeOutcome::kind`]).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum LocalizeOutcome {
    /// The matches gave no measurement (weak, ambiguous, malformed).
    NoMeasurement(NoMeasurement),
    /// The camera offset is not finite.
    InvalidOffset {
        /// The offset given, metres north/east.
        offset_ne_m: [f64; 2],
    },
    /// The frame's tiles went to the particle filter.
    Tracked(ParticleOutcome),
    /// The vehicle measurement went to the filter.
    Filtered {
        /// The vehicle's measured position (view centre minus offset), local metres.
        measurement: Measurement,
        /// What the filter did with it.
        outcome: UpdateOutcome,
    },
}

impl LocalizeOutcome {
    /// A short stable name for counting outcomes: the refusal's or the filter's.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::NoMeasurement(n) => n.kind(),
            Self::InvalidOffset { .. } => "invalid_offset",
            Self::Filtered { outcome, .. } => outcome.kind(),
            Self::Tracked(outcome) => outcome.kind(),
        }
    }
}

/// Why there is no fix to publish.
#[derive(Debug, Clone, Copy, PartialEq, thiserror::Error)]
pub enum NoFix {
    /// The filter has no estimate (not initialised, coasting too long, too inaccurate).
    #[error(transparent)]
    Filter(#[from] NoEstimate),
    /// The estimate did not make a valid fix (non-finite or out-of-range coordinates).
    #[error("the position estimate is not a valid fix (lat {lat_deg}, lon {lon_deg}, accuracy {accuracy_m} m)")]
    Invalid {
        /// Latitude found.
        lat_deg: f64,
        /// Longitude found.
        lon_deg: f64,
        /// Accuracy found.
        accuracy_m: f32,
    },
}

impl NoFix {
    /// A short stable name for counting refusals.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Filter(e) => e.kind(),
            Self::Invalid { .. } => "invalid_fix",
        }
    }
}

/// The filter behind the localizer, by [`Method`].
#[derive(Debug, Clone)]
enum Tracker {
    Kalman(PositionFilter),
    Particles(Box<ParticleFilter>),
}

impl Tracker {
    fn is_initialised(&self) -> bool {
        match self {
            Self::Kalman(f) => f.is_initialised(),
            Self::Particles(f) => f.is_initialised(),
        }
    }

    fn is_anchored(&self, unix_us: u64) -> bool {
        match self {
            Self::Kalman(f) => f.is_anchored(unix_us),
            Self::Particles(f) => f.is_anchored(unix_us),
        }
    }

    fn reset(&mut self) {
        match self {
            Self::Kalman(f) => f.reset(),
            Self::Particles(f) => f.reset(),
        }
    }

    fn anchor(&mut self, unix_us: u64, ne_m: [f64; 2], accuracy95_m: f64) -> AnchorOutcome {
        match self {
            Self::Kalman(f) => f.anchor(unix_us, ne_m, accuracy95_m),
            Self::Particles(f) => f.anchor(unix_us, ne_m, accuracy95_m),
        }
    }

    fn estimate_at(&self, unix_us: u64) -> Result<FilterEstimate, NoEstimate> {
        match self {
            Self::Kalman(f) => f.estimate_at(unix_us),
            Self::Particles(f) => f.estimate_at(unix_us),
        }
    }
}

/// Matches → fixes. See the module docs.
#[derive(Debug, Clone)]
pub struct Localizer {
    config: LocalizerConfig,
    frame: Option<LocalFrame>,
    tracker: Tracker,
}

impl Localizer {
    /// A localizer with no origin yet. `config` should be validated ([`LocalizerConfig::validate`]).
    pub fn new(config: LocalizerConfig) -> Self {
        let tracker = match config.method {
            Method::Kalman => Tracker::Kalman(PositionFilter::new(config.filter.clone())),
            Method::Particles => Tracker::Particles(Box::new(ParticleFilter::new(
                config.filter.clone(),
                config.particles.clone(),
            ))),
        };
        Self {
            config,
            frame: None,
            tracker,
        }
    }

    /// The configuration.
    pub fn config(&self) -> &LocalizerConfig {
        &self.config
    }

    /// The local frame, once the first match has set it.
    pub fn local_frame(&self) -> Option<&LocalFrame> {
        self.frame.as_ref()
    }

    /// Whether the filter is running.
    pub fn is_initialised(&self) -> bool {
        self.tracker.is_initialised()
    }

    /// Whether an anchor was accepted within `localize.filter.anchor_max_age_s` of `unix_us`.
    pub fn is_anchored(&self, unix_us: u64) -> bool {
        self.tracker.is_anchored(unix_us)
    }

    /// A reference position at `unix_us` (the frames' clock): WGS84 degrees and its 95 % radius, metres,
    /// from a healthy GNSS. Call it before the frame with the same time is [`Self::process`]ed. A position
    /// far from the local origin (more than [`ORIGIN_RECENTRE_M`]) moves the origin there and restarts the
    /// filter from it.
    pub fn anchor(
        &mut self,
        unix_us: u64,
        lat_deg: f64,
        lon_deg: f64,
        accuracy95_m: f64,
    ) -> AnchorOutcome {
        if !(accuracy95_m.is_finite() && accuracy95_m > 0.0) {
            return AnchorOutcome::Invalid;
        }
        let Ok(point) = Geodetic::new(lat_deg, lon_deg, 0.0) else {
            return AnchorOutcome::Invalid;
        };
        let frame = match self.frame {
            Some(frame) => {
                let ned = frame.to_ned(&point);
                if ned.x.hypot(ned.y) <= ORIGIN_RECENTRE_M {
                    frame
                } else {
                    log::info!(
                        "localizer: moving the local origin to the anchor at {lat_deg:.6}, {lon_deg:.6}"
                    );
                    self.tracker.reset();
                    let Ok(frame) = LocalFrame::new(point) else {
                        return AnchorOutcome::Invalid;
                    };
                    frame
                }
            }
            None => {
                let Ok(frame) = LocalFrame::new(point) else {
                    return AnchorOutcome::Invalid;
                };
                frame
            }
        };
        self.frame = Some(frame);
        let ned = frame.to_ned(&point);
        // North/east as `process` takes the matches' (on the ground, below the plane), which `fix_at` maps back.
        self.tracker.anchor(unix_us, [ned.x, ned.y], accuracy95_m)
    }

    /// One frame: its exposure time (UNIX µs), its top-k matches, the view centre's ground point minus the
    /// vehicle's (metres north/east, from rectification) and the tile stride of the matched scale (metres).
    pub fn process(
        &mut self,
        exposure_unix_us: u64,
        matches: &[Match],
        centre_offset_ne_m: [f64; 2],
        stride_m: f64,
    ) -> LocalizeOutcome {
        if !centre_offset_ne_m.iter().all(|x| x.is_finite()) {
            return LocalizeOutcome::InvalidOffset {
                offset_ne_m: centre_offset_ne_m,
            };
        }
        let mut points = Vec::with_capacity(matches.len());
        for (index, m) in matches.iter().enumerate() {
            match Geodetic::new(m.lat, m.lon, 0.0) {
                Ok(g) => points.push(g),
                Err(_) => {
                    return LocalizeOutcome::NoMeasurement(NoMeasurement::NonFinite { index })
                }
            }
        }
        let Some(best) = matches
            .iter()
            .zip(&points)
            .max_by(|a, b| a.0.similarity.total_cmp(&b.0.similarity))
            .map(|(_, g)| *g)
        else {
            return LocalizeOutcome::NoMeasurement(NoMeasurement::NoCandidates);
        };
        let Some(frame) = self.frame_near(best) else {
            return LocalizeOutcome::NoMeasurement(NoMeasurement::NonFinite { index: 0 });
        };
        let ne: Vec<[f64; 2]> = points
            .iter()
            .map(|g| {
                let ned = frame.to_ned(g);
                [ned.x, ned.y]
            })
            .collect();
        let offset_accuracy = self.config.offset_accuracy95_m;
        match &mut self.tracker {
            Tracker::Particles(particles) => {
                let tiles: Vec<TileEvidence> = ne
                    .iter()
                    .zip(matches)
                    .map(|(p, m)| TileEvidence {
                        ne_m: [p[0] - centre_offset_ne_m[0], p[1] - centre_offset_ne_m[1]],
                        similarity: m.similarity,
                    })
                    .collect();
                // A frame's floor, as the estimator's quantisation: half the grid cell's diagonal.
                let floor_m = (stride_m * std::f64::consts::FRAC_1_SQRT_2).hypot(offset_accuracy);
                LocalizeOutcome::Tracked(particles.update(
                    exposure_unix_us,
                    &tiles,
                    floor_m,
                    stride_m,
                ))
            }
            Tracker::Kalman(filter) => {
                let candidates: Vec<Candidate> = matches
                    .iter()
                    .zip(&ne)
                    .map(|(m, p)| Candidate {
                        similarity: m.similarity,
                        centre_ne_m: *p,
                        ground_size_m: f64::from(m.ground_size_m),
                    })
                    .collect();
                let mut measurement = match estimate(&candidates, stride_m, &self.config.estimator)
                {
                    Ok(m) => m,
                    Err(why) => return LocalizeOutcome::NoMeasurement(why),
                };
                measurement.ne_m[0] -= centre_offset_ne_m[0];
                measurement.ne_m[1] -= centre_offset_ne_m[1];
                measurement.accuracy95_m = measurement.accuracy95_m.hypot(offset_accuracy);
                measurement.quantisation95_m = measurement.quantisation95_m.hypot(offset_accuracy);
                let outcome = filter.update(exposure_unix_us, &measurement);
                LocalizeOutcome::Filtered {
                    measurement,
                    outcome,
                }
            }
        }
    }

    /// The local frame to use for a frame whose best match is `best`: set at the first match; moved (with a
    /// fresh filter) when the filter is not running and `best` is far from the origin.
    /// `None` only if `best` cannot be an origin (it was checked by `Geodetic::new`, so never in practice).
    fn frame_near(&mut self, best: Geodetic) -> Option<LocalFrame> {
        if let Some(frame) = self.frame {
            let ned = frame.to_ned(&best);
            if self.tracker.is_initialised() || ned.x.hypot(ned.y) <= ORIGIN_RECENTRE_M {
                return Some(frame);
            }
            log::info!(
                "localizer: moving the local origin to {:.6}, {:.6}",
                best.lat_deg,
                best.lon_deg
            );
            self.tracker.reset();
        }
        let frame = LocalFrame::new(best).ok()?;
        self.frame = Some(frame);
        Some(frame)
    }

    /// Where the tile search for a frame at `unix_us` should look: WGS84 centre and radius, metres (none:
    /// everywhere). Kalman: around the fix, `prior_radius_m` plus its accuracy (none without a fix). Particles:
    /// around the cloud, `prior_radius_m` plus its farthest particle, whether or not a fix is published (the
    /// cloud needs the tiles where it is).
    pub fn search_window(&self, unix_us: u64, prior_radius_m: f64) -> Option<(f64, f64, f64)> {
        match &self.tracker {
            Tracker::Kalman(_) => self.fix_at(unix_us).ok().map(|f| {
                (
                    f.lat_deg,
                    f.lon_deg,
                    prior_radius_m + f64::from(f.horiz_accuracy_m),
                )
            }),
            Tracker::Particles(p) => {
                let frame = self.frame.as_ref()?;
                let (centre, reach_m) = p.search_window(unix_us)?;
                let (g, _) = on_the_ground(frame, centre);
                Some((g.lat_deg, g.lon_deg, prior_radius_m + reach_m))
            }
        }
    }

    /// How many of the best tiles to ask the search for, given the stage's `top_k`: the particle filter wants
    /// every tile around its cloud (`localize.particles.search_k`).
    pub fn matches_wanted(&self, top_k: usize) -> usize {
        match self.tracker {
            Tracker::Kalman(_) => top_k,
            Tracker::Particles(_) => top_k.max(self.config.particles.search_k),
        }
    }

    /// The fix at `publish_unix_us`: the filter's state predicted to that time. Its `time_of_exposure_us` is
    /// that time (the time the position refers to), its accuracy the filter's 95 % radius (rounded up to
    /// f32), its quality the last accepted match's margin on the estimator's scale (Kalman) or the accuracy's
    /// place between the floor and the publishing limit (particles; 1 after an anchor).
    pub fn fix_at(&self, publish_unix_us: u64) -> Result<Fix, NoFix> {
        let frame = self.frame.as_ref().ok_or(NoEstimate::NotInitialised)?;
        let e = self.tracker.estimate_at(publish_unix_us)?;
        let quality = match self.tracker {
            Tracker::Kalman(_) => self.config.estimator.quality(e.margin),
            Tracker::Particles(_) => e.margin,
        };
        let (position, ground) = on_the_ground(frame, e.ne_m);
        let vel_ne_mps = e.vel_ne_mps.and_then(|v| {
            // Rotate the velocity from the origin's north/east into the vehicle's: move one second along it.
            let ahead = frame.from_ned(&(ground + Vector3::new(v[0], v[1], 0.0)));
            let here = LocalFrame::new(Geodetic {
                alt_m: 0.0,
                ..position
            })
            .ok()?;
            let d = here.to_ned(&ahead);
            Some([d.x as f32, d.y as f32])
        });
        let fix = Fix {
            time_of_exposure_us: publish_unix_us,
            lat_deg: position.lat_deg,
            lon_deg: position.lon_deg,
            alt_m: None,
            vel_ne_mps,
            horiz_accuracy_m: round_up_f32(e.accuracy95_m),
            quality: FixQuality::new(quality),
        };
        if !fix.is_valid() {
            return Err(NoFix::Invalid {
                lat_deg: fix.lat_deg,
                lon_deg: fix.lon_deg,
                accuracy_m: fix.horiz_accuracy_m,
            });
        }
        Ok(fix)
    }
}

/// A local north/east position on the ground: WGS84 (height 0), and the local vector to it. The tangent plane
/// lies above the ellipsoid away from the origin, so the point is put back down by the plane's drop.
fn on_the_ground(frame: &LocalFrame, ne_m: [f64; 2]) -> (Geodetic, Vector3<f64>) {
    let [n, east] = ne_m;
    // The mean radius is enough: a 1 % radius error moves a position 20 km from the origin by millimetres.
    let drop = (n * n + east * east) / (2.0 * crate::geodesy::MEAN_RADIUS_M);
    let ground = Vector3::new(n, east, drop);
    (frame.from_ned(&ground), ground)
}

/// The smallest f32 not below `x` (an accuracy must not shrink by rounding).
fn round_up_f32(x: f64) -> f32 {
    let y = x as f32;
    if f64::from(y) < x {
        y.next_up()
    } else {
        y
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: u64 = 1_760_000_000_000_000;

    #[test]
    fn accuracy_rounds_up() {
        let x = 14.142_135_623_730_951_f64;
        assert!(f64::from(round_up_f32(x)) >= x);
        assert_eq!(round_up_f32(2.0), 2.0);
    }

    #[test]
    fn config_from_toml_with_defaults_and_unknown_fields_refused() {
        let cfg: LocalizerConfig = toml::from_str(
            "offset_accuracy95_m = 3.0\n[filter]\nmax_coast_s = 2.0\n[estimator]\nk = 6\n",
        )
        .unwrap();
        assert_eq!(cfg.offset_accuracy95_m, 3.0);
        assert_eq!(cfg.filter.max_coast_s, 2.0);
        assert_eq!(cfg.filter.gate_probability, 0.999);
        assert_eq!(cfg.estimator.k, 6);
        assert!(cfg.validate().is_ok());
        let empty: LocalizerConfig = toml::from_str("").unwrap();
        assert_eq!(empty, LocalizerConfig::default());
        assert_eq!(empty.offset_accuracy95_m, 2.0);
        assert!(toml::from_str::<LocalizerConfig>("[filter]\nmax_coats_s = 2.0\n").is_err());
        let bad = LocalizerConfig {
            offset_accuracy95_m: -1.0,
            ..LocalizerConfig::default()
        };
        assert!(bad
            .validate()
            .unwrap_err()
            .to_string()
            .contains("localize.offset_accuracy95_m"));
    }

    #[test]
    fn bad_input_is_a_typed_refusal() {
        let mut loc = Localizer::new(LocalizerConfig::default());
        let m = |lat: f64| Match {
            index: 0,
            similarity: 0.9,
            lat,
            lon: 8.0,
            ground_size_m: 40.0,
            scale: 1.0,
        };
        assert_eq!(
            loc.process(T0, &[], [0.0, 0.0], 20.0),
            LocalizeOutcome::NoMeasurement(NoMeasurement::NoCandidates)
        );
        assert_eq!(
            loc.process(T0, &[m(47.0), m(f64::NAN)], [0.0, 0.0], 20.0),
            LocalizeOutcome::NoMeasurement(NoMeasurement::NonFinite { index: 1 })
        );
        assert_eq!(
            loc.process(T0, &[m(47.0)], [f64::NAN, 0.0], 20.0).kind(),
            "invalid_offset"
        );
        assert_eq!(
            loc.process(T0, &[m(47.0), m(47.1)], [0.0, 0.0], 0.0).kind(),
            "invalid_stride"
        );
        assert_eq!(loc.fix_at(T0).unwrap_err().kind(), "not_initialised");
    }
}
