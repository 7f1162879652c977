//! Rectification: a camera frame + the vehicle's pose → a north-up, nadir, fixed-GSD view of the ground.
//!
//! [`rectify`] maps every output pixel back into the frame (inverse mapping): output pixel → a point on the
//! ground plane (NED, true north up, east right) → the camera frame → a pixel through the lens model →
//! bilinear sample. The output is [`RectifyTarget::size_px`] square and covers
//! [`RectifyTarget::ground_size_m`] on the ground, centred on the ground point the optical axis (the
//! principal point `(cx, cy)`) sees; [`Rectified::centre_offset_ne_m`] says where that point lies relative
//! to the ground point straight below the vehicle's reference point, so a match of the rectified view gives
//! the vehicle's position by subtracting it.
//!
//! Anti-aliasing: where one output pixel spans several camera pixels, each output pixel is the mean of a
//! `k x k` grid of bilinear samples spread over its square, `k` = the camera pixels one output pixel spans
//! (rounded up, at most 4), measured at the output's centre and corners. This is a box filter over the
//! output pixel's footprint: the same area average GDAL's `average` resampling gives the tile cache's tiles,
//! so the rectified view and the tiles it is matched against are low-passed alike. Pre-blurring the frame
//! instead would need a blur that varies over a tilted frame, and costs a full pass over the frame even
//! when the output is small.
//!
//! Ground to camera is a linear map in homogeneous coordinates (a homography) followed by the lens
//! distortion, so the per-sample cost is a few multiply-adds, the distortion polynomial and the bilinear
//! read; rows are processed in parallel (rayon).
//!
//! The pose is refused ([`RectifyError`]) when the view is too oblique, when the frame sees the horizon,
//! when too little of the output falls inside the frame, or when the height or target make no sense.

use image::RgbImage;
use nalgebra::{Point2, Vector3};
use rayon::prelude::*;

use super::camera::{CameraModel, CameraView, Pose};

/// Largest supersampling grid per output pixel (16 samples).
const MAX_SUPERSAMPLE: u32 = 4;

/// The rectified view wanted: a square of `size_px` covering `ground_size_m` on the ground.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RectifyTarget {
    /// Side of the output image, pixels.
    pub size_px: u32,
    /// Side of the output's footprint on the ground, metres.
    pub ground_size_m: f64,
}

/// When a pose is refused.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RectifyLimits {
    /// Largest angle between the optical axis and straight down, degrees.
    pub max_tilt_deg: f64,
    /// Smallest fraction of output pixels that must fall inside the frame.
    pub min_coverage: f64,
}

impl Default for RectifyLimits {
    fn default() -> Self {
        RectifyLimits {
            max_tilt_deg: 35.0,
            min_coverage: 0.98,
        }
    }
}

/// A rectified view.
#[derive(Debug, Clone, PartialEq)]
pub struct Rectified {
    /// North-up (true north), nadir view; pixels outside the frame are black.
    pub image: RgbImage,
    /// The ground point the optical axis sees minus the ground point below the vehicle's reference point:
    /// north, east, metres.
    pub centre_offset_ne_m: [f64; 2],
    /// Fraction of output pixels whose centre falls inside the frame.
    pub coverage: f64,
    /// Ground sample distance of the output, metres per pixel.
    pub gsd_m: f64,
}

