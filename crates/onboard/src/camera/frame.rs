//! The frame every camera source delivers, and the one clock its timestamps come from.
//!
//! All timestamps are CLOCK_MONOTONIC microseconds ([`mono_now_us`]); a monotonic time becomes UNIX time
//! through one offset sampled once per process ([`MonoClock::global`]), so every stage that converts
//! agrees, and a wall-clock step (NTP, GNSS time) never reorders frames.

use std::sync::OnceLock;

use image::RgbImage;

/// One camera frame.
#[derive(Debug, Clone, PartialEq)]
pub struct Frame {
    /// Sequence number from the source; increases, gaps mean dropped frames.
    pub seq: u64,
    /// CLOCK_MONOTONIC time of the (middle of the) exposure, µs.
    pub exposure_mono_us: u64,
    /// The same instant as UNIX time, µs.
    pub exposure_unix_us: u64,
    /// The image, 8-bit RGB.
    pub image: RgbImage,
    /// Attitude and height at exposure where the source knows them (replay recordings, the simulated
    /// camera); `None` for live frames, whose attitude comes from the autopilot.
    pub pose: Option<FramePose>,
}

/// The camera's attitude and height at exposure, as recorded with a frame.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FramePose {
    /// Roll, radians.
    pub roll_rad: f64,
    /// Pitch, radians.
    pub pitch_rad: f64,
    /// Yaw (heading from north, clockwise), radians.
    pub yaw_rad: f64,
    /// Height above ground level, metres.
    pub height_agl_m: f64,
}

/// CLOCK_MONOTONIC now, µs. This is the clock of `std::time::Instant` on Linux and of V4L2 buffer
/// timestamps flagged `V4L2_BUF_FLAG_TIMESTAMP_MONOTONIC`.
pub fn mono_now_us() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; CLOCK_MONOTONIC always exists on Linux.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    if rc != 0 {
        // Cannot happen on Linux; 0 is an obviously wrong but non-panicking answer.
        log::error!(
            "clock_gettime(CLOCK_MONOTONIC) failed: {}",
            std::io::Error::last_os_error()
        );
        return 0;
    }
    (ts.tv_sec as u64) * 1_000_000 + (ts.tv_nsec as u64) / 1_000
}

pub use crate::util::unix_now_us;

/// Converts CLOCK_MONOTONIC timestamps to UNIX time with one offset, sampled once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MonoClock {
    /// UNIX µs minus monotonic µs.
    offset_us: i64,
}

impl MonoClock {
    /// Samples the offset now (the wall clock read between two monotonic reads).
    pub fn sample() -> Self {
        let before = mono_now_us();
        let unix = unix_now_us();
        let after = mono_now_us();
        let mono = before + (after - before) / 2;
        MonoClock {
            offset_us: unix as i64 - mono as i64,
        }
    }

    /// A clock with a known offset (UNIX µs minus monotonic µs), for tests and replays.
    pub fn with_offset_us(offset_us: i64) -> Self {
        MonoClock { offset_us }
    }

    /// The process-wide clock, sampled on first use: use this one so every stage converts alike.
    pub fn global() -> &'static MonoClock {
        static CLOCK: OnceLock<MonoClock> = OnceLock::new();
        CLOCK.get_or_init(MonoClock::sample)
    }

    /// UNIX µs minus monotonic µs.
    pub fn offset_us(&self) -> i64 {
        self.offset_us
    }

    /// The UNIX time (µs) of a CLOCK_MONOTONIC timestamp (µs); 0 if it would fall before 1970.
    pub fn to_unix_us(&self, mono_us: u64) -> u64 {
        (mono_us as i64).saturating_add(self.offset_us).max(0) as u64
    }
}

/// Why a frame's pixels cannot be a view of the ground ([`check_content`]).
#[derive(Debug, Clone, Copy, PartialEq, thiserror::Error)]
pub enum ContentError {
    /// (Nearly) one grey level: a covered lens, a dead sensor, a black or white frame.
    #[error(
        "blank frame: grey-level standard deviation {std_dev:.2} (at least {min:.1} expected)"
    )]
    Blank {
        /// The standard deviation found, grey levels.
        std_dev: f64,
        /// The minimum.
        min: f64,
    },
    /// Neighbouring pixels unrelated, as in random bytes: a corrupted buffer, not an image.
    #[error(
        "noise frame: neighbouring pixels correlate {correlation:.2} (at least {min:.2} expected)"
    )]
    Noise {
        /// The correlation of horizontally adjacent grey values found.
        correlation: f64,
        /// The minimum.
        min: f64,
    },
}

