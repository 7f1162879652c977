//! The training-pair generator: north-up satellite tiles cut from orthophotos, and rectified drone views of
//! them rendered with the simulated camera, written in University-1652's layout (so `models/vimgeo`'s
//! `TrainPairs` and `GalleryFolder` read it unchanged):
//!
//! ```text
//! OUT/pairs.json                     settings, per-orthophoto regions (pixel rects + projected bounds), counts
//! OUT/samples.csv                    one row per image: SAMPLES_HEADER
//! OUT/train/satellite/<id>/<id>.png  a training tile; OUT/train/drone/<id>/<id>-<k>.png its views
//! OUT/val/satellite/<id>/<id>.png    the validation gallery; OUT/val/drone/<id>/<id>-<k>.png the queries,
//!                                    <id> = the gallery tile whose centre is nearest the view's true centre
//! ```
//!
//! In `samples.csv`, a drone row's `true_lat,true_lon` is the ground point the camera's optical axis truly
//! sees (where the rectified view is centred when there is no pose error), `vehicle_*` where the drone was,
//! `height_m`/`*_deg` its true pose and `err_*` the errors given to the rectification; a satellite row has
//! the tile centre as its true point and no pose.
//!
//! Per orthophoto ([`PairsSource`]):
//!
//! - Tiles: `tile_src_px` map pixels square (so `tile_src_px x gsd` metres on the ground), on a grid whose
//!   step (stride) is half a tile, numbered from the image's top-left (`<stem>-r<row>-c<col>`). A tile's
//!   image is [`OrthoMap::patch`] at its centre: true north up, `size_px` square.
//! - Split: a validation band along the end of the image's longer axis (`val_fraction` of it), a margin of
//!   one tile, and the training region before it; a `train_only` orthophoto is all training region.
//!   The validation gallery is every tile inside the validation band. Tiles that get drone views (all
//!   training tiles, and the validation query tiles) lie half a tile inside their region, so that their
//!   views fit in it too.
//! - A drone view of a tile: the camera's optical axis meets the ground uniformly inside the tile's central
//!   stride x stride square; the height puts the camera's short-side footprint at 1.5-2.5 tiles; roll and
//!   pitch within ±15°, any yaw; rendered ([`render_with`]) with a random [`Photometric`] change, then
//!   rectified ([`rectify`]) with pose errors (roll/pitch σ 2°, heading σ 3°, height ±10 % uniform) into
//!   `size_px` covering the tile's ground size. A view the rectifier refuses, or whose rectified footprint
//!   (its corners traced back to the true ground) leaves the tile's region, is redrawn, and counted.
//!
//! Reproducible: every tile draws from its own ChaCha8 stream seeded from the seed, the orthophoto's index
//! and the tile's row and column, so the output does not depend on rayon's scheduling (tiles run in
//! parallel). Written into `OUT.partial`, renamed to `OUT` at the end.
//!
//! [`Photometric`]: crate::sim::photometric::Photometric

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use image::RgbImage;
use nalgebra::{Point2, Vector3};
use rand::{Rng, RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::StandardNormal;
use rayon::prelude::*;
use serde::Serialize;

use crate::sim::appearance::{Appearance, AppearancePreset};
use crate::sim::photometric::PhotometricRange;
use crate::sim::render::{render_with, OrthoMap, RenderError};
use vimgeo_onboard::geodesy::{Geodetic, LocalFrame};
use vimgeo_onboard::rectify::{
    rectify, CameraModel, Pose, RectifyError, RectifyLimits, RectifyTarget,
};

/// The `samples.csv` header.
pub const SAMPLES_HEADER: &str = "split,kind,id,file,ortho,tile_lat,tile_lon,ground_size_m,true_lat,true_lon,\
vehicle_lat,vehicle_lon,height_m,roll_deg,pitch_deg,yaw_deg,err_roll_deg,err_pitch_deg,err_yaw_deg,err_height_frac";

/// Largest roll and pitch of a drone view, degrees.
const MAX_ROLL_PITCH_DEG: f64 = 15.0;
/// Camera footprint (short side) as a multiple of the tile's ground size.
const FOOTPRINT_FACTOR: [f64; 2] = [1.5, 2.5];
/// Attitude (roll, pitch) error standard deviation, degrees.
const ATTITUDE_SIGMA_DEG: f64 = 2.0;
/// Heading error standard deviation, degrees.
const HEADING_SIGMA_DEG: f64 = 3.0;
/// Height error: uniform within ± this fraction.
const HEIGHT_ERROR_FRAC: f64 = 0.1;

/// One orthophoto to cut pairs from.
#[derive(Debug, Clone)]
pub struct PairsSource {
    /// Its name in tile ids (the file stem); unique across sources.
    pub name: String,
    /// Where it came from, as recorded in `pairs.json`.
    pub path: String,
    /// The map.
    pub map: OrthoMap,
    /// All training region, no validation band (for an orthophoto too small to split).
    pub train_only: bool,
}

/// The generator's settings.
#[derive(Debug, Clone, PartialEq)]
pub struct PairsConfig {
    /// Side of every written image, pixels.
    pub size_px: u32,
    /// Side of a tile in orthophoto pixels.
    pub tile_src_px: u32,
    /// Drone views per tile.
    pub views: u32,
    /// Fraction of each orthophoto's longer axis (after the margin) in the validation band.
    pub val_fraction: f64,
    /// The seed of everything random.
    pub seed: u64,
    /// Photometric changes of the drone views.
    pub photometric: PhotometricRange,
    /// "Another day": an appearance change of this strength drawn for every drone view
    /// ([`crate::sim::appearance`]; its world part on the rendered view, then its camera part).
    pub appearance: AppearancePreset,
    /// Redraws allowed per view before the run fails.
    pub max_redraws: u32,
    /// The camera's name, recorded in `pairs.json`.
    pub camera_name: String,
}

impl Default for PairsConfig {
    fn default() -> Self {
        PairsConfig {
            size_px: 128,
            tile_src_px: 192,
            views: 4,
            val_fraction: 0.25,
            seed: 0,
            photometric: PhotometricRange::default(),
            appearance: AppearancePreset::None,
            max_redraws: 100,
            camera_name: String::new(),
        }
    }
}

/// Why views were redrawn.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Redraws {
    /// The rectifier refused the (erroneous) pose as too oblique.
    pub tilted: u64,
    /// The rectifier saw the horizon.
    pub horizon: u64,
    /// Too little of the rectified view was inside the frame.
    pub coverage: u64,
    /// Any other refusal.
    pub other: u64,
    /// The rectified footprint left the tile's region.
    pub outside_region: u64,
}

