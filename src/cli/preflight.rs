//! `vimgeo preflight --config FILE`: the pre-flight check (see `vimgeo::preflight`). Prints one line per
//! check (PASS/FAIL, check, detail, and the fix under a failure), or JSON with `--json`; exits non-zero when
//! any check fails.
//!
//! The environment is read here only: ONNX Runtime's library search (`ORT_DYLIB_PATH`, `VIRTUAL_ENV`,
//! `HOME`), as `vimgeo run` does, so the model is checked on the library the service will load.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::bail;
use clap::Args;

use vimgeo::encoder::OrtLibrarySearch;
use vimgeo::pipeline::OnboardConfig;
use vimgeo::preflight::{area, run_preflight, AreaCircle, PlannedArea, PreflightOptions};

#[derive(Debug, Args)]
pub(crate) struct PreflightArgs {
    /// The onboard configuration (see deploy/vimgeo.toml).
    #[arg(long, value_name = "FILE")]
    config: PathBuf,
    /// A circle the flight stays in, checked against the tile cache's coverage (repeatable).
    #[arg(long, value_name = "LAT,LON,RADIUS_M", allow_hyphen_values = true)]
    area: Vec<String>,
    /// The mission (QGroundControl / Mission Planner `QGC WPL 110` file): every waypoint must be on the cache.
    #[arg(long, value_name = "FILE")]
    waypoints: Option<PathBuf>,
    /// Seconds the camera has to deliver 3 frames.
    #[arg(long, value_name = "S", default_value_t = 5.0)]
    camera_timeout: f64,
    /// Seconds to wait for the autopilot's HEARTBEAT.
    #[arg(long, value_name = "S", default_value_t = 5.0)]
    link_timeout: f64,
    /// Seconds to wait for each parameter (asked up to 3 times).
    #[arg(long, value_name = "S", default_value_t = 1.0)]
    param_timeout: f64,
    /// Print the report as JSON instead of a table.
    #[arg(long)]
    json: bool,
}

fn seconds(name: &str, v: f64) -> anyhow::Result<Duration> {
    if !(v.is_finite() && v > 0.0) {
        bail!("--{name} must be a positive number of seconds");
    }
    Ok(Duration::from_secs_f64(v))
}

pub(crate) fn preflight(args: &PreflightArgs) -> anyhow::Result<()> {
    let mut planned = PlannedArea::default();
    for value in &args.area {
        planned.circles.push(AreaCircle::parse(value)?);
    }
    if let Some(file) = &args.waypoints {
        planned.waypoints = area::read_waypoints(file)?;
        if planned.waypoints.is_empty() {
            bail!(
                "{}: no NAV waypoint with a position in the mission",
                file.display()
            );
        }
    }
    let options = PreflightOptions {
        area: planned,
        camera_timeout: seconds("camera-timeout", args.camera_timeout)?,
        link_timeout: seconds("link-timeout", args.link_timeout)?,
        param_timeout: seconds("param-timeout", args.param_timeout)?,
        ..PreflightOptions::default()
    };
    let mut config = OnboardConfig::load(&args.config)?;
    let encoder = &mut config.model.encoder;
    encoder.ort_library =
        OrtLibrarySearch::from_vars(encoder.ort_library.explicit.take(), |name| {
            std::env::var_os(name)
        });
    let report = run_preflight(&config, &options);
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", report.table());
    }
    if !report.passed {
        let failed = report.checks.iter().filter(|c| !c.passed).count();
        bail!(
            "preflight failed: {failed} of {} checks (fixes above)",
            report.checks.len()
        );
    }
    Ok(())
}
