//! The stage threads. The camera thread is the source; every other stage is a [`FrameStage`]: it takes a
//! frame's item from its input, does its one step, stamps its latency and passes the result on or ends the
//! frame with its report. [`spawn_stage`] runs any stage between two channels with the same loop; a stage
//! exits when its input disconnects (the stage before it has exited), dropping its output, so shutdown
//! ripples downstream. Preparation (targets, the prior window's radius, the camera model) happens once in
//! each stage's constructor; the per-frame work stays short.
//!
//! ```text
//!  camera_loop ──(FrameMeta, Frame)──▶ RectifyStage ──Rectified──▶ EncodeStage ──Encoded──▶ LocalizeStage
//!      ──Localized──▶ PublishStage ──FrameReport──▶ the report sink
//! ```

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{
    bounded, Receiver, RecvTimeoutError, SendTimeoutError, Sender, TrySendError,
};
use image::RgbImage;

use super::anchors::{write_anchors, RecordedAnchor, RecordedAnchors, ANCHORS_SIDECAR};
use super::report::{
    fc_error_text, FrameOutcome, FrameReport, PublishedFix, RefuseReason, ReportSink, Stage,
    StageLatencies,
};
use super::{PipelineConfig, PipelineError};
use crate::camera::{
    mono_now_us, unix_now_us, CameraError, CameraSource, Frame, FramePose, ReplayRecorder,
};
use crate::encoder::Encoder;
use crate::fc::{FcLink, GnssVerdict};
use crate::fix::Fix;
use crate::localize::{LocalizeOutcome, Localizer, ParticleOutcome, UpdateOutcome};
use crate::matching::{PriorWindow, TileCache};
use crate::rectify::{
    rectify, AttitudeCheck, AttitudeVerdict, CameraCalibration, CameraModel, Pose, RectifyTarget,
};

/// How long a stage waits on its input before it looks at the clock again (its heartbeat period).
const POLL: Duration = Duration::from_millis(100);

/// The recorder's thread (only with `[pipeline] record`) and its queue of frames.
const RECORD_THREAD: &str = "vimgeo-record";
const RECORD_QUEUE: usize = 16;
/// The calibration file written into a recording.
pub const CALIBRATION_SIDECAR: &str = "camera.toml";

/// The stage threads, in frame order.
pub(crate) const THREADS: [&str; 5] = [
    "vimgeo-camera",
    "vimgeo-rectify",
    "vimgeo-encode",
    "vimgeo-localize",
    "vimgeo-publish",
];

/// What the health thread sees of the stages: when each last made progress, when the last frame came,
/// whether the camera ended. Times are milliseconds since the start plus one (0: never).
pub(crate) struct Progress {
    start: Instant,
    beats: [AtomicU64; 5],
    exited: [AtomicBool; 5],
    last_frame: AtomicU64,
    camera_ended: AtomicBool,
    attitude_refused: AtomicBool,
}

impl Progress {
    pub(crate) fn new(start: Instant) -> Progress {
        Progress {
            start,
            beats: Default::default(),
            exited: Default::default(),
            last_frame: AtomicU64::new(0),
            camera_ended: AtomicBool::new(false),
            attitude_refused: AtomicBool::new(false),
        }
    }

    fn stamp(&self) -> u64 {
        self.start.elapsed().as_millis() as u64 + 1
    }

    fn beat(&self, thread: usize) {
        self.beats[thread].store(self.stamp(), Ordering::Relaxed);
    }

    fn since(&self, stamp: u64, now: Instant) -> Duration {
        let t = self.start + Duration::from_millis(stamp.saturating_sub(1));
        now.saturating_duration_since(t)
    }

    /// Time since the last frame (or since the start when none came yet).
    pub(crate) fn since_last_frame(&self, now: Instant) -> Duration {
        let stamp = self.last_frame.load(Ordering::Relaxed);
        self.since(stamp.max(1), now)
    }

    /// Whether the rectify stage's attitude check refused the last frame it judged.
    pub(crate) fn attitude_refused(&self) -> bool {
        self.attitude_refused.load(Ordering::Relaxed)
    }

    /// Whether the camera source ended (end of a replay) or the camera thread exited.
    pub(crate) fn camera_ended(&self) -> bool {
        self.camera_ended.load(Ordering::Relaxed)
    }

    /// The first running stage thread that made no progress for `timeout`, if any.
    pub(crate) fn stuck_thread(&self, now: Instant, timeout: Duration) -> Option<&'static str> {
        (0..THREADS.len()).find_map(|i| {
            let exited = self.exited[i].load(Ordering::Relaxed);
            let beat = self.beats[i].load(Ordering::Relaxed).max(1);
            (!exited && self.since(beat, now) > timeout).then_some(THREADS[i])
        })
    }

    /// Whether every stage thread has exited.
    pub(crate) fn all_exited(&self) -> bool {
        self.exited.iter().all(|e| e.load(Ordering::Relaxed))
    }
}

/// Marks a thread exited when its body returns (or unwinds).
struct ExitGuard {
    progress: Arc<Progress>,
    index: usize,
}

impl Drop for ExitGuard {
    fn drop(&mut self) {
        if self.index == 0 {
            self.progress.camera_ended.store(true, Ordering::Relaxed);
        }
        self.progress.exited[self.index].store(true, Ordering::Relaxed);
    }
}

pub(crate) struct Parts {
    pub(crate) camera: Box<dyn CameraSource>,
    pub(crate) calibration: CameraCalibration,
    pub(crate) encoder: Box<dyn Encoder>,
    pub(crate) cache: Arc<TileCache>,
    pub(crate) link: Option<Arc<FcLink>>,
}

