//! The `vimgeo` command line: the only place that parses arguments and reads the environment.
//! Each area's subcommands live in `src/cli/`; this file only dispatches.

mod cli;

use clap::{Parser, Subcommand};

#[cfg(feature = "ground")]
use cli::sim;
use cli::{cache, calib, encoder, fc, geometry, preflight, run, BenchCommand};

/// Onboard visual geo-localization for GNSS-denied drones.
#[derive(Debug, Parser)]
#[command(name = "vimgeo", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// The onboard pipeline: camera → rectify → encode → match → localize → publish, from one TOML config.
    Run(run::RunArgs),
    /// The closed-loop GNSS-denied simulation (no arguments: the bundled scenario); `sim pairs`: training pairs.
    #[cfg(feature = "ground")]
    Sim(sim::SimArgs),
    /// The closed-loop simulation and `sim pairs` (not in this build: they need the ground tools).
    #[cfg(not(feature = "ground"))]
    Sim(cli::Absent),
    /// Pre-flight check: camera, calibration, model, tile cache and area, autopilot link and parameters.
    Preflight(preflight::PreflightArgs),
    /// Print the build: crate version, target and enabled CPU features.
    Version,
    /// Embed images with an exported model; prints one JSON line per image.
    Encode(encoder::EncodeArgs),
    /// Measure the encoder, the selective-scan kernel or the tile-cache search.
    #[command(subcommand)]
    Bench(BenchCommand),
    /// Build, inspect, verify, query and preview satellite tile caches.
    #[command(subcommand)]
    Cache(cache::CacheCommand),
    /// Render what a camera at a pose over an orthophoto sees (the simulated camera).
    #[cfg(feature = "ground")]
    Render(geometry::RenderArgs),
    /// Render what a camera over an orthophoto sees (not in this build: it needs the ground tools).
    #[cfg(not(feature = "ground"))]
    Render(cli::Absent),
    /// Warp a camera frame to a north-up nadir view at a given ground size (what the encoder sees).
    Rectify(geometry::RectifyArgs),
    /// Camera calibration files: check one, import from OpenCV or ROS.
    #[command(subcommand)]
    Calib(calib::CalibCommand),
    /// The flight-controller link over MAVLink.
    #[command(subcommand)]
    Fc(fc::FcCommand),
}

fn main() -> anyhow::Result<()> {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let cli = Cli::parse();
    match cli.command {
        Command::Version => {
            println!(
                "vimgeo {} ({} {})",
                vimgeo::VERSION,
                std::env::consts::ARCH,
                std::env::consts::OS
            );
        }
        Command::Encode(args) => encoder::encode(&args)?,
        Command::Bench(BenchCommand::Encoder(args)) => encoder::bench_encoder(&args)?,
        Command::Bench(BenchCommand::Scan(args)) => encoder::bench_scan(&args)?,
        Command::Bench(BenchCommand::Search(args)) => cache::bench_search(&args)?,
        Command::Cache(command) => cache::cache(command)?,
        Command::Calib(command) => calib::calib(&command)?,
        #[cfg(feature = "ground")]
        Command::Render(args) => geometry::render(&args)?,
        #[cfg(not(feature = "ground"))]
        Command::Render(_) => anyhow::bail!("`vimgeo render`: {}", cache::NO_GDAL),
        Command::Rectify(args) => geometry::rectify(&args)?,
        Command::Run(args) => run::run(&args)?,
        #[cfg(feature = "ground")]
        Command::Sim(args) => sim::sim(&args)?,
        #[cfg(not(feature = "ground"))]
        Command::Sim(_) => anyhow::bail!("`vimgeo sim`: {}", cache::NO_GDAL),
        Command::Preflight(args) => preflight::preflight(&args)?,
        Command::Fc(fc::FcCommand::Monitor(args)) => fc::fc_monitor(&args)?,
    }
    Ok(())
}
