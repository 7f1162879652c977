//! The camera model and the vehicle pose: pixels ↔ rays, camera ↔ NED, and the flat ground below.
//!
//! [`CameraModel::new`] turns a [`CameraCalibration`] into the two maps every geometric stage needs:
//! [`CameraModel::project`] (a point in the camera frame → a pixel, lens distortion included) and
//! [`CameraModel::unproject`] (a pixel → the unit ray it sees). The distortion models are OpenCV's, term for
//! term: `cv::projectPoints` (radial-tangential, "plumb bob") and `cv::fisheye::projectPoints` (equidistant),
//! with pixel centres at integer coordinates.
//!
//! A distortion polynomial folds back on itself far enough from the axis (the distorted radius stops
//! growing); past that radius a pixel would see two rays. [`CameraModel`] finds the fold once, at
//! construction, and treats everything beyond it as outside the model's domain: `project` and `unproject`
//! return `None` there rather than a wrong answer. For the radial-tangential model the fold is found on the
//! radial part (the tangential terms of real lenses are three orders of magnitude smaller).
//!
//! [`Pose`] is the vehicle's attitude (body FRD → local NED, as MAVLink's ATTITUDE roll/pitch/yaw give it)
//! and its height above the ground, which is a horizontal plane (no terrain model). [`Pose::view`] combines a
//! pose with a camera's mount into a [`CameraView`]: where the camera is, where it looks, and where each ray
//! meets the ground, all in the NED frame whose origin is the vehicle's reference point.

use nalgebra::{Point2, Rotation3, Unit, UnitQuaternion, Vector2, Vector3};

use super::calib::{CameraCalibration, Distortion, ImageSize, Intrinsics};

/// Largest normalised radius (tan of the angle off-axis) a pinhole-type model is considered at: 89.4°.
const MAX_PINHOLE_RADIUS: f64 = 100.0;
/// Residual of the iterative undistortion, pixels.
const UNDISTORT_TOLERANCE_PX: f64 = 1e-9;
/// Iterations before the undistortion gives up.
const UNDISTORT_MAX_ITERATIONS: usize = 50;

/// A calibrated camera: intrinsics, lens distortion, and how it is mounted on the airframe.
#[derive(Debug, Clone, PartialEq)]
pub struct CameraModel {
    size: ImageSize,
    k: Intrinsics,
    distortion: Distortion,
    camera_to_body: Rotation3<f64>,
    lever_arm_body: Vector3<f64>,
    /// Radial-tangential: the largest undistorted radius² in the domain; equidistant: the largest θ.
    domain: f64,
    /// The distorted radius (normalised) at the domain's edge: a pixel beyond it sees no ray.
    distorted_limit: f64,
}

impl CameraModel {
    /// The model of a calibrated camera (the calibration is trusted to be validated).
    pub fn new(calib: &CameraCalibration) -> CameraModel {
        let (domain, distorted_limit) = match calib.distortion {
            Distortion::None => (MAX_PINHOLE_RADIUS.powi(2), MAX_PINHOLE_RADIUS),
            Distortion::RadialTangential { k1, k2, k3, .. } => {
                // d/dr [r (1 + k1 r² + k2 r⁴ + k3 r⁶)] = 1 + 3 k1 r² + 5 k2 r⁴ + 7 k3 r⁶.
                let slope = |r: f64| {
                    let r2 = r * r;
                    1.0 + r2 * (3.0 * k1 + r2 * (5.0 * k2 + r2 * 7.0 * k3))
                };
                let r = first_fold(slope, MAX_PINHOLE_RADIUS);
                let r2 = r * r;
                (r2, r * (1.0 + r2 * (k1 + r2 * (k2 + r2 * k3))))
            }
            Distortion::Equidistant { k1, k2, k3, k4 } => {
                let slope = |t: f64| {
                    let t2 = t * t;
                    1.0 + t2 * (3.0 * k1 + t2 * (5.0 * k2 + t2 * (7.0 * k3 + t2 * 9.0 * k4)))
                };
                let t = first_fold(slope, MAX_PINHOLE_RADIUS.atan());
                (t, equidistant_theta_d(t, [k1, k2, k3, k4]))
            }
        };
        CameraModel {
            size: calib.image,
            k: calib.intrinsics,
            distortion: calib.distortion,
            camera_to_body: calib.mount.camera_to_body(),
            lever_arm_body: Vector3::from(calib.mount.lever_arm_m),
            domain,
            distorted_limit,
        }
    }

