//! Live capture from a V4L2 device (USB UVC cameras, CSI cameras behind a V4L2 driver).
//!
//! [`V4l2Source::open`] checks the node is a streaming video-capture device, negotiates the pixel format
//! and size (logging what the driver gave), asks for the frame rate and maps 2-4 buffers. Frames are
//! MJPEG (decoded with `image`'s JPEG decoder) or YUYV 4:2:2 (converted by [`yuyv_to_rgb`], BT.601).
//!
//! Timestamps: the driver's buffer timestamp when the buffer is flagged CLOCK_MONOTONIC (UVC and most
//! drivers), else the dequeue time; the log says which once. Drivers stamp either the start of exposure
//! or the end of readout (logged too); [`V4l2Config::timestamp_offset_us`] moves that to the middle of
//! the exposure, a per-camera calibration value.
//!
//! Building: the `v4l` crate generates its bindings with bindgen at build time, which needs libclang
//! (Debian: `libclang-dev`) and the kernel's UAPI headers (`linux-libc-dev`; for an aarch64 cross build,
//! `linux-libc-dev-arm64-cross` and `BINDGEN_EXTRA_CLANG_ARGS="--sysroot=/usr/aarch64-linux-gnu"`).

use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use image::RgbImage;
use v4l::buffer::{Flags, Type};
use v4l::io::traits::CaptureStream;
use v4l::video::Capture;
use v4l::{Device, FourCC};

use super::error::CameraError;
use super::frame::{mono_now_us, Frame, MonoClock};
use super::CameraSource;

/// The pixel format to ask the camera for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PixelFormat {
    /// Motion JPEG: the usual choice over USB at high resolutions (less bandwidth, costs a decode).
    Mjpeg,
    /// YUYV 4:2:2, uncompressed.
    Yuyv,
    /// MJPEG if the device offers it, else YUYV.
    #[default]
    Auto,
}

/// Where and how to capture.
#[derive(Debug, Clone, PartialEq)]
pub struct V4l2Config {
    /// The device node, e.g. `/dev/video0`.
    pub device: PathBuf,
    /// Requested width, pixels (the driver may pick the nearest size it supports; logged).
    pub width: u32,
    /// Requested height, pixels.
    pub height: u32,
    /// Requested frame rate, frames per second (drivers that cannot set it are logged, not refused).
    pub fps: u32,
    /// Requested pixel format.
    pub format: PixelFormat,
    /// Number of mapped buffers, 2 to 4: fewer means fresher frames, more tolerates a slow reader.
    pub buffers: u32,
    /// Added to the buffer timestamp to reach the middle of the exposure, µs (negative for drivers that
    /// stamp the end of readout).
    pub timestamp_offset_us: i64,
}

impl V4l2Config {
    /// A configuration with 3 buffers, automatic format and no timestamp offset.
    pub fn new(device: impl Into<PathBuf>, width: u32, height: u32, fps: u32) -> Self {
        V4l2Config {
            device: device.into(),
            width,
            height,
            fps,
            format: PixelFormat::Auto,
            buffers: 3,
            timestamp_offset_us: 0,
        }
    }

    fn validate(&self) -> Result<(), CameraError> {
        let positive = |field, v: u32| {
            if v == 0 {
                Err(CameraError::Config {
                    field,
                    reason: "must be positive".into(),
                })
            } else {
                Ok(())
            }
        };
        positive("width", self.width)?;
        positive("height", self.height)?;
        positive("fps", self.fps)?;
        if !(2..=4).contains(&self.buffers) {
            return Err(CameraError::Config {
                field: "buffers",
                reason: format!("is {}, must be 2 to 4", self.buffers),
            });
        }
        Ok(())
    }
}

const MJPG: FourCC = FourCC { repr: *b"MJPG" };
const YUYV: FourCC = FourCC { repr: *b"YUYV" };

/// The format the driver agreed to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Wire {
    Mjpeg,
    Yuyv { stride: u32 },
}

/// A live V4L2 camera. Frames have no pose: the pipeline takes attitude from the autopilot.
pub struct V4l2Source {
    device: PathBuf,
    description: String,
    // Declared before `_dev` so the stream (STREAMOFF, unmap) is dropped first.
    stream: v4l::io::mmap::Stream<'static>,
    _dev: Device,
    wire: Wire,
    width: u32,
    height: u32,
    timestamp_offset_us: i64,
    clock: &'static MonoClock,
    /// A dequeue timed out inside `v4l`'s `next()`, which has then already re-queued the buffer it held:
    /// the next call must dequeue first (see `next_frame`).
    resync: bool,
    started: bool,
    seq: u64,
    logged_timestamps: bool,
}

