//! The health thread (`vimgeo-health`): every [`HealthConfig::period`] it checks the camera (stalled: no
//! frame for `stall_timeout`), the encoder (too slow: median of its recent latencies above `encoder_slow`),
//! the flight-controller link (lost: transport closed or no autopilot HEARTBEAT) and the attitude (the
//! rectify stage refuses frames whose attitude disagrees with the image). Each
//! [`HealthCondition`] is logged once when it starts and once when it clears, and sent to the autopilot as
//! STATUSTEXT (`vimgeo: ...`, at most 50 bytes). A tile cache built for another model is the fifth
//! condition, checked once at start, where it is fatal ([`super::Pipeline::spawn`]).
//!
//! It also drives systemd's notifications ([`Notifier`]): `READY=1` once running, `WATCHDOG=1` each period
//! while every stage thread has made progress within `stage_timeout`, a `STATUS=` line when it changes, and
//! `STOPPING=1` when the pipeline stops.

use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Instant;

use crossbeam_channel::{bounded, RecvTimeoutError, Sender};
use mavlink::dialects::ardupilotmega::MavSeverity;

use super::report::ReportSink;
use super::stages::Progress;
use super::watchdog::Notifier;
use super::{PipelineConfig, PipelineError};
use crate::fc::FcLink;

/// A condition the health thread watches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum HealthCondition {
    /// No frame for `[camera] stall_timeout_s`.
    CameraStalled,
    /// The median encode latency is above `[pipeline] encoder_slow_ms`.
    EncoderSlow,
    /// The flight-controller link is closed, or the autopilot's HEARTBEAT stopped (or never came).
    LinkLost,
    /// The tile cache was built with another model (checked at start, fatal).
    CacheMismatch,
    /// The rectify stage refuses frames because the reported attitude (or heading) jumped without the image moving (or turning) with
    /// it ([`crate::rectify::attitude_check`]).
    AttitudeInconsistent,
}

impl HealthCondition {
    /// The STATUSTEXT (after `vimgeo: `) when the condition starts.
    pub fn raised_text(self) -> &'static str {
        match self {
            HealthCondition::CameraStalled => "camera stalled",
            HealthCondition::EncoderSlow => "encoder too slow",
            HealthCondition::LinkLost => "flight-controller link lost",
            HealthCondition::CacheMismatch => "cache built for another model",
            HealthCondition::AttitudeInconsistent => "attitude disagrees with camera",
        }
    }

    /// The STATUSTEXT (after `vimgeo: `) when it clears.
    pub fn cleared_text(self) -> &'static str {
        match self {
            HealthCondition::CameraStalled => "camera ok",
            HealthCondition::EncoderSlow => "encoder ok",
            HealthCondition::LinkLost => "flight-controller link ok",
            HealthCondition::CacheMismatch => "cache ok",
            HealthCondition::AttitudeInconsistent => "attitude agrees with camera",
        }
    }

    fn severity(self) -> Severity {
        match self {
            HealthCondition::EncoderSlow => Severity::Warning,
            _ => Severity::Error,
        }
    }
}

#[derive(Debug, Clone, Copy)]
pub(crate) enum Severity {
    Error,
    Warning,
    Info,
}

/// Sends `vimgeo: {text}` (cut to 50 bytes by the message builder) when the link is up.
pub(crate) fn send_statustext(link: &FcLink, severity: Severity, text: &str) {
    let severity = match severity {
        Severity::Error => MavSeverity::MAV_SEVERITY_ERROR,
        Severity::Warning => MavSeverity::MAV_SEVERITY_WARNING,
        Severity::Info => MavSeverity::MAV_SEVERITY_INFO,
    };
    if !link.status_text(severity, &format!("vimgeo: {text}")) {
        log::debug!("STATUSTEXT {text:?} not queued on {}", link.link());
    }
}

struct Watch {
    config: super::HealthConfig,
    link: Option<Arc<FcLink>>,
    sink: Arc<ReportSink>,
    progress: Arc<Progress>,
    notifier: Notifier,
    active: Vec<HealthCondition>,
    started: Instant,
    last_status: String,
    /// The stage thread found stuck at the last tick.
    stuck: Option<&'static str>,
}

