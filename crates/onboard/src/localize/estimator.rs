//! One frame's position measurement from its top-k tile matches, with a 95 % accuracy radius.
//!
//! [`estimate`] takes the candidates of one frame (similarity and tile centre in a local north/east frame,
//! metres), keeps the cluster of candidates that agree with the best one, and returns a [`Measurement`] of the
//! view centre, or a typed [`NoMeasurement`] saying why it will not: a frame that cannot be told apart from
//! another place yields nothing rather than a guess.
//!
//! # The cluster and the centre
//!
//! Tiles overlap (a stride below the tile side), so a correct retrieval puts the true tile *and its
//! neighbours* at the top: they all see most of the same ground. The cluster is the best candidate and every
//! candidate within [`EstimatorConfig::cluster_radius_strides`] strides of it (1.5 takes the 8 neighbours of a
//! square grid, not the next ring). The centre is the cluster's similarity-weighted mean, with softmax weights
//! `exp((s_i - s_best) / T)`: a neighbour nearly as similar as the best pulls the centre half-way to it (the
//! view lies between them), one much less similar barely moves it. Plain weights `s_i` would pull the centre
//! to the middle of the cluster however different the similarities, since cosine similarities of the top-k
//! differ by a few hundredths.
//!
//! # The margin
//!
//! The margin is the best similarity minus the best similarity *outside* the cluster: how much better the
//! chosen place is than the best other place. When every candidate is in the cluster, the best place outside
//! it is at most the last (k-th) candidate's similarity, so the margin is taken as `best - last`: a lower
//! bound, never an overestimate. One candidate alone gives no margin and is refused.
//!
//! # The accuracy
//!
//! `accuracy95_m = (q + spread) * inflation`, where
//! - `q = stride * sqrt(2) / 2` is the quantisation of a retrieval: the tile grid has one centre every
//!   `stride` metres in both axes, so the view centre is never farther than half the diagonal of a grid cell
//!   from the nearest tile centre. It is a hard bound for a correct best match, not a 95 % one; with the view
//!   centre uniform in a cell, the error per axis has a standard deviation of `stride / sqrt(12)`, and
//!   `q / 2.4477` (the 95 % radius of a circular Gaussian over its sigma) is the same number: the bound and a
//!   Gaussian model with that sigma agree.
//! - `spread` is the weighted RMS distance of the cluster's members from the centre: when the similarities
//!   do not single out one tile, the best tile may be a neighbour of the nearest one, and the centre is as
//!   uncertain as the cluster is wide.
//! - `inflation = 1 + max_margin_inflation * f`, with `f` going linearly from 1 at `min_margin` to 0 at
//!   `full_margin`: a match barely better than another place is more likely to be a confusion, so its radius
//!   grows (up to doubling by default).
//!
//! [`Measurement::quantisation95_m`] keeps `q` alone: the part of the error that frames share (the same tile
//! wins for many consecutive frames, so its error does not average out). The filter never reports an
//! accuracy below it.
//!
//! ```
//! use vimgeo_onboard::localize::{estimate, Candidate, EstimatorConfig};
//! let c = |s, n, e| Candidate { similarity: s, centre_ne_m: [n, e], ground_size_m: 40.0 };
//! let m = estimate(
//!     &[c(0.82, 0.0, 0.0), c(0.80, 20.0, 0.0), c(0.70, 0.0, 20.0), c(0.55, 900.0, 400.0)],
//!     20.0,
//!     &EstimatorConfig::default(),
//! )
//! .unwrap();
//! assert_eq!(m.cluster_size, 3);
//! assert!(m.ne_m[0] > 0.0 && m.ne_m[0] < 10.0);
//! assert!((m.margin - 0.27).abs() < 1e-6);
//! ```

use serde::Deserialize;

/// `sqrt(chi2_2(0.95))`: the 95 % radius of a circular 2-D Gaussian in units of its per-axis sigma.
pub const K95: f64 = 2.447_746_830_680_816;

