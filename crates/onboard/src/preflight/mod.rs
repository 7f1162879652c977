//! The pre-flight check (`vimgeo preflight --config FILE`): is everything the onboard pipeline needs there
//! and right, before take-off? Each check is a function returning a [`CheckResult`] (pass/fail, what was
//! found, and the fix to apply when it failed); [`run_preflight`] runs them all from the onboard config and
//! returns a [`PreflightReport`] (a table for people, JSON for scripts).
//!
//! The checks, in order (later ones use what earlier ones found):
//! 1. `calibration` ([`check_calibration`]): the camera calibration loads and validates, and is not the
//!    shipped example (`example = true`).
//! 2. `camera` ([`check_camera`]): the configured source opens and delivers [`PreflightOptions::frames`]
//!    frames within [`PreflightOptions::camera_timeout`], at the calibration's image size.
//! 3. `model` ([`check_model`]): the model loads with the configured engine and runs on the first configured
//!    execution provider (not a silent fallback: with engine `auto`, ending up on tract fails too; set
//!    `engine = "tract"` to run on the CPU on purpose), and encodes one frame; the latency is reported.
//! 4. `cache` ([`check_cache`]): the tile cache opens, its checksum holds, and it was built with this model
//!    (SHA-256 and dimension).
//! 5. `area coverage` ([`check_coverage`]): every planned waypoint and every point of each planned circle is
//!    on some tile (see [`area`]); without a planned area it passes with a warning.
//! 6. `autopilot link` ([`check_link`]): an autopilot HEARTBEAT arrives within
//!    [`PreflightOptions::link_timeout`]; then `publisher` (the autopilot takes what we will send) and one
//!    `param NAME` check per parameter our position source depends on ([`autopilot`]), read over the link.
//!
//! Nothing here publishes a fix or changes a parameter: the link is opened with policy `never`. Stop the
//! `vimgeo` service first: it holds the camera and the link's port.

pub mod area;
pub mod autopilot;

use std::fmt::Write as _;
use std::path::Path;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::camera::{CameraError, CameraSource, ReplaySource, V4l2Source};
use crate::encoder::{
    open_encoder, CheckedModel, EncoderConfig, EngineChoice, ModelManifest, RgbImage,
};
use crate::fc::{AutopilotKind, FcLink, LinkConfig, PublishPolicy};
use crate::matching::{CacheError, CacheExpectation, TileCache};
use crate::pipeline::{CameraChoice, ModelSettings, OnboardConfig};
use crate::rectify::CameraCalibration;

pub use self::area::{AreaCircle, AreaError, Coverage, PlannedArea, Waypoint};
pub use self::autopilot::{expected_params, ParamExpectation, Rule};

/// The outcome of one check.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CheckResult {
    /// What was checked, e.g. `camera` or `param GPS2_TYPE`.
    pub name: String,
    /// Whether it passed.
    pub passed: bool,
    /// What was found (a pass with a caveat starts with `warning:`).
    pub detail: String,
    /// What to do about a failure.
    pub fix: Option<String>,
}

impl CheckResult {
    /// A passed check.
    pub fn pass(name: impl Into<String>, detail: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            passed: true,
            detail: detail.into(),
            fix: None,
        }
    }

    /// A failed check and its fix.
    pub fn fail(
        name: impl Into<String>,
        detail: impl Into<String>,
        fix: impl Into<String>,
    ) -> Self {
        Self {
            name: name.into(),
            passed: false,
            detail: detail.into(),
            fix: Some(fix.into()),
        }
    }
}

/// Timeouts and the planned area; the rest comes from the onboard config.
#[derive(Debug, Clone)]
pub struct PreflightOptions {
    /// Where the flight goes (empty: coverage is not checked).
    pub area: PlannedArea,
    /// How many frames the camera must deliver.
    pub frames: usize,
    /// Within how long.
    pub camera_timeout: Duration,
    /// How long to wait for the autopilot's HEARTBEAT.
    pub link_timeout: Duration,
    /// How long to wait for each PARAM_VALUE.
    pub param_timeout: Duration,
    /// How many times to ask for each parameter.
    pub param_attempts: u32,
}

