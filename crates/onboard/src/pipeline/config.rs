//! The onboard configuration file (`/etc/vimgeo/vimgeo.toml`, documented example: `deploy/vimgeo.toml`).
//!
//! Two steps, as ripgrep does with its flags: [`RawConfig`] is the file as written (serde, unknown keys
//! refused), [`OnboardConfig::from_toml_str`] checks every value once and resolves it into the settings that
//! build each runtime component: the camera ([`CameraChoice`]), the encoder ([`ModelSettings`]), the tile
//! cache ([`CacheSettings`]), the flight-controller link ([`LinkConfig`]) and the pipeline itself
//! ([`PipelineConfig`]). Every error names the file and the key: `/etc/vimgeo/vimgeo.toml: [camera] fps:
//! must be > 0`. Relative paths resolve against the config file's folder. Reading, the error type and the
//! value checks are shared with the simulation scenario: [`crate::config_file`].
//!
//! Checking that the files the config names exist is a separate step ([`OnboardConfig::check_paths`]) so the
//! documented example can be parsed on a machine that has none of them.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::camera::{PixelFormat, ReplayOptions, ReplayPace, V4l2Config};
use crate::config_file::{self, ConfigFile, ConfigFileError, EngineName};
use crate::encoder::{EncoderConfig, EngineChoice, ExecutionProviderKind, OrtConfig, TractConfig};
use crate::fc::{GpsInputConfig, LinkAddress, LinkConfig, PublishPolicy, Publisher};
use crate::localize::LocalizerConfig;
use crate::rectify::RectifyLimits;

/// A configuration file that cannot be used: the error shared by every TOML file vimgeo reads (see
/// [`crate::config_file`]). Every message names the file; value errors name the `[section] key`.
pub type ConfigError = ConfigFileError;

// ---- The file as written -------------------------------------------------------------------------------

/// The configuration file as written: every table optional except `[camera]`, `[model]`, `[cache]` and
/// `[fc]`; unknown keys are refused. Each table's `Default` holds the value of every key the file leaves out
/// (a required key is an `Option`, `None` until given).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    /// `[camera]`.
    pub camera: RawCamera,
    /// `[model]`.
    pub model: RawModel,
    /// `[cache]`.
    pub cache: RawCache,
    /// `[rectify]`.
    #[serde(default)]
    pub rectify: RawRectify,
    /// `[localize]`: the localizer's own configuration, passed through as written.
    #[serde(default)]
    pub localize: LocalizerConfig,
    /// `[fc]`.
    pub fc: RawFc,
    /// `[pipeline]`.
    #[serde(default)]
    pub pipeline: RawPipeline,
    /// `[health]`.
    #[serde(default)]
    pub health: RawHealth,
}

/// `[camera] source`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CameraSource {
    /// `v4l2`: a V4L2 device.
    V4l2,
    /// `replay`: a recorded folder.
    Replay,
    /// `sim`: the simulated camera.
    Sim,
}

/// The names of `[camera] format`.
#[derive(Deserialize)]
#[serde(remote = "PixelFormat", rename_all = "snake_case")]
enum PixelFormatName {
    Mjpeg,
    Yuyv,
    Auto,
}

/// The names of `[camera] pace`.
#[derive(Deserialize)]
#[serde(remote = "ReplayPace")]
enum ReplayPaceName {
    #[serde(rename = "fast")]
    AsFastAsPossible,
    #[serde(rename = "realtime")]
    RealTime,
}

/// The names of `[model] providers`.
#[derive(Deserialize)]
#[serde(remote = "ExecutionProviderKind", rename_all = "lowercase")]
enum ProviderName {
    TensorRt,
    Cuda,
    Cpu,
}

/// One of `[model] providers`: `tensorrt`, `cuda` or `cpu`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct Provider(#[serde(with = "ProviderName")] pub ExecutionProviderKind);

/// The names of `[fc] publisher`.
#[derive(Deserialize)]
#[serde(remote = "Publisher", rename_all = "snake_case")]
enum PublisherName {
    Auto,
    GpsInput,
    GlobalPositionSensor,
    Odometry,
}

/// The names of `[fc] policy`.
#[derive(Deserialize)]
#[serde(remote = "PublishPolicy", rename_all = "snake_case")]
enum PublishPolicyName {
    WhenDenied,
    Always,
    Never,
}

