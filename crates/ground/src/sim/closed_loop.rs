//! The closed-loop simulation (`vimgeo sim`): a scenario flown end to end through the real pipeline.
//!
//! [`run`] loads the orthophoto and the model, builds the tile cache when it is missing or was built by another
//! model ([`ensure_cache`]: keyed by the model's SHA-256, the imagery's SHA-256 and the tiling, under
//! [`RunOptions::cache_dir`]; the build is logged), then starts, on one shared clock:
//! - the [`FakeAutopilot`] flying the scenario's [`Trajectory`] (GLOBAL_POSITION_INT, ATTITUDE,
//!   DISTANCE_SENSOR, GPS_RAW_INT with the GNSS outage and flapping, link drops), over real UDP loopback;
//! - the [`Pipeline`] with the [`SimCamera`] and an [`FcLink`] to that autopilot (publisher `auto` → GPS_INPUT
//!   for ArduPilot, policy `when_denied`).
//!
//! After `duration_s` it stops the pipeline and evaluates what the autopilot RECEIVED ([`evaluate`]): each
//! GPS_INPUT against the true position at the fix's time (horizontal error mean / median / p95 / max), the
//! fix rate, frame-to-fix latency, fixes whose error exceeded their reported (95 %) accuracy, fixes received
//! while GNSS was healthy (outside the monitor's hysteresis after a restore), and one [`FaultReport`] per
//! injected fault. It writes, into [`RunOptions::out_dir`]: `fixes.csv` (every frame's fix at its exposure
//! time against the truth, and whether it was handed to the link), `received.csv` (every GPS_INPUT the
//! autopilot got), `summary.json` ([`SimSummary`]), `pipeline-frames.csv` (the pipeline's own fix log) and
//! `trajectory.png` ([`crate::sim::plot`]). With [`RunOptions::record`] the frames the pipeline processed
//! are recorded (the pipeline then runs lossless) and [`replay`] reproduces the same fixes from the folder.
//!
//! [`FakeAutopilot`]: crate::sim::autopilot::FakeAutopilot
//! [`Pipeline`]: vimgeo_onboard::pipeline::Pipeline
//! [`SimCamera`]: crate::sim::camera::SimCamera
//! [`FcLink`]: vimgeo_onboard::fc::FcLink

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::Serialize;

use crate::sim::autopilot::Received;
use crate::sim::camera::{FrameFate, FrameTruth};
use crate::sim::scenario::{FaultKind, Scenario};
use crate::sim::trajectory::Trajectory;
use vimgeo_onboard::fc::{GnssVerdict, MavMessage};
use vimgeo_onboard::pipeline::{FrameOutcome, FrameReport, LatencyStats, RunSummary};

pub use self::live::{ensure_cache, replay, replay_with_encoder, run, run_with_encoder, SimRun};

/// Why a simulation could not run.
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    /// The scenario file.
    #[error(transparent)]
    Scenario(#[from] crate::sim::scenario::ScenarioError),
    /// A file the scenario names is missing.
    #[error("{}: [{section}] {key} = {}: no such file{hint}", scenario.display(), path.display())]
    Missing {
        /// The scenario file.
        scenario: PathBuf,
        /// Its table.
        section: &'static str,
        /// The key.
        key: &'static str,
        /// The missing file.
        path: PathBuf,
        /// How to get it.
        hint: String,
    },
    /// Something failed on the way, said with what was being done.
    #[error("{what}: {reason}")]
    Step {
        /// What was being done (names the file or component).
        what: String,
        /// Why it failed.
        reason: String,
    },
}

impl SimError {
    fn step(what: impl Into<String>, reason: impl std::fmt::Display) -> SimError {
        SimError::Step {
            what: what.into(),
            reason: reason.to_string(),
        }
    }
}

/// Where a run writes and what it reuses; the binary fills these (the library reads no environment).
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Output folder (fixes.csv, received.csv, summary.json, trajectory.png).
    pub out_dir: PathBuf,
    /// Where keyed tile caches are built and reused.
    pub cache_dir: PathBuf,
    /// Record the frames the pipeline processed into this replay folder (the pipeline then runs lossless).
    pub record: Option<PathBuf>,
    /// The encoder's settings (engine from the scenario; ONNX Runtime's library search from the binary).
    pub encoder: vimgeo_onboard::encoder::EncoderConfig,
    /// Override of the scenario's `[run] duration_s`.
    pub duration_s: Option<f64>,
    /// The data folder the scenario's `data:` paths were resolved in (for the message when a file is missing).
    pub data: vimgeo_onboard::data::DataDir,
}

/// Statistics of horizontal errors, metres.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct ErrorStats {
    /// Samples.
    pub count: usize,
    /// Mean, m.
    pub mean_m: f64,
    /// Median, m.
    pub median_m: f64,
    /// 95th percentile (nearest rank), m.
    pub p95_m: f64,
    /// Largest, m.
    pub max_m: f64,
}

impl ErrorStats {
    /// The statistics of `errors` (any order; non-finite values are ignored).
    pub fn of(errors: &[f64]) -> ErrorStats {
        let mut v: Vec<f64> = errors.iter().copied().filter(|e| e.is_finite()).collect();
        if v.is_empty() {
            return ErrorStats::default();
        }
        v.sort_by(f64::total_cmp);
        let rank = |q: f64| v[((q * v.len() as f64).ceil() as usize).clamp(1, v.len()) - 1];
        ErrorStats {
            count: v.len(),
            mean_m: v.iter().sum::<f64>() / v.len() as f64,
            median_m: if v.len() % 2 == 1 {
                v[v.len() / 2]
            } else {
                0.5 * (v[v.len() / 2 - 1] + v[v.len() / 2])
            },
            p95_m: rank(0.95),
            max_m: v[v.len() - 1],
        }
    }
}

/// One GPS_INPUT the autopilot received, against the truth.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct ReceivedFix {
    /// Seconds after time zero when the autopilot received it.
    pub received_s: f64,
    /// Seconds after time zero the position refers to (its `time_usec`).
    pub fix_s: f64,
    /// Latitude, longitude, degrees.
    pub lat_lon_deg: [f64; 2],
    /// Reported horizontal accuracy (a 95 % radius), m.
    pub accuracy_m: f64,
    /// True position at `fix_s`, degrees.
    pub truth_lat_lon_deg: [f64; 2],
    /// Horizontal error, m.
    pub error_m: f64,
    /// Whether the autopilot's GNSS was healthy when it arrived.
    pub gnss_ok: bool,
}

/// A change the closed loop saw in the link's view of the autopilot.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LinkEvent {
    /// Seconds after time zero.
    pub t_s: f64,
    /// `gnss healthy|degraded|denied`, `autopilot lost|alive`.
    pub what: String,
}