impl std::fmt::Debug for V4l2Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("V4l2Source")
            .field("description", &self.description)
            .field("seq", &self.seq)
            .finish_non_exhaustive()
    }
}

impl V4l2Source {
    /// Opens and configures the device; streaming starts with the first [`CameraSource::next_frame`].
    pub fn open(config: &V4l2Config) -> Result<Self, CameraError> {
        config.validate()?;
        let device = config.device.clone();
        let dev = Device::with_path(&device).map_err(|source| CameraError::Open {
            device: device.clone(),
            source,
        })?;
        let caps = dev
            .query_caps()
            .map_err(|e| CameraError::NotACaptureDevice {
                device: device.clone(),
                reason: format!("VIDIOC_QUERYCAP failed: {e}"),
            })?;
        let flags = caps.capabilities;
        let has = |f: v4l::capability::Flags| flags.contains(f);
        if !has(v4l::capability::Flags::VIDEO_CAPTURE) {
            return Err(CameraError::NotACaptureDevice {
                device,
                reason: format!(
                    "{} ({}) has no single-planar video capture (capabilities: {flags})",
                    caps.card, caps.driver
                ),
            });
        }
        if !has(v4l::capability::Flags::STREAMING) {
            return Err(CameraError::NotACaptureDevice {
                device,
                reason: format!(
                    "{} ({}) cannot stream (no V4L2_CAP_STREAMING)",
                    caps.card, caps.driver
                ),
            });
        }
        log::info!(
            "camera {}: {} (driver {}, bus {})",
            device.display(),
            caps.card,
            caps.driver,
            caps.bus
        );

        let fourcc = choose_fourcc(&dev, &device, config.format)?;
        let wanted = v4l::Format::new(config.width, config.height, fourcc);
        let got = dev
            .set_format(&wanted)
            .map_err(|source| CameraError::Device {
                device: device.clone(),
                operation: if source.raw_os_error() == Some(libc::EBUSY) {
                    "VIDIOC_S_FMT (is another process using the camera? `fuser -v` on the node)"
                        .into()
                } else {
                    "VIDIOC_S_FMT".into()
                },
                source,
            })?;
        log::info!(
            "camera {}: asked {}x{} {}, driver gave {}x{} {} (stride {} B, {} B/frame)",
            device.display(),
            config.width,
            config.height,
            fourcc,
            got.width,
            got.height,
            got.fourcc,
            got.stride,
            got.size
        );
        let wire = if got.fourcc == MJPG {
            Wire::Mjpeg
        } else if got.fourcc == YUYV {
            Wire::Yuyv { stride: got.stride }
        } else {
            return Err(CameraError::UnsupportedFormat {
                device,
                reason: format!("asked {fourcc}, the driver gave {}", got.fourcc),
            });
        };
        if got.width == 0 || got.height == 0 {
            return Err(CameraError::UnsupportedFormat {
                device,
                reason: format!("the driver gave an empty size {}x{}", got.width, got.height),
            });
        }

        match dev.set_params(&v4l::video::capture::Parameters::with_fps(config.fps)) {
            Ok(p) => log::info!(
                "camera {}: asked {} fps, frame interval is {}/{} s",
                device.display(),
                config.fps,
                p.interval.numerator,
                p.interval.denominator
            ),
            Err(e) => log::warn!(
                "camera {}: cannot set {} fps ({e}); using the driver's rate",
                device.display(),
                config.fps
            ),
        }

        let stream = v4l::io::mmap::Stream::with_buffers(&dev, Type::VideoCapture, config.buffers)
            .map_err(|source| CameraError::Device {
                device: device.clone(),
                operation: format!("mapping {} buffers", config.buffers),
                source,
            })?;

        let description = format!(
            "camera {} ({} {}x{})",
            device.display(),
            got.fourcc,
            got.width,
            got.height
        );
        Ok(V4l2Source {
            device,
            description,
            stream,
            _dev: dev,
            wire,
            width: got.width,
            height: got.height,
            timestamp_offset_us: config.timestamp_offset_us,
            clock: MonoClock::global(),
            resync: false,
            started: false,
            seq: 0,
            logged_timestamps: false,
        })
    }

