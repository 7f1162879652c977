//! The `vimgeo` command line: the only place that parses arguments and reads the environment.

use clap::{Parser, Subcommand};

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
    }
    Ok(())
}
