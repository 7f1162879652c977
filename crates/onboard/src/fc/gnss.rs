//! The GNSS monitor: is the vehicle's own GNSS healthy, degraded or denied, and why.
//!
//! Each [`GnssMonitor::update`] assesses the latest [`VehicleState`] and moves the verdict with hysteresis: a
//! worse assessment must hold for [`GnssMonitorConfig::worsen_after`] and a better one for
//! [`GnssMonitorConfig::recover_after`] (longer, so a flickering receiver does not switch our fixes on and off).
//! Only GPS_RAW_INT (the first receiver) counts: with our fixes injected as GPS2, GPS2_RAW is us.

use std::time::{Duration, Instant};

use super::state::VehicleState;

/// The GNSS verdict, ordered from best to worst.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum GnssVerdict {
    /// 3D fix, enough satellites, the autopilot trusts it.
    Healthy,
    /// Usable but suspect (few satellites, EKF glitch flag, high HDOP), or not yet known.
    Degraded,
    /// No usable GNSS: the visual fixes are the position source.
    Denied,
}

impl std::fmt::Display for GnssVerdict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Healthy => "healthy",
            Self::Degraded => "degraded",
            Self::Denied => "denied",
        })
    }
}

/// Why the verdict is what it is (the first problem found, most serious first).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum GnssReason {
    /// Nothing wrong.
    Ok,
    /// No GPS_RAW_INT yet since start.
    NoTelemetryYet,
    /// GPS_RAW_INT stopped arriving.
    Stale {
        /// Age of the last one.
        age: Duration,
    },
    /// Less than a 3D fix.
    NoFix3d {
        /// GPS_FIX_TYPE reported.
        fix_type: u8,
    },
    /// SYS_STATUS says the GPS sensor is unhealthy.
    UnhealthyBit,
    /// The EKF flags the GPS as glitching.
    EkfGlitch,
    /// Fewer satellites than configured.
    TooFewSatellites {
        /// Satellites reported.
        satellites: u8,
    },
    /// HDOP above the configured limit.
    HighHdop {
        /// HDOP reported.
        hdop: f32,
    },
}

impl std::fmt::Display for GnssReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Ok => write!(f, "ok"),
            Self::NoTelemetryYet => write!(f, "no GPS_RAW_INT received yet"),
            Self::Stale { age } => write!(f, "no GPS_RAW_INT for {:.1} s", age.as_secs_f32()),
            Self::NoFix3d { fix_type } => write!(f, "no 3D fix (fix type {fix_type})"),
            Self::UnhealthyBit => write!(f, "GPS health bit cleared"),
            Self::EkfGlitch => write!(f, "EKF GPS glitch flag"),
            Self::TooFewSatellites { satellites } => write!(f, "{satellites} satellites"),
            Self::HighHdop { hdop } => write!(f, "HDOP {hdop:.1}"),
        }
    }
}

/// The monitor's thresholds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GnssMonitorConfig {
    /// Fewer satellites than this is degraded.
    pub min_satellites: u8,
    /// HDOP above this is degraded.
    pub max_hdop: f32,
    /// GPS_RAW_INT older than this is denied.
    pub stale_after: Duration,
    /// How long a worse assessment must hold before the verdict follows.
    pub worsen_after: Duration,
    /// How long a better assessment must hold before the verdict follows.
    pub recover_after: Duration,
}

impl Default for GnssMonitorConfig {
    fn default() -> Self {
        Self {
            min_satellites: 6,
            max_hdop: 2.5,
            stale_after: Duration::from_secs(2),
            worsen_after: Duration::from_secs(1),
            recover_after: Duration::from_secs(3),
        }
    }
}

/// The current verdict, its reason and since when.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GnssStatus {
    /// The verdict.
    pub verdict: GnssVerdict,
    /// Why.
    pub reason: GnssReason,
    /// When the verdict last changed.
    pub since: Instant,
}

/// Healthy / degraded / denied with hysteresis. See the module documentation.
#[derive(Debug, Clone)]
pub struct GnssMonitor {
    config: GnssMonitorConfig,
    status: GnssStatus,
    /// A different assessment and since when it has held.
    candidate: Option<(GnssVerdict, Instant)>,
}

/// The verdict of one state, without hysteresis.
pub fn assess(
    state: &VehicleState,
    now: Instant,
    config: &GnssMonitorConfig,
) -> (GnssVerdict, GnssReason) {
    let Some(gps) = state.gps1 else {
        return (GnssVerdict::Degraded, GnssReason::NoTelemetryYet);
    };
    let age = gps.age(now);
    if age > config.stale_after {
        return (GnssVerdict::Denied, GnssReason::Stale { age });
    }
    if gps.value.fix_type < 3 {
        return (
            GnssVerdict::Denied,
            GnssReason::NoFix3d {
                fix_type: gps.value.fix_type,
            },
        );
    }
    if let Some(s) = state.sys_status {
        if s.age(now) <= config.stale_after && s.value.gps_enabled && !s.value.gps_healthy {
            return (GnssVerdict::Denied, GnssReason::UnhealthyBit);
        }
    }
    if let Some(e) = state.ekf {
        if e.age(now) <= config.stale_after && e.value.gps_glitching {
            return (GnssVerdict::Degraded, GnssReason::EkfGlitch);
        }
    }
    if let Some(n) = gps.value.satellites {
        if n < config.min_satellites {
            return (
                GnssVerdict::Degraded,
                GnssReason::TooFewSatellites { satellites: n },
            );
        }
    }
    if let Some(hdop) = gps.value.hdop {
        if hdop > config.max_hdop {
            return (GnssVerdict::Degraded, GnssReason::HighHdop { hdop });
        }
    }
    (GnssVerdict::Healthy, GnssReason::Ok)
}

