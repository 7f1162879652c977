//! The real-time pipeline: camera → rectify → encode → match + localize → publish, one named thread per
//! stage, joined by bounded crossbeam channels, plus a health thread.
//!
//! [`Pipeline::spawn`] takes a [`PipelineConfig`] (from the onboard config file, [`OnboardConfig`]) and the
//! components the caller built from it ([`PipelineParts`]: the camera source, its calibration, the encoder,
//! the tile cache and the flight-controller link), so `vimgeo run` and the simulation (`vimgeo sim`, with its
//! own camera) run the same pipeline. It returns a [`PipelineHandle`]: [`PipelineHandle::reports`] gives one
//! [`FrameReport`] per frame, [`PipelineHandle::stop`] asks for shutdown and [`PipelineHandle::join`] waits for
//! it and returns the [`RunSummary`].
//!
//! ```text
//!  vimgeo-camera ─[latest-only, 1]─▶ vimgeo-rectify ─[latest-only, 1]─▶ vimgeo-encode
//!      ─[channel_capacity]─▶ vimgeo-localize (match + localize) ─[channel_capacity]─▶ vimgeo-publish
//!  vimgeo-health: camera stalled, encoder too slow, link lost → log + STATUSTEXT; systemd watchdog
//! ```
//!
//! Ordering and dropping: frames keep their order. Between camera and encoder only the newest frame waits:
//! a frame not yet taken when a newer one arrives is dropped (reported as [`FrameOutcome::Dropped`]), so a slow
//! encoder drops frames and never builds a backlog. With [`PipelineConfig::lossless`] (a replay as fast as
//! possible) every stage waits for the next instead, and every frame is processed. After the encoder the
//! channels are bounded and blocking: their work is short.
//!
//! Recording ([`PipelineConfig::record`]): every frame the rectify stage takes (refused ones included) is
//! written, on its own thread, with the pose it was rectified with (the autopilot's when the frame had none)
//! and the camera calibration ([`CALIBRATION_SIDECAR`]), so the folder replays as the live run went: exactly
//! in a lossless run; a real-time run also records the few frames dropped before the encoder, and drops
//! (logs) frames the disk cannot keep up with rather than slow the rectify stage. The GNSS anchors the
//! localizer used go into the folder too, at shutdown ([`ANCHORS_SIDECAR`]); a replay given that file
//! ([`PipelineConfig::replay_anchors`]) anchors each frame on its recorded anchor and never on the link's
//! GNSS, so it reproduces the live run's fixes.
//!
//! Poses: a frame's own pose when it has one (replay, simulation), else the autopilot's latest ATTITUDE and
//! height above ground (DISTANCE_SENSOR, else the altitude above home) when not older than
//! [`PipelineConfig::max_attitude_age`]; otherwise the frame is refused and counted.
//!
//! Shutdown: [`PipelineHandle::stop`] (or the end of a replay) stops the camera thread, which drops its
//! channel; each stage drains what it holds (a lossless run still processes every frame already taken from
//! the camera) and exits when its input disconnects, so shutdown never deadlocks. `join` (and `Drop`) joins the stages in frame order, then the health thread. A bad frame never
//! panics a stage: it is reported and counted, and the run goes on.
//!
//! At start the tile cache must have been built with the running model (same ONNX SHA-256 and dimension):
//! otherwise [`Pipeline::spawn`] refuses with [`PipelineError::CacheMismatch`] (and tells the autopilot by
//! STATUSTEXT when the link is up).

mod anchors;
mod config;
mod health;
mod report;
mod stages;
mod summary;
mod watchdog;

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Instant;

use crossbeam_channel::{bounded, Receiver, Sender};

pub use self::anchors::{
    anchors_csv, write_anchors, AnchorsError, RecordedAnchor, RecordedAnchors, ANCHORS_HEADER,
    ANCHORS_SIDECAR,
};
pub use self::config::{
    CacheSettings, CameraChoice, CameraSettings, ConfigError, HealthConfig, ModelSettings,
    OnboardConfig, PipelineConfig, RawConfig,
};
pub use self::health::HealthCondition;
pub use self::report::{
    FcErrorText, FrameOutcome, FrameReport, PublishedFix, RefuseReason, Stage, StageLatencies,
    FIX_LOG_HEADER,
};
pub use self::stages::CALIBRATION_SIDECAR;
pub use self::summary::{LatencyStats, RunSummary};
pub use self::watchdog::Notifier;