    /// The image size, pixels.
    pub fn image_size(&self) -> ImageSize {
        self.size
    }

    /// The pinhole intrinsics.
    pub fn intrinsics(&self) -> &Intrinsics {
        &self.k
    }

    /// The lens distortion.
    pub fn distortion(&self) -> &Distortion {
        &self.distortion
    }

    /// The rotation camera frame → body frame (the mount).
    pub fn camera_to_body(&self) -> &Rotation3<f64> {
        &self.camera_to_body
    }

    /// The camera's optical centre in the body frame (FRD), metres.
    pub fn lever_arm_body(&self) -> &Vector3<f64> {
        &self.lever_arm_body
    }

    /// The principal point `(cx, cy)`: the pixel on the optical axis.
    pub fn principal_point(&self) -> Point2<f64> {
        Point2::new(self.k.cx, self.k.cy)
    }

    /// True when `px` lies where bilinear sampling has four neighbours: `[0, w-1] x [0, h-1]`.
    pub fn contains(&self, px: &Point2<f64>) -> bool {
        px.x >= 0.0
            && px.y >= 0.0
            && px.x <= f64::from(self.size.width) - 1.0
            && px.y <= f64::from(self.size.height) - 1.0
    }

    /// The pixel that sees `p_cam` (camera frame: x right, y down, z forward). `None` for a point at or
    /// behind the camera's plane, or outside the distortion model's domain. The pixel may lie outside the
    /// image: check with [`CameraModel::contains`].
    pub fn project(&self, p_cam: &Vector3<f64>) -> Option<Point2<f64>> {
        if p_cam.z <= 0.0 || !p_cam.iter().all(|v| v.is_finite()) {
            return None;
        }
        let d = self.distort(&Vector2::new(p_cam.x / p_cam.z, p_cam.y / p_cam.z))?;
        Some(Point2::new(
            self.k.fx * d.x + self.k.cx,
            self.k.fy * d.y + self.k.cy,
        ))
    }

    /// The unit ray (camera frame) that pixel `px` sees; `None` outside the distortion model's domain or
    /// when the iterative undistortion does not converge.
    pub fn unproject(&self, px: &Point2<f64>) -> Option<Unit<Vector3<f64>>> {
        let xd = Vector2::new(
            (px.x - self.k.cx) / self.k.fx,
            (px.y - self.k.cy) / self.k.fy,
        );
        if !(xd.x.is_finite() && xd.y.is_finite()) {
            return None;
        }
        let ray = match self.distortion {
            Distortion::None => Vector3::new(xd.x, xd.y, 1.0),
            Distortion::RadialTangential { .. } => {
                let u = self.undistort_radtan(&xd)?;
                Vector3::new(u.x, u.y, 1.0)
            }
            Distortion::Equidistant { k1, k2, k3, k4 } => {
                let theta_d = xd.norm();
                if theta_d > self.distorted_limit {
                    return None;
                }
                if theta_d < 1e-12 {
                    Vector3::new(0.0, 0.0, 1.0)
                } else {
                    let theta = equidistant_theta(theta_d, [k1, k2, k3, k4], self.domain)?;
                    let s = theta.sin() / theta_d;
                    Vector3::new(xd.x * s, xd.y * s, theta.cos())
                }
            }
        };
        Some(Unit::new_normalize(ray))
    }

