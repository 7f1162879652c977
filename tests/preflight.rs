//! `vimgeo preflight` end to end: a replay camera the test records, the fixture model on tract, a tile cache
//! built for it, and the fake autopilot over UDP loopback answering parameter reads. With everything right,
//! every check passes (ArduPilot and PX4); then each broken item fails its own check with the right message
//! and fix: no frames, a missing camera device, an example calibration, a cache of another model, a planned
//! area outside the cache, no autopilot, a wrong and a missing parameter.
//!
//! Needs the `ground` feature (the default): the fake autopilot or the scenarios are the ground crate's.

#![cfg(feature = "ground")]

mod common;

use std::net::UdpSocket;
use std::path::{Path, PathBuf};
use std::time::Duration;

use image::RgbImage;
use vimgeo::camera::{Frame, ReplayRecorder};
use vimgeo::encoder::CheckedModel;
use vimgeo::matching::{write_cache, CacheMeta, EmbeddingDtype, Tile};
use vimgeo::pipeline::OnboardConfig;
use vimgeo::preflight::{
    run_preflight, AreaCircle, CheckResult, PlannedArea, PreflightOptions, PreflightReport,
};
use vimgeo::sim::autopilot::{FakeAutopilot, FlightStack, Scenario};
use vimgeo::sim::autopilot_params::ParamTable;

const LAT0: f64 = 45.0;
const LON0: f64 = 7.0;
/// The cache: a 5 x 5 grid of 40 m tiles at a 20 m stride around LAT0, LON0 (covers ±60 m).
const TILE_M: f64 = 40.0;
const STRIDE_M: f64 = 20.0;

fn lat_lon(north: f64, east: f64) -> (f64, f64) {
    vimgeo::geodesy::offset_lat_lon(LAT0, LON0, north, east)
}

/// Everything a preflight reads, in a temporary folder.
struct Setup {
    dir: tempfile::TempDir,
    model: PathBuf,
    calib: PathBuf,
    frames: PathBuf,
    cache: PathBuf,
}

impl Setup {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let model = common::copy_model("custom", dir.path());
        // The simulation camera's calibration: 640 x 480, a real calibration (example = false).
        let calib = dir.path().join("camera.toml");
        std::fs::copy(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("calib/sim.toml"),
            &calib,
        )
        .unwrap();
        let frames = dir.path().join("frames");
        record(&frames, 4, 640, 480);
        let cache = dir.path().join("mission.vgc");
        let manifest = CheckedModel::open(&model).unwrap().manifest().clone();
        build_cache(
            &cache,
            &manifest.name,
            &manifest.onnx_sha256,
            manifest.output.dim as usize,
        );
        Self {
            dir,
            model,
            calib,
            frames,
            cache,
        }
    }

    /// The onboard config for these files and a link on `port`.
    fn config(&self, port: u16, extra_fc: &str) -> OnboardConfig {
        let text = format!(
            "[camera]\nsource = \"replay\"\nfolder = \"{}\"\npace = \"fast\"\ncalib = \"{}\"\n\
             [model]\npath = \"{}\"\nengine = \"tract\"\n\
             [cache]\npath = \"{}\"\n\
             [fc]\nlink = \"udpin:127.0.0.1:{port}\"\n{extra_fc}",
            self.frames.display(),
            self.calib.display(),
            self.model.display(),
            self.cache.display()
        );
        let file = self.dir.path().join("vimgeo.toml");
        std::fs::write(&file, &text).unwrap();
        OnboardConfig::load(&file).unwrap()
    }
}

/// Records `n` frames of a gradient into a replay folder.
fn record(dir: &Path, n: u64, width: u32, height: u32) {
    let mut rec = ReplayRecorder::create(dir).unwrap();
    for seq in 0..n {
        let image = RgbImage::from_fn(width, height, |x, y| {
            image::Rgb([(x % 256) as u8, (y % 256) as u8, (seq * 40 % 256) as u8])
        });
        rec.record(&Frame {
            seq,
            exposure_mono_us: 1_000_000 + seq * 100_000,
            exposure_unix_us: 1_700_000_000_000_000 + seq * 100_000,
            image,
            pose: None,
        })
        .unwrap();
    }
    rec.finish().unwrap();
}

