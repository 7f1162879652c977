//! The whole build: orthophoto → plan → embeddings (resumable) → cache file.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::Serialize;
use sha2::{Digest, Sha256};

use super::encode::{encode_plan, EncodeOptions, EncodeOutcome, EncodedTiles, Progress};
use super::error::BuildError;
use super::journal::read_rows;
use super::ortho::{OrthoOptions, Orthophoto};
use super::plan::{TilingPlan, TilingSpec};
use vimgeo_onboard::encoder::Encoder;
use vimgeo_onboard::matching::{CacheMeta, EmbeddingDtype, Tile, TileCacheWriter};
use vimgeo_onboard::util::hex;

/// Everything a build needs besides the encoder: resolved values.
#[derive(Debug, Clone, PartialEq)]
pub struct CacheBuildConfig {
    /// The orthophoto.
    pub ortho: PathBuf,
    /// How to read it.
    pub ortho_options: OrthoOptions,
    /// Footprints and stride.
    pub spec: TilingSpec,
    /// The cache file to write; its journal is `<out>.partial`.
    pub out: PathBuf,
    /// How the cache stores embeddings.
    pub dtype: EmbeddingDtype,
    /// Batching, nodata threshold, early stop.
    pub encode: EncodeOptions,
}

/// What a finished build did.
#[derive(Debug, Clone, PartialEq)]
pub struct BuildReport {
    /// The cache written.
    pub out: PathBuf,
    /// Tiles in the plan.
    pub planned: usize,
    /// Tiles in the cache.
    pub written: usize,
    /// Tiles skipped as mostly nodata.
    pub skipped_nodata: usize,
    /// Tiles taken from an interrupted earlier run.
    pub resumed: usize,
    /// Tiles per scale in the plan.
    pub per_scale: Vec<usize>,
    /// Footprint of each scale, metres.
    pub footprints_m: Vec<f64>,
    /// Time this run took.
    pub elapsed: Duration,
}

/// How [`build_cache`] ended.
#[derive(Debug, Clone, PartialEq)]
pub enum BuildOutcome {
    /// The cache is written and the journal removed.
    Written(BuildReport),
    /// Stopped early ([`EncodeOptions::stop_after_batches`]); the journal holds `done` of `total` tiles.
    Stopped {
        /// Tiles done.
        done: usize,
        /// Tiles in the plan.
        total: usize,
    },
}

/// The journal of a build writing `out`: `<out>.partial`.
pub fn journal_path(out: &Path) -> PathBuf {
    let mut name = out.as_os_str().to_owned();
    name.push(".partial");
    PathBuf::from(name)
}

/// What decides a cache's content, hashed into the journal's fingerprint.
#[derive(Serialize)]
struct Fingerprint<'a> {
    tool: &'a str,
    imagery_sha256: &'a str,
    model_sha256: &'a str,
    engine: &'a str,
    plan_sha256: &'a str,
    bands: [usize; 3],
    crs: &'a str,
    stretch: &'a super::ortho::Stretch,
    max_nodata: f32,
    max_read_px: u32,
}