impl Redraws {
    fn add(&mut self, other: &Redraws) {
        self.tilted += other.tilted;
        self.horizon += other.horizon;
        self.coverage += other.coverage;
        self.other += other.other;
        self.outside_region += other.outside_region;
    }

    /// All redraws.
    pub fn total(&self) -> u64 {
        self.tilted + self.horizon + self.coverage + self.other + self.outside_region
    }
}

/// What one orthophoto gave.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct OrthoCounts {
    /// Training tiles (each with its views).
    pub train_tiles: u64,
    /// Training drone views.
    pub train_views: u64,
    /// Validation gallery tiles.
    pub val_tiles: u64,
    /// Validation drone views (queries).
    pub val_views: u64,
    /// Redrawn views.
    pub redraws: Redraws,
}

impl OrthoCounts {
    fn add(&mut self, other: &OrthoCounts) {
        self.train_tiles += other.train_tiles;
        self.train_views += other.train_views;
        self.val_tiles += other.val_tiles;
        self.val_views += other.val_views;
        self.redraws.add(&other.redraws);
    }
}

/// What a run wrote.
#[derive(Debug, Clone, PartialEq)]
pub struct PairsReport {
    /// The folder.
    pub out: PathBuf,
    /// Per orthophoto, in the order given.
    pub per_ortho: Vec<(String, OrthoCounts)>,
    /// All orthophotos together.
    pub total: OrthoCounts,
}

/// Why a pair folder cannot be generated.
#[derive(Debug, thiserror::Error)]
pub enum PairsError {
    /// A setting is out of range.
    #[error("{field}: {message}")]
    Config {
        /// The setting (as its command-line flag).
        field: &'static str,
        /// What is wrong.
        message: String,
    },
    /// No orthophoto was given.
    #[error("no orthophoto given")]
    NoSources,
    /// Two orthophotos share a name, so their tile ids would collide.
    #[error("two orthophotos are named {0:?} (the file stem names their tiles): rename one")]
    DuplicateName(String),
    /// An orthophoto cannot hold a validation band, a one-tile margin and a training region.
    #[error(
        "{name} is {width}x{height} px: too small to split into a training region and a {val_fraction} \
         validation band separated by a one-tile margin with {tile_src_px} px tiles (the {region} region \
         holds no tile that its drone views fit around; each region needs about 2.5 tiles along the split). \
         Mark it training-only (`--ortho PATH@train`), or use smaller tiles (--tile-src-px) or another \
         --val-fraction"
    )]
    TooSmall {
        /// The orthophoto.
        name: String,
        /// Width, pixels.
        width: u32,
        /// Height, pixels.
        height: u32,
        /// Tile side, pixels.
        tile_src_px: u32,
        /// The validation fraction.
        val_fraction: f64,
        /// `training` or `validation`.
        region: &'static str,
    },
    /// The output folder exists.
    #[error("{0} exists: remove it or choose another --out")]
    Exists(PathBuf),
    /// Writing failed.
    #[error("{path}: {source}")]
    Io {
        /// The file or folder.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// Encoding an image failed.
    #[error("{path}: {source}")]
    Image {
        /// The file.
        path: PathBuf,
        /// The error.
        source: image::ImageError,
    },
    /// Rendering or cutting a tile failed.
    #[error("{what}: {source}")]
    Render {
        /// Which tile or view.
        what: String,
        /// The error.
        source: Box<RenderError>,
    },
    /// A view was redrawn too often.
    #[error(
        "{id}: no acceptable drone view after {redraws} draws (last: {last}); the tile's surroundings may \
         be too close to the region's edge"
    )]
    TooManyRedraws {
        /// The tile.
        id: String,
        /// Draws made.
        redraws: u32,
        /// Why the last draw was refused.
        last: String,
    },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> PairsError + '_ {
    move |source| PairsError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// A rectangle in map pixel (GDAL) coordinates: `[x0, y0, x1, y1]`.
