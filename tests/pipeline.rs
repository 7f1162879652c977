//! The real-time pipeline end to end on the test model (tract): frames flow to one report each and the
//! summary agrees with them; a camera faster than the pipeline drops frames instead of queueing them; a
//! lossless run (a fast replay) processes every frame; stop() joins promptly; a cache of another model and a
//! bad config are refused with messages naming what is wrong; a stalled camera reaches the autopilot as
//! STATUSTEXT; the systemd watchdog gets its datagrams; a healthy GNSS anchors the localizer, and a recording
//! keeps the anchors used so its replay reproduces the fixes (a malformed anchors file is refused at start).
//!
//! Needs the `ground` feature (the default): the fake autopilot or the scenarios are the ground crate's.

#![cfg(feature = "ground")]

mod common;

use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use image::RgbImage;
use vimgeo::camera::{
    mono_now_us, CameraError, CameraSource, Frame, FramePose, ReplayOptions, ReplayPace,
    ReplayRecorder, ReplaySource,
};
use vimgeo::encoder::{open_encoder, Encoder, EncoderConfig, EngineChoice};
use vimgeo::fc::{FcLink, LinkAddress, LinkConfig, MavMessage, PublishPolicy};
use vimgeo::matching::{write_cache, CacheMeta, EmbeddingDtype, Tile, TileCache};
use vimgeo::pipeline::{
    anchors_csv, FrameOutcome, FrameReport, HealthConfig, OnboardConfig, Pipeline, PipelineConfig,
    PipelineError, PipelineHandle, PipelineParts, RecordedAnchors, RunSummary, ANCHORS_SIDECAR,
    CALIBRATION_SIDECAR, FIX_LOG_HEADER,
};
use vimgeo::rectify::{CameraCalibration, Distortion, ImageSize, Intrinsics, Mount};
use vimgeo::sim::autopilot::{FakeAutopilot, Scenario};
use vimgeo::util::unix_now_us;

/// Ground sample distance of the synthetic orthophoto, metres per pixel.
const GSD_M: f64 = 0.25;
/// Its side in pixels (128 m).
const ORTHO_PX: u32 = 512;
/// The camera: 128 px square, fx = fy = 128 px, so from 32 m it sees 32 m, one orthophoto pixel per pixel.
const CAMERA_PX: u32 = 128;
const HEIGHT_M: f64 = 32.0;
/// The cache's one tile footprint, metres (fits in 90 % of what the camera sees at 32 m).
const FOOTPRINT_M: f64 = 24.0;
const LAT0: f64 = 45.0;
const LON0: f64 = 7.0;

/// A smooth, seeded, non-repeating texture: what the camera and the tiles both see.
fn ortho() -> RgbImage {
    let mut waves = Vec::new();
    let mut s = 0x2545_f491_4f6c_dd1du64;
    let mut next = || {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        (s >> 11) as f64 / (1u64 << 53) as f64
    };
    for _ in 0..24 {
        let angle = next() * std::f64::consts::TAU;
        let wavelength = 8.0 + next() * 120.0;
        waves.push((
            angle.cos() / wavelength,
            angle.sin() / wavelength,
            next() * 6.3,
            next(),
            next(),
            next(),
        ));
    }
    RgbImage::from_fn(ORTHO_PX, ORTHO_PX, |x, y| {
        let mut c = [0.0f64; 3];
        for (fx, fy, phase, r, g, b) in &waves {
            let v = (std::f64::consts::TAU * (fx * f64::from(x) + fy * f64::from(y)) + phase).sin();
            c[0] += v * r;
            c[1] += v * g;
            c[2] += v * b;
        }
        image::Rgb(c.map(|v| (128.0 + 22.0 * v).clamp(0.0, 255.0) as u8))
    })
}

/// The square of `side_m` centred `n`, `e` metres from the orthophoto's centre (north up, east right).
fn crop(ortho: &RgbImage, n: f64, e: f64, side_px: u32) -> RgbImage {
    let centre = f64::from(ORTHO_PX) / 2.0;
    let x0 = (centre + e / GSD_M - f64::from(side_px) / 2.0).round() as u32;
    let y0 = (centre - n / GSD_M - f64::from(side_px) / 2.0).round() as u32;
    image::imageops::crop_imm(ortho, x0, y0, side_px, side_px).to_image()
}

fn lat_lon(n: f64, e: f64) -> (f64, f64) {
    vimgeo::geodesy::offset_lat_lon(LAT0, LON0, n, e)
}

fn calibration() -> CameraCalibration {
    CameraCalibration {
        name: "test-nadir-128".into(),
        example: true,
        image: ImageSize {
            width: CAMERA_PX,
            height: CAMERA_PX,
        },
        intrinsics: Intrinsics {
            fx: f64::from(CAMERA_PX),
            fy: f64::from(CAMERA_PX),
            cx: f64::from(CAMERA_PX) / 2.0 - 0.5,
            cy: f64::from(CAMERA_PX) / 2.0 - 0.5,
        },
        distortion: Distortion::None,
        mount: Mount::default(),
    }
}

fn encoder() -> Box<dyn Encoder> {
    open_encoder(
        &common::model("custom"),
        &EncoderConfig {
            engine: EngineChoice::Tract,
            ..EncoderConfig::default()
        },
    )
    .expect("the test model opens on tract")
}

