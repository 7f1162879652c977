//! The messages we send, built from a [`Fix`] or from our identity, and their MAVLink 2 bytes.
//!
//! Each builder is a pure function: the link decides when to send, these decide what. Every field choice that an
//! autopilot is picky about is explained where it is made; the tests decode the bytes with pymavlink.

use mavlink::dialects::ardupilotmega::{
    GpsFixType, GpsInputIgnoreFlags, MavAutopilot, MavEstimatorType, MavFrame, MavMessage,
    MavModeFlag, MavSeverity, MavState, MavType, GLOBAL_POSITION_SENSOR_DATA, GPS_INPUT_DATA,
    HEARTBEAT_DATA, ODOMETRY_DATA, STATUSTEXT_DATA,
};
use mavlink::{MavHeader, MavlinkVersion};

use crate::fix::Fix;

/// MAV_COMP_ID_VISUAL_INERTIAL_ODOMETRY: our default component id.
pub const DEFAULT_COMPONENT_ID: u8 = 197;

/// The user-equivalent range error (one sigma, metres) that turns an accuracy into an HDOP:
/// `hdop = horiz_accuracy / NOMINAL_UERE_M`. ArduPilot only uses the HDOP for its arming and EKF checks (it
/// fuses `horiz_accuracy`), and those checks expect the GNSS convention `accuracy ≈ HDOP × UERE` with a UERE
/// of a few metres; 1 m would make every visual fix look five times worse than GNSS of the same accuracy,
/// 5 m would hide poor fixes. 2.5 m is the middle of the usual 1-5 m range for a single-frequency receiver.
pub const NOMINAL_UERE_M: f32 = 2.5;

/// Above this horizontal accuracy (metres) GPS_INPUT reports a 2D fix instead of a 3D one. EKF3 only uses a
/// GPS with a 3D fix, so this is where our fixes stop being fused; `GPS_AUTO_SWITCH=1` (UseBest) also ranks
/// receivers by fix type. A fix without altitude is still reported as 3D when it is accurate enough: the
/// altitude is flagged ignored and the EKF takes height from the barometer (`EK3_SRC1_POSZ=1`); reporting 2D
/// for it would make EKF3 refuse every visual fix. Above [`NO_FIX_ACCURACY_M`] we report no fix at all.
pub const FIX_2D_ACCURACY_M: f32 = 20.0;
/// Above this horizontal accuracy (metres) GPS_INPUT reports GPS_FIX_TYPE_NO_FIX.
pub const NO_FIX_ACCURACY_M: f32 = 100.0;

/// The speed accuracy (m/s) we claim when the fix carries a velocity: the localizer differentiates positions
/// over about a second, so its velocity error is about the position error per second. Floored at 0.5 m/s.
fn speed_accuracy(fix: &Fix) -> f32 {
    (fix.horiz_accuracy_m / 1.0).max(0.5)
}

/// Settings of the GPS_INPUT publisher.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GpsInputConfig {
    /// The ArduPilot GPS instance, 0-based (`GPS2_TYPE=14` → 1). ArduPilot drops GPS_INPUT whose `gps_id`
    /// is not the instance configured as MAVLink GPS.
    pub gps_instance: u8,
    /// The number of satellites we claim. ArduPilot's EKF and arming checks want at least 6; the value has no
    /// meaning for a visual fix, so it is configurable rather than invented per fix.
    pub satellites: u8,
    /// Vertical accuracy (metres, one sigma) to report when the fix has an altitude.
    pub vert_accuracy_m: f32,
}

impl Default for GpsInputConfig {
    fn default() -> Self {
        Self {
            gps_instance: 1,
            satellites: 10,
            vert_accuracy_m: 10.0,
        }
    }
}

/// GPS time: week number and milliseconds of week.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GpsTime {
    /// Weeks since the GPS epoch, 1980-01-06 00:00:00 UTC.
    pub week: u16,
    /// Milliseconds since the start of the week (Sunday 00:00:00 GPS time).
    pub ms_of_week: u32,
}

/// Seconds from the UNIX epoch (1970-01-01) to the GPS epoch (1980-01-06).
const GPS_EPOCH_UNIX_S: u64 = 315_964_800;
/// GPS time runs ahead of UTC by the leap seconds inserted since 1980: 18 since 2017-01-01 (no new leap second
/// has been announced since; update here if the IERS announces one).
pub const GPS_LEAP_SECONDS: u64 = 18;
const MS_PER_WEEK: u64 = 7 * 24 * 3600 * 1000;