type Rect = [f64; 4];

fn inside(r: &Rect, x: f64, y: f64) -> bool {
    x >= r[0] && x <= r[2] && y >= r[1] && y <= r[3]
}

fn shrink(r: &Rect, by: f64) -> Rect {
    [r[0] + by, r[1] + by, r[2] - by, r[3] - by]
}

/// The split of one orthophoto.
#[derive(Debug, Clone)]
struct Layout {
    tile: f64,
    stride: f64,
    rows: u32,
    cols: u32,
    train: Rect,
    val: Option<Rect>,
    /// `rows` (a band of rows at the bottom) or `cols` (at the right).
    axis: &'static str,
}

impl Layout {
    fn new(source: &PairsSource, config: &PairsConfig) -> Result<Layout, PairsError> {
        let (w, h) = source.map.dimensions();
        let tile = f64::from(config.tile_src_px);
        let stride = tile / 2.0;
        let (wf, hf) = (f64::from(w), f64::from(h));
        let count = |len: f64| {
            if len < tile {
                0
            } else {
                ((len - tile) / stride).floor() as u32 + 1
            }
        };
        let full: Rect = [0.0, 0.0, wf, hf];
        let axis = if hf >= wf { "rows" } else { "cols" };
        let (train, val) = if source.train_only {
            (full, None)
        } else {
            let length = wf.max(hf);
            let usable = length - tile;
            let val_len = (config.val_fraction * usable).floor();
            let train_len = usable - val_len;
            if axis == "rows" {
                (
                    [0.0, 0.0, wf, train_len],
                    Some([0.0, train_len + tile, wf, hf]),
                )
            } else {
                (
                    [0.0, 0.0, train_len, hf],
                    Some([train_len + tile, 0.0, wf, hf]),
                )
            }
        };
        let layout = Layout {
            tile,
            stride,
            rows: count(hf),
            cols: count(wf),
            train,
            val,
            axis,
        };
        let too_small = |region| PairsError::TooSmall {
            name: source.name.clone(),
            width: w,
            height: h,
            tile_src_px: config.tile_src_px,
            val_fraction: config.val_fraction,
            region,
        };
        if layout.tiles_in(&shrink(&layout.train, stride)).is_empty() {
            if source.train_only {
                return Err(PairsError::Config {
                    field: "--tile-src-px",
                    message: format!(
                        "{} is {w}x{h} px: no {} px tile fits with room for its drone views (it needs \
                         at least 2 tiles each way)",
                        source.name, config.tile_src_px
                    ),
                });
            }
            return Err(too_small("training"));
        }
        if let Some(val) = &layout.val {
            if layout.tiles_in(&shrink(val, stride)).is_empty() {
                return Err(too_small("validation"));
            }
        }
        Ok(layout)
    }

    fn window(&self, row: u32, col: u32) -> Rect {
        let (x0, y0) = (f64::from(col) * self.stride, f64::from(row) * self.stride);
        [x0, y0, x0 + self.tile, y0 + self.tile]
    }

    fn centre(&self, row: u32, col: u32) -> (f64, f64) {
        let r = self.window(row, col);
        ((r[0] + r[2]) / 2.0, (r[1] + r[3]) / 2.0)
    }

    /// The grid's tiles whose window lies inside `region`, row-major.
    fn tiles_in(&self, region: &Rect) -> Vec<(u32, u32)> {
        let mut out = Vec::new();
        for row in 0..self.rows {
            for col in 0..self.cols {
                let r = self.window(row, col);
                if inside(region, r[0], r[1]) && inside(region, r[2], r[3]) {
                    out.push((row, col));
                }
            }
        }
        out
    }
}

/// One unit of work: a tile, its satellite image, and its drone views if it gets any.
#[derive(Debug, Clone)]
struct Task {
    ortho: usize,
    split: Split,
    row: u32,
    col: u32,
    views: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Split {
    Train,
    Val,
}

impl Split {
    fn name(self) -> &'static str {
        match self {
            Split::Train => "train",
            Split::Val => "val",
        }
    }
}

/// An accepted drone view.
#[derive(Debug, Clone)]
struct View {
    k: u32,
    image: RgbImage,
    true_lat_lon: (f64, f64),
    true_px: (f64, f64),
    vehicle: (f64, f64),
    height_m: f64,
    rpy_deg: [f64; 3],
    err_rpy_deg: [f64; 3],
    err_height_frac: f64,
}