impl ContentError {
    /// A short stable name for counting.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Blank { .. } => "blank_frame",
            Self::Noise { .. } => "noise_frame",
        }
    }
}

/// Below this grey-level standard deviation a frame is blank.
pub const MIN_GREY_STD_DEV: f64 = 1.0;
/// Below this correlation of horizontally adjacent grey values a frame is noise. Camera images of the
/// ground correlate far above it (neighbouring pixels see neighbouring ground, and optics blur); random
/// bytes correlate about 0.
pub const MIN_NEIGHBOUR_CORRELATION: f64 = 0.3;

/// Checks that `image` can be a picture of anything: not blank, not noise. Every 4th row is looked at
/// (grey = mean of R, G, B).
pub fn check_content(image: &RgbImage) -> Result<(), ContentError> {
    let (w, h) = (image.width() as usize, image.height() as usize);
    let raw = image.as_raw();
    let grey = |x: usize, y: usize| {
        let i = 3 * (y * w + x);
        (f64::from(raw[i]) + f64::from(raw[i + 1]) + f64::from(raw[i + 2])) / 3.0
    };
    let (mut n, mut sum, mut sum2, mut cross) = (0.0, 0.0, 0.0, 0.0);
    let mut pairs = 0.0;
    for y in (0..h).step_by(4) {
        let mut previous = None;
        for x in 0..w {
            let g = grey(x, y);
            n += 1.0;
            sum += g;
            sum2 += g * g;
            if let Some(p) = previous {
                cross += p * g;
                pairs += 1.0;
            }
            previous = Some(g);
        }
    }
    if n < 2.0 || pairs < 1.0 {
        return Ok(());
    }
    let mean = sum / n;
    let var = (sum2 / n - mean * mean).max(0.0);
    let std_dev = var.sqrt();
    if std_dev < MIN_GREY_STD_DEV {
        return Err(ContentError::Blank {
            std_dev,
            min: MIN_GREY_STD_DEV,
        });
    }
    let correlation = (cross / pairs - mean * mean) / var;
    if correlation < MIN_NEIGHBOUR_CORRELATION {
        return Err(ContentError::Noise {
            correlation,
            min: MIN_NEIGHBOUR_CORRELATION,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn monotonic_clock_matches_instant_and_never_goes_back() {
        let a = mono_now_us();
        let t = std::time::Instant::now();
        std::thread::sleep(std::time::Duration::from_millis(5));
        let b = mono_now_us();
        assert!(b >= a + 5_000, "{a} -> {b}");
        // Same clock as Instant: the monotonic difference covers Instant's elapsed time.
        assert!(b - a + 1_000 >= t.elapsed().as_micros() as u64);
    }

    #[test]
    fn global_clock_converts_now_to_now() {
        let clock = MonoClock::global();
        let unix = clock.to_unix_us(mono_now_us());
        let wall = unix_now_us();
        assert!(unix.abs_diff(wall) < 1_000_000, "{unix} vs {wall}");
        assert_eq!(clock, MonoClock::global(), "sampled once");
    }

    #[test]
    fn blank_and_noise_frames_are_told_from_pictures() {
        use rand::{Rng, SeedableRng};
        let blank = RgbImage::from_pixel(64, 48, image::Rgb([40, 40, 40]));
        assert_eq!(check_content(&blank).unwrap_err().kind(), "blank_frame");
        let mut bytes = vec![0u8; 64 * 48 * 3];
        rand_chacha::ChaCha8Rng::seed_from_u64(1).fill_bytes(&mut bytes);
        let noise = RgbImage::from_raw(64, 48, bytes).unwrap();
        let e = check_content(&noise).unwrap_err();
        assert_eq!(e.kind(), "noise_frame");
        assert!(e.to_string().contains("correlate"), "{e}");
        // A smooth picture (gradients and a blob) with mild pixel noise passes.
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(2);
        let picture = RgbImage::from_fn(64, 48, |x, y| {
            let base = 60.0 + 2.0 * x as f64 + 40.0 * ((y as f64) / 7.0).sin();
            let g = (base + f64::from(rng.next_u32() % 9) - 4.0).clamp(0.0, 255.0) as u8;
            image::Rgb([g, g, g])
        });
        assert_eq!(check_content(&picture), Ok(()));
    }

    #[test]
    fn offset_conversion_saturates_at_epoch() {
        let c = MonoClock::with_offset_us(-10);
        assert_eq!(c.to_unix_us(5), 0);
        assert_eq!(c.to_unix_us(15), 5);
        assert_eq!(MonoClock::with_offset_us(7).to_unix_us(1), 8);
    }
}
