//! Does the reported attitude agree with what the camera sees? A check of each frame against the one before.
//!
//! Rectification trusts the autopilot's attitude: a roll or pitch error of `e` moves the view centre by
//! `height · tan(e)` on the ground (14 m at 30 m height for 25°) and every fix with it. Nothing downstream can
//! tell: a shifted view of real ground matches the map near the wrong place just as well, frame after frame
//! (measured in the sim with the particle filter: it followed such a shift to 19 m off while reporting 8 m).
//! But the camera itself sees whether it turned. Between two consecutive frames the image content moves by
//! what the vehicle flew and what the camera turned; an attitude that jumps without the image moving with it
//! is wrong.
//!
//! [`AttitudeCheck::observe`] finds the shift of the image content between the previous frame and this one
//! (normalised cross-correlation of grey thumbnails, coarse to fine), takes the ground point that the previous
//! frame saw at the pixel now under the image centre (with the previous pose), and compares it with the
//! ground point this frame's pose puts under the centre. The two differ by the vehicle's own displacement,
//! at most `max_speed_mps · dt`; a difference beyond that plus [`TOLERANCE_M`] is a jump of the attitude. Jumps
//! add up into a *bias* (the pose's error since the last consistent state); while the bias is longer than
//! [`TOLERANCE_M`], every frame is refused ([`AttitudeVerdict::Inconsistent`]). The error going away (the
//! jump back) brings the bias back near zero and frames through again.
//!
//! Limits: a heading (yaw) error rotates the image instead of shifting it and is not seen here (the
//! correlation finds no clear shift: [`AttitudeVerdict::NoReference`]); a slowly growing error below
//! [`TOLERANCE_M`] a frame passes; a frame without a clear correlation peak (featureless ground, a gap of more
//! than [`MAX_GAP_S`]) leaves the bias as it is; so does a jump back that falls in such a frame, and the
//! frames then stay refused (no fixes: the safe side) until the process restarts.

use image::RgbImage;
use nalgebra::{Point2, Vector3};

use super::camera::{CameraModel, Pose};

/// Thumbnails are this many pixels wide (the coarse level half that).
const THUMB_WIDTH: usize = 96;
/// The correlation peak must reach this to count as a measured shift.
const MIN_PEAK_NCC: f64 = 0.6;
/// Shifts leaving less than this fraction of the thumbnail overlapping are not tried.
const MIN_OVERLAP: f64 = 0.4;

/// A ground disagreement beyond the vehicle's possible displacement plus this is a jump; a bias longer than
/// this refuses frames, metres.
pub const TOLERANCE_M: f64 = 4.0;
/// Frames further apart than this are not compared, s.
pub const MAX_GAP_S: f64 = 0.6;

/// What the check says of a frame.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum AttitudeVerdict {
    /// The attitude moved as the image did (or the accumulated bias is within the tolerance).
    Consistent,
    /// Nothing to compare with (first frame, a gap, no clear correlation peak): the bias stays as it was,
    /// and the frame passes only if that bias is within the tolerance.
    NoReference,
    /// The pose disagrees with the image: the frame must not be used.
    Inconsistent {
        /// This frame's disagreement beyond the vehicle's possible displacement, metres (0 when only the
        /// accumulated bias refuses it).
        jump_m: f64,
        /// The accumulated pose error on the ground, metres.
        bias_m: f64,
    },
}

impl AttitudeVerdict {
    /// Whether the frame may be used.
    pub fn is_usable(&self) -> bool {
        !matches!(self, Self::Inconsistent { .. })
    }
}

/// A grey thumbnail and the factor from its pixels to the frame's.
struct Thumb {
    grey: Vec<f32>,
    w: usize,
    h: usize,
    scale: f64,
}