/// GPS week and ms of week of a UNIX time in microseconds; `None` before the GPS epoch.
pub fn gps_time_from_unix_us(unix_us: u64) -> Option<GpsTime> {
    let unix_ms = unix_us / 1000;
    let gps_ms = unix_ms.checked_sub(GPS_EPOCH_UNIX_S * 1000)? + GPS_LEAP_SECONDS * 1000;
    Some(GpsTime {
        week: u16::try_from(gps_ms / MS_PER_WEEK).ok()?,
        ms_of_week: (gps_ms % MS_PER_WEEK) as u32,
    })
}

fn deg_e7(deg: f64) -> i32 {
    (deg * 1e7).round() as i32
}

/// GPS_INPUT (232) for ArduPilot. Fields the fix lacks are flagged ignored; HDOP is always sent.
pub fn gps_input(fix: &Fix, config: &GpsInputConfig) -> GPS_INPUT_DATA {
    let mut ignore = GpsInputIgnoreFlags::GPS_INPUT_IGNORE_FLAG_VDOP
        | GpsInputIgnoreFlags::GPS_INPUT_IGNORE_FLAG_VEL_VERT;
    let acc = fix.horiz_accuracy_m;
    let (vn, ve) = match fix.vel_ne_mps {
        Some([vn, ve]) => (vn, ve),
        None => {
            ignore |= GpsInputIgnoreFlags::GPS_INPUT_IGNORE_FLAG_VEL_HORIZ
                | GpsInputIgnoreFlags::GPS_INPUT_IGNORE_FLAG_SPEED_ACCURACY;
            (0.0, 0.0)
        }
    };
    let (alt, vert_accuracy) = match fix.alt_m {
        Some(alt) => (alt, config.vert_accuracy_m),
        None => {
            ignore |= GpsInputIgnoreFlags::GPS_INPUT_IGNORE_FLAG_ALT
                | GpsInputIgnoreFlags::GPS_INPUT_IGNORE_FLAG_VERTICAL_ACCURACY;
            (0.0, 0.0)
        }
    };
    let fix_type = if !(acc.is_finite() && acc > 0.0) || acc > NO_FIX_ACCURACY_M {
        GpsFixType::GPS_FIX_TYPE_NO_FIX
    } else if acc > FIX_2D_ACCURACY_M {
        GpsFixType::GPS_FIX_TYPE_2D_FIX
    } else {
        GpsFixType::GPS_FIX_TYPE_3D_FIX
    };
    let time = gps_time_from_unix_us(fix.time_of_exposure_us).unwrap_or(GpsTime {
        week: 0,
        ms_of_week: 0,
    });
    GPS_INPUT_DATA {
        time_usec: fix.time_of_exposure_us,
        gps_id: config.gps_instance,
        ignore_flags: ignore,
        time_week_ms: time.ms_of_week,
        time_week: time.week,
        fix_type,
        lat: deg_e7(fix.lat_deg),
        lon: deg_e7(fix.lon_deg),
        alt,
        hdop: (acc / NOMINAL_UERE_M).max(0.01),
        vdop: 0.0,
        vn,
        ve,
        vd: 0.0,
        speed_accuracy: if fix.vel_ne_mps.is_some() {
            speed_accuracy(fix)
        } else {
            0.0
        },
        horiz_accuracy: acc,
        vert_accuracy,
        satellites_visible: config.satellites,
        yaw: 0,
    }
}

/// GLOBAL_POSITION_SENSOR (296) for PX4's EKF2 auxiliary global position (`EKF2_AGP_*`).
///
/// `send_time_us` is the UNIX time at transmission: `processing_time` is the exposure-to-send latency that
/// the receiver subtracts. Without an altitude both altitudes are NaN (the spec's "invalid").
pub fn global_position_sensor(
    fix: &Fix,
    sensor_id: u8,
    send_time_us: u64,
    target_system: u8,
) -> GLOBAL_POSITION_SENSOR_DATA {
    let processing = send_time_us.saturating_sub(fix.time_of_exposure_us);
    GLOBAL_POSITION_SENSOR_DATA {
        target_system,
        target_component: 0,
        id: sensor_id,
        time_usec: fix.time_of_exposure_us,
        processing_time: u32::try_from(processing).unwrap_or(u32::MAX),
        source: mavlink::dialects::ardupilotmega::GlobalPositionSrc::GLOBAL_POSITION_SRC_VISION,
        flags: mavlink::dialects::ardupilotmega::GlobalPositionFlags::empty(),
        lat: deg_e7(fix.lat_deg),
        lon: deg_e7(fix.lon_deg),
        alt_ellipsoid: f32::NAN,
        alt: fix.alt_m.unwrap_or(f32::NAN),
        eph: fix.horiz_accuracy_m,
        epv: f32::NAN,
    }
}