impl GnssMonitor {
    /// A monitor that starts as degraded ("no telemetry yet") at `now`; the first real assessment is adopted
    /// without hysteresis.
    pub fn new(config: GnssMonitorConfig, now: Instant) -> Self {
        Self {
            config,
            status: GnssStatus {
                verdict: GnssVerdict::Degraded,
                reason: GnssReason::NoTelemetryYet,
                since: now,
            },
            candidate: None,
        }
    }

    /// The current status.
    pub fn status(&self) -> GnssStatus {
        self.status
    }

    /// Assesses `state` at `now`; returns the new status when the verdict changed.
    pub fn update(&mut self, state: &VehicleState, now: Instant) -> Option<GnssStatus> {
        let (verdict, reason) = assess(state, now, &self.config);
        if verdict == self.status.verdict {
            self.candidate = None;
            self.status.reason = reason;
            return None;
        }
        let since = match self.candidate {
            Some((v, since)) if v == verdict => since,
            _ => {
                self.candidate = Some((verdict, now));
                now
            }
        };
        // The first assessment after start is adopted at once: hysteresis guards against flicker, and there is
        // nothing to flicker from yet.
        let hold = if self.status.reason == GnssReason::NoTelemetryYet {
            Duration::ZERO
        } else if verdict > self.status.verdict {
            self.config.worsen_after
        } else {
            self.config.recover_after
        };
        if now.saturating_duration_since(since) >= hold {
            self.status = GnssStatus {
                verdict,
                reason,
                since: now,
            };
            self.candidate = None;
            Some(self.status)
        } else {
            None
        }
    }
}

/// When fixes are published.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PublishPolicy {
    /// Only while GNSS is denied (the default).
    #[default]
    WhenDenied,
    /// Always, as a secondary GPS the autopilot switches to by itself.
    Always,
    /// Never: compute and log only (dry run).
    Never,
}

impl PublishPolicy {
    /// Whether a fix is published under `verdict`.
    pub fn publishes(self, verdict: GnssVerdict) -> bool {
        match self {
            Self::WhenDenied => verdict == GnssVerdict::Denied,
            Self::Always => true,
            Self::Never => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fc::state::{GpsRaw, Stamped};

    fn state(fix_type: u8, sats: u8, at: Instant) -> VehicleState {
        VehicleState {
            gps1: Some(Stamped {
                value: GpsRaw {
                    fix_type,
                    satellites: Some(sats),
                    hdop: Some(0.8),
                    lat_deg: 0.0,
                    lon_deg: 0.0,
                },
                at,
            }),
            ..VehicleState::default()
        }
    }

    #[test]
    fn hysteresis() {
        let t0 = Instant::now();
        let s = |ms: u64| t0 + Duration::from_millis(ms);
        let mut m = GnssMonitor::new(GnssMonitorConfig::default(), t0);
        assert_eq!(m.update(&VehicleState::default(), s(0)), None);
        assert_eq!(
            m.update(&state(3, 12, s(100)), s(100)).unwrap().verdict,
            GnssVerdict::Healthy
        );
        // A short dropout does not flip it.
        assert_eq!(m.update(&state(1, 0, s(4000)), s(4000)), None);
        assert_eq!(m.update(&state(3, 12, s(4500)), s(4500)), None);
        assert_eq!(m.update(&state(1, 0, s(5000)), s(5000)), None);
        let st = m.update(&state(1, 0, s(6000)), s(6000)).unwrap();
        assert_eq!(st.verdict, GnssVerdict::Denied);
        assert_eq!(st.reason, GnssReason::NoFix3d { fix_type: 1 });
        assert_eq!(m.update(&state(3, 4, s(7000)), s(7000)), None);
        assert_eq!(
            m.update(&state(3, 4, s(10_000)), s(10_000))
                .unwrap()
                .verdict,
            GnssVerdict::Degraded
        );
    }

    #[test]
    fn stale_gps_is_denied() {
        let t0 = Instant::now();
        let st = state(3, 12, t0);
        let (v, r) = assess(
            &st,
            t0 + Duration::from_secs(5),
            &GnssMonitorConfig::default(),
        );
        assert_eq!(v, GnssVerdict::Denied);
        assert!(matches!(r, GnssReason::Stale { .. }));
    }

    #[test]
    fn policy() {
        assert!(PublishPolicy::WhenDenied.publishes(GnssVerdict::Denied));
        assert!(!PublishPolicy::WhenDenied.publishes(GnssVerdict::Degraded));
        assert!(PublishPolicy::Always.publishes(GnssVerdict::Healthy));
        assert!(!PublishPolicy::Never.publishes(GnssVerdict::Denied));
    }
}