/// What happened during one injected fault, and whether the pipeline behaved.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct FaultReport {
    /// The fault's kind name.
    pub kind: String,
    /// Window, seconds after time zero.
    pub start_s: f64,
    /// Window end.
    pub end_s: f64,
    /// Exposures in the window.
    pub frames_in_window: usize,
    /// Exposures the fault hit (dropped, garbage, unreadable, wrong attitude).
    pub frames_hit: usize,
    /// The pipeline's outcome of each frame exposed in the window, counted by kind.
    pub outcomes: BTreeMap<String, u64>,
    /// GPS_INPUTs received in the window and the 3 s after it.
    pub fixes_received: usize,
    /// Of those, the ones whose error exceeded their reported accuracy.
    pub wrong_fixes: usize,
    /// Of those, the ones received more than 1 s after the time they refer to.
    pub stale_fixes: usize,
    /// STATUSTEXTs the autopilot received from us during the window and the 6 s after it.
    pub statustexts: Vec<String>,
    /// Link events during the window and the 6 s after it.
    pub link_events: Vec<String>,
    /// Whether the fault shows in what the pipeline or the link reported (see `evidence`).
    pub reported: bool,
    /// What shows it.
    pub evidence: String,
}

/// Frames the simulated camera handled.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct FrameCounts {
    /// Exposures handled (delivered or faulted).
    pub exposures: usize,
    /// Delivered as rendered.
    pub delivered: usize,
    /// Lost (dropped_frames).
    pub dropped: usize,
    /// Random bytes (corrupt_frames).
    pub garbage: usize,
    /// Unreadable (corrupt_frames).
    pub unreadable: usize,
    /// Slots skipped because the pipeline's camera thread was slower than fps.
    pub skipped_slots: u64,
    /// Timeouts during camera stalls.
    pub stalled_calls: u64,
}

/// The result of a closed-loop run (`summary.json`).
#[derive(Debug, Clone, Default, Serialize)]
pub struct SimSummary {
    /// Scenario name.
    pub scenario: String,
    /// Its seed.
    pub seed: u64,
    /// Length of the run, s.
    pub duration_s: f64,
    /// The GNSS-lost span, s after time zero (`end` may be past the run).
    pub gnss_lost_s: Option<[f64; 2]>,
    /// What the camera and the map share: `the map's own pixels` or `another image (FILE)`, and the
    /// appearance preset (`none`, `mild`, `strong`; overrides noted).
    pub camera_world: String,
    /// Frames.
    pub frames: FrameCounts,
    /// Rendering time per frame, ms.
    pub render: LatencyStats,
    /// Horizontal error of every fix the autopilot received.
    pub error: ErrorStats,
    /// Median reported accuracy of those fixes, m.
    pub accuracy_median_m: f64,
    /// GPS_INPUTs received.
    pub fixes_received: usize,
    /// Fixes received per second of GNSS denial (within the run).
    pub fix_rate_hz: f64,
    /// Fraction of the frames delivered during the GNSS denial after which a fix was handed to the link.
    pub fix_fraction_of_frames: f64,
    /// Frame exposure → fix handed to the link, ms.
    pub frame_to_fix: LatencyStats,
    /// Received fixes whose error exceeded their reported accuracy.
    pub exceeding_accuracy: usize,
    /// The same, percent of the fixes received.
    pub exceeding_accuracy_pct: f64,
    /// Fixes received while GNSS was healthy, outside the tolerated transition after a restore and
    /// outside flapping windows (policy `when_denied`: should be 0).
    pub received_while_gnss_healthy: usize,
    /// Fixes received while GNSS was healthy within the tolerated transition (the monitor's `recover_after`
    /// plus 1 s after GNSS came back) or during flapping.
    pub received_in_transitions: usize,
    /// Fixes received more than 1 s after the time they refer to.
    pub stale_received: usize,
    /// One per injected fault.
    pub faults: Vec<FaultReport>,
    /// Changes in the link's view of the autopilot (GNSS verdict, autopilot alive).
    pub link_events: Vec<LinkEvent>,
    /// The pipeline's own summary.
    pub pipeline: RunSummary,
}

impl std::fmt::Display for SimSummary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "scenario {} (seed {}, {:.0} s)",
            self.scenario, self.seed, self.duration_s
        )?;
        writeln!(f, "  camera sees: {}", self.camera_world)?;
        if let Some([a, b]) = self.gnss_lost_s {
            writeln!(
                f,
                "  GNSS lost from {a:.0} s to {}",
                if b.is_finite() {
                    format!("{b:.0} s")
                } else {
                    "the end".into()
                }
            )?;
        }
        let c = &self.frames;
        writeln!(
            f,
            "  frames: {} delivered ({} dropped, {} garbage, {} unreadable by faults; {} slots skipped), render p50 {:.1} ms",
            c.delivered, c.dropped, c.garbage, c.unreadable, c.skipped_slots, self.render.p50_ms
        )?;
        let e = &self.error;
        writeln!(
            f,
            "  horizontal error of {} received fixes: mean {:.2} m, median {:.2} m, p95 {:.2} m, max {:.2} m \
             (median reported accuracy {:.1} m)",
            self.fixes_received, e.mean_m, e.median_m, e.p95_m, e.max_m, self.accuracy_median_m
        )?;
        writeln!(
            f,
            "  fix rate {:.2} Hz while denied ({:.0} % of frames); frame-to-fix p50 {:.0} ms, p99 {:.0} ms",
            self.fix_rate_hz,
            100.0 * self.fix_fraction_of_frames,
            self.frame_to_fix.p50_ms,
            self.frame_to_fix.p99_ms
        )?;
        writeln!(
            f,
            "  error > reported accuracy: {} ({:.1} %); received while GNSS healthy: {} (+{} in transitions); stale: {}",
            self.exceeding_accuracy,
            self.exceeding_accuracy_pct,
            self.received_while_gnss_healthy,
            self.received_in_transitions,
            self.stale_received
        )?;
        for r in &self.faults {
            writeln!(
                f,
                "  fault {} {:.0}-{:.0} s: {} of {} frames hit, {} fixes received ({} wrong, {} stale); reported: {} ({})",
                r.kind,
                r.start_s,
                r.end_s,
                r.frames_hit,
                r.frames_in_window,
                r.fixes_received,
                r.wrong_fixes,
                r.stale_fixes,
                if r.reported { "yes" } else { "NO" },
                r.evidence
            )?;
        }
        Ok(())
    }
}

/// Everything a run observed, for [`evaluate`].
#[derive(Debug, Clone, Default)]
pub struct Observations {
    /// UNIX time of time zero, µs.
    pub origin_unix_us: u64,
    /// Wall time the run lasted after time zero, s.
    pub duration_s: f64,
    /// The camera's log.
    pub frames: Vec<FrameTruth>,
    /// Exposure slots skipped, timeouts during stalls.
    pub skipped_slots: u64,
    /// Timeouts during camera stalls.
    pub stalled_calls: u64,
    /// The pipeline's reports.
    pub reports: Vec<FrameReport>,
    /// What the autopilot received.
    pub received: Vec<Received>,
    /// Link events.
    pub link_events: Vec<LinkEvent>,
    /// The pipeline's summary.
    pub pipeline: RunSummary,
}