    fn stream_error(&self, operation: &str, e: io::Error, timeout: Duration) -> CameraError {
        if e.kind() == io::ErrorKind::TimedOut {
            CameraError::Timeout {
                source_name: self.description.clone(),
                waited: timeout,
            }
        } else if e.raw_os_error() == Some(libc::ENODEV) {
            CameraError::Disconnected {
                device: self.device.clone(),
                source: e,
            }
        } else {
            CameraError::Device {
                device: self.device.clone(),
                operation: operation.into(),
                source: e,
            }
        }
    }

    fn frame_timestamp(&mut self, flags: Flags, ts: v4l::Timestamp, dequeued_us: u64) -> u64 {
        let monotonic = flags & Flags::TIMESTAMP_MASK == Flags::TIMESTAMP_MONOTONIC;
        // time_t is i32 on 32-bit targets, i64 elsewhere.
        #[allow(clippy::unnecessary_cast)]
        let driver_us = (ts.sec as i64)
            .saturating_mul(1_000_000)
            .saturating_add(ts.usec as i64);
        let (base, what) = if monotonic && driver_us > 0 {
            let src = if flags & Flags::TSTAMP_SRC_MASK == Flags::TSTAMP_SRC_SOE {
                "start of exposure"
            } else {
                "end of frame"
            };
            (
                driver_us,
                format!("driver buffer timestamps (CLOCK_MONOTONIC, {src})"),
            )
        } else {
            (
                dequeued_us as i64,
                "dequeue time (the driver's buffer timestamps are not CLOCK_MONOTONIC)".to_string(),
            )
        };
        if !self.logged_timestamps {
            self.logged_timestamps = true;
            log::info!(
                "{}: timestamps from the {what}, offset {} µs",
                self.description,
                self.timestamp_offset_us
            );
        }
        base.saturating_add(self.timestamp_offset_us).max(0) as u64
    }
}

/// Picks the FourCC to ask for: the configured one, or for `Auto` MJPEG if offered, else YUYV.
fn choose_fourcc(dev: &Device, device: &Path, format: PixelFormat) -> Result<FourCC, CameraError> {
    match format {
        PixelFormat::Mjpeg => return Ok(MJPG),
        PixelFormat::Yuyv => return Ok(YUYV),
        PixelFormat::Auto => {}
    }
    let offered = dev.enum_formats().map_err(|source| CameraError::Device {
        device: device.to_path_buf(),
        operation: "VIDIOC_ENUM_FMT".into(),
        source,
    })?;
    let fourccs: Vec<FourCC> = offered.iter().map(|d| d.fourcc).collect();
    log::info!(
        "camera {}: offers {}",
        device.display(),
        fourccs
            .iter()
            .map(|f| f.to_string())
            .collect::<Vec<_>>()
            .join(", ")
    );
    [MJPG, YUYV]
        .into_iter()
        .find(|f| fourccs.contains(f))
        .ok_or_else(|| CameraError::UnsupportedFormat {
            device: device.to_path_buf(),
            reason: format!(
                "the device offers {:?}, vimgeo converts only MJPG and YUYV",
                fourccs.iter().map(|f| f.to_string()).collect::<Vec<_>>()
            ),
        })
}

impl CameraSource for V4l2Source {
    fn describe(&self) -> String {
        self.description.clone()
    }

    fn next_frame(&mut self, timeout: Duration) -> Result<Frame, CameraError> {
        let deadline = Instant::now() + timeout;
        let remaining = || deadline.saturating_duration_since(Instant::now());
        // `Stream::set_timeout` panics past i32::MAX ms; poll(2) takes milliseconds.
        let clamp = |d: Duration| d.min(Duration::from_secs(3600));

        if self.resync {
            // `next()` re-queues the buffer it last handed out before waiting; after a timeout that
            // buffer is already queued, so dequeue one first (its content is dropped: one lost frame).
            self.stream.set_timeout(clamp(remaining()));
            CaptureStream::dequeue(&mut self.stream)
                .map_err(|e| self.stream_error("dequeue", e, timeout))?;
            self.resync = false;
        }
        self.stream.set_timeout(clamp(remaining()));
        let result = CaptureStream::next(&mut self.stream);
        let dequeued_us = mono_now_us();
        self.started = true;
        let (bytes, meta) = match result {
            Ok((bytes, meta)) => (bytes, *meta),
            Err(e) => {
                if e.kind() == io::ErrorKind::TimedOut {
                    self.resync = true;
                }
                return Err(self.stream_error("capture", e, timeout));
            }
        };
        self.seq += 1;
        let seq = self.seq;
        let used = (meta.bytesused as usize).min(bytes.len());
        let decoded = if meta.flags.contains(Flags::ERROR) {
            Err("the driver flagged the buffer as corrupt (V4L2_BUF_FLAG_ERROR)".to_string())
        } else if used == 0 {
            Err("empty buffer".to_string())
        } else {
            match self.wire {
                Wire::Mjpeg => decode_mjpeg(&bytes[..used]),
                Wire::Yuyv { stride } => {
                    yuyv_to_rgb(&bytes[..used], self.width, self.height, stride as usize)
                }
            }
        };
        let image = decoded.map_err(|reason| CameraError::CorruptFrame {
            source_name: self.description.clone(),
            reason: format!("frame {seq}: {reason}"),
        })?;
        let exposure_mono_us = self.frame_timestamp(meta.flags, meta.timestamp, dequeued_us);
        Ok(Frame {
            seq,
            exposure_mono_us,
            exposure_unix_us: self.clock.to_unix_us(exposure_mono_us),
            image,
            pose: None,
        })
    }
}

