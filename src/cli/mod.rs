//! The `vimgeo` command line's subcommands, one module per area; `src/main.rs` only dispatches.
//!
//! Arguments are parsed and checked here, then resolved once into the library's configuration types.

pub(crate) mod cache;
pub(crate) mod calib;
pub(crate) mod encoder;
pub(crate) mod fc;
pub(crate) mod geometry;
pub(crate) mod preflight;
pub(crate) mod run;
#[cfg(feature = "ground")]
pub(crate) mod sim;

use clap::Subcommand;

/// The data folder (`VIMGEO_DATA`, else under `HOME`), read from the environment here only.
#[cfg(feature = "ground")]
pub(crate) fn data_dir() -> vimgeo::data::DataDir {
    vimgeo::data::DataDir::from_vars(|name| std::env::var_os(name))
}

/// A path argument that may name a file of the data folder as `data:NAME` (clap's value parser).
#[cfg(feature = "ground")]
pub(crate) fn data_path(arg: &str) -> Result<std::path::PathBuf, std::convert::Infallible> {
    Ok(data_dir().resolve(std::path::Path::new(arg)))
}

/// Any arguments of a command this build does not have (`vimgeo sim` without the ground tools).
#[cfg(not(feature = "ground"))]
#[derive(Debug, clap::Args)]
pub(crate) struct Absent {
    #[arg(trailing_var_arg = true, allow_hyphen_values = true, hide = true)]
    _args: Vec<String>,
}

#[derive(Debug, Subcommand)]
pub(crate) enum BenchCommand {
    /// Per-frame latency, peak memory, and the selective-scan kernel's share of the time.
    Encoder(encoder::BenchEncoderArgs),
    /// Milliseconds per selective scan for each kernel this CPU has, against the reference loop.
    Scan(encoder::BenchScanArgs),
    /// Milliseconds per top-k query over a synthetic tile cache.
    Search(cache::BenchSearchArgs),
}
