//! One [`FrameReport`] per camera frame: what became of it, the fix at its exposure time, what was published,
//! and how long each stage took. Reports go to the run's summary, to the caller's report channel (when it has
//! room: a caller that does not read never slows the pipeline) and to the optional fix-log CSV.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crossbeam_channel::{Sender, TrySendError};

use super::summary::{publish_outcome_kind, SummaryBuilder};
use crate::camera::ContentError;
use crate::fc::{FcError, PublishOutcome};
use crate::fix::Fix;
use crate::rectify::RectifyError;

/// The pipeline's stages, in frame order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Stage {
    /// From the middle of the exposure to the camera thread having the frame (when the source says).
    Capture,
    /// Pose and rectification.
    Rectify,
    /// The encoder.
    Encode,
    /// The tile-cache search.
    Match,
    /// The localizer.
    Localize,
    /// Handing the fix to the flight-controller link.
    Publish,
}

impl Stage {
    /// Every stage, in order.
    pub const ALL: [Stage; 6] = [
        Stage::Capture,
        Stage::Rectify,
        Stage::Encode,
        Stage::Match,
        Stage::Localize,
        Stage::Publish,
    ];

    /// The stage's name in logs, summaries and the fix log.
    pub fn name(self) -> &'static str {
        match self {
            Stage::Capture => "capture",
            Stage::Rectify => "rectify",
            Stage::Encode => "encode",
            Stage::Match => "match",
            Stage::Localize => "localize",
            Stage::Publish => "publish",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// How long each stage worked on one frame (queue waits excluded); `None` for stages it did not reach.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct StageLatencies([Option<Duration>; 6]);

impl StageLatencies {
    /// Records `stage`'s latency.
    pub fn set(&mut self, stage: Stage, d: Duration) {
        self.0[stage.index()] = Some(d);
    }

    /// `stage`'s latency, if it ran.
    pub fn get(&self, stage: Stage) -> Option<Duration> {
        self.0[stage.index()]
    }

    /// The stages that ran, in order.
    pub fn iter(&self) -> impl Iterator<Item = (Stage, Duration)> + '_ {
        Stage::ALL
            .iter()
            .filter_map(|s| self.get(*s).map(|d| (*s, d)))
    }
}

/// Why a frame was not rectified.
#[derive(Debug, Clone, PartialEq)]
pub enum RefuseReason {
    /// The frame carries no pose and the autopilot has sent no attitude or no height above ground.
    NoPose,
    /// The autopilot's attitude or height is older than `[rectify] max_attitude_age_ms`.
    StaleAttitude {
        /// Age of the older of the two, milliseconds.
        age_ms: u64,
    },
    /// The rectifier refused the pose (tilt, horizon, coverage, height, frame size).
    Rectify(RectifyError),
    /// The pixels cannot be a view of the ground (blank, noise).
    Content(ContentError),
    /// The reported attitude disagrees with how the image moved ([`crate::rectify::attitude_check`]).
    Attitude {
        /// This frame's disagreement beyond the vehicle's possible displacement, metres.
        jump_m: f64,
        /// The accumulated pose error on the ground, metres.
        bias_m: f64,
        /// The accumulated heading error, degrees.
        heading_deg: f64,
    },
}

impl RefuseReason {
    /// A short stable name for counting.
    pub fn kind(&self) -> &'static str {
        match self {
            RefuseReason::NoPose => "no_pose",
            RefuseReason::StaleAttitude { .. } => "stale_attitude",
            RefuseReason::Rectify(e) => match e {
                RectifyError::BadHeight { .. } => "bad_height",
                RectifyError::EmptyTarget { .. } => "empty_target",
                RectifyError::FrameSize { .. } => "frame_size",
                RectifyError::Tilted { .. } => "tilted",
                RectifyError::Horizon { .. } => "horizon",
                RectifyError::Coverage { .. } => "coverage",
            },
            RefuseReason::Content(e) => e.kind(),
            RefuseReason::Attitude { .. } => "attitude_inconsistent",
        }
    }
}

impl std::fmt::Display for RefuseReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RefuseReason::NoPose => f.write_str(
                "no pose: the frame has none and the autopilot sent no attitude or height",
            ),
            RefuseReason::StaleAttitude { age_ms } => {
                write!(f, "the autopilot's attitude or height is {age_ms} ms old")
            }
            RefuseReason::Rectify(e) => write!(f, "{e}"),
            RefuseReason::Content(e) => write!(f, "{e}"),
            RefuseReason::Attitude {
                jump_m,
                bias_m,
                heading_deg,
            } => write!(
                f,
                "the reported attitude disagrees with the image: a {jump_m:.1} m jump, {bias_m:.1} m \
                 of pose error on the ground, {heading_deg:.0} deg of heading error"
            ),
        }
    }
}