/// One retrieved tile, in the local north/east frame.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Candidate {
    /// Cosine similarity between the frame's and the tile's embeddings.
    pub similarity: f32,
    /// The tile centre, metres north and east of the local origin.
    pub centre_ne_m: [f64; 2],
    /// The tile's side on the ground, metres (checked; the quantisation uses the stride).
    pub ground_size_m: f64,
}

/// How candidates become a measurement. A `[localize.estimator]` TOML table; missing fields take the defaults.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EstimatorConfig {
    /// How many of the best candidates to look at (the rest are ignored). At least 2: one alone has no margin.
    pub k: usize,
    /// Candidates within this many strides of the best one belong to its cluster (1.5: the 8 grid neighbours).
    pub cluster_radius_strides: f64,
    /// A best similarity below this is no match at all. Model dependent: calibrate on the mission's imagery.
    pub min_similarity: f32,
    /// A margin below this is ambiguous and refused.
    pub min_margin: f32,
    /// A margin at or above this gets no inflation of the accuracy (and full quality).
    pub full_margin: f32,
    /// The accuracy is multiplied by up to `1 + max_margin_inflation` at `min_margin`.
    pub max_margin_inflation: f64,
    /// Softmax temperature of the cluster weights, in similarity units.
    pub weight_temperature: f32,
}

impl Default for EstimatorConfig {
    fn default() -> Self {
        Self {
            k: 8,
            cluster_radius_strides: 1.5,
            min_similarity: 0.4,
            min_margin: 0.02,
            full_margin: 0.1,
            max_margin_inflation: 1.0,
            weight_temperature: 0.02,
        }
    }
}

impl EstimatorConfig {
    /// Checks every field; the error names the first bad one (as `localize.estimator.<field>`) and why.
    pub fn validate(&self) -> Result<(), super::ConfigError> {
        use super::ConfigError;
        let bad = |field: &str, reason: String| ConfigError::invalid("estimator", field, reason);
        if self.k < 2 {
            return bad(
                "k",
                format!(
                    "is {}; at least 2 candidates are needed for a margin",
                    self.k
                ),
            );
        }
        if !(self.cluster_radius_strides.is_finite() && self.cluster_radius_strides >= 0.5) {
            return bad(
                "cluster_radius_strides",
                format!(
                    "is {}; it must be finite and at least 0.5",
                    self.cluster_radius_strides
                ),
            );
        }
        if !(-1.0..=1.0).contains(&self.min_similarity) {
            return bad(
                "min_similarity",
                format!(
                    "is {}; a cosine similarity is in -1..=1",
                    self.min_similarity
                ),
            );
        }
        if !(self.min_margin.is_finite() && self.min_margin > 0.0) {
            return bad(
                "min_margin",
                format!("is {}; it must be positive", self.min_margin),
            );
        }
        if !(self.full_margin.is_finite() && self.full_margin > self.min_margin) {
            return bad(
                "full_margin",
                format!(
                    "is {}; it must exceed min_margin ({})",
                    self.full_margin, self.min_margin
                ),
            );
        }
        if !(self.max_margin_inflation.is_finite() && self.max_margin_inflation >= 0.0) {
            return bad(
                "max_margin_inflation",
                format!(
                    "is {}; it must be finite and not negative",
                    self.max_margin_inflation
                ),
            );
        }
        if !(self.weight_temperature.is_finite() && self.weight_temperature > 0.0) {
            return bad(
                "weight_temperature",
                format!("is {}; it must be positive", self.weight_temperature),
            );
        }
        Ok(())
    }

    /// The match quality of a margin: 0 at `min_margin` or below, 1 at `full_margin` or above.
    pub fn quality(&self, margin: f32) -> f32 {
        ((margin - self.min_margin) / (self.full_margin - self.min_margin)).clamp(0.0, 1.0)
    }
}