struct TaskOutput {
    task: Task,
    tile_lat_lon: (f64, f64),
    views: Vec<View>,
    redraws: Redraws,
}

fn tile_id(name: &str, row: u32, col: u32) -> String {
    format!("{name}-r{row:03}-c{col:03}")
}

/// Generates the pair folder `out` (see the module's documentation).
pub fn generate_pairs(
    sources: &[PairsSource],
    camera: &CameraModel,
    config: &PairsConfig,
    out: &Path,
) -> Result<PairsReport, PairsError> {
    check_config(config)?;
    if sources.is_empty() {
        return Err(PairsError::NoSources);
    }
    let mut names = std::collections::BTreeSet::new();
    for s in sources {
        let plain = |c: char| c.is_ascii_alphanumeric() || "_.-".contains(c);
        if s.name.is_empty() || !s.name.chars().all(plain) {
            return Err(PairsError::Config {
                field: "--ortho",
                message: format!(
                    "{:?} (from {}) cannot name tiles: use letters, digits, `_`, `.` and `-` only",
                    s.name, s.path
                ),
            });
        }
        if !names.insert(s.name.as_str()) {
            return Err(PairsError::DuplicateName(s.name.clone()));
        }
    }
    if out.exists() {
        return Err(PairsError::Exists(out.to_path_buf()));
    }
    let layouts = sources
        .iter()
        .map(|s| Layout::new(s, config))
        .collect::<Result<Vec<_>, _>>()?;

    let partial = partial_path(out);
    if partial.exists() {
        std::fs::remove_dir_all(&partial).map_err(io(&partial))?;
    }
    for dir in [
        "train/satellite",
        "train/drone",
        "val/satellite",
        "val/drone",
        "val/.staging",
    ] {
        let d = partial.join(dir);
        std::fs::create_dir_all(&d).map_err(io(&d))?;
    }

    let mut tasks = Vec::new();
    for (o, layout) in layouts.iter().enumerate() {
        for (row, col) in layout.tiles_in(&shrink(&layout.train, layout.stride)) {
            tasks.push(Task {
                ortho: o,
                split: Split::Train,
                row,
                col,
                views: true,
            });
        }
        if let Some(val) = &layout.val {
            let queries = layout.tiles_in(&shrink(val, layout.stride));
            for (row, col) in layout.tiles_in(val) {
                tasks.push(Task {
                    ortho: o,
                    split: Split::Val,
                    row,
                    col,
                    views: queries.contains(&(row, col)),
                });
            }
        }
    }

    let outputs = tasks
        .par_iter()
        .map(|task| run_task(task, sources, &layouts, camera, config, &partial))
        .collect::<Result<Vec<_>, _>>()?;

    let report = finish(sources, &layouts, config, &partial, outputs, out)?;
    std::fs::remove_dir(partial.join("val/.staging")).map_err(io(&partial))?;
    std::fs::rename(&partial, out).map_err(io(out))?;
    Ok(report)
}

/// `OUT.partial`.
pub fn partial_path(out: &Path) -> PathBuf {
    let mut name = out.file_name().unwrap_or_default().to_os_string();
    name.push(".partial");
    out.with_file_name(name)
}

fn check_config(config: &PairsConfig) -> Result<(), PairsError> {
    let bad = |field, message: String| Err(PairsError::Config { field, message });
    if config.size_px < 8 || config.size_px > 4096 {
        return bad(
            "--size",
            format!("{} px is not in 8..=4096", config.size_px),
        );
    }
    if config.tile_src_px < 8 {
        return bad(
            "--tile-src-px",
            format!("{} px is under 8", config.tile_src_px),
        );
    }
    if config.views == 0 || config.views > 1000 {
        return bad("--views", format!("{} is not in 1..=1000", config.views));
    }
    if !(config.val_fraction > 0.0 && config.val_fraction < 1.0) {
        return bad(
            "--val-fraction",
            format!("{} is not in (0, 1)", config.val_fraction),
        );
    }
    Ok(())
}

/// A tile's own random stream: SplitMix64 of the seed, orthophoto and tile.
fn tile_rng(seed: u64, ortho: usize, row: u32, col: u32) -> ChaCha8Rng {
    let mut z = seed
        ^ (ortho as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15)
        ^ (u64::from(row) << 32 | u64::from(col)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    ChaCha8Rng::seed_from_u64(z ^ (z >> 31))
}

/// A standard normal draw.
fn normal(rng: &mut impl Rng) -> f64 {
    rng.sample(StandardNormal)
}

fn save_png(image: &RgbImage, path: &Path) -> Result<(), PairsError> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(io(dir))?;
    }
    image
        .save_with_format(path, image::ImageFormat::Png)
        .map_err(|source| PairsError::Image {
            path: path.to_path_buf(),
            source,
        })
}

