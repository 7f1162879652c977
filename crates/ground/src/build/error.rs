//! Errors of the cache builder.

use std::path::PathBuf;

use super::plan::PlanError;
use vimgeo_onboard::encoder::EncoderError;
use vimgeo_onboard::matching::CacheError;

/// Why a cache build (or its preview) failed. Every variant names the file or tile involved.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// The tiling plan cannot be made (footprint, stride, image too small).
    #[error(transparent)]
    Plan(#[from] PlanError),
    /// Reading or writing a file failed.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The orthophoto cannot be used: unreadable, no georeference, unsupported bands or data type.
    #[error("orthophoto {}: {message}", path.display())]
    Ortho {
        /// The orthophoto.
        path: PathBuf,
        /// What is wrong with it.
        message: String,
    },
    /// A tile failed to encode.
    #[error("cannot encode tile {index} (scale {scale}, pixel window at {x0},{y0}): {source}")]
    Encode {
        /// The tile's index in the plan.
        index: usize,
        /// Its scale.
        scale: u16,
        /// Its window's left column.
        x0: u32,
        /// Its window's top row.
        y0: u32,
        /// The encoder's error.
        source: EncoderError,
    },
    /// Every tile of the plan was skipped as nodata: there is nothing to cache.
    #[error("all {tiles} tiles of {} are mostly nodata; nothing to cache", path.display())]
    AllNodata {
        /// The orthophoto.
        path: PathBuf,
        /// Tiles in the plan.
        tiles: usize,
    },
    /// Writing the cache file failed (the cache layer's error names the file).
    #[error(transparent)]
    Cache(#[from] CacheError),
}