/// A cache of the 5 x 5 grid for the model `name` / `sha256`, with unit embeddings of `dim` values.
fn build_cache(path: &Path, name: &str, sha256: &str, dim: usize) {
    let mut tiles = Vec::new();
    let mut rows = Vec::new();
    for i in -2..=2 {
        for j in -2..=2 {
            let (lat, lon) = lat_lon(f64::from(i) * STRIDE_M, f64::from(j) * STRIDE_M);
            tiles.push(Tile {
                lat,
                lon,
                ground_size_m: TILE_M as f32,
                scale: TILE_M as f32,
            });
            let k = tiles.len() - 1;
            rows.extend((0..dim).map(|d| if d == k % dim { 1.0f32 } else { 0.0 }));
        }
    }
    let mut meta = CacheMeta::new(name, sha256);
    meta.tile_px = 160;
    meta.gsd_m = 0.25;
    meta.stride = STRIDE_M / TILE_M;
    meta.scales = vec![TILE_M];
    write_cache(path, &meta, &tiles, &rows, dim, EmbeddingDtype::F16).unwrap();
}

/// A free UDP port on loopback for our link (the fake autopilot must know it before the link opens).
fn free_port() -> u16 {
    UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The deploy/ parameter file of `stack`.
fn deploy_params(stack: FlightStack) -> ParamTable {
    let file = match stack {
        FlightStack::ArduPilot => "ardupilot.param",
        FlightStack::Px4 => "px4.params",
    };
    ParamTable::from_param_file(
        &Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("deploy")
            .join(file),
    )
    .unwrap()
}

/// A fake autopilot streaming to our link on `port`, answering with `params`.
fn autopilot(stack: FlightStack, params: ParamTable, port: u16) -> FakeAutopilot {
    let scenario = Scenario {
        stack,
        start_lat_lon_deg: [LAT0, LON0],
        params,
        ..Scenario::default()
    };
    FakeAutopilot::spawn(scenario, format!("127.0.0.1:{port}").parse().unwrap()).unwrap()
}

/// Short timeouts: every wait in a test is bounded.
fn options(area: PlannedArea) -> PreflightOptions {
    PreflightOptions {
        area,
        camera_timeout: Duration::from_secs(5),
        link_timeout: Duration::from_secs(4),
        param_timeout: Duration::from_millis(500),
        param_attempts: 3,
        ..PreflightOptions::default()
    }
}

fn inside_area() -> PlannedArea {
    PlannedArea {
        circles: vec![AreaCircle {
            lat: LAT0,
            lon: LON0,
            radius_m: 40.0,
        }],
        waypoints: Vec::new(),
    }
}

fn check<'a>(report: &'a PreflightReport, name: &str) -> &'a CheckResult {
    report
        .check(name)
        .unwrap_or_else(|| panic!("no check {name:?} in\n{}", report.table()))
}

fn assert_fails(report: &PreflightReport, name: &str, detail: &[&str], fix: &str) {
    let c = check(report, name);
    assert!(!c.passed, "{name} passed:\n{}", report.table());
    for d in detail {
        assert!(c.detail.contains(d), "{name}: {d:?} not in {:?}", c.detail);
    }
    let f = c.fix.as_deref().unwrap_or_default();
    assert!(f.contains(fix), "{name}: fix {f:?} does not say {fix:?}");
    assert!(!report.passed);
}

/// The checks other than `except` all passed.
fn assert_others_pass(report: &PreflightReport, except: &[&str]) {
    for c in &report.checks {
        if !except.contains(&c.name.as_str()) {
            assert!(c.passed, "{} failed:\n{}", c.name, report.table());
        }
    }
}