fn run_task(
    task: &Task,
    sources: &[PairsSource],
    layouts: &[Layout],
    camera: &CameraModel,
    config: &PairsConfig,
    partial: &Path,
) -> Result<TaskOutput, PairsError> {
    let source = &sources[task.ortho];
    let layout = &layouts[task.ortho];
    let map = &source.map;
    let id = tile_id(&source.name, task.row, task.col);
    let render_err = |what: String| {
        move |source| PairsError::Render {
            what,
            source: Box::new(source),
        }
    };
    let (cx, cy) = layout.centre(task.row, task.col);
    let tile_lat_lon = map
        .pixel_to_lat_lon(cx, cy)
        .map_err(render_err(id.clone()))?;
    let tile_m = layout.tile * map.gsd_m();
    let sat = map
        .patch(tile_lat_lon, tile_m, config.size_px)
        .map_err(render_err(id.clone()))?;
    save_png(
        &sat.image,
        &partial
            .join(task.split.name())
            .join("satellite")
            .join(&id)
            .join(format!("{id}.png")),
    )?;
    let mut output = TaskOutput {
        task: task.clone(),
        tile_lat_lon,
        views: Vec::new(),
        redraws: Redraws::default(),
    };
    if !task.views {
        return Ok(output);
    }
    let region = match task.split {
        Split::Train => layout.train,
        Split::Val => layout
            .val
            .expect("validation tiles come from a validation band"),
    };
    let mut rng = tile_rng(config.seed, task.ortho, task.row, task.col);
    for k in 0..config.views {
        let mut draws = 0;
        let view = loop {
            draws += 1;
            match draw_view(
                map,
                camera,
                config,
                (cx, cy),
                layout,
                &region,
                &mut rng,
                &id,
            )? {
                Ok(view) => break view,
                Err(why) => {
                    match why {
                        Refusal::Rectify(RectifyError::Tilted { .. }) => output.redraws.tilted += 1,
                        Refusal::Rectify(RectifyError::Horizon { .. }) => {
                            output.redraws.horizon += 1
                        }
                        Refusal::Rectify(RectifyError::Coverage { .. }) => {
                            output.redraws.coverage += 1
                        }
                        Refusal::Rectify(_) => output.redraws.other += 1,
                        Refusal::OutsideRegion => output.redraws.outside_region += 1,
                    }
                    if draws >= config.max_redraws {
                        return Err(PairsError::TooManyRedraws {
                            id,
                            redraws: draws,
                            last: why.to_string(),
                        });
                    }
                }
            }
        };
        let view = View { k, ..view };
        let path = match task.split {
            Split::Train => partial
                .join("train/drone")
                .join(&id)
                .join(format!("{id}-{k}.png")),
            Split::Val => partial.join("val/.staging").join(format!("{id}-{k}.png")),
        };
        save_png(&view.image, &path)?;
        output.views.push(View {
            image: RgbImage::new(0, 0),
            ..view
        });
    }
    Ok(output)
}

/// Why a drawn view was not used.
#[derive(Debug)]
enum Refusal {
    Rectify(RectifyError),
    OutsideRegion,
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refusal::Rectify(e) => write!(f, "{e}"),
            Refusal::OutsideRegion => write!(f, "the rectified footprint leaves the tile's region"),
        }
    }
}