    /// Undistorted normalised coordinates (`x/z`, `y/z`) → distorted normalised coordinates, or `None`
    /// outside the model's domain. Pixels are `fx·d.x + cx`, `fy·d.y + cy`.
    pub fn distort(&self, u: &Vector2<f64>) -> Option<Vector2<f64>> {
        let r2 = u.norm_squared();
        match self.distortion {
            Distortion::None => (r2 <= self.domain).then_some(*u),
            Distortion::RadialTangential { k1, k2, p1, p2, k3 } => {
                if r2.is_nan() || r2 > self.domain {
                    return None;
                }
                let (x, y) = (u.x, u.y);
                let radial = 1.0 + r2 * (k1 + r2 * (k2 + r2 * k3));
                Some(Vector2::new(
                    x * radial + 2.0 * p1 * x * y + p2 * (r2 + 2.0 * x * x),
                    y * radial + p1 * (r2 + 2.0 * y * y) + 2.0 * p2 * x * y,
                ))
            }
            Distortion::Equidistant { k1, k2, k3, k4 } => {
                let r = r2.sqrt();
                let theta = r.atan();
                if theta.is_nan() || theta > self.domain {
                    return None;
                }
                // As cv::fisheye::projectPoints: the scale θd/r is 1 on the axis.
                let scale = if r > 1e-8 {
                    equidistant_theta_d(theta, [k1, k2, k3, k4]) / r
                } else {
                    1.0
                };
                Some(u * scale)
            }
        }
    }

    /// Newton's method on the radial-tangential model, from the distorted point itself.
    fn undistort_radtan(&self, xd: &Vector2<f64>) -> Option<Vector2<f64>> {
        let Distortion::RadialTangential { k1, k2, p1, p2, k3 } = self.distortion else {
            return Some(*xd);
        };
        // Beyond the fold's distorted radius no undistorted point maps here (up to the small tangential
        // part, which the final domain check catches).
        if xd.norm() > self.distorted_limit * 1.01 + 1e-9 {
            return None;
        }
        let tolerance = UNDISTORT_TOLERANCE_PX / self.k.fx.max(self.k.fy);
        let mut u = *xd;
        for _ in 0..UNDISTORT_MAX_ITERATIONS {
            let (x, y) = (u.x, u.y);
            let r2 = x * x + y * y;
            if r2.is_nan() || r2 > self.domain {
                return None;
            }
            let radial = 1.0 + r2 * (k1 + r2 * (k2 + r2 * k3));
            let f = Vector2::new(
                x * radial + 2.0 * p1 * x * y + p2 * (r2 + 2.0 * x * x) - xd.x,
                y * radial + p1 * (r2 + 2.0 * y * y) + 2.0 * p2 * x * y - xd.y,
            );
            if f.x.abs().max(f.y.abs()) <= tolerance {
                return Some(u);
            }
            // d(radial)/dr² and the Jacobian of the distortion.
            let dradial = k1 + r2 * (2.0 * k2 + r2 * 3.0 * k3);
            let j11 = radial + 2.0 * x * x * dradial + 2.0 * p1 * y + 6.0 * p2 * x;
            let j12 = 2.0 * x * y * dradial + 2.0 * p1 * x + 2.0 * p2 * y;
            let j21 = 2.0 * x * y * dradial + 2.0 * p1 * x + 2.0 * p2 * y;
            let j22 = radial + 2.0 * y * y * dradial + 6.0 * p1 * y + 2.0 * p2 * x;
            let det = j11 * j22 - j12 * j21;
            if det.is_nan() || det.abs() <= 1e-12 {
                return None;
            }
            u -= Vector2::new(j22 * f.x - j12 * f.y, -j21 * f.x + j11 * f.y) / det;
            if !(u.x.is_finite() && u.y.is_finite()) {
                return None;
            }
        }
        None
    }
}

/// θd = θ (1 + k1 θ² + k2 θ⁴ + k3 θ⁶ + k4 θ⁸).
fn equidistant_theta_d(theta: f64, [k1, k2, k3, k4]: [f64; 4]) -> f64 {
    let t2 = theta * theta;
    theta * (1.0 + t2 * (k1 + t2 * (k2 + t2 * (k3 + t2 * k4))))
}

/// Newton on θ for the equidistant model, from θ = θd; `None` if it leaves `[0, max_theta]` or stalls.
fn equidistant_theta(theta_d: f64, k: [f64; 4], max_theta: f64) -> Option<f64> {
    let [k1, k2, k3, k4] = k;
    let mut theta = theta_d.min(max_theta);
    for _ in 0..UNDISTORT_MAX_ITERATIONS {
        let f = equidistant_theta_d(theta, k) - theta_d;
        let t2 = theta * theta;
        let df = 1.0 + t2 * (3.0 * k1 + t2 * (5.0 * k2 + t2 * (7.0 * k3 + t2 * 9.0 * k4)));
        if df.is_nan() || df <= 0.0 {
            return None;
        }
        let step = f / df;
        theta = (theta - step).clamp(0.0, max_theta);
        // θ is an angle; 1e-15 rad is far below a nanopixel for any real focal length.
        if step.abs() < 1e-15 {
            return (f.abs() < 1e-9).then_some(theta);
        }
    }
    let f = equidistant_theta_d(theta, k) - theta_d;
    (f.abs() < 1e-12).then_some(theta)
}

