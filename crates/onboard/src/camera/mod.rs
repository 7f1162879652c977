//! The camera stage: frames from a V4L2 device, a recorded folder, or the simulated camera.
//!
//! One trait, [`CameraSource`], one module per transport: [`v4l2`] (live capture), [`replay`] (a recorded
//! folder, written by [`ReplayRecorder`]); the simulated camera (`sim/`) implements the same trait, so the
//! whole pipeline runs in tests without hardware.
//!
//! Guarantees every source keeps:
//! - timestamps are CLOCK_MONOTONIC µs ([`mono_now_us`]), converted to UNIX time by one offset
//!   ([`MonoClock::global`]);
//! - [`CameraSource::next_frame`] never blocks much longer than its timeout: a stalled camera gives
//!   [`CameraError::Timeout`], an unplugged one [`CameraError::Disconnected`], a replay's end
//!   [`CameraError::Ended`]; a bad frame is [`CameraError::CorruptFrame`] and the next call goes on.
//!
//! ```no_run
//! use std::time::Duration;
//! use vimgeo_onboard::camera::{CameraError, CameraSource, ReplayPace, ReplayOptions, ReplaySource};
//!
//! let mut cam = ReplaySource::open("flight-01", ReplayOptions { pace: ReplayPace::RealTime, loop_: false })?;
//! loop {
//!     match cam.next_frame(Duration::from_millis(500)) {
//!         Ok(frame) => println!("frame {} at {} µs", frame.seq, frame.exposure_mono_us),
//!         Err(e) if e.is_transient() => log::warn!("{e}"),
//!         Err(CameraError::Ended) => break,
//!         Err(e) => return Err(e),
//!     }
//! }
//! # Ok::<(), CameraError>(())
//! ```

mod error;
mod frame;
pub mod replay;
pub mod v4l2;

use std::time::Duration;

pub use error::CameraError;
pub use frame::{
    check_content, mono_now_us, unix_now_us, ContentError, Frame, FramePose, MonoClock,
};
pub use replay::{ReplayOptions, ReplayPace, ReplayRecorder, ReplaySource};
pub use v4l2::{yuyv_to_rgb, PixelFormat, V4l2Config, V4l2Source};

/// A source of camera frames: a V4L2 device, a recording, the simulated camera.
///
/// Sources are driven from one thread (the camera stage's), hence `Send` but not `Sync`.
pub trait CameraSource: Send {
    /// A short human-readable name, used in logs and errors (`"camera /dev/video0 (MJPG 1280x720)"`).
    fn describe(&self) -> String;

    /// The next frame, waiting at most about `timeout` for it.
    ///
    /// Errors: [`CameraError::Timeout`] when no frame came in time (the source stays usable),
    /// [`CameraError::CorruptFrame`] for one bad frame (the next call goes on),
    /// [`CameraError::Ended`] at the end of a recording, [`CameraError::Disconnected`] when the device
    /// went away; others describe a broken source.
    fn next_frame(&mut self, timeout: Duration) -> Result<Frame, CameraError>;
}

impl<S: CameraSource + ?Sized> CameraSource for Box<S> {
    fn describe(&self) -> String {
        (**self).describe()
    }

    fn next_frame(&mut self, timeout: Duration) -> Result<Frame, CameraError> {
        (**self).next_frame(timeout)
    }
}
