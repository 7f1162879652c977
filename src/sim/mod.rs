//! Simulation stand-ins for the hardware around vimgeo, so the whole stack runs in tests and on a laptop.
//!
//! - [`autopilot`]: a scripted autopilot that streams MAVLink telemetry over UDP and records what we send.
//!
//! Scenario files for the closed-loop simulation live in the repository's top-level `sim/` folder.

pub mod autopilot;
