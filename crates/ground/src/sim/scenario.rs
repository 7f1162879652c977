//! The closed-loop simulation's scenario file: what is flown over which map, with which model, camera, noise,
//! GNSS outage and injected faults.
//!
//! Two steps, like the onboard configuration: [`RawScenario`] is the TOML as written (unknown keys refused),
//! [`Scenario::from_toml_str`] checks every value once and resolves it (paths relative to the scenario file's
//! folder, `data:NAME` in the data folder: [`vimgeo_onboard::data`]), through the same [`vimgeo_onboard::config_file`] checks.
//! Every error names the file and the key:
//! `sim/scenarios/x.toml: [flight] speed_mps: is 0; it must be > 0`.
//!
//! ```toml
//! name = "yell-gnss-denied"          # optional; default: the file's stem
//! [map]
//! ortho = "data:imagery/yell_forest_10cm.png"   # in the data folder (`make data`), or a path
//! crs = "EPSG:32612"                 # for images with a world file; GeoTIFFs carry their own
//! [model]
//! path = "../../models/vimgeo-demo.onnx"
//! engine = "auto"                    # auto | ort | tract
//! [cache]
//! footprint_m = 19.2                 # tile side on the ground
//! stride = 0.5                       # fraction of the footprint
//! prior_radius_m = 60.0              # optional: search only this far around the last position (default 500)
//! # path = "mission.vgc"             # optional; default: built under the run's cache folder, keyed
//! [camera]
//! calib = "../../calib/sim.toml"
//! fps = 4.0
//! photometric = true                 # a random photometric change per frame (seeded)
//! [flight]
//! waypoints_ne_m = [[-60.0, -60.0], [-60.0, 60.0], [60.0, 60.0], [60.0, -60.0]]   # north, east from the map centre
//! speed_mps = 5.0
//! height_agl_m = 30.0
//! loop = true
//! corner_radius_m = 12.0
//! [noise]
//! attitude_sigma_deg = 1.0           # roll and pitch error of the reported attitude
//! heading_sigma_deg = 2.0
//! height_error_frac = 0.03           # sigma, as a fraction of the height
//! [gnss]
//! lost_at_s = 10.0
//! restored_at_s = 80.0
//! [[fault]]
//! kind = "wrong_attitude"            # camera_stall | dropped_frames | corrupt_frames | link_drop
//! start_s = 40.0                     #   | gnss_flapping | wrong_attitude | gnss_spoof
//! duration_s = 5.0
//! roll_deg = 25.0                    # wrong_attitude: roll_deg, pitch_deg, yaw_deg
//!                                    # dropped_frames / corrupt_frames: probability (default 0.5)
//!                                    # gnss_flapping: period_s (default 1.0)
//!                                    # gnss_spoof: mode = "drag" (speed_mps, bearing_deg), "jump"
//!                                    #   (offset_m, bearing_deg) or "delay" (delay_s); bearing default 90
//! [run]
//! duration_s = 95.0
//! seed = 7
//! lossless = false                   # the pipeline never drops frames (forced on when recording)
//! ```

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::sim::appearance::{Appearance, AppearancePreset};
pub use crate::sim::autopilot::Spoof;
use vimgeo_onboard::config_file::{self, ConfigFile, ConfigFileError, EngineName};
use vimgeo_onboard::data::DataDir;
use vimgeo_onboard::encoder::EngineChoice;
use vimgeo_onboard::localize::LocalizerConfig;

/// A scenario file that cannot be used: the error shared by every TOML file vimgeo reads (see
/// [`vimgeo_onboard::config_file`]). Every message names the file; value errors name the `[section] key`.
pub type ScenarioError = ConfigFileError;

// ---- The file as written -------------------------------------------------------------------------------

/// The scenario file as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawScenario {
    /// The scenario's name (output folder); default: the file's stem.
    pub name: Option<String>,
    /// `[map]`.
    pub map: RawMap,
    /// `[model]`.
    #[serde(default)]
    pub model: RawModel,
    /// `[cache]`.
    #[serde(default)]
    pub cache: RawCache,
    /// `[camera]`.
    #[serde(default)]
    pub camera: RawCamera,
    /// `[flight]`.
    pub flight: RawFlight,
    /// `[noise]`.
    #[serde(default)]
    pub noise: RawNoise,
    /// `[gnss]`.
    #[serde(default)]
    pub gnss: RawGnss,
    /// `[[fault]]`, any number.
    #[serde(default)]
    pub fault: Vec<RawFault>,
    /// `[run]`.
    #[serde(default)]
    pub run: RawRun,
    /// `[localize]`: the localizer's configuration, as in the onboard file.
    #[serde(default)]
    pub localize: LocalizerConfig,
    /// `[appearance]`: how the world the camera sees differs from the map.
    #[serde(default)]
    pub appearance: RawAppearance,
}

/// The names of `[appearance] preset`.
#[derive(Deserialize)]
#[serde(remote = "AppearancePreset", rename_all = "snake_case")]
enum PresetName {
    None,
    Mild,
    Strong,
}

/// `[appearance] preset`: `none` (the default), `mild` or `strong`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct Preset(#[serde(with = "PresetName")] pub AppearancePreset);

impl Default for Preset {
    fn default() -> Self {
        Preset(AppearancePreset::None)
    }
}

