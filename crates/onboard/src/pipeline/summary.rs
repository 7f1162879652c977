//! The run's counters and latency statistics: gathered from every [`FrameReport`] as it is made, printed and
//! returned as a [`RunSummary`] when the pipeline stops.

use std::collections::{BTreeMap, VecDeque};
use std::fmt;
use std::time::Duration;

use serde::Serialize;

use super::report::{FrameOutcome, FrameReport, Stage};
use crate::fc::PublishOutcome;

/// p50 / p99 / max of one latency, milliseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct LatencyStats {
    /// Samples.
    pub count: usize,
    /// Median, ms.
    pub p50_ms: f64,
    /// 99th percentile (nearest rank), ms.
    pub p99_ms: f64,
    /// Largest, ms.
    pub max_ms: f64,
}

impl LatencyStats {
    /// The statistics of `samples` (any order).
    pub fn of(samples: &[Duration]) -> LatencyStats {
        if samples.is_empty() {
            return LatencyStats::default();
        }
        let mut ms: Vec<f64> = samples.iter().map(|d| d.as_secs_f64() * 1e3).collect();
        ms.sort_by(f64::total_cmp);
        let rank = |q: f64| ms[((q * ms.len() as f64).ceil() as usize).clamp(1, ms.len()) - 1];
        LatencyStats {
            count: ms.len(),
            p50_ms: rank(0.5),
            p99_ms: rank(0.99),
            max_ms: ms[ms.len() - 1],
        }
    }
}

/// What a run did: returned by [`super::PipelineHandle::join`] and printed at exit.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct RunSummary {
    /// Wall time from spawn to join, seconds.
    pub duration_s: f64,
    /// Frames the camera delivered.
    pub frames_captured: u64,
    /// Frames that went through the whole pipeline (every outcome but dropped).
    pub frames_processed: u64,
    /// Frames replaced by a newer one before a stage took them (latest-only slots).
    pub dropped: u64,
    /// Frames not rectified, by reason (`no_pose`, `stale_attitude`, `tilted`, ...).
    pub refused: BTreeMap<String, u64>,
    /// Frames that gave no measurement, by reason (`low_similarity`, `ambiguous`, ...).
    pub no_measurement: BTreeMap<String, u64>,
    /// Frames whose measurement the localizer's filter gated out.
    pub gated: u64,
    /// Frames that failed in a stage (encoder or search error), by stage.
    pub failed: BTreeMap<String, u64>,
    /// Frames after which the localizer had a fix.
    pub fixes: u64,
    /// Fixes queued on the flight-controller link.
    pub published: u64,
    /// Fixes not sent, by reason (`withheld`, `dry_run`, `no_autopilot`, `queue_full`, ...).
    pub withheld: BTreeMap<String, u64>,
    /// Camera errors other than timeouts (corrupt frames, a disconnected device), by kind.
    pub camera_errors: BTreeMap<String, u64>,
    /// Reports the caller's channel had no room for.
    pub reports_lost: u64,
    /// Latency of each stage's work, by stage name.
    pub latency: BTreeMap<String, LatencyStats>,
    /// From the middle of the exposure to the fix being handed to the link.
    pub frame_to_fix: LatencyStats,
}

/// Accumulates reports into a [`RunSummary`].
#[derive(Debug, Default)]
pub(crate) struct SummaryBuilder {
    pub(crate) summary: RunSummary,
    latencies: BTreeMap<&'static str, Vec<Duration>>,
    frame_to_fix: Vec<Duration>,
    /// The latest encode latencies, for the health thread's "encoder too slow".
    recent_encode: VecDeque<Duration>,
}

/// Bounds the memory of a long run: the percentiles are of the first this many samples per latency (about
/// 5 hours at 10 frames per second).
const MAX_SAMPLES: usize = 200_000;
/// The most recent encode latencies kept for the health check.
const RECENT: usize = 256;

fn push_sample(v: &mut Vec<Duration>, d: Duration) {
    if v.len() < MAX_SAMPLES {
        v.push(d);
    }
}

impl SummaryBuilder {
    pub(crate) fn captured(&mut self) {
        self.summary.frames_captured += 1;
    }

    pub(crate) fn camera_error(&mut self, kind: &str) {
        *self
            .summary
            .camera_errors
            .entry(kind.to_owned())
            .or_default() += 1;
    }