/// A duration in whole milliseconds, as the file writes it.
fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// `[camera]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawCamera {
    /// `v4l2`, `replay` or `sim` (required).
    pub source: Option<CameraSource>,
    /// V4L2 device.
    pub device: PathBuf,
    /// V4L2 capture width, pixels (required for `v4l2`).
    pub width: Option<u32>,
    /// V4L2 capture height, pixels (required for `v4l2`).
    pub height: Option<u32>,
    /// V4L2 frame rate.
    pub fps: u32,
    /// V4L2 pixel format (`auto`, `mjpeg`, `yuyv`).
    #[serde(with = "PixelFormatName")]
    pub format: PixelFormat,
    /// V4L2 mapped buffers (2 to 4).
    pub buffers: u32,
    /// Added to the V4L2 buffer timestamp to reach the middle of the exposure, µs.
    pub timestamp_offset_us: i64,
    /// Replay: the recorded folder (required for `replay`).
    pub folder: Option<PathBuf>,
    /// Replay: `realtime` (the recorded timing) or `fast` (as fast as the pipeline takes them, lossless).
    #[serde(with = "ReplayPaceName")]
    pub pace: ReplayPace,
    /// The camera calibration file (required).
    pub calib: Option<PathBuf>,
    /// No frame for this long: the camera is reported stalled.
    pub stall_timeout_s: f64,
}

impl Default for RawCamera {
    fn default() -> Self {
        let v4l2 = V4l2Config::new("/dev/video0", 0, 0, 30);
        Self {
            source: None,
            device: v4l2.device,
            width: None,
            height: None,
            fps: v4l2.fps,
            format: v4l2.format,
            buffers: v4l2.buffers,
            timestamp_offset_us: v4l2.timestamp_offset_us,
            folder: None,
            pace: ReplayPace::RealTime,
            calib: None,
            stall_timeout_s: HealthConfig::default().stall_timeout.as_secs_f64(),
        }
    }
}

/// `[model]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawModel {
    /// The exported model (`.onnx` with its `.json` manifest beside it; required).
    pub path: Option<PathBuf>,
    /// `auto`, `ort` or `tract`.
    #[serde(with = "EngineName")]
    pub engine: EngineChoice,
    /// ONNX Runtime's library.
    pub ort_library: Option<PathBuf>,
    /// Execution providers to try, in order: `tensorrt`, `cuda`, `cpu`.
    pub providers: Vec<Provider>,
    /// TensorRT engine cache folder.
    pub trt_cache: Option<PathBuf>,
    /// TensorRT FP16.
    pub trt_fp16: bool,
    /// ONNX Runtime intra-op threads.
    pub threads: Option<usize>,
}

impl Default for RawModel {
    fn default() -> Self {
        let encoder = EncoderConfig::default();
        Self {
            path: None,
            engine: encoder.engine,
            ort_library: None,
            providers: encoder.ort.providers.into_iter().map(Provider).collect(),
            trt_cache: None,
            trt_fp16: encoder.ort.tensorrt_fp16,
            threads: None,
        }
    }
}

/// `[cache]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawCache {
    /// The tile cache file (required).
    pub path: Option<PathBuf>,
    /// Candidates per frame.
    pub top_k: usize,
    /// Prior window radius, metres.
    pub prior_radius_m: f64,
}

impl Default for RawCache {
    fn default() -> Self {
        let d = PipelineConfig::default();
        Self {
            path: None,
            top_k: d.top_k,
            prior_radius_m: d.prior_radius_m,
        }
    }
}

/// `[rectify]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawRectify {
    /// Largest angle between the optical axis and nadir, degrees.
    pub max_tilt_deg: f64,
    /// Smallest fraction of the rectified view inside the frame.
    pub min_coverage: f64,
    /// Autopilot attitude older than this is not used, milliseconds.
    pub max_attitude_age_ms: u64,
    /// Side of the rectified view, pixels (default: the model's input size).
    pub size_px: Option<u32>,
    /// Side of the rectified view on the ground, metres (default: per frame, the largest cache footprint
    /// the camera sees whole).
    pub ground_size_m: Option<f64>,
}

impl Default for RawRectify {
    fn default() -> Self {
        let d = PipelineConfig::default();
        Self {
            max_tilt_deg: d.rectify_limits.max_tilt_deg,
            min_coverage: d.rectify_limits.min_coverage,
            max_attitude_age_ms: millis(d.max_attitude_age),
            size_px: d.rectify_size_px,
            ground_size_m: d.rectify_ground_size_m,
        }
    }
}

/// `[fc]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawFc {
    /// The link address (required).
    pub link: Option<String>,
    /// `auto`, `gps_input`, `global_position_sensor` or `odometry`.
    #[serde(with = "PublisherName")]
    pub publisher: Publisher,
    /// `when_denied`, `always` or `never`.
    #[serde(with = "PublishPolicyName")]
    pub policy: PublishPolicy,
    /// ArduPilot GPS instance, 0-based.
    pub gps_instance: u8,
    /// Satellites claimed in GPS_INPUT.
    pub satellites: u8,
    /// Vertical accuracy claimed, metres.
    pub vert_accuracy_m: f32,
    /// GLOBAL_POSITION_SENSOR id (default: the link's, [`LinkConfig::new`]).
    pub sensor_id: Option<u8>,
    /// Our system id (default: the autopilot's).
    pub system_id: Option<u8>,
    /// Our component id (default: the link's, [`LinkConfig::new`]).
    pub component_id: Option<u8>,
    /// MAVLink 2 signing key file.
    pub signing_key: Option<PathBuf>,
    /// A fix still queued this long after its exposure is dropped, milliseconds.
    pub max_fix_age_ms: u64,
}

