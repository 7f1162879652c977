//! The camera stage's one error type: every variant names the device, folder or file that failed.

use std::io;
use std::path::PathBuf;
use std::time::Duration;

use thiserror::Error;

/// What can go wrong while opening or reading a camera source.
///
/// `Timeout` and `CorruptFrame` concern one frame: the source stays usable and the caller asks for the
/// next frame (the pipeline counts a `Timeout` as a stall). `Ended` and `Disconnected` are final.
#[derive(Debug, Error)]
pub enum CameraError {
    /// The V4L2 device node could not be opened (missing, no permission, busy).
    #[error(
        "camera {}: cannot open: {source} (is the camera plugged in? `v4l2-ctl --list-devices`)",
        device.display()
    )]
    Open {
        /// The device node.
        device: PathBuf,
        /// Why `open(2)` failed.
        source: io::Error,
    },
    /// The path opened but is not a V4L2 device that can stream video capture.
    #[error("camera {}: not a V4L2 video capture device: {reason}", device.display())]
    NotACaptureDevice {
        /// The device node.
        device: PathBuf,
        /// What is missing (the QUERYCAP failure, or the capability it lacks).
        reason: String,
    },
    /// The driver offers no pixel format vimgeo can convert, or refused the one asked for.
    #[error("camera {}: unsupported pixel format: {reason}", device.display())]
    UnsupportedFormat {
        /// The device node.
        device: PathBuf,
        /// What was asked and what the driver gave.
        reason: String,
    },
    /// A V4L2 call failed on an open device.
    #[error("camera {}: {operation} failed: {source}", device.display())]
    Device {
        /// The device node.
        device: PathBuf,
        /// The operation (`VIDIOC_S_FMT`, `mmap buffers`, `dequeue`, ...).
        operation: String,
        /// The OS error.
        source: io::Error,
    },
    /// The device went away while streaming (ENODEV: unplugged, USB reset).
    #[error(
        "camera {}: disconnected while streaming: {source} (unplugged? check the cable and `dmesg`)",
        device.display()
    )]
    Disconnected {
        /// The device node.
        device: PathBuf,
        /// The OS error.
        source: io::Error,
    },
    /// No frame arrived within the timeout; the source is still usable.
    #[error("{source_name}: no frame within {} ms (camera stalled?)", waited.as_millis())]
    Timeout {
        /// The source, as [`CameraSource::describe`](super::CameraSource::describe) gives it.
        source_name: String,
        /// The timeout that passed.
        waited: Duration,
    },
    /// One frame could not be decoded or read; the next one may be fine.
    #[error("{source_name}: corrupt frame: {reason}")]
    CorruptFrame {
        /// The source, as `describe` gives it.
        source_name: String,
        /// Which frame (`frame 12: ...`) and what is wrong, naming the file for a replay.
        reason: String,
    },
    /// A replay reached the end of its recording (and does not loop); the caller knows which source.
    #[error("the replay reached the end of its recording")]
    Ended,
    /// A recording's `frames.csv` is malformed.
    #[error("{}, line {line}, column `{column}`: {reason}", file.display())]
    Csv {
        /// The CSV file.
        file: PathBuf,
        /// 1-based line number.
        line: usize,
        /// The column's name.
        column: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A configuration value is out of range.
    #[error("camera configuration: `{field}` {reason}")]
    Config {
        /// The field's name.
        field: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// Reading or writing a recording's file failed.
    #[error("{}: cannot {operation}: {source}", path.display())]
    Io {
        /// The file or folder.
        path: PathBuf,
        /// What was being done (`read`, `create folder`, `write`, ...).
        operation: &'static str,
        /// The OS error.
        source: io::Error,
    },
    /// A recorder refused a frame or a folder.
    #[error("recording {}: {reason}", path.display())]
    Recording {
        /// The recording's folder or file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
}

impl CameraError {
    /// True for errors that concern one frame only (`Timeout`, `CorruptFrame`): ask for the next.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            CameraError::Timeout { .. } | CameraError::CorruptFrame { .. }
        )
    }
}
