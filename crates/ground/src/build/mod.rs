//! Building a tile cache from an orthophoto, on the ground before a flight.
//!
//! The steps, each in its own file:
//!
//! - [`TilingPlan`] (`plan`): which pixel windows become tiles, at the ground footprints the camera sees
//!   over a height band ([`TilingSpec`]), with a stride. Pure arithmetic, always compiled.
//! - [`encode_plan`] (`encode`, `journal`): encodes the plan's tiles in batches with the onboard
//!   [`Encoder`](vimgeo_onboard::encoder::Encoder), appending every batch to a journal `<cache>.partial`, so a killed
//!   build resumes where it stopped and ends with the same cache. Reads tiles from any [`TileSource`].
//! - With the `gdal` feature: [`Orthophoto`] (`ortho`) reads GeoTIFFs and world-file images (band choice,
//!   nodata, contrast stretch, pixel ↔ WGS84); [`build_cache`] (`builder`) runs the whole build and writes
//!   the cache; [`render_preview`] (`preview`) draws the cache's tiles over the orthophoto.
//!
//! The onboard binary needs none of GDAL: the cache stores WGS84 coordinates.

mod encode;
mod error;
mod journal;
mod plan;

mod builder;
mod ortho;
mod preview;

pub use self::encode::{
    encode_plan, EncodeOptions, EncodeOutcome, EncodedTiles, Progress, SourceTile, TileSource,
};
pub use self::error::BuildError;
pub use self::journal::{read_rows, Journal, JournalHeader, JournalState};
pub use self::plan::{PlanError, PlannedTile, RasterGrid, TilingPlan, TilingSpec};

pub use self::builder::{build_cache, journal_path, BuildOutcome, BuildReport, CacheBuildConfig};
pub use self::ortho::{Georeference, OrthoOptions, Orthophoto, Stretch};
pub use self::preview::{render_preview, PreviewReport, PreviewTile};