impl Thumb {
    fn of(image: &RgbImage, width: usize) -> Thumb {
        let (iw, ih) = (image.width() as usize, image.height() as usize);
        let step = (iw / width).max(1);
        let (w, h) = (iw / step, ih / step);
        let raw = image.as_raw();
        let mut grey = vec![0.0f32; w * h];
        for ty in 0..h {
            for tx in 0..w {
                let mut sum = 0u32;
                for y in ty * step..(ty + 1) * step {
                    let row = 3 * y * iw;
                    for x in tx * step..(tx + 1) * step {
                        let i = row + 3 * x;
                        sum += u32::from(raw[i]) + u32::from(raw[i + 1]) + u32::from(raw[i + 2]);
                    }
                }
                grey[ty * w + tx] = sum as f32 / (3 * step * step) as f32;
            }
        }
        Thumb {
            grey,
            w,
            h,
            scale: step as f64,
        }
    }

    /// Half the size (2 x 2 means).
    fn half(&self) -> Thumb {
        let (w, h) = (self.w / 2, self.h / 2);
        let mut grey = vec![0.0f32; w * h];
        for y in 0..h {
            for x in 0..w {
                let at = |xx: usize, yy: usize| self.grey[yy * self.w + xx];
                grey[y * w + x] = 0.25
                    * (at(2 * x, 2 * y)
                        + at(2 * x + 1, 2 * y)
                        + at(2 * x, 2 * y + 1)
                        + at(2 * x + 1, 2 * y + 1));
            }
        }
        Thumb {
            grey,
            w,
            h,
            scale: self.scale * 2.0,
        }
    }
}

/// Normalised cross-correlation of `a` and `b` where `b`'s content is `a`'s moved by (dx, dy) pixels:
/// `b(x + dx, y + dy)` against `a(x, y)` over the overlap; `None` when the overlap is too small or flat.
fn ncc_at(a: &Thumb, b: &Thumb, dx: i64, dy: i64) -> Option<f64> {
    let (w, h) = (a.w as i64, a.h as i64);
    let (x0, x1) = (0.max(-dx), w.min(w - dx));
    let (y0, y1) = (0.max(-dy), h.min(h - dy));
    if x1 <= x0 || y1 <= y0 {
        return None;
    }
    let n = ((x1 - x0) * (y1 - y0)) as f64;
    if n < MIN_OVERLAP * (w * h) as f64 {
        return None;
    }
    let (mut sa, mut sb, mut saa, mut sbb, mut sab) = (0.0, 0.0, 0.0, 0.0, 0.0);
    for y in y0..y1 {
        let ra = (y * w) as usize;
        let rb = ((y + dy) * w) as usize;
        for x in x0..x1 {
            let va = f64::from(a.grey[ra + x as usize]);
            let vb = f64::from(b.grey[rb + (x + dx) as usize]);
            sa += va;
            sb += vb;
            saa += va * va;
            sbb += vb * vb;
            sab += va * vb;
        }
    }
    let cov = sab / n - (sa / n) * (sb / n);
    let va = saa / n - (sa / n) * (sa / n);
    let vb = sbb / n - (sb / n) * (sb / n);
    if va <= 1e-6 || vb <= 1e-6 {
        return None;
    }
    Some(cov / (va * vb).sqrt())
}

/// The best shift within `reach` pixels of `around`, and its correlation.
fn best_shift(a: &Thumb, b: &Thumb, around: (i64, i64), reach: i64) -> Option<((i64, i64), f64)> {
    let mut best: Option<((i64, i64), f64)> = None;
    for dy in around.1 - reach..=around.1 + reach {
        for dx in around.0 - reach..=around.0 + reach {
            if let Some(c) = ncc_at(a, b, dx, dy) {
                if best.is_none_or(|(_, bc)| c > bc) {
                    best = Some(((dx, dy), c));
                }
            }
        }
    }
    best
}