/// Builds the cache `config.out` from `config.ortho` with `encoder`, resuming an interrupted build of the
/// same inputs. `progress` is called after every batch.
pub fn build_cache(
    config: &CacheBuildConfig,
    encoder: &mut dyn Encoder,
    progress: &mut dyn FnMut(&Progress),
) -> Result<BuildOutcome, BuildError> {
    let start = Instant::now();
    let mut ortho = Orthophoto::open(&config.ortho, &config.ortho_options)?;
    let input = &encoder.manifest().input;
    let max_read_px = 4 * input.width.max(input.height);
    ortho.set_max_read_px(max_read_px);
    let plan = TilingPlan::new(
        ortho.grid(),
        &config.spec,
        &config.ortho.display().to_string(),
    )?;
    log::info!("{}: {plan}", config.ortho.display());
    let imagery_sha256 = ortho.sha256()?;
    let model_sha256 = encoder.manifest().onnx_sha256.clone();
    let fingerprint = Fingerprint {
        tool: vimgeo_onboard::VERSION,
        imagery_sha256: &imagery_sha256,
        model_sha256: &model_sha256,
        // Engines agree within a tolerance, not bit for bit: a resumed build keeps the engine it began with.
        engine: encoder.engine_name(),
        plan_sha256: &plan.sha256(),
        bands: ortho.bands(),
        crs: ortho.georef().crs(),
        stretch: ortho.stretch(),
        max_nodata: config.encode.max_nodata,
        max_read_px,
    };
    let fingerprint = hex(&Sha256::digest(
        serde_json::to_vec(&fingerprint).expect("a fingerprint always serialises"),
    ));
    let journal = journal_path(&config.out);
    let encoded = match encode_plan(
        &plan,
        &fingerprint,
        &mut ortho,
        encoder,
        &journal,
        &config.encode,
        progress,
    )? {
        EncodeOutcome::Complete(encoded) => encoded,
        EncodeOutcome::Stopped { done, total } => return Ok(BuildOutcome::Stopped { done, total }),
    };
    if encoded.kept.is_empty() {
        return Err(BuildError::AllNodata {
            path: config.ortho.clone(),
            tiles: plan.len(),
        });
    }
    let mut geometry = Vec::with_capacity(encoded.kept.len());
    for &index in &encoded.kept {
        let tile = &plan.tiles[index as usize];
        let (x, y) = tile.centre_px();
        let (lat, lon) =
            ortho
                .georef()
                .pixel_to_wgs84(x, y)
                .map_err(|message| BuildError::Ortho {
                    path: config.ortho.clone(),
                    message,
                })?;
        geometry.push((lat, lon, tile.ground_size_m, tile.scale));
    }
    write(
        config,
        &ortho,
        &plan,
        &imagery_sha256,
        encoder,
        &journal,
        &encoded,
        &geometry,
    )?;
    std::fs::remove_file(&journal).map_err(|source| BuildError::Io {
        path: journal.clone(),
        source,
    })?;
    Ok(BuildOutcome::Written(BuildReport {
        out: config.out.clone(),
        planned: plan.len(),
        written: encoded.kept.len(),
        skipped_nodata: encoded.skipped_nodata,
        resumed: encoded.resumed,
        per_scale: plan.tiles_per_scale(),
        footprints_m: plan.spec.footprints_m.clone(),
        elapsed: start.elapsed(),
    }))
}

/// Writes the cache file through the cache layer (atomically: a temporary file renamed into place). Each tile's `scale` is its scale's nominal footprint
/// (metres), one of the metadata's `scales`.
#[allow(clippy::too_many_arguments)]
fn write(
    config: &CacheBuildConfig,
    ortho: &Orthophoto,
    plan: &TilingPlan,
    imagery_sha256: &str,
    encoder: &dyn Encoder,
    journal: &Path,
    encoded: &EncodedTiles,
    geometry: &[(f64, f64, f64, u16)],
) -> Result<(), BuildError> {
    let skipped_nodata = encoded.skipped_nodata;
    let manifest = encoder.manifest();
    let mut meta = CacheMeta::new(&manifest.name, &manifest.onnx_sha256);
    meta.imagery_sha256 = imagery_sha256.to_owned();
    meta.imagery_path = config.ortho.display().to_string();
    meta.crs = ortho.georef().crs().to_owned();
    meta.gsd_m = ortho.grid().gsd_m();
    meta.tile_px = plan.tiles.first().map_or(0, |t| t.width);
    meta.stride = plan.spec.stride;
    meta.scales = plan.spec.footprints_m.clone();
    meta.stretch = serde_json::to_value(ortho.stretch()).expect("a stretch always serialises");
    let mut px_per_scale = vec![0u32; plan.spec.footprints_m.len()];
    for t in &plan.tiles {
        px_per_scale[usize::from(t.scale)] = t.width;
    }
    let extra = [
        ("tile_px_per_scale", serde_json::to_string(&px_per_scale)),
        ("bands", serde_json::to_string(&ortho.bands())),
        ("imagery_data_type", Ok(ortho.data_type().to_owned())),
        (
            "imagery_size_px",
            serde_json::to_string(&[plan.grid.width, plan.grid.height]),
        ),
        ("planned_tiles", Ok(plan.len().to_string())),
        ("skipped_nodata", Ok(skipped_nodata.to_string())),
        ("max_nodata", Ok(config.encode.max_nodata.to_string())),
        ("plan_sha256", Ok(plan.sha256())),
    ];
    for (k, v) in extra {
        meta.extra
            .insert(k.to_owned(), v.expect("plain values always serialise"));
    }
    let tiles: Vec<Tile> = geometry
        .iter()
        .map(|&(lat, lon, ground, scale)| Tile {
            lat,
            lon,
            ground_size_m: ground as f32,
            scale: plan.spec.footprints_m[usize::from(scale)] as f32,
        })
        .collect();
    let dtype = config.dtype;
    let dim = manifest.output.dim as usize;
    // Stream the embeddings from the journal into the cache: only the tile indices live in memory.
    let mut writer = TileCacheWriter::create(&config.out, &meta, &tiles, dim, dtype)?;
    read_rows(journal, &encoded.journal, &mut |rows| {
        writer.push_rows(rows)?;
        Ok(())
    })?;
    writer.finish()?;
    Ok(())
}
