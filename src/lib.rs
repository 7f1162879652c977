//! vimgeo: onboard visual geo-localization for drones that fly without GNSS.
//!
//! The crate is the onboard runtime. Each pipeline stage lives in the module named after it
//! (see `docs` in the repository's README and ARCHITECTURE map):
//! camera → rectify → encode → match → localize → publish.
//! Only the binary (`src/main.rs`) parses arguments or reads the environment; the library takes
//! resolved configuration values.

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
pub mod sim;
pub mod util;

/// The crate version, as recorded in every artefact vimgeo writes (caches, logs, manifests).
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
