//! The flight-controller link over MAVLink 2: what we read from the autopilot and what we send it.
//!
//! - [`LinkAddress`] / [`Transport`]: UDP (in/out), TCP and serial behind one trait.
//! - [`FcLink`]: the link thread. It keeps the [`VehicleState`] (telemetry, timestamped), runs the
//!   [`GnssMonitor`] (healthy / degraded / denied with hysteresis), sends our HEARTBEAT at 1 Hz, asks for
//!   missing streams, announces verdict changes with STATUSTEXT, and publishes [`Fix`](crate::fix::Fix)es
//!   according to the [`PublishPolicy`]: GPS_INPUT to ArduPilot, GLOBAL_POSITION_SENSOR to PX4, or ODOMETRY.
//! - [`integrity`]: the GNSS consistency check (GNSS against the camera's position; not wired into the link
//!   yet, see its documentation).
//! - [`messages`]: the pure builders of every message we send, and their bytes.
//! - [`signing`]: MAVLink 2 signing of what we send and verification of what we receive, when
//!   [`LinkConfig::signing_key`] names a key file (format in [`signing`]).
//!
//! The MAVLink dialect is ArduPilot's (`mavlink::dialects::ardupilotmega`), which includes `common` (GPS_INPUT,
//! GLOBAL_POSITION_SENSOR, ODOMETRY) and adds EKF_STATUS_REPORT.

mod error;
mod gnss;
pub mod integrity;
mod link;
pub mod messages;
pub mod params;
pub mod signing;
mod state;
mod transport;

pub use error::FcError;
pub use gnss::{
    assess, GnssMonitor, GnssMonitorConfig, GnssReason, GnssStatus, GnssVerdict, PublishPolicy,
};
pub use link::{FcLink, LinkConfig, LinkSnapshot, LinkStats, PublishOutcome, Publisher};
pub use messages::{EkfOrigin, GpsInputConfig, DEFAULT_COMPONENT_ID};
pub use signing::SigningKey;
pub use state::{
    implausible_position, Attitude, Autopilot, AutopilotKind, EkfStatus, GlobalPosition, GpsRaw,
    HeightAboveGround, Stamped, SysStatus, SystemTime, VehicleState, CLOCK_REFERENCE_MAX_AGE,
    MAX_POSITION_LAG,
};
pub use transport::{open as open_transport, LinkAddress, Transport};

/// The MAVLink message type of our dialect, for callers that build or inspect frames.
pub use mavlink::dialects::ardupilotmega::MavMessage;