/// `[appearance]`: a preset drawn with the run's seed, then any value overridden (see
/// [`crate::sim::appearance`] for what each does and its range).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawAppearance {
    /// The preset.
    pub preset: Preset,
    /// Override of the same field of [`Appearance`].
    pub exposure_gain: Option<f32>,
    /// Override of the same field of [`Appearance`].
    pub white_balance: Option<[f32; 3]>,
    /// Override of the same field of [`Appearance`].
    pub gamma: Option<f32>,
    /// Override of the same field of [`Appearance`].
    pub vegetation_hue_deg: Option<f32>,
    /// Override of the same field of [`Appearance`].
    pub vegetation_saturation: Option<f32>,
    /// Override of the same field of [`Appearance`].
    pub ground_saturation: Option<f32>,
    /// Override of the same field of [`Appearance`].
    pub haze: Option<f32>,
    /// Override of the same field of [`Appearance`].
    pub misregistration_m: Option<[f64; 2]>,
    /// Override of the same field of [`Appearance`].
    pub vignetting: Option<f32>,
    /// Override of the same field of [`Appearance`].
    pub exposure_time_s: Option<f32>,
    /// Override of the same field of [`Appearance`].
    pub defocus_sigma_px: Option<f32>,
    /// Override of the same field of [`Appearance`].
    pub read_noise: Option<f32>,
    /// Override of the same field of [`Appearance`].
    pub shot_noise_gain: Option<f32>,
    /// 0: no JPEG.
    pub jpeg_quality: Option<u8>,
}

/// `[map]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawMap {
    /// The orthophoto (GeoTIFF, or an image with a world file): the map the tile cache is built from.
    pub ortho: PathBuf,
    /// Its CRS when the file carries none (`EPSG:32612`).
    pub crs: Option<String>,
    /// The imagery the camera renders from, when it is not the map (another day, another sensor):
    /// co-registered with the map, any UTM CRS, any ground sample.
    pub camera_ortho: Option<PathBuf>,
    /// Its CRS when the file carries none.
    pub camera_crs: Option<String>,
}

/// `[model]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawModel {
    /// The exported model.
    pub path: PathBuf,
    /// `auto`, `ort` or `tract`.
    #[serde(with = "EngineName")]
    pub engine: EngineChoice,
}

impl Default for RawModel {
    fn default() -> Self {
        Self {
            path: PathBuf::from("../../models/vimgeo-demo.onnx"),
            engine: EngineChoice::default(),
        }
    }
}

/// `[cache]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawCache {
    /// A cache file to use (built there when missing).
    pub path: Option<PathBuf>,
    /// Tile side on the ground, metres (by default 192 px at 0.1 m, the demo model's training tiles).
    pub footprint_m: f64,
    /// Step between tiles, fraction of the footprint.
    pub stride: f64,
    /// The search window around the localizer's last position, metres (default: the pipeline's).
    pub prior_radius_m: Option<f64>,
}

impl Default for RawCache {
    fn default() -> Self {
        Self {
            path: None,
            footprint_m: 19.2,
            stride: 0.5,
            prior_radius_m: None,
        }
    }
}

/// `[camera]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawCamera {
    /// Calibration file.
    pub calib: PathBuf,
    /// Frames per second.
    pub fps: f64,
    /// A random photometric change per frame.
    pub photometric: bool,
}

impl Default for RawCamera {
    fn default() -> Self {
        Self {
            calib: PathBuf::from("../../calib/sim.toml"),
            fps: 4.0,
            photometric: true,
        }
    }
}

/// `[flight]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawFlight {
    /// Waypoints, north and east metres from the map's centre (required).
    pub waypoints_ne_m: Option<Vec<[f64; 2]>>,
    /// Ground speed, m/s (required).
    pub speed_mps: Option<f64>,
    /// Height above ground, metres (required).
    pub height_agl_m: Option<f64>,
    /// Fly back to the first waypoint and around again.
    #[serde(rename = "loop")]
    pub loop_: bool,
    /// Corner radius, metres.
    pub corner_radius_m: f64,
}

impl Default for RawFlight {
    fn default() -> Self {
        Self {
            waypoints_ne_m: None,
            speed_mps: None,
            height_agl_m: None,
            loop_: true,
            corner_radius_m: 10.0,
        }
    }
}

/// `[noise]`: errors of the pose the autopilot reports, against the truth the camera is rendered from.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawNoise {
    /// Roll and pitch error sigma, degrees.
    pub attitude_sigma_deg: f64,
    /// Heading error sigma, degrees.
    pub heading_sigma_deg: f64,
    /// Height error sigma as a fraction of the height.
    pub height_error_frac: f64,
}

impl Default for RawNoise {
    fn default() -> Self {
        Self {
            attitude_sigma_deg: 1.0,
            heading_sigma_deg: 2.0,
            height_error_frac: 0.03,
        }
    }
}

/// `[gnss]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawGnss {
    /// GNSS is lost at this time, seconds after start.
    pub lost_at_s: Option<f64>,
    /// And comes back at this time.
    pub restored_at_s: Option<f64>,
}

/// `[[fault]] kind`: what a fault does ([`FaultKind`] without its parameters).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FaultName {
    /// [`FaultKind::CameraStall`].
    CameraStall,
    /// [`FaultKind::DroppedFrames`].
    DroppedFrames,
    /// [`FaultKind::CorruptFrames`].
    CorruptFrames,
    /// [`FaultKind::LinkDrop`].
    LinkDrop,
    /// [`FaultKind::GnssFlapping`].
    GnssFlapping,
    /// [`FaultKind::WrongAttitude`].
    WrongAttitude,
    /// [`FaultKind::GnssSpoof`].
    GnssSpoof,
}

