//! vimgeo's onboard runtime: what runs on the companion computer. Each pipeline stage lives in the module
//! named after it: [`camera`] → [`rectify`] → [`encoder`] → [`matching`] → [`localize`] → [`fc`] (publish),
//! wired by [`pipeline`]; [`preflight`] checks a set-up before a flight. The ground tools (tile-cache
//! building, the simulation) are the `vimgeo-ground` crate, which depends on this one and never the other
//! way round.
//!
//! Only the binary (`src/main.rs` of the `vimgeo` crate) parses arguments or reads the environment; the
//! library takes resolved configuration values.

pub mod camera;
pub mod config_file;
pub mod data;
pub mod encoder;
pub mod fc;
pub mod fix;
pub mod geodesy;
pub mod localize;
pub mod matching;
pub mod pipeline;
pub mod preflight;
pub mod rectify;
pub mod util;

/// The crate version, as recorded in every artefact vimgeo writes (caches, logs, manifests).
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
