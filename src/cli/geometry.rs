//! `vimgeo render` (the simulated camera over an orthophoto), `vimgeo rectify` (a frame + attitude and
//! height → a north-up nadir view) and `vimgeo sim pairs` (the training-pair generator).
//!
//! Angles on the command line are degrees (roll, pitch, yaw as MAVLink's ATTITUDE gives them, aerospace
//! ZYX); heights are metres above the ground. Images are written atomically.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use clap::Args;
use vimgeo::rectify::{
    rectify as rectify_frame, CameraCalibration, CameraModel, Pose, RectifyLimits, RectifyTarget,
};

/// `vimgeo render`.
#[cfg(feature = "ground")]
#[derive(Debug, Args)]
pub(crate) struct RenderArgs {
    /// The orthophoto: a GeoTIFF, or an image with a world file (then --crs is required); `data:NAME` for a
    /// file of the data folder (`make data`). Its CRS must be a WGS84 UTM zone.
    #[arg(long, value_name = "IMG", value_parser = super::data_path)]
    ortho: PathBuf,
    /// The imagery's CRS (`EPSG:32612`): for world-file images; overrides a GeoTIFF's own.
    #[arg(long)]
    crs: Option<String>,
    /// The vehicle's latitude, degrees.
    #[arg(long, allow_negative_numbers = true)]
    lat: f64,
    /// The vehicle's longitude, degrees.
    #[arg(long, allow_negative_numbers = true)]
    lon: f64,
    /// Height above the ground, metres.
    #[arg(long)]
    height: f64,
    /// Roll, degrees (right wing down positive).
    #[arg(long, default_value_t = 0.0, allow_negative_numbers = true)]
    roll: f64,
    /// Pitch, degrees (nose up positive).
    #[arg(long, default_value_t = 0.0, allow_negative_numbers = true)]
    pitch: f64,
    /// Yaw (heading), degrees clockwise from true north.
    #[arg(long, allow_negative_numbers = true)]
    yaw: f64,
    /// The camera calibration (`calib/*.toml`).
    #[arg(long, value_name = "TOML")]
    calib: PathBuf,
    /// Apply a random photometric change (brightness, contrast, colour cast, blur, noise, JPEG) drawn
    /// from this seed.
    #[arg(long, value_name = "SEED")]
    photometric: Option<u64>,
    /// The PNG to write.
    #[arg(long, value_name = "PNG")]
    out: PathBuf,
}

/// `vimgeo rectify`.
#[derive(Debug, Args)]
pub(crate) struct RectifyArgs {
    /// The camera frame (PNG or JPEG), of the calibration's size.
    #[arg(long, value_name = "IMG")]
    frame: PathBuf,
    /// The camera calibration (`calib/*.toml`).
    #[arg(long, value_name = "TOML")]
    calib: PathBuf,
    /// Roll, degrees.
    #[arg(long, default_value_t = 0.0, allow_negative_numbers = true)]
    roll: f64,
    /// Pitch, degrees.
    #[arg(long, default_value_t = 0.0, allow_negative_numbers = true)]
    pitch: f64,
    /// Yaw (heading), degrees clockwise from true north.
    #[arg(long, allow_negative_numbers = true)]
    yaw: f64,
    /// Height above the ground, metres.
    #[arg(long)]
    height: f64,
    /// Side of the output on the ground, metres.
    #[arg(long, value_name = "M")]
    ground_size: f64,
    /// Side of the output, pixels.
    #[arg(long, default_value_t = 384)]
    size: u32,
    /// Refuse views whose optical axis is further than this from nadir, degrees.
    #[arg(long, default_value_t = 35.0)]
    max_tilt: f64,
    /// Refuse views with less than this fraction of the output inside the frame.
    #[arg(long, default_value_t = 0.98)]
    min_coverage: f64,
    /// The PNG to write.
    #[arg(long, value_name = "PNG")]
    out: PathBuf,
}

