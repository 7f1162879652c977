//! Encoding a tiling plan's tiles, batch by batch, into a journal that a killed build resumes from.

use std::path::Path;
use std::time::{Duration, Instant};

use super::error::BuildError;
use super::journal::{Journal, JournalHeader};
use super::plan::{PlannedTile, TilingPlan};
use vimgeo_onboard::encoder::{Encoder, RgbImage};

/// Where tiles' pixels come from (an orthophoto through GDAL, or an in-memory picture in tests).
pub trait TileSource {
    /// Reads `tile`'s window as an RGB image (any size: the encoder resizes it to the model's input) and the
    /// fraction of its pixels that are nodata.
    fn read_tile(&mut self, tile: &PlannedTile) -> Result<SourceTile, BuildError>;
}

/// One tile's pixels.
#[derive(Debug, Clone)]
pub struct SourceTile {
    /// The picture.
    pub image: RgbImage,
    /// Fraction of its pixels that are nodata, 0..=1.
    pub nodata_fraction: f32,
}

/// How [`encode_plan`] runs.
#[derive(Debug, Clone, PartialEq)]
pub struct EncodeOptions {
    /// Tiles per encoder call and per journal record.
    pub batch: usize,
    /// A tile with more than this fraction of nodata pixels is skipped (and counted).
    pub max_nodata: f32,
    /// Stop (as if killed) after this many batches of this run: for tests of resuming.
    pub stop_after_batches: Option<usize>,
}

impl Default for EncodeOptions {
    fn default() -> Self {
        EncodeOptions {
            batch: 16,
            max_nodata: 0.5,
            stop_after_batches: None,
        }
    }
}

/// Where a build stands, reported after every batch.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Progress {
    /// Tiles done (encoded or skipped), including those resumed from the journal.
    pub done: usize,
    /// Tiles in the plan.
    pub total: usize,
    /// Tiles skipped as nodata so far.
    pub skipped: usize,
    /// Tiles found done in the journal when this run started.
    pub resumed: usize,
    /// Time this run has spent.
    pub elapsed: Duration,
}

impl Progress {
    /// Tiles per second in this run.
    pub fn rate(&self) -> f64 {
        (self.done - self.resumed) as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    /// Estimated time to finish at this run's rate.
    pub fn eta(&self) -> Option<Duration> {
        let rate = self.rate();
        (rate > 0.0).then(|| Duration::from_secs_f64((self.total - self.done) as f64 / rate))
    }
}

/// Which of a plan's tiles were encoded.
#[derive(Debug, Clone, PartialEq)]
pub struct EncodedTiles {
    /// Plan indices of the tiles that were encoded, ascending. Their embeddings are in the journal
    /// ([`read_rows`](super::journal::read_rows) with [`EncodedTiles::journal`]), not in memory.
    pub kept: Vec<u32>,
    /// The journal's header.
    pub journal: JournalHeader,
    /// Embedding size.
    pub dim: usize,
    /// Tiles skipped as mostly nodata.
    pub skipped_nodata: usize,
    /// Tiles taken from the journal of an earlier, interrupted run.
    pub resumed: usize,
}

/// How [`encode_plan`] ended.
#[derive(Debug, Clone, PartialEq)]
pub enum EncodeOutcome {
    /// Every tile is done.
    Complete(EncodedTiles),
    /// [`EncodeOptions::stop_after_batches`] stopped the run; the journal holds `done` tiles.
    Stopped {
        /// Tiles done.
        done: usize,
        /// Tiles in the plan.
        total: usize,
    },
}

/// Encodes every tile of `plan` read from `source`, resuming from (and appending to) the journal at
/// `journal_path`, which must belong to the same `fingerprint` (else it is started over).
///
/// The journal is left in place: the caller removes it once the cache is safely written.
pub fn encode_plan(
    plan: &TilingPlan,
    fingerprint: &str,
    source: &mut dyn TileSource,
    encoder: &mut dyn Encoder,
    journal_path: &Path,
    options: &EncodeOptions,
    progress: &mut dyn FnMut(&Progress),
) -> Result<EncodeOutcome, BuildError> {
    let dim = encoder.manifest().output.dim as usize;
    let header = JournalHeader {
        version: 1,
        fingerprint: fingerprint.to_owned(),
        tiles: plan.len() as u64,
        dim: dim as u32,
    };
    let (mut journal, state) = Journal::open(journal_path, &header)?;
    let resumed = state.done;
    let mut kept = state.kept;
    let mut skipped = resumed - kept.len();
    let start = Instant::now();
    let batch = options.batch.max(1);
    let mut batches = 0;
    let mut first = resumed;
    while first < plan.len() {
        if options.stop_after_batches == Some(batches) {
            return Ok(EncodeOutcome::Stopped {
                done: first,
                total: plan.len(),
            });
        }
        let end = (first + batch).min(plan.len());
        let mut images = Vec::with_capacity(end - first);
        let mut flags = Vec::with_capacity(end - first);
        for index in first..end {
            let tile = source.read_tile(&plan.tiles[index])?;
            let keep = tile.nodata_fraction <= options.max_nodata;
            flags.push(keep);
            if keep {
                images.push(tile.image);
                kept.push(index as u32);
            } else {
                skipped += 1;
            }
        }
        let encoded = encoder.encode_batch(&images).map_err(|source| {
            let t = &plan.tiles[first];
            BuildError::Encode {
                index: first,
                scale: t.scale,
                x0: t.x0,
                y0: t.y0,
                source,
            }
        })?;
        let batch_values: Vec<f32> = encoded.into_iter().flatten().collect();
        journal.append(first, &flags, &batch_values)?;
        first = end;
        batches += 1;
        progress(&Progress {
            done: first,
            total: plan.len(),
            skipped,
            resumed,
            elapsed: start.elapsed(),
        });
    }
    Ok(EncodeOutcome::Complete(EncodedTiles {
        kept,
        journal: header,
        dim,
        skipped_nodata: skipped,
        resumed,
    }))
}