use self::report::{FixLog, ReportSink};
use self::stages::Progress;
use crate::camera::CameraSource;
use crate::encoder::{open_encoder, Encoder, EncoderConfig, EncoderError, ModelManifest};
use crate::fc::{FcError, FcLink, LinkConfig};
use crate::matching::{CacheError, CacheExpectation, TileCache};
use crate::rectify::{CalibError, CameraCalibration};

/// Why the pipeline did not start, or did not stop cleanly.
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    /// The tile cache was built with another model (or dimension) than the running one.
    #[error(
        "tile cache {} was built with model {cache_model}, but the running model is {running_model}: \
         rebuild the cache with `vimgeo cache build` and this model", cache.display()
    )]
    CacheMismatch {
        /// The cache file.
        cache: PathBuf,
        /// The model the cache records: name, SHA-256 and dimension.
        cache_model: String,
        /// The running model: name, SHA-256 and dimension.
        running_model: String,
    },
    /// The tile cache could not be opened (damaged, wrong version, another model: see the message).
    #[error("{source} (running model {model})")]
    Cache {
        /// The running model's name.
        model: String,
        /// The cache's error.
        #[source]
        source: Box<CacheError>,
    },
    /// Neither `[rectify] ground_size_m` nor the cache's footprints (`scales`) say how much ground the
    /// rectified view covers.
    #[error(
        "tile cache {} records no tile footprints (scales): set [rectify] ground_size_m", cache.display()
    )]
    NoFootprint {
        /// The cache file.
        cache: PathBuf,
    },
    /// The fix log could not be created.
    #[error("fix log {}: {source}", path.display())]
    FixLog {
        /// The file.
        path: PathBuf,
        /// The operating system's reason.
        #[source]
        source: std::io::Error,
    },
    /// The recording folder could not be created.
    #[error("cannot record frames into {}: {reason}", path.display())]
    Record {
        /// The folder.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// The replay's recorded anchors ([`PipelineConfig::replay_anchors`]) could not be read or are
    /// malformed (the message names the file, line and column).
    #[error(transparent)]
    Anchors(AnchorsError),
    /// The model could not be opened (`[model] path`).
    #[error("[model] path {}: {source}", path.display())]
    Model {
        /// The model file.
        path: PathBuf,
        /// Why.
        #[source]
        source: EncoderError,
    },
    /// The flight-controller link could not be opened (`[fc]`; the message names the link).
    #[error(transparent)]
    Link(FcError),
    /// The camera calibration could not be read or was refused (the message names the file).
    #[error(transparent)]
    Calibration(CalibError),
    /// A thread could not be started.
    #[error("cannot start pipeline thread {thread}: {source}")]
    Spawn {
        /// The thread's name.
        thread: &'static str,
        /// The operating system's reason.
        #[source]
        source: std::io::Error,
    },
    /// A thread panicked (a bug: stages report bad frames, they never panic on them).
    #[error("pipeline thread {thread} panicked")]
    Panicked {
        /// The thread's name.
        thread: &'static str,
    },
}

/// The components the caller builds from the configuration and hands to [`Pipeline::spawn`].
pub struct PipelineParts {
    /// Where frames come from (V4L2, replay, simulation).
    pub camera: Box<dyn CameraSource>,
    /// The camera's calibration (intrinsics, distortion, mount).
    pub calibration: CameraCalibration,
    /// The encoder.
    pub encoder: Box<dyn Encoder>,
    /// The tile cache; must match the encoder's model (checked at spawn).
    pub cache: Arc<TileCache>,
    /// The flight-controller link: poses when frames carry none, publishing, STATUSTEXT. `None`: no
    /// publishing (frames then need their own pose).
    pub link: Option<Arc<FcLink>>,
}

/// The model the pipeline runs: opened from its file, or one the caller already holds (the simulation
/// builds its tile cache with it first; tests pass doubles).
pub enum EncoderSource {
    /// Open the exported model at `path` (its manifest beside it).
    Open {
        /// The `.onnx` file.
        path: PathBuf,
        /// Engine, threads, ONNX Runtime library search.
        config: EncoderConfig,
    },
    /// An encoder already open.
    Given(Box<dyn Encoder>),
}