impl Default for RawFc {
    fn default() -> Self {
        let gps = GpsInputConfig::default();
        Self {
            link: None,
            publisher: Publisher::default(),
            policy: PublishPolicy::default(),
            gps_instance: gps.gps_instance,
            satellites: gps.satellites,
            vert_accuracy_m: gps.vert_accuracy_m,
            sensor_id: None,
            system_id: None,
            component_id: None,
            signing_key: None,
            max_fix_age_ms: 500,
        }
    }
}

/// `[pipeline]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawPipeline {
    /// Capacity of the channels after the encoder (encode → match → publish).
    pub channel_capacity: usize,
    /// Capacity of the report channel the caller reads.
    pub report_capacity: usize,
    /// Never drop a frame between camera and encoder (default: with a `fast` replay).
    pub lossless: Option<bool>,
    /// The encoder is too slow when the median of its recent latencies exceeds this, milliseconds.
    pub encoder_slow_ms: f64,
    /// Record the processed frames (with their pose) into this replay folder.
    pub record: Option<PathBuf>,
    /// Append one CSV line per frame to this file.
    pub fix_log: Option<PathBuf>,
}

impl Default for RawPipeline {
    fn default() -> Self {
        let d = PipelineConfig::default();
        Self {
            channel_capacity: d.channel_capacity,
            report_capacity: d.report_capacity,
            lossless: None,
            encoder_slow_ms: d.health.encoder_slow.as_secs_f64() * 1000.0,
            record: d.record,
            fix_log: d.fix_log,
        }
    }
}

/// `[health]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawHealth {
    /// How often the health thread looks, milliseconds.
    pub period_ms: u64,
    /// How many recent encode latencies the encoder check takes the median of.
    pub encoder_window: usize,
    /// A stage silent for this long while it has work is not alive (the watchdog stops), seconds.
    pub stage_timeout_s: f64,
    /// Send health conditions to the autopilot as STATUSTEXT.
    pub statustext: bool,
}

impl Default for RawHealth {
    fn default() -> Self {
        let d = HealthConfig::default();
        Self {
            period_ms: millis(d.period),
            encoder_window: d.encoder_window,
            stage_timeout_s: d.stage_timeout.as_secs_f64(),
            statustext: d.statustext,
        }
    }
}

// ---- Resolved ------------------------------------------------------------------------------------------

/// Which camera source the config chooses.
#[derive(Debug, Clone, PartialEq)]
pub enum CameraChoice {
    /// A V4L2 device.
    V4l2(V4l2Config),
    /// A recorded folder.
    Replay {
        /// The folder.
        folder: PathBuf,
        /// Its pace.
        options: ReplayOptions,
    },
    /// The simulated camera: built by `vimgeo sim`, not from the config.
    Sim,
}

/// `[camera]`, resolved.
#[derive(Debug, Clone, PartialEq)]
pub struct CameraSettings {
    /// The source.
    pub source: CameraChoice,
    /// The calibration file.
    pub calib: PathBuf,
}

/// `[model]`, resolved.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelSettings {
    /// The model file.
    pub path: PathBuf,
    /// The engine settings; `ort_library.explicit` from the config, the rest for the binary to fill from
    /// the environment.
    pub encoder: EncoderConfig,
}

/// `[cache]`'s file, resolved.
#[derive(Debug, Clone, PartialEq)]
pub struct CacheSettings {
    /// The tile cache file.
    pub path: PathBuf,
}

/// What the health thread watches, and how.
#[derive(Debug, Clone, PartialEq)]
pub struct HealthConfig {
    /// How often it looks.
    pub period: Duration,
    /// No frame for this long: camera stalled.
    pub stall_timeout: Duration,
    /// The encoder is too slow when the median of its last `encoder_window` latencies exceeds this.
    pub encoder_slow: Duration,
    /// See `encoder_slow`.
    pub encoder_window: usize,
    /// A stage with work that made no progress for this long is not alive: no watchdog ping.
    pub stage_timeout: Duration,
    /// Send conditions to the autopilot as STATUSTEXT.
    pub statustext: bool,
    /// systemd's notification socket (`$NOTIFY_SOCKET`, filled by the binary): READY=1, WATCHDOG=1 and
    /// STATUS= go there. `None`: no notifications.
    pub notify_socket: Option<String>,
}