impl Default for PreflightOptions {
    fn default() -> Self {
        Self {
            area: PlannedArea::default(),
            frames: 3,
            camera_timeout: Duration::from_secs(5),
            link_timeout: Duration::from_secs(5),
            param_timeout: Duration::from_secs(1),
            param_attempts: 3,
        }
    }
}

/// Every check's result, in order.
#[derive(Debug, Clone, Serialize)]
pub struct PreflightReport {
    /// Whether every check passed.
    pub passed: bool,
    /// The checks.
    pub checks: Vec<CheckResult>,
}

impl PreflightReport {
    /// A report of `checks`.
    pub fn new(checks: Vec<CheckResult>) -> Self {
        Self {
            passed: checks.iter().all(|c| c.passed),
            checks,
        }
    }

    /// The check named `name`.
    pub fn check(&self, name: &str) -> Option<&CheckResult> {
        self.checks.iter().find(|c| c.name == name)
    }

    /// The report as a table: `PASS`/`FAIL`, check, detail, and the fix on the line below a failure.
    pub fn table(&self) -> String {
        let width = self
            .checks
            .iter()
            .map(|c| c.name.len())
            .max()
            .unwrap_or(0)
            .max("CHECK".len());
        let mut out = format!("{:<6}{:<width$}  DETAIL\n", "", "CHECK");
        for c in &self.checks {
            let status = if c.passed { "PASS" } else { "FAIL" };
            let _ = writeln!(out, "{status:<6}{:<width$}  {}", c.name, c.detail);
            if let Some(fix) = &c.fix {
                let _ = writeln!(out, "{:<6}{:<width$}  fix: {fix}", "", "");
            }
        }
        let failed = self.checks.iter().filter(|c| !c.passed).count();
        let _ = writeln!(
            out,
            "{}",
            if failed == 0 {
                format!("preflight passed: {} checks", self.checks.len())
            } else {
                format!("preflight FAILED: {failed} of {} checks", self.checks.len())
            }
        );
        out
    }
}

/// Runs every check of the module documentation from `config` (whose ONNX Runtime library search the
/// binary has filled from the environment) and returns their results.
pub fn run_preflight(config: &OnboardConfig, options: &PreflightOptions) -> PreflightReport {
    let mut checks = Vec::new();
    let (result, calibration) = check_calibration(&config.camera.calib);
    checks.push(result);
    let (result, frame) = match open_camera(&config.camera.source) {
        Ok(mut source) => check_camera(source.as_mut(), calibration.as_ref(), options),
        Err(e) => (camera_open_failed(&e), None),
    };
    checks.push(result);
    let (result, manifest) = check_model(&config.model, frame.as_ref());
    checks.push(result);
    let (result, cache) = check_cache(&config.cache.path, manifest.as_ref());
    checks.push(result);
    checks.push(check_coverage(
        &config.cache.path,
        cache.as_ref(),
        &options.area,
    ));
    checks.extend(check_link(&config.fc, options));
    PreflightReport::new(checks)
}

// ---- 1. calibration ---------------------------------------------------------------------------------------