/// `[[fault]] mode` of a `gnss_spoof`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SpoofMode {
    /// [`Spoof::Drag`].
    Drag,
    /// [`Spoof::Jump`].
    Jump,
    /// [`Spoof::Delay`].
    Delay,
}

/// One `[[fault]]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawFault {
    /// `camera_stall`, `dropped_frames`, `corrupt_frames`, `link_drop`, `gnss_flapping`, `wrong_attitude`.
    pub kind: FaultName,
    /// Start, seconds after the run's start.
    pub start_s: f64,
    /// Length, seconds.
    pub duration_s: f64,
    /// dropped/corrupt frames: the chance that a frame in the window is hit (default 0.5).
    pub probability: Option<f64>,
    /// gnss_flapping: the fix toggles every this many seconds (default 1).
    pub period_s: Option<f64>,
    /// wrong_attitude: roll error, degrees (default 25 when no angle is given).
    pub roll_deg: Option<f64>,
    /// wrong_attitude: pitch error, degrees.
    pub pitch_deg: Option<f64>,
    /// wrong_attitude: heading error, degrees.
    pub yaw_deg: Option<f64>,
    /// gnss_spoof: what the spoofer does.
    pub mode: Option<SpoofMode>,
    /// gnss_spoof drag: how fast the reported position moves away from the true one, m/s (0.3-5 is the
    /// slow drag an attacker uses; up to 50 accepted).
    pub speed_mps: Option<f64>,
    /// gnss_spoof jump: how far the reported position is from the true one, metres.
    pub offset_m: Option<f64>,
    /// gnss_spoof drag or jump: towards where, degrees clockwise from north (default 90, east).
    pub bearing_deg: Option<f64>,
    /// gnss_spoof delay: how late the replayed position is, seconds.
    pub delay_s: Option<f64>,
}

/// `[run]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawRun {
    /// Length of the run, seconds.
    pub duration_s: f64,
    /// Seed of every random choice.
    pub seed: u64,
    /// The pipeline never drops frames between camera and encoder.
    pub lossless: bool,
}

impl Default for RawRun {
    fn default() -> Self {
        Self {
            duration_s: 95.0,
            seed: 7,
            lossless: false,
        }
    }
}

// ---- Resolved ------------------------------------------------------------------------------------------

/// `[model]`, resolved.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelChoice {
    /// The model file.
    pub path: PathBuf,
    /// The engine.
    pub engine: EngineChoice,
}

/// `[cache]`, resolved.
#[derive(Debug, Clone, PartialEq)]
pub struct CachePlan {
    /// A cache file to use or build; `None`: built under the run's cache folder, keyed by its inputs.
    pub path: Option<PathBuf>,
    /// Tile side on the ground, metres.
    pub footprint_m: f64,
    /// Step between tiles, fraction of the footprint.
    pub stride: f64,
    /// The search window around the localizer's last position, metres; `None`: the pipeline's default.
    pub prior_radius_m: Option<f64>,
}

/// `[camera]`, resolved.
#[derive(Debug, Clone, PartialEq)]
pub struct CameraPlan {
    /// Calibration file.
    pub calib: PathBuf,
    /// Frames per second.
    pub fps: f64,
    /// A random photometric change per frame.
    pub photometric: bool,
}

/// `[flight]`, resolved.
#[derive(Debug, Clone, PartialEq)]
pub struct FlightPlan {
    /// Waypoints, north and east metres from the map's centre.
    pub waypoints_ne_m: Vec<[f64; 2]>,
    /// Ground speed, m/s.
    pub speed_mps: f64,
    /// Height above ground, metres.
    pub height_agl_m: f64,
    /// Closed loop.
    pub loop_: bool,
    /// Corner radius, metres.
    pub corner_radius_m: f64,
}

/// `[noise]`, resolved.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PoseNoise {
    /// Roll and pitch error sigma, degrees.
    pub attitude_sigma_deg: f64,
    /// Heading error sigma, degrees.
    pub heading_sigma_deg: f64,
    /// Height error sigma, fraction of the height.
    pub height_error_frac: f64,
}

/// A time window of the run.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Window {
    /// Start, seconds after the run's start.
    pub start_s: f64,
    /// End, seconds after the run's start.
    pub end_s: f64,
}

impl Window {
    /// Whether `t_s` is inside `[start, end)`.
    pub fn contains(&self, t_s: f64) -> bool {
        t_s >= self.start_s && t_s < self.end_s
    }

    /// As durations from the start (an endless window ends at [`Duration::MAX`]).
    pub fn durations(&self) -> (Duration, Duration) {
        let d = |s: f64| Duration::try_from_secs_f64(s.max(0.0)).unwrap_or(Duration::MAX);
        (d(self.start_s), d(self.end_s))
    }
}

/// What a fault does.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum FaultKind {
    /// The camera delivers no frame (the source times out).
    CameraStall,
    /// Frames are lost before the pipeline sees them (sequence gaps).
    DroppedFrames {
        /// Chance per frame.
        probability: f64,
    },
    /// Frames are garbage (random bytes) or unreadable (the source's corrupt-frame error), alternately.
    CorruptFrames {
        /// Chance per frame.
        probability: f64,
    },
    /// The autopilot stops sending and ignores what it receives.
    LinkDrop,
    /// The autopilot's GNSS toggles between a 3D fix and none.
    GnssFlapping {
        /// Seconds between toggles.
        period_s: f64,
    },
    /// The reported attitude is off by a fixed error.
    WrongAttitude {
        /// Roll, pitch, yaw error, degrees.
        error_deg: [f64; 3],
    },
    /// The autopilot's GNSS is spoofed: its receiver stays healthy and its EKF follows the spoofer.
    GnssSpoof {
        /// What the spoofer does.
        spoof: Spoof,
    },
}