/// `vimgeo sim pairs`.
#[cfg(feature = "ground")]
#[derive(Debug, Args)]
pub(crate) struct PairsArgs {
    /// An orthophoto, `PATH[:CRS][@train]` (repeatable; `data:NAME` for a file of the data folder):
    /// `:EPSG:32612` for a world-file image, `@train` for one used for training only (no validation band).
    #[arg(long = "ortho", value_name = "PATH[:CRS][@train]", required = true)]
    orthos: Vec<String>,
    /// The folder to write (built in OUT.partial, renamed at the end; must not exist).
    #[arg(long, value_name = "DIR")]
    out: PathBuf,
    /// Side of every image written, pixels.
    #[arg(long, default_value_t = 128)]
    size: u32,
    /// Side of a tile in orthophoto pixels.
    #[arg(long, default_value_t = 192)]
    tile_src_px: u32,
    /// Drone views per tile.
    #[arg(long, default_value_t = 4)]
    views: u32,
    /// Fraction of each orthophoto's longer axis in the validation band.
    #[arg(long, default_value_t = 0.25)]
    val_fraction: f64,
    /// The seed (same seed, same bytes).
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// The simulated camera's calibration.
    #[arg(long, value_name = "TOML", default_value = "calib/sim.toml")]
    calib: PathBuf,
    /// "Another day" for the drone views: none, mild or strong (crates/ground/src/sim/appearance.rs).
    #[arg(long, default_value = "none", value_parser = parse_appearance)]
    appearance: vimgeo::sim::appearance::AppearancePreset,
}

#[cfg(feature = "ground")]
pub(crate) fn parse_appearance(
    s: &str,
) -> Result<vimgeo::sim::appearance::AppearancePreset, String> {
    vimgeo::sim::appearance::AppearancePreset::parse(s)
        .ok_or_else(|| format!("{s:?} is not none, mild or strong"))
}

fn load_camera(path: &Path) -> anyhow::Result<(CameraCalibration, CameraModel)> {
    let calib = CameraCalibration::load(path)?;
    let camera = CameraModel::new(&calib);
    Ok((calib, camera))
}

fn write_png(image: &image::RgbImage, path: &Path) -> anyhow::Result<()> {
    let mut bytes = Vec::new();
    image
        .write_to(
            &mut std::io::Cursor::new(&mut bytes),
            image::ImageFormat::Png,
        )
        .with_context(|| format!("cannot encode {}", path.display()))?;
    Ok(vimgeo::util::write_atomic_bytes(path, &bytes)?)
}

fn check_angles(roll: f64, pitch: f64, yaw: f64, height: f64) -> anyhow::Result<()> {
    for (name, v) in [
        ("--roll", roll),
        ("--pitch", pitch),
        ("--yaw", yaw),
        ("--height", height),
    ] {
        if !v.is_finite() {
            bail!("{name} {v} is not a number");
        }
    }
    if roll.abs() > 180.0 || pitch.abs() > 90.0 {
        bail!("--roll must be within ±180° and --pitch within ±90° (got {roll}, {pitch})");
    }
    if height <= 0.0 {
        bail!("--height {height} m: the vehicle must be above the ground");
    }
    Ok(())
}

#[cfg(feature = "ground")]
pub(crate) fn render(args: &RenderArgs) -> anyhow::Result<()> {
    use rand::SeedableRng;
    use vimgeo::build::OrthoOptions;
    use vimgeo::sim::photometric::PhotometricRange;
    use vimgeo::sim::render::{render as render_frame, render_with, OrthoMap};

    check_angles(args.roll, args.pitch, args.yaw, args.height)?;
    let (_, camera) = load_camera(&args.calib)?;
    let options = OrthoOptions {
        crs: args.crs.clone(),
        ..OrthoOptions::default()
    };
    let map = OrthoMap::open(&args.ortho, &options)?;
    let pose = Pose::from_euler_deg(args.roll, args.pitch, args.yaw, args.height);
    let vehicle = (args.lat, args.lon);
    let rendered = match args.photometric {
        None => render_frame(&map, &camera, vehicle, &pose)?,
        Some(seed) => {
            let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
            let change = PhotometricRange::default().sample(&mut rng);
            log::info!("photometric change (seed {seed}): {change:?}");
            render_with(&map, &camera, vehicle, &pose, &change, &mut rng)?
        }
    };
    if rendered.coverage == 0.0 {
        bail!(
            "the camera at ({}, {}) sees none of {}: check --lat/--lon against the map",
            args.lat,
            args.lon,
            args.ortho.display()
        );
    }
    write_png(&rendered.image, &args.out)?;
    println!(
        "wrote {}: {}x{} px, {:.1}% of it on the map",
        args.out.display(),
        rendered.image.width(),
        rendered.image.height(),
        rendered.coverage * 100.0
    );
    Ok(())
}

