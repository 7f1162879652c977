//! The localize stage: tile matches → a vehicle position with an honest accuracy.
//!
//! Three steps, each usable alone:
//! - [`estimate`] ([`estimator`]): one frame's top-k [`Candidate`]s → a [`Measurement`] of the view centre with
//!   a 95 % radius, or a typed refusal ([`NoMeasurement`]) when the match is weak or ambiguous.
//! - [`PositionFilter`] ([`filter`]): a constant-velocity Kalman filter over the measurements in a local
//!   north/east frame, with Mahalanobis gating, initialisation only from mutually consistent measurements
//!   of different views or from one anchor (a healthy GNSS position, [`AnchorOutcome`]), and prediction to
//!   publish time ([`UpdateOutcome`], [`NoEstimate`]).
//! - [`ParticleFilter`] ([`particles`]): the alternative to the two steps above for a weak model: every
//!   frame's tile similarities reweight a cloud of positions (no refusal of ambiguous frames), started only
//!   from an anchor ([`ParticleOutcome`]); `method = "particles"` in `[localize]`.
//! - [`Localizer`] ([`localizer`]): the stage itself, WGS84 matches in, [`crate::fix::Fix`] out
//!   ([`LocalizeOutcome`], [`NoFix`]), configured by the `[localize]` TOML section ([`LocalizerConfig`]);
//!   [`Localizer::anchor`] feeds it the autopilot's position while GNSS is healthy.
//!
//! Every accuracy here is a radius that contains the true horizontal position with at least 95 %
//! probability, and never smaller than the error that consecutive inputs share (a frame's tile quantisation,
//! an anchor's own accuracy): when unsure, the stage publishes nothing and says why (every refusal is a
//! variant the pipeline can log and count).

pub mod estimator;
pub mod filter;
pub mod localizer;
pub mod particles;

pub use self::estimator::{estimate, Candidate, EstimatorConfig, Measurement, NoMeasurement, K95};
pub use self::filter::{
    AnchorOutcome, FilterConfig, FilterEstimate, NoEstimate, PositionFilter, UpdateOutcome,
    ANCHOR_MARGIN,
};
pub use self::localizer::{
    LocalizeOutcome, Localizer, LocalizerConfig, Method, NoFix, ORIGIN_RECENTRE_M,
};
pub use self::particles::{ParticleConfig, ParticleFilter, ParticleOutcome, TileEvidence};

/// A `[localize]` configuration value that cannot be used.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ConfigError {
    /// A field has a value out of its range.
    #[error("{table}.{key} {reason}")]
    Invalid {
        /// The TOML table the field is in: `localize`, `localize.filter`.
        table: String,
        /// The field in it, as written in the TOML file: `max_coast_s`.
        key: String,
        /// What is wrong with its value.
        reason: String,
    },
}

impl ConfigError {
    /// The error for `key` in `table` (`""`: `[localize]` itself, else `[localize.<table>]`), as the `Err` a
    /// `validate` returns.
    pub(crate) fn invalid<T>(table: &str, key: &str, reason: String) -> Result<T, ConfigError> {
        Err(ConfigError::Invalid {
            table: if table.is_empty() {
                "localize".to_owned()
            } else {
                format!("localize.{table}")
            },
            key: key.to_owned(),
            reason,
        })
    }
}

/// Finite and above zero: what most `[localize]` settings must be.
pub(crate) fn positive(x: f64) -> bool {
    x.is_finite() && x > 0.0
}