impl FaultKind {
    /// The name as written in the scenario file.
    pub fn name(&self) -> &'static str {
        match self {
            FaultKind::CameraStall => "camera_stall",
            FaultKind::DroppedFrames { .. } => "dropped_frames",
            FaultKind::CorruptFrames { .. } => "corrupt_frames",
            FaultKind::LinkDrop => "link_drop",
            FaultKind::GnssFlapping { .. } => "gnss_flapping",
            FaultKind::WrongAttitude { .. } => "wrong_attitude",
            FaultKind::GnssSpoof { .. } => "gnss_spoof",
        }
    }
}

/// One injected fault.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Fault {
    /// What.
    pub kind: FaultKind,
    /// When.
    pub window: Window,
}

/// `[run]`, resolved.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RunPlan {
    /// Length, seconds.
    pub duration_s: f64,
    /// Seed.
    pub seed: u64,
    /// The pipeline never drops frames.
    pub lossless: bool,
}

/// A resolved scenario. See the module documentation.
#[derive(Debug, Clone)]
pub struct Scenario {
    /// The file it came from.
    pub file: PathBuf,
    /// Its name.
    pub name: String,
    /// The orthophoto.
    pub ortho: PathBuf,
    /// Its CRS when the file carries none.
    pub crs: Option<String>,
    /// The model.
    pub model: ModelChoice,
    /// The tile cache.
    pub cache: CachePlan,
    /// The camera.
    pub camera: CameraPlan,
    /// The flight.
    pub flight: FlightPlan,
    /// Pose errors.
    pub noise: PoseNoise,
    /// The GNSS outage; `None`: GNSS healthy throughout.
    pub gnss_lost: Option<Window>,
    /// Injected faults.
    pub faults: Vec<Fault>,
    /// Length, seed, mode.
    pub run: RunPlan,
    /// The localizer.
    pub localize: LocalizerConfig,
    /// The world the camera sees.
    pub camera_world: CameraWorld,
}

/// The world the simulated camera sees: an orthophoto (the map's own unless `[map] camera_ortho` names
/// another) and the appearance change applied to it.
#[derive(Debug, Clone, PartialEq)]
pub struct CameraWorld {
    /// The orthophoto the camera renders from.
    pub ortho: PathBuf,
    /// Its CRS when the file carries none.
    pub crs: Option<String>,
    /// Whether it is another image than the map.
    pub separate: bool,
    /// The preset the appearance was drawn from.
    pub preset: AppearancePreset,
    /// The appearance change, drawn and overridden.
    pub appearance: Appearance,
}

impl CameraWorld {
    /// What the camera and the map share, for summaries: `the map's own pixels, appearance none` or
    /// `another image (FILE), appearance mild (misregistration 1.2 m)`.
    pub fn describe(&self) -> String {
        let image = if self.separate {
            format!("another image ({})", self.ortho.display())
        } else {
            "the map's own pixels".to_owned()
        };
        let [e, n] = self.appearance.misregistration_m;
        format!(
            "{image}, appearance {} (misregistration {:.1} m)",
            self.preset.name(),
            e.hypot(n)
        )
    }
}

impl Scenario {
    /// Replaces the appearance with `preset`'s, drawn as `[appearance] preset` would be (same seed, same
    /// draw); the file's per-value overrides are dropped.
    pub fn set_appearance(&mut self, preset: AppearancePreset) {
        self.camera_world.preset = preset;
        self.camera_world.appearance = Appearance::draw(preset, &mut appearance_rng(self.run.seed));
    }

    /// Reads and resolves `file`; `data:NAME` paths name files in `data`.
    pub fn load(file: &Path, data: &DataDir) -> Result<Scenario, ScenarioError> {
        Scenario::from_toml_str(&config_file::read(file, "scenario")?, file, data)
    }

    /// Parses and resolves `text` as if read from `file` (relative paths resolve against its folder, `data:NAME`
    /// in `data`).
    pub fn from_toml_str(
        text: &str,
        file: &Path,
        data: &DataDir,
    ) -> Result<Scenario, ScenarioError> {
        resolve(config_file::parse(text, file)?, file, data)
    }

    /// Whether the autopilot's GNSS is healthy at `t_s` (outage and flapping included).
    pub fn gnss_ok(&self, t_s: f64) -> bool {
        if self.gnss_lost.is_some_and(|w| w.contains(t_s)) {
            return false;
        }
        for f in &self.faults {
            if let FaultKind::GnssFlapping { period_s } = f.kind {
                if f.window.contains(t_s) {
                    let phase = ((t_s - f.window.start_s) / period_s).floor() as i64;
                    // Lost first, then back, and so on.
                    return phase % 2 == 1;
                }
            }
        }
        true
    }

    /// The faults of one kind name.
    pub fn faults_named<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a Fault> + 'a {
        self.faults.iter().filter(move |f| f.kind.name() == name)
    }
}

