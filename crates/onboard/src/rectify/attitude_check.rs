//! Does the reported attitude (roll, pitch, heading) agree with what the camera sees? A check of each frame
//! against the one before.
//!
//! Rectification trusts the autopilot's attitude: a roll or pitch error of `e` moves the view centre by
//! `height · tan(e)` on the ground (14 m at 30 m height for 25°) and every fix with it. Nothing downstream can
//! tell: a shifted view of real ground matches the map near the wrong place just as well, frame after frame,
//! and the particle filter follows it while reporting a small accuracy (sim/README.md, "Tests").
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
//! A heading (yaw) error turns the view about the nadir instead: the ground under the centre stays, the
//! ground off-centre moves. So the check also follows five patches (the centre and four around it) from the
//! previous frame to this one, maps each through its own frame's pose, and fits the rotation that takes the
//! ground points seen before onto those seen now (least squares, once both sets are centred, so the
//! vehicle's displacement drops out). With right poses it is zero, whatever the vehicle turned; a heading
//! that jumped without the image turning shows as that jump. A turn beyond [`HEADING_TOLERANCE_DEG`] starts a
//! heading error; while one is held, every frame's turn adds to it, and frames are refused until it is back
//! within [`HEADING_RELEASE_DEG`] (the jump back). How well the fit follows a jump, and what the check does in
//! the simulation with and without heading faults: sim/README.md, "Tests".
//!
//! Limits: a slowly growing error below [`TOLERANCE_M`] (or [`HEADING_TOLERANCE_DEG`]) a frame passes; an
//! error already present when the check starts is not seen; a frame without a clear correlation peak
//! (featureless ground, a gap of more than [`MAX_GAP_S`]) leaves the bias as it is; so does a jump back that
//! falls in such a frame, and the frames then stay refused (no fixes: the safe side) until the process
//! restarts.

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
/// A heading that turned this much more (or less) than the image did is a jump of the heading, degrees.
pub const HEADING_TOLERANCE_DEG: f64 = 8.0;
/// An accumulated heading error back within this is gone (the jump back), degrees.
pub const HEADING_RELEASE_DEG: f64 = 4.0;
/// Patches for the image's turn: their side as a fraction of the thumbnail's, their centres this fraction of
/// its size from its centre, searched this many thumbnail pixels around the whole image's shift.
const PATCH_SIZE: f64 = 0.24;
const PATCH_OFFSET: f64 = 0.25;
const PATCH_REACH: i64 = 4;

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
        /// The accumulated heading error, degrees (0 when the heading agrees).
        heading_deg: f64,
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
    if x1 <= x0 || y1 <= y0 || (((x1 - x0) * (y1 - y0)) as f64) < MIN_OVERLAP * (w * h) as f64 {
        return None;
    }
    ncc_window(a, b, [x0, x1, y0, y1], dx, dy)
}

/// Normalised cross-correlation of `a`'s window `[x0, x1, y0, y1]` (end exclusive) with `b`'s moved by
/// (dx, dy); `None` when the moved window leaves `b` or either is flat.
fn ncc_window(a: &Thumb, b: &Thumb, [x0, x1, y0, y1]: [i64; 4], dx: i64, dy: i64) -> Option<f64> {
    let (w, h) = (a.w as i64, a.h as i64);
    let inside = |x: i64, y: i64| x >= 0 && y >= 0 && x <= w && y <= h;
    if x1 <= x0 || y1 <= y0 || !inside(x0, y0) || !inside(x1, y1) {
        return None;
    }
    if !inside(x0 + dx, y0 + dy) || !inside(x1 + dx, y1 + dy) {
        return None;
    }
    let n = ((x1 - x0) * (y1 - y0)) as f64;
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
    best_of(around, reach, |dx, dy| ncc_at(a, b, dx, dy))
}