/// A 7 x 7 tile cache (12 m apart, 24 m tiles) of the orthophoto, embedded with `encoder`, recorded as built by
/// `model_name` / `model_sha`.
fn build_cache(
    dir: &Path,
    encoder: &mut dyn Encoder,
    model_name: &str,
    model_sha: &str,
) -> PathBuf {
    let ortho = ortho();
    let side_px = (FOOTPRINT_M / GSD_M).round() as u32;
    let mut tiles = Vec::new();
    let mut embeddings = Vec::new();
    for i in -3..=3 {
        for j in -3..=3 {
            let (n, e) = (f64::from(i) * 12.0, f64::from(j) * 12.0);
            let (lat, lon) = lat_lon(n, e);
            tiles.push(Tile {
                lat,
                lon,
                ground_size_m: FOOTPRINT_M as f32,
                scale: FOOTPRINT_M as f32,
            });
            embeddings.extend(encoder.encode(&crop(&ortho, n, e, side_px)).unwrap());
        }
    }
    let mut meta = CacheMeta::new(model_name, model_sha);
    meta.imagery_sha256 = "0".repeat(64);
    meta.imagery_path = "synthetic".into();
    meta.crs = "EPSG:4326".into();
    meta.gsd_m = GSD_M;
    meta.tile_px = side_px;
    meta.stride = 0.5;
    meta.scales = vec![FOOTPRINT_M];
    let path = dir.join("area.vgc");
    let dim = encoder.manifest().output.dim as usize;
    write_cache(&path, &meta, &tiles, &embeddings, dim, EmbeddingDtype::F16).unwrap();
    path
}

/// Where frame `seq` is: flying east along the orthophoto's middle, 0.5 m per frame, from 24 m west of the
/// centre; after 96 frames it starts again (a camera that never ends).
fn track_east_m(seq: u64) -> f64 {
    -24.0 + 0.5 * (seq % 96) as f64
}

/// Frames of a flight east along the orthophoto's middle at 32 m, yaw 0, with their own pose (as a replay or
/// the simulation gives them). `count`: frames before the camera ends (`None`: never ends); `period`: the
/// frame interval (`None`: as fast as asked).
struct SyntheticCamera {
    images: Vec<RgbImage>,
    with_pose: bool,
    count: Option<u64>,
    period: Option<Duration>,
    next_at: Instant,
    seq: u64,
    started_mono_us: u64,
    started_unix_us: u64,
}

impl SyntheticCamera {
    fn new(count: Option<u64>, period: Option<Duration>) -> SyntheticCamera {
        let ortho = ortho();
        let images = (0..96)
            .map(|i| crop(&ortho, 0.0, track_east_m(i), CAMERA_PX))
            .collect();
        SyntheticCamera {
            images,
            with_pose: true,
            count,
            period,
            next_at: Instant::now(),
            seq: 0,
            started_mono_us: mono_now_us(),
            started_unix_us: unix_now_us(),
        }
    }
}

impl CameraSource for SyntheticCamera {
    fn describe(&self) -> String {
        "synthetic camera".into()
    }

    fn next_frame(&mut self, timeout: Duration) -> Result<Frame, CameraError> {
        if self.count.is_some_and(|c| self.seq >= c) {
            return Err(CameraError::Ended);
        }
        if let Some(period) = self.period {
            let now = Instant::now();
            if self.next_at > now + timeout {
                std::thread::sleep(timeout);
                return Err(CameraError::Timeout {
                    source_name: self.describe(),
                    waited: timeout,
                });
            }
            std::thread::sleep(self.next_at.saturating_duration_since(now));
            self.next_at += period;
        }
        let image = self.images[(self.seq % self.images.len() as u64) as usize].clone();
        let frame = Frame {
            seq: self.seq,
            exposure_mono_us: match self.period {
                Some(_) => mono_now_us(),
                None => self.started_mono_us + self.seq * 100_000,
            },
            // Paced: the wall clock, as a live camera. Unpaced: 10 frames per second of flight time, so a
            // lossless run is deterministic whatever the machine's speed.
            exposure_unix_us: match self.period {
                Some(_) => unix_now_us(),
                None => self.started_unix_us + self.seq * 100_000,
            },
            image,
            pose: self.with_pose.then_some(FramePose {
                roll_rad: 0.0,
                pitch_rad: 0.0,
                yaw_rad: 0.0,
                height_agl_m: HEIGHT_M,
            }),
        };
        self.seq += 1;
        Ok(frame)
    }
}

/// A camera that never delivers a frame.
struct StalledCamera;

impl CameraSource for StalledCamera {
    fn describe(&self) -> String {
        "stalled camera".into()
    }

    fn next_frame(&mut self, timeout: Duration) -> Result<Frame, CameraError> {
        std::thread::sleep(timeout);
        Err(CameraError::Timeout {
            source_name: self.describe(),
            waited: timeout,
        })
    }
}

struct World {
    dir: tempfile::TempDir,
    cache: Arc<TileCache>,
}

fn world() -> World {
    let dir = tempfile::tempdir().unwrap();
    let mut enc = encoder();
    let sha = enc.manifest().onnx_sha256.clone();
    let name = enc.manifest().name.clone();
    let path = build_cache(dir.path(), &mut *enc, &name, &sha);
    let cache = Arc::new(vimgeo::pipeline::open_cache(&path, enc.manifest()).unwrap());
    World { dir, cache }
}

fn test_config() -> PipelineConfig {
    PipelineConfig {
        top_k: 8,
        health: HealthConfig {
            period: Duration::from_millis(50),
            stall_timeout: Duration::from_millis(300),
            ..HealthConfig::default()
        },
        ..PipelineConfig::default()
    }
}