fn resolve(raw: RawScenario, file: &Path, data: &DataDir) -> Result<Scenario, ScenarioError> {
    let cf = ConfigFile::with_data(file, data);

    let name = match raw.name {
        Some(n) => n,
        None => file.file_stem().map_or_else(
            || "scenario".to_owned(),
            |s| s.to_string_lossy().into_owned(),
        ),
    };
    if name.is_empty() || name.contains(['/', '\\']) || name == "." || name == ".." {
        return Err(cf.invalid(
            "",
            "name",
            format!("{name:?} is not usable as a folder name"),
        ));
    }

    let model = ModelChoice {
        path: cf.path(&raw.model.path),
        engine: raw.model.engine,
    };

    let cache = CachePlan {
        path: raw.cache.path.as_deref().map(|p| cf.path(p)),
        prior_radius_m: raw
            .cache
            .prior_radius_m
            .map(|r| cf.positive("cache", "prior_radius_m", r))
            .transpose()?,
        footprint_m: cf.positive("cache", "footprint_m", raw.cache.footprint_m)?,
        stride: cf.fraction("cache", "stride", raw.cache.stride)?,
    };

    let camera = CameraPlan {
        calib: cf.path(&raw.camera.calib),
        fps: {
            let fps = cf.positive("camera", "fps", raw.camera.fps)?;
            if fps > 100.0 {
                return Err(cf.invalid("camera", "fps", format!("is {fps}; at most 100")));
            }
            fps
        },
        photometric: raw.camera.photometric,
    };

    let f = raw.flight;
    let waypoints_ne_m = cf.given("flight", "waypoints_ne_m", f.waypoints_ne_m)?;
    if waypoints_ne_m.is_empty() {
        return Err(cf.invalid("flight", "waypoints_ne_m", "is empty: give at least one"));
    }
    if let Some((i, w)) = waypoints_ne_m
        .iter()
        .enumerate()
        .find(|(_, w)| !w.iter().all(|v| v.is_finite()))
    {
        return Err(cf.invalid(
            "flight",
            "waypoints_ne_m",
            format!("waypoint {i} {w:?} is not finite"),
        ));
    }
    let flight = FlightPlan {
        waypoints_ne_m,
        speed_mps: {
            let v = cf.positive(
                "flight",
                "speed_mps",
                cf.given("flight", "speed_mps", f.speed_mps)?,
            )?;
            if v > 40.0 {
                return Err(cf.invalid("flight", "speed_mps", format!("is {v}; at most 40")));
            }
            v
        },
        height_agl_m: cf.positive(
            "flight",
            "height_agl_m",
            cf.given("flight", "height_agl_m", f.height_agl_m)?,
        )?,
        loop_: f.loop_,
        corner_radius_m: cf.non_negative("flight", "corner_radius_m", f.corner_radius_m)?,
    };

    let noise = PoseNoise {
        attitude_sigma_deg: cf.non_negative(
            "noise",
            "attitude_sigma_deg",
            raw.noise.attitude_sigma_deg,
        )?,
        heading_sigma_deg: cf.non_negative(
            "noise",
            "heading_sigma_deg",
            raw.noise.heading_sigma_deg,
        )?,
        height_error_frac: {
            let h = cf.non_negative("noise", "height_error_frac", raw.noise.height_error_frac)?;
            if h >= 0.5 {
                return Err(cf.invalid("noise", "height_error_frac", format!("is {h}; below 0.5")));
            }
            h
        },
    };

    let run = RunPlan {
        duration_s: cf.positive("run", "duration_s", raw.run.duration_s)?,
        seed: raw.run.seed,
        lossless: raw.run.lossless,
    };

    let gnss_lost = match (raw.gnss.lost_at_s, raw.gnss.restored_at_s) {
        (None, None) => None,
        (None, Some(_)) => {
            return Err(cf.invalid("gnss", "restored_at_s", "given without lost_at_s"))
        }
        (Some(lost), restored) => {
            let lost = cf.non_negative("gnss", "lost_at_s", lost)?;
            let restored = match restored {
                Some(r) => {
                    let r = cf.non_negative("gnss", "restored_at_s", r)?;
                    if r <= lost {
                        return Err(cf.invalid(
                            "gnss",
                            "restored_at_s",
                            format!("is {r}; it must be after lost_at_s ({lost})"),
                        ));
                    }
                    r
                }
                None => f64::INFINITY,
            };
            Some(Window {
                start_s: lost,
                end_s: restored,
            })
        }
    };

    let mut faults = Vec::with_capacity(raw.fault.len());
    for (i, rf) in raw.fault.into_iter().enumerate() {
        let section = format!("fault {}", i + 1);
        let start_s = cf.non_negative(&section, "start_s", rf.start_s)?;
        let duration_s = cf.positive(&section, "duration_s", rf.duration_s)?;
        let probability =
            |default: f64| cf.fraction(&section, "probability", rf.probability.unwrap_or(default));
        let mut allowed: &[&str] = &[];
        let kind = match rf.kind {
            FaultName::CameraStall => FaultKind::CameraStall,
            FaultName::DroppedFrames => {
                allowed = &["probability"];
                FaultKind::DroppedFrames {
                    probability: probability(0.5)?,
                }
            }
            FaultName::CorruptFrames => {
                allowed = &["probability"];
                FaultKind::CorruptFrames {
                    probability: probability(0.5)?,
                }
            }
            FaultName::LinkDrop => FaultKind::LinkDrop,
            FaultName::GnssFlapping => {
                allowed = &["period_s"];
                FaultKind::GnssFlapping {
                    period_s: cf.positive(&section, "period_s", rf.period_s.unwrap_or(1.0))?,
                }
            }
            FaultName::WrongAttitude => {
                allowed = &["roll_deg", "pitch_deg", "yaw_deg"];
                let given = [rf.roll_deg, rf.pitch_deg, rf.yaw_deg];
                let error_deg = if given.iter().all(Option::is_none) {
                    [25.0, 0.0, 0.0]
                } else {
                    given.map(|v| v.unwrap_or(0.0))
                };
                if let Some(bad) = error_deg
                    .iter()
                    .find(|v| !(v.is_finite() && v.abs() <= 90.0))
                {
                    return Err(cf.invalid(
                        &section,
                        "roll_deg/pitch_deg/yaw_deg",
                        format!("{bad} is not an angle error in [-90, 90] degrees"),
                    ));
                }
                FaultKind::WrongAttitude { error_deg }
            }
            FaultName::GnssSpoof => {
                let mode = rf
                    .mode
                    .ok_or_else(|| cf.invalid(&section, "mode", "missing: drag, jump or delay"))?;
                let bearing_deg = rf.bearing_deg.unwrap_or(90.0);
                if !bearing_deg.is_finite() {
                    return Err(cf.invalid(&section, "bearing_deg", "is not a number"));
                }
                let within = |key: &str, v: Option<f64>, max: f64| {
                    let v = v.ok_or_else(|| {
                        cf.invalid(&section, key, format!("missing for a {mode:?} spoof"))
                    })?;
                    if v.is_finite() && v > 0.0 && v <= max {
                        Ok(v)
                    } else {
                        Err(cf.invalid(&section, key, format!("is {v}; it must be in (0, {max}]")))
                    }
                };
                let spoof = match mode {
                    SpoofMode::Drag => {
                        allowed = &["mode", "speed_mps", "bearing_deg"];
                        Spoof::Drag {
                            speed_mps: within("speed_mps", rf.speed_mps, 50.0)?,
                            bearing_deg,
                        }
                    }
                    SpoofMode::Jump => {
                        allowed = &["mode", "offset_m", "bearing_deg"];
                        Spoof::Jump {
                            offset_m: within("offset_m", rf.offset_m, 10_000.0)?,
                            bearing_deg,
                        }
                    }
                    SpoofMode::Delay => {
                        allowed = &["mode", "delay_s"];
                        Spoof::Delay {
                            delay_s: within("delay_s", rf.delay_s, 600.0)?,
                        }
                    }
                };
                FaultKind::GnssSpoof { spoof }
            }
        };
        // A parameter that the kind does not take is a mistake in the file, not something to ignore.
        for (key, set) in [
            ("probability", rf.probability.is_some()),
            ("period_s", rf.period_s.is_some()),
            ("roll_deg", rf.roll_deg.is_some()),
            ("pitch_deg", rf.pitch_deg.is_some()),
            ("yaw_deg", rf.yaw_deg.is_some()),
            ("mode", rf.mode.is_some()),
            ("speed_mps", rf.speed_mps.is_some()),
            ("offset_m", rf.offset_m.is_some()),
            ("bearing_deg", rf.bearing_deg.is_some()),
            ("delay_s", rf.delay_s.is_some()),
        ] {
            if set && !allowed.contains(&key) {
                return Err(cf.invalid(
                    &section,
                    key,
                    format!("a {} fault takes no {key}", kind.name()),
                ));
            }
        }
        faults.push(Fault {
            kind,
            window: Window {
                start_s,
                end_s: start_s + duration_s,
            },
        });
    }

    let localize = raw.localize;
    cf.localize(&localize)?;

    let ortho = cf.path(&raw.map.ortho);
    let camera_world = resolve_appearance(&cf, raw.appearance, run.seed, {
        match raw.map.camera_ortho {
            Some(p) => (cf.path(&p), raw.map.camera_crs, true),
            None => (ortho.clone(), raw.map.crs.clone(), false),
        }
    })?;

    Ok(Scenario {
        file: file.to_path_buf(),
        name,
        ortho,
        crs: raw.map.crs,
        model,
        cache,
        camera,
        flight,
        noise,
        gnss_lost,
        faults,
        run,
        localize,
        camera_world,
    })
}