/// The first argument in `(0, limit]` where `slope` stops being positive (bisected to 1e-12), or `limit`.
fn first_fold(slope: impl Fn(f64) -> f64, limit: f64) -> f64 {
    let steps = 20_000;
    let mut prev = 0.0;
    for i in 1..=steps {
        let x = limit * f64::from(i) / f64::from(steps);
        let s = slope(x);
        if s.is_nan() || s <= 0.0 {
            let (mut lo, mut hi) = (prev, x);
            while hi - lo > 1e-12 {
                let mid = 0.5 * (lo + hi);
                if slope(mid) > 0.0 {
                    lo = mid;
                } else {
                    hi = mid;
                }
            }
            return lo;
        }
        prev = x;
    }
    limit
}

/// The vehicle's attitude and height above the ground.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Pose {
    /// Rotation body (FRD) → local NED.
    pub attitude: UnitQuaternion<f64>,
    /// Height of the vehicle's reference point above the ground plane, metres.
    pub height_agl_m: f64,
}

impl Pose {
    /// A pose from MAVLink ATTITUDE angles (radians, aerospace ZYX: yaw, then pitch, then roll) and a height.
    pub fn from_euler(roll: f64, pitch: f64, yaw: f64, height_agl_m: f64) -> Pose {
        Pose {
            attitude: UnitQuaternion::from_euler_angles(roll, pitch, yaw),
            height_agl_m,
        }
    }

    /// The same, with the angles in degrees.
    pub fn from_euler_deg(roll: f64, pitch: f64, yaw: f64, height_agl_m: f64) -> Pose {
        Pose::from_euler(
            roll.to_radians(),
            pitch.to_radians(),
            yaw.to_radians(),
            height_agl_m,
        )
    }

    /// Roll, pitch, yaw in radians (aerospace ZYX).
    pub fn euler(&self) -> (f64, f64, f64) {
        self.attitude.euler_angles()
    }

    /// The camera's view from this pose.
    pub fn view(&self, camera: &CameraModel) -> CameraView {
        let body_to_ned = self.attitude.to_rotation_matrix();
        CameraView {
            camera_to_ned: body_to_ned * camera.camera_to_body(),
            centre_ned: body_to_ned * camera.lever_arm_body(),
            ground_down_m: self.height_agl_m,
        }
    }
}

/// A camera in a pose: the frame is local NED with its origin at the vehicle's reference point; the ground
/// is the horizontal plane `down = ground_down_m`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CameraView {
    /// Rotation camera frame → NED.
    pub camera_to_ned: Rotation3<f64>,
    /// The camera's optical centre, NED metres from the vehicle's reference point.
    pub centre_ned: Vector3<f64>,
    /// The ground plane's NED down coordinate (the vehicle's height above ground).
    pub ground_down_m: f64,
}

impl CameraView {
    /// The optical axis in NED.
    pub fn axis_ned(&self) -> Vector3<f64> {
        self.camera_to_ned * Vector3::z()
    }

    /// Angle between the optical axis and straight down, radians.
    pub fn tilt(&self) -> f64 {
        self.axis_ned().z.clamp(-1.0, 1.0).acos()
    }

    /// The camera centre's height above the ground plane, metres.
    pub fn camera_height_m(&self) -> f64 {
        self.ground_down_m - self.centre_ned.z
    }

    /// Where a camera-frame ray meets the ground, NED metres from the vehicle's reference point (down =
    /// the plane); `None` for a ray at or above horizontal.
    pub fn ground_point(&self, ray_cam: &Vector3<f64>) -> Option<Vector3<f64>> {
        let d = self.camera_to_ned * ray_cam;
        let h = self.camera_height_m();
        // A ray less than ~0.06° below horizontal meets the ground beyond 1000 heights: treat as horizon.
        if !(d.z > 1e-3 * d.norm() && h > 0.0) {
            return None;
        }
        Some(self.centre_ned + d * (h / d.z))
    }