fn spawn(
    world: &World,
    config: PipelineConfig,
    camera: Box<dyn CameraSource>,
    link: Option<Arc<FcLink>>,
) -> PipelineHandle {
    Pipeline::spawn(
        config,
        PipelineParts {
            camera,
            calibration: calibration(),
            encoder: encoder(),
            cache: Arc::clone(&world.cache),
            link,
        },
    )
    .expect("the pipeline starts")
}

/// Joins on another thread, failing the test if it takes longer than `timeout`.
fn join_within(handle: PipelineHandle, timeout: Duration) -> RunSummary {
    let (tx, rx) = crossbeam_channel::bounded(1);
    std::thread::spawn(move || {
        let _ = tx.send(handle.join());
    });
    rx.recv_timeout(timeout)
        .unwrap_or_else(|_| panic!("the pipeline did not join within {timeout:?}"))
        .expect("the pipeline joins cleanly")
}

/// Waits for the camera to end (a finite camera), then joins.
fn run_to_end(handle: PipelineHandle, timeout: Duration) -> (RunSummary, Vec<FrameReport>) {
    let reports = handle.reports();
    let start = Instant::now();
    while !handle.camera_ended() {
        assert!(
            start.elapsed() < timeout,
            "the camera did not end within {timeout:?}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    let summary = join_within(handle, timeout);
    (summary, reports.try_iter().collect())
}

fn processed_seqs(reports: &[FrameReport]) -> Vec<u64> {
    reports
        .iter()
        .filter(|r| !matches!(r.outcome, FrameOutcome::Dropped { .. }))
        .map(|r| r.seq)
        .collect()
}

#[test]
fn frames_flow_to_one_report_each_and_the_summary_counts_match() {
    let world = world();
    let fix_log = world.dir.path().join("log").join("fixes.csv");
    let config = PipelineConfig {
        fix_log: Some(fix_log.clone()),
        ..test_config()
    };
    let camera = SyntheticCamera::new(Some(24), Some(Duration::from_millis(30)));
    let handle = spawn(&world, config, Box::new(camera), None);
    let (summary, reports) = run_to_end(handle, Duration::from_secs(60));
    eprintln!("{summary}");

    assert_eq!(summary.frames_captured, 24);
    assert_eq!(reports.len(), 24, "one report per frame");
    let mut seqs: Vec<u64> = reports.iter().map(|r| r.seq).collect();
    seqs.sort_unstable();
    assert_eq!(
        seqs,
        (0..24).collect::<Vec<_>>(),
        "every frame reported exactly once"
    );
    assert_eq!(summary.frames_processed + summary.dropped, 24);
    let dropped = reports
        .iter()
        .filter(|r| matches!(r.outcome, FrameOutcome::Dropped { .. }))
        .count() as u64;
    assert_eq!(summary.dropped, dropped);
    let refused: u64 = summary.refused.values().sum();
    let no_measurement: u64 = summary.no_measurement.values().sum();
    let failed: u64 = summary.failed.values().sum();
    assert_eq!(
        refused, 0,
        "nadir frames with a pose are never refused: {summary:?}"
    );
    assert_eq!(failed, 0, "{summary:?}");
    let measured = reports
        .iter()
        .filter(|r| matches!(r.outcome, FrameOutcome::Measured(_)))
        .count() as u64;
    assert_eq!(
        no_measurement + summary.gated + measured,
        summary.frames_processed
    );
    assert_eq!(
        summary.fixes,
        reports
            .iter()
            .filter(|r| r.fix_at_exposure.is_some())
            .count() as u64
    );
    // Every processed frame went through rectify, encode, match and localize, and says how long each took.
    for r in reports
        .iter()
        .filter(|r| !matches!(r.outcome, FrameOutcome::Dropped { .. }))
    {
        for stage in ["rectify", "encode", "match", "localize"] {
            assert!(
                r.latency.iter().any(|(s, _)| s.name() == stage),
                "frame {} has no {stage} latency",
                r.seq
            );
        }
    }
    for stage in ["rectify", "encode", "match", "localize"] {
        assert_eq!(
            summary.latency[stage].count as u64, summary.frames_processed,
            "{stage} latency samples"
        );
    }
    let seqs = processed_seqs(&reports);
    assert!(
        seqs.windows(2).all(|w| w[0] < w[1]),
        "frames keep their order: {seqs:?}"
    );
    // The fix log: the header and one line per frame.
    let text = std::fs::read_to_string(&fix_log).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines[0], FIX_LOG_HEADER);
    assert_eq!(lines.len(), 25);
    let summary_json = serde_json::to_value(&summary).unwrap();
    assert_eq!(summary_json["frames_captured"], 24);
}

#[test]
fn a_camera_faster_than_the_pipeline_drops_frames_and_builds_no_backlog() {
    let world = world();
    let camera = SyntheticCamera::new(Some(300), None);
    let handle = spawn(&world, test_config(), Box::new(camera), None);
    let (summary, reports) = run_to_end(handle, Duration::from_secs(120));
    assert_eq!(summary.frames_captured, 300);
    assert_eq!(reports.len(), 300);
    assert!(
        summary.dropped > 0,
        "an unthrottled camera must outrun the encoder: {summary:?}"
    );
    assert_eq!(summary.frames_processed + summary.dropped, 300);
    // Latest-only: the frames processed are spread over the whole run, not the first ones of a queue.
    let seqs = processed_seqs(&reports);
    assert!(seqs.windows(2).all(|w| w[0] < w[1]));
    assert!(
        *seqs.last().unwrap() >= 290,
        "the newest frames are the ones processed at the end: {seqs:?}"
    );
    let dropped_before: Vec<_> = reports
        .iter()
        .filter_map(|r| match r.outcome {
            FrameOutcome::Dropped { before } => Some(before.name()),
            _ => None,
        })
        .collect();
    assert!(dropped_before
        .iter()
        .all(|s| *s == "rectify" || *s == "encode"));
}

/// Writes `count` frames of the synthetic flight (with their poses) into a replay folder.
fn record_flight(dir: &Path, count: u64) {
    let mut camera = SyntheticCamera::new(Some(count), None);
    let mut recorder = ReplayRecorder::create(dir).unwrap();
    loop {
        match camera.next_frame(Duration::from_secs(1)) {
            Ok(frame) => recorder.record(&frame).unwrap(),
            Err(CameraError::Ended) => break,
            Err(e) => panic!("{e}"),
        }
    }
    recorder.finish().unwrap();
}

fn fast_replay(folder: &Path) -> Box<dyn CameraSource> {
    Box::new(
        ReplaySource::open(
            folder,
            ReplayOptions {
                pace: ReplayPace::AsFastAsPossible,
                loop_: false,
            },
        )
        .unwrap(),
    )
}

#[test]
fn a_lossless_replay_processes_every_frame_and_its_recording_replays_the_same_fixes() {
    let world = world();
    let flight = world.dir.path().join("flight");
    record_flight(&flight, 40);
    let recorded = world.dir.path().join("recorded");
    let config = PipelineConfig {
        lossless: true,
        record: Some(recorded.clone()),
        ..test_config()
    };
    let handle = spawn(&world, config, fast_replay(&flight), None);
    let (summary, reports) = run_to_end(handle, Duration::from_secs(120));
    assert_eq!(summary.frames_captured, 40);
    assert_eq!(summary.dropped, 0, "{summary:?}");
    assert_eq!(summary.frames_processed, 40);
    assert_eq!(processed_seqs(&reports), (0..40).collect::<Vec<_>>());
    // The fixes are where the frames were taken (north up, offsets subtracted the right way round): within
    // twice their 95 % radius, a check of the geometry, not of the test model's accuracy.
    assert!(
        summary.fixes > 0,
        "the synthetic flight localizes: {summary}"
    );
    for r in &reports {
        if let Some(f) = r.fix_at_exposure {
            let (n, e) = vimgeo::geodesy::offset_ne_m(LAT0, LON0, f.lat_deg, f.lon_deg);
            let error = n.hypot(e - track_east_m(r.seq));
            assert!(
                error <= 2.0 * f64::from(f.horiz_accuracy_m),
                "frame {}: fix {n:.1} m N {e:.1} m E is {error:.1} m from the truth (accuracy {:.1} m)",
                r.seq,
                f.horiz_accuracy_m
            );
        }
    }
    // The pipeline's own recording (every processed frame, its pose, the calibration) replays to the same
    // fixes at exposure time.
    let calib = CameraCalibration::load(recorded.join(CALIBRATION_SIDECAR)).unwrap();
    assert_eq!(calib, calibration());
    let handle = spawn(
        &world,
        PipelineConfig {
            lossless: true,
            ..test_config()
        },
        fast_replay(&recorded),
        None,
    );
    let (again, replayed) = run_to_end(handle, Duration::from_secs(120));
    assert_eq!(again.frames_processed, 40);
    let fixes = |reports: &[FrameReport]| {
        let mut v: Vec<_> = reports.iter().map(|r| (r.seq, r.fix_at_exposure)).collect();
        v.sort_by_key(|(seq, _)| *seq);
        v
    };
    assert_eq!(fixes(&replayed), fixes(&reports));
}

#[test]
fn stop_joins_within_a_timeout() {
    let world = world();
    let camera = SyntheticCamera::new(None, Some(Duration::from_millis(20)));
    let handle = spawn(&world, test_config(), Box::new(camera), None);
    let reports = handle.reports();
    for _ in 0..3 {
        reports
            .recv_timeout(Duration::from_secs(30))
            .expect("frames flow before stop");
    }
    handle.stop();
    let summary = join_within(handle, Duration::from_secs(10));
    assert!(summary.frames_captured >= 3);
    // After join every report is out and the channel is closed.
    let rest: Vec<_> = reports.iter().collect();
    assert!(summary.frames_processed + summary.dropped >= rest.len() as u64);
}

#[test]
fn a_cache_built_for_another_model_is_refused_naming_both() {
    let dir = tempfile::tempdir().unwrap();
    let mut enc = encoder();
    let other_sha = "ab".repeat(32);
    let path = build_cache(dir.path(), &mut *enc, "vimgeo-other-model", &other_sha);
    let running_sha = enc.manifest().onnx_sha256.clone();
    let running_name = enc.manifest().name.clone();

    // Through the start-up check of `vimgeo run` ...
    let msg = vimgeo::pipeline::open_cache(&path, enc.manifest())
        .unwrap_err()
        .to_string();
    for want in [
        &other_sha,
        &running_sha,
        &running_name,
        &path.display().to_string(),
    ] {
        assert!(msg.contains(want.as_str()), "{msg:?} does not name {want}");
    }
    // ... and by the pipeline itself when handed such a cache.
    let cache = Arc::new(TileCache::open(&path, &Default::default()).unwrap());
    let err = Pipeline::spawn(
        test_config(),
        PipelineParts {
            camera: Box::new(StalledCamera),
            calibration: calibration(),
            encoder: enc,
            cache,
            link: None,
        },
    )
    .err()
    .expect("a mismatched cache is refused");
    assert!(
        matches!(err, PipelineError::CacheMismatch { .. }),
        "{err:?}"
    );
    let msg = err.to_string();
    for want in [
        "vimgeo-other-model",
        &other_sha,
        &running_name,
        &running_sha,
    ] {
        assert!(msg.contains(want), "{msg:?} does not name {want}");
    }
}

#[test]
fn a_config_with_a_bad_key_or_value_is_refused_naming_file_and_key() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("vimgeo.toml");
    let good =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/vimgeo.toml"))
            .unwrap();
    std::fs::write(&file, &good).unwrap();
    OnboardConfig::load(&file).expect("the deploy example parses");

    std::fs::write(&file, good.replace("fps = 10", "fsp = 10")).unwrap();
    let msg = OnboardConfig::load(&file).unwrap_err().to_string();
    assert!(
        msg.contains(&file.display().to_string()) && msg.contains("fsp"),
        "{msg}"
    );

    std::fs::write(&file, good.replace("fps = 10", "fps = 0")).unwrap();
    let msg = OnboardConfig::load(&file).unwrap_err().to_string();
    assert_eq!(
        msg,
        format!("{}: [camera] fps: must be > 0", file.display())
    );

    std::fs::write(
        &file,
        good.replace("policy = \"when_denied\"", "policy = \"sometimes\""),
    )
    .unwrap();
    let msg = OnboardConfig::load(&file).unwrap_err().to_string();
    assert!(
        msg.starts_with(&format!("{}: [fc] policy:", file.display())),
        "{msg}"
    );

    std::fs::write(&file, good.replace("top_k = 16", "top_k = \"many\"")).unwrap();
    let msg = OnboardConfig::load(&file).unwrap_err().to_string();
    assert!(
        msg.contains(&file.display().to_string()) && msg.contains("top_k"),
        "{msg}"
    );
}