pub(crate) struct Spawned {
    pub(crate) handles: Vec<(&'static str, JoinHandle<()>)>,
    pub(crate) link: Option<Arc<FcLink>>,
}

/// What travels with a frame through the stages.
#[derive(Debug, Clone)]
struct FrameMeta {
    seq: u64,
    exposure_unix_us: u64,
    /// When the camera thread had the frame, minus the capture latency when the source gives one: the
    /// reference for frame-to-fix.
    origin: Instant,
    latency: StageLatencies,
    best_similarity: Option<f32>,
}

impl FrameMeta {
    fn report(&self, outcome: FrameOutcome) -> FrameReport {
        FrameReport {
            seq: self.seq,
            exposure_unix_us: self.exposure_unix_us,
            outcome,
            fix_at_exposure: None,
            published: None,
            best_similarity: self.best_similarity,
            latency: self.latency,
            frame_to_fix: None,
        }
    }
}

struct Rectified {
    meta: FrameMeta,
    image: RgbImage,
    centre_offset_ne_m: [f64; 2],
}

struct Encoded {
    meta: FrameMeta,
    embedding: Vec<f32>,
    centre_offset_ne_m: [f64; 2],
}

struct Localized {
    meta: FrameMeta,
    outcome: FrameOutcome,
    fix_at_exposure: Option<Fix>,
    to_publish: Option<Fix>,
}

/// A one-slot channel that keeps only the newest item (or, lossless, waits for room).
struct Slot<T> {
    tx: Sender<T>,
    /// Latest-only: the producer's own receiving end, which takes out the unconsumed item a newer one
    /// replaces. Lossless: none, so the producer sees the consumer leave.
    evict: Option<Receiver<T>>,
}

enum Pushed<T> {
    /// In the slot; `Some`: the older item it replaced.
    Done(Option<T>),
    /// The consumer is gone (or, lossless, the producer gave up waiting): the item comes back.
    Closed(T),
}

impl<T> Slot<T> {
    fn new(lossless: bool) -> (Slot<T>, Receiver<T>) {
        let (tx, rx) = bounded(1);
        let evict = (!lossless).then(|| rx.clone());
        (Slot { tx, evict }, rx)
    }

    /// Puts `item` in the slot. Latest-only: never waits. Lossless: waits for room, calling `waiting`
    /// every poll period; it gives up when `give_up` is raised (the camera stopping) or the consumer left.
    fn push(&self, item: T, give_up: Option<&AtomicBool>, waiting: impl Fn()) -> Pushed<T> {
        let Some(evict) = &self.evict else {
            let mut item = item;
            loop {
                match self.tx.send_timeout(item, POLL) {
                    Ok(()) => return Pushed::Done(None),
                    Err(SendTimeoutError::Timeout(back)) => {
                        if give_up.is_some_and(|g| g.load(Ordering::Relaxed)) {
                            return Pushed::Closed(back);
                        }
                        waiting();
                        item = back;
                    }
                    Err(SendTimeoutError::Disconnected(back)) => return Pushed::Closed(back),
                }
            }
        };
        match self.tx.try_send(item) {
            Ok(()) => Pushed::Done(None),
            Err(TrySendError::Disconnected(back)) => Pushed::Closed(back),
            Err(TrySendError::Full(back)) => {
                // We are the only producer: once the old item is out (by us or by the consumer), there is room.
                let old = evict.try_recv().ok();
                match self.tx.try_send(back) {
                    Ok(()) => Pushed::Done(old),
                    Err(TrySendError::Disconnected(back)) => Pushed::Closed(back),
                    // Unreachable with one producer; never block a real-time stage over it: the new item
                    // is the one dropped.
                    Err(TrySendError::Full(back)) => Pushed::Done(Some(back)),
                }
            }
        }
    }
}

/// Receives with the stage's heartbeat; `None` once the input has disconnected and is empty.
fn recv_beating<T>(rx: &Receiver<T>, progress: &Progress, index: usize) -> Option<T> {
    loop {
        progress.beat(index);
        match rx.recv_timeout(POLL) {
            Ok(item) => return Some(item),
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => return None,
        }
    }
}

fn spawn_thread(
    index: usize,
    progress: &Arc<Progress>,
    body: impl FnOnce() + Send + 'static,
) -> Result<(&'static str, JoinHandle<()>), PipelineError> {
    let name = THREADS[index];
    let guard = ExitGuard {
        progress: Arc::clone(progress),
        index,
    };
    progress.beat(index);
    std::thread::Builder::new()
        .name(name.into())
        .spawn(move || {
            let _guard = guard;
            body();
        })
        .map(|h| (name, h))
        .map_err(|source| PipelineError::Spawn {
            thread: name,
            source,
        })
}

/// One stage of the pipeline: it takes what the stage before it passes on, does its one step, and passes the
/// result on ([`FrameStage::Out`]) or ends the frame with its report (a refused frame, a failed step).
/// [`spawn_stage`] runs it on its own thread between two channels.
trait FrameStage: Send + 'static {
    /// What the stage before passes on.
    type In: Send + 'static;
    /// What this stage passes on.
    type Out: IntoReport + Send + 'static;
    /// The frame's one step.
    fn process(&mut self, input: Self::In) -> Result<Self::Out, Box<FrameReport>>;
    /// Once the input has disconnected and every frame taken is done.
    fn finish(&mut self) {}
}

/// The frame's report when what carries it goes no further: a newer frame replaced it, or the next stage
/// (`next`) has exited.
trait IntoReport {
    fn into_report(self, next: Stage) -> FrameReport;
}