impl Default for HealthConfig {
    fn default() -> Self {
        Self {
            period: Duration::from_millis(500),
            stall_timeout: Duration::from_secs(2),
            encoder_slow: Duration::from_millis(500),
            encoder_window: 20,
            stage_timeout: Duration::from_secs(10),
            statustext: true,
            notify_socket: None,
        }
    }
}

/// Everything the pipeline itself needs besides the components it is handed (see
/// [`super::PipelineParts`]).
#[derive(Debug, Clone, PartialEq)]
pub struct PipelineConfig {
    /// When a pose is refused.
    pub rectify_limits: RectifyLimits,
    /// Autopilot attitude and height older than this are not used.
    pub max_attitude_age: Duration,
    /// Rectified view side, pixels; `None`: the model's input size.
    pub rectify_size_px: Option<u32>,
    /// Rectified view side on the ground, metres; `None`: chosen per frame from the cache's footprints.
    pub rectify_ground_size_m: Option<f64>,
    /// Candidates per frame.
    pub top_k: usize,
    /// Prior window radius around the last fix, metres (the fix's accuracy is added).
    pub prior_radius_m: f64,
    /// The localizer.
    pub localize: LocalizerConfig,
    /// Capacity of the encode → match and match → publish channels.
    pub channel_capacity: usize,
    /// Capacity of the caller's report channel (reports beyond it are counted as lost, never block).
    pub report_capacity: usize,
    /// Never drop between camera and encoder: each stage waits for the next.
    pub lossless: bool,
    /// Replay folder to record processed frames into.
    pub record: Option<PathBuf>,
    /// CSV file, one line per frame.
    pub fix_log: Option<PathBuf>,
    /// A replay's recorded GNSS anchors (`<folder>/anchors.csv`, [`super::ANCHORS_SIDECAR`]): when the file
    /// exists, each replayed frame is anchored as the live run anchored it, and never on the link's GNSS.
    /// Not read from the configuration file: `vimgeo run` and the simulation's replay set it for a replay
    /// camera.
    pub replay_anchors: Option<PathBuf>,
    /// Health watching.
    pub health: HealthConfig,
}

impl Default for PipelineConfig {
    fn default() -> Self {
        Self {
            rectify_limits: RectifyLimits::default(),
            max_attitude_age: Duration::from_millis(200),
            rectify_size_px: None,
            rectify_ground_size_m: None,
            top_k: 16,
            prior_radius_m: 500.0,
            localize: LocalizerConfig::default(),
            channel_capacity: 2,
            report_capacity: 1024,
            lossless: false,
            record: None,
            fix_log: None,
            replay_anchors: None,
            health: HealthConfig::default(),
        }
    }
}

/// The whole onboard configuration, resolved.
#[derive(Debug, Clone)]
pub struct OnboardConfig {
    /// The file it came from.
    pub file: PathBuf,
    /// `[camera]`.
    pub camera: CameraSettings,
    /// `[model]`.
    pub model: ModelSettings,
    /// `[cache]`.
    pub cache: CacheSettings,
    /// `[fc]`.
    pub fc: LinkConfig,
    /// The rest.
    pub pipeline: PipelineConfig,
}

impl OnboardConfig {
    /// Reads and resolves `file` (no file it names is opened: see [`Self::check_paths`]).
    pub fn load(file: &Path) -> Result<Self, ConfigError> {
        Self::from_toml_str(&config_file::read(file, "configuration")?, file)
    }

    /// Parses and resolves `text` as if read from `file` (relative paths resolve against its folder).
    pub fn from_toml_str(text: &str, file: &Path) -> Result<Self, ConfigError> {
        let raw: RawConfig = config_file::parse(text, file)?;
        Resolver {
            f: ConfigFile::new(file),
        }
        .resolve(raw)
    }

    /// Checks that the files and folders the configuration reads exist: the calibration, the model, the
    /// cache, a replay folder, a V4L2 device and a signing key. The error names the file and the key.
    pub fn check_paths(&self) -> Result<(), ConfigError> {
        let r = ConfigFile::new(&self.file);
        r.exists("camera", "calib", &self.camera.calib)?;
        match &self.camera.source {
            CameraChoice::V4l2(v) => r.exists("camera", "device", &v.device)?,
            CameraChoice::Replay { folder, .. } => r.exists("camera", "folder", folder)?,
            CameraChoice::Sim => {}
        }
        r.exists("model", "path", &self.model.path)?;
        r.exists("cache", "path", &self.cache.path)?;
        if let Some(key) = &self.fc.signing_key {
            r.exists("fc", "signing_key", key)?;
        }
        Ok(())
    }
}

struct Resolver<'a> {
    f: ConfigFile<'a>,
}