#[test]
fn everything_right_passes_on_ardupilot() {
    let s = Setup::new();
    let port = free_port();
    let _ap = autopilot(
        FlightStack::ArduPilot,
        deploy_params(FlightStack::ArduPilot),
        port,
    );
    let mission = s.dir.path().join("mission.waypoints");
    let (lat, lon) = lat_lon(30.0, -30.0);
    std::fs::write(
        &mission,
        format!("QGC WPL 110\n0\t1\t0\t16\t0\t0\t0\t0\t{LAT0}\t{LON0}\t500\t1\n1\t0\t3\t16\t0\t0\t0\t0\t{lat}\t{lon}\t40\t1\n"),
    )
    .unwrap();
    let mut area = inside_area();
    area.waypoints = vimgeo::preflight::area::read_waypoints(&mission).unwrap();
    let report = run_preflight(&s.config(port, ""), &options(area));
    assert!(report.passed, "\n{}", report.table());
    let names: Vec<&str> = report.checks.iter().map(|c| c.name.as_str()).collect();
    for want in [
        "calibration",
        "camera",
        "model",
        "cache",
        "area coverage",
        "autopilot link",
        "param GPS2_TYPE",
        "param GPS_AUTO_SWITCH",
        "param EK3_SRC1_POSXY",
    ] {
        assert!(names.contains(&want), "{want} not checked: {names:?}");
    }
    assert!(check(&report, "autopilot link")
        .detail
        .contains("ArduPilot"));
    assert!(check(&report, "model").detail.contains("tract (cpu)"));
    assert!(report.table().contains("preflight passed"));
}

#[test]
fn everything_right_passes_on_px4_with_bytewise_integer_parameters() {
    let s = Setup::new();
    let port = free_port();
    let _ap = autopilot(FlightStack::Px4, deploy_params(FlightStack::Px4), port);
    let report = run_preflight(&s.config(port, ""), &options(inside_area()));
    assert!(report.passed, "\n{}", report.table());
    assert!(check(&report, "param EKF2_AGP_CTRL")
        .detail
        .starts_with("= 1 "));
}

#[test]
fn a_camera_without_frames_fails_the_camera_check() {
    let s = Setup::new();
    let port = free_port();
    let _ap = autopilot(
        FlightStack::ArduPilot,
        deploy_params(FlightStack::ArduPilot),
        port,
    );
    // An empty recording: the replay ends before the first frame.
    std::fs::remove_dir_all(&s.frames).unwrap();
    record(&s.frames, 0, 640, 480);
    let report = run_preflight(&s.config(port, ""), &options(inside_area()));
    assert_fails(
        &report,
        "camera",
        &["0 of 3 frames", "replay ended"],
        "replay",
    );
    assert_others_pass(&report, &["camera"]);
}

#[test]
fn a_missing_camera_device_fails_naming_it() {
    let s = Setup::new();
    let config_text = format!(
        "[camera]\nsource = \"v4l2\"\ndevice = \"/dev/vimgeo-no-such-camera\"\nwidth = 640\nheight = 480\n\
         format = \"yuyv\"\ncalib = \"{}\"\n[model]\npath = \"{}\"\nengine = \"tract\"\n[cache]\npath = \"{}\"\n\
         [fc]\nlink = \"udpin:127.0.0.1:{}\"\n",
        s.calib.display(),
        s.model.display(),
        s.cache.display(),
        free_port()
    );
    let file = s.dir.path().join("v4l2.toml");
    std::fs::write(&file, config_text).unwrap();
    let config = OnboardConfig::load(&file).unwrap();
    let mut opts = options(PlannedArea::default());
    opts.link_timeout = Duration::from_millis(300);
    let report = run_preflight(&config, &opts);
    assert_fails(
        &report,
        "camera",
        &["cannot open", "/dev/vimgeo-no-such-camera"],
        "plugged in",
    );
    // No frame: the model still encodes (a grey image) and passes.
    assert!(check(&report, "model").passed, "\n{}", report.table());
}

#[test]
fn an_example_calibration_fails() {
    let s = Setup::new();
    let port = free_port();
    let _ap = autopilot(
        FlightStack::ArduPilot,
        deploy_params(FlightStack::ArduPilot),
        port,
    );
    let text = std::fs::read_to_string(&s.calib).unwrap();
    std::fs::write(&s.calib, text.replace("example = false", "example = true")).unwrap();
    let report = run_preflight(&s.config(port, ""), &options(inside_area()));
    assert_fails(
        &report,
        "calibration",
        &["example values"],
        "calibrate this camera",
    );
    assert_others_pass(&report, &["calibration"]);
}

