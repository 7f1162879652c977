//! A position fix: what the localizer hands to the publishers.
//!
//! One [`Fix`] per camera frame that localized. The publishers in [`crate::fc`] turn it into the message each
//! autopilot fuses; nothing downstream may make its accuracy look better than what the localizer reported.
//!
//! Time: [`Fix::time_of_exposure_us`] is UNIX time in microseconds (since 1970-01-01 00:00:00 UTC, as the
//! companion computer's clock gives it) of the instant the position refers to: the middle of the camera exposure
//! the fix was computed from, or the publish time when the localizer's filter has propagated it there. GPS_INPUT
//! needs a GPS week and time of week, which only an absolute time gives; the latency compensation on the
//! autopilot side (`GPSn_DELAY_MS`, GLOBAL_POSITION_SENSOR's `processing_time`) is computed from it and the send
//! time.

/// How much the localizer trusts a fix, from 0 (useless) to 1 (as good as it gets).
///
/// It is the localizer's match confidence (e.g. the margin between the best and second-best tile), not an
/// accuracy: the accuracy is [`Fix::horiz_accuracy_m`]. Out-of-range or NaN inputs are clamped to 0..1
/// (NaN becomes 0), so a value of this type is always in range.
#[derive(Debug, Clone, Copy, PartialEq, PartialOrd, Default)]
pub struct FixQuality(f32);

impl FixQuality {
    /// Clamps `value` into 0..=1; NaN becomes 0.
    pub fn new(value: f32) -> Self {
        if value.is_nan() {
            Self(0.0)
        } else {
            Self(value.clamp(0.0, 1.0))
        }
    }

    /// The value, in 0..=1.
    pub fn get(self) -> f32 {
        self.0
    }
}

/// A geodetic position fix from one camera frame.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Fix {
    /// UNIX time (µs since 1970-01-01 UTC, companion-computer clock) the position refers to (module docs).
    pub time_of_exposure_us: u64,
    /// Latitude, WGS84, degrees.
    pub lat_deg: f64,
    /// Longitude, WGS84, degrees.
    pub lon_deg: f64,
    /// Altitude above mean sea level in metres, when the localizer has one (visual matching alone gives none).
    pub alt_m: Option<f32>,
    /// Ground velocity north and east in m/s, when the localizer estimates one.
    pub vel_ne_mps: Option<[f32; 2]>,
    /// Horizontal accuracy in metres: a radius around the reported position that contains the true
    /// position with at least 95 % probability, as the localizer estimates it (its filter's covariance or its
    /// particle cloud's spread, never below the last input's own: a frame's tile quantisation, an anchor's
    /// accuracy). The publishers send it where the autopilot expects a one-sigma accuracy, so the autopilot
    /// weighs our fixes more cautiously than a GNSS of that accuracy: deliberately conservative.
    pub horiz_accuracy_m: f32,
    /// Match confidence.
    pub quality: FixQuality,
}

impl Fix {
    /// Whether the fix can be published at all: finite, in-range coordinates and a positive, finite accuracy.
    pub fn is_valid(&self) -> bool {
        self.lat_deg.is_finite()
            && self.lon_deg.is_finite()
            && (-90.0..=90.0).contains(&self.lat_deg)
            && (-180.0..=180.0).contains(&self.lon_deg)
            && self.horiz_accuracy_m.is_finite()
            && self.horiz_accuracy_m > 0.0
            && self.alt_m.is_none_or(f32::is_finite)
            && self
                .vel_ne_mps
                .is_none_or(|v| v.iter().all(|x| x.is_finite()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quality_is_clamped() {
        assert_eq!(FixQuality::new(f32::NAN).get(), 0.0);
        assert_eq!(FixQuality::new(2.0).get(), 1.0);
        assert_eq!(FixQuality::new(-1.0).get(), 0.0);
        assert_eq!(FixQuality::new(0.25).get(), 0.25);
    }

    #[test]
    fn validity() {
        let fix = Fix {
            time_of_exposure_us: 1_700_000_000_000_000,
            lat_deg: 47.0,
            lon_deg: 8.0,
            alt_m: None,
            vel_ne_mps: Some([1.0, 2.0]),
            horiz_accuracy_m: 5.0,
            quality: FixQuality::new(0.9),
        };
        assert!(fix.is_valid());
        assert!(!Fix {
            lat_deg: 91.0,
            ..fix
        }
        .is_valid());
        assert!(!Fix {
            horiz_accuracy_m: 0.0,
            ..fix
        }
        .is_valid());
        assert!(!Fix {
            vel_ne_mps: Some([f32::NAN, 0.0]),
            ..fix
        }
        .is_valid());
    }
}