impl Resolver<'_> {
    fn resolve(&self, raw: RawConfig) -> Result<OnboardConfig, ConfigError> {
        let camera = self.camera(&raw.camera)?;
        let stall_timeout = Duration::from_secs_f64(self.f.positive(
            "camera",
            "stall_timeout_s",
            raw.camera.stall_timeout_s,
        )?);
        let model = self.model(&raw.model)?;
        let c = &raw.cache;
        let top_k = self.f.nonzero("cache", "top_k", c.top_k)?;
        let prior_radius_m = self
            .f
            .positive("cache", "prior_radius_m", c.prior_radius_m)?;
        let cache = CacheSettings {
            path: self
                .f
                .path(self.f.given("cache", "path", c.path.as_deref())?),
        };
        let r = &raw.rectify;
        let max_tilt_deg = r.max_tilt_deg;
        if !(max_tilt_deg.is_finite() && max_tilt_deg > 0.0 && max_tilt_deg < 90.0) {
            return Err(self.f.invalid(
                "rectify",
                "max_tilt_deg",
                format!("must be in (0, 90) degrees (got {max_tilt_deg})"),
            ));
        }
        let min_coverage = self.f.fraction("rectify", "min_coverage", r.min_coverage)?;
        let max_attitude_age_ms =
            self.f
                .nonzero("rectify", "max_attitude_age_ms", r.max_attitude_age_ms)?;
        if let Some(size_px) = r.size_px {
            self.f.nonzero("rectify", "size_px", size_px)?;
        }
        if let Some(g) = r.ground_size_m {
            self.f.positive("rectify", "ground_size_m", g)?;
        }
        self.f.localize(&raw.localize)?;
        let fc = self.fc(&raw.fc)?;
        let p = &raw.pipeline;
        let encoder_slow_ms = self
            .f
            .positive("pipeline", "encoder_slow_ms", p.encoder_slow_ms)?;
        let lossless = p.lossless.unwrap_or(matches!(
            camera.source,
            CameraChoice::Replay {
                options: ReplayOptions {
                    pace: ReplayPace::AsFastAsPossible,
                    ..
                },
                ..
            }
        ));
        let h = &raw.health;
        let period_ms = self.f.nonzero("health", "period_ms", h.period_ms)?;
        let health = HealthConfig {
            period: Duration::from_millis(period_ms),
            stall_timeout,
            encoder_slow: Duration::from_secs_f64(encoder_slow_ms / 1000.0),
            encoder_window: self
                .f
                .nonzero("health", "encoder_window", h.encoder_window)?,
            stage_timeout: Duration::from_secs_f64(self.f.positive(
                "health",
                "stage_timeout_s",
                h.stage_timeout_s,
            )?),
            statustext: h.statustext,
            notify_socket: None,
        };
        let pipeline = PipelineConfig {
            rectify_limits: RectifyLimits {
                max_tilt_deg,
                min_coverage,
            },
            max_attitude_age: Duration::from_millis(max_attitude_age_ms),
            rectify_size_px: r.size_px,
            rectify_ground_size_m: r.ground_size_m,
            top_k,
            prior_radius_m,
            localize: raw.localize.clone(),
            channel_capacity: self
                .f
                .nonzero("pipeline", "channel_capacity", p.channel_capacity)?,
            report_capacity: self
                .f
                .nonzero("pipeline", "report_capacity", p.report_capacity)?,
            lossless,
            record: p.record.as_deref().map(|d| self.f.path(d)),
            fix_log: p.fix_log.as_deref().map(|d| self.f.path(d)),
            replay_anchors: None,
            health,
        };
        Ok(OnboardConfig {
            file: self.f.file().to_path_buf(),
            camera,
            model,
            cache,
            fc,
            pipeline,
        })
    }

    fn camera(&self, c: &RawCamera) -> Result<CameraSettings, ConfigError> {
        let source = match self.f.given("camera", "source", c.source)? {
            CameraSource::V4l2 => {
                let width = self
                    .f
                    .required("camera", "width", c.width, "for source \"v4l2\"")?;
                let height =
                    self.f
                        .required("camera", "height", c.height, "for source \"v4l2\"")?;
                self.f.nonzero("camera", "width", width)?;
                self.f.nonzero("camera", "height", height)?;
                let fps = self.f.nonzero("camera", "fps", c.fps)?;
                if !(2..=4).contains(&c.buffers) {
                    return Err(self.f.invalid(
                        "camera",
                        "buffers",
                        format!("must be 2 to 4 (got {})", c.buffers),
                    ));
                }
                let mut v4l2 = V4l2Config::new(self.f.path(&c.device), width, height, fps);
                v4l2.format = c.format;
                v4l2.buffers = c.buffers;
                v4l2.timestamp_offset_us = c.timestamp_offset_us;
                CameraChoice::V4l2(v4l2)
            }
            CameraSource::Replay => {
                let folder = self.f.required(
                    "camera",
                    "folder",
                    c.folder.as_deref(),
                    "for source \"replay\"",
                )?;
                CameraChoice::Replay {
                    folder: self.f.path(folder),
                    options: ReplayOptions {
                        pace: c.pace,
                        loop_: false,
                    },
                }
            }
            CameraSource::Sim => CameraChoice::Sim,
        };
        Ok(CameraSettings {
            source,
            calib: self
                .f
                .path(self.f.given("camera", "calib", c.calib.as_deref())?),
        })
    }

    fn model(&self, m: &RawModel) -> Result<ModelSettings, ConfigError> {
        if m.providers.is_empty() {
            return Err(self
                .f
                .invalid("model", "providers", "must name at least one provider"));
        }
        let ort = OrtConfig {
            providers: m.providers.iter().map(|p| p.0).collect(),
            tensorrt_cache_dir: m.trt_cache.as_deref().map(|p| self.f.path(p)),
            tensorrt_fp16: m.trt_fp16,
            intra_threads: m
                .threads
                .map(|t| self.f.nonzero("model", "threads", t))
                .transpose()?,
            ..OrtConfig::default()
        };
        let mut encoder = EncoderConfig {
            engine: m.engine,
            ort,
            tract: TractConfig::default(),
            ..EncoderConfig::default()
        };
        encoder.ort_library.explicit = m.ort_library.as_deref().map(|p| self.f.path(p));
        Ok(ModelSettings {
            path: self
                .f
                .path(self.f.given("model", "path", m.path.as_deref())?),
            encoder,
        })
    }

    fn fc(&self, f: &RawFc) -> Result<LinkConfig, ConfigError> {
        let link = self.f.given("fc", "link", f.link.as_deref())?;
        let address =
            LinkAddress::parse(link).map_err(|e| self.f.invalid("fc", "link", e.to_string()))?;
        let mut link = LinkConfig::new(address);
        link.publisher = f.publisher;
        link.policy = f.policy;
        link.gps_input = GpsInputConfig {
            gps_instance: f.gps_instance,
            satellites: f.satellites,
            vert_accuracy_m: f.vert_accuracy_m,
        };
        self.f.positive(
            "fc",
            "vert_accuracy_m",
            f64::from(link.gps_input.vert_accuracy_m),
        )?;
        if let Some(id) = f.sensor_id {
            link.global_position_sensor_id = id;
        }
        link.system_id = f.system_id;
        if let Some(c) = f.component_id {
            link.component_id = c;
        }
        link.signing_key = f.signing_key.as_deref().map(|p| self.f.path(p));
        let max_fix_age_ms = self.f.nonzero("fc", "max_fix_age_ms", f.max_fix_age_ms)?;
        link.max_fix_age = Some(Duration::from_millis(max_fix_age_ms));
        Ok(link)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"
[camera]
source = "replay"
folder = "frames"
calib = "camera.toml"
[model]
path = "model.onnx"
engine = "tract"
[cache]
path = "/var/lib/vimgeo/cache/mission.vgc"
[fc]
link = "udpin:127.0.0.1:14550"
"#;

    fn parse(text: &str) -> Result<OnboardConfig, ConfigError> {
        OnboardConfig::from_toml_str(text, Path::new("/etc/vimgeo/vimgeo.toml"))
    }

    #[test]
    fn minimal_config_resolves_with_defaults_and_relative_paths() {
        let c = parse(MINIMAL).unwrap();
        assert_eq!(
            c.camera.source,
            CameraChoice::Replay {
                folder: "/etc/vimgeo/frames".into(),
                options: ReplayOptions {
                    pace: ReplayPace::RealTime,
                    loop_: false
                }
            }
        );
        assert_eq!(c.camera.calib, Path::new("/etc/vimgeo/camera.toml"));
        assert_eq!(c.model.path, Path::new("/etc/vimgeo/model.onnx"));
        assert_eq!(c.cache.path, Path::new("/var/lib/vimgeo/cache/mission.vgc"));
        assert_eq!(c.model.encoder.engine, EngineChoice::Tract);
        assert_eq!(c.pipeline.top_k, 16);
        assert!(!c.pipeline.lossless);
        assert_eq!(c.fc.max_fix_age, Some(Duration::from_millis(500)));
    }

    #[test]
    fn keys_left_out_take_the_runtime_defaults() {
        let c = parse(MINIMAL).unwrap();
        assert_eq!(c.pipeline, PipelineConfig::default());
        assert_eq!(
            c.model.encoder,
            EncoderConfig {
                engine: EngineChoice::Tract,
                ..EncoderConfig::default()
            }
        );
        assert_eq!(c.fc.gps_input, GpsInputConfig::default());
        assert_eq!(c.fc.policy, PublishPolicy::default());
        assert_eq!(c.fc.publisher, Publisher::default());
        let address = LinkAddress::parse("udpin:127.0.0.1:14550").unwrap();
        let link = LinkConfig::new(address);
        assert_eq!(c.fc.component_id, link.component_id);
        assert_eq!(
            c.fc.global_position_sensor_id,
            link.global_position_sensor_id
        );
        let c = parse(&MINIMAL.replace(
            "source = \"replay\"",
            "source = \"v4l2\"\nwidth = 640\nheight = 480",
        ))
        .unwrap();
        assert_eq!(
            c.camera.source,
            CameraChoice::V4l2(V4l2Config::new("/dev/video0", 640, 480, 30))
        );
    }

    #[test]
    fn fast_replay_is_lossless_by_default() {
        let c = parse(&MINIMAL.replace(
            "folder = \"frames\"",
            "folder = \"frames\"\npace = \"fast\"",
        ))
        .unwrap();
        assert!(c.pipeline.lossless);
    }

    #[test]
    fn bad_values_name_file_section_and_key() {
        let text = MINIMAL.replace(
            "source = \"replay\"",
            "source = \"v4l2\"\nwidth = 640\nheight = 480\nfps = 0",
        );
        let msg = parse(&text).unwrap_err().to_string();
        assert_eq!(msg, "/etc/vimgeo/vimgeo.toml: [camera] fps: must be > 0");
        let msg = parse(&MINIMAL.replace("udpin:127.0.0.1:14550", "carrier-pigeon"))
            .unwrap_err()
            .to_string();
        assert!(
            msg.starts_with("/etc/vimgeo/vimgeo.toml: [fc] link:"),
            "{msg}"
        );
        let msg = parse(&format!("{MINIMAL}[pipeline]\nchanel_capacity = 3\n"))
            .unwrap_err()
            .to_string();
        assert!(
            msg.contains("/etc/vimgeo/vimgeo.toml") && msg.contains("chanel_capacity"),
            "{msg}"
        );
    }

    #[test]
    fn localize_errors_name_their_table_and_key() {
        let msg = |text: &str| parse(&format!("{MINIMAL}{text}")).unwrap_err().to_string();
        assert_eq!(
            msg("[localize.filter]\nmax_coast_s = 0.0\n"),
            "/etc/vimgeo/vimgeo.toml: [localize.filter] max_coast_s: is 0; it must be positive"
        );
        assert_eq!(
            msg("[localize]\noffset_accuracy95_m = -1.0\n"),
            "/etc/vimgeo/vimgeo.toml: [localize] offset_accuracy95_m: is -1; it must be finite and \
             not negative"
        );
        assert_eq!(
            msg("[localize.particles]\ntemperature = \"warm\"\n"),
            "/etc/vimgeo/vimgeo.toml: [localize.particles] temperature: invalid type: string \"warm\", \
             expected f64 (line 14, column 15)"
        );
        assert!(
            msg("[localize.estimator]\nkk = 3\n").starts_with(
                "/etc/vimgeo/vimgeo.toml: [localize.estimator] kk: unknown field `kk`, expected one of"
            ),
            "{}",
            msg("[localize.estimator]\nkk = 3\n")
        );
        assert!(msg("[localize]\nmethod = \"kalmann\"\n").starts_with(
            "/etc/vimgeo/vimgeo.toml: [localize] method: unknown variant `kalmann`, expected `kalman` \
             or `particles` (line 14, column 10)"
        ));
    }

    #[test]
    fn names_of_choices_are_checked_by_serde_with_their_key() {
        let msg = parse(&MINIMAL.replace("engine = \"tract\"", "engine = \"onnx\""))
            .unwrap_err()
            .to_string();
        assert_eq!(
            msg,
            "/etc/vimgeo/vimgeo.toml: [model] engine: unknown variant `onnx`, expected one of `ort`, \
             `tract`, `auto` (line 8, column 10)"
        );
        let msg = parse(&MINIMAL.replace("[cache]", "providers = [\"cpu\", \"gpu\"]\n[cache]"))
            .unwrap_err()
            .to_string();
        assert!(
            msg.starts_with(
                "/etc/vimgeo/vimgeo.toml: [model] providers[1]: unknown variant `gpu`, expected one of \
                 `tensorrt`, `cuda`, `cpu`"
            ),
            "{msg}"
        );
        let msg = parse(&MINIMAL.replace("calib = \"camera.toml\"\n", ""))
            .unwrap_err()
            .to_string();
        assert_eq!(msg, "/etc/vimgeo/vimgeo.toml: [camera] calib: missing");
        let msg = parse(&MINIMAL.replace("[fc]\nlink = \"udpin:127.0.0.1:14550\"\n", ""))
            .unwrap_err()
            .to_string();
        assert!(
            msg.starts_with("/etc/vimgeo/vimgeo.toml: fc: missing"),
            "{msg}"
        );
    }

    #[test]
    fn the_documented_deploy_example_resolves_to_its_values() {
        let file = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/vimgeo.toml");
        let c = OnboardConfig::load(&file).unwrap();
        let mut v4l2 = V4l2Config::new("/dev/vimgeo-camera", 1280, 720, 10);
        v4l2.format = PixelFormat::Auto;
        v4l2.buffers = 3;
        v4l2.timestamp_offset_us = 0;
        assert_eq!(
            c.camera,
            CameraSettings {
                source: CameraChoice::V4l2(v4l2),
                calib: "/etc/vimgeo/camera.toml".into(),
            }
        );
        let mut encoder = EncoderConfig::default();
        encoder.ort.tensorrt_cache_dir = Some("/var/lib/vimgeo/trt-cache".into());
        encoder.ort.tensorrt_fp16 = true;
        assert_eq!(
            c.model,
            ModelSettings {
                path: "/var/lib/vimgeo/models/vimgeo-demo.onnx".into(),
                encoder,
            }
        );
        assert_eq!(c.cache.path, Path::new("/var/lib/vimgeo/cache/mission.vgc"));
        let d = PipelineConfig::default();
        assert_eq!(
            c.pipeline,
            PipelineConfig {
                rectify_limits: RectifyLimits {
                    max_tilt_deg: 35.0,
                    min_coverage: 0.98,
                },
                localize: LocalizerConfig {
                    method: crate::localize::Method::Particles,
                    ..LocalizerConfig::default()
                },
                fix_log: Some("/var/lib/vimgeo/state/fixes.csv".into()),
                health: HealthConfig {
                    encoder_slow: Duration::from_millis(250),
                    stage_timeout: Duration::from_secs(8),
                    ..d.health.clone()
                },
                ..d
            }
        );
        let fc = &c.fc;
        assert_eq!(fc.address.to_string(), "serial:/dev/vimgeo-fc:921600");
        assert_eq!(
            (fc.publisher, fc.policy, fc.gps_input),
            (
                Publisher::Auto,
                PublishPolicy::WhenDenied,
                GpsInputConfig {
                    gps_instance: 1,
                    satellites: 10,
                    vert_accuracy_m: 10.0,
                }
            )
        );
        assert_eq!(
            (
                fc.global_position_sensor_id,
                fc.system_id,
                fc.component_id,
                fc.signing_key.as_deref(),
                fc.max_fix_age,
            ),
            (0, None, 197, None, Some(Duration::from_millis(500)))
        );
    }

    #[test]
    fn the_documented_deploy_example_parses() {
        let file = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/vimgeo.toml");
        let c = OnboardConfig::load(&file).unwrap();
        assert!(matches!(c.camera.source, CameraChoice::V4l2(ref v)
                if v.device == Path::new("/dev/vimgeo-camera") && v.fps == 10));
        assert_eq!(c.camera.calib, Path::new("/etc/vimgeo/camera.toml"));
        assert_eq!(
            c.model.path,
            Path::new("/var/lib/vimgeo/models/vimgeo-demo.onnx")
        );
        assert_eq!(c.cache.path, Path::new("/var/lib/vimgeo/cache/mission.vgc"));
        assert_eq!(c.fc.address.to_string(), "serial:/dev/vimgeo-fc:921600");
        assert_eq!(c.fc.policy, PublishPolicy::WhenDenied);
        assert_eq!(
            c.pipeline.fix_log.as_deref(),
            Some(Path::new("/var/lib/vimgeo/state/fixes.csv"))
        );
    }

    #[test]
    fn missing_paths_are_reported_by_check_paths_only() {
        let c = parse(MINIMAL).unwrap();
        let msg = c.check_paths().unwrap_err().to_string();
        assert!(msg.contains("[camera] calib"), "{msg}");
    }

    #[test]
    fn an_unreadable_file_is_named_as_the_configuration() {
        let missing = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/no-such.toml");
        let msg = OnboardConfig::load(&missing).unwrap_err().to_string();
        assert!(
            msg.starts_with(&format!(
                "{}: cannot read the configuration:",
                missing.display()
            )),
            "{msg}"
        );
        let msg = parse(&MINIMAL.replace("[cache]", "[cache]\nprior_radius_m = 0.0"))
            .unwrap_err()
            .to_string();
        assert_eq!(
            msg,
            "/etc/vimgeo/vimgeo.toml: [cache] prior_radius_m: is 0; it must be > 0"
        );
    }
}