impl IntoReport for (FrameMeta, Frame) {
    fn into_report(self, next: Stage) -> FrameReport {
        self.0.report(FrameOutcome::Dropped { before: next })
    }
}

impl IntoReport for Rectified {
    fn into_report(self, next: Stage) -> FrameReport {
        self.meta.report(FrameOutcome::Dropped { before: next })
    }
}

impl IntoReport for Encoded {
    fn into_report(self, next: Stage) -> FrameReport {
        self.meta.report(FrameOutcome::Dropped { before: next })
    }
}

impl IntoReport for Localized {
    /// Localized but not published: the localizer's outcome and its fix at exposure time stand.
    fn into_report(self, _: Stage) -> FrameReport {
        let mut report = self.meta.report(self.outcome);
        report.fix_at_exposure = self.fix_at_exposure;
        report
    }
}

impl IntoReport for FrameReport {
    fn into_report(self, _: Stage) -> FrameReport {
        self
    }
}

/// Where a stage's output goes.
enum Outlet<T> {
    /// A one-slot channel to the stage `next` (latest-only, or lossless).
    Slot { slot: Slot<T>, next: Stage },
    /// A bounded, blocking channel to the stage `next`.
    Channel { tx: Sender<T>, next: Stage },
    /// The end of the line: the frame's report.
    Reports,
}

impl<T: IntoReport> Outlet<T> {
    /// Passes `item` on, reporting a frame it replaced. `false`: the next stage has gone (or `give_up` was
    /// raised while a lossless slot waited) and the stage stops; the item is reported as dropped.
    fn pass(
        &self,
        item: T,
        give_up: Option<&AtomicBool>,
        sink: &ReportSink,
        waiting: impl Fn(),
    ) -> bool {
        match self {
            Outlet::Slot { slot, next } => match slot.push(item, give_up, waiting) {
                Pushed::Done(None) => true,
                Pushed::Done(Some(old)) => {
                    sink.record(old.into_report(*next));
                    true
                }
                Pushed::Closed(back) => {
                    sink.record(back.into_report(*next));
                    false
                }
            },
            Outlet::Channel { tx, next } => match tx.send(item) {
                Ok(()) => true,
                Err(back) => {
                    sink.record(back.0.into_report(*next));
                    false
                }
            },
            Outlet::Reports => {
                sink.record(item.into_report(Stage::Publish));
                true
            }
        }
    }
}

/// Runs `stage` on thread `index` ([`THREADS`]): one frame at a time from `input`, each result into
/// `outlet`, until the input disconnects or the next stage has gone.
fn spawn_stage<S: FrameStage>(
    index: usize,
    mut stage: S,
    input: Receiver<S::In>,
    outlet: Outlet<S::Out>,
    sink: &Arc<ReportSink>,
    progress: &Arc<Progress>,
) -> Result<(&'static str, JoinHandle<()>), PipelineError> {
    let (sink, beats) = (Arc::clone(sink), Arc::clone(progress));
    spawn_thread(index, progress, move || {
        while let Some(item) = recv_beating(&input, &beats, index) {
            match stage.process(item) {
                Ok(out) => {
                    if !outlet.pass(out, None, &sink, || beats.beat(index)) {
                        break;
                    }
                }
                Err(report) => sink.record(*report),
            }
        }
        stage.finish();
    })
}

/// Starts the camera thread, the four stages and (when recording) the recorder, wired as the module
/// documentation's diagram.
pub(crate) fn spawn_stages(
    config: &PipelineConfig,
    parts: Parts,
    sink: &Arc<ReportSink>,
    stop: &Arc<AtomicBool>,
    progress: &Arc<Progress>,
) -> Result<Spawned, PipelineError> {
    let Parts {
        camera,
        calibration,
        encoder,
        cache,
        link,
    } = parts;
    // Before anything is created: a malformed file refuses the start.
    let replay_anchors = match config.replay_anchors.as_deref() {
        Some(path) => {
            let anchors = RecordedAnchors::open_if_present(path).map_err(PipelineError::Anchors)?;
            match &anchors {
                Some(a) => log::info!("replay anchored by {} ({} frames)", path.display(), a.len()),
                None => log::info!("{}: none, the replay starts unanchored", path.display()),
            }
            anchors
        }
        None => None,
    };
    let recorder = config
        .record
        .as_deref()
        .map(|dir| open_recorder(dir, &calibration))
        .transpose()?;
    let (frame_slot, frame_rx) = Slot::new(config.lossless);
    let (rectified_slot, rectified_rx) = Slot::new(config.lossless);
    let (encoded_tx, encoded_rx) = bounded(config.channel_capacity.max(1));
    let (localized_tx, localized_rx) = bounded(config.channel_capacity.max(1));
    let mut handles = Vec::with_capacity(THREADS.len() + 1);

    let rectify_stage = RectifyStage::new(
        config,
        &calibration,
        encoder.manifest().input.width,
        &cache,
        link.clone(),
        Arc::clone(progress),
    );
    {
        let (sink, stop, beats) = (Arc::clone(sink), Arc::clone(stop), Arc::clone(progress));
        let mut camera = camera;
        let outlet = Outlet::Slot {
            slot: frame_slot,
            next: Stage::Rectify,
        };
        handles.push(spawn_thread(0, progress, move || {
            camera_loop(&mut *camera, &outlet, &sink, &stop, &beats);
        })?);
    }
    // Recording writes image files: its own thread, so the rectify stage never waits on the disk (unless
    // lossless, where every frame must be recorded).
    let (record_tx, record_thread) = match recorder {
        Some(recorder) => {
            let (tx, thread) = spawn_recorder(recorder)?;
            (Some(tx), Some(thread))
        }
        None => (None, None),
    };
    let rectify_stage = rectify_stage.recording(record_tx, config.lossless);
    let stages = [
        spawn_stage(
            1,
            rectify_stage,
            frame_rx,
            Outlet::Slot {
                slot: rectified_slot,
                next: Stage::Encode,
            },
            sink,
            progress,
        ),
        spawn_stage(
            2,
            EncodeStage { encoder },
            rectified_rx,
            Outlet::Channel {
                tx: encoded_tx,
                next: Stage::Match,
            },
            sink,
            progress,
        ),
        spawn_stage(
            3,
            LocalizeStage::new(config, cache, replay_anchors, link.clone()),
            encoded_rx,
            Outlet::Channel {
                tx: localized_tx,
                next: Stage::Publish,
            },
            sink,
            progress,
        ),
        spawn_stage(
            4,
            PublishStage { link: link.clone() },
            localized_rx,
            Outlet::Reports,
            sink,
            progress,
        ),
    ];
    for stage in stages {
        handles.push(stage?);
    }
    if let Some(thread) = record_thread {
        // Last: it ends once the rectify thread has dropped its sender.
        handles.push((RECORD_THREAD, thread));
    }
    Ok(Spawned { handles, link })
}