/// How long after GNSS returns fixes may still arrive: the link's GNSS monitor holds a better verdict for
/// `recover_after` (3 s by default) before it stops publishing, plus 1 s for telemetry and queueing.
pub const TRANSITION_TOLERANCE_S: f64 = 4.0;

/// Received GPS_INPUTs against the truth.
pub fn received_fixes(
    scenario: &Scenario,
    trajectory: &Trajectory,
    origin_unix_us: u64,
    received: &[Received],
) -> Vec<ReceivedFix> {
    received
        .iter()
        .filter_map(|r| match &r.message {
            MavMessage::GPS_INPUT(g) => Some((r.at, g)),
            _ => None,
        })
        .map(|(at, g)| {
            let fix_s = (g.time_usec as f64 - origin_unix_us as f64) * 1e-6;
            let received_s = at.as_secs_f64();
            let truth = trajectory.state(fix_s);
            let (lat, lon) = (f64::from(g.lat) * 1e-7, f64::from(g.lon) * 1e-7);
            let ne = trajectory.to_ne(lat, lon);
            ReceivedFix {
                received_s,
                fix_s,
                lat_lon_deg: [lat, lon],
                accuracy_m: f64::from(g.horiz_accuracy),
                truth_lat_lon_deg: [truth.lat_deg, truth.lon_deg],
                error_m: (ne[0] - truth.ne_m[0]).hypot(ne[1] - truth.ne_m[1]),
                gnss_ok: scenario.gnss_ok(received_s),
            }
        })
        .collect()
}

fn statustexts(received: &[Received]) -> Vec<(f64, String)> {
    received
        .iter()
        .filter_map(|r| match &r.message {
            MavMessage::STATUSTEXT(s) => {
                Some((r.at.as_secs_f64(), s.text.to_str().unwrap_or("").to_owned()))
            }
            _ => None,
        })
        .collect()
}

fn unix_to_s(origin_unix_us: u64, unix_us: u64) -> f64 {
    (unix_us as f64 - origin_unix_us as f64) * 1e-6
}

/// The metrics of a run. See the module documentation.
pub fn evaluate(scenario: &Scenario, trajectory: &Trajectory, obs: &Observations) -> SimSummary {
    let fixes = received_fixes(scenario, trajectory, obs.origin_unix_us, &obs.received);
    let errors: Vec<f64> = fixes.iter().map(|f| f.error_m).collect();
    let exceeding = fixes.iter().filter(|f| f.error_m > f.accuracy_m).count();
    let mut accuracies: Vec<f64> = fixes.iter().map(|f| f.accuracy_m).collect();
    let accuracy_median_m = ErrorStats::of(&accuracies).median_m;
    accuracies.clear();

    let flapping = |t: f64| {
        scenario
            .faults
            .iter()
            .any(|f| matches!(f.kind, FaultKind::GnssFlapping { .. }) && f.window.contains(t))
    };
    let in_transition = |t: f64| {
        let after_restore = scenario
            .gnss_lost
            .is_some_and(|w| t >= w.end_s && t < w.end_s + TRANSITION_TOLERANCE_S);
        let after_flapping = scenario.faults.iter().any(|f| {
            matches!(f.kind, FaultKind::GnssFlapping { .. })
                && t >= f.window.start_s
                && t < f.window.end_s + TRANSITION_TOLERANCE_S
        });
        after_restore || after_flapping || flapping(t)
    };
    let healthy: Vec<&ReceivedFix> = fixes.iter().filter(|f| f.gnss_ok).collect();
    let received_in_transitions = healthy
        .iter()
        .filter(|f| in_transition(f.received_s))
        .count();
    let stale_received = fixes
        .iter()
        .filter(|f| f.received_s - f.fix_s > 1.0)
        .count();

    // GNSS denial inside the run.
    let denied_s = scenario.gnss_lost.map_or(0.0, |w| {
        (w.end_s.min(obs.duration_s) - w.start_s.min(obs.duration_s)).max(0.0)
    });
    let denied = |t: f64| scenario.gnss_lost.is_some_and(|w| w.contains(t));
    let delivered_denied = obs
        .frames
        .iter()
        .filter(|f| f.fate == FrameFate::Delivered && denied(f.t_s))
        .count();
    let handed_denied = obs
        .reports
        .iter()
        .filter(|r| {
            denied(unix_to_s(obs.origin_unix_us, r.exposure_unix_us))
                && r.published.as_ref().is_some_and(|p| {
                    matches!(p.outcome, Ok(vimgeo_onboard::fc::PublishOutcome::Queued(_)))
                })
        })
        .count();
    let received_denied = fixes.iter().filter(|f| denied(f.received_s)).count();

    let count = |fate: FrameFate| obs.frames.iter().filter(|f| f.fate == fate).count();
    let renders: Vec<Duration> = obs
        .frames
        .iter()
        .filter(|f| f.fate == FrameFate::Delivered)
        .map(|f| f.render)
        .collect();

    let texts = statustexts(&obs.received);
    let faults = scenario
        .faults
        .iter()
        .map(|fault| fault_report(fault, obs, &fixes, &texts))
        .collect();

    SimSummary {
        scenario: scenario.name.clone(),
        camera_world: scenario.camera_world.describe(),
        seed: scenario.run.seed,
        duration_s: obs.duration_s,
        gnss_lost_s: scenario.gnss_lost.map(|w| [w.start_s, w.end_s]),
        frames: FrameCounts {
            exposures: obs.frames.len(),
            delivered: count(FrameFate::Delivered),
            dropped: count(FrameFate::Dropped),
            garbage: count(FrameFate::Garbage),
            unreadable: count(FrameFate::Unreadable),
            skipped_slots: obs.skipped_slots,
            stalled_calls: obs.stalled_calls,
        },
        render: LatencyStats::of(&renders),
        error: ErrorStats::of(&errors),
        accuracy_median_m,
        fixes_received: fixes.len(),
        fix_rate_hz: if denied_s > 0.0 {
            received_denied as f64 / denied_s
        } else {
            0.0
        },
        fix_fraction_of_frames: if delivered_denied > 0 {
            handed_denied as f64 / delivered_denied as f64
        } else {
            0.0
        },
        frame_to_fix: obs.pipeline.frame_to_fix,
        exceeding_accuracy: exceeding,
        exceeding_accuracy_pct: if fixes.is_empty() {
            0.0
        } else {
            100.0 * exceeding as f64 / fixes.len() as f64
        },
        received_while_gnss_healthy: healthy.len() - received_in_transitions,
        received_in_transitions,
        stale_received,
        faults,
        link_events: obs.link_events.clone(),
        pipeline: obs.pipeline.clone(),
    }
}

