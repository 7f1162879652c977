//! The vehicle-state store: the latest value of every telemetry message we use, each stamped with the
//! monotonic time it arrived.
//!
//! The link thread [`VehicleState::apply`]s every message from the autopilot; readers take a copy. The values
//! are our own plain types (SI units, degrees for geodetic coordinates), so the rest of the pipeline does not
//! depend on the MAVLink crate.

use std::time::{Duration, Instant};

use mavlink::dialects::ardupilotmega::{
    EkfStatusFlags, MavAutopilot, MavMessage, MavSensorOrientation, MavSysStatusSensor,
};

use super::messages::EkfOrigin;

/// A value and when it arrived (monotonic clock of this process).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Stamped<T> {
    /// The value.
    pub value: T,
    /// Arrival time.
    pub at: Instant,
}

impl<T> Stamped<T> {
    /// Time since arrival.
    pub fn age(&self, now: Instant) -> Duration {
        now.saturating_duration_since(self.at)
    }
}

/// Which flight stack the autopilot runs (from its HEARTBEAT); decides what we publish.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AutopilotKind {
    /// MAV_AUTOPILOT_ARDUPILOTMEGA: takes GPS_INPUT.
    ArduPilot,
    /// MAV_AUTOPILOT_PX4: takes GLOBAL_POSITION_SENSOR (and ignores GPS_INPUT).
    Px4,
    /// Anything else, by its MAV_AUTOPILOT value.
    Other(u8),
}

/// The autopilot's identity, from its HEARTBEAT.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Autopilot {
    /// Flight stack.
    pub kind: AutopilotKind,
    /// Its system id.
    pub system_id: u8,
    /// Its component id (normally 1).
    pub component_id: u8,
    /// Whether the vehicle is armed.
    pub armed: bool,
}

/// ATTITUDE, radians.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Attitude {
    /// Roll, rad.
    pub roll: f32,
    /// Pitch, rad.
    pub pitch: f32,
    /// Yaw, rad (from north, clockwise).
    pub yaw: f32,
}

/// GLOBAL_POSITION_INT: the autopilot's fused position.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GlobalPosition {
    /// Latitude, degrees.
    pub lat_deg: f64,
    /// Longitude, degrees.
    pub lon_deg: f64,
    /// Altitude MSL, metres.
    pub alt_msl_m: f32,
    /// Altitude above home, metres.
    pub relative_alt_m: f32,
    /// Ground velocity north, east, down, m/s.
    pub vel_ned_mps: [f32; 3],
}

/// GPS_RAW_INT or GPS2_RAW: one receiver's raw solution.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GpsRaw {
    /// GPS_FIX_TYPE value (0-1 no fix, 2 2D, 3 3D, 4+ DGPS/RTK).
    pub fix_type: u8,
    /// Satellites used; `None` when the receiver reports 255 (unknown).
    pub satellites: Option<u8>,
    /// HDOP; `None` when unknown.
    pub hdop: Option<f32>,
    /// Latitude, degrees.
    pub lat_deg: f64,
    /// Longitude, degrees.
    pub lon_deg: f64,
}

/// SYS_STATUS: the GPS sensor bits and the battery.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SysStatus {
    /// The GPS sensor is present and enabled.
    pub gps_enabled: bool,
    /// The autopilot considers the GPS healthy.
    pub gps_healthy: bool,
    /// Battery voltage, volts.
    pub battery_v: f32,
}

/// EKF_STATUS_REPORT (ArduPilot).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EkfStatus {
    /// EKF_STATUS_FLAGS bits.
    pub flags: u16,
    /// The EKF flags the GPS as glitching (EKF_GPS_GLITCHING).
    pub gps_glitching: bool,
    /// Horizontal position variance (normalised innovation test ratio).
    pub pos_horiz_variance: f32,
}

/// SYSTEM_TIME.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SystemTime {
    /// The autopilot's UNIX time, µs (0 when it has none).
    pub unix_us: u64,
    /// Time since the autopilot booted, ms.
    pub boot_ms: u32,
}

/// DISTANCE_SENSOR facing down: height above ground.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct HeightAboveGround {
    /// Distance, metres.
    pub distance_m: f32,
    /// The sensor's valid range, metres.
    pub range_m: [f32; 2],
}