/// Loads and validates the calibration at `path`; an example calibration fails.
pub fn check_calibration(path: &Path) -> (CheckResult, Option<CameraCalibration>) {
    const NAME: &str = "calibration";
    let calib = match CameraCalibration::load(path).and_then(|c| c.validate().map(|()| c)) {
        Ok(c) => c,
        Err(e) => {
            return (
                CheckResult::fail(
                    NAME,
                    e.to_string(),
                    format!(
                        "fix the file or set [camera] calib to this camera's calibration \
                         (`vimgeo calib check {}`; format: calib/README.md)",
                        path.display()
                    ),
                ),
                None,
            )
        }
    };
    let size = format!("{}x{}", calib.image.width, calib.image.height);
    if calib.example {
        return (
            CheckResult::fail(
                NAME,
                format!(
                    "{}: `{}` has example values (example = true), not a calibration of this camera",
                    path.display(),
                    calib.name
                ),
                "calibrate this camera (calib/README.md; `vimgeo calib import` reads OpenCV and ROS results) \
                 and point [camera] calib at the result",
            ),
            Some(calib),
        );
    }
    let result = CheckResult::pass(
        NAME,
        format!(
            "{}: `{}`, {size}, fx {:.1} px",
            path.display(),
            calib.name,
            calib.intrinsics.fx
        ),
    );
    (result, Some(calib))
}

// ---- 2. camera --------------------------------------------------------------------------------------------

/// Opens the configured camera source (the simulated camera cannot be: `vimgeo sim` builds it).
pub fn open_camera(choice: &CameraChoice) -> Result<Box<dyn CameraSource>, CameraError> {
    match choice {
        CameraChoice::V4l2(config) => Ok(Box::new(V4l2Source::open(config)?)),
        CameraChoice::Replay { folder, options } => {
            Ok(Box::new(ReplaySource::open(folder, *options)?))
        }
        CameraChoice::Sim => Err(CameraError::Config {
            field: "source",
            reason: "\"sim\" is the simulated camera, built by `vimgeo sim`: preflight checks a real source"
                .into(),
        }),
    }
}

fn camera_open_failed(e: &CameraError) -> CheckResult {
    CheckResult::fail(
        "camera",
        format!("cannot open: {e}"),
        "check [camera] in the config: the device is plugged in and named right (`v4l2-ctl --list-devices`), \
         or the replay folder exists; stop the vimgeo service if it holds the camera",
    )
}