fn fault_report(
    fault: &crate::sim::scenario::Fault,
    obs: &Observations,
    fixes: &[ReceivedFix],
    texts: &[(f64, String)],
) -> FaultReport {
    let w = fault.window;
    let in_w = |t: f64| w.contains(t);
    let after = |t: f64, extra: f64| t >= w.start_s && t < w.end_s + extra;
    let frames: Vec<&FrameTruth> = obs.frames.iter().filter(|f| in_w(f.t_s)).collect();
    let frames_hit = frames
        .iter()
        .filter(|f| f.fate != FrameFate::Delivered || f.wrong_attitude)
        .count();
    let mut outcomes = BTreeMap::new();
    for r in &obs.reports {
        if in_w(unix_to_s(obs.origin_unix_us, r.exposure_unix_us)) {
            *outcomes.entry(r.outcome.kind().to_owned()).or_insert(0u64) += 1;
        }
    }
    let window_fixes: Vec<&ReceivedFix> =
        fixes.iter().filter(|f| after(f.received_s, 3.0)).collect();
    let statustexts: Vec<String> = texts
        .iter()
        .filter(|(t, _)| after(*t, 6.0))
        .map(|(t, s)| format!("{t:.1} s: {s}"))
        .collect();
    let link_events: Vec<String> = obs
        .link_events
        .iter()
        .filter(|e| after(e.t_s, 6.0))
        .map(|e| format!("{:.1} s: {}", e.t_s, e.what))
        .collect();
    let has_text = |needle: &str| statustexts.iter().any(|s| s.contains(needle));
    let has_event = |needle: &str| link_events.iter().any(|s| s.contains(needle));
    let reported_seqs: std::collections::BTreeSet<u64> =
        obs.reports.iter().map(|r| r.seq).collect();
    let (reported, evidence) = match fault.kind {
        FaultKind::CameraStall => (
            has_text("camera stalled"),
            "STATUSTEXT \"vimgeo: camera stalled\" received".to_owned(),
        ),
        FaultKind::DroppedFrames { .. } => {
            let lost: Vec<u64> = frames
                .iter()
                .filter(|f| f.fate == FrameFate::Dropped)
                .map(|f| f.seq)
                .collect();
            let gaps = lost.iter().filter(|s| !reported_seqs.contains(s)).count();
            (
                !lost.is_empty() && gaps == lost.len(),
                format!(
                    "{gaps} of {} lost frames show as sequence gaps in the reports",
                    lost.len()
                ),
            )
        }
        FaultKind::CorruptFrames { .. } => {
            let garbage: Vec<u64> = frames
                .iter()
                .filter(|f| f.fate == FrameFate::Garbage)
                .map(|f| f.seq)
                .collect();
            let unreadable = frames
                .iter()
                .filter(|f| f.fate == FrameFate::Unreadable)
                .count();
            let refused = obs
                .reports
                .iter()
                .filter(|r| {
                    garbage.contains(&r.seq) && !matches!(r.outcome, FrameOutcome::Measured(_))
                })
                .count();
            let seen = obs
                .reports
                .iter()
                .filter(|r| garbage.contains(&r.seq))
                .count();
            (
                refused == seen && (seen > 0 || unreadable > 0),
                format!(
                    "{refused} of {seen} garbage frames processed gave no accepted measurement; \
                     {unreadable} unreadable frames returned as camera errors"
                ),
            )
        }
        FaultKind::LinkDrop => (
            has_event("autopilot lost") || has_text("link lost") || has_text("link ok"),
            "the link saw the autopilot lost / STATUSTEXT about the link".to_owned(),
        ),
        FaultKind::GnssFlapping { .. } => {
            let changes = link_events.iter().filter(|e| e.contains("gnss")).count();
            (
                true,
                format!(
                    "{changes} GNSS verdict changes during and after the flapping (hysteresis)"
                ),
            )
        }
        FaultKind::WrongAttitude { .. } => {
            // Frames the pipeline did not use as a measurement (refused, gated, no measurement), whichever
            // localizer: the report's outcome category, not its localizer-specific kind.
            let not_accepted = obs
                .reports
                .iter()
                .filter(|r| in_w(unix_to_s(obs.origin_unix_us, r.exposure_unix_us)))
                .filter(|r| !matches!(r.outcome, FrameOutcome::Measured(_)))
                .count();
            (
                not_accepted > 0 || has_text("attitude disagrees"),
                format!(
                    "{not_accepted} frames in the window refused, gated or without measurement; \
                     STATUSTEXT \"vimgeo: attitude disagrees with camera\" {}",
                    if has_text("attitude disagrees") {
                        "received"
                    } else {
                        "not received"
                    }
                ),
            )
        }
        FaultKind::GnssSpoof { .. } => (
            has_text("GNSS inconsistent"),
            format!(
                "STATUSTEXT \"GNSS inconsistent\" {} (vimgeo has no GNSS integrity check yet: a spoofed GNSS \
                 that stays healthy anchors the localizer and stops publishing)",
                if has_text("GNSS inconsistent") {
                    "received"
                } else {
                    "not received"
                }
            ),
        ),
    };
    FaultReport {
        kind: fault.kind.name().to_owned(),
        start_s: w.start_s,
        end_s: w.end_s,
        frames_in_window: frames.len(),
        frames_hit,
        outcomes,
        fixes_received: window_fixes.len(),
        wrong_fixes: window_fixes
            .iter()
            .filter(|f| f.error_m > f.accuracy_m)
            .count(),
        stale_fixes: window_fixes
            .iter()
            .filter(|f| f.received_s - f.fix_s > 1.0)
            .count(),
        statustexts,
        link_events,
        reported,
        evidence,
    }
}

/// `fixes.csv`: one line per frame with a fix at its exposure time.
pub const FIXES_HEADER: &str =
    "seq,t_s,truth_lat_deg,truth_lon_deg,fix_lat_deg,fix_lon_deg,accuracy_m,error_m,\
exceeds_accuracy,outcome,published,gnss_ok";
/// `received.csv`: one line per GPS_INPUT the autopilot received.
pub const RECEIVED_HEADER: &str =
    "received_s,fix_s,truth_lat_deg,truth_lon_deg,fix_lat_deg,fix_lon_deg,accuracy_m,\
error_m,exceeds_accuracy,gnss_ok";

