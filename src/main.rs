//! The `vimgeo` command line: the only place that parses arguments and reads the environment.
//! Each area's subcommands live in `src/cli/`; this file only dispatches.

mod cli;

use clap::{Parser, Subcommand};

use cli::{cache, encoder, fc, BenchCommand};

/// Onboard visual geo-localization for GNSS-denied drones.
#[derive(Debug, Parser)]
#[command(name = "vimgeo", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
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
        Command::Fc(fc::FcCommand::Monitor(args)) => fc::fc_monitor(&args)?,
    }
    Ok(())
}
