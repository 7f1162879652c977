//! The autopilot parameters vimgeo's position source depends on, and the rule each must meet.
//!
//! The reference is `deploy/ardupilot.param` and `deploy/px4.params` (a unit test keeps these rules and the
//! files in agreement). Only the parameters that decide whether the autopilot takes and fuses our fixes are
//! checked; the serial port settings are not (a link that answers is proof enough), nor tuning values.
//!
//! - ArduPilot, GPS_INPUT (publisher `auto` or `gps_input`): `GPS{n}_TYPE` = 14 (MAVLink) for our GPS
//!   instance (`n` = `[fc] gps_instance` + 1), `GPS_AUTO_SWITCH` 1 or 4 (switch to us when the receiver loses
//!   its fix), `GPS{n}_DELAY_MS` within ArduPilot's 0-250 ms, `EK3_SRC1_POSXY` = 3 and `EK3_SRC1_VELXY` = 3
//!   (horizontal position and velocity from GPS), `EK3_SRC1_POSZ` not GPS (our fixes carry no altitude).
//! - ArduPilot, ODOMETRY: `VISO_TYPE` not 0 and `EK3_SRC1_POSXY` = 6 (ExternalNAV).
//! - PX4, GLOBAL_POSITION_SENSOR (publisher `auto` or `global_position_sensor`): `EKF2_AGP_CTRL` bit 0
//!   (horizontal aux global position), `EKF2_AGP_DELAY` within PX4's 0-300 ms.
//! - PX4, ODOMETRY: `EKF2_EV_CTRL` bit 0 (horizontal external-vision position).
//!
//! A publisher the autopilot ignores (GPS_INPUT to PX4, GLOBAL_POSITION_SENSOR to ArduPilot) is a
//! configuration error of its own ([`publisher_mismatch`]).

use std::fmt;

use crate::fc::{AutopilotKind, Publisher};

/// What a parameter's value must be.
#[derive(Debug, Clone, PartialEq)]
pub enum Rule {
    /// Equal (within a relative 1e-3).
    Equals(f64),
    /// Equal to one of these.
    OneOf(Vec<f64>),
    /// Not equal to this.
    Not(f64),
    /// Within `[min, max]`.
    Range(f64, f64),
    /// These bits set (an integer bitmask).
    BitsSet(u32),
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-3 * b.abs().max(1.0)
}

impl Rule {
    /// Whether `value` meets the rule.
    pub fn holds(&self, value: f64) -> bool {
        match self {
            Rule::Equals(v) => close(value, *v),
            Rule::OneOf(vs) => vs.iter().any(|v| close(value, *v)),
            Rule::Not(v) => !close(value, *v),
            Rule::Range(lo, hi) => value >= *lo && value <= *hi,
            Rule::BitsSet(bits) => {
                value.fract() == 0.0 && value >= 0.0 && (value as u64 as u32) & bits == *bits
            }
        }
    }
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Rule::Equals(v) => write!(f, "= {v}"),
            Rule::OneOf(vs) => {
                let list: Vec<String> = vs.iter().map(f64::to_string).collect();
                write!(f, "one of {}", list.join(", "))
            }
            Rule::Not(v) => write!(f, "!= {v}"),
            Rule::Range(lo, hi) => write!(f, "in [{lo}, {hi}]"),
            Rule::BitsSet(b) => write!(f, "with bit mask {b:#x} set"),
        }
    }
}

/// One parameter to check.
#[derive(Debug, Clone, PartialEq)]
pub struct ParamExpectation {
    /// The parameter.
    pub name: String,
    /// What its value must be.
    pub rule: Rule,
    /// Why it matters, for the report.
    pub why: String,
    /// What to do when it is wrong.
    pub fix: String,
}

fn expect(name: &str, rule: Rule, why: &str, fix: &str) -> ParamExpectation {
    ParamExpectation {
        name: name.to_owned(),
        rule,
        why: why.to_owned(),
        fix: fix.to_owned(),
    }
}

/// Which message the link will publish to an autopilot of `kind` (resolving `auto`).
pub fn effective_publisher(publisher: Publisher, kind: AutopilotKind) -> Publisher {
    match (publisher, kind) {
        (Publisher::Auto, AutopilotKind::Px4) => Publisher::GlobalPositionSensor,
        (Publisher::Auto, _) => Publisher::GpsInput,
        (p, _) => p,
    }
}

/// The reason the autopilot will ignore what we publish, if it will.
pub fn publisher_mismatch(publisher: Publisher, kind: AutopilotKind) -> Option<String> {
    match (effective_publisher(publisher, kind), kind) {
        (Publisher::GpsInput, AutopilotKind::Px4) => Some(
            "PX4 ignores GPS_INPUT: set [fc] publisher = \"auto\" (GLOBAL_POSITION_SENSOR) or \"odometry\""
                .into(),
        ),
        (Publisher::GlobalPositionSensor, AutopilotKind::ArduPilot) => Some(
            "ArduPilot does not fuse GLOBAL_POSITION_SENSOR: set [fc] publisher = \"auto\" (GPS_INPUT)".into(),
        ),
        _ => None,
    }
}