/// Why a frame cannot be rectified.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum RectifyError {
    /// The height above ground is not a finite positive number, or puts the camera at or below the ground.
    #[error(
        "height above ground {height_m} m is not usable (the camera would be {camera_height_m} m above the \
         ground); need a finite height that puts the camera above the ground"
    )]
    BadHeight {
        /// The vehicle's height above ground, metres.
        height_m: f64,
        /// The camera's height above ground (the lever arm included), metres.
        camera_height_m: f64,
    },
    /// The target has no pixels or no ground size.
    #[error(
        "rectify target of {size_px} px over {ground_size_m} m is empty: need at least 1 px and a finite \
         ground size > 0"
    )]
    EmptyTarget {
        /// Output side, pixels.
        size_px: u32,
        /// Output side on the ground, metres.
        ground_size_m: f64,
    },
    /// The frame's size is not the calibration's.
    #[error(
        "frame is {width}x{height} px but the camera calibration is for {calib_width}x{calib_height} px"
    )]
    FrameSize {
        /// Frame width, pixels.
        width: u32,
        /// Frame height, pixels.
        height: u32,
        /// Calibrated width, pixels.
        calib_width: u32,
        /// Calibrated height, pixels.
        calib_height: u32,
    },
    /// The optical axis is too far from straight down.
    #[error("optical axis is {tilt_deg:.1}° from nadir, more than the {max_deg}° allowed")]
    Tilted {
        /// Angle between the optical axis and straight down, degrees.
        tilt_deg: f64,
        /// The limit, degrees.
        max_deg: f64,
    },
    /// Some of the frame looks at or above the horizon.
    #[error(
        "the frame sees the horizon: its highest ray points {elevation_deg:.1}° above horizontal (tilt \
         {tilt_deg:.1}°)"
    )]
    Horizon {
        /// Elevation of the highest ray in the frame, degrees (≥ 0: at or above horizontal).
        elevation_deg: f64,
        /// Angle between the optical axis and straight down, degrees.
        tilt_deg: f64,
    },
    /// Too much of the output falls outside the frame.
    #[error(
        "only {:.1}% of the {size_px} px, {ground_size_m} m rectified view falls inside the frame \
         (need {:.1}%)", coverage * 100.0, min_coverage * 100.0
    )]
    Coverage {
        /// Fraction of output pixels inside the frame.
        coverage: f64,
        /// The limit.
        min_coverage: f64,
        /// Output side, pixels.
        size_px: u32,
        /// Output side on the ground, metres.
        ground_size_m: f64,
    },
}

/// Rectifies `frame` seen by `camera` from `pose` into `target` (see the module's documentation).
pub fn rectify(
    frame: &RgbImage,
    camera: &CameraModel,
    pose: &Pose,
    target: &RectifyTarget,
    limits: &RectifyLimits,
) -> Result<Rectified, RectifyError> {
    let view = pose.view(camera);
    let size = camera.image_size();
    if frame.dimensions() != (size.width, size.height) {
        return Err(RectifyError::FrameSize {
            width: frame.width(),
            height: frame.height(),
            calib_width: size.width,
            calib_height: size.height,
        });
    }
    let camera_height_m = view.camera_height_m();
    if !(pose.height_agl_m.is_finite() && pose.height_agl_m > 0.0 && camera_height_m > 0.0) {
        return Err(RectifyError::BadHeight {
            height_m: pose.height_agl_m,
            camera_height_m,
        });
    }
    if target.size_px == 0 || !(target.ground_size_m.is_finite() && target.ground_size_m > 0.0) {
        return Err(RectifyError::EmptyTarget {
            size_px: target.size_px,
            ground_size_m: target.ground_size_m,
        });
    }
    let tilt_deg = view.tilt().to_degrees();
    if !(tilt_deg.is_finite() && tilt_deg <= limits.max_tilt_deg) {
        return Err(RectifyError::Tilted {
            tilt_deg,
            max_deg: limits.max_tilt_deg,
        });
    }
    let elevation_deg = highest_ray_elevation_deg(camera, &view);
    if elevation_deg >= 0.0 {
        return Err(RectifyError::Horizon {
            elevation_deg,
            tilt_deg,
        });
    }
    let centre = view
        .ground_point(&nalgebra::Vector3::z())
        .ok_or(RectifyError::Horizon {
            elevation_deg: -90.0 + tilt_deg,
            tilt_deg,
        })?;

    let gsd_m = target.ground_size_m / f64::from(target.size_px);
    let grid = GroundGrid::new(&view, [centre.x, centre.y], target.size_px, gsd_m);
    let (image, inside) = sample(frame, camera, &grid, target.size_px);
    let coverage = inside as f64 / (f64::from(target.size_px).powi(2));
    if !(coverage.is_finite() && coverage >= limits.min_coverage) {
        return Err(RectifyError::Coverage {
            coverage,
            min_coverage: limits.min_coverage,
            size_px: target.size_px,
            ground_size_m: target.ground_size_m,
        });
    }
    Ok(Rectified {
        image,
        centre_offset_ne_m: [centre.x, centre.y],
        coverage,
        gsd_m,
    })
}