/// The EKF origin ODOMETRY positions are relative to (GPS_GLOBAL_ORIGIN from the autopilot).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EkfOrigin {
    /// Latitude, degrees.
    pub lat_deg: f64,
    /// Longitude, degrees.
    pub lon_deg: f64,
    /// Altitude MSL, metres.
    pub alt_m: f32,
}

/// North/east metres of `(lat, lon)` from `origin` on the local tangent plane (equirectangular with the
/// ellipsoid's radii of curvature: sub-centimetre within a few km, which is what the EKF's local frame covers).
pub fn ned_from_origin(origin: &EkfOrigin, lat_deg: f64, lon_deg: f64) -> [f64; 2] {
    let (north, east) =
        crate::geodesy::offset_ne_m(origin.lat_deg, origin.lon_deg, lat_deg, lon_deg);
    [north, east]
}

/// ODOMETRY (331) in MAV_FRAME_LOCAL_NED relative to the EKF origin: position only (and NE velocity when
/// known). Orientation is unknown (quaternion NaN, its covariance NaN), unknown variances are NaN as the spec
/// asks; `z` is the altitude below the origin, NaN without one.
pub fn odometry(fix: &Fix, origin: &EkfOrigin, reset_counter: u8) -> ODOMETRY_DATA {
    let [n, e] = ned_from_origin(origin, fix.lat_deg, fix.lon_deg);
    let var_h = fix.horiz_accuracy_m * fix.horiz_accuracy_m;
    let nan = f32::NAN;
    // Upper triangle of the 6x6 pose covariance, row-major: indices of the diagonal are 0, 6, 11, 15, 18, 20.
    let mut pose = [nan; 21];
    pose[0] = var_h; // xx
    pose[1] = 0.0; // xy
    pose[6] = var_h; // yy
    if fix.alt_m.is_some() {
        pose[2] = 0.0;
        pose[7] = 0.0;
        pose[11] = 100.0; // zz: 10 m sigma, the localizer does not measure height
    }
    let mut vel = [nan; 21];
    let (vx, vy) = match fix.vel_ne_mps {
        Some([vn, ve]) => {
            let var_v = speed_accuracy(fix).powi(2);
            vel[0] = var_v;
            vel[1] = 0.0;
            vel[6] = var_v;
            (vn, ve)
        }
        None => (nan, nan),
    };
    ODOMETRY_DATA {
        time_usec: fix.time_of_exposure_us,
        frame_id: MavFrame::MAV_FRAME_LOCAL_NED,
        child_frame_id: MavFrame::MAV_FRAME_LOCAL_NED,
        x: n as f32,
        y: e as f32,
        z: fix.alt_m.map_or(nan, |a| origin.alt_m - a),
        q: [nan; 4],
        vx,
        vy,
        vz: nan,
        rollspeed: nan,
        pitchspeed: nan,
        yawspeed: nan,
        pose_covariance: pose,
        velocity_covariance: vel,
        reset_counter,
        estimator_type: MavEstimatorType::MAV_ESTIMATOR_TYPE_VISION,
        quality: (fix.quality.get() * 99.0).round() as i8 + 1,
    }
}

/// Our HEARTBEAT: an onboard controller, not an autopilot (so GCSs and autopilots do not mistake us for one).
pub fn heartbeat(active: bool) -> HEARTBEAT_DATA {
    HEARTBEAT_DATA {
        custom_mode: 0,
        mavtype: MavType::MAV_TYPE_ONBOARD_CONTROLLER,
        autopilot: MavAutopilot::MAV_AUTOPILOT_INVALID,
        base_mode: MavModeFlag::empty(),
        system_status: if active {
            MavState::MAV_STATE_ACTIVE
        } else {
            MavState::MAV_STATE_STANDBY
        },
        mavlink_version: 3,
    }
}