/// The shift within `reach` of `around` where `score` is highest, and that score.
fn best_of(
    around: (i64, i64),
    reach: i64,
    score: impl Fn(i64, i64) -> Option<f64>,
) -> Option<((i64, i64), f64)> {
    let mut best: Option<((i64, i64), f64)> = None;
    for dy in around.1 - reach..=around.1 + reach {
        for dx in around.0 - reach..=around.0 + reach {
            if let Some(c) = score(dx, dy) {
                if best.is_none_or(|(_, bc)| c > bc) {
                    best = Some(((dx, dy), c));
                }
            }
        }
    }
    best
}

/// The content shift from `a` to `b` in `a`'s pixels, coarse to fine, if the correlation is clear.
fn content_shift(a: &Thumb, b: &Thumb) -> Option<(i64, i64)> {
    let (ca, cb) = (a.half(), b.half());
    // The coarse level searches up to 45 % of its width each way.
    let reach = (0.45 * ca.w as f64) as i64;
    let ((cx, cy), _) = best_shift(&ca, &cb, (0, 0), reach)?;
    let ((fx, fy), peak) = best_shift(a, b, (2 * cx, 2 * cy), 2)?;
    (peak >= MIN_PEAK_NCC).then_some((fx, fy))
}

/// Where each of five patches of `a` (the centre and four around it) went in `b`: pairs of (centre in `a`,
/// centre in `b`), in `a`'s pixels with sub-pixel precision, for the patches whose correlation is clear.
/// Each is searched within [`PATCH_REACH`] of the whole image's `shift`, which leaves room for the camera's
/// own turn between frames.
fn patch_motions(a: &Thumb, b: &Thumb, shift: (i64, i64)) -> Vec<([f64; 2], [f64; 2])> {
    let (w, h) = (a.w as f64, a.h as f64);
    let (hw, hh) = (
        ((PATCH_SIZE * w) / 2.0) as i64,
        ((PATCH_SIZE * h) / 2.0) as i64,
    );
    let mut out = Vec::new();
    for (fx, fy) in [
        (0.0, 0.0),
        (-1.0, -1.0),
        (1.0, -1.0),
        (-1.0, 1.0),
        (1.0, 1.0),
    ] {
        let cx = (w / 2.0 + fx * PATCH_OFFSET * w) as i64;
        let cy = (h / 2.0 + fy * PATCH_OFFSET * h) as i64;
        let window = [cx - hw, cx + hw, cy - hh, cy + hh];
        let at = |dx: i64, dy: i64| ncc_window(a, b, window, dx, dy);
        let best = best_of(shift, PATCH_REACH, at);
        let Some(((dx, dy), peak)) = best.filter(|(_, c)| *c >= MIN_PEAK_NCC) else {
            continue;
        };
        // Sub-pixel: a parabola through the peak and its neighbours, along each axis.
        let refine = |minus: Option<f64>, plus: Option<f64>| match (minus, plus) {
            (Some(m), Some(p)) => {
                let curvature = m - 2.0 * peak + p;
                if curvature < 0.0 {
                    (0.5 * (m - p) / curvature).clamp(-0.5, 0.5)
                } else {
                    0.0
                }
            }
            _ => 0.0,
        };
        let sx = dx as f64 + refine(at(dx - 1, dy), at(dx + 1, dy));
        let sy = dy as f64 + refine(at(dx, dy - 1), at(dx, dy + 1));
        // The window's centre (its pixels run from cx - hw to cx + hw - 1).
        let (px, py) = (cx as f64 - 0.5, cy as f64 - 0.5);
        out.push(([px, py], [px + sx, py + sy]));
    }
    out
}