/// The latest telemetry, each entry stamped with its arrival.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct VehicleState {
    /// From HEARTBEAT.
    pub autopilot: Option<Stamped<Autopilot>>,
    /// From ATTITUDE.
    pub attitude: Option<Stamped<Attitude>>,
    /// From GLOBAL_POSITION_INT.
    pub global_position: Option<Stamped<GlobalPosition>>,
    /// From GPS_RAW_INT: the vehicle's own GNSS, which the GNSS monitor watches.
    pub gps1: Option<Stamped<GpsRaw>>,
    /// From GPS2_RAW: with `GPS2_TYPE=14` this is our own visual fix coming back; never used for the verdict.
    pub gps2: Option<Stamped<GpsRaw>>,
    /// From SYS_STATUS.
    pub sys_status: Option<Stamped<SysStatus>>,
    /// From EKF_STATUS_REPORT.
    pub ekf: Option<Stamped<EkfStatus>>,
    /// From SYSTEM_TIME.
    pub system_time: Option<Stamped<SystemTime>>,
    /// From a downward DISTANCE_SENSOR.
    pub height_above_ground: Option<Stamped<HeightAboveGround>>,
    /// From GPS_GLOBAL_ORIGIN: the EKF origin ODOMETRY is relative to.
    pub ekf_origin: Option<Stamped<EkfOrigin>>,
    /// GLOBAL_POSITION_INT messages ignored ([`implausible_position`]): impossible coordinates, or stamped
    /// long before the autopilot's clock (a replayed or delayed message). Such a message never becomes
    /// [`Self::global_position`], so it never anchors anything.
    pub rejected_positions: u64,
}

/// How far a GLOBAL_POSITION_INT's `time_boot_ms` may lag the autopilot's boot clock (SYSTEM_TIME, advanced by
/// the time since it came) before the message counts as old: generous for a slow radio link, far below the
/// seconds a replayed message lags.
pub const MAX_POSITION_LAG: Duration = Duration::from_secs(2);

/// SYSTEM_TIME older than this is no reference for a position's timestamp (the autopilot may have rebooted).
pub const CLOCK_REFERENCE_MAX_AGE: Duration = Duration::from_secs(10);

/// Why a GLOBAL_POSITION_INT cannot be the vehicle's position, if it cannot: latitude or longitude out of
/// range, exactly (0, 0) (what autopilots send before they have a position), or a `time_boot_ms` more than
/// [`MAX_POSITION_LAG`] behind the autopilot's clock as SYSTEM_TIME gives it (when it came in the last
/// [`CLOCK_REFERENCE_MAX_AGE`]).
pub fn implausible_position(
    lat_e7: i32,
    lon_e7: i32,
    time_boot_ms: u32,
    clock: Option<&Stamped<SystemTime>>,
    now: Instant,
) -> Option<String> {
    if !(-900_000_000..=900_000_000).contains(&lat_e7)
        || !(-1_800_000_000..=1_800_000_000).contains(&lon_e7)
    {
        return Some(format!(
            "coordinates out of range (lat {:.7}°, lon {:.7}°)",
            f64::from(lat_e7) * 1e-7,
            f64::from(lon_e7) * 1e-7
        ));
    }
    if lat_e7 == 0 && lon_e7 == 0 {
        return Some("no position (0, 0)".into());
    }
    let clock = clock.filter(|c| c.age(now) <= CLOCK_REFERENCE_MAX_AGE)?;
    let autopilot_now_ms = u64::from(clock.value.boot_ms) + clock.age(now).as_millis() as u64;
    let lag_ms = autopilot_now_ms.saturating_sub(u64::from(time_boot_ms));
    (lag_ms > MAX_POSITION_LAG.as_millis() as u64).then(|| {
        format!(
            "stamped {:.1} s before the autopilot's clock (time_boot_ms {time_boot_ms})",
            lag_ms as f64 / 1000.0
        )
    })
}

