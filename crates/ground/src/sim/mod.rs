//! Simulation stand-ins for the hardware around vimgeo, so the whole stack runs in tests and on a laptop.
//!
//! - [`autopilot`]: a scripted autopilot that streams MAVLink telemetry over UDP and records what we send.
//! - [`scenario`]: the closed-loop simulation's scenario file; [`trajectory`]: the flight's truth.
//! - [`appearance`]: how the world the camera sees differs from the map (another day, another sensor).
//! - [`camera`]: the simulated camera source; [`closed_loop`]: the whole run, its metrics, CSV and plot
//!   ([`plot`]).
//!
//! Scenario files for the closed-loop simulation live in the repository's top-level `sim/` folder.

pub mod appearance;
pub mod autopilot;
pub mod autopilot_params;
pub mod camera;
pub mod closed_loop;
pub mod pairs;
pub mod photometric;
pub mod plot;
pub mod render;
pub mod scenario;
pub mod trajectory;
