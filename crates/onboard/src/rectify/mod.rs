//! The rectify stage: a camera frame → a north-up, nadir view of the ground at the tile cache's scale.
//!
//! - [`calib`]: the camera calibration file (`calib/*.toml`): image size, intrinsics, distortion, mount.
//! - `camera`: [`CameraModel`] (pixels ↔ rays through OpenCV's lens models) and [`Pose`] (attitude and
//!   height above ground → [`CameraView`]: the camera in local NED over a flat ground).
//! - `warp`: [`rectify`], a frame + pose → a north-up, nadir, fixed-GSD view ([`Rectified`]), or a
//!   [`RectifyError`] saying why the pose is refused.
//!
//! ```no_run
//! use vimgeo_onboard::rectify::{rectify, CameraCalibration, CameraModel, Pose, RectifyLimits, RectifyTarget};
//! # fn demo(calib: &CameraCalibration, frame: &image::RgbImage) -> Result<(), Box<dyn std::error::Error>> {
//! let camera = CameraModel::new(calib);
//! let pose = Pose::from_euler_deg(2.0, -3.0, 75.0, 120.0); // roll, pitch, yaw (degrees), height (m)
//! let target = RectifyTarget { size_px: 384, ground_size_m: 80.0 };
//! let view = rectify(frame, &camera, &pose, &target, &RectifyLimits::default())?;
//! println!("centre {:?} m from below the vehicle, coverage {}", view.centre_offset_ne_m, view.coverage);
//! # Ok(()) }
//! ```

pub mod attitude_check;
pub mod calib;
mod camera;
mod warp;

pub use self::attitude_check::{AttitudeCheck, AttitudeVerdict};
pub use self::calib::{CalibError, CameraCalibration, Distortion, ImageSize, Intrinsics, Mount};
pub use self::camera::{CameraModel, CameraView, Pose};
pub use self::warp::bilinear;
pub use self::warp::{rectify, Rectified, RectifyError, RectifyLimits, RectifyTarget};