/// What became of a frame.
#[derive(Debug, Clone, PartialEq)]
pub enum FrameOutcome {
    /// Replaced by a newer frame before `before` took it (latest-only).
    Dropped {
        /// The stage that never saw it.
        before: Stage,
    },
    /// Not rectified.
    Refused(RefuseReason),
    /// A stage failed on it (encoder or search error); the run goes on.
    Failed {
        /// The stage.
        stage: Stage,
        /// The error.
        message: String,
    },
    /// Matched, but the localizer took no measurement from it (the reason's short name).
    NoMeasurement(String),
    /// A measurement the localizer's filter rejected (the reason's short name).
    Gated(String),
    /// A measurement the localizer used (the outcome's short name: `accepted`, `initialised`, ...).
    Measured(String),
}

impl FrameOutcome {
    /// A short stable name for the fix log.
    pub fn kind(&self) -> &str {
        match self {
            FrameOutcome::Dropped { .. } => "dropped",
            FrameOutcome::Refused(r) => r.kind(),
            FrameOutcome::Failed { .. } => "failed",
            FrameOutcome::NoMeasurement(k) | FrameOutcome::Gated(k) | FrameOutcome::Measured(k) => {
                k
            }
        }
    }

    fn class(&self) -> &'static str {
        match self {
            FrameOutcome::Dropped { .. } => "dropped",
            FrameOutcome::Refused(_) => "refused",
            FrameOutcome::Failed { .. } => "failed",
            FrameOutcome::NoMeasurement(_) => "no_measurement",
            FrameOutcome::Gated(_) => "gated",
            FrameOutcome::Measured(_) => "measured",
        }
    }
}

/// The fix handed to the flight-controller link and what the link did with it.
#[derive(Debug, Clone)]
pub struct PublishedFix {
    /// The fix as published: the localizer's estimate at publish time.
    pub fix: Fix,
    /// What the link did.
    pub outcome: Result<PublishOutcome, FcErrorText>,
}

/// A link error, as text (the error itself is not `Clone`).
pub type FcErrorText = String;

pub(crate) fn fc_error_text(e: &FcError) -> FcErrorText {
    e.to_string()
}

/// One frame's report.
#[derive(Debug, Clone)]
pub struct FrameReport {
    /// The camera's frame number.
    pub seq: u64,
    /// UNIX time of the middle of the exposure, µs.
    pub exposure_unix_us: u64,
    /// What became of it.
    pub outcome: FrameOutcome,
    /// The localizer's fix at this frame's exposure time, after this frame: deterministic for a given
    /// sequence of frames, so replays compare.
    pub fix_at_exposure: Option<Fix>,
    /// The fix published after this frame, if one was handed to the link.
    pub published: Option<PublishedFix>,
    /// Best similarity of the retrieved tiles.
    pub best_similarity: Option<f32>,
    /// Per-stage latencies.
    pub latency: StageLatencies,
    /// From the middle of the exposure (or the camera thread's receipt, when the source gives no capture
    /// latency) to the fix being handed to the link.
    pub frame_to_fix: Option<Duration>,
}

/// Where reports go: the summary, the caller's channel, the fix log. Shared by the stage threads.
pub(crate) struct ReportSink {
    inner: Mutex<SinkInner>,
}

struct SinkInner {
    summary: SummaryBuilder,
    caller: Option<Sender<FrameReport>>,
    lost: u64,
    fix_log: Option<FixLog>,
    started: Instant,
}