fn statustexts(autopilot: &FakeAutopilot) -> Vec<String> {
    autopilot
        .received()
        .into_iter()
        .filter_map(|r| match r.message {
            MavMessage::STATUSTEXT(s) => {
                let bytes: Vec<u8> = s.text.iter().copied().take_while(|b| *b != 0).collect();
                Some(String::from_utf8_lossy(&bytes).into_owned())
            }
            _ => None,
        })
        .collect()
}

#[test]
fn a_stalled_camera_is_reported_to_the_autopilot_by_statustext() {
    let world = world();
    let mut link_config = LinkConfig::new(LinkAddress::parse("udpin:127.0.0.1:0").unwrap());
    link_config.policy = PublishPolicy::Never;
    let link = Arc::new(FcLink::spawn(link_config).unwrap());
    let autopilot = FakeAutopilot::spawn(Scenario::default(), link.local_addr().unwrap()).unwrap();
    let handle = spawn(
        &world,
        test_config(),
        Box::new(StalledCamera),
        Some(Arc::clone(&link)),
    );
    let start = Instant::now();
    let texts = loop {
        let texts = statustexts(&autopilot);
        if texts.iter().any(|t| t == "vimgeo: camera stalled")
            || start.elapsed() > Duration::from_secs(15)
        {
            break texts;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let summary = join_within(handle, Duration::from_secs(10));
    assert!(
        texts.iter().any(|t| t == "vimgeo: camera stalled"),
        "STATUSTEXTs received: {texts:?}"
    );
    assert_eq!(summary.frames_captured, 0);
}

#[test]
fn the_systemd_watchdog_gets_ready_and_pings() {
    let world = world();
    let socket_path = world.dir.path().join("notify.sock");
    let socket = UnixDatagram::bind(&socket_path).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let config = PipelineConfig {
        health: HealthConfig {
            notify_socket: Some(socket_path.to_str().unwrap().to_owned()),
            ..test_config().health
        },
        ..test_config()
    };
    let camera = SyntheticCamera::new(None, Some(Duration::from_millis(20)));
    let handle = spawn(&world, config, Box::new(camera), None);
    let mut got = Vec::new();
    let mut buf = [0u8; 512];
    while !(got.iter().any(|m: &String| m.contains("READY=1"))
        && got.iter().any(|m| m.contains("WATCHDOG=1")))
    {
        let n = socket.recv(&mut buf).expect("a notification within 10 s");
        got.push(String::from_utf8_lossy(&buf[..n]).into_owned());
    }
    join_within(handle, Duration::from_secs(10));
    let mut rest = Vec::new();
    socket
        .set_read_timeout(Some(Duration::from_secs(2)))
        .unwrap();
    while let Ok(n) = socket.recv(&mut buf) {
        rest.push(String::from_utf8_lossy(&buf[..n]).into_owned());
        if rest.last().unwrap().contains("STOPPING=1") {
            break;
        }
    }
    assert!(got[0].starts_with("READY=1"), "{got:?}");
    assert!(rest.iter().any(|m| m.contains("STOPPING=1")), "{rest:?}");
}

#[test]
fn frames_without_a_pose_use_the_autopilots_and_fixes_reach_it_as_gps_input() {
    let world = world();
    let mut link_config = LinkConfig::new(LinkAddress::parse("udpin:127.0.0.1:0").unwrap());
    link_config.policy = PublishPolicy::Always;
    let link = Arc::new(FcLink::spawn(link_config).unwrap());
    let scenario = Scenario {
        height_agl_m: HEIGHT_M as f32,
        ..Scenario::default()
    };
    let autopilot = FakeAutopilot::spawn(scenario, link.local_addr().unwrap()).unwrap();
    // Wait for the autopilot's HEARTBEAT and attitude, so the first frames are not refused for want of them.
    let start = Instant::now();
    while !(link.snapshot().autopilot_alive && link.snapshot().vehicle.attitude.is_some()) {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "no telemetry from the fake autopilot"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut camera = SyntheticCamera::new(Some(60), Some(Duration::from_millis(50)));
    camera.with_pose = false;
    let handle = spawn(
        &world,
        test_config(),
        Box::new(camera),
        Some(Arc::clone(&link)),
    );
    let (summary, reports) = run_to_end(handle, Duration::from_secs(60));
    eprintln!("{summary}");
    let refused: u64 = summary.refused.values().sum();
    assert_eq!(
        refused, 0,
        "the autopilot's attitude and height were used: {summary}"
    );
    assert!(summary.published > 0, "{summary}");
    assert_eq!(summary.frame_to_fix.count as u64, summary.published);
    let published: Vec<_> = reports
        .iter()
        .filter_map(|r| r.published.as_ref())
        .collect();
    assert!(published
        .iter()
        .any(|p| p.outcome == Ok(vimgeo::fc::PublishOutcome::Queued("GPS_INPUT"))));
    // The link sends within a read timeout; give it a moment before looking at what arrived.
    let start = Instant::now();
    while !autopilot
        .received()
        .iter()
        .any(|r| matches!(r.message, MavMessage::GPS_INPUT(_)))
    {
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "no GPS_INPUT reached the autopilot"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_fix_older_than_max_fix_age_is_dropped_from_the_links_queue() {
    let fix = vimgeo::fix::Fix {
        time_of_exposure_us: unix_now_us(),
        lat_deg: LAT0,
        lon_deg: LON0,
        alt_m: None,
        vel_ne_mps: None,
        horiz_accuracy_m: 8.0,
        quality: vimgeo::fix::FixQuality::new(0.8),
    };
    for (max_age, sent) in [(Some(Duration::ZERO), false), (None, true)] {
        let mut config = LinkConfig::new(LinkAddress::parse("udpin:127.0.0.1:0").unwrap());
        config.policy = PublishPolicy::Always;
        config.max_fix_age = max_age;
        let link = FcLink::spawn(config).unwrap();
        let autopilot =
            FakeAutopilot::spawn(Scenario::default(), link.local_addr().unwrap()).unwrap();
        let start = Instant::now();
        while !link.snapshot().autopilot_alive {
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "no HEARTBEAT from the fake autopilot"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        for _ in 0..3 {
            assert_eq!(
                link.publish(&fix).unwrap(),
                vimgeo::fc::PublishOutcome::Queued("GPS_INPUT")
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        std::thread::sleep(Duration::from_millis(300));
        let got = autopilot
            .received()
            .iter()
            .filter(|r| matches!(r.message, MavMessage::GPS_INPUT(_)))
            .count();
        let stale = link.snapshot().stats.stale_dropped;
        if sent {
            assert_eq!(
                (got, stale),
                (3, 0),
                "without an age limit every fix is sent"
            );
        } else {
            assert_eq!(
                (got, stale),
                (0, 3),
                "a zero age limit drops every queued fix"
            );
        }
    }
}

#[test]
fn vimgeo_run_replays_a_recording_from_its_config_and_prints_the_summary() {
    let world = world();
    let dir = world.dir.path();
    record_flight(&dir.join("flight"), 20);
    calibration().save(dir.join("camera.toml")).unwrap();
    let config = format!(
        r#"
[camera]
source = "replay"
folder = "flight"
pace = "fast"
calib = "camera.toml"
stall_timeout_s = 5.0
[model]
path = "{}"
engine = "tract"
[cache]
path = "area.vgc"
top_k = 8
[fc]
link = "udpin:127.0.0.1:0"
policy = "never"
[pipeline]
fix_log = "fixes.csv"
"#,
        common::model("custom").display()
    );
    let file = dir.join("vimgeo.toml");
    std::fs::write(&file, config).unwrap();
    let run = |args: &[&str]| {
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_vimgeo"))
            .arg("run")
            .arg("--config")
            .arg(&file)
            .args(args)
            .env_remove("NOTIFY_SOCKET")
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let start = Instant::now();
        while child.try_wait().unwrap().is_none() {
            if start.elapsed() > Duration::from_secs(120) {
                let _ = child.kill();
                panic!("vimgeo run did not end within 120 s");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let out = child.wait_with_output().unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(
            out.status.success(),
            "vimgeo run failed:\n{stdout}\n{stderr}"
        );
        stdout
    };
    let checked = run(&["--check"]);
    assert!(checked.contains(": ok"), "{checked}");
    let stdout = run(&["--json"]);
    assert!(stdout.contains("run summary"), "{stdout}");
    let json: serde_json::Value = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
    assert_eq!(json["frames_captured"], 20, "{stdout}");
    assert_eq!(
        json["frames_processed"], 20,
        "a fast replay is lossless: {stdout}"
    );
    let log = std::fs::read_to_string(dir.join("fixes.csv")).unwrap();
    assert_eq!(log.lines().count(), 21);

    // At the recorded pace (10 frames per second, 2 s), SIGTERM stops the run cleanly with its summary.
    let config = std::fs::read_to_string(&file)
        .unwrap()
        .replace("pace = \"fast\"", "pace = \"realtime\"");
    std::fs::write(&file, config).unwrap();
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_vimgeo"))
        .arg("run")
        .arg("--config")
        .arg(&file)
        .arg("--json")
        .env_remove("NOTIFY_SOCKET")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Let it start (model, cache, link) and take a few frames; a stopped run still exits cleanly.
    std::thread::sleep(Duration::from_millis(1200));
    let killed = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let (tx, rx) = crossbeam_channel::bounded(1);
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    let out = rx
        .recv_timeout(Duration::from_secs(30))
        .expect("vimgeo run exits within 30 s of SIGTERM")
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let json: serde_json::Value = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
    assert!(json["frames_captured"].as_u64().unwrap() < 20, "{stdout}");
}

/// A hovering camera over the orthophoto's centre (a tile centre of the cache), `count` frames every 50 ms.
fn hovering_camera(count: u64) -> SyntheticCamera {
    let mut camera = SyntheticCamera::new(Some(count), Some(Duration::from_millis(50)));
    camera.images = vec![crop(&ortho(), 0.0, 0.0, CAMERA_PX)];
    camera
}

/// Metres between a fix and the orthophoto's centre (on the tangent plane: the distances are metres).
fn metres_from_centre(lat: f64, lon: f64) -> f64 {
    let (n, e) = vimgeo::geodesy::offset_ne_m(LAT0, LON0, lat, lon);
    n.hypot(e)
}

/// A fake autopilot hovering over the orthophoto's centre whose GNSS is lost `gnss_lost_at` after it
/// starts, and a link to it; returns once the link sees its GNSS healthy and its position.
fn hovering_autopilot(gnss_lost_at: Duration) -> (Arc<FcLink>, FakeAutopilot) {
    let link_config = LinkConfig::new(LinkAddress::parse("udpin:127.0.0.1:0").unwrap());
    assert_eq!(link_config.policy, PublishPolicy::WhenDenied);
    let link = Arc::new(FcLink::spawn(link_config).unwrap());
    let (lat, lon) = lat_lon(0.0, 0.0);
    let scenario = Scenario {
        start_lat_lon_deg: [lat, lon],
        vel_ne_mps: [0.0, 0.0],
        height_agl_m: HEIGHT_M as f32,
        gnss_lost_at: Some(gnss_lost_at),
        ..Scenario::default()
    };
    let autopilot = FakeAutopilot::spawn(scenario, link.local_addr().unwrap()).unwrap();
    let start = Instant::now();
    while link.snapshot().gnss.verdict != vimgeo::fc::GnssVerdict::Healthy
        || link.snapshot().vehicle.global_position.is_none()
    {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "no healthy GNSS from the fake autopilot"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    (link, autopilot)
}

#[test]
fn a_healthy_gnss_anchors_the_localizer_so_fixes_are_there_at_once_when_it_is_lost() {
    let world = world();
    // Without a flight controller a hovering camera never starts the filter: a cold start needs
    // consistent matches from clearly different views, and one view repeated is not evidence.
    let (_, reports) = run_to_end(
        spawn(&world, test_config(), Box::new(hovering_camera(30)), None),
        Duration::from_secs(60),
    );
    assert!(processed_seqs(&reports).len() >= 10);
    assert!(
        reports.iter().all(|r| r.fix_at_exposure.is_none()),
        "a cold start from one repeated view"
    );

    // With the autopilot hovering there, GNSS healthy for 3 s and then lost.
    let (link, _autopilot) = hovering_autopilot(Duration::from_secs(3));
    let handle = spawn(
        &world,
        test_config(),
        Box::new(hovering_camera(200)),
        Some(Arc::clone(&link)),
    );
    let (summary, reports) = run_to_end(handle, Duration::from_secs(60));
    eprintln!("{summary}");
    assert_ne!(
        link.snapshot().gnss.verdict,
        vimgeo::fc::GnssVerdict::Healthy,
        "GNSS was lost during the run"
    );
    // Anchored: the very first frame already has a fix (a cold start needs three frames at least).
    let first = reports
        .iter()
        .filter(|r| !matches!(r.outcome, FrameOutcome::Dropped { .. }))
        .min_by_key(|r| r.seq)
        .expect("frames were processed");
    let fix = first.fix_at_exposure.expect("the first frame has a fix");
    assert!(metres_from_centre(fix.lat_deg, fix.lon_deg) <= f64::from(fix.horiz_accuracy_m));
    // Fixes are published once GNSS is denied, from the first frame after the loss on, and keep coming
    // for longer than the filter could coast: the visual matches pass the gate of the anchored state.
    let published: Vec<_> = reports
        .iter()
        .filter_map(|r| r.published.as_ref().map(|p| (r.exposure_unix_us, p.fix)))
        .collect();
    assert!(summary.published > 0, "{summary}");
    let first_published = published.iter().map(|p| p.0).min().unwrap();
    let last_published = published.iter().map(|p| p.0).max().unwrap();
    assert!(
        last_published - first_published >= 4_000_000,
        "fixes for {} µs after GNSS was lost",
        last_published - first_published
    );
    // No warm-up: every frame processed before the first published fix already had one.
    let unpublished_before = reports
        .iter()
        .filter(|r| !matches!(r.outcome, FrameOutcome::Dropped { .. }))
        .filter(|r| r.exposure_unix_us < first_published && r.fix_at_exposure.is_none())
        .count();
    assert!(
        unpublished_before == 0,
        "{unpublished_before} frames without a fix before the first published one"
    );
    for (_, fix) in &published {
        let err = metres_from_centre(fix.lat_deg, fix.lon_deg);
        assert!(
            err <= f64::from(fix.horiz_accuracy_m),
            "error {err} m, accuracy {} m",
            fix.horiz_accuracy_m
        );
    }
}

/// Each processed frame's seq and fix at exposure time, by seq.
fn fixes_at_exposure(reports: &[FrameReport]) -> Vec<(u64, Option<vimgeo::fix::Fix>)> {
    let mut v: Vec<_> = reports
        .iter()
        .filter(|r| !matches!(r.outcome, FrameOutcome::Dropped { .. }))
        .map(|r| (r.seq, r.fix_at_exposure))
        .collect();
    v.sort_by_key(|(seq, _)| *seq);
    v
}

#[test]
fn a_recorded_anchored_run_keeps_its_anchors_and_replays_with_them_to_the_same_fixes() {
    let world = world();
    // Live: hovering, anchored on the autopilot's GNSS until it is lost 1.5 s in; recorded, lossless.
    let (link, _autopilot) = hovering_autopilot(Duration::from_millis(1500));
    let recorded = world.dir.path().join("recorded");
    let config = PipelineConfig {
        lossless: true,
        record: Some(recorded.clone()),
        ..test_config()
    };
    let handle = spawn(&world, config, Box::new(hovering_camera(60)), Some(link));
    let (summary, live) = run_to_end(handle, Duration::from_secs(120));
    assert_eq!(summary.dropped, 0, "{summary}");
    let processed = processed_seqs(&live);
    assert_eq!(processed.len(), 60);

    // The anchors used are in the recording: one per frame while GNSS was healthy, at the frame's
    // exposure time, where the autopilot hovers; none after it was lost.
    let path = recorded.join(ANCHORS_SIDECAR);
    let text = std::fs::read_to_string(&path).expect("the recording holds anchors.csv");
    let anchors = RecordedAnchors::open_if_present(&path).unwrap().unwrap();
    assert!(!anchors.is_empty(), "no anchor recorded");
    assert!(
        anchors.len() < processed.len(),
        "GNSS was lost during the run, yet every frame has an anchor"
    );
    for a in anchors.iter() {
        let frame = live
            .iter()
            .find(|r| r.seq == a.seq)
            .expect("an anchor of a processed frame");
        assert_eq!(a.exposure_unix_us, frame.exposure_unix_us);
        assert!(metres_from_centre(a.lat_deg, a.lon_deg) <= a.accuracy95_m);
    }
    // Written with full precision: what was read writes back to the same text.
    let read_back: Vec<_> = anchors.iter().copied().collect();
    assert_eq!(anchors_csv(&read_back), text);

    // Replayed with its anchors (no link): the same fixes at exposure time, frame by frame; the first
    // frame is anchored, so it has a fix at once.
    let replay = |replay_anchors: Option<PathBuf>| {
        let config = PipelineConfig {
            lossless: true,
            replay_anchors,
            ..test_config()
        };
        let handle = spawn(&world, config, fast_replay(&recorded), None);
        run_to_end(handle, Duration::from_secs(120)).1
    };
    let replayed = replay(Some(path.clone()));
    let (a, b) = (fixes_at_exposure(&live), fixes_at_exposure(&replayed));
    assert_eq!(a.len(), b.len(), "the replay processed other frames");
    for (live, replay) in a.iter().zip(&b) {
        assert_eq!(live, replay, "frame {}: the replay differs", live.0);
    }
    assert!(b[0].1.is_some(), "the replay's first frame is anchored");
    // Without them it would start cold: one repeated view never starts the filter.
    let cold = replay(None);
    assert!(
        cold.iter().all(|r| r.fix_at_exposure.is_none()),
        "a cold replay of a hover has no fix"
    );
}

#[test]
fn a_malformed_anchors_file_is_refused_at_start_naming_file_line_and_column() {
    let world = world();
    let flight = world.dir.path().join("flight");
    record_flight(&flight, 3);
    let path = flight.join(ANCHORS_SIDECAR);
    std::fs::write(
        &path,
        "seq,exposure_unix_us,lat_deg,lon_deg,accuracy95_m\n\
         0,1764086400000000,45.0,7.0,5.0\n\
         1,1764086400050000,north,7.0,5.0\n",
    )
    .unwrap();
    let result = Pipeline::spawn(
        PipelineConfig {
            lossless: true,
            replay_anchors: Some(path.clone()),
            ..test_config()
        },
        PipelineParts {
            camera: fast_replay(&flight),
            calibration: calibration(),
            encoder: encoder(),
            cache: Arc::clone(&world.cache),
            link: None,
        },
    );
    let Err(err) = result else {
        panic!("a malformed anchors.csv was accepted");
    };
    assert!(matches!(err, PipelineError::Anchors(_)), "{err}");
    let message = err.to_string();
    for part in [
        path.display().to_string().as_str(),
        "line 3",
        "column 3",
        "lat_deg",
        "north",
    ] {
        assert!(message.contains(part), "{message:?} does not name {part:?}");
    }
}
