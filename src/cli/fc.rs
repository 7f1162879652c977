//! `vimgeo fc ...`: the flight-controller link from the command line.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::bail;
use clap::{Args, Subcommand};

#[derive(Debug, Subcommand)]
pub(crate) enum FcCommand {
    /// Print the vehicle state and the GNSS verdict live from a MAVLink stream (sends only our HEARTBEAT and
    /// stream requests, never a fix).
    Monitor(FcMonitorArgs),
}

#[derive(Debug, Args)]
pub(crate) struct FcMonitorArgs {
    /// The link: udpin:HOST:PORT, udpout:HOST:PORT, tcp:HOST:PORT or serial:DEVICE:BAUD.
    #[arg(long, default_value = "udpin:0.0.0.0:14550")]
    link: String,
    /// Our system id (default: the autopilot's, learned from its HEARTBEAT).
    #[arg(long)]
    system_id: Option<u8>,
    /// Our component id.
    #[arg(long, default_value_t = vimgeo::fc::DEFAULT_COMPONENT_ID)]
    component_id: u8,
    /// Seconds between printed lines.
    #[arg(long, default_value_t = 1.0)]
    interval: f64,
    /// Stop after this many seconds (default: run until interrupted).
    #[arg(long)]
    duration: Option<f64>,
    /// MAVLink 2 signing key file: one line, 64 hex digits or passphrase:TEXT (the key MAVProxy's
    /// `signing setup TEXT` derives). Our frames are then signed; incoming signed frames are verified.
    #[arg(long, value_name = "FILE")]
    signing_key: Option<PathBuf>,
}

pub(crate) fn fc_monitor(args: &FcMonitorArgs) -> anyhow::Result<()> {
    use vimgeo::fc::{FcLink, LinkAddress, LinkConfig, PublishPolicy};
    if !(args.interval.is_finite() && args.interval > 0.0) {
        bail!("--interval must be a positive number of seconds");
    }
    if args.duration.is_some_and(|d| !(d.is_finite() && d >= 0.0)) {
        bail!("--duration must be a non-negative number of seconds");
    }
    let mut config = LinkConfig::new(LinkAddress::parse(&args.link)?);
    config.system_id = args.system_id;
    config.component_id = args.component_id;
    config.signing_key = args.signing_key.clone();
    config.policy = PublishPolicy::Never;
    let link = FcLink::spawn(config)?;
    let started = Instant::now();
    let end = args
        .duration
        .map(|d| started + Duration::from_secs_f64(d.max(0.0)));
    loop {
        std::thread::sleep(Duration::from_secs_f64(args.interval));
        println!("{}", format_snapshot(&link.snapshot(), Instant::now()));
        if end.is_some_and(|e| Instant::now() >= e) {
            return Ok(());
        }
    }
}

/// One line of `fc monitor`: autopilot, position, GNSS, height, verdict.
pub(crate) fn format_snapshot(s: &vimgeo::fc::LinkSnapshot, now: Instant) -> String {
    let v = &s.vehicle;
    let mut line = String::new();
    match v.autopilot {
        Some(a) => line.push_str(&format!(
            "autopilot {:?} sys {} {}{}",
            a.value.kind,
            a.value.system_id,
            if a.value.armed { "armed" } else { "disarmed" },
            if s.autopilot_alive { "" } else { " (LOST)" }
        )),
        None => line.push_str("autopilot: none yet"),
    }
    if let Some(p) = v.global_position {
        line.push_str(&format!(
            " | pos {:.7} {:.7} alt {:.1} m rel {:.1} m",
            p.value.lat_deg, p.value.lon_deg, p.value.alt_msl_m, p.value.relative_alt_m
        ));
    }
    if let Some(a) = v.attitude {
        line.push_str(&format!(
            " | rpy {:.1} {:.1} {:.1} deg",
            a.value.roll.to_degrees(),
            a.value.pitch.to_degrees(),
            a.value.yaw.to_degrees()
        ));
    }
    if let Some(g) = v.gps1 {
        line.push_str(&format!(
            " | gps fix {} sats {} age {:.1} s",
            g.value.fix_type,
            g.value.satellites.map_or("?".to_owned(), |n| n.to_string()),
            g.age(now).as_secs_f32()
        ));
    }
    if let Some(h) = v.height_above_ground {
        line.push_str(&format!(" | agl {:.1} m", h.value.distance_m));
    }
    line.push_str(&format!(
        " | GNSS {} ({}) | in {} out {} bad {}{}",
        s.gnss.verdict,
        s.gnss.reason,
        s.stats.frames_in,
        s.stats.frames_out,
        s.stats.parse_errors,
        if s.open { "" } else { " | link DOWN" }
    ));
    if v.rejected_positions > 0 {
        line.push_str(&format!(
            " | positions ignored {} (impossible or old)",
            v.rejected_positions
        ));
    }
    if s.stats.bad_signatures > 0 || s.stats.unsigned_in > 0 {
        line.push_str(&format!(
            " | bad signature {} unsigned {}",
            s.stats.bad_signatures, s.stats.unsigned_in
        ));
    }
    line
}