/// The recording folder, with the calibration the frames were taken with, so a replay rectifies alike.
fn open_recorder(
    dir: &std::path::Path,
    calibration: &CameraCalibration,
) -> Result<ReplayRecorder, PipelineError> {
    let recorder = ReplayRecorder::create(dir).map_err(|e| PipelineError::Record {
        path: dir.to_path_buf(),
        reason: e.to_string(),
    })?;
    let written = calibration
        .to_toml_string()
        .map_err(|e| e.to_string())
        .and_then(|text| {
            recorder
                .write_sidecar(CALIBRATION_SIDECAR, text.as_bytes())
                .map_err(|e| e.to_string())
        });
    if let Err(e) = written {
        log::warn!("recording {}: calibration not saved: {e}", dir.display());
    }
    Ok(recorder)
}

/// The recorder's thread: writes the frames it is sent until the sender is dropped.
fn spawn_recorder(
    mut recorder: ReplayRecorder,
) -> Result<(Sender<Frame>, JoinHandle<()>), PipelineError> {
    let (tx, rx) = bounded::<Frame>(RECORD_QUEUE);
    let thread = std::thread::Builder::new()
        .name(RECORD_THREAD.into())
        .spawn(move || {
            for frame in rx {
                if let Err(e) = recorder.record(&frame) {
                    log::error!("recording frame {}: {e}; recording stops", frame.seq);
                    break;
                }
            }
            match recorder.finish() {
                Ok(dir) => log::info!("recording in {}", dir.display()),
                Err(e) => log::error!("{e}"),
            }
        })
        .map_err(|source| PipelineError::Spawn {
            thread: RECORD_THREAD,
            source,
        })?;
    Ok((tx, thread))
}

/// The camera thread: the pipeline's source. Takes frames until `stop` (or the source ends) and passes each
/// on with its [`FrameMeta`].
fn camera_loop(
    camera: &mut dyn CameraSource,
    outlet: &Outlet<(FrameMeta, Frame)>,
    sink: &ReportSink,
    stop: &AtomicBool,
    progress: &Progress,
) {
    let mut failures = 0u64;
    while !stop.load(Ordering::Relaxed) {
        progress.beat(0);
        let frame = match camera.next_frame(POLL) {
            Ok(frame) => frame,
            Err(CameraError::Ended) => {
                log::info!("camera source ended");
                break;
            }
            Err(CameraError::Timeout { .. }) => continue,
            Err(e) => {
                // A stalled or unplugged camera is the health thread's to report; keep trying, never spin.
                sink.camera_error(match &e {
                    CameraError::CorruptFrame { .. } => "corrupt_frame",
                    CameraError::Disconnected { .. } => "disconnected",
                    _ => "other",
                });
                failures += 1;
                if failures.is_power_of_two() {
                    log::warn!("camera: {e} ({failures} failures so far)");
                }
                if !e.is_transient() {
                    std::thread::sleep(POLL);
                }
                continue;
            }
        };
        let received = Instant::now();
        progress
            .last_frame
            .store(progress.stamp(), Ordering::Relaxed);
        sink.captured();
        let mut latency = StageLatencies::default();
        let capture = capture_latency(&frame);
        if let Some(d) = capture {
            latency.set(Stage::Capture, d);
        }
        let meta = FrameMeta {
            seq: frame.seq,
            exposure_unix_us: frame.exposure_unix_us,
            origin: capture
                .and_then(|d| received.checked_sub(d))
                .unwrap_or(received),
            latency,
            best_similarity: None,
        };
        if !outlet.pass((meta, frame), Some(stop), sink, || progress.beat(0)) {
            break;
        }
    }
}

/// The time from the middle of the exposure to now on the monotonic clock every source stamps with, when
/// it is plausible (a live or simulated camera); `None` for a replay's recorded times.
fn capture_latency(frame: &Frame) -> Option<Duration> {
    let age = mono_now_us().checked_sub(frame.exposure_mono_us)?;
    (age < 5_000_000).then(|| Duration::from_micros(age))
}