/// The parameters to check on an autopilot of `kind` fed by `publisher`, our GPS instance being
/// `gps_instance` (0-based, ArduPilot). Empty for other flight stacks.
pub fn expected_params(
    kind: AutopilotKind,
    publisher: Publisher,
    gps_instance: u8,
) -> Vec<ParamExpectation> {
    let reboot = "and reboot the autopilot";
    match (kind, effective_publisher(publisher, kind)) {
        (AutopilotKind::ArduPilot, Publisher::GpsInput) => {
            let n = u32::from(gps_instance) + 1;
            vec![
                expect(
                    &format!("GPS{n}_TYPE"),
                    Rule::Equals(14.0),
                    &format!("GPS instance {gps_instance} ([fc] gps_instance) must be the MAVLink GPS, or ArduPilot drops every GPS_INPUT"),
                    &format!(
                        "set GPS{n}_TYPE = 14 (MAVLink) {reboot} (ArduPilot 4.5 and older: GPS_TYPE{} = 14); \
                         or set [fc] gps_instance to the instance that is type 14",
                        if n == 1 { String::new() } else { n.to_string() }
                    ),
                ),
                expect(
                    "GPS_AUTO_SWITCH",
                    Rule::OneOf(vec![1.0, 4.0]),
                    "ArduPilot must switch to our fix when the receiver loses its own",
                    "set GPS_AUTO_SWITCH = 1 (UseBest)",
                ),
                expect(
                    &format!("GPS{n}_DELAY_MS"),
                    Rule::Range(0.0, 250.0),
                    "our exposure-to-message latency; ArduPilot compensates at most 250 ms",
                    &format!("set GPS{n}_DELAY_MS to the measured latency, at most 250 (deploy/ardupilot.param: 150)"),
                ),
                expect(
                    "EK3_SRC1_POSXY",
                    Rule::Equals(3.0),
                    "EKF3 takes horizontal position from GPS (the selected receiver: ours when GNSS is lost)",
                    &format!("set EK3_SRC1_POSXY = 3 (GPS) {reboot}"),
                ),
                expect(
                    "EK3_SRC1_VELXY",
                    Rule::Equals(3.0),
                    "EKF3 takes horizontal velocity from GPS",
                    &format!("set EK3_SRC1_VELXY = 3 (GPS) {reboot}"),
                ),
                expect(
                    "EK3_SRC1_POSZ",
                    Rule::Not(3.0),
                    "our fixes carry no altitude: height must not come from GPS",
                    &format!("set EK3_SRC1_POSZ = 1 (barometer) {reboot}"),
                ),
            ]
        }
        (AutopilotKind::ArduPilot, Publisher::Odometry) => vec![
            expect(
                "VISO_TYPE",
                Rule::Not(0.0),
                "ODOMETRY is only read with visual odometry enabled",
                &format!("set VISO_TYPE = 1 (MAVLink) {reboot}"),
            ),
            expect(
                "EK3_SRC1_POSXY",
                Rule::Equals(6.0),
                "EKF3 takes horizontal position from external navigation (ODOMETRY)",
                &format!("set EK3_SRC1_POSXY = 6 (ExternalNAV) {reboot}"),
            ),
        ],
        (AutopilotKind::Px4, Publisher::GlobalPositionSensor) => vec![
            expect(
                "EKF2_AGP_CTRL",
                Rule::BitsSet(1),
                "EKF2 fuses the aux global position (GLOBAL_POSITION_SENSOR) horizontally",
                &format!("set EKF2_AGP_CTRL = 1 (horizontal position) {reboot}"),
            ),
            expect(
                "EKF2_AGP_DELAY",
                Rule::Range(0.0, 300.0),
                "our exposure-to-arrival latency; PX4 allows 0-300 ms",
                "set EKF2_AGP_DELAY to the measured latency, at most 300 (deploy/px4.params: 150)",
            ),
        ],
        (AutopilotKind::Px4, Publisher::Odometry) => vec![expect(
            "EKF2_EV_CTRL",
            Rule::BitsSet(1),
            "EKF2 fuses external-vision horizontal position (ODOMETRY)",
            &format!("set EKF2_EV_CTRL bit 0 (horizontal position) {reboot}"),
        )],
        _ => Vec::new(),
    }
}

#[cfg(test)]
mod tests {

    use super::*;

    #[test]
    fn rules_compare_numerically() {
        assert!(Rule::Equals(14.0).holds(14.0000001));
        assert!(!Rule::Equals(14.0).holds(5.0));
        assert!(Rule::OneOf(vec![1.0, 4.0]).holds(4.0));
        assert!(Rule::Not(3.0).holds(1.0) && !Rule::Not(3.0).holds(3.0));
        assert!(Rule::Range(0.0, 250.0).holds(150.0) && !Rule::Range(0.0, 250.0).holds(300.0));
        assert!(
            Rule::BitsSet(1).holds(3.0)
                && !Rule::BitsSet(1).holds(2.0)
                && !Rule::BitsSet(1).holds(1.5)
        );
    }

    #[test]
    fn publishers_the_autopilot_ignores_are_named() {
        assert!(publisher_mismatch(Publisher::GpsInput, AutopilotKind::Px4).is_some());
        assert!(
            publisher_mismatch(Publisher::GlobalPositionSensor, AutopilotKind::ArduPilot).is_some()
        );
        assert!(publisher_mismatch(Publisher::Auto, AutopilotKind::Px4).is_none());
        assert_eq!(
            expected_params(AutopilotKind::ArduPilot, Publisher::Auto, 0)[0].name,
            "GPS1_TYPE"
        );
    }
}