    /// A NED point (relative to the vehicle's reference point) in the camera frame.
    pub fn to_camera(&self, p_ned: &Vector3<f64>) -> Vector3<f64> {
        self.camera_to_ned
            .inverse_transform_vector(&(p_ned - self.centre_ned))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rectify::calib::Mount;

    fn calib(distortion: Distortion) -> CameraCalibration {
        CameraCalibration {
            name: "test".into(),
            example: false,
            image: ImageSize {
                width: 640,
                height: 480,
            },
            intrinsics: Intrinsics {
                fx: 500.0,
                fy: 480.0,
                cx: 320.0,
                cy: 240.0,
            },
            distortion,
            mount: Mount::default(),
        }
    }

    const RADTAN: Distortion = Distortion::RadialTangential {
        k1: -0.1,
        k2: 0.01,
        p1: 0.001,
        p2: -0.002,
        k3: 0.0005,
    };
    const FISHEYE: Distortion = Distortion::Equidistant {
        k1: 0.1,
        k2: -0.02,
        k3: 0.003,
        k4: -0.0005,
    };

    fn assert_px(got: Option<Point2<f64>>, want: (f64, f64)) {
        let got = got.expect("projects");
        assert!(
            (got.x - want.0).abs() < 1e-9 && (got.y - want.1).abs() < 1e-9,
            "{got:?} != {want:?}"
        );
    }

    #[test]
    fn radtan_matches_opencv_formulas() {
        let cam = CameraModel::new(&calib(RADTAN));
        // (0.2, 0.1, 1): x = 0.2, y = 0.1, r² = 0.05,
        // radial = 1 - 0.1·0.05 + 0.01·0.0025 + 0.0005·0.000125 = 0.9950250625;
        // x'' = 0.2·radial + 2·0.001·0.02 - 0.002·(0.05 + 0.08) = 0.1987850125 → u = 500 x'' + 320;
        // y'' = 0.1·radial + 0.001·(0.05 + 0.02) + 2·(-0.002)·0.02 = 0.09949250625 → v = 480 y'' + 240.
        assert_px(
            cam.project(&Vector3::new(0.2, 0.1, 1.0)),
            (419.39250625, 287.756403),
        );
        assert_px(
            cam.project(&Vector3::new(-1.5, 2.0, 4.0)),
            (138.67315351963043, 471.785863494873),
        );
        // The principal point sees the optical axis.
        assert_px(cam.project(&Vector3::new(0.0, 0.0, 3.0)), (320.0, 240.0));
    }

    #[test]
    fn equidistant_matches_opencv_formulas() {
        let cam = CameraModel::new(&calib(FISHEYE));
        // (0.3, 0.4, 1): r = 0.5, θ = atan 0.5, θd = θ(1 + k1θ² + k2θ⁴ + k3θ⁶ + k4θ⁸), x' = a θd / r.
        assert_px(
            cam.project(&Vector3::new(0.3, 0.4, 1.0)),
            (461.9598211470651, 421.70857106824326),
        );
        assert_px(
            cam.project(&Vector3::new(-3.0, 1.0, 2.0)),
            (-197.43288759072573, 405.5785240290322),
        );
    }

    #[test]
    fn behind_the_camera_does_not_project() {
        for d in [Distortion::None, RADTAN, FISHEYE] {
            let cam = CameraModel::new(&calib(d));
            assert!(cam.project(&Vector3::new(0.1, 0.1, -1.0)).is_none());
            assert!(cam.project(&Vector3::new(0.1, 0.1, 0.0)).is_none());
            assert!(cam.project(&Vector3::new(f64::NAN, 0.1, 1.0)).is_none());
        }
    }

    #[test]
    fn unproject_inverts_project_over_the_image() {
        for d in [Distortion::None, RADTAN, FISHEYE] {
            let cam = CameraModel::new(&calib(d));
            let mut worst = 0.0f64;
            for j in (0..=480).step_by(16) {
                for i in (0..=640).step_by(16) {
                    let px = Point2::new(f64::from(i) - 0.5, f64::from(j) - 0.5);
                    let ray = cam.unproject(&px).unwrap_or_else(|| panic!("{d:?}: {px}"));
                    let back = cam.project(&(ray.into_inner() * 7.0)).expect("projects");
                    worst = worst.max((back - px).norm());
                }
            }
            assert!(worst < 1e-8, "{d:?}: worst round trip {worst} px");
        }
    }

    #[test]
    fn project_then_unproject_recovers_the_ray() {
        let cam = CameraModel::new(&calib(RADTAN));
        let p = Vector3::new(0.3, -0.2, 1.0);
        let px = cam.project(&p).unwrap();
        let ray = cam.unproject(&px).unwrap();
        assert!((ray.into_inner() - p.normalize()).norm() < 1e-11);
    }

    #[test]
    fn the_fold_bounds_the_domain() {
        // r(1 - 0.5 r²) stops growing at r² = 2/3.
        let cam = CameraModel::new(&calib(Distortion::RadialTangential {
            k1: -0.5,
            k2: 0.0,
            p1: 0.0,
            p2: 0.0,
            k3: 0.0,
        }));
        assert!((cam.domain - 2.0 / 3.0).abs() < 1e-9);
        assert!(cam.project(&Vector3::new(0.85, 0.0, 1.0)).is_none());
        assert!(cam.project(&Vector3::new(0.8, 0.0, 1.0)).is_some());
        // A pixel beyond the largest distorted radius sees nothing.
        let rd = cam.distorted_limit;
        assert!(cam
            .unproject(&Point2::new(320.0 + 500.0 * rd * 1.05, 240.0))
            .is_none());
    }

    #[test]
    fn nadir_pose_looks_down_with_image_top_north() {
        let cam = CameraModel::new(&calib(Distortion::None));
        let view = Pose::from_euler(0.0, 0.0, 0.0, 100.0).view(&cam);
        assert!(view.tilt().abs() < 1e-12);
        // Image up (−y) is body forward = north at yaw 0; image right (+x) is east.
        let up = view.camera_to_ned * -Vector3::y();
        let right = view.camera_to_ned * Vector3::x();
        assert!((up - Vector3::x()).norm() < 1e-12 && (right - Vector3::y()).norm() < 1e-12);
        let g = view.ground_point(&Vector3::z()).unwrap();
        assert!((g - Vector3::new(0.0, 0.0, 100.0)).norm() < 1e-9);
    }

    #[test]
    fn pitch_up_moves_the_ground_point_forward_and_the_lever_arm_counts() {
        let mut c = calib(Distortion::None);
        c.mount.lever_arm_m = [0.5, 0.0, 0.2];
        let cam = CameraModel::new(&c);
        // Heading east (yaw 90°), nose up 10°: the belly, and the nadir camera, face 10° forward (east).
        let view = Pose::from_euler(0.0, 10f64.to_radians(), 90f64.to_radians(), 100.0).view(&cam);
        assert!((view.tilt() - 10f64.to_radians()).abs() < 1e-12);
        let g = view.ground_point(&Vector3::z()).unwrap();
        let c = view.centre_ned;
        assert!(
            (c.y - 0.5 * 10f64.to_radians().cos() - 0.2 * 10f64.to_radians().sin()).abs() < 1e-12
        );
        let h = 100.0 - c.z;
        assert!(
            (g.y - (c.y + h * 10f64.to_radians().tan())).abs() < 1e-9,
            "{g}"
        );
        assert!(g.x.abs() < 1e-9 && (g.z - 100.0).abs() < 1e-9);
        // And back into the camera: on the optical axis.
        let p = view.to_camera(&g);
        assert!(p.x.abs() < 1e-9 && p.y.abs() < 1e-9 && p.z > 0.0);
    }

    #[test]
    fn rays_at_or_above_the_horizon_miss_the_ground() {
        let cam = CameraModel::new(&calib(Distortion::None));
        let view = Pose::from_euler(0.0, 0.0, 0.0, 100.0).view(&cam);
        assert!(view.ground_point(&Vector3::x()).is_none());
        assert!(view.ground_point(&-Vector3::z()).is_none());
        let underground = Pose::from_euler(0.0, 0.0, 0.0, -5.0).view(&cam);
        assert!(underground.ground_point(&Vector3::z()).is_none());
    }
}