/// One frame's measurement of the view centre.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Measurement {
    /// The view centre (or, after the localizer subtracts the camera offset, the vehicle), metres north/east.
    pub ne_m: [f64; 2],
    /// Radius that contains the true position with at least 95 % probability, metres.
    pub accuracy95_m: f64,
    /// The part of the accuracy that consecutive frames share (tile quantisation); the filter's floor.
    pub quantisation95_m: f64,
    /// Best similarity minus the best similarity outside the cluster (a lower bound).
    pub margin: f32,
    /// The best similarity.
    pub best_similarity: f32,
    /// Candidates in the cluster, the best included.
    pub cluster_size: usize,
    /// Weighted RMS distance of the cluster's members from the centre, metres.
    pub spread_m: f64,
}

/// Why a frame gives no measurement. Each variant is a reason the pipeline logs and counts.
#[derive(Debug, Clone, Copy, PartialEq, thiserror::Error)]
pub enum NoMeasurement {
    /// The search returned nothing.
    #[error("no candidates")]
    NoCandidates,
    /// Only one candidate: nothing to measure a margin against.
    #[error("one candidate only: no margin to judge the match by")]
    SingleCandidate,
    /// A candidate has a non-finite similarity or centre, or a non-positive ground size.
    #[error(
        "candidate {index} is not finite (similarity, centre) or has a non-positive ground size"
    )]
    NonFinite {
        /// Its position in the input.
        index: usize,
    },
    /// The stride is not a positive, finite number of metres.
    #[error("tile stride {stride_m} m is not a positive finite length")]
    InvalidStride {
        /// The stride given.
        stride_m: f64,
    },
    /// The best similarity is too low to be a match.
    #[error("best similarity {best:.3} is below the minimum {min:.3}")]
    LowSimilarity {
        /// The best similarity.
        best: f32,
        /// The configured minimum.
        min: f32,
    },
    /// Another place is nearly as similar as the best one.
    #[error("ambiguous match: margin {margin:.3} to the best other place is below {min:.3}")]
    Ambiguous {
        /// The margin found.
        margin: f32,
        /// The configured minimum.
        min: f32,
    },
}

impl NoMeasurement {
    /// A short stable name for counting refusals.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::NoCandidates => "no_candidates",
            Self::SingleCandidate => "single_candidate",
            Self::NonFinite { .. } => "non_finite",
            Self::InvalidStride { .. } => "invalid_stride",
            Self::LowSimilarity { .. } => "low_similarity",
            Self::Ambiguous { .. } => "ambiguous",
        }
    }
}