impl ReportSink {
    pub(crate) fn new(caller: Sender<FrameReport>, fix_log: Option<FixLog>) -> ReportSink {
        ReportSink {
            inner: Mutex::new(SinkInner {
                summary: SummaryBuilder::default(),
                caller: Some(caller),
                lost: 0,
                fix_log,
                started: Instant::now(),
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, SinkInner> {
        // Plain counters: a panic elsewhere cannot leave them harmfully half-written.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn captured(&self) {
        self.lock().summary.captured();
    }

    pub(crate) fn record(&self, report: FrameReport) {
        let mut s = self.lock();
        s.summary.add(&report);
        if let Some(log) = s.fix_log.as_mut() {
            log.write(&report);
        }
        if let Some(tx) = &s.caller {
            match tx.try_send(report) {
                Ok(()) => {}
                Err(TrySendError::Full(_)) => s.lost += 1,
                // The caller dropped its receiver: nobody reads any more.
                Err(TrySendError::Disconnected(_)) => s.caller = None,
            }
        }
    }

    pub(crate) fn recent_encode_median(&self, n: usize) -> Option<Duration> {
        self.lock().summary.recent_encode_median(n)
    }

    pub(crate) fn camera_error(&self, kind: &str) {
        self.lock().summary.camera_error(kind);
    }

    /// Counts so far (for the health thread's STATUS line).
    pub(crate) fn counts(&self) -> (u64, u64, u64) {
        let s = self.lock();
        (
            s.summary.summary.frames_captured,
            s.summary.summary.fixes,
            s.summary.summary.dropped,
        )
    }

    /// Closes the caller's channel and the fix log; the summary.
    pub(crate) fn finish(&self) -> super::RunSummary {
        let mut s = self.lock();
        s.caller = None;
        if let Some(mut log) = s.fix_log.take() {
            log.flush();
        }
        let builder = std::mem::take(&mut s.summary);
        let lost = s.lost;
        builder.finish(s.started.elapsed(), lost)
    }
}

/// The fix-log CSV: a header, then one line per frame, flushed per line (a log is read while it grows, and
/// must survive a power cut up to the last frame).
pub(crate) struct FixLog {
    path: PathBuf,
    out: BufWriter<File>,
    failed: bool,
}

/// The fix log's columns.
pub const FIX_LOG_HEADER: &str = "seq,exposure_unix_us,outcome,reason,best_similarity,fix_lat_deg,fix_lon_deg,\
fix_accuracy_m,published,publish_outcome,capture_ms,rectify_ms,encode_ms,match_ms,localize_ms,publish_ms,frame_to_fix_ms";

impl FixLog {
    /// Creates (truncates) `path` and writes the header.
    pub(crate) fn create(path: &Path) -> std::io::Result<FixLog> {
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent)?;
        }
        let mut out = BufWriter::new(File::create(path)?);
        writeln!(out, "{FIX_LOG_HEADER}")?;
        out.flush()?;
        Ok(FixLog {
            path: path.to_path_buf(),
            out,
            failed: false,
        })
    }

    fn write(&mut self, r: &FrameReport) {
        if self.failed {
            return;
        }
        let ms = |d: Option<Duration>| {
            d.map_or(String::new(), |d| format!("{:.3}", d.as_secs_f64() * 1e3))
        };
        let (lat, lon, acc) =
            r.fix_at_exposure
                .map_or((String::new(), String::new(), String::new()), |f| {
                    (
                        format!("{:.8}", f.lat_deg),
                        format!("{:.8}", f.lon_deg),
                        format!("{:.2}", f.horiz_accuracy_m),
                    )
                });
        let (published, publish_outcome) = match &r.published {
            None => ("0", String::new()),
            Some(p) => match &p.outcome {
                Ok(PublishOutcome::Queued(name)) => ("1", (*name).to_owned()),
                Ok(other) => ("0", publish_outcome_kind(other).to_owned()),
                Err(_) => ("0", "link_error".to_owned()),
            },
        };
        let line = format!(
            "{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{}",
            r.seq,
            r.exposure_unix_us,
            r.outcome.class(),
            r.outcome.kind(),
            r.best_similarity
                .map_or(String::new(), |s| format!("{s:.4}")),
            lat,
            lon,
            acc,
            published,
            publish_outcome,
            ms(r.latency.get(Stage::Capture)),
            ms(r.latency.get(Stage::Rectify)),
            ms(r.latency.get(Stage::Encode)),
            ms(r.latency.get(Stage::Match)),
            ms(r.latency.get(Stage::Localize)),
            ms(r.latency.get(Stage::Publish)),
            ms(r.frame_to_fix),
        );
        if let Err(e) = writeln!(self.out, "{line}").and_then(|()| self.out.flush()) {
            log::error!(
                "fix log {}: {e}; no more lines are written",
                self.path.display()
            );
            self.failed = true;
        }
    }

    fn flush(&mut self) {
        if let Err(e) = self.out.flush() {
            log::error!("fix log {}: {e}", self.path.display());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fix_log_has_one_line_per_report_with_the_header_columns() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub").join("fixes.csv");
        let mut log = FixLog::create(&path).unwrap();
        let mut latency = StageLatencies::default();
        latency.set(Stage::Encode, Duration::from_millis(12));
        log.write(&FrameReport {
            seq: 3,
            exposure_unix_us: 1_700_000_000_000_000,
            outcome: FrameOutcome::Refused(RefuseReason::NoPose),
            fix_at_exposure: None,
            published: None,
            best_similarity: None,
            latency,
            frame_to_fix: None,
        });
        log.flush();
        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0], FIX_LOG_HEADER);
        let columns = FIX_LOG_HEADER.split(',').count();
        assert_eq!(lines[1].split(',').count(), columns);
        assert!(lines[1].starts_with("3,1700000000000000,refused,no_pose,"));
        assert!(lines[1].contains(",12.000,"));
    }
}