/// The highest elevation (degrees above horizontal, negative below) of the rays along the frame's border,
/// every 4 px: for a pinhole the extreme is at a corner; a distorted border bulges, so it is walked.
fn highest_ray_elevation_deg(camera: &CameraModel, view: &CameraView) -> f64 {
    let size = camera.image_size();
    let (w, h) = (f64::from(size.width) - 1.0, f64::from(size.height) - 1.0);
    let mut border = Vec::new();
    let step = 4.0;
    let nx = (w / step).ceil().max(1.0) as u32;
    let ny = (h / step).ceil().max(1.0) as u32;
    for i in 0..=nx {
        let x = (f64::from(i) * step).min(w);
        border.push(Point2::new(x, 0.0));
        border.push(Point2::new(x, h));
    }
    for j in 0..=ny {
        let y = (f64::from(j) * step).min(h);
        border.push(Point2::new(0.0, y));
        border.push(Point2::new(w, y));
    }
    border
        .iter()
        .filter_map(|px| camera.unproject(px))
        .map(|ray| {
            let d = view.camera_to_ned * ray.into_inner();
            (-d.z).clamp(-1.0, 1.0).asin().to_degrees()
        })
        .fold(-90.0, f64::max)
}

/// Output pixel `(i, j)` → the ground point in the camera frame, as an affine map (the ground is a plane).
struct GroundGrid {
    origin: Vector3<f64>,
    d_col: Vector3<f64>,
    d_row: Vector3<f64>,
}

impl GroundGrid {
    /// North-up grid of `size` px at `gsd_m`, centred at ground point `centre_ne` (NED, metres).
    fn new(view: &CameraView, centre_ne: [f64; 2], size: u32, gsd_m: f64) -> GroundGrid {
        let half = (f64::from(size) - 1.0) / 2.0;
        // Pixel (i, j) = north: centre - (j - half)·gsd, east: centre + (i - half)·gsd.
        let corner = Vector3::new(
            centre_ne[0] + half * gsd_m,
            centre_ne[1] - half * gsd_m,
            view.ground_down_m,
        );
        GroundGrid {
            origin: view.to_camera(&corner),
            d_col: view
                .camera_to_ned
                .inverse_transform_vector(&Vector3::new(0.0, gsd_m, 0.0)),
            d_row: view
                .camera_to_ned
                .inverse_transform_vector(&Vector3::new(-gsd_m, 0.0, 0.0)),
        }
    }

    fn camera_point(&self, i: f64, j: f64) -> Vector3<f64> {
        self.origin + self.d_col * i + self.d_row * j
    }
}

/// The supersampling grid side: camera pixels spanned by one output pixel, at the centre and corners.
fn supersample(camera: &CameraModel, grid: &GroundGrid, size: u32) -> u32 {
    let last = f64::from(size) - 1.0;
    let mid = last / 2.0;
    let mut span = 0.0f64;
    for (i, j) in [
        (mid, mid),
        (0.0, 0.0),
        (last, 0.0),
        (0.0, last),
        (last, last),
    ] {
        let at = |i: f64, j: f64| camera.project(&grid.camera_point(i, j));
        if let (Some(p), Some(pi), Some(pj)) = (at(i, j), at(i + 0.5, j), at(i, j + 0.5)) {
            span = span.max(2.0 * (pi - p).norm()).max(2.0 * (pj - p).norm());
        }
    }
    // Up to 5% over one source pixel per output pixel aliases too little to pay for more samples (and
    // keeps equal resolutions, with UTM's scale factor, at one sample).
    ((span - 0.05).ceil() as u32).clamp(1, MAX_SUPERSAMPLE)
}