/// The appearance's own random stream, from the run's seed (adding an appearance changes no other draw).
fn appearance_rng(seed: u64) -> rand_chacha::ChaCha8Rng {
    use rand::SeedableRng;
    rand_chacha::ChaCha8Rng::seed_from_u64(seed ^ 0x0a99_ea2a_4ce0_0001)
}

/// `[appearance]`: the preset drawn with the run's seed (its own stream, so adding an appearance changes no
/// other random draw of the run), then the overrides; every value checked.
fn resolve_appearance(
    cf: &ConfigFile,
    raw: RawAppearance,
    seed: u64,
    (ortho, crs, separate): (PathBuf, Option<String>, bool),
) -> Result<CameraWorld, ScenarioError> {
    let preset = raw.preset.0;
    let mut a = Appearance::draw(preset, &mut appearance_rng(seed));
    macro_rules! set {
        ($($field:ident),*) => { $(if let Some(v) = raw.$field { a.$field = v; })* };
    }
    set!(
        exposure_gain,
        white_balance,
        gamma,
        vegetation_hue_deg,
        vegetation_saturation,
        ground_saturation,
        haze,
        misregistration_m,
        vignetting,
        exposure_time_s,
        defocus_sigma_px,
        read_noise,
        shot_noise_gain
    );
    if let Some(q) = raw.jpeg_quality {
        a.jpeg_quality = (q > 0).then_some(q);
    }
    if let Err(crate::sim::photometric::PhotometricError::Parameter { field, value, why }) =
        a.validate()
    {
        return Err(cf.invalid("appearance", field, format!("is {value}; it {why}")));
    }
    Ok(CameraWorld {
        ortho,
        crs,
        separate,
        preset,
        appearance: a,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"
[map]
ortho = "map.png"
crs = "EPSG:32612"
[flight]
waypoints_ne_m = [[0.0, 0.0], [10.0, 0.0]]
speed_mps = 5.0
height_agl_m = 30.0
"#;

    fn parse(text: &str) -> Result<Scenario, ScenarioError> {
        Scenario::from_toml_str(
            text,
            Path::new("/x/sim/scenarios/test.toml"),
            &DataDir::new("/data"),
        )
    }

    #[test]
    fn minimal_scenario_takes_the_defaults_and_resolves_paths() {
        let s = parse(MINIMAL).unwrap();
        assert_eq!(s.name, "test");
        assert_eq!(s.ortho, Path::new("/x/sim/scenarios/map.png"));
        assert_eq!(
            s.model.path,
            Path::new("/x/sim/scenarios/../../models/vimgeo-demo.onnx")
        );
        assert_eq!(
            s.camera.calib,
            Path::new("/x/sim/scenarios/../../calib/sim.toml")
        );
        assert_eq!(s.cache.footprint_m, 19.2);
        assert!(s.gnss_lost.is_none() && s.faults.is_empty());
        let s = parse(&MINIMAL.replace("map.png", "data:imagery/map.png")).unwrap();
        assert_eq!(s.ortho, Path::new("/data/imagery/map.png"));
        assert!(s.gnss_ok(10.0));
    }

    #[test]
    fn the_appearance_is_drawn_from_the_seed_and_overridden_per_value() {
        let s = parse(MINIMAL).unwrap();
        assert_eq!(s.camera_world.preset, AppearancePreset::None);
        assert_eq!(s.camera_world.appearance, Appearance::none());
        assert!(!s.camera_world.separate && s.camera_world.ortho == s.ortho);

        let mild = format!("{MINIMAL}[appearance]\npreset = \"mild\"\n");
        let a = parse(&mild).unwrap().camera_world;
        assert_eq!(a.preset, AppearancePreset::Mild);
        assert_ne!(a.appearance, Appearance::none());
        assert_eq!(
            a,
            parse(&mild).unwrap().camera_world,
            "same seed, same draw"
        );
        let other = parse(&format!("{mild}[run]\nseed = 99\n"))
            .unwrap()
            .camera_world;
        assert_ne!(a.appearance, other.appearance, "another seed, another draw");

        let set = parse(&format!(
            "{mild}haze = 0.3\nmisregistration_m = [2.0, -1.0]\njpeg_quality = 0\n"
        ))
        .unwrap()
        .camera_world
        .appearance;
        assert_eq!(
            (set.haze, set.misregistration_m, set.jpeg_quality),
            (0.3, [2.0, -1.0], None)
        );
        assert!(parse(&format!("{mild}haze = 0.3\n"))
            .unwrap()
            .camera_world
            .describe()
            .contains("appearance mild"));

        let e = parse(&format!("{MINIMAL}[appearance]\npreset = \"winter\"\n")).unwrap_err();
        assert!(
            e.to_string().contains(
                "[appearance] preset: unknown variant `winter`, expected one of `none`, `mild`, `strong`"
            ),
            "{e}"
        );
        let e = parse(&format!("{MINIMAL}[appearance]\nhaze = 2.0\n")).unwrap_err();
        assert!(
            e.to_string()
                .contains("[appearance] haze: is 2; it must be in 0..=1"),
            "{e}"
        );

        let other_map = MINIMAL.replace(
            "crs = \"EPSG:32612\"",
            "crs = \"EPSG:32612\"\ncamera_ortho = \"data:imagery/day2.tif\"",
        );
        let w = parse(&other_map).unwrap().camera_world;
        assert!(w.separate && w.ortho == Path::new("/data/imagery/day2.tif") && w.crs.is_none());
        assert!(
            w.describe()
                .starts_with("another image (/data/imagery/day2.tif)"),
            "{}",
            w.describe()
        );
    }

    #[test]
    fn faults_and_gnss_windows() {
        let text = format!(
            "{MINIMAL}
[gnss]
lost_at_s = 10
restored_at_s = 20
[[fault]]
kind = \"gnss_flapping\"
start_s = 30
duration_s = 4
period_s = 1
[[fault]]
kind = \"wrong_attitude\"
start_s = 5
duration_s = 2
pitch_deg = -20
"
        );
        let s = parse(&text).unwrap();
        assert!(s.gnss_ok(9.9) && !s.gnss_ok(10.0) && !s.gnss_ok(19.9) && s.gnss_ok(20.0));
        // Flapping: lost in the first period, back in the second.
        assert!(!s.gnss_ok(30.5) && s.gnss_ok(31.5) && !s.gnss_ok(32.5) && s.gnss_ok(34.5));
        assert_eq!(
            s.faults[1].kind,
            FaultKind::WrongAttitude {
                error_deg: [0.0, -20.0, 0.0]
            }
        );
    }

    #[test]
    fn gnss_spoofs_parse_and_refuse_what_their_mode_does_not_take() {
        let fault = |body: &str| {
            parse(&format!(
                "{MINIMAL}[[fault]]\nkind = \"gnss_spoof\"\nstart_s = 20\nduration_s = 30\n{body}"
            ))
        };
        let s = fault("mode = \"drag\"\nspeed_mps = 1.5\n").unwrap();
        assert_eq!(
            s.faults[0].kind,
            FaultKind::GnssSpoof {
                spoof: Spoof::Drag {
                    speed_mps: 1.5,
                    bearing_deg: 90.0
                }
            }
        );
        let s = fault("mode = \"jump\"\noffset_m = 80\nbearing_deg = 200\n").unwrap();
        assert_eq!(
            s.faults[0].kind,
            FaultKind::GnssSpoof {
                spoof: Spoof::Jump {
                    offset_m: 80.0,
                    bearing_deg: 200.0
                }
            }
        );
        let s = fault("mode = \"delay\"\ndelay_s = 3\n").unwrap();
        assert_eq!(
            s.faults[0].kind,
            FaultKind::GnssSpoof {
                spoof: Spoof::Delay { delay_s: 3.0 }
            }
        );
        let e = fault("speed_mps = 1\n").unwrap_err().to_string();
        assert!(e.contains("[fault 1] mode: missing"), "{e}");
        let e = fault("mode = \"drag\"\n").unwrap_err().to_string();
        assert!(e.contains("[fault 1] speed_mps: missing"), "{e}");
        let e = fault("mode = \"drag\"\nspeed_mps = -1\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("[fault 1] speed_mps: is -1"), "{e}");
        let e = fault("mode = \"delay\"\ndelay_s = 2\nbearing_deg = 10\n")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("[fault 1] bearing_deg: a gnss_spoof fault takes no"),
            "{e}"
        );
        let e = parse(&format!(
            "{MINIMAL}[[fault]]\nkind = \"camera_stall\"\nstart_s = 1\nduration_s = 1\nmode = \"drag\"\n"
        ))
        .unwrap_err()
        .to_string();
        assert!(e.contains("a camera_stall fault takes no mode"), "{e}");
    }

    #[test]
    fn errors_name_the_file_section_and_key() {
        let e = parse(&MINIMAL.replace("speed_mps = 5.0", "speed_mps = 0.0")).unwrap_err();
        assert_eq!(
            e.to_string(),
            "/x/sim/scenarios/test.toml: [flight] speed_mps: is 0; it must be > 0"
        );
        let e = parse(&format!(
            "{MINIMAL}[[fault]]\nkind = \"camera_stall\"\nstart_s = 1\nduration_s = 1\nprobability = 0.3\n"
        ))
        .unwrap_err();
        assert!(
            e.to_string()
                .contains("[fault 1] probability: a camera_stall fault takes no probability"),
            "{e}"
        );
        let e = parse(&format!(
            "{MINIMAL}[[fault]]\nkind = \"meteor\"\nstart_s = 1\nduration_s = 1\n"
        ))
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "/x/sim/scenarios/test.toml: [fault 1] kind: unknown variant `meteor`, expected one of \
             `camera_stall`, `dropped_frames`, `corrupt_frames`, `link_drop`, `gnss_flapping`, \
             `wrong_attitude`, `gnss_spoof` (line 10, column 8)"
        );
        let e = parse(&format!(
            "{MINIMAL}[gnss]\nlost_at_s = 5\nrestored_at_s = 4\n"
        ))
        .unwrap_err();
        assert!(e.to_string().contains("[gnss] restored_at_s"), "{e}");
        let e = parse(&format!("{MINIMAL}[run]\ncolour = 3\n")).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("/x/sim/scenarios/test.toml: [run] colour: unknown field `colour`"),
            "{e}"
        );
        let e = parse(&MINIMAL.replace("speed_mps = 5.0\n", "")).unwrap_err();
        assert_eq!(
            e.to_string(),
            "/x/sim/scenarios/test.toml: [flight] speed_mps: missing"
        );
        let e = parse(&format!("{MINIMAL}[localize.particles]\nparticles = 10\n")).unwrap_err();
        assert_eq!(
            e.to_string(),
            "/x/sim/scenarios/test.toml: [localize.particles] particles: is 10; it must be \
             100..=1000000 (fewer cannot hold two modes)"
        );
    }

    #[test]
    fn the_bundled_scenarios_parse() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../sim/scenarios");
        let data = DataDir::new("/data");
        let mut n = 0;
        for entry in std::fs::read_dir(&dir).unwrap() {
            let file = entry.unwrap().path();
            if file.extension().is_some_and(|e| e == "toml") {
                let s = Scenario::load(&file, &data).unwrap_or_else(|e| panic!("{e}"));
                // The bundled scenarios fly over the data folder's imagery, which a clone fetches itself.
                assert!(s.ortho.starts_with(data.root()), "{}", s.ortho.display());
                n += 1;
            }
        }
        assert!(n >= 1, "no scenario in {}", dir.display());
        let s = Scenario::load(&dir.join("yell-gnss-denied.toml"), &data).unwrap();
        assert_eq!(s.cache.prior_radius_m, Some(40.0));
        let e = parse(&MINIMAL.replace("[flight]", "[cache]\nprior_radius_m = -5.0\n[flight]"))
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            "/x/sim/scenarios/test.toml: [cache] prior_radius_m: is -5; it must be > 0"
        );
        let missing = dir.join("no-such-scenario.toml");
        let e = Scenario::load(&missing, &data).unwrap_err().to_string();
        assert!(
            e.starts_with(&format!("{}: cannot read the scenario:", missing.display())),
            "{e}"
        );
    }
}