impl GpsRaw {
    /// GPS_RAW_INT and GPS2_RAW carry the same fields in the same wire units (degE7, cm, 255/65535 = unknown).
    fn from_wire(fix_type: u8, satellites: u8, eph_cm: u16, lat_e7: i32, lon_e7: i32) -> GpsRaw {
        GpsRaw {
            fix_type,
            satellites: opt_sats(satellites),
            hdop: opt_hdop(eph_cm),
            lat_deg: f64::from(lat_e7) * 1e-7,
            lon_deg: f64::from(lon_e7) * 1e-7,
        }
    }
}

fn opt_hdop(eph_cm: u16) -> Option<f32> {
    (eph_cm != u16::MAX).then(|| f32::from(eph_cm) / 100.0)
}

fn opt_sats(n: u8) -> Option<u8> {
    (n != u8::MAX).then_some(n)
}

impl VehicleState {
    /// Records `message` if it is one we keep. Returns whether it was.
    pub fn apply(
        &mut self,
        message: &MavMessage,
        system_id: u8,
        component_id: u8,
        now: Instant,
    ) -> bool {
        let at = now;
        match message {
            MavMessage::HEARTBEAT(h) => {
                let kind = match h.autopilot {
                    MavAutopilot::MAV_AUTOPILOT_ARDUPILOTMEGA => AutopilotKind::ArduPilot,
                    MavAutopilot::MAV_AUTOPILOT_PX4 => AutopilotKind::Px4,
                    other => AutopilotKind::Other(other as u8),
                };
                self.autopilot = Some(Stamped {
                    value: Autopilot {
                        kind,
                        system_id,
                        component_id,
                        armed: h
                            .base_mode
                            .contains(mavlink::dialects::ardupilotmega::MavModeFlag::MAV_MODE_FLAG_SAFETY_ARMED),
                    },
                    at,
                });
            }
            MavMessage::ATTITUDE(a) => {
                self.attitude = Some(Stamped {
                    value: Attitude {
                        roll: a.roll,
                        pitch: a.pitch,
                        yaw: a.yaw,
                    },
                    at,
                });
            }
            MavMessage::GLOBAL_POSITION_INT(p) => {
                if let Some(reason) = implausible_position(
                    p.lat,
                    p.lon,
                    p.time_boot_ms,
                    self.system_time.as_ref(),
                    now,
                ) {
                    self.rejected_positions += 1;
                    if self.rejected_positions.is_power_of_two() {
                        log::warn!(
                            "GLOBAL_POSITION_INT ignored: {reason} ({} ignored so far)",
                            self.rejected_positions
                        );
                    }
                    return false;
                }
                self.global_position = Some(Stamped {
                    value: GlobalPosition {
                        lat_deg: f64::from(p.lat) * 1e-7,
                        lon_deg: f64::from(p.lon) * 1e-7,
                        alt_msl_m: p.alt as f32 / 1000.0,
                        relative_alt_m: p.relative_alt as f32 / 1000.0,
                        vel_ned_mps: [
                            f32::from(p.vx) / 100.0,
                            f32::from(p.vy) / 100.0,
                            f32::from(p.vz) / 100.0,
                        ],
                    },
                    at,
                });
            }
            MavMessage::GPS_RAW_INT(g) => {
                self.gps1 = Some(Stamped {
                    value: GpsRaw::from_wire(
                        g.fix_type as u8,
                        g.satellites_visible,
                        g.eph,
                        g.lat,
                        g.lon,
                    ),
                    at,
                });
            }
            MavMessage::GPS2_RAW(g) => {
                self.gps2 = Some(Stamped {
                    value: GpsRaw::from_wire(
                        g.fix_type as u8,
                        g.satellites_visible,
                        g.eph,
                        g.lat,
                        g.lon,
                    ),
                    at,
                });
            }
            MavMessage::SYS_STATUS(s) => {
                let gps = MavSysStatusSensor::MAV_SYS_STATUS_SENSOR_GPS;
                self.sys_status = Some(Stamped {
                    value: SysStatus {
                        gps_enabled: s.onboard_control_sensors_present.contains(gps)
                            && s.onboard_control_sensors_enabled.contains(gps),
                        gps_healthy: s.onboard_control_sensors_health.contains(gps),
                        battery_v: f32::from(s.voltage_battery) / 1000.0,
                    },
                    at,
                });
            }
            MavMessage::EKF_STATUS_REPORT(e) => {
                self.ekf = Some(Stamped {
                    value: EkfStatus {
                        flags: e.flags.bits(),
                        gps_glitching: e.flags.contains(EkfStatusFlags::EKF_GPS_GLITCHING),
                        pos_horiz_variance: e.pos_horiz_variance,
                    },
                    at,
                });
            }
            MavMessage::SYSTEM_TIME(t) => {
                self.system_time = Some(Stamped {
                    value: SystemTime {
                        unix_us: t.time_unix_usec,
                        boot_ms: t.time_boot_ms,
                    },
                    at,
                });
            }
            MavMessage::DISTANCE_SENSOR(d) => {
                if d.orientation != MavSensorOrientation::MAV_SENSOR_ROTATION_PITCH_270 {
                    return false; // not facing down
                }
                self.height_above_ground = Some(Stamped {
                    value: HeightAboveGround {
                        distance_m: f32::from(d.current_distance) / 100.0,
                        range_m: [
                            f32::from(d.min_distance) / 100.0,
                            f32::from(d.max_distance) / 100.0,
                        ],
                    },
                    at,
                });
            }
            MavMessage::GPS_GLOBAL_ORIGIN(o) => {
                self.ekf_origin = Some(Stamped {
                    value: EkfOrigin {
                        lat_deg: f64::from(o.latitude) * 1e-7,
                        lon_deg: f64::from(o.longitude) * 1e-7,
                        alt_m: o.altitude as f32 / 1000.0,
                    },
                    at,
                });
            }
            _ => return false,
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use mavlink::dialects::ardupilotmega::{GLOBAL_POSITION_INT_DATA, SYSTEM_TIME_DATA};

    use super::*;

    fn position(lat: i32, lon: i32, time_boot_ms: u32) -> MavMessage {
        MavMessage::GLOBAL_POSITION_INT(GLOBAL_POSITION_INT_DATA {
            time_boot_ms,
            lat,
            lon,
            ..GLOBAL_POSITION_INT_DATA::DEFAULT
        })
    }

    fn clock(boot_ms: u32) -> MavMessage {
        MavMessage::SYSTEM_TIME(SYSTEM_TIME_DATA {
            time_unix_usec: 0,
            time_boot_ms: boot_ms,
        })
    }

    #[test]
    fn impossible_or_old_positions_are_ignored_and_counted() {
        let t0 = Instant::now();
        let mut v = VehicleState::default();
        // Without a clock reference, only the coordinates are judged.
        assert!(v.apply(&position(447_000_000, -1_105_000_000, 5_000), 1, 1, t0));
        for bad in [
            position(900_000_001, 0, 5_000),
            position(0, -1_800_000_001, 5_000),
            position(i32::MIN, i32::MAX, 5_000),
            position(0, 0, 5_000),
        ] {
            assert!(!v.apply(&bad, 1, 1, t0));
        }
        assert_eq!(v.rejected_positions, 4);
        let kept = v.global_position.expect("the good position stays");
        assert!((kept.value.lat_deg - 44.7).abs() < 1e-9);

        // The autopilot's clock at 60 s, received 0.5 s ago: a position stamped 57.4 s is 3.1 s old.
        assert!(v.apply(&clock(60_000), 1, 1, t0));
        let now = t0 + Duration::from_millis(500);
        assert!(!v.apply(&position(447_000_100, -1_105_000_000, 57_400), 1, 1, now));
        assert_eq!(v.rejected_positions, 5);
        // 1 s behind (a slow link) is fine; so is one stamped after the clock.
        assert!(v.apply(&position(447_000_200, -1_105_000_000, 59_500), 1, 1, now));
        assert!(v.apply(&position(447_000_300, -1_105_000_000, 61_000), 1, 1, now));
        // A clock reference older than 10 s (the autopilot may have rebooted) judges nothing.
        let later = t0 + Duration::from_secs(11);
        assert!(v.apply(&position(447_000_400, -1_105_000_000, 1_000), 1, 1, later));
        assert_eq!(v.rejected_positions, 5);
    }
}