/// STATUSTEXT; text longer than 50 bytes is cut at a character boundary.
pub fn statustext(severity: MavSeverity, text: &str) -> STATUSTEXT_DATA {
    let mut end = text.len().min(50);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    let mut bytes = [0u8; 50];
    bytes[..end].copy_from_slice(&text.as_bytes()[..end]);
    STATUSTEXT_DATA {
        severity,
        text: bytes.into(),
        id: 0,
        chunk_seq: 0,
    }
}

/// The MAVLink 2 frame of `message` from `system_id`/`component_id` with sequence number `sequence`.
pub fn encode(message: &MavMessage, system_id: u8, component_id: u8, sequence: u8) -> Vec<u8> {
    let header = MavHeader {
        system_id: u32::from(system_id),
        component_id,
        sequence,
    };
    let mut out = Vec::with_capacity(mavlink::consts::MAX_FRAME_SIZE);
    // Writing to a Vec cannot fail.
    let _ = mavlink::write_versioned_msg(&mut out, MavlinkVersion::V2, header, message);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fix::FixQuality;

    fn fix() -> Fix {
        Fix {
            time_of_exposure_us: 1_700_000_000_123_456,
            lat_deg: 47.397_742_1,
            lon_deg: 8.545_594_3,
            alt_m: None,
            vel_ne_mps: None,
            horiz_accuracy_m: 5.0,
            quality: FixQuality::new(0.8),
        }
    }

    #[test]
    fn gps_time_known_values() {
        // GPS epoch itself (UTC 1980-01-06 is GPS 0 + 18 s only after leap seconds: we apply today's offset).
        let t = gps_time_from_unix_us(GPS_EPOCH_UNIX_S * 1_000_000).unwrap();
        assert_eq!((t.week, t.ms_of_week), (0, 18_000));
        // 2023-11-14T22:13:20Z = UNIX 1_700_000_000: GPS week 2288, 252_818 s of week (incl. 18 leap s).
        let t = gps_time_from_unix_us(1_700_000_000_000_000).unwrap();
        assert_eq!((t.week, t.ms_of_week), (2288, 252_818_000));
        assert!(gps_time_from_unix_us(0).is_none());
    }

    #[test]
    fn gps_input_fields() {
        let m = gps_input(&fix(), &GpsInputConfig::default());
        assert_eq!(m.gps_id, 1);
        assert!((m.hdop - 2.0).abs() < 1e-6);
        assert!(m
            .ignore_flags
            .contains(GpsInputIgnoreFlags::GPS_INPUT_IGNORE_FLAG_VEL_HORIZ));
        assert!(!m
            .ignore_flags
            .contains(GpsInputIgnoreFlags::GPS_INPUT_IGNORE_FLAG_HDOP));
        assert_eq!(m.lat, 473_977_421);
        assert_eq!(m.fix_type, GpsFixType::GPS_FIX_TYPE_3D_FIX);
        let coarse = gps_input(
            &Fix {
                horiz_accuracy_m: 50.0,
                ..fix()
            },
            &GpsInputConfig::default(),
        );
        assert_eq!(coarse.fix_type, GpsFixType::GPS_FIX_TYPE_2D_FIX);
        let poor = gps_input(
            &Fix {
                horiz_accuracy_m: 500.0,
                ..fix()
            },
            &GpsInputConfig::default(),
        );
        assert_eq!(poor.fix_type, GpsFixType::GPS_FIX_TYPE_NO_FIX);
        let good = gps_input(
            &Fix {
                alt_m: Some(500.0),
                ..fix()
            },
            &GpsInputConfig::default(),
        );
        assert_eq!(good.fix_type, GpsFixType::GPS_FIX_TYPE_3D_FIX);
    }

    #[test]
    fn ned_offsets() {
        let o = EkfOrigin {
            lat_deg: 47.0,
            lon_deg: 8.0,
            alt_m: 400.0,
        };
        let [n, e] = ned_from_origin(&o, 47.001, 8.001);
        assert!((n - 111.2).abs() < 0.5, "{n}");
        assert!((e - 76.0).abs() < 0.5, "{e}");
    }

    #[test]
    fn statustext_truncates_on_char_boundary() {
        let m = statustext(MavSeverity::MAV_SEVERITY_INFO, &"é".repeat(40));
        assert_eq!(m.text.to_str().unwrap().len(), 50);
    }
}