/// camera frame → north-up nadir view at the encoder's size, or the frame's refusal.
struct RectifyStage {
    camera: CameraModel,
    size_px: u32,
    ground_size_m: Option<f64>,
    /// The cache's tile footprints, ascending, for choosing the view's ground size per frame.
    footprints_m: Vec<f64>,
    /// Ground metres the camera's shorter side sees per metre of height, at nadir.
    footprint_per_height: f64,
    limits: crate::rectify::RectifyLimits,
    max_attitude_age: Duration,
    attitude_check: AttitudeCheck,
    /// Poses for frames without their own.
    link: Option<Arc<FcLink>>,
    /// Where the attitude check's verdict is shown to the health thread.
    progress: Arc<Progress>,
    /// The recorder's queue, when recording; lossless: every frame waits for room in it.
    record_tx: Option<Sender<Frame>>,
    lossless: bool,
}

impl RectifyStage {
    fn new(
        config: &PipelineConfig,
        calibration: &CameraCalibration,
        model_px: u32,
        cache: &TileCache,
        link: Option<Arc<FcLink>>,
        progress: Arc<Progress>,
    ) -> Self {
        let mut footprints_m: Vec<f64> = cache
            .meta()
            .scales
            .iter()
            .copied()
            .filter(|s| s.is_finite() && *s > 0.0)
            .collect();
        footprints_m.sort_by(f64::total_cmp);
        let i = &calibration.intrinsics;
        let footprint_per_height = (f64::from(calibration.image.width) / i.fx)
            .min(f64::from(calibration.image.height) / i.fy);
        RectifyStage {
            camera: CameraModel::new(calibration),
            size_px: config.rectify_size_px.unwrap_or(model_px),
            ground_size_m: config.rectify_ground_size_m,
            footprints_m,
            footprint_per_height,
            limits: config.rectify_limits,
            max_attitude_age: config.max_attitude_age,
            attitude_check: AttitudeCheck::new(config.localize.filter.max_speed_mps),
            link,
            progress,
            record_tx: None,
            lossless: config.lossless,
        }
    }

    /// Records every frame the stage takes (refused ones included) into `record_tx`'s recorder.
    fn recording(self, record_tx: Option<Sender<Frame>>, lossless: bool) -> Self {
        RectifyStage {
            record_tx,
            lossless,
            ..self
        }
    }

    /// Hands `frame` to the recorder; a recorder that has gone (a write failed) is not asked again.
    fn record(&mut self, frame: Frame) {
        let Some(tx) = &self.record_tx else {
            return;
        };
        let sent = if self.lossless {
            tx.send(frame).is_ok()
        } else {
            match tx.try_send(frame) {
                Err(TrySendError::Full(f)) => {
                    log::warn!("recording is behind: frame {} not recorded", f.seq);
                    true
                }
                r => r.is_ok(),
            }
        };
        if !sent {
            self.record_tx = None;
        }
    }

    /// The ground the view covers: configured, or the largest cache footprint that fits in 90 % of what the
    /// camera sees at this height (the smallest when none does).
    fn ground_size(&self, height_m: f64) -> f64 {
        if let Some(g) = self.ground_size_m {
            return g;
        }
        let seen = 0.9 * height_m * self.footprint_per_height;
        self.footprints_m
            .iter()
            .copied()
            .rfind(|f| *f <= seen)
            .or_else(|| self.footprints_m.first().copied())
            .unwrap_or(1.0)
    }

    /// Rectifies `frame`, or reports why not. A frame without its own pose gets the autopilot's it was
    /// rectified with, so a recording of it replays the same.
    fn rectify(
        &mut self,
        meta: &mut FrameMeta,
        frame: &mut Frame,
    ) -> Result<Rectified, Box<FrameReport>> {
        let t = Instant::now();
        let pose = match frame.pose.as_ref() {
            Some(p) => Ok(frame_pose(p)),
            None => match self.link.as_deref() {
                Some(link) => autopilot_pose(link, self.max_attitude_age).inspect(|pose| {
                    let (roll_rad, pitch_rad, yaw_rad) = pose.euler();
                    frame.pose = Some(FramePose {
                        roll_rad,
                        pitch_rad,
                        yaw_rad,
                        height_agl_m: pose.height_agl_m,
                    });
                }),
                None => Err(RefuseReason::NoPose),
            },
        };
        let result = crate::camera::check_content(&frame.image)
            .map_err(RefuseReason::Content)
            .and(pose)
            .and_then(|pose| {
                match self.attitude_check.observe(
                    meta.exposure_unix_us,
                    &frame.image,
                    &pose,
                    &self.camera,
                ) {
                    AttitudeVerdict::Inconsistent {
                        jump_m,
                        bias_m,
                        heading_deg,
                    } => Err(RefuseReason::Attitude {
                        jump_m,
                        bias_m,
                        heading_deg,
                    }),
                    _ => Ok(pose),
                }
            })
            .and_then(|pose| {
                let target = RectifyTarget {
                    size_px: self.size_px,
                    ground_size_m: self.ground_size(pose.height_agl_m),
                };
                rectify(&frame.image, &self.camera, &pose, &target, &self.limits)
                    .map_err(RefuseReason::Rectify)
            });
        meta.latency.set(Stage::Rectify, t.elapsed());
        match result {
            Ok(r) => Ok(Rectified {
                meta: meta.clone(),
                image: r.image,
                centre_offset_ne_m: r.centre_offset_ne_m,
            }),
            Err(reason) => {
                log::debug!("frame {} refused: {reason}", meta.seq);
                Err(Box::new(meta.report(FrameOutcome::Refused(reason))))
            }
        }
    }
}

impl FrameStage for RectifyStage {
    type In = (FrameMeta, Frame);
    type Out = Rectified;