/// The two CSVs' text.
pub fn csvs(scenario: &Scenario, trajectory: &Trajectory, obs: &Observations) -> (String, String) {
    let mut fixes = String::from(FIXES_HEADER);
    fixes.push('\n');
    for r in &obs.reports {
        let Some(fix) = r.fix_at_exposure else {
            continue;
        };
        let t = unix_to_s(obs.origin_unix_us, r.exposure_unix_us);
        let truth = trajectory.state(t);
        let ne = trajectory.to_ne(fix.lat_deg, fix.lon_deg);
        let error = (ne[0] - truth.ne_m[0]).hypot(ne[1] - truth.ne_m[1]);
        let published = r.published.as_ref().is_some_and(|p| {
            matches!(p.outcome, Ok(vimgeo_onboard::fc::PublishOutcome::Queued(_)))
        });
        fixes.push_str(&format!(
            "{},{:.3},{:.8},{:.8},{:.8},{:.8},{:.2},{:.2},{},{},{},{}\n",
            r.seq,
            t,
            truth.lat_deg,
            truth.lon_deg,
            fix.lat_deg,
            fix.lon_deg,
            fix.horiz_accuracy_m,
            error,
            u8::from(error > f64::from(fix.horiz_accuracy_m)),
            r.outcome.kind(),
            u8::from(published),
            u8::from(scenario.gnss_ok(t)),
        ));
    }
    let mut received = String::from(RECEIVED_HEADER);
    received.push('\n');
    for f in received_fixes(scenario, trajectory, obs.origin_unix_us, &obs.received) {
        received.push_str(&format!(
            "{:.3},{:.3},{:.8},{:.8},{:.8},{:.8},{:.2},{:.2},{},{}\n",
            f.received_s,
            f.fix_s,
            f.truth_lat_lon_deg[0],
            f.truth_lat_lon_deg[1],
            f.lat_lon_deg[0],
            f.lat_lon_deg[1],
            f.accuracy_m,
            f.error_m,
            u8::from(f.error_m > f.accuracy_m),
            u8::from(f.gnss_ok),
        ));
    }
    (fixes, received)
}

/// Verdict and liveness changes in successive link snapshots.
#[derive(Debug, Default)]
struct LinkWatch {
    verdict: Option<GnssVerdict>,
    alive: Option<bool>,
    events: Vec<LinkEvent>,
}

impl LinkWatch {
    fn see(&mut self, t_s: f64, verdict: GnssVerdict, alive: bool) {
        if self.verdict != Some(verdict) {
            self.verdict = Some(verdict);
            self.events.push(LinkEvent {
                t_s,
                what: format!("gnss {verdict}"),
            });
        }
        if self.alive != Some(alive) {
            self.alive = Some(alive);
            self.events.push(LinkEvent {
                t_s,
                what: if alive {
                    "autopilot alive"
                } else {
                    "autopilot lost"
                }
                .to_owned(),
            });
        }
    }
}

mod live {
    use super::*;

    use std::path::Path;
    use std::sync::Arc;
    use std::time::Instant;

    use sha2::{Digest, Sha256};

    use crate::build::{
        build_cache, BuildOutcome, CacheBuildConfig, EncodeOptions, OrthoOptions, TilingSpec,
    };
    use crate::sim::autopilot::{self, FakeAutopilot};
    use crate::sim::camera::SimCamera;
    use crate::sim::plot::{self, PlotData};
    use crate::sim::render::{view_on_map, OrthoMap};
    use vimgeo_onboard::camera::CameraSource;
    use vimgeo_onboard::encoder::{open_encoder, Encoder};
    use vimgeo_onboard::fc::{LinkAddress, LinkConfig, PublishPolicy, Publisher};
    use vimgeo_onboard::matching::EmbeddingDtype;
    use vimgeo_onboard::pipeline::{
        open_cache, EncoderSource, PartsConfig, Pipeline, PipelineConfig, PipelineParts,
    };
    use vimgeo_onboard::rectify::{CameraCalibration, CameraModel, Pose};
    use vimgeo_onboard::util::write_atomic_bytes;

    /// A finished run: its summary, what it observed, and where it wrote.
    #[derive(Debug)]
    pub struct SimRun {
        /// The metrics.
        pub summary: SimSummary,
        /// Everything observed.
        pub observations: Observations,
        /// The trajectory flown.
        pub trajectory: Arc<Trajectory>,
        /// The tile cache used.
        pub cache: PathBuf,
        /// `fixes.csv`.
        pub fixes_csv: PathBuf,
        /// `received.csv`.
        pub received_csv: PathBuf,
        /// `summary.json`.
        pub summary_json: PathBuf,
        /// `trajectory.png`.
        pub plot: PathBuf,
    }

    fn check_exists(
        scenario: &Scenario,
        section: &'static str,
        key: &'static str,
        path: &Path,
        hint: &str,
    ) -> Result<(), SimError> {
        if path.exists() {
            Ok(())
        } else {
            Err(SimError::Missing {
                scenario: scenario.file.clone(),
                section,
                key,
                path: path.to_path_buf(),
                hint: hint.to_owned(),
            })
        }
    }

    /// The world the camera renders from: the map itself, or `[map] camera_ortho`, with the appearance's world
    /// part applied and moved by its misregistration; refused when it does not cover every frame of the flight.
    fn camera_world(
        scenario: &Scenario,
        options: &RunOptions,
        map: &Arc<OrthoMap>,
        trajectory: &Trajectory,
        calibration: &CameraCalibration,
    ) -> Result<Arc<OrthoMap>, SimError> {
        let world = &scenario.camera_world;
        let a = &world.appearance;
        let key = "[map] camera_ortho";
        if world.separate {
            check_exists(
                scenario,
                "map",
                "camera_ortho",
                &world.ortho,
                &options.data.missing_hint(&world.ortho),
            )?;
        } else if a.world_is_identity() && a.misregistration_m == [0.0; 2] {
            return Ok(Arc::clone(map));
        }
        let base = if world.separate {
            OrthoMap::open(
                &world.ortho,
                &OrthoOptions {
                    crs: world.crs.clone(),
                    ..OrthoOptions::default()
                },
            )
            .map_err(|e| SimError::step(format!("{}: {key}", scenario.file.display()), e))?
        } else {
            (**map).clone()
        };
        let mut image = base.image().clone();
        a.apply_world(&mut image)
            .map_err(|e| SimError::step(format!("{}: [appearance]", scenario.file.display()), e))?;
        let camera_map = OrthoMap::from_parts(
            image,
            a.shift_geotransform(base.geotransform()),
            base.zone(),
        )
        .map_err(|e| SimError::step(format!("{}: {key}", scenario.file.display()), e))?;
        // Every 0.5 s of the flight, the ground the pipeline matches (the cache tile's square, in any
        // orientation, below the vehicle and below the optical axis) must lie on the camera world.
        let camera = CameraModel::new(calibration);
        let radius_m = scenario.cache.footprint_m * std::f64::consts::FRAC_1_SQRT_2;
        let duration_s = options.duration_s.unwrap_or(scenario.run.duration_s);
        let steps = (duration_s / 0.5).ceil() as usize;
        for k in 0..=steps {
            let t = (k as f64 * 0.5).min(duration_s);
            let st = trajectory.state(t);
            let pose = Pose::from_euler(st.roll_rad, st.pitch_rad, st.yaw_rad, st.height_agl_m);
            let on = view_on_map(
                &camera_map,
                &camera,
                (st.lat_deg, st.lon_deg),
                &pose,
                radius_m,
            )
            .map_err(|e| SimError::step(format!("{}: {key}", scenario.file.display()), e))?;
            if !on {
                return Err(SimError::step(
                    format!("{}: {key}", scenario.file.display()),
                    format!(
                        "{} does not cover the flight: at {t:.1} s the {:.1} m square the pipeline \
                         matches lies partly off that image (vehicle at lat {:.6}, lon {:.6}, {:.0} m up); \
                         use imagery that covers the whole flight",
                        world.ortho.display(),
                        scenario.cache.footprint_m,
                        st.lat_deg,
                        st.lon_deg,
                        st.height_agl_m
                    ),
                ));
            }
        }
        log::info!(
            "camera world: {} ({}), appearance {}",
            world.ortho.display(),
            if world.separate {
                "not the map"
            } else {
                "the map's own pixels"
            },
            world.preset.name()
        );
        Ok(Arc::new(camera_map))
    }

