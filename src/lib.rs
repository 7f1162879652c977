//! vimgeo under one name: the onboard crate's modules (`vimgeo::camera`, `vimgeo::pipeline`, ...) and, with
//! the `ground` feature (the default), the ground crate's `vimgeo::build` and `vimgeo::sim`. The command
//! line (`src/main.rs`) and the integration tests use these paths.

pub use vimgeo_onboard::*;

#[cfg(feature = "ground")]
pub use vimgeo_ground::{build, sim};