    fn process(
        &mut self,
        (mut meta, mut frame): (FrameMeta, Frame),
    ) -> Result<Rectified, Box<FrameReport>> {
        let rectified = self.rectify(&mut meta, &mut frame);
        self.progress
            .attitude_refused
            .store(self.attitude_check.is_refusing(), Ordering::Relaxed);
        self.record(frame);
        rectified
    }
}

/// rectified view → embedding.
struct EncodeStage {
    encoder: Box<dyn Encoder>,
}

impl FrameStage for EncodeStage {
    type In = Rectified;
    type Out = Encoded;

    fn process(&mut self, r: Rectified) -> Result<Encoded, Box<FrameReport>> {
        let t = Instant::now();
        let result = self.encoder.encode(&r.image);
        let mut meta = r.meta;
        meta.latency.set(Stage::Encode, t.elapsed());
        match result {
            Ok(embedding) => Ok(Encoded {
                meta,
                embedding,
                centre_offset_ne_m: r.centre_offset_ne_m,
            }),
            Err(e) => {
                log::warn!("frame {}: encoder failed: {e}", meta.seq);
                Err(Box::new(meta.report(FrameOutcome::Failed {
                    stage: Stage::Encode,
                    message: e.to_string(),
                })))
            }
        }
    }
}

fn frame_pose(p: &FramePose) -> Pose {
    Pose::from_euler(p.roll_rad, p.pitch_rad, p.yaw_rad, p.height_agl_m)
}

/// The autopilot's latest attitude and height above ground (a downward rangefinder in range, else the
/// altitude above home), when both are recent enough.
fn autopilot_pose(link: &FcLink, max_age: Duration) -> Result<Pose, RefuseReason> {
    let vehicle = link.snapshot().vehicle;
    let now = Instant::now();
    let attitude = vehicle.attitude.ok_or(RefuseReason::NoPose)?;
    let rangefinder = vehicle.height_above_ground.filter(|h| {
        let v = h.value;
        v.distance_m.is_finite() && v.distance_m >= v.range_m[0] && v.distance_m <= v.range_m[1]
    });
    let (height_m, height_age) = match (rangefinder, vehicle.global_position) {
        (Some(h), _) => (h.value.distance_m, h.age(now)),
        (None, Some(p)) => (p.value.relative_alt_m, p.age(now)),
        (None, None) => return Err(RefuseReason::NoPose),
    };
    let age = attitude.age(now).max(height_age);
    if age > max_age {
        return Err(RefuseReason::StaleAttitude {
            age_ms: age.as_millis() as u64,
        });
    }
    let a = attitude.value;
    Ok(Pose::from_euler(
        f64::from(a.roll),
        f64::from(a.pitch),
        f64::from(a.yaw),
        f64::from(height_m),
    ))
}

/// A GNSS position older than this is not an anchor.
const ANCHOR_MAX_POSITION_AGE: Duration = Duration::from_secs(1);
/// 95 % horizontal radius per unit of HDOP (a user range error of about 2 m one-sigma), metres.
const ANCHOR_M_PER_HDOP: f64 = 5.0;
/// The least (and, without an HDOP, the) 95 % radius claimed for an anchor, metres: conservative.
const ANCHOR_MIN_ACCURACY_M: f64 = 5.0;
/// Velocity error allowed when the position is moved to the exposure time, m/s (95 %).
const ANCHOR_VELOCITY_ERROR_MPS: f64 = 1.0;

/// The autopilot's position at the frame's exposure time (WGS84 degrees, 95 % radius in metres), when its
/// GNSS is healthy and the position fresh: the localizer's anchor.
///
/// Only under a `Healthy` verdict: when GNSS is denied (or degraded) the autopilot's GLOBAL_POSITION_INT
/// may be fused from our own fixes (GPS_INPUT / the aux global position), and anchoring on it would make
/// the localizer confirm itself. The verdict is computed from GPS_RAW_INT (the vehicle's own receiver),
/// never from GPS2_RAW (our fix echoed back). The accuracy is the receiver's HDOP times
/// [`ANCHOR_M_PER_HDOP`], at least [`ANCHOR_MIN_ACCURACY_M`], plus what moving the position to the
/// exposure time (along GLOBAL_POSITION_INT's velocity) can get wrong.
fn gnss_anchor(link: &FcLink, exposure_unix_us: u64) -> Option<(f64, f64, f64)> {
    let snapshot = link.snapshot();
    if snapshot.gnss.verdict != GnssVerdict::Healthy {
        return None;
    }
    let now = Instant::now();
    let position = snapshot.vehicle.global_position?;
    let age = position.age(now);
    if age >= ANCHOR_MAX_POSITION_AGE {
        return None;
    }
    let p = position.value;
    let sampled_unix_us = unix_now_us().saturating_sub(age.as_micros() as u64);
    let dt_s = (exposure_unix_us as i128 - sampled_unix_us as i128) as f64 * 1e-6;
    // A frame not taken now (a replayed recording) has nothing to do with the vehicle's position now.
    if dt_s.abs() > ANCHOR_MAX_POSITION_AGE.as_secs_f64() {
        return None;
    }
    let hdop = snapshot
        .vehicle
        .gps1
        .and_then(|g| g.value.hdop)
        .filter(|h| h.is_finite() && *h > 0.0);
    let accuracy_m = hdop.map_or(ANCHOR_MIN_ACCURACY_M, |h| {
        (f64::from(h) * ANCHOR_M_PER_HDOP).max(ANCHOR_MIN_ACCURACY_M)
    }) + ANCHOR_VELOCITY_ERROR_MPS * dt_s.abs();
    // Move the position along the velocity to the exposure time (the move is at most a few tens of metres).
    let [vn, ve, _] = p.vel_ned_mps;
    let (vn, ve) = (f64::from(vn), f64::from(ve));
    let (vn, ve) = if vn.is_finite() && ve.is_finite() {
        (vn, ve)
    } else {
        (0.0, 0.0)
    };
    let (lat, lon) = crate::geodesy::offset_lat_lon(p.lat_deg, p.lon_deg, vn * dt_s, ve * dt_s);
    Some((lat, lon, accuracy_m))
}