    fn sha256_file(path: &Path) -> Result<String, SimError> {
        let bytes = std::fs::read(path)
            .map_err(|e| SimError::step(format!("reading {}", path.display()), e))?;
        Ok(format!("{:x}", Sha256::digest(&bytes)))
    }

    /// The tile cache of `scenario` for `encoder`'s model: the scenario's `[cache] path` when it exists and
    /// was built with this model; else built (at that path when it is missing, otherwise under `cache_dir`,
    /// named by a key over the model's SHA-256, the imagery's SHA-256, the CRS and the tiling, so a cache of
    /// the same inputs is reused and one of other inputs is never). Logs the build.
    pub fn ensure_cache(
        scenario: &Scenario,
        encoder: &mut dyn Encoder,
        cache_dir: &Path,
    ) -> Result<PathBuf, SimError> {
        let manifest = encoder.manifest().clone();
        if let Some(path) = &scenario.cache.path {
            if path.exists() {
                match open_cache(path, &manifest) {
                    Ok(_) => return Ok(path.clone()),
                    Err(e) => log::warn!(
                        "{}: [cache] path {}: {e}; building one for this model under {}",
                        scenario.file.display(),
                        path.display(),
                        cache_dir.display()
                    ),
                }
            }
        }
        let mut key = Sha256::new();
        key.update(vimgeo_onboard::VERSION.as_bytes());
        key.update(manifest.onnx_sha256.as_bytes());
        key.update(sha256_file(&scenario.ortho)?.as_bytes());
        // A world file changes the georeference without changing the image.
        for ext in ["pgw", "wld", "tfw", "jgw"] {
            let world = scenario.ortho.with_extension(ext);
            if world.exists() {
                key.update(sha256_file(&world)?.as_bytes());
            }
        }
        key.update(format!(
            "{:?}|{}|{}",
            scenario.crs, scenario.cache.footprint_m, scenario.cache.stride
        ));
        let key = format!("{:x}", key.finalize());
        let target = match &scenario.cache.path {
            Some(path) if !path.exists() => path.clone(),
            _ => {
                let stem = scenario
                    .ortho
                    .file_stem()
                    .map_or_else(|| "ortho".into(), |s| s.to_string_lossy().into_owned());
                cache_dir.join(format!("{stem}-{}-{}.vgc", manifest.name, &key[..16]))
            }
        };
        if target.exists() {
            match open_cache(&target, &manifest) {
                Ok(_) => {
                    log::info!("tile cache {} (reused)", target.display());
                    return Ok(target);
                }
                Err(e) => log::warn!("tile cache {}: {e}; rebuilding it", target.display()),
            }
        }
        if let Some(dir) = target.parent() {
            std::fs::create_dir_all(dir)
                .map_err(|e| SimError::step(format!("creating {}", dir.display()), e))?;
        }
        let spec =
            TilingSpec::from_footprints(vec![scenario.cache.footprint_m], scenario.cache.stride)
                .map_err(|e| SimError::step(format!("{}: [cache]", scenario.file.display()), e))?;
        let config = CacheBuildConfig {
            ortho: scenario.ortho.clone(),
            ortho_options: OrthoOptions {
                crs: scenario.crs.clone(),
                ..OrthoOptions::default()
            },
            spec,
            out: target.clone(),
            dtype: EmbeddingDtype::F32,
            encode: EncodeOptions::default(),
        };
        log::info!(
            "building tile cache {} from {} with model {} ({} m tiles, stride {})",
            target.display(),
            scenario.ortho.display(),
            manifest.name,
            scenario.cache.footprint_m,
            scenario.cache.stride
        );
        let mut last_decile = 0;
        let outcome = build_cache(&config, encoder, &mut |p| {
            let decile = (10 * p.done).checked_div(p.total).unwrap_or(10);
            if decile > last_decile {
                last_decile = decile;
                log::info!(
                    "tile cache: {} of {} tiles ({:.0} s)",
                    p.done,
                    p.total,
                    p.elapsed.as_secs_f64()
                );
            }
        })
        .map_err(|e| SimError::step(format!("building tile cache {}", target.display()), e))?;
        match outcome {
            BuildOutcome::Written(report) => log::info!(
                "tile cache {}: {} tiles in {:.1} s",
                target.display(),
                report.written,
                report.elapsed.as_secs_f64()
            ),
            BuildOutcome::Stopped { done, total } => {
                return Err(SimError::step(
                    format!("building tile cache {}", target.display()),
                    format!("stopped after {done} of {total} tiles"),
                ))
            }
        }
        Ok(target)
    }

    /// The pipeline's configuration for a scenario.
    fn pipeline_config(
        scenario: &Scenario,
        lossless: bool,
        record: Option<PathBuf>,
        fix_log: Option<PathBuf>,
    ) -> PipelineConfig {
        let defaults = PipelineConfig::default();
        PipelineConfig {
            localize: scenario.localize.clone(),
            lossless,
            record,
            fix_log,
            prior_radius_m: scenario
                .cache
                .prior_radius_m
                .unwrap_or(defaults.prior_radius_m),
            ..defaults
        }
    }

    /// Runs `scenario` with its model. See the module documentation.
    pub fn run(scenario: &Scenario, options: &RunOptions) -> Result<SimRun, SimError> {
        check_exists(
            scenario,
            "model",
            "path",
            &scenario.model.path,
            " (export it as models/README.md says, or point [model] path at another exported model)",
        )?;
        let mut encoder_config = options.encoder.clone();
        encoder_config.engine = scenario.model.engine;
        let encoder = open_encoder(&scenario.model.path, &encoder_config)
            .map_err(|e| SimError::step(format!("{}: [model] path", scenario.file.display()), e))?;
        run_with_encoder(scenario, options, encoder)
    }