/// Decodes one MJPEG frame to RGB.
fn decode_mjpeg(jpeg: &[u8]) -> Result<RgbImage, String> {
    image::load_from_memory_with_format(jpeg, image::ImageFormat::Jpeg)
        .map(|img| img.to_rgb8())
        .map_err(|e| format!("MJPEG decode failed: {e}"))
}

/// Converts YUYV 4:2:2 (Y0 U Y1 V per two pixels, BT.601 limited range) to RGB with integer arithmetic.
///
/// `stride` is the driver's bytes per line (at least `2 * width`). Errors name what is wrong with the
/// buffer (odd width, too short).
pub fn yuyv_to_rgb(
    data: &[u8],
    width: u32,
    height: u32,
    stride: usize,
) -> Result<RgbImage, String> {
    let (w, h) = (width as usize, height as usize);
    if w == 0 || h == 0 || w % 2 != 0 {
        return Err(format!(
            "YUYV needs a positive even width and a positive height, got {width}x{height}"
        ));
    }
    let row_bytes = 2 * w;
    let stride = if stride == 0 { row_bytes } else { stride };
    if stride < row_bytes {
        return Err(format!(
            "YUYV stride {stride} B is shorter than a {width}-pixel row ({row_bytes} B)"
        ));
    }
    let needed = stride * (h - 1) + row_bytes;
    if data.len() < needed {
        return Err(format!(
            "YUYV buffer has {} B, a {width}x{height} frame needs {needed} B",
            data.len()
        ));
    }
    let mut out = vec![0u8; w * h * 3];
    for (y, out_row) in out.chunks_exact_mut(w * 3).enumerate() {
        let row = &data[y * stride..y * stride + row_bytes];
        for (quad, px) in row.chunks_exact(4).zip(out_row.chunks_exact_mut(6)) {
            let (u, v) = (quad[1], quad[3]);
            px[..3].copy_from_slice(&yuv_to_rgb(quad[0], u, v));
            px[3..].copy_from_slice(&yuv_to_rgb(quad[2], u, v));
        }
    }
    RgbImage::from_raw(width, height, out).ok_or_else(|| "YUYV: internal size mismatch".into())
}