/// What [`PipelineParts::open`] opens: the `[model]`, `[cache]`, `[camera] calib` and `[fc]` settings of
/// an onboard configuration, or what a simulation scenario or a replay says instead.
pub struct PartsConfig {
    /// The model.
    pub encoder: EncoderSource,
    /// The tile cache; it must have been built with the model.
    pub cache: PathBuf,
    /// The camera's calibration file.
    pub calibration: PathBuf,
    /// The flight-controller link; `None`: no link (frames must then carry their own poses).
    pub link: Option<LinkConfig>,
}

impl PipelineParts {
    /// Opens the parts `config` names around `camera`, in the order a failure is cheapest to report: the
    /// model, the flight-controller link (so a refused cache is told to the pilot by STATUSTEXT), the tile
    /// cache (checked against the model), the calibration (an illustrative example is warned about).
    /// `vimgeo run`, the simulation and the replay all build their pipeline here.
    pub fn open(
        config: PartsConfig,
        camera: Box<dyn CameraSource>,
    ) -> Result<PipelineParts, PipelineError> {
        let encoder = match config.encoder {
            EncoderSource::Open { path, config } => open_encoder(&path, &config)
                .map_err(|source| PipelineError::Model { path, source })?,
            EncoderSource::Given(encoder) => encoder,
        };
        log::info!(
            "model {} on {} ({})",
            encoder.manifest().name,
            encoder.engine_name(),
            encoder.device()
        );
        let link = config
            .link
            .map(|c| FcLink::spawn(c).map(Arc::new))
            .transpose()
            .map_err(PipelineError::Link)?;
        if let Some(link) = &link {
            log::info!("flight-controller link {}", link.link());
        }
        let cache = match open_cache(&config.cache, encoder.manifest()) {
            Ok(cache) => Arc::new(cache),
            Err(e) => {
                if let Some(link) = &link {
                    // Tell the pilot too; give the link thread a moment to send it before it is dropped.
                    health::send_statustext(
                        link,
                        health::Severity::Error,
                        "tile cache refused, see the log",
                    );
                    std::thread::sleep(std::time::Duration::from_millis(300));
                }
                return Err(e);
            }
        };
        log::info!(
            "tile cache {}: {} tiles",
            config.cache.display(),
            cache.len()
        );
        let calibration =
            CameraCalibration::load(&config.calibration).map_err(PipelineError::Calibration)?;
        if calibration.example {
            log::warn!(
                "camera calibration {} is an illustrative example, not a measurement of this camera: \
                 positions will be off (calib/README.md says how to calibrate)",
                config.calibration.display()
            );
        }
        Ok(PipelineParts {
            camera,
            calibration,
            encoder,
            cache,
            link,
        })
    }
}

/// Opens the tile cache at `path` for the model of `manifest`, refusing one built with another model or
/// dimension (the message names both the cache's and the running model).
pub fn open_cache(
    path: &std::path::Path,
    manifest: &ModelManifest,
) -> Result<TileCache, PipelineError> {
    TileCache::open(
        path,
        &CacheExpectation {
            model_sha256: Some(&manifest.onnx_sha256),
            embedding_dim: Some(manifest.output.dim as usize),
        },
    )
    .map_err(|source| PipelineError::Cache {
        model: manifest.name.clone(),
        source: Box::new(source),
    })
}

/// The pipeline's entry point. See the module documentation.
pub struct Pipeline;