/// The content shift from `a` to `b` in full-frame pixels, coarse to fine, if the correlation is clear.
fn content_shift(a: &Thumb, b: &Thumb) -> Option<[f64; 2]> {
    let (ca, cb) = (a.half(), b.half());
    // The coarse level searches up to 45 % of its width each way.
    let reach = (0.45 * ca.w as f64) as i64;
    let ((cx, cy), _) = best_shift(&ca, &cb, (0, 0), reach)?;
    let ((fx, fy), peak) = best_shift(a, b, (2 * cx, 2 * cy), 2)?;
    (peak >= MIN_PEAK_NCC).then_some([fx as f64 * a.scale, fy as f64 * a.scale])
}

/// The previous frame, as the check keeps it.
struct Previous {
    t_us: u64,
    thumb: Thumb,
    pose: Pose,
}

/// The check's state: the previous frame and the accumulated bias. See the module docs.
pub struct AttitudeCheck {
    max_speed_mps: f64,
    previous: Option<Previous>,
    bias_ne_m: [f64; 2],
}

impl AttitudeCheck {
    /// A check with no previous frame and no bias, for a vehicle flying at most `max_speed_mps` (its
    /// displacement between two frames is not an attitude error: the localizer's `max_speed_mps`).
    pub fn new(max_speed_mps: f64) -> Self {
        Self {
            max_speed_mps,
            previous: None,
            bias_ne_m: [0.0, 0.0],
        }
    }

    /// Whether frames are being refused now: the accumulated bias is longer than [`TOLERANCE_M`].
    pub fn is_refusing(&self) -> bool {
        self.bias_ne_m[0].hypot(self.bias_ne_m[1]) > TOLERANCE_M
    }

    /// The accumulated bias on the ground, metres north/east.
    pub fn bias_ne_m(&self) -> [f64; 2] {
        self.bias_ne_m
    }

    /// Judges a frame (its time, image and reported pose) against the previous one, and keeps it.
    pub fn observe(
        &mut self,
        t_us: u64,
        image: &RgbImage,
        pose: &Pose,
        camera: &CameraModel,
    ) -> AttitudeVerdict {
        let thumb = Thumb::of(image, THUMB_WIDTH);
        let jump = self.previous.as_ref().and_then(|p| {
            let dt = (t_us as f64 - p.t_us as f64) * 1e-6;
            if !(dt > 0.0 && dt <= MAX_GAP_S) {
                return None;
            }
            let shift = content_shift(&p.thumb, &thumb)?;
            let centre = camera.principal_point();
            // The content now under the centre was at `centre - shift` in the previous frame.
            let before = ground_ne(
                camera,
                &p.pose,
                &Point2::new(centre.x - shift[0], centre.y - shift[1]),
            )?;
            let now = ground_ne(camera, pose, &centre)?;
            let d = [now[0] - before[0], now[1] - before[1]];
            let allowed = self.max_speed_mps * dt + TOLERANCE_M;
            Some((d, d[0].hypot(d[1]) - allowed))
        });
        self.previous = Some(Previous {
            t_us,
            thumb,
            pose: *pose,
        });
        let mut jump_m = 0.0;
        let measured = jump.is_some();
        if let Some((d, excess)) = jump {
            if excess > 0.0 {
                self.bias_ne_m[0] += d[0];
                self.bias_ne_m[1] += d[1];
                jump_m = excess;
            }
        }
        if self.is_refusing() {
            AttitudeVerdict::Inconsistent {
                jump_m,
                bias_m: self.bias_ne_m[0].hypot(self.bias_ne_m[1]),
            }
        } else if measured {
            AttitudeVerdict::Consistent
        } else {
            AttitudeVerdict::NoReference
        }
    }
}

/// North/east metres from the vehicle of the ground point seen at pixel `px` from `pose`.
fn ground_ne(camera: &CameraModel, pose: &Pose, px: &Point2<f64>) -> Option<[f64; 2]> {
    let ray = camera.unproject(px)?;
    let g: Vector3<f64> = pose.view(camera).ground_point(&ray)?;
    Some([g.x, g.y])
}