#[test]
fn a_cache_of_another_model_fails_naming_both() {
    let s = Setup::new();
    let port = free_port();
    let _ap = autopilot(
        FlightStack::ArduPilot,
        deploy_params(FlightStack::ArduPilot),
        port,
    );
    std::fs::remove_file(&s.cache).unwrap();
    let other_sha = "ab".repeat(32);
    build_cache(&s.cache, "vimgeo-other-model", &other_sha, 64);
    let report = run_preflight(&s.config(port, ""), &options(inside_area()));
    assert_fails(
        &report,
        "cache",
        &["vimgeo-other-model", &other_sha, "vimgeo-test-custom"],
        "rebuild the cache",
    );
    // Its coverage is still checked (without the model check).
    assert_others_pass(&report, &["cache"]);
}

#[test]
fn a_planned_area_outside_the_cache_fails_listing_the_point() {
    let s = Setup::new();
    let port = free_port();
    let _ap = autopilot(
        FlightStack::ArduPilot,
        deploy_params(FlightStack::ArduPilot),
        port,
    );
    let mission = s.dir.path().join("far.waypoints");
    let (far_lat, far_lon) = lat_lon(500.0, 0.0);
    let (near_lat, near_lon) = lat_lon(10.0, 10.0);
    std::fs::write(
        &mission,
        format!(
            "QGC WPL 110\n\
             0\t1\t0\t16\t0\t0\t0\t0\t{LAT0}\t{LON0}\t500\t1\n\
             1\t0\t3\t16\t0\t0\t0\t0\t{near_lat}\t{near_lon}\t40\t1\n\
             2\t0\t3\t16\t0\t0\t0\t0\t{far_lat}\t{far_lon}\t40\t1\n\
             3\t0\t3\t20\t0\t0\t0\t0\t0\t0\t0\t1\n"
        ),
    )
    .unwrap();
    let area = PlannedArea {
        circles: vec![AreaCircle {
            lat: LAT0,
            lon: LON0,
            radius_m: 200.0,
        }],
        waypoints: vimgeo::preflight::area::read_waypoints(&mission).unwrap(),
    };
    let report = run_preflight(&s.config(port, ""), &options(area));
    let far = format!("#2 ({far_lat:.6}, {far_lon:.6})");
    assert_fails(
        &report,
        "area coverage",
        &["1 of 3 waypoints", &far, "r 200 m"],
        "build a cache over the whole planned area",
    );
    assert!(!check(&report, "area coverage").detail.contains("#1 "));
    assert_others_pass(&report, &["area coverage"]);

    // Without a planned area: a pass with a warning.
    let report = run_preflight(&s.config(port, ""), &options(PlannedArea::default()));
    let c = check(&report, "area coverage");
    assert!(
        c.passed && c.detail.starts_with("warning: no planned area given"),
        "{c:?}"
    );
}

#[test]
fn no_autopilot_fails_the_link_check() {
    let s = Setup::new();
    let mut opts = options(inside_area());
    opts.link_timeout = Duration::from_millis(1500);
    let report = run_preflight(&s.config(free_port(), ""), &opts);
    assert_fails(
        &report,
        "autopilot link",
        &["no autopilot HEARTBEAT", "udpin:127.0.0.1:"],
        "SERIALn_PROTOCOL",
    );
    assert_others_pass(&report, &["autopilot link"]);
}

#[test]
fn a_wrong_gps_type_fails_with_the_fix() {
    let s = Setup::new();
    let port = free_port();
    let params = deploy_params(FlightStack::ArduPilot);
    params.set("GPS2_TYPE", 5.0);
    let _ap = autopilot(FlightStack::ArduPilot, params, port);
    let report = run_preflight(&s.config(port, ""), &options(inside_area()));
    assert_fails(
        &report,
        "param GPS2_TYPE",
        &["= 5, must be = 14"],
        "set GPS2_TYPE = 14 (MAVLink) and reboot the autopilot",
    );
    assert_others_pass(&report, &["param GPS2_TYPE"]);
}

#[test]
fn the_gps_instance_decides_which_parameter_is_checked_and_a_missing_one_fails() {
    let s = Setup::new();
    let port = free_port();
    // deploy/ardupilot.param sets up GPS2; a config using instance 0 needs GPS1_TYPE = 14.
    let _ap = autopilot(
        FlightStack::ArduPilot,
        deploy_params(FlightStack::ArduPilot),
        port,
    );
    let report = run_preflight(
        &s.config(port, "gps_instance = 0\n"),
        &options(inside_area()),
    );
    assert_fails(
        &report,
        "param GPS1_TYPE",
        &["GPS1_TYPE unreadable", "3 request"],
        "set GPS1_TYPE = 14",
    );
}