/// One BT.601 limited-range YCbCr pixel to RGB (the fixed-point form of ITU-R BT.601, 8 fraction bits).
fn yuv_to_rgb(y: u8, u: u8, v: u8) -> [u8; 3] {
    let c = 298 * (i32::from(y) - 16);
    let d = i32::from(u) - 128;
    let e = i32::from(v) - 128;
    let clip = |x: i32| ((x + 128) >> 8).clamp(0, 255) as u8;
    [
        clip(c + 409 * e),
        clip(c - 100 * d - 208 * e),
        clip(c + 516 * d),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    /// BT.601 limited-range YCbCr of the reference colours (ITU-R BT.601 colour bars).
    const BLACK: (u8, u8, u8) = (16, 128, 128);
    const WHITE: (u8, u8, u8) = (235, 128, 128);
    const RED: (u8, u8, u8) = (81, 90, 240);
    const GREEN: (u8, u8, u8) = (145, 54, 34);
    const BLUE: (u8, u8, u8) = (41, 240, 110);

    fn close(a: [u8; 3], b: [u8; 3]) -> bool {
        a.iter().zip(b).all(|(x, y)| x.abs_diff(y) <= 2)
    }

    #[test]
    fn known_colours_convert() {
        for ((y, u, v), rgb) in [
            (BLACK, [0, 0, 0]),
            (WHITE, [255, 255, 255]),
            (RED, [255, 0, 0]),
            (GREEN, [0, 255, 0]),
            (BLUE, [0, 0, 255]),
        ] {
            let got = yuv_to_rgb(y, u, v);
            assert!(
                close(got, rgb),
                "YUV ({y},{u},{v}) gave {got:?}, expected {rgb:?}"
            );
        }
        // Out-of-range codes clip instead of wrapping.
        assert_eq!(yuv_to_rgb(255, 255, 255)[0], 255);
        assert_eq!(yuv_to_rgb(0, 0, 0)[0], 0);
    }

    #[test]
    fn frame_layout_pairs_and_stride() {
        // 2x2 image: row 0 = black, white; row 1 = red, red (shared chroma). Stride 6 B (2 padding).
        let data = [
            16, 128, 235, 128, 0xAA, 0xAA, // row 0 + padding
            81, 90, 81, 240, 0xAA, 0xAA, // row 1 + padding
        ];
        let img = yuyv_to_rgb(&data, 2, 2, 6).unwrap();
        assert_eq!(img.dimensions(), (2, 2));
        assert!(close(img.get_pixel(0, 0).0, [0, 0, 0]));
        assert!(close(img.get_pixel(1, 0).0, [255, 255, 255]));
        assert!(close(img.get_pixel(0, 1).0, [255, 0, 0]));
        assert!(close(img.get_pixel(1, 1).0, [255, 0, 0]));
        // The last row needs no padding after it.
        assert!(yuyv_to_rgb(&data[..10], 2, 2, 6).is_ok());
    }

    #[test]
    fn bad_buffers_are_errors_not_panics() {
        let err = yuyv_to_rgb(&[0; 7], 2, 2, 4).unwrap_err();
        assert!(err.contains("needs 8 B"), "{err}");
        assert!(yuyv_to_rgb(&[0; 12], 3, 2, 6)
            .unwrap_err()
            .contains("even width"));
        assert!(yuyv_to_rgb(&[0; 16], 4, 2, 4)
            .unwrap_err()
            .contains("stride"));
        assert!(yuyv_to_rgb(&[], 0, 0, 0).is_err());
    }

    #[test]
    fn corrupt_mjpeg_is_an_error() {
        let err = decode_mjpeg(&[0xFF, 0xD8, 0xFF, 0x00, 1, 2, 3]).unwrap_err();
        assert!(err.contains("MJPEG"), "{err}");
    }

    #[test]
    fn valid_mjpeg_decodes() {
        let img = RgbImage::from_pixel(16, 8, image::Rgb([200, 30, 40]));
        let mut jpeg = Vec::new();
        image::codecs::jpeg::JpegEncoder::new_with_quality(&mut jpeg, 95)
            .encode_image(&img)
            .unwrap();
        let back = decode_mjpeg(&jpeg).unwrap();
        assert_eq!(back.dimensions(), (16, 8));
        assert!(back.get_pixel(3, 3).0[0] > 180);
    }

    #[test]
    fn config_is_validated() {
        let mut c = V4l2Config::new("/dev/video0", 640, 480, 30);
        c.buffers = 8;
        let err = V4l2Source::open(&c).unwrap_err().to_string();
        assert!(err.contains("buffers") && err.contains("2 to 4"), "{err}");
        c.buffers = 2;
        c.fps = 0;
        assert!(V4l2Source::open(&c)
            .unwrap_err()
            .to_string()
            .contains("fps"));
    }

    #[test]
    fn missing_device_is_named_with_a_hint() {
        let c = V4l2Config::new("/dev/video-vimgeo-missing", 640, 480, 30);
        let err = V4l2Source::open(&c).unwrap_err();
        assert!(matches!(err, CameraError::Open { .. }), "{err:?}");
        let text = err.to_string();
        assert!(text.contains("/dev/video-vimgeo-missing"), "{text}");
        assert!(text.contains("No such file or directory"), "{text}");
        assert!(text.contains("v4l2-ctl --list-devices"), "{text}");
    }

    #[test]
    fn a_non_v4l2_node_is_refused() {
        let c = V4l2Config::new("/dev/null", 640, 480, 30);
        let err = V4l2Source::open(&c).unwrap_err();
        assert!(
            matches!(err, CameraError::NotACaptureDevice { .. }),
            "{err:?}"
        );
        let text = err.to_string();
        assert!(
            text.contains("/dev/null") && text.contains("not a V4L2"),
            "{text}"
        );
    }
}