pub(crate) fn spawn(
    config: &PipelineConfig,
    link: &Option<Arc<FcLink>>,
    sink: &Arc<ReportSink>,
    progress: &Arc<Progress>,
) -> Result<(Sender<()>, JoinHandle<()>), PipelineError> {
    let (tx, rx) = bounded::<()>(1);
    let mut watch = Watch {
        config: config.health.clone(),
        link: link.clone(),
        sink: Arc::clone(sink),
        progress: Arc::clone(progress),
        notifier: Notifier::new(config.health.notify_socket.as_deref()),
        active: Vec::new(),
        started: Instant::now(),
        last_status: String::new(),
        stuck: None,
    };
    let thread = std::thread::Builder::new()
        .name("vimgeo-health".into())
        .spawn(move || {
            watch.notifier.notify("READY=1\nSTATUS=running");
            // Until the handle drops its end: the pipeline is stopping.
            while let Err(RecvTimeoutError::Timeout) = rx.recv_timeout(watch.config.period) {
                watch.tick(Instant::now());
            }
            watch.notifier.notify("STOPPING=1\nSTATUS=stopping");
        })
        .map_err(|source| PipelineError::Spawn {
            thread: "vimgeo-health",
            source,
        })?;
    Ok((tx, thread))
}

impl Watch {
    fn tick(&mut self, now: Instant) {
        let camera_running = !self.progress.camera_ended();
        self.set(
            HealthCondition::CameraStalled,
            camera_running && self.progress.since_last_frame(now) > self.config.stall_timeout,
        );
        let slow = self
            .sink
            .recent_encode_median(self.config.encoder_window)
            .is_some_and(|m| m > self.config.encoder_slow);
        self.set(HealthCondition::EncoderSlow, slow);
        self.set(
            HealthCondition::AttitudeInconsistent,
            self.progress.attitude_refused(),
        );
        if let Some(link) = &self.link {
            let s = link.snapshot();
            // Give the autopilot's first HEARTBEAT the stall timeout to arrive before calling it lost.
            let grace = now.duration_since(self.started) <= self.config.stall_timeout;
            let lost = !s.open || (!s.autopilot_alive && !grace);
            self.set(HealthCondition::LinkLost, lost);
        }
        let stuck = self.progress.stuck_thread(now, self.config.stage_timeout);
        if stuck != self.stuck {
            match stuck {
                Some(thread) => log::error!(
                    "pipeline thread {thread} made no progress for {:?}: watchdog pings stop",
                    self.config.stage_timeout
                ),
                None => log::info!("every pipeline thread makes progress again"),
            }
            self.stuck = stuck;
        }
        let running = !self.progress.all_exited();
        let (frames, fixes, dropped) = self.sink.counts();
        let mut status = format!("frames {frames}, fixes {fixes}, dropped {dropped}");
        for c in &self.active {
            status.push_str("; ");
            status.push_str(c.raised_text());
        }
        let mut message = String::new();
        if stuck.is_none() && running {
            message.push_str("WATCHDOG=1\n");
        }
        if status != self.last_status {
            message.push_str("STATUS=");
            message.push_str(&status);
            self.last_status = status;
        }
        if !message.is_empty() {
            self.notifier.notify(message.trim_end());
        }
    }

    fn set(&mut self, condition: HealthCondition, on: bool) {
        let was = self.active.contains(&condition);
        if on == was {
            return;
        }
        let text = if on {
            self.active.push(condition);
            log::warn!("health: {}", condition.raised_text());
            condition.raised_text()
        } else {
            self.active.retain(|c| *c != condition);
            log::info!("health: {}", condition.cleared_text());
            condition.cleared_text()
        };
        if self.config.statustext {
            if let Some(link) = &self.link {
                let severity = if on {
                    condition.severity()
                } else {
                    Severity::Info
                };
                send_statustext(link, severity, text);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statustexts_fit_in_fifty_bytes() {
        for c in [
            HealthCondition::CameraStalled,
            HealthCondition::EncoderSlow,
            HealthCondition::LinkLost,
            HealthCondition::CacheMismatch,
            HealthCondition::AttitudeInconsistent,
        ] {
            for text in [c.raised_text(), c.cleared_text()] {
                assert!(format!("vimgeo: {text}").len() <= 50, "{text}");
            }
        }
    }
}