#[test]
fn a_publisher_the_autopilot_ignores_fails() {
    let s = Setup::new();
    let port = free_port();
    let _ap = autopilot(FlightStack::Px4, deploy_params(FlightStack::Px4), port);
    let report = run_preflight(
        &s.config(port, "publisher = \"gps_input\"\n"),
        &options(inside_area()),
    );
    assert_fails(&report, "publisher", &["PX4"], "PX4 ignores GPS_INPUT");
}

/// Runs the `vimgeo` binary with `args`, killing it after 60 s; returns (exit success, stdout, stderr).
fn vimgeo(args: &[&str]) -> (bool, String, String) {
    use std::process::{Command, Stdio};
    let mut child = Command::new(env!("CARGO_BIN_EXE_vimgeo"))
        .args(args)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while child.try_wait().unwrap().is_none() {
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("vimgeo {args:?} did not finish within 60 s");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = child.wait_with_output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn the_command_prints_the_table_or_json_and_exits_non_zero_on_a_failure() {
    let s = Setup::new();
    let port = free_port();
    let params = deploy_params(FlightStack::ArduPilot);
    let _ap = autopilot(FlightStack::ArduPilot, params.clone(), port);
    s.config(port, "");
    let config = s.dir.path().join("vimgeo.toml");
    let config = config.to_str().unwrap();
    let area = format!("{LAT0},{LON0},40");
    let common = [
        "preflight",
        "--config",
        config,
        "--area",
        &area,
        "--link-timeout",
        "4",
        "--param-timeout",
        "0.5",
    ];
    let (ok, stdout, stderr) = vimgeo(&common);
    assert!(ok, "{stdout}\n{stderr}");
    assert!(
        stdout.contains("PASS  autopilot link") && stdout.contains("preflight passed"),
        "{stdout}"
    );

    params.set("GPS2_TYPE", 5.0);
    let (ok, stdout, stderr) = vimgeo(&[&common[..], &["--json"]].concat());
    assert!(!ok, "a failed preflight exited 0:\n{stdout}");
    assert!(stderr.contains("preflight failed: 1 of"), "{stderr}");
    let json: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(json["passed"], false);
    let failed: Vec<&serde_json::Value> = json["checks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["passed"] == false)
        .collect();
    assert_eq!(failed.len(), 1, "{stdout}");
    assert_eq!(failed[0]["name"], "param GPS2_TYPE");
    assert!(failed[0]["fix"]
        .as_str()
        .unwrap()
        .contains("GPS2_TYPE = 14"));
}

#[test]
fn a_model_that_falls_back_from_the_configured_provider_fails() {
    // The project's ONNX Runtime is the CPU build: configured TensorRT first, it runs on the CPU provider.
    let (candidate, _) = common::ort_library();
    let s = Setup::new();
    let lib = candidate.path.display().to_string();
    let mut opts = options(PlannedArea::default());
    opts.link_timeout = Duration::from_millis(300);
    s.config(0, "");
    let file = s.dir.path().join("vimgeo.toml");
    let text = std::fs::read_to_string(&file).unwrap();
    let with = |providers: &str| {
        let t = text.replace(
            "engine = \"tract\"",
            &format!("engine = \"ort\"\nort_library = \"{lib}\"\nproviders = {providers}"),
        );
        std::fs::write(&file, t).unwrap();
        OnboardConfig::load(&file).unwrap()
    };
    let (result, _) = vimgeo::preflight::check_model(&with("[\"tensorrt\", \"cpu\"]").model, None);
    assert!(!result.passed, "{result:?}");
    assert!(
        result.detail.contains("TensorrtExecutionProvider")
            && result.detail.contains("CPUExecutionProvider"),
        "{}",
        result.detail
    );
    assert!(result.fix.unwrap().contains("ORT_DYLIB_PATH"));
    let (result, manifest) = vimgeo::preflight::check_model(&with("[\"cpu\"]").model, None);
    assert!(result.passed, "{result:?}");
    assert!(
        result.detail.contains("ort (CPUExecutionProvider)"),
        "{}",
        result.detail
    );
    assert_eq!(manifest.unwrap().name, "vimgeo-test-custom");
}