    /// Runs `scenario` with `encoder` instead of opening the scenario's model (a test double, or an encoder
    /// the caller already holds); the tile cache is built with it.
    pub fn run_with_encoder(
        scenario: &Scenario,
        options: &RunOptions,
        mut encoder: Box<dyn Encoder>,
    ) -> Result<SimRun, SimError> {
        check_exists(
            scenario,
            "map",
            "ortho",
            &scenario.ortho,
            &options.data.missing_hint(&scenario.ortho),
        )?;
        check_exists(scenario, "camera", "calib", &scenario.camera.calib, "")?;
        let what = |w: &str| format!("{}: {w}", scenario.file.display());

        let map = OrthoMap::open(
            &scenario.ortho,
            &OrthoOptions {
                crs: scenario.crs.clone(),
                ..OrthoOptions::default()
            },
        )
        .map_err(|e| SimError::step(what("[map] ortho"), e))?;
        let map = Arc::new(map);
        let (w, h) = map.dimensions();
        let centre = map
            .pixel_to_lat_lon(f64::from(w) / 2.0, f64::from(h) / 2.0)
            .map_err(|e| SimError::step(what("[map] centre"), e))?;
        let trajectory = Arc::new(
            Trajectory::new(centre, &scenario.flight)
                .map_err(|e| SimError::step(what("[flight]"), e))?,
        );
        let calibration = CameraCalibration::load(&scenario.camera.calib)
            .map_err(|e| SimError::step(what("[camera] calib"), e))?;
        let camera_map = camera_world(scenario, options, &map, &trajectory, &calibration)?;

        let cache_path = ensure_cache(scenario, encoder.as_mut(), &options.cache_dir)?;
        let mut link_config = LinkConfig::new(
            LinkAddress::parse("udpin:127.0.0.1:0")
                .map_err(|e| SimError::step("flight-controller link", e))?,
        );
        link_config.policy = PublishPolicy::WhenDenied;
        link_config.publisher = Publisher::Auto;
        link_config.max_fix_age = Some(Duration::from_millis(500));

        // One clock for the camera, the autopilot and the metrics, starting a moment from now so that the
        // link has the autopilot's HEARTBEAT before the first frame.
        let lead = Duration::from_millis(1500);
        let origin = Instant::now() + lead;
        let origin_unix_us = vimgeo_onboard::util::unix_now_us() + lead.as_micros() as u64;
        let origin_mono_us = vimgeo_onboard::camera::mono_now_us() + lead.as_micros() as u64;
        let duration_s = options.duration_s.unwrap_or(scenario.run.duration_s);
        let camera = SimCamera::new(
            camera_map,
            CameraModel::new(&calibration),
            Arc::clone(&trajectory),
            Arc::new(scenario.clone()),
            origin,
            origin_unix_us,
            origin_mono_us,
        );
        let camera_log = camera.log();
        log::info!("{} for {duration_s:.0} s", camera.describe());
        let parts = PipelineParts::open(
            PartsConfig {
                encoder: EncoderSource::Given(encoder),
                cache: cache_path.clone(),
                calibration: scenario.camera.calib.clone(),
                link: Some(link_config),
            },
            Box::new(camera),
        )
        .map_err(|e| SimError::step(what("pipeline"), e))?;
        let link = parts
            .link
            .clone()
            .ok_or_else(|| SimError::step("flight-controller link", "not opened"))?;
        let link_addr = link
            .local_addr()
            .ok_or_else(|| SimError::step("flight-controller link", "no local UDP address"))?;

        let windows = |pick: &dyn Fn(&FaultKind) -> Option<f64>| -> Vec<(Duration, Duration)> {
            let mut out = Vec::new();
            for f in &scenario.faults {
                if let Some(period) = pick(&f.kind) {
                    if period <= 0.0 {
                        out.push(f.window.durations());
                    } else {
                        // Flapping: lost for one period, back for the next, and so on.
                        let mut t = f.window.start_s;
                        while t < f.window.end_s {
                            let end = (t + period).min(f.window.end_s);
                            out.push((Duration::from_secs_f64(t), Duration::from_secs_f64(end)));
                            t += 2.0 * period;
                        }
                    }
                }
            }
            out
        };
        let ap_scenario = autopilot::Scenario {
            trajectory: Some(Arc::clone(&trajectory)),
            clock_origin: Some(origin),
            alt_msl_m: 2300.0 + trajectory.state(0.0).height_agl_m as f32,
            height_agl_m: trajectory.state(0.0).height_agl_m as f32,
            gnss_lost_at: scenario.gnss_lost.map(|w| w.durations().0),
            gnss_restored_at: scenario
                .gnss_lost
                .filter(|w| w.end_s.is_finite())
                .map(|w| w.durations().1),
            gnss_lost_windows: windows(&|k| match k {
                FaultKind::GnssFlapping { period_s } => Some(*period_s),
                _ => None,
            }),
            link_drops: windows(&|k| matches!(k, FaultKind::LinkDrop).then_some(0.0)),
            gnss_spoofs: scenario
                .faults
                .iter()
                .filter_map(|f| match f.kind {
                    FaultKind::GnssSpoof { spoof } => {
                        let (start, end) = f.window.durations();
                        Some(autopilot::GnssSpoof { start, end, spoof })
                    }
                    _ => None,
                })
                .collect(),
            ..autopilot::Scenario::default()
        };
        let autopilot = FakeAutopilot::spawn(ap_scenario, link_addr)
            .map_err(|e| SimError::step("fake autopilot", e))?;

        let lossless = scenario.run.lossless || options.record.is_some();
        let handle = Pipeline::spawn(
            pipeline_config(
                scenario,
                lossless,
                options.record.clone(),
                Some(options.out_dir.join("pipeline-frames.csv")),
            ),
            parts,
        )
        .map_err(|e| SimError::step("starting the pipeline", e))?;

        let reports_rx = handle.reports();
        let mut reports = Vec::new();
        let mut watch = LinkWatch::default();
        let end = origin + Duration::from_secs_f64(duration_s);
        let mut next_note = origin + Duration::from_secs(10);
        loop {
            let now = Instant::now();
            if now >= end {
                break;
            }
            reports.extend(reports_rx.try_iter());
            let snap = link.snapshot();
            let t_s = now.saturating_duration_since(origin).as_secs_f64();
            if now >= origin {
                watch.see(t_s, snap.gnss.verdict, snap.autopilot_alive);
            }
            if now >= next_note {
                next_note += Duration::from_secs(10);
                let received = autopilot.received();
                let fixes = received_fixes(scenario, &trajectory, origin_unix_us, &received);
                log::info!(
                    "sim t = {t_s:.0} s: {} frames reported, {} fixes received",
                    reports.len(),
                    fixes.len()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        handle.stop();
        let pipeline_summary = handle
            .join()
            .map_err(|e| SimError::step("stopping the pipeline", e))?;
        reports.extend(reports_rx.try_iter());
        // The last fixes still in the link's queue.
        std::thread::sleep(Duration::from_millis(200));
        let received = autopilot.received();
        drop(autopilot);
        drop(link);

        let observations = Observations {
            origin_unix_us,
            duration_s,
            frames: camera_log.frames(),
            skipped_slots: camera_log.skipped_slots(),
            stalled_calls: camera_log.stalled_calls(),
            reports,
            received,
            link_events: watch.events,
            pipeline: pipeline_summary,
        };
        let summary = evaluate(scenario, &trajectory, &observations);
        let out = &options.out_dir;
        let write = |name: &str, bytes: &[u8]| -> Result<PathBuf, SimError> {
            let path = out.join(name);
            std::fs::create_dir_all(out)
                .map_err(|e| SimError::step(format!("creating {}", out.display()), e))?;
            write_atomic_bytes(&path, bytes)
                .map_err(|e| SimError::step(format!("writing {}", path.display()), e))?;
            Ok(path)
        };
        let (fixes_csv, received_csv) = csvs(scenario, &trajectory, &observations);
        let fixes_csv = write("fixes.csv", fixes_csv.as_bytes())?;
        let received_csv = write("received.csv", received_csv.as_bytes())?;
        let json =
            serde_json::to_vec_pretty(&summary).map_err(|e| SimError::step("summary.json", e))?;
        let summary_json = write("summary.json", &json)?;
        let png = plot_png(scenario, &map, &trajectory, &observations)?;
        let plot = write("trajectory.png", &png)?;
        Ok(SimRun {
            summary,
            observations,
            trajectory,
            cache: cache_path,
            fixes_csv,
            received_csv,
            summary_json,
            plot,
        })
    }

    fn plot_png(
        scenario: &Scenario,
        map: &OrthoMap,
        trajectory: &Trajectory,
        obs: &Observations,
    ) -> Result<Vec<u8>, SimError> {
        let px = |lat: f64, lon: f64| map.lat_lon_to_pixel(lat, lon).ok().map(|(x, y)| [x, y]);
        let mut data = PlotData::default();
        let steps = (obs.duration_s / 0.25).ceil() as usize;
        for i in 0..=steps {
            let t = i as f64 * 0.25;
            let s = trajectory.state(t);
            let fault = scenario.faults.iter().any(|f| f.window.contains(t));
            if let Some(p) = px(s.lat_deg, s.lon_deg) {
                data.truth.push((p, scenario.gnss_ok(t), fault));
            }
        }
        for f in received_fixes(scenario, trajectory, obs.origin_unix_us, &obs.received) {
            if let Some(p) = px(f.lat_lon_deg[0], f.lat_lon_deg[1]) {
                data.fixes.push((p, f.error_m <= f.accuracy_m));
            }
        }
        let img = plot::draw(map.image(), &data, 1200);
        let mut png = Vec::new();
        img.write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
            .map_err(|e| SimError::step("encoding trajectory.png", e))?;
        Ok(png)
    }

    /// Replays a folder recorded by [`run`] (with [`RunOptions::record`]) through the same pipeline, as fast
    /// as it goes and without dropping a frame, with no flight-controller link (the frames carry their
    /// poses, and the GNSS anchors the live run used are in the folder's
    /// [`vimgeo_onboard::pipeline::ANCHORS_SIDECAR`]). Returns the pipeline's reports: their fixes at exposure time
    /// equal the live run's.
    pub fn replay(
        scenario: &Scenario,
        folder: &Path,
        cache: &Path,
        encoder: &vimgeo_onboard::encoder::EncoderConfig,
    ) -> Result<Vec<FrameReport>, SimError> {
        let mut encoder_config = encoder.clone();
        encoder_config.engine = scenario.model.engine;
        let encoder = open_encoder(&scenario.model.path, &encoder_config)
            .map_err(|e| SimError::step(format!("{}: [model] path", scenario.file.display()), e))?;
        replay_with_encoder(scenario, folder, cache, encoder)
    }

    /// [`replay`] with `encoder` instead of the scenario's model.
    pub fn replay_with_encoder(
        scenario: &Scenario,
        folder: &Path,
        cache: &Path,
        encoder: Box<dyn Encoder>,
    ) -> Result<Vec<FrameReport>, SimError> {
        let camera = vimgeo_onboard::camera::ReplaySource::open(
            folder,
            vimgeo_onboard::camera::ReplayOptions {
                pace: vimgeo_onboard::camera::ReplayPace::AsFastAsPossible,
                loop_: false,
            },
        )
        .map_err(|e| SimError::step(format!("replay {}", folder.display()), e))?;
        let parts = PipelineParts::open(
            PartsConfig {
                encoder: EncoderSource::Given(encoder),
                cache: cache.to_path_buf(),
                calibration: scenario.camera.calib.clone(),
                link: None,
            },
            Box::new(camera),
        )
        .map_err(|e| SimError::step(format!("{}: pipeline", scenario.file.display()), e))?;
        // The anchors the live run used (recorded beside the frames), so the replay anchors alike.
        let config = PipelineConfig {
            replay_anchors: Some(folder.join(vimgeo_onboard::pipeline::ANCHORS_SIDECAR)),
            ..pipeline_config(scenario, true, None, None)
        };
        let handle = Pipeline::spawn(config, parts)
            .map_err(|e| SimError::step("starting the pipeline", e))?;
        let rx = handle.reports();
        let mut reports = Vec::new();
        let started = Instant::now();
        while !handle.camera_ended() || !handle.is_finished() {
            reports.extend(rx.try_iter());
            if handle.is_finished() || started.elapsed() > Duration::from_secs(600) {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        handle
            .join()
            .map_err(|e| SimError::step("stopping the pipeline", e))?;
        reports.extend(rx.try_iter());
        reports.sort_by_key(|r| r.seq);
        Ok(reports)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_stats_are_nearest_rank_with_a_true_median() {
        let e: Vec<f64> = (1..=20).map(f64::from).collect();
        let s = ErrorStats::of(&e);
        assert_eq!(s.count, 20);
        assert!((s.mean_m - 10.5).abs() < 1e-12);
        assert!((s.median_m - 10.5).abs() < 1e-12);
        assert_eq!(s.p95_m, 19.0);
        assert_eq!(s.max_m, 20.0);
        assert_eq!(ErrorStats::of(&[f64::NAN]), ErrorStats::default());
    }

    #[test]
    fn link_watch_records_changes_only() {
        let mut w = LinkWatch::default();
        w.see(0.0, GnssVerdict::Healthy, true);
        w.see(0.5, GnssVerdict::Healthy, true);
        w.see(1.0, GnssVerdict::Denied, true);
        w.see(2.0, GnssVerdict::Denied, false);
        let what: Vec<&str> = w.events.iter().map(|e| e.what.as_str()).collect();
        assert_eq!(
            what,
            [
                "gnss healthy",
                "autopilot alive",
                "gnss denied",
                "autopilot lost"
            ]
        );
    }
}
