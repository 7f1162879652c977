//! `vimgeo run --config FILE`: the onboard main. Everything comes from one TOML file (documented example:
//! `deploy/vimgeo.toml`); this module opens the camera source and the pipeline's other parts from it
//! ([`PipelineParts::open`]), spawns the pipeline, waits for SIGINT/SIGTERM, the end
//! of a replay or `--duration`, and prints the run's summary.
//!
//! The environment is read here only: `$NOTIFY_SOCKET` (systemd), and ONNX Runtime's library search
//! (`ORT_DYLIB_PATH`, `VIRTUAL_ENV`, `HOME`).

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Args;
use signal_hook::consts::{SIGINT, SIGTERM};

use vimgeo::camera::CameraSource;
use vimgeo::encoder::OrtLibrarySearch;
use vimgeo::pipeline::{
    CameraChoice, EncoderSource, OnboardConfig, PartsConfig, Pipeline, PipelineParts,
    ANCHORS_SIDECAR,
};

#[derive(Debug, Args)]
pub(crate) struct RunArgs {
    /// The onboard configuration (see deploy/vimgeo.toml).
    #[arg(long, value_name = "FILE")]
    config: PathBuf,
    /// Stop after this many seconds (default: until SIGINT/SIGTERM or the end of a replay).
    #[arg(long, value_name = "S")]
    duration: Option<f64>,
    /// Only check the configuration (values and paths) and exit.
    #[arg(long)]
    check: bool,
    /// Also print the summary as one JSON line.
    #[arg(long)]
    json: bool,
}

pub(crate) fn run(args: &RunArgs) -> anyhow::Result<()> {
    if args.duration.is_some_and(|d| !(d.is_finite() && d >= 0.0)) {
        bail!("--duration must be a non-negative number of seconds");
    }
    let mut config = OnboardConfig::load(&args.config)?;
    config.check_paths()?;
    if args.check {
        println!("{}: ok", args.config.display());
        return Ok(());
    }
    let stop = Arc::new(AtomicBool::new(false));
    register_signals(&stop)?;
    config.pipeline.health.notify_socket = std::env::var("NOTIFY_SOCKET").ok();

    let mut encoder_config = config.model.encoder.clone();
    encoder_config.ort_library =
        OrtLibrarySearch::from_vars(encoder_config.ort_library.explicit.take(), |name| {
            std::env::var_os(name)
        });
    let camera = open_camera(&config)?;
    if let CameraChoice::Replay { folder, .. } = &config.camera.source {
        // A recording's frames are anchored as its live run anchored them, never on the link's GNSS now.
        config.pipeline.replay_anchors = Some(folder.join(ANCHORS_SIDECAR));
    }
    let parts = PipelineParts::open(
        PartsConfig {
            encoder: EncoderSource::Open {
                path: config.model.path.clone(),
                config: encoder_config,
            },
            cache: config.cache.path.clone(),
            calibration: config.camera.calib.clone(),
            link: Some(config.fc.clone()),
        },
        camera,
    )
    .with_context(|| format!("{}", config.file.display()))?;
    let handle = Pipeline::spawn(config.pipeline.clone(), parts)?;
    let started = Instant::now();
    let end = args.duration.map(|d| started + Duration::from_secs_f64(d));
    loop {
        std::thread::sleep(Duration::from_millis(100));
        if stop.load(Ordering::Relaxed) {
            log::info!("signal received: stopping");
            break;
        }
        if end.is_some_and(|e| Instant::now() >= e) {
            log::info!("--duration reached: stopping");
            break;
        }
        if handle.camera_ended() {
            log::info!("camera source ended: stopping");
            break;
        }
    }
    handle.stop();
    let summary = handle.join()?;
    println!("{summary}");
    if args.json {
        println!("{}", serde_json::to_string(&summary)?);
    }
    Ok(())
}

fn open_camera(config: &OnboardConfig) -> anyhow::Result<Box<dyn CameraSource>> {
    use vimgeo::camera::{ReplaySource, V4l2Source};
    Ok(match &config.camera.source {
        CameraChoice::V4l2(v4l2) => Box::new(V4l2Source::open(v4l2)?),
        CameraChoice::Replay { folder, options } => Box::new(ReplaySource::open(folder, *options)?),
        CameraChoice::Sim => bail!(
            "{}: [camera] source = \"sim\" is built by `vimgeo sim`, not by `vimgeo run`",
            config.file.display()
        ),
    })
}

/// SIGINT and SIGTERM raise `stop`, which the main loop polls. The handlers (`signal_hook`'s, installed with
/// `SA_RESTART`) only store to the atomic, which is async-signal-safe.
fn register_signals(stop: &Arc<AtomicBool>) -> anyhow::Result<()> {
    for signum in [SIGINT, SIGTERM] {
        signal_hook::flag::register(signum, Arc::clone(stop))
            .with_context(|| format!("cannot install the handler of signal {signum}"))?;
    }
    Ok(())
}