/// Where the localize stage's anchors come from.
enum AnchorSource {
    /// The link's GNSS, while healthy ([`gnss_anchor`]).
    Link,
    /// A replay's recorded anchors: the frame's own, never the link's (the vehicle's position now has
    /// nothing to do with a recorded frame).
    Recorded(RecordedAnchors),
}

/// The anchors the localizer used, for the recording's [`ANCHORS_SIDECAR`].
struct UsedAnchors {
    path: PathBuf,
    anchors: Vec<RecordedAnchor>,
}

/// embedding → tile matches → the localizer's estimate (anchored on GNSS while it is healthy).
struct LocalizeStage {
    cache: Arc<TileCache>,
    localizer: Localizer,
    top_k: usize,
    prior_radius_m: f64,
    stride: f64,
    anchors: AnchorSource,
    /// Only when recording.
    used_anchors: Option<UsedAnchors>,
    /// GNSS anchors (while healthy).
    link: Option<Arc<FcLink>>,
}

impl LocalizeStage {
    fn new(
        config: &PipelineConfig,
        cache: Arc<TileCache>,
        replay_anchors: Option<RecordedAnchors>,
        link: Option<Arc<FcLink>>,
    ) -> Self {
        let stride = cache.meta().stride;
        LocalizeStage {
            localizer: Localizer::new(config.localize.clone()),
            cache,
            top_k: config.top_k,
            prior_radius_m: config.prior_radius_m,
            stride,
            anchors: replay_anchors.map_or(AnchorSource::Link, AnchorSource::Recorded),
            used_anchors: config.record.as_ref().map(|dir| UsedAnchors {
                path: dir.join(ANCHORS_SIDECAR),
                anchors: Vec::new(),
            }),
            link,
        }
    }

    /// The anchor for this frame (WGS84 degrees, 95 % radius in metres), if any.
    fn anchor_for(&self, meta: &FrameMeta) -> Option<(f64, f64, f64)> {
        match &self.anchors {
            AnchorSource::Link => self
                .link
                .as_deref()
                .and_then(|l| gnss_anchor(l, meta.exposure_unix_us)),
            AnchorSource::Recorded(recorded) => {
                let anchor = recorded.for_frame(meta.seq, meta.exposure_unix_us);
                if anchor.is_none() && recorded.get(meta.seq).is_some() {
                    log::warn!(
                        "frame {}: its recorded anchor was taken at another time: not used",
                        meta.seq
                    );
                }
                anchor.map(|a| (a.lat_deg, a.lon_deg, a.accuracy95_m))
            }
        }
    }

    /// At shutdown: writes the anchors used into the recording (every one, none included, so a replay of
    /// it knows).
    fn write_used_anchors(&mut self) {
        if let Some(used) = self.used_anchors.take() {
            match write_anchors(&used.path, &used.anchors) {
                Ok(()) => log::info!(
                    "recorded {} anchors in {}",
                    used.anchors.len(),
                    used.path.display()
                ),
                Err(e) => log::error!("{e}"),
            }
        }
    }

    fn localize(&mut self, e: Encoded) -> Result<Localized, Box<FrameReport>> {
        let Encoded {
            mut meta,
            embedding,
            centre_offset_ne_m,
        } = e;
        let t = Instant::now();
        // While the autopilot's GNSS is healthy, its position anchors the filter (before this frame's
        // matches, so they are gated against it, and so the prior window is centred on it).
        // A replay's are the live run's, recorded.
        if let Some((lat, lon, accuracy_m)) = self.anchor_for(&meta) {
            let outcome = self
                .localizer
                .anchor(meta.exposure_unix_us, lat, lon, accuracy_m);
            if let Some(used) = self.used_anchors.as_mut().filter(|_| outcome.is_used()) {
                used.anchors.push(RecordedAnchor {
                    seq: meta.seq,
                    exposure_unix_us: meta.exposure_unix_us,
                    lat_deg: lat,
                    lon_deg: lon,
                    accuracy95_m: accuracy_m,
                });
            }
            if !outcome.is_used() {
                log::debug!(
                    "frame {}: GNSS anchor not used: {}",
                    meta.seq,
                    outcome.kind()
                );
            }
        }
        // The prior: where the localizer is (around the last fix, widened by its accuracy; or around the
        // particle cloud); without one, the whole cache.
        let window = self
            .localizer
            .search_window(meta.exposure_unix_us, self.prior_radius_m)
            .map(|(lat, lon, radius_m)| PriorWindow { lat, lon, radius_m });
        let k = self.localizer.matches_wanted(self.top_k);
        let matches = self.cache.search(&embedding, k, window.as_ref());
        meta.latency.set(Stage::Match, t.elapsed());
        let matches = match matches {
            Ok(m) => m,
            Err(e) => {
                log::warn!("frame {}: tile search failed: {e}", meta.seq);
                return Err(Box::new(meta.report(FrameOutcome::Failed {
                    stage: Stage::Match,
                    message: e.to_string(),
                })));
            }
        };
        meta.best_similarity = matches.first().map(|m| m.similarity);
        let t = Instant::now();
        let stride_m = matches
            .first()
            .map_or(0.0, |m| self.stride * f64::from(m.ground_size_m));
        let outcome = self.localizer.process(
            meta.exposure_unix_us,
            &matches,
            centre_offset_ne_m,
            stride_m,
        );
        let outcome = frame_outcome(&outcome);
        let fix_at_exposure = self.localizer.fix_at(meta.exposure_unix_us).ok();
        let to_publish = self.localizer.fix_at(unix_now_us()).ok();
        meta.latency.set(Stage::Localize, t.elapsed());
        Ok(Localized {
            meta,
            outcome,
            fix_at_exposure,
            to_publish,
        })
    }
}

