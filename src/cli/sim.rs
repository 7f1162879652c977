//! `vimgeo sim`: the closed-loop simulation. With no arguments it runs the bundled scenario
//! (`sim/scenarios/yell-gnss-denied.toml`) end to end, prints the error summary and says where the plot, the
//! CSVs and the JSON summary are. `vimgeo sim pairs ...` is the training-pair generator.
//!
//! The repository (for the default scenario, `target/sim/` and `target/sim-cache/`) is found from the current
//! folder upwards, else from the binary's location upwards (`target/release/vimgeo` → the repository), else
//! the folder the binary was built from. The environment is read here only: ONNX Runtime's library search
//! (`ORT_DYLIB_PATH`, `VIRTUAL_ENV`, `HOME`) and the data folder (`VIMGEO_DATA`, `HOME`).

use std::path::{Path, PathBuf};

use anyhow::bail;
use clap::{Args, Subcommand};

use vimgeo::encoder::{EncoderConfig, OrtLibrarySearch};
use vimgeo::sim::closed_loop::RunOptions;
use vimgeo::sim::scenario::Scenario;

use super::geometry;

/// The bundled scenario, relative to the repository.
const DEFAULT_SCENARIO: &str = "sim/scenarios/yell-gnss-denied.toml";

#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
pub(crate) struct SimArgs {
    #[command(subcommand)]
    command: Option<SimCommand>,
    /// The scenario file (default: the repository's sim/scenarios/yell-gnss-denied.toml).
    #[arg(long, value_name = "FILE")]
    scenario: Option<PathBuf>,
    /// Output folder (default: target/sim/<scenario name>/ in the repository).
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,
    /// Where tile caches are built and reused (default: target/sim-cache/ in the repository).
    #[arg(long, value_name = "DIR")]
    cache_dir: Option<PathBuf>,
    /// Record the frames the pipeline processed into this replay folder (the pipeline then runs lossless).
    #[arg(long, value_name = "DIR")]
    record: Option<PathBuf>,
    /// Override the scenario's duration, seconds.
    #[arg(long, value_name = "S")]
    duration: Option<f64>,
    /// ONNX Runtime's library (default: searched as `vimgeo encode` does).
    #[arg(long, value_name = "FILE")]
    ort_lib: Option<PathBuf>,
    /// Also print the summary as one JSON line.
    #[arg(long)]
    json: bool,
    /// Override the scenario's appearance: none, mild or strong, drawn with its seed (its `[appearance]`
    /// overrides are dropped). The run's name (and output folder) gets `-PRESET`.
    #[arg(long, value_name = "PRESET", value_parser = geometry::parse_appearance)]
    appearance: Option<vimgeo::sim::appearance::AppearancePreset>,
    /// Override the flight's height above ground, metres. The run's name gets `-hHEIGHT`.
    #[arg(long, value_name = "M")]
    height: Option<f64>,
}

#[derive(Debug, Subcommand)]
pub(crate) enum SimCommand {
    /// Generate training pairs (drone views and satellite tiles) from orthophotos.
    Pairs(geometry::PairsArgs),
}

/// The repository: the first folder holding `sim/scenarios/` and `Cargo.toml`, from the current folder up,
/// then from the binary's folder up, then the folder the binary was built from.
fn repository() -> Option<PathBuf> {
    let holds =
        |p: &Path| p.join("sim").join("scenarios").is_dir() && p.join("Cargo.toml").is_file();
    let from_cwd = std::env::current_dir()
        .ok()
        .and_then(|d| d.ancestors().find(|p| holds(p)).map(Path::to_path_buf));
    let from_exe = || {
        std::env::current_exe()
            .ok()
            .and_then(|e| e.ancestors().find(|p| holds(p)).map(Path::to_path_buf))
    };
    let built = || {
        let p = Path::new(env!("CARGO_MANIFEST_DIR"));
        holds(p).then(|| p.to_path_buf())
    };
    from_cwd.or_else(from_exe).or_else(built)
}

pub(crate) fn sim(args: &SimArgs) -> anyhow::Result<()> {
    if let Some(SimCommand::Pairs(pairs)) = &args.command {
        return geometry::pairs(pairs);
    }
    if args.duration.is_some_and(|d| !(d.is_finite() && d > 0.0)) {
        bail!("--duration must be a positive number of seconds");
    }
    let repo = repository();
    let scenario_path = match (&args.scenario, &repo) {
        (Some(s), _) => s.clone(),
        (None, Some(r)) => r.join(DEFAULT_SCENARIO),
        (None, None) => bail!(
            "cannot find the repository's {DEFAULT_SCENARIO} from the current folder or the binary's: run \
             from the repository or pass --scenario FILE"
        ),
    };
    let data = super::data_dir();
    let mut scenario = Scenario::load(&scenario_path, &data)?;
    if let Some(preset) = args.appearance {
        scenario.set_appearance(preset);
        scenario.name = format!("{}-{}", scenario.name, preset.name());
    }
    if let Some(h) = args.height {
        if !(h.is_finite() && h > 0.0) {
            bail!("--height must be a positive number of metres");
        }
        scenario.flight.height_agl_m = h;
        scenario.name = format!("{}-h{h}", scenario.name);
    }
    let base = repo.clone().unwrap_or_else(|| PathBuf::from("."));
    let out_dir = args
        .out
        .clone()
        .unwrap_or_else(|| base.join("target").join("sim").join(&scenario.name));
    let cache_dir = args
        .cache_dir
        .clone()
        .unwrap_or_else(|| base.join("target").join("sim-cache"));
    let options = RunOptions {
        out_dir,
        cache_dir,
        record: args.record.clone(),
        encoder: EncoderConfig {
            ort_library: OrtLibrarySearch::from_vars(args.ort_lib.clone(), |name| {
                std::env::var_os(name)
            }),
            ..EncoderConfig::default()
        },
        duration_s: args.duration,
        data,
    };
    log::info!(
        "scenario {} ({}): {:.0} s",
        scenario.name,
        scenario_path.display(),
        args.duration.unwrap_or(scenario.run.duration_s)
    );
    fly(&scenario, &scenario_path, &options, args)
}

fn fly(
    scenario: &Scenario,
    scenario_path: &Path,
    options: &RunOptions,
    args: &SimArgs,
) -> anyhow::Result<()> {
    use anyhow::Context;
    let run = vimgeo::sim::closed_loop::run(scenario, options)
        .with_context(|| format!("simulation of {}", scenario_path.display()))?;
    println!("{}", run.summary);
    println!("{}", run.summary.pipeline);
    println!("trajectory plot: {}", run.plot.display());
    println!("fixes:           {}", run.fixes_csv.display());
    println!("received fixes:  {}", run.received_csv.display());
    println!("summary:         {}", run.summary_json.display());
    if let Some(record) = &args.record {
        println!("recorded frames: {}", record.display());
    }
    if args.json {
        println!("{}", serde_json::to_string(&run.summary)?);
    }
    Ok(())
}