/// Draws one drone view of the tile centred at map pixel `centre`; `Ok(Err(_))` when it must be redrawn.
#[allow(clippy::too_many_arguments)]
fn draw_view(
    map: &OrthoMap,
    camera: &CameraModel,
    config: &PairsConfig,
    centre: (f64, f64),
    layout: &Layout,
    region: &Rect,
    rng: &mut ChaCha8Rng,
    id: &str,
) -> Result<Result<View, Refusal>, PairsError> {
    let render_err = |source| PairsError::Render {
        what: format!("{id}: drone view"),
        source: Box::new(source),
    };
    let half = layout.stride / 2.0;
    let true_px = (
        centre.0 + rng.random_range(-half..=half),
        centre.1 + rng.random_range(-half..=half),
    );
    let ground = map
        .pixel_to_lat_lon(true_px.0, true_px.1)
        .map_err(render_err)?;
    let tile_m = layout.tile * map.gsd_m();
    let size = camera.image_size();
    let k = camera.intrinsics();
    // Short-side footprint at nadir: h · side / f.
    let per_height = (f64::from(size.width) / k.fx).min(f64::from(size.height) / k.fy);
    let factor = rng.random_range(FOOTPRINT_FACTOR[0]..=FOOTPRINT_FACTOR[1]);
    let height_m = factor * tile_m / per_height;
    let rpy_deg = [
        rng.random_range(-MAX_ROLL_PITCH_DEG..=MAX_ROLL_PITCH_DEG),
        rng.random_range(-MAX_ROLL_PITCH_DEG..=MAX_ROLL_PITCH_DEG),
        rng.random_range(-180.0..180.0),
    ];
    let pose = Pose::from_euler_deg(rpy_deg[0], rpy_deg[1], rpy_deg[2], height_m);
    let view = pose.view(camera);
    // Only a camera mounted far from nadir misses the ground within 15° of level.
    let Some(axis) = view.ground_point(&Vector3::z()) else {
        return Ok(Err(Refusal::Rectify(RectifyError::Horizon {
            elevation_deg: 0.0,
            tilt_deg: view.tilt().to_degrees(),
        })));
    };
    // The vehicle: where the optical axis' ground point is `axis` (north, east) ahead of it.
    let geodesy = |source| PairsError::Render {
        what: format!("{id}: drone view"),
        source: Box::new(RenderError::Geodesy {
            what: "vehicle position".into(),
            source,
        }),
    };
    let at_ground = LocalFrame::new(Geodetic::new(ground.0, ground.1, 0.0).map_err(geodesy)?)
        .map_err(geodesy)?;
    let v = at_ground.from_ned(&Vector3::new(-axis.x, -axis.y, 0.0));
    let vehicle = (v.lat_deg, v.lon_deg);
    let below = LocalFrame::new(Geodetic::new(vehicle.0, vehicle.1, 0.0).map_err(geodesy)?)
        .map_err(geodesy)?;
    let t = below.from_ned(&Vector3::new(axis.x, axis.y, 0.0));
    let true_lat_lon = (t.lat_deg, t.lon_deg);

    let photometric = config.photometric.sample(rng);
    let mut frame =
        render_with(map, camera, vehicle, &pose, &photometric, rng).map_err(render_err)?;
    if config.appearance != AppearancePreset::None {
        // The world part is a per-pixel colour change, so applying it to the rendered view equals rendering a
        // changed map. The misregistration is left out: a view's centre is already uniform within half a
        // stride of its tile's, a wider label noise than the presets' 1-4 m. Motion blur: 5 m/s in a random
        // direction over the exposure time.
        let a = Appearance::draw(config.appearance, rng);
        a.apply_world(&mut frame.image)
            .map_err(|e| render_err(RenderError::from(e)))?;
        let dir = rng.random_range(0.0..std::f32::consts::TAU);
        let blur_px = (5.0 * f64::from(a.exposure_time_s) * k.fx / height_m) as f32;
        a.apply_frame(&mut frame.image, blur_px, [dir.cos(), dir.sin()], rng)
            .map_err(|e| render_err(RenderError::from(e)))?;
    }

    let err_rpy_deg = [
        ATTITUDE_SIGMA_DEG * normal(rng),
        ATTITUDE_SIGMA_DEG * normal(rng),
        HEADING_SIGMA_DEG * normal(rng),
    ];
    let err_height_frac = rng.random_range(-HEIGHT_ERROR_FRAC..=HEIGHT_ERROR_FRAC);
    let believed = Pose::from_euler_deg(
        rpy_deg[0] + err_rpy_deg[0],
        rpy_deg[1] + err_rpy_deg[1],
        rpy_deg[2] + err_rpy_deg[2],
        height_m * (1.0 + err_height_frac),
    );
    let target = RectifyTarget {
        size_px: config.size_px,
        ground_size_m: tile_m,
    };
    let rectified = match rectify(
        &frame.image,
        camera,
        &believed,
        &target,
        &RectifyLimits::default(),
    ) {
        Ok(r) => r,
        Err(e) => return Ok(Err(Refusal::Rectify(e))),
    };

    // The rectified image's outer corners, traced back through the camera to the true ground.
    let believed_view = believed.view(camera);
    let [cn, ce] = rectified.centre_offset_ne_m;
    let half_out = f64::from(config.size_px) / 2.0 * rectified.gsd_m;
    for (sn, se) in [(1.0, -1.0), (1.0, 1.0), (-1.0, 1.0), (-1.0, -1.0)] {
        let p = Vector3::new(
            cn + sn * half_out,
            ce + se * half_out,
            believed_view.ground_down_m,
        );
        let Some(px) = camera.project(&believed_view.to_camera(&p)) else {
            return Ok(Err(Refusal::OutsideRegion));
        };
        let hit = camera
            .unproject(&Point2::new(px.x, px.y))
            .and_then(|ray| view.ground_point(&ray.into_inner()));
        let Some(g) = hit else {
            return Ok(Err(Refusal::OutsideRegion));
        };
        let ll = below.from_ned(&Vector3::new(g.x, g.y, 0.0));
        let (x, y) = map
            .lat_lon_to_pixel(ll.lat_deg, ll.lon_deg)
            .map_err(render_err)?;
        if !inside(region, x, y) {
            return Ok(Err(Refusal::OutsideRegion));
        }
    }
    Ok(Ok(View {
        k: 0,
        image: rectified.image,
        true_lat_lon,
        true_px,
        vehicle,
        height_m,
        rpy_deg,
        err_rpy_deg,
        err_height_frac,
    }))
}