impl FrameStage for LocalizeStage {
    type In = Encoded;
    type Out = Localized;

    fn process(&mut self, e: Encoded) -> Result<Localized, Box<FrameReport>> {
        self.localize(e)
    }

    fn finish(&mut self) {
        self.write_used_anchors();
    }
}

/// The localizer's outcome as the report's: no measurement, gated (the filter did not use it: gated,
/// diverged, out of order, invalid) or measured (accepted, or kept while the filter initialises).
fn frame_outcome(outcome: &LocalizeOutcome) -> FrameOutcome {
    let kind = outcome.kind().to_owned();
    match outcome {
        LocalizeOutcome::NoMeasurement(_) | LocalizeOutcome::InvalidOffset { .. } => {
            FrameOutcome::NoMeasurement(kind)
        }
        LocalizeOutcome::Filtered { outcome, .. } => match outcome {
            UpdateOutcome::Accepted { .. }
            | UpdateOutcome::Initialised { .. }
            | UpdateOutcome::NotInitialised { .. } => FrameOutcome::Measured(kind),
            UpdateOutcome::Gated { .. }
            | UpdateOutcome::Diverged { .. }
            | UpdateOutcome::Stale { .. }
            | UpdateOutcome::Invalid => FrameOutcome::Gated(kind),
        },
        LocalizeOutcome::Tracked(outcome) => match outcome {
            ParticleOutcome::Tracked { .. } | ParticleOutcome::NotInitialised => {
                FrameOutcome::Measured(kind)
            }
            ParticleOutcome::NoEvidence => FrameOutcome::NoMeasurement(kind),
            ParticleOutcome::Disagrees { .. }
            | ParticleOutcome::Stale { .. }
            | ParticleOutcome::Invalid => FrameOutcome::Gated(kind),
        },
    }
}

/// estimate → MAVLink to the autopilot (as the link's publish policy says) → the frame's report.
struct PublishStage {
    link: Option<Arc<FcLink>>,
}

impl FrameStage for PublishStage {
    type In = Localized;
    type Out = FrameReport;

    fn process(&mut self, l: Localized) -> Result<FrameReport, Box<FrameReport>> {
        Ok(publish(l, self.link.as_deref()))
    }
}

fn publish(l: Localized, link: Option<&FcLink>) -> FrameReport {
    let Localized {
        mut meta,
        outcome,
        fix_at_exposure,
        to_publish,
    } = l;
    let mut published = None;
    let mut frame_to_fix = None;
    if let (Some(fix), Some(link)) = (to_publish, link) {
        let t = Instant::now();
        let result = link.publish(&fix).map_err(|e| {
            log::warn!("frame {}: {e}", meta.seq);
            fc_error_text(&e)
        });
        let done = Instant::now();
        meta.latency.set(Stage::Publish, done - t);
        frame_to_fix = Some(done.saturating_duration_since(meta.origin));
        published = Some(PublishedFix {
            fix,
            outcome: result,
        });
    }
    let mut report = meta.report(outcome);
    report.fix_at_exposure = fix_at_exposure;
    report.published = published;
    report.frame_to_fix = frame_to_fix;
    report
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latest_only_slot_replaces_the_unconsumed_item() {
        let (slot, rx) = Slot::new(false);
        let push = |i| slot.push(i, None, || panic!("a latest-only slot never waits"));
        assert!(matches!(push(1), Pushed::Done(None)));
        assert!(matches!(push(2), Pushed::Done(Some(1))));
        assert!(matches!(push(3), Pushed::Done(Some(2))));
        assert_eq!(rx.try_recv().unwrap(), 3);
        assert!(matches!(push(4), Pushed::Done(None)));
        drop(rx);
        // The slot's own evicting receiver keeps the channel open; the consumer leaving is seen as full.
        assert!(matches!(push(5), Pushed::Done(Some(4))));
    }

    #[test]
    fn lossless_slot_waits_and_gives_back_on_stop() {
        let stop = AtomicBool::new(false);
        let (slot, rx) = Slot::new(true);
        assert!(matches!(
            slot.push(1, Some(&stop), || {}),
            Pushed::Done(None)
        ));
        let consumer = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(250));
            (rx.recv().unwrap(), rx)
        });
        let waited = std::cell::Cell::new(0);
        let pushed = slot.push(2, Some(&stop), || waited.set(waited.get() + 1));
        assert!(matches!(pushed, Pushed::Done(None)));
        assert!(waited.get() >= 1, "the producer beats while it waits");
        let (first, rx) = consumer.join().unwrap();
        assert_eq!(first, 1);
        stop.store(true, Ordering::Relaxed);
        assert!(matches!(
            slot.push(3, Some(&stop), || {}),
            Pushed::Closed(3)
        ));
        assert_eq!(rx.try_recv().unwrap(), 2);
        // Without a flag to give up on, only the consumer leaving ends the wait.
        drop(rx);
        assert!(matches!(slot.push(4, None, || {}), Pushed::Closed(4)));
    }
}
