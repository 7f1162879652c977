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
pub(crate) mod sim;

use clap::Subcommand;

#[derive(Debug, Subcommand)]
pub(crate) enum BenchCommand {
    /// Per-frame latency, peak memory, and the selective-scan kernel's share of the time.
    Encoder(encoder::BenchEncoderArgs),
    /// Milliseconds per selective scan for each kernel this CPU has, against the reference loop.
    Scan(encoder::BenchScanArgs),
    /// Milliseconds per top-k query over a synthetic tile cache.
    Search(cache::BenchSearchArgs),
}