impl Pipeline {
    /// Checks the parts against each other, starts every thread and returns the handle.
    pub fn spawn(
        config: PipelineConfig,
        parts: PipelineParts,
    ) -> Result<PipelineHandle, PipelineError> {
        let manifest = parts.encoder.manifest();
        let meta = parts.cache.meta();
        let model_dim = manifest.output.dim as usize;
        if !meta
            .model_sha256
            .eq_ignore_ascii_case(&manifest.onnx_sha256)
            || meta.embedding_dim != model_dim
        {
            let error = PipelineError::CacheMismatch {
                cache: parts.cache.path().to_path_buf(),
                cache_model: format!(
                    "{} (sha256 {}, {}-dimensional)",
                    meta.model_name, meta.model_sha256, meta.embedding_dim
                ),
                running_model: format!(
                    "{} (sha256 {}, {model_dim}-dimensional)",
                    manifest.name, manifest.onnx_sha256
                ),
            };
            log::error!("{error}");
            if let Some(link) = &parts.link {
                health::send_statustext(
                    link,
                    health::Severity::Error,
                    "cache built for another model",
                );
            }
            return Err(error);
        }
        if config.rectify_ground_size_m.is_none()
            && !meta.scales.iter().any(|s| s.is_finite() && *s > 0.0)
        {
            return Err(PipelineError::NoFootprint {
                cache: parts.cache.path().to_path_buf(),
            });
        }
        let fix_log = config
            .fix_log
            .as_deref()
            .map(|path| {
                FixLog::create(path).map_err(|source| PipelineError::FixLog {
                    path: path.to_path_buf(),
                    source,
                })
            })
            .transpose()?;
        let (report_tx, report_rx) = bounded(config.report_capacity.max(1));
        let sink = Arc::new(ReportSink::new(report_tx, fix_log));
        let stop = Arc::new(AtomicBool::new(false));
        let progress = Arc::new(Progress::new(Instant::now()));
        let spawned =
            stages::spawn_stages(&config, parts_for_stages(parts), &sink, &stop, &progress)
                .inspect_err(|_| {
                    // The threads already started see the flag (the camera first) and wind down.
                    stop.store(true, Ordering::Relaxed);
                })?;
        let mut handle = PipelineHandle {
            stop,
            reports: report_rx,
            threads: spawned.handles,
            health: None,
            sink,
            progress,
        };
        // On failure, dropping `handle` stops and joins the stages.
        handle.health = Some(health::spawn(
            &config,
            &spawned.link,
            &handle.sink,
            &handle.progress,
        )?);
        Ok(handle)
    }
}

fn parts_for_stages(parts: PipelineParts) -> stages::Parts {
    stages::Parts {
        camera: parts.camera,
        calibration: parts.calibration,
        encoder: parts.encoder,
        cache: parts.cache,
        link: parts.link,
    }
}

/// A running pipeline. Dropping it stops and joins it (the summary is then logged).
pub struct PipelineHandle {
    stop: Arc<AtomicBool>,
    reports: Receiver<FrameReport>,
    threads: Vec<(&'static str, JoinHandle<()>)>,
    health: Option<(Sender<()>, JoinHandle<()>)>,
    sink: Arc<ReportSink>,
    progress: Arc<Progress>,
}

impl PipelineHandle {
    /// Asks the camera to stop; the stages then drain and exit. Returns at once: [`Self::join`] waits.
    pub fn stop(&self) {
        self.stop.store(true, Ordering::Relaxed);
    }

    /// The frame reports (one per frame, in the order frames finish). The channel holds
    /// `[pipeline] report_capacity` reports; beyond that they are counted as lost, never waited for.
    pub fn reports(&self) -> Receiver<FrameReport> {
        self.reports.clone()
    }

    /// Whether every stage has exited (the camera ended, e.g. a replay's last frame, or stop was asked).
    pub fn is_finished(&self) -> bool {
        self.threads.iter().all(|(_, t)| t.is_finished())
    }

    /// Whether the camera source has ended (a replay's last frame) or failed for good.
    pub fn camera_ended(&self) -> bool {
        self.progress.camera_ended()
    }

    /// Waits for every thread and returns the run's summary (for the caller to print).
    pub fn join(mut self) -> Result<RunSummary, PipelineError> {
        self.shutdown()
    }

    fn shutdown(&mut self) -> Result<RunSummary, PipelineError> {
        self.stop();
        let mut panicked = None;
        // In frame order: each stage exits once the one before it has dropped its channel.
        for (name, thread) in self.threads.drain(..) {
            if thread.join().is_err() {
                log::error!("pipeline thread {name} panicked");
                panicked.get_or_insert(name);
            }
        }
        if let Some((tx, thread)) = self.health.take() {
            drop(tx);
            if thread.join().is_err() {
                panicked.get_or_insert("vimgeo-health");
            }
        }
        let summary = self.sink.finish();
        match panicked {
            Some(thread) => Err(PipelineError::Panicked { thread }),
            None => Ok(summary),
        }
    }
}

impl Drop for PipelineHandle {
    fn drop(&mut self) {
        if !self.threads.is_empty() || self.health.is_some() {
            match self.shutdown() {
                Ok(summary) => log::info!("{summary}"),
                Err(e) => log::error!("{e}"),
            }
        }
    }
}