/// Fills the output; returns it and the number of pixels whose centre is inside the frame.
fn sample(frame: &RgbImage, camera: &CameraModel, grid: &GroundGrid, size: u32) -> (RgbImage, u64) {
    let k = supersample(camera, grid, size);
    let offsets: Vec<f64> = (0..k)
        .map(|a| (f64::from(a) + 0.5) / f64::from(k) - 0.5)
        .collect();
    let n = size as usize;
    let mut buf = vec![0u8; n * n * 3];
    let inside: u64 = buf
        .par_chunks_mut(n * 3)
        .enumerate()
        .map(|(j, row)| {
            let mut inside = 0u64;
            let j = j as f64;
            for (i, out) in row.chunks_exact_mut(3).enumerate() {
                let i = i as f64;
                let centre = camera.project(&grid.camera_point(i, j));
                if !centre.is_some_and(|px| camera.contains(&px)) {
                    continue;
                }
                inside += 1;
                let mut acc = [0f32; 3];
                let mut count = 0u32;
                for dj in &offsets {
                    for di in &offsets {
                        if let Some(px) = camera.project(&grid.camera_point(i + di, j + dj)) {
                            let v = bilinear(frame, px.x, px.y);
                            acc[0] += v[0];
                            acc[1] += v[1];
                            acc[2] += v[2];
                            count += 1;
                        }
                    }
                }
                let c = count.max(1) as f32;
                for (o, a) in out.iter_mut().zip(acc) {
                    *o = (a / c).round().clamp(0.0, 255.0) as u8;
                }
            }
            inside
        })
        .sum();
    let image = RgbImage::from_raw(size, size, buf).expect("buffer is size x size x 3");
    (image, inside)
}