/// The rotation, radians (positive from north towards east), that best takes the points `from` onto `to`
/// once both are centred (least squares), when there are at least three.
fn rotation_between(from: &[[f64; 2]], to: &[[f64; 2]]) -> Option<f64> {
    if from.len() < 3 || from.len() != to.len() {
        return None;
    }
    let mean = |v: &[[f64; 2]]| {
        let n = v.len() as f64;
        let s = v.iter().fold([0.0, 0.0], |a, p| [a[0] + p[0], a[1] + p[1]]);
        [s[0] / n, s[1] / n]
    };
    let (mf, mt) = (mean(from), mean(to));
    let (mut dot, mut cross) = (0.0, 0.0);
    for (f, t) in from.iter().zip(to) {
        let (a, b) = ([f[0] - mf[0], f[1] - mf[1]], [t[0] - mt[0], t[1] - mt[1]]);
        dot += a[0] * b[0] + a[1] * b[1];
        cross += a[0] * b[1] - a[1] * b[0];
    }
    (dot > 0.0).then(|| cross.atan2(dot))
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
    heading_bias_deg: f64,
}

/// What two consecutive frames say of the pose: the ground disagreement under the centre (north/east metres,
/// and its excess over the vehicle's possible displacement), and how much more the reported heading turned
/// than the image did (degrees), when enough patches correlate.
struct Motion {
    ground_ne_m: [f64; 2],
    excess_m: f64,
    turn_deg: Option<f64>,
}

impl AttitudeCheck {
    /// A check with no previous frame and no bias, for a vehicle flying at most `max_speed_mps` (its
    /// displacement between two frames is not an attitude error: the localizer's `max_speed_mps`).
    pub fn new(max_speed_mps: f64) -> Self {
        Self {
            max_speed_mps,
            previous: None,
            bias_ne_m: [0.0, 0.0],
            heading_bias_deg: 0.0,
        }
    }

    /// Whether frames are being refused now: the accumulated bias is longer than [`TOLERANCE_M`], or a
    /// heading jump has not jumped back.
    pub fn is_refusing(&self) -> bool {
        self.bias_ne_m[0].hypot(self.bias_ne_m[1]) > TOLERANCE_M || self.heading_bias_deg != 0.0
    }

    /// The accumulated bias on the ground, metres north/east.
    pub fn bias_ne_m(&self) -> [f64; 2] {
        self.bias_ne_m
    }

    /// The accumulated heading error, degrees (positive: the reported heading is clockwise of the image's).
    pub fn heading_bias_deg(&self) -> f64 {
        self.heading_bias_deg
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
        let motion = self
            .previous
            .as_ref()
            .and_then(|p| self.motion(p, &thumb, t_us, pose, camera));
        self.previous = Some(Previous {
            t_us,
            thumb,
            pose: *pose,
        });
        let mut jump_m = 0.0;
        let measured = motion.is_some();
        if let Some(m) = motion {
            if m.excess_m > 0.0 {
                self.bias_ne_m[0] += m.ground_ne_m[0];
                self.bias_ne_m[1] += m.ground_ne_m[1];
                jump_m = m.excess_m;
            }
            if let Some(turn) = m.turn_deg {
                self.see_turn(turn);
            }
        }
        if self.is_refusing() {
            AttitudeVerdict::Inconsistent {
                jump_m,
                bias_m: self.bias_ne_m[0].hypot(self.bias_ne_m[1]),
                heading_deg: self.heading_bias_deg,
            }
        } else if measured {
            AttitudeVerdict::Consistent
        } else {
            AttitudeVerdict::NoReference
        }
    }

    /// A heading disagreement between two frames. With no heading error held, one beyond
    /// [`HEADING_TOLERANCE_DEG`] starts one; while one is held every disagreement adds to it (so the jump back
    /// cancels it even when the heading's own noise split it over frames), until it is back within
    /// [`HEADING_RELEASE_DEG`].
    fn see_turn(&mut self, turn_deg: f64) {
        if self.heading_bias_deg == 0.0 {
            if turn_deg.abs() > HEADING_TOLERANCE_DEG {
                self.heading_bias_deg = turn_deg;
            }
        } else {
            self.heading_bias_deg += turn_deg;
            if self.heading_bias_deg.abs() < HEADING_RELEASE_DEG {
                self.heading_bias_deg = 0.0;
            }
        }
    }