#[derive(Serialize)]
struct RegionJson {
    /// `[x0, y0, x1, y1]`, GDAL pixel coordinates.
    pixels: Rect,
    /// `[min easting, min northing, max easting, max northing]` in the orthophoto's CRS.
    projected: [f64; 4],
}

#[derive(Serialize)]
struct OrthoJson<'a> {
    name: &'a str,
    path: &'a str,
    crs: String,
    width: u32,
    height: u32,
    gsd_m: f64,
    tile_ground_m: f64,
    stride_px: f64,
    train_only: bool,
    split_axis: &'a str,
    margin_px: f64,
    train: RegionJson,
    val: Option<RegionJson>,
    counts: &'a OrthoCounts,
}

#[derive(Serialize)]
struct SettingsJson<'a> {
    camera: &'a str,
    size_px: u32,
    tile_src_px: u32,
    views: u32,
    val_fraction: f64,
    seed: u64,
    max_roll_pitch_deg: f64,
    footprint_factor: [f64; 2],
    attitude_error_sigma_deg: f64,
    heading_error_sigma_deg: f64,
    height_error_frac: f64,
    photometric: PhotometricJson,
    appearance: &'static str,
}

/// [`PhotometricRange`], as recorded.
#[derive(Serialize)]
struct PhotometricJson {
    brightness: [f32; 2],
    contrast: [f32; 2],
    gamma: [f32; 2],
    colour_gain: [f32; 2],
    blur_sigma_px: [f32; 2],
    noise_sigma: [f32; 2],
    jpeg_quality: [u8; 2],
    jpeg_probability: f32,
}

#[derive(Serialize)]
struct PairsJson<'a> {
    format: &'static str,
    version: u32,
    vimgeo_version: &'static str,
    settings: SettingsJson<'a>,
    orthos: Vec<OrthoJson<'a>>,
    counts: &'a OrthoCounts,
}

fn region_json(map: &OrthoMap, r: &Rect) -> RegionJson {
    let t = map.geotransform();
    let (ea, na) = (t[0] + r[0] * t[1], t[3] + r[1] * t[5]);
    let (eb, nb) = (t[0] + r[2] * t[1], t[3] + r[3] * t[5]);
    RegionJson {
        pixels: *r,
        projected: [ea.min(eb), na.min(nb), ea.max(eb), na.max(nb)],
    }
}

/// A validation gallery tile: row, column, centre (map pixels), centre (lat, lon).
type GalleryTile = (u32, u32, (f64, f64), (f64, f64));