/// Bilinear sample at `(x, y)` (pixel centres at integers), clamped to the image's edge.
pub fn bilinear(image: &RgbImage, x: f64, y: f64) -> [f32; 3] {
    let (w, h) = image.dimensions();
    let x = x.clamp(0.0, f64::from(w) - 1.0);
    let y = y.clamp(0.0, f64::from(h) - 1.0);
    let x0 = (x.floor() as u32).min(w.saturating_sub(2));
    let y0 = (y.floor() as u32).min(h.saturating_sub(2));
    let x1 = (x0 + 1).min(w - 1);
    let y1 = (y0 + 1).min(h - 1);
    let (fx, fy) = ((x - f64::from(x0)) as f32, (y - f64::from(y0)) as f32);
    let raw = image.as_raw();
    let at = |xx: u32, yy: u32| (yy as usize * w as usize + xx as usize) * 3;
    let (a, b, c, d) = (at(x0, y0), at(x1, y0), at(x0, y1), at(x1, y1));
    let mut out = [0f32; 3];
    for (ch, o) in out.iter_mut().enumerate() {
        let top = f32::from(raw[a + ch]) * (1.0 - fx) + f32::from(raw[b + ch]) * fx;
        let bottom = f32::from(raw[c + ch]) * (1.0 - fx) + f32::from(raw[d + ch]) * fx;
        *o = top * (1.0 - fy) + bottom * fy;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rectify::calib::{CameraCalibration, Distortion};

    fn sim_calib() -> CameraCalibration {
        crate::rectify::calib::sim_calibration()
    }

    /// A frame whose colour encodes the ground point each pixel sees: red = east, green = north (metres
    /// from the vehicle, offset 128), for a nadir-ish camera over a flat plane.
    fn coded_frame(camera: &CameraModel, pose: &Pose) -> RgbImage {
        let view = pose.view(camera);
        let size = camera.image_size();
        RgbImage::from_fn(size.width, size.height, |x, y| {
            let ray = camera
                .unproject(&Point2::new(f64::from(x), f64::from(y)))
                .unwrap();
            let g = view.ground_point(&ray.into_inner()).unwrap();
            image::Rgb([
                (128.0 + g.y).round().clamp(0.0, 255.0) as u8,
                (128.0 + g.x).round().clamp(0.0, 255.0) as u8,
                0,
            ])
        })
    }

    #[test]
    fn output_is_north_up_and_centred_on_the_optical_axis_ground_point() {
        let camera = CameraModel::new(&sim_calib());
        for (roll, pitch, yaw) in [(0.0, 0.0, 0.0), (8.0, -12.0, 135.0), (-15.0, 10.0, -60.0)] {
            let pose = Pose::from_euler_deg(roll, pitch, yaw, 60.0);
            let frame = coded_frame(&camera, &pose);
            let target = RectifyTarget {
                size_px: 65,
                ground_size_m: 32.0,
            };
            let out = rectify(&frame, &camera, &pose, &target, &RectifyLimits::default()).unwrap();
            assert_eq!(out.coverage, 1.0);
            assert!((out.gsd_m - 32.0 / 65.0).abs() < 1e-12);
            let [n0, e0] = out.centre_offset_ne_m;
            // Expected offset: the optical axis' ground point.
            let view = pose.view(&camera);
            let g = view.ground_point(&Vector3::z()).unwrap();
            assert!((g.x - n0).abs() < 1e-9 && (g.y - e0).abs() < 1e-9);
            // Every output pixel shows the ground point it stands for (colour quantisation: ±1 level).
            let mut worst = 0.0f64;
            for j in 0..65u32 {
                for i in 0..65u32 {
                    let p = out.image.get_pixel(i, j);
                    let east = e0 + (f64::from(i) - 32.0) * out.gsd_m;
                    let north = n0 - (f64::from(j) - 32.0) * out.gsd_m;
                    worst = worst
                        .max((f64::from(p[0]) - (128.0 + east).round()).abs())
                        .max((f64::from(p[1]) - (128.0 + north).round()).abs());
                }
            }
            assert!(worst <= 1.0, "({roll}, {pitch}, {yaw}): worst {worst} m");
        }
    }

    #[test]
    fn refusals_name_the_numbers() {
        let camera = CameraModel::new(&sim_calib());
        let frame = RgbImage::new(640, 480);
        let target = RectifyTarget {
            size_px: 128,
            ground_size_m: 20.0,
        };
        let limits = RectifyLimits::default();
        let run = |pose: Pose, target: &RectifyTarget| match rectify(
            &frame, &camera, &pose, target, &limits,
        ) {
            Ok(r) => panic!(
                "not refused: coverage {}, centre {:?}",
                r.coverage, r.centre_offset_ne_m
            ),
            Err(e) => e,
        };
        let e = run(Pose::from_euler_deg(0.0, 45.0, 0.0, 100.0), &target);
        assert!(
            matches!(e, RectifyError::Tilted { tilt_deg, .. } if (tilt_deg - 45.0).abs() < 1e-6)
        );
        assert!(
            e.to_string().contains("45.0°") && e.to_string().contains("35°"),
            "{e}"
        );
        // A wide-angle camera tilted 30°: the optical axis is allowed, but its top edge sees the sky.
        let mut wide = sim_calib();
        wide.intrinsics.fx = 120.0;
        wide.intrinsics.fy = 120.0;
        wide.distortion = Distortion::None;
        let wide = CameraModel::new(&wide);
        let Err(e) = rectify(
            &frame,
            &wide,
            &Pose::from_euler_deg(0.0, 30.0, 0.0, 100.0),
            &target,
            &limits,
        ) else {
            panic!("the horizon is not refused");
        };
        assert!(
            matches!(e, RectifyError::Horizon { elevation_deg, .. } if elevation_deg > 0.0),
            "{e}"
        );
        assert!(e.to_string().contains("horizon"), "{e}");
        for h in [0.0, -3.0, f64::NAN, f64::INFINITY] {
            let e = run(Pose::from_euler_deg(0.0, 0.0, 0.0, h), &target);
            assert!(matches!(e, RectifyError::BadHeight { .. }), "{h}: {e}");
        }
        let e = run(
            Pose::from_euler_deg(0.0, 0.0, 0.0, 50.0),
            &RectifyTarget {
                size_px: 0,
                ground_size_m: 20.0,
            },
        );
        assert!(matches!(e, RectifyError::EmptyTarget { .. }), "{e}");
        // 200 m on the ground from 50 m: far wider than the ~70 m footprint.
        let e = run(
            Pose::from_euler_deg(0.0, 0.0, 0.0, 50.0),
            &RectifyTarget {
                size_px: 64,
                ground_size_m: 200.0,
            },
        );
        assert!(
            matches!(e, RectifyError::Coverage { coverage, .. } if coverage < 0.5),
            "{e}"
        );
        assert!(e.to_string().contains("98.0%"), "{e}");
        let small = RgbImage::new(320, 240);
        let Err(e) = rectify(
            &small,
            &camera,
            &Pose::from_euler_deg(0.0, 0.0, 0.0, 50.0),
            &target,
            &limits,
        ) else {
            panic!("a frame of the wrong size is not refused");
        };
        assert!(e.to_string().contains("320x240") && e.to_string().contains("640x480"));
    }

    #[test]
    fn a_fine_frame_is_averaged_not_aliased() {
        // A one-pixel checkerboard seen from high up: each output pixel spans several camera pixels, so the
        // output must be close to mid-grey everywhere rather than a moiré of black and white.
        let camera = CameraModel::new(&sim_calib());
        let frame = RgbImage::from_fn(640, 480, |x, y| {
            let v = if (x + y) % 2 == 0 { 255 } else { 0 };
            image::Rgb([v, v, v])
        });
        let pose = Pose::from_euler_deg(0.0, 0.0, 0.0, 100.0);
        let target = RectifyTarget {
            size_px: 32,
            ground_size_m: 100.0,
        };
        let out = rectify(&frame, &camera, &pose, &target, &RectifyLimits::default()).unwrap();
        let worst = out
            .image
            .pixels()
            .map(|p| (f64::from(p[0]) - 127.5).abs())
            .fold(0.0, f64::max);
        assert!(worst < 40.0, "worst deviation from grey {worst}");
    }

    /// `cargo test --release --lib rectify::warp -- --ignored --nocapture`: time per frame.
    #[test]
    #[ignore]
    fn time_rectification() {
        let camera = CameraModel::new(&sim_calib());
        let frame = RgbImage::from_fn(640, 480, |x, y| {
            image::Rgb([x as u8, y as u8, (x ^ y) as u8])
        });
        let pose = Pose::from_euler_deg(5.0, -8.0, 33.0, 120.0);
        for (size, ground) in [(128, 60.0), (384, 60.0), (128, 90.0)] {
            let target = RectifyTarget {
                size_px: size,
                ground_size_m: ground,
            };
            let runs = 50;
            let t = std::time::Instant::now();
            for _ in 0..runs {
                rectify(&frame, &camera, &pose, &target, &RectifyLimits::default()).unwrap();
            }
            let grid = GroundGrid::new(
                &pose.view(&camera),
                [0.0, 0.0],
                size,
                ground / f64::from(size),
            );
            println!(
                "640x480 -> {size} px over {ground} m (supersample {}): {:.2} ms/frame on {} threads",
                supersample(&camera, &grid, size),
                t.elapsed().as_secs_f64() * 1e3 / f64::from(runs),
                rayon::current_num_threads()
            );
        }
    }
}