    /// What the previous frame and this one say of the pose (see [`Motion`]); `None` when they are too far
    /// apart in time or the image's shift has no clear correlation peak.
    fn motion(
        &self,
        p: &Previous,
        thumb: &Thumb,
        t_us: u64,
        pose: &Pose,
        camera: &CameraModel,
    ) -> Option<Motion> {
        let dt = (t_us as f64 - p.t_us as f64) * 1e-6;
        if !(dt > 0.0 && dt <= MAX_GAP_S) {
            return None;
        }
        let shift = content_shift(&p.thumb, thumb)?;
        let scale = thumb.scale;
        let centre = camera.principal_point();
        // The content now under the centre was at `centre - shift` in the previous frame.
        let before = ground_ne(
            camera,
            &p.pose,
            &Point2::new(
                centre.x - shift.0 as f64 * scale,
                centre.y - shift.1 as f64 * scale,
            ),
        )?;
        let now = ground_ne(camera, pose, &centre)?;
        let d = [now[0] - before[0], now[1] - before[1]];
        let allowed = self.max_speed_mps * dt + TOLERANCE_M;
        // The heading: the same ground points seen in both frames, each through its own pose, differ by the
        // vehicle's displacement (a translation) when the poses are right, and are turned by the heading's
        // jump when not.
        let full =
            |t: [f64; 2]| Point2::new((t[0] + 0.5) * scale - 0.5, (t[1] + 0.5) * scale - 0.5);
        let (mut seen_before, mut seen_now) = (Vec::new(), Vec::new());
        for (a, b) in patch_motions(&p.thumb, thumb, shift) {
            if let (Some(g0), Some(g1)) = (
                ground_ne(camera, &p.pose, &full(a)),
                ground_ne(camera, pose, &full(b)),
            ) {
                seen_before.push(g0);
                seen_now.push(g1);
            }
        }
        Some(Motion {
            ground_ne_m: d,
            excess_m: d[0].hypot(d[1]) - allowed,
            turn_deg: rotation_between(&seen_before, &seen_now).map(f64::to_degrees),
        })
    }
}

/// North/east metres from the vehicle of the ground point seen at pixel `px` from `pose`.
fn ground_ne(camera: &CameraModel, pose: &Pose, px: &Point2<f64>) -> Option<[f64; 2]> {
    let ray = camera.unproject(px)?;
    let g: Vector3<f64> = pose.view(camera).ground_point(&ray)?;
    Some([g.x, g.y])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rotation_between_finds_a_turn_whatever_the_displacement() {
        let from = [
            [10.0, 5.0],
            [-8.0, 12.0],
            [-9.0, -11.0],
            [7.0, -6.0],
            [0.5, 0.2],
        ];
        for deg in [-30.0f64, -8.0, 0.0, 0.3, 20.0] {
            let (s, c) = deg.to_radians().sin_cos();
            // Rotated from north towards east, then moved 3 m north and 40 m east.
            let to: Vec<[f64; 2]> = from
                .iter()
                .map(|p| [c * p[0] - s * p[1] + 3.0, s * p[0] + c * p[1] + 40.0])
                .collect();
            let got = rotation_between(&from, &to).unwrap().to_degrees();
            assert!((got - deg).abs() < 1e-9, "{deg}: {got}");
        }
        // Fewer than three points say nothing.
        assert_eq!(rotation_between(&from[..2], &from[..2]), None);
    }

    #[test]
    fn a_held_heading_error_ends_only_when_the_turns_add_back() {
        let mut check = AttitudeCheck::new(10.0);
        check.see_turn(HEADING_TOLERANCE_DEG - 1.0);
        assert!(!check.is_refusing(), "a turn within the tolerance is noise");
        check.see_turn(20.0);
        assert!(check.is_refusing());
        // Small turns add to the held error; the jump back, split over two frames, cancels it.
        check.see_turn(1.0);
        check.see_turn(-12.0);
        assert!(check.is_refusing());
        assert!((check.heading_bias_deg() - 9.0).abs() < 1e-12);
        check.see_turn(-7.0);
        assert!(!check.is_refusing());
        assert_eq!(check.heading_bias_deg(), 0.0);
    }
}