/// Reads [`PreflightOptions::frames`] frames from `source` within [`PreflightOptions::camera_timeout`] and
/// compares their size with `calibration`'s. Returns the last frame, for the model check.
pub fn check_camera(
    source: &mut dyn CameraSource,
    calibration: Option<&CameraCalibration>,
    options: &PreflightOptions,
) -> (CheckResult, Option<RgbImage>) {
    const NAME: &str = "camera";
    let what = source.describe();
    let started = Instant::now();
    let deadline = started + options.camera_timeout;
    let wanted = options.frames.max(1);
    let mut got = 0;
    let mut last: Option<RgbImage> = None;
    let mut last_error = None;
    while got < wanted {
        let now = Instant::now();
        if now >= deadline {
            break;
        }
        match source.next_frame(deadline - now) {
            Ok(frame) => {
                got += 1;
                last = Some(frame.image);
            }
            Err(CameraError::Ended) => {
                last_error = Some("the replay ended".to_owned());
                break;
            }
            Err(e @ CameraError::Timeout { .. }) => {
                last_error = Some(e.to_string());
                break;
            }
            // A corrupt frame is not the end: count it as missing and keep reading.
            Err(e) if e.is_transient() => last_error = Some(e.to_string()),
            Err(e) => {
                last_error = Some(e.to_string());
                break;
            }
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    if got < wanted {
        return (
            CheckResult::fail(
                NAME,
                format!(
                    "{what}: {got} of {wanted} frames within {:.1} s{}",
                    options.camera_timeout.as_secs_f64(),
                    last_error.map(|e| format!(" ({e})")).unwrap_or_default()
                ),
                "check the camera's cable and power, the [camera] device, width/height/fps and format \
                 (`v4l2-ctl -d DEVICE --list-formats-ext`); for a replay, that the folder holds frames",
            ),
            last,
        );
    }
    let image = last.expect("at least one frame");
    let size = (image.width(), image.height());
    let Some(calib) = calibration else {
        return (
            CheckResult::fail(
                NAME,
                format!("{what}: {got} frames in {elapsed:.2} s, {}x{}, but no valid calibration to compare with", size.0, size.1),
                "fix the calibration (see its check)",
            ),
            Some(image),
        );
    };
    let want = (calib.image.width, calib.image.height);
    if size != want {
        return (
            CheckResult::fail(
                NAME,
                format!(
                    "{what}: frames are {}x{} but the calibration `{}` describes {}x{}: it does not describe this mode",
                    size.0, size.1, calib.name, want.0, want.1
                ),
                format!(
                    "set [camera] width/height to {}x{} (the calibrated mode), or calibrate the camera at {}x{}",
                    want.0, want.1, size.0, size.1
                ),
            ),
            Some(image),
        );
    }
    (
        CheckResult::pass(
            NAME,
            format!(
                "{what}: {got} frames in {elapsed:.2} s, {}x{} as calibrated",
                size.0, size.1
            ),
        ),
        Some(image),
    )
}

// ---- 3. model ---------------------------------------------------------------------------------------------

/// What the model check expects to run on, e.g. `ort on TensorrtExecutionProvider`.
fn intended(config: &EncoderConfig) -> (&'static str, String) {
    match config.engine {
        EngineChoice::Tract => ("tract", "cpu".to_owned()),
        EngineChoice::Ort | EngineChoice::Auto => (
            "ort",
            config
                .ort
                .providers
                .first()
                .map_or("CPUExecutionProvider", |p| p.ort_name())
                .to_owned(),
        ),
    }
}

const ORT_FIX: &str = "install ONNX Runtime with that provider (onnxruntime-gpu built for this CUDA/TensorRT; \
    on a Jetson the JetPack wheel) and point ORT_DYLIB_PATH or [model] ort_library at its libonnxruntime.so; \
    check that the CUDA, cuDNN and TensorRT libraries are on the library path (the log says why the provider \
    failed); or list the provider you mean first in [model] providers";

/// Opens the model with the configured engine, checks it runs where intended, and encodes `frame` (or a
/// grey image of the model's input size). Returns the model's manifest for the cache check.
pub fn check_model(
    settings: &ModelSettings,
    frame: Option<&RgbImage>,
) -> (CheckResult, Option<ModelManifest>) {
    const NAME: &str = "model";
    let path = &settings.path;
    let mut encoder = match open_encoder(path, &settings.encoder) {
        Ok(e) => e,
        Err(e) => {
            // The manifest may still be readable: the cache check can go on with it.
            let manifest = CheckedModel::open(path).ok().map(|m| m.manifest().clone());
            return (
                CheckResult::fail(
                    NAME,
                    format!(
                        "{}: does not load on engine {}: {e}",
                        path.display(),
                        settings.encoder.engine
                    ),
                    if manifest.is_some() && settings.encoder.engine != EngineChoice::Tract {
                        ORT_FIX.to_owned()
                    } else {
                        "check [model] path: the .onnx and its .json manifest must be the exported pair \
                         (models/README.md)"
                            .to_owned()
                    },
                ),
                manifest,
            );
        }
    };
    let manifest = encoder.manifest().clone();
    let (want_engine, want_device) = intended(&settings.encoder);
    let (engine, device) = (
        encoder.engine_name().to_owned(),
        encoder.device().to_owned(),
    );
    if engine != want_engine || device != want_device {
        return (
            CheckResult::fail(
                NAME,
                format!(
                    "{}: configured engine {} with {want_device} first, but it runs on {engine} ({device})",
                    manifest.name, settings.encoder.engine
                ),
                if engine == "tract" {
                    format!("ONNX Runtime did not load: {ORT_FIX}; or set [model] engine = \"tract\" to run on the CPU on purpose")
                } else {
                    ORT_FIX.to_owned()
                },
            ),
            Some(manifest),
        );
    }
    let input = &manifest.input;
    let grey;
    let image = match frame {
        Some(f) => f,
        None => {
            grey = RgbImage::from_pixel(input.width, input.height, image::Rgb([128, 128, 128]));
            &grey
        }
    };
    let mut latencies = Vec::new();
    let mut embedding = Vec::new();
    for _ in 0..2 {
        let t = Instant::now();
        match encoder.encode(image) {
            Ok(e) => embedding = e,
            Err(e) => {
                return (
                    CheckResult::fail(
                        NAME,
                        format!(
                            "{}: loads on {engine} ({device}) but cannot encode a frame: {e}",
                            manifest.name
                        ),
                        "re-export the model (models/README.md) and check it with `vimgeo encode`",
                    ),
                    Some(manifest),
                )
            }
        }
        latencies.push(t.elapsed().as_secs_f64() * 1e3);
    }
    let dim = manifest.output.dim as usize;
    if embedding.len() != dim || embedding.iter().any(|v| !v.is_finite()) {
        return (
            CheckResult::fail(
                NAME,
                format!(
                    "{}: the embedding is not {dim} finite values",
                    manifest.name
                ),
                "re-export the model (models/README.md)",
            ),
            Some(manifest),
        );
    }
    (
        CheckResult::pass(
            NAME,
            format!(
                "{} on {engine} ({device}), dim {dim}: one frame in {:.1} ms (first run {:.1} ms)",
                manifest.name, latencies[1], latencies[0]
            ),
        ),
        Some(manifest),
    )
}

// ---- 4. cache ---------------------------------------------------------------------------------------------

/// Opens the cache at `path` (checksum verified) against `manifest`'s model.
pub fn check_cache(
    path: &Path,
    manifest: Option<&ModelManifest>,
) -> (CheckResult, Option<TileCache>) {
    const NAME: &str = "cache";
    let Some(manifest) = manifest else {
        let detail = match TileCache::open(path, &CacheExpectation::default()) {
            Ok(c) => format!(
                "{}: {} tiles of model {}, but the model's manifest is unreadable: cannot tell whether they match",
                path.display(),
                c.len(),
                c.meta().model_name
            ),
            Err(e) => e.to_string(),
        };
        return (
            CheckResult::fail(NAME, detail, "fix the model first (see its check)"),
            None,
        );
    };
    let expectation = CacheExpectation {
        model_sha256: Some(&manifest.onnx_sha256),
        embedding_dim: Some(manifest.output.dim as usize),
    };
    let rebuild = format!(
        "rebuild the cache with this model: `vimgeo cache build --model {} --out {} ...` over the mission's orthophoto",
        manifest.onnx_file,
        path.display()
    );
    match TileCache::open(path, &expectation) {
        Ok(cache) => {
            let m = cache.meta();
            let result = CheckResult::pass(
                NAME,
                format!(
                    "{}: {} tiles, model {} (sha256 {}), dim {}, checksum ok",
                    path.display(),
                    cache.len(),
                    m.model_name,
                    short(&m.model_sha256),
                    m.embedding_dim
                ),
            );
            (result, Some(cache))
        }
        Err(e @ (CacheError::ModelMismatch { .. } | CacheError::DimensionMismatch { .. })) => (
            CheckResult::fail(
                NAME,
                format!(
                    "{e} (the running model is {} {})",
                    manifest.name, manifest.model_version
                ),
                rebuild,
            ),
            None,
        ),
        Err(e @ CacheError::Io { .. }) => (
            CheckResult::fail(
                NAME,
                e.to_string(),
                "check [cache] path; copy the mission's cache there",
            ),
            None,
        ),
        Err(e) => (CheckResult::fail(NAME, e.to_string(), rebuild), None),
    }
}

fn short(sha: &str) -> &str {
    sha.get(..12).unwrap_or(sha)
}

// ---- 5. coverage ------------------------------------------------------------------------------------------

/// Checks that `cache` (or, when the cache check failed, the file at `path` opened without model checks)
/// covers `area`.
pub fn check_coverage(path: &Path, cache: Option<&TileCache>, area: &PlannedArea) -> CheckResult {
    const NAME: &str = "area coverage";
    if area.is_empty() {
        return CheckResult::pass(
            NAME,
            "warning: no planned area given (--area LAT,LON,RADIUS_M or --waypoints FILE): coverage not checked",
        );
    }
    let opened;
    let cache = match cache {
        Some(c) => c,
        None => match TileCache::open_unverified(path, &CacheExpectation::default()) {
            Ok(c) => {
                opened = c;
                &opened
            }
            Err(e) => {
                return CheckResult::fail(
                    NAME,
                    format!("not checked: {e}"),
                    "fix the cache first (see its check)",
                )
            }
        },
    };
    let coverage = Coverage::of_cache(cache);
    let mut problems = Vec::new();
    let uncovered: Vec<&Waypoint> = area
        .waypoints
        .iter()
        .filter(|w| !coverage.covers(w.lat, w.lon))
        .collect();
    if !uncovered.is_empty() {
        let list: Vec<String> = uncovered
            .iter()
            .map(|w| format!("#{} ({:.6}, {:.6})", w.seq, w.lat, w.lon))
            .collect();
        problems.push(format!(
            "{} of {} waypoints outside the cache's tiles: {}",
            uncovered.len(),
            area.waypoints.len(),
            list.join(", ")
        ));
    }
    for c in &area.circles {
        let (missing, checked) = coverage.uncovered_in_circle(c);
        if let Some((lat, lon)) = missing.first() {
            problems.push(format!(
                "area ({:.6}, {:.6}) r {} m: {:.0} % of it outside the cache's tiles, e.g. ({lat:.6}, {lon:.6})",
                c.lat,
                c.lon,
                c.radius_m,
                100.0 * missing.len() as f64 / checked as f64
            ));
        }
    }
    let planned = format!(
        "{} waypoint(s), {} circle(s)",
        area.waypoints.len(),
        area.circles.len()
    );
    if problems.is_empty() {
        CheckResult::pass(
            NAME,
            format!("{planned}: all on the cache's {} tiles", cache.len()),
        )
    } else {
        let extent = coverage.extent().map_or_else(
            || "the cache has no tiles".to_owned(),
            |[lat0, lon0, lat1, lon1]| {
                format!("the cache's tile centres span lat {lat0:.6}..{lat1:.6}, lon {lon0:.6}..{lon1:.6}")
            },
        );
        CheckResult::fail(
            NAME,
            format!("{planned}: {} ({extent})", problems.join("; ")),
            "build a cache over the whole planned area (`vimgeo cache build` with an orthophoto that covers it), \
             or keep the plan inside the cache's area",
        )
    }
}

// ---- 6. autopilot -----------------------------------------------------------------------------------------

/// Opens the link (never publishing), waits for the autopilot's HEARTBEAT, checks that it takes our
/// publisher, and reads and checks each parameter of [`autopilot::expected_params`].
pub fn check_link(config: &LinkConfig, options: &PreflightOptions) -> Vec<CheckResult> {
    const NAME: &str = "autopilot link";
    let mut config = config.clone();
    config.policy = PublishPolicy::Never;
    let address = config.address.to_string();
    let link = match FcLink::spawn(config.clone()) {
        Ok(l) => l,
        Err(e) => {
            return vec![CheckResult::fail(
                NAME,
                e.to_string(),
                "check [fc] link (device, baud rate, address); stop the vimgeo service if it holds the port",
            )]
        }
    };
    let deadline = Instant::now() + options.link_timeout;
    let autopilot = loop {
        let snapshot = link.snapshot();
        if snapshot.autopilot_alive {
            if let Some(a) = snapshot.vehicle.autopilot {
                break Some((a.value, snapshot.gnss.verdict));
            }
        }
        if Instant::now() >= deadline {
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let Some((autopilot, gnss)) = autopilot else {
        return vec![CheckResult::fail(
            NAME,
            format!(
                "no autopilot HEARTBEAT on {address} within {:.1} s",
                options.link_timeout.as_secs_f64()
            ),
            "check the wiring and [fc] link; the autopilot must speak MAVLink 2 on that port \
             (ArduPilot: SERIALn_PROTOCOL = 2 and SERIALn_BAUD; PX4: MAV_n_CONFIG, MAV_n_MODE = Onboard)",
        )];
    };
    let kind = match autopilot.kind {
        AutopilotKind::ArduPilot => "ArduPilot".to_owned(),
        AutopilotKind::Px4 => "PX4".to_owned(),
        AutopilotKind::Other(n) => format!("MAV_AUTOPILOT {n}"),
    };
    let mut out = vec![CheckResult::pass(
        NAME,
        format!(
            "{kind} (system {}, component {}) on {address}{}, GNSS {gnss}",
            autopilot.system_id,
            autopilot.component_id,
            if autopilot.armed { ", ARMED" } else { "" }
        ),
    )];
    if let Some(why) = autopilot::publisher_mismatch(config.publisher, autopilot.kind) {
        out.push(CheckResult::fail(
            "publisher",
            format!("the autopilot is {kind}"),
            why,
        ));
        return out;
    }
    let expected = expected_params(
        autopilot.kind,
        config.publisher,
        config.gps_input.gps_instance,
    );
    if expected.is_empty() {
        out.push(CheckResult::fail(
            "autopilot parameters",
            format!(
                "{kind}: vimgeo knows the parameters of ArduPilot and PX4 only; nothing checked"
            ),
            "check by hand that the autopilot fuses our fixes (deploy/README.md)",
        ));
        return out;
    }
    for e in expected {
        let name = format!("param {}", e.name);
        let result = match link.read_param(&e.name, options.param_timeout, options.param_attempts) {
            Ok(v) if e.rule.holds(v.value) => {
                CheckResult::pass(name, format!("= {} ({})", v.value, e.why))
            }
            Ok(v) => CheckResult::fail(
                name,
                format!("= {}, must be {}: {}", v.value, e.rule, e.why),
                e.fix,
            ),
            Err(err) => CheckResult::fail(
                name,
                err.to_string(),
                format!(
                    "{} (a parameter the firmware lacks: update it or check its name)",
                    e.fix
                ),
            ),
        };
        out.push(result);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_shows_each_check_and_the_fix_of_failures() {
        let report = PreflightReport::new(vec![
            CheckResult::pass("camera", "3 frames"),
            CheckResult::fail("param GPS2_TYPE", "= 5, must be = 14", "set GPS2_TYPE = 14"),
        ]);
        assert!(!report.passed);
        let table = report.table();
        assert!(table.contains("PASS  camera"), "{table}");
        assert!(table.contains("FAIL  param GPS2_TYPE  = 5"), "{table}");
        assert!(table.contains("fix: set GPS2_TYPE = 14"), "{table}");
        assert!(table.contains("preflight FAILED: 1 of 2"), "{table}");
        let json = serde_json::to_value(&report).unwrap();
        assert_eq!(json["passed"], false);
        assert_eq!(json["checks"][1]["fix"], "set GPS2_TYPE = 14");
        assert!(PreflightReport::new(vec![CheckResult::pass("x", "y")]).passed);
    }

    #[test]
    fn an_example_or_missing_calibration_fails() {
        let dir = tempfile::tempdir().unwrap();
        let (r, c) = check_calibration(&dir.path().join("none.toml"));
        assert!(
            !r.passed && c.is_none() && r.detail.contains("none.toml"),
            "{r:?}"
        );
        let sim = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../calib/sim.toml");
        let (r, c) = check_calibration(&sim);
        assert!(r.passed, "{r:?}");
        let mut example = c.unwrap();
        example.example = true;
        let file = dir.path().join("example.toml");
        example.save(&file).unwrap();
        let (r, _) = check_calibration(&file);
        assert!(!r.passed && r.detail.contains("example values"), "{r:?}");
    }
}