    pub(crate) fn add(&mut self, report: &FrameReport) {
        let s = &mut self.summary;
        match &report.outcome {
            FrameOutcome::Dropped { .. } => {
                s.dropped += 1;
                return;
            }
            FrameOutcome::Refused(reason) => {
                *s.refused.entry(reason.kind().to_owned()).or_default() += 1;
            }
            FrameOutcome::Failed { stage, .. } => {
                *s.failed.entry(stage.name().to_owned()).or_default() += 1;
            }
            FrameOutcome::NoMeasurement(kind) => {
                *s.no_measurement.entry(kind.clone()).or_default() += 1;
            }
            FrameOutcome::Gated(_) => s.gated += 1,
            FrameOutcome::Measured(_) => {}
        }
        s.frames_processed += 1;
        if report.fix_at_exposure.is_some() {
            s.fixes += 1;
        }
        if let Some(published) = &report.published {
            match published.outcome {
                Ok(PublishOutcome::Queued(_)) => {
                    s.published += 1;
                    if let Some(d) = report.frame_to_fix {
                        push_sample(&mut self.frame_to_fix, d);
                    }
                }
                Ok(other) => {
                    *s.withheld
                        .entry(publish_outcome_kind(&other).to_owned())
                        .or_default() += 1;
                }
                Err(_) => *s.withheld.entry("link_error".to_owned()).or_default() += 1,
            }
        }
        for (stage, d) in report.latency.iter() {
            push_sample(self.latencies.entry(stage.name()).or_default(), d);
        }
        if let Some(d) = report.latency.get(Stage::Encode) {
            if self.recent_encode.len() == RECENT {
                self.recent_encode.pop_front();
            }
            self.recent_encode.push_back(d);
        }
    }

    pub(crate) fn finish(mut self, duration: Duration, reports_lost: u64) -> RunSummary {
        self.summary.duration_s = duration.as_secs_f64();
        self.summary.reports_lost = reports_lost;
        self.summary.latency = self
            .latencies
            .iter()
            .map(|(k, v)| ((*k).to_owned(), LatencyStats::of(v)))
            .collect();
        self.summary.frame_to_fix = LatencyStats::of(&self.frame_to_fix);
        self.summary
    }

    /// The median of the last `n` (at most 256) encode latencies.
    pub(crate) fn recent_encode_median(&self, n: usize) -> Option<Duration> {
        let skip = self.recent_encode.len().saturating_sub(n);
        let mut t: Vec<Duration> = self.recent_encode.iter().skip(skip).copied().collect();
        if t.is_empty() {
            return None;
        }
        t.sort();
        Some(t[(t.len() - 1) / 2])
    }
}

/// A short stable name of a publish outcome that sent nothing.
pub fn publish_outcome_kind(outcome: &PublishOutcome) -> &'static str {
    match outcome {
        PublishOutcome::Queued(_) => "queued",
        PublishOutcome::Withheld(_) => "withheld",
        PublishOutcome::DryRun => "dry_run",
        PublishOutcome::NoAutopilot => "no_autopilot",
        PublishOutcome::NoEkfOrigin => "no_ekf_origin",
        PublishOutcome::QueueFull => "queue_full",
    }
}

impl fmt::Display for RunSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let map = |m: &BTreeMap<String, u64>| {
            if m.is_empty() {
                "0".to_owned()
            } else {
                m.iter()
                    .map(|(k, v)| format!("{k} {v}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            }
        };
        writeln!(f, "run summary ({:.1} s)", self.duration_s)?;
        writeln!(
            f,
            "  frames: captured {}, processed {}, dropped {}",
            self.frames_captured, self.frames_processed, self.dropped
        )?;
        writeln!(f, "  refused: {}", map(&self.refused))?;
        writeln!(f, "  no measurement: {}", map(&self.no_measurement))?;
        writeln!(f, "  failed: {}", map(&self.failed))?;
        if !self.camera_errors.is_empty() {
            writeln!(f, "  camera errors: {}", map(&self.camera_errors))?;
        }
        writeln!(
            f,
            "  fixes {}, gated {}, published {}, withheld: {}",
            self.fixes,
            self.gated,
            self.published,
            map(&self.withheld)
        )?;
        for stage in Stage::ALL {
            if let Some(l) = self.latency.get(stage.name()) {
                writeln!(
                    f,
                    "  latency {:<9} p50 {:7.1} ms  p99 {:7.1} ms  ({} frames)",
                    stage.name(),
                    l.p50_ms,
                    l.p99_ms,
                    l.count
                )?;
            }
        }
        write!(
            f,
            "  latency frame→fix p50 {:7.1} ms  p99 {:7.1} ms  ({} fixes)",
            self.frame_to_fix.p50_ms, self.frame_to_fix.p99_ms, self.frame_to_fix.count
        )?;
        if self.reports_lost > 0 {
            write!(
                f,
                "\n  reports lost (caller's channel full): {}",
                self.reports_lost
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_nearest_rank() {
        let samples: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        let s = LatencyStats::of(&samples);
        assert_eq!(s.count, 100);
        assert!((s.p50_ms - 50.0).abs() < 1e-9);
        assert!((s.p99_ms - 99.0).abs() < 1e-9);
        assert!((s.max_ms - 100.0).abs() < 1e-9);
        assert_eq!(LatencyStats::of(&[]), LatencyStats::default());
        let one = LatencyStats::of(&[Duration::from_millis(7)]);
        assert!((one.p50_ms - 7.0).abs() < 1e-9 && (one.p99_ms - 7.0).abs() < 1e-9);
    }
}