/// Names the validation queries, writes `samples.csv` and `pairs.json`.
fn finish(
    sources: &[PairsSource],
    layouts: &[Layout],
    config: &PairsConfig,
    partial: &Path,
    mut outputs: Vec<TaskOutput>,
    out: &Path,
) -> Result<PairsReport, PairsError> {
    outputs.sort_by_key(|o| (o.task.ortho, o.task.split, o.task.row, o.task.col));
    let mut counts = vec![OrthoCounts::default(); sources.len()];
    let mut csv = String::from(SAMPLES_HEADER);
    csv.push('\n');
    let f = |v: f64, d: usize| format!("{v:.d$}");
    // Validation gallery centres per orthophoto, for naming queries by their nearest tile.
    let mut gallery: BTreeMap<usize, Vec<GalleryTile>> = BTreeMap::new();
    for o in &outputs {
        if o.task.split == Split::Val {
            let c = layouts[o.task.ortho].centre(o.task.row, o.task.col);
            gallery.entry(o.task.ortho).or_default().push((
                o.task.row,
                o.task.col,
                c,
                o.tile_lat_lon,
            ));
        }
    }
    // Satellite rows first (per orthophoto, train then val), then drone rows.
    for o in &outputs {
        let source = &sources[o.task.ortho];
        let id = tile_id(&source.name, o.task.row, o.task.col);
        let tile_m = layouts[o.task.ortho].tile * source.map.gsd_m();
        let split = o.task.split.name();
        let (lat, lon) = o.tile_lat_lon;
        let _ = writeln!(
            csv,
            "{split},satellite,{id},{split}/satellite/{id}/{id}.png,{},{},{},{},{},{},,,,,,,,,,",
            source.name,
            f(lat, 9),
            f(lon, 9),
            f(tile_m, 4),
            f(lat, 9),
            f(lon, 9)
        );
        let c = &mut counts[o.task.ortho];
        match o.task.split {
            Split::Train => c.train_tiles += 1,
            Split::Val => c.val_tiles += 1,
        }
        c.redraws.add(&o.redraws);
    }
    let mut next_k: BTreeMap<String, u32> = BTreeMap::new();
    for o in &outputs {
        let source = &sources[o.task.ortho];
        let gen_id = tile_id(&source.name, o.task.row, o.task.col);
        let tile_m = layouts[o.task.ortho].tile * source.map.gsd_m();
        let split = o.task.split.name();
        for v in &o.views {
            let (id, tile_lat_lon, file) = match o.task.split {
                Split::Train => (
                    gen_id.clone(),
                    o.tile_lat_lon,
                    format!("train/drone/{gen_id}/{gen_id}-{}.png", v.k),
                ),
                Split::Val => {
                    let tiles = &gallery[&o.task.ortho];
                    let nearest = tiles
                        .iter()
                        .min_by(|a, b| {
                            let da = (a.2 .0 - v.true_px.0).hypot(a.2 .1 - v.true_px.1);
                            let db = (b.2 .0 - v.true_px.0).hypot(b.2 .1 - v.true_px.1);
                            da.total_cmp(&db)
                        })
                        .expect("a validation band has gallery tiles");
                    let id = tile_id(&source.name, nearest.0, nearest.1);
                    let k = next_k.entry(id.clone()).or_insert(0);
                    let file = format!("val/drone/{id}/{id}-{k}.png");
                    *k += 1;
                    let from = partial
                        .join("val/.staging")
                        .join(format!("{gen_id}-{}.png", v.k));
                    let to = partial.join(&file);
                    if let Some(dir) = to.parent() {
                        std::fs::create_dir_all(dir).map_err(io(dir))?;
                    }
                    std::fs::rename(&from, &to).map_err(io(&to))?;
                    (id, nearest.3, file)
                }
            };
            let _ = writeln!(
                csv,
                "{split},drone,{id},{file},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{}",
                source.name,
                f(tile_lat_lon.0, 9),
                f(tile_lat_lon.1, 9),
                f(tile_m, 4),
                f(v.true_lat_lon.0, 9),
                f(v.true_lat_lon.1, 9),
                f(v.vehicle.0, 9),
                f(v.vehicle.1, 9),
                f(v.height_m, 3),
                f(v.rpy_deg[0], 4),
                f(v.rpy_deg[1], 4),
                f(v.rpy_deg[2], 4),
                f(v.err_rpy_deg[0], 4),
                f(v.err_rpy_deg[1], 4),
                f(v.err_rpy_deg[2], 4),
                f(v.err_height_frac, 5)
            );
            let c = &mut counts[o.task.ortho];
            match o.task.split {
                Split::Train => c.train_views += 1,
                Split::Val => c.val_views += 1,
            }
        }
    }
    let mut total = OrthoCounts::default();
    for c in &counts {
        total.add(c);
    }
    let orthos = sources
        .iter()
        .zip(layouts)
        .zip(&counts)
        .map(|((s, l), c)| OrthoJson {
            name: &s.name,
            path: &s.path,
            crs: format!("EPSG:{}", s.map.zone().epsg()),
            width: s.map.dimensions().0,
            height: s.map.dimensions().1,
            gsd_m: s.map.gsd_m(),
            tile_ground_m: l.tile * s.map.gsd_m(),
            stride_px: l.stride,
            train_only: s.train_only,
            split_axis: l.axis,
            margin_px: if s.train_only { 0.0 } else { l.tile },
            train: region_json(&s.map, &l.train),
            val: l.val.as_ref().map(|r| region_json(&s.map, r)),
            counts: c,
        })
        .collect();
    let json = PairsJson {
        format: "vimgeo-pairs",
        version: 1,
        vimgeo_version: vimgeo_onboard::VERSION,
        settings: SettingsJson {
            size_px: config.size_px,
            tile_src_px: config.tile_src_px,
            views: config.views,
            val_fraction: config.val_fraction,
            seed: config.seed,
            camera: &config.camera_name,
            max_roll_pitch_deg: MAX_ROLL_PITCH_DEG,
            footprint_factor: FOOTPRINT_FACTOR,
            attitude_error_sigma_deg: ATTITUDE_SIGMA_DEG,
            heading_error_sigma_deg: HEADING_SIGMA_DEG,
            height_error_frac: HEIGHT_ERROR_FRAC,
            photometric: {
                let p = &config.photometric;
                PhotometricJson {
                    brightness: p.brightness,
                    contrast: p.contrast,
                    gamma: p.gamma,
                    colour_gain: p.colour_gain,
                    blur_sigma_px: p.blur_sigma_px,
                    noise_sigma: p.noise_sigma,
                    jpeg_quality: p.jpeg_quality,
                    jpeg_probability: p.jpeg_probability,
                }
            },
            appearance: config.appearance.name(),
        },
        orthos,
        counts: &total,
    };
    let mut text = serde_json::to_string_pretty(&json).expect("plain data serialises");
    text.push('\n');
    let csv_path = partial.join("samples.csv");
    std::fs::write(&csv_path, csv).map_err(io(&csv_path))?;
    let json_path = partial.join("pairs.json");
    std::fs::write(&json_path, text).map_err(io(&json_path))?;
    Ok(PairsReport {
        out: out.to_path_buf(),
        per_ortho: sources.iter().map(|s| s.name.clone()).zip(counts).collect(),
        total,
    })
}