pub(crate) fn rectify(args: &RectifyArgs) -> anyhow::Result<()> {
    check_angles(args.roll, args.pitch, args.yaw, args.height)?;
    let (_, camera) = load_camera(&args.calib)?;
    let frame = image::open(&args.frame)
        .with_context(|| format!("cannot read {}", args.frame.display()))?
        .to_rgb8();
    let pose = Pose::from_euler_deg(args.roll, args.pitch, args.yaw, args.height);
    let target = RectifyTarget {
        size_px: args.size,
        ground_size_m: args.ground_size,
    };
    let limits = RectifyLimits {
        max_tilt_deg: args.max_tilt,
        min_coverage: args.min_coverage,
    };
    let rectified = rectify_frame(&frame, &camera, &pose, &target, &limits)
        .with_context(|| format!("cannot rectify {}", args.frame.display()))?;
    write_png(&rectified.image, &args.out)?;
    let [n, e] = rectified.centre_offset_ne_m;
    println!(
        "wrote {}: {} px over {} m ({:.4} m/px); centre {n:.2} m north, {e:.2} m east of the point below the \
         vehicle; coverage {:.1}%",
        args.out.display(),
        args.size,
        args.ground_size,
        rectified.gsd_m,
        rectified.coverage * 100.0
    );
    Ok(())
}

/// `PATH[:CRS][@train]` → (path, CRS, train only). The CRS is an `AUTHORITY:CODE` at the end.
#[cfg(feature = "ground")]
fn parse_ortho(spec: &str) -> (PathBuf, Option<String>, bool) {
    let (rest, train_only) = match spec.strip_suffix("@train") {
        Some(r) => (r, true),
        None => (spec, false),
    };
    // `...:EPSG:32612`: the last two colon-separated fields are letters and digits.
    let mut parts = rest.rsplitn(3, ':');
    if let (Some(code), Some(auth), Some(path)) = (parts.next(), parts.next(), parts.next()) {
        let is_code = !code.is_empty() && code.chars().all(|c| c.is_ascii_digit());
        let is_auth = !auth.is_empty() && auth.chars().all(|c| c.is_ascii_alphabetic());
        if is_code && is_auth && !path.is_empty() {
            return (
                PathBuf::from(path),
                Some(format!("{auth}:{code}")),
                train_only,
            );
        }
    }
    (PathBuf::from(rest), None, train_only)
}

#[cfg(feature = "ground")]
pub(crate) fn pairs(args: &PairsArgs) -> anyhow::Result<()> {
    use std::time::Instant;
    use vimgeo::build::OrthoOptions;
    use vimgeo::sim::pairs::{generate_pairs, PairsConfig, PairsSource};
    use vimgeo::sim::render::OrthoMap;

    let (calib, camera) = load_camera(&args.calib)?;
    let mut sources = Vec::new();
    for spec in &args.orthos {
        let (written, crs, train_only) = parse_ortho(spec);
        let path = super::data_dir().resolve(&written);
        let options = OrthoOptions {
            crs,
            ..OrthoOptions::default()
        };
        let map = OrthoMap::open(&path, &options).with_context(|| format!("--ortho {spec}"))?;
        let name = path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        sources.push(PairsSource {
            name,
            // As written: a `data:` name stays one, so pairs.json reads the same on every machine.
            path: written.display().to_string(),
            map,
            train_only,
        });
    }
    let config = PairsConfig {
        size_px: args.size,
        tile_src_px: args.tile_src_px,
        views: args.views,
        val_fraction: args.val_fraction,
        seed: args.seed,
        camera_name: calib.name.clone(),
        appearance: args.appearance,
        ..PairsConfig::default()
    };
    let started = Instant::now();
    let report = generate_pairs(&sources, &camera, &config, &args.out)
        .with_context(|| format!("cannot generate {}", args.out.display()))?;
    for (name, c) in &report.per_ortho {
        println!(
            "{name}: {} train tiles / {} views, {} val gallery tiles / {} queries, {} views redrawn \
             ({} tilted, {} horizon, {} coverage, {} outside the region)",
            c.train_tiles,
            c.train_views,
            c.val_tiles,
            c.val_views,
            c.redraws.total(),
            c.redraws.tilted,
            c.redraws.horizon,
            c.redraws.coverage,
            c.redraws.outside_region
        );
    }
    println!(
        "wrote {} in {:.1} s",
        report.out.display(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

#[cfg(all(test, feature = "ground"))]
mod tests {
    use super::*;

    #[test]
    fn ortho_specs_parse() {
        assert_eq!(
            parse_ortho("a/b.png:EPSG:32612@train"),
            (PathBuf::from("a/b.png"), Some("EPSG:32612".into()), true)
        );
        assert_eq!(parse_ortho("b.tif"), (PathBuf::from("b.tif"), None, false));
        assert_eq!(
            parse_ortho("c:/x.tif:epsg:32717"),
            (PathBuf::from("c:/x.tif"), Some("epsg:32717".into()), false)
        );
        assert_eq!(
            parse_ortho("d.tif@train"),
            (PathBuf::from("d.tif"), None, true)
        );
    }
}