/// The view centre from one frame's candidates (any order; the best `config.k` are used).
///
/// `stride_m` is the spacing between neighbouring tile centres of the matched scale, metres (the cache's
/// stride fraction times the tile's ground size). See the module docs for the method.
pub fn estimate(
    candidates: &[Candidate],
    stride_m: f64,
    config: &EstimatorConfig,
) -> Result<Measurement, NoMeasurement> {
    if !(stride_m.is_finite() && stride_m > 0.0) {
        return Err(NoMeasurement::InvalidStride { stride_m });
    }
    if candidates.is_empty() {
        return Err(NoMeasurement::NoCandidates);
    }
    if let Some(index) = candidates.iter().position(|c| {
        !(c.similarity.is_finite()
            && c.centre_ne_m.iter().all(|x| x.is_finite())
            && c.ground_size_m.is_finite()
            && c.ground_size_m > 0.0)
    }) {
        return Err(NoMeasurement::NonFinite { index });
    }
    let mut top: Vec<Candidate> = candidates.to_vec();
    top.sort_by(|a, b| b.similarity.total_cmp(&a.similarity));
    top.truncate(config.k.max(1));

    let best = top[0];
    if best.similarity < config.min_similarity {
        return Err(NoMeasurement::LowSimilarity {
            best: best.similarity,
            min: config.min_similarity,
        });
    }
    if top.len() < 2 {
        return Err(NoMeasurement::SingleCandidate);
    }

    // A small tolerance so that grid neighbours exactly on the radius count.
    let radius = config.cluster_radius_strides * stride_m * (1.0 + 1e-9);
    let dist = |a: [f64; 2], b: [f64; 2]| (a[0] - b[0]).hypot(a[1] - b[1]);
    let (cluster, outside): (Vec<Candidate>, Vec<Candidate>) = top
        .iter()
        .partition(|c| dist(c.centre_ne_m, best.centre_ne_m) <= radius);
    let runner_up = match outside.first() {
        Some(c) => c.similarity,
        // Every candidate agrees: the best other place is at most the last candidate's similarity.
        None => top[top.len() - 1].similarity,
    };
    let margin = best.similarity - runner_up;
    if margin < config.min_margin {
        return Err(NoMeasurement::Ambiguous {
            margin,
            min: config.min_margin,
        });
    }

    let t = f64::from(config.weight_temperature);
    let weights: Vec<f64> = cluster
        .iter()
        .map(|c| (f64::from(c.similarity - best.similarity) / t).exp())
        .collect();
    let total: f64 = weights.iter().sum();
    let mut centre = [0.0; 2];
    for (c, w) in cluster.iter().zip(&weights) {
        centre[0] += w * c.centre_ne_m[0] / total;
        centre[1] += w * c.centre_ne_m[1] / total;
    }
    let spread_m = (cluster
        .iter()
        .zip(&weights)
        .map(|(c, w)| w * dist(c.centre_ne_m, centre).powi(2))
        .sum::<f64>()
        / total)
        .sqrt();

    let quantisation95_m = stride_m * std::f64::consts::FRAC_1_SQRT_2;
    let inflation = 1.0 + config.max_margin_inflation * f64::from(1.0 - config.quality(margin));
    Ok(Measurement {
        ne_m: centre,
        accuracy95_m: (quantisation95_m + spread_m) * inflation,
        quantisation95_m,
        margin,
        best_similarity: best.similarity,
        cluster_size: cluster.len(),
        spread_m,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(similarity: f32, n: f64, e: f64) -> Candidate {
        Candidate {
            similarity,
            centre_ne_m: [n, e],
            ground_size_m: 40.0,
        }
    }

    const STRIDE: f64 = 20.0;

    #[test]
    fn cluster_centre_is_weighted_towards_the_best() {
        let cfg = EstimatorConfig::default();
        let m = estimate(
            &[c(0.80, 0.0, 0.0), c(0.80, 20.0, 0.0), c(0.60, 500.0, 0.0)],
            STRIDE,
            &cfg,
        )
        .unwrap();
        // Two equally similar neighbours: the view lies between them.
        assert!((m.ne_m[0] - 10.0).abs() < 1e-9 && m.ne_m[1].abs() < 1e-9);
        assert_eq!(m.cluster_size, 2);
        assert!((m.spread_m - 10.0).abs() < 1e-9);
        assert!((m.margin - 0.2).abs() < 1e-6);
        // Full margin: no inflation, accuracy = q + spread.
        let q = STRIDE / 2f64.sqrt();
        assert!((m.quantisation95_m - q).abs() < 1e-9);
        assert!((m.accuracy95_m - (q + 10.0)).abs() < 1e-9);

        // A much weaker neighbour barely moves the centre.
        let m = estimate(
            &[c(0.80, 0.0, 0.0), c(0.70, 20.0, 0.0), c(0.5, 0.0, 300.0)],
            STRIDE,
            &cfg,
        )
        .unwrap();
        assert!(m.ne_m[0] > 0.0 && m.ne_m[0] < 0.2, "{:?}", m.ne_m);
    }

    #[test]
    fn far_outlier_candidate_is_ignored_and_sets_the_margin() {
        let cfg = EstimatorConfig::default();
        let near = [
            c(0.9, 100.0, 100.0),
            c(0.86, 120.0, 100.0),
            c(0.85, 100.0, 80.0),
        ];
        let mut with_outlier = near.to_vec();
        with_outlier.push(c(0.75, -2000.0, 900.0));
        let a = estimate(&with_outlier, STRIDE, &cfg).unwrap();
        assert_eq!(a.cluster_size, 3);
        assert!((a.margin - 0.15).abs() < 1e-6);
        let b = estimate(&near, STRIDE, &cfg).unwrap();
        assert_eq!(a.ne_m, b.ne_m);
        // Without anything outside the cluster, the margin falls back to best - last.
        assert!((b.margin - 0.05).abs() < 1e-6);
        // The next ring (2 strides) is outside the cluster.
        let m = estimate(&[c(0.9, 0.0, 0.0), c(0.8, 40.0, 0.0)], STRIDE, &cfg).unwrap();
        assert_eq!(m.cluster_size, 1);
        assert_eq!(m.ne_m, [0.0, 0.0]);
    }

    #[test]
    fn ambiguous_and_weak_matches_are_refused() {
        let cfg = EstimatorConfig::default();
        // Another place, far away, nearly as similar.
        let r = estimate(
            &[c(0.80, 0.0, 0.0), c(0.79, 800.0, 0.0), c(0.7, 20.0, 0.0)],
            STRIDE,
            &cfg,
        );
        assert!(matches!(r, Err(NoMeasurement::Ambiguous { .. })), "{r:?}");
        assert_eq!(r.unwrap_err().kind(), "ambiguous");
        let r = estimate(&[c(0.30, 0.0, 0.0), c(0.1, 800.0, 0.0)], STRIDE, &cfg);
        assert!(
            matches!(r, Err(NoMeasurement::LowSimilarity { .. })),
            "{r:?}"
        );
        assert_eq!(
            estimate(&[], STRIDE, &cfg),
            Err(NoMeasurement::NoCandidates)
        );
        assert_eq!(
            estimate(&[c(0.9, 0.0, 0.0)], STRIDE, &cfg),
            Err(NoMeasurement::SingleCandidate)
        );
    }

    #[test]
    fn small_margin_inflates_the_accuracy() {
        let cfg = EstimatorConfig::default();
        let clear = estimate(&[c(0.9, 0.0, 0.0), c(0.7, 500.0, 0.0)], STRIDE, &cfg).unwrap();
        let close = estimate(&[c(0.9, 0.0, 0.0), c(0.875, 500.0, 0.0)], STRIDE, &cfg).unwrap();
        assert!(close.accuracy95_m > 1.8 * clear.accuracy95_m);
        assert!(close.accuracy95_m <= 2.0 * clear.accuracy95_m + 1e-9);
        assert_eq!(close.quantisation95_m, clear.quantisation95_m);
    }

    #[test]
    fn bad_input_is_refused_without_panicking() {
        let cfg = EstimatorConfig::default();
        let r = estimate(&[c(0.9, 0.0, 0.0), c(f32::NAN, 0.0, 0.0)], STRIDE, &cfg);
        assert_eq!(r, Err(NoMeasurement::NonFinite { index: 1 }));
        let r = estimate(
            &[c(0.9, f64::INFINITY, 0.0), c(0.5, 0.0, 0.0)],
            STRIDE,
            &cfg,
        );
        assert_eq!(r, Err(NoMeasurement::NonFinite { index: 0 }));
        for stride in [0.0, -1.0, f64::NAN] {
            let r = estimate(&[c(0.9, 0.0, 0.0), c(0.5, 0.0, 0.0)], stride, &cfg);
            assert!(matches!(r, Err(NoMeasurement::InvalidStride { .. })));
        }
    }

    #[test]
    fn unsorted_input_uses_the_best() {
        let cfg = EstimatorConfig::default();
        let m = estimate(
            &[c(0.5, 900.0, 0.0), c(0.9, 0.0, 0.0), c(0.6, 0.0, 20.0)],
            STRIDE,
            &cfg,
        )
        .unwrap();
        assert_eq!(m.best_similarity, 0.9);
        assert!(m.ne_m[0].abs() < 1e-6);
    }

    #[test]
    fn config_validation_names_the_field() {
        let cfg = EstimatorConfig {
            full_margin: 0.01,
            ..EstimatorConfig::default()
        };
        let err = cfg.validate().unwrap_err().to_string();
        assert!(err.contains("localize.estimator.full_margin"), "{err}");
        assert!(EstimatorConfig {
            k: 1,
            ..EstimatorConfig::default()
        }
        .validate()
        .is_err());
        assert!(EstimatorConfig::default().validate().is_ok());
    }
}
