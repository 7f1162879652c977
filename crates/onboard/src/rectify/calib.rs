//! Camera calibration: what the rectify stage and the simulated camera need to know about a camera, and the
//! `calib/<camera>.toml` file that carries it (format: `calib/README.md`).
//!
//! Frames: the camera frame is OpenCV's (x right, y down, z along the optical axis, out of the lens); the body
//! frame is the autopilot's FRD (x forward, y right, z down). [`Mount`] gives the rotation camera → body
//! relative to the canonical nadir mount (optical axis straight down, image top towards the nose).
//!
//! Use: [`CameraCalibration::load`] a file (it is parsed into raw file structs, then converted and checked once
//! by [`CameraCalibration::validate`]); [`CameraCalibration::save`] writes one atomically. The importers
//! [`CameraCalibration::from_opencv_yaml`] (cv::FileStorage output of `calibrateCamera` or `fisheye::calibrate`)
//! and [`CameraCalibration::from_ros_camera_info`] (ROS `camera_calibration_parsers` YAML) turn a foreign file
//! into a validated calibration with a nadir mount, to be completed by hand and saved. Every error is a
//! [`CalibError`] naming the file and the field.

use std::path::Path;

use nalgebra::{Rotation3, Vector3};
use serde::{Deserialize, Serialize};
use serde_yaml_ng::Value as Yaml;

/// Image size in pixels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ImageSize {
    /// Width, px.
    pub width: u32,
    /// Height, px.
    pub height: u32,
}

/// Pinhole intrinsics in pixels (pixel centres at integer coordinates, OpenCV convention).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Intrinsics {
    /// Focal length along x, px.
    pub fx: f64,
    /// Focal length along y, px.
    pub fy: f64,
    /// Principal point x, px.
    pub cx: f64,
    /// Principal point y, px.
    pub cy: f64,
}

/// Lens distortion, in OpenCV's models and coefficient order.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Distortion {
    /// An ideal pinhole.
    None,
    /// OpenCV's default radial-tangential (plumb bob) model: k1, k2, p1, p2, k3.
    RadialTangential {
        /// Radial r².
        k1: f64,
        /// Radial r⁴.
        k2: f64,
        /// Tangential.
        p1: f64,
        /// Tangential.
        p2: f64,
        /// Radial r⁶.
        k3: f64,
    },
    /// OpenCV's fisheye (equidistant) model: θd = θ(1 + k1θ² + k2θ⁴ + k3θ⁶ + k4θ⁸).
    Equidistant {
        /// θ².
        k1: f64,
        /// θ⁴.
        k2: f64,
        /// θ⁶.
        k3: f64,
        /// θ⁸.
        k4: f64,
    },
}

/// How the camera sits on the airframe.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Mount {
    /// Rotation of the camera relative to the canonical nadir mount, degrees, applied in the body frame as
    /// `Rz(yaw) · Ry(pitch) · Rx(roll)` (FRD axes). All zero: the optical axis points along body +z (down) and
    /// the image's top edge towards the nose.
    pub rotation_deg: [f64; 3],
    /// The camera's optical centre in the body frame (FRD), metres, from the autopilot's reference point.
    pub lever_arm_m: [f64; 3],
}

impl Default for Mount {
    fn default() -> Self {
        Self {
            rotation_deg: [0.0; 3],
            lever_arm_m: [0.0; 3],
        }
    }
}

impl Mount {
    /// The rotation taking camera-frame vectors to body-frame vectors.
    pub fn camera_to_body(&self) -> Rotation3<f64> {
        // Canonical nadir mount: x_cam = body right, y_cam = body backward, z_cam = body down.
        let nadir = Rotation3::from_matrix_unchecked(nalgebra::Matrix3::new(
            0.0, -1.0, 0.0, //
            1.0, 0.0, 0.0, //
            0.0, 0.0, 1.0,
        ));
        let [roll, pitch, yaw] = self.rotation_deg.map(f64::to_radians);
        let extra = Rotation3::from_axis_angle(&Vector3::z_axis(), yaw)
            * Rotation3::from_axis_angle(&Vector3::y_axis(), pitch)
            * Rotation3::from_axis_angle(&Vector3::x_axis(), roll);
        extra * nadir
    }
}

/// One camera's calibration, as read from `calib/<camera>.toml` (see `calib/README.md`).
#[derive(Debug, Clone, PartialEq)]
pub struct CameraCalibration {
    /// A short name for logs and reports.
    pub name: String,
    /// True for an illustrative file (typical values for a camera model), not a measured calibration; the
    /// onboard binary warns when flying with one.
    pub example: bool,
    /// The image size the intrinsics refer to.
    pub image: ImageSize,
    /// Pinhole intrinsics.
    pub intrinsics: Intrinsics,
    /// Lens distortion.
    pub distortion: Distortion,
    /// Mounting on the airframe.
    pub mount: Mount,
}

/// The `format` value every calibration file carries.
pub const CALIB_FORMAT: &str = "vimgeo-camera";
/// The only file version this build reads.
pub const CALIB_VERSION: i64 = 1;

/// Largest accepted image side, px (the largest sensors a companion computer streams are well below).
const MAX_IMAGE_SIDE: i64 = 16_384;
/// Largest accepted lever arm component, m: cameras sit on the airframe, not metres away from it.
const MAX_LEVER_ARM_M: f64 = 10.0;

/// A calibration that cannot be read, written, imported or accepted.
#[derive(Debug, thiserror::Error)]
pub enum CalibError {
    /// The file could not be read.
    #[error("{origin}: cannot read: {source}")]
    Read {
        /// The file.
        origin: String,
        /// Why.
        source: std::io::Error,
    },
    /// The file could not be written (or moved into place).
    #[error("{origin}: cannot write: {source}")]
    Write {
        /// The file.
        origin: String,
        /// Why.
        source: std::io::Error,
    },
    /// The text is not well-formed TOML / YAML, or a key is missing, unknown or of the wrong type.
    #[error("{origin}: {message}")]
    Syntax {
        /// The file (or what the text came from).
        origin: String,
        /// What is wrong, with the key and, where known, the line.
        message: String,
    },
    /// A field holds a value a calibration cannot have.
    #[error("{origin}: {field}: {message}")]
    Invalid {
        /// The file (or what the calibration came from).
        origin: String,
        /// The field, as a dotted path (`intrinsics.fx`).
        field: String,
        /// What is wrong, with the value found.
        message: String,
    },
    /// A foreign file uses a model vimgeo does not implement (rational, thin-prism, tilted, skewed camera).
    #[error("{origin}: {field}: unsupported: {message}")]
    Unsupported {
        /// The file.
        origin: String,
        /// The field.
        field: String,
        /// Which model and why it is refused.
        message: String,
    },
}

fn invalid(origin: &str, field: &str, message: impl Into<String>) -> CalibError {
    CalibError::Invalid {
        origin: origin.to_string(),
        field: field.to_string(),
        message: message.into(),
    }
}

// ---------------------------------------------------------------------------------------------------------
// The TOML file: raw structs, exactly the file's shape. Converted and checked once, in `from_raw`.
// ---------------------------------------------------------------------------------------------------------

/// Only the header, read first so a file of another format or version is refused for that, not for the keys
/// it has and this version does not know.
#[derive(Deserialize)]
struct RawHeader {
    format: Option<toml::Value>,
    version: Option<toml::Value>,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    format: String,
    version: i64,
    name: String,
    example: bool,
    image: RawImage,
    intrinsics: RawIntrinsics,
    distortion: RawDistortion,
    mount: RawMount,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawImage {
    // Signed so that a negative size gets our message, not a type error.
    width: i64,
    height: i64,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawIntrinsics {
    fx: f64,
    fy: f64,
    cx: f64,
    cy: f64,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "model", rename_all = "lowercase", deny_unknown_fields)]
enum RawDistortion {
    None,
    Radtan {
        k1: f64,
        k2: f64,
        p1: f64,
        p2: f64,
        k3: f64,
    },
    Equidistant {
        k1: f64,
        k2: f64,
        k3: f64,
        k4: f64,
    },
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMount {
    rotation_deg: [f64; 3],
    lever_arm_m: [f64; 3],
}

/// `line N, column M (`the line`): ` for a byte span of `text`.
fn position(text: &str, span: Option<std::ops::Range<usize>>) -> String {
    let Some(span) = span else {
        return String::new();
    };
    let before = &text[..span.start.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
    // The line itself names the key for type and value errors, whose messages do not.
    let start = before.rfind('\n').map_or(0, |i| i + 1);
    let text_line = text[start..].lines().next().unwrap_or("").trim();
    format!("line {line}, column {column} (`{text_line}`): ")
}

fn toml_error(origin: &str, text: &str, e: &toml::de::Error) -> CalibError {
    CalibError::Syntax {
        origin: origin.to_string(),
        message: format!("{}{}", position(text, e.span()), e.message().trim_end()),
    }
}

impl CameraCalibration {
    /// Reads and validates a `calib/<camera>.toml` file.
    pub fn load(path: impl AsRef<Path>) -> Result<Self, CalibError> {
        let path = path.as_ref();
        let origin = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| CalibError::Read {
            origin: origin.clone(),
            source,
        })?;
        Self::from_toml_str(&text, &origin)
    }

    /// Parses and validates calibration TOML; `origin` (a path, or e.g. `<built-in>`) starts every message.
    pub fn from_toml_str(text: &str, origin: &str) -> Result<Self, CalibError> {
        let header: RawHeader = toml::from_str(text).map_err(|e| toml_error(origin, text, &e))?;
        match &header.format {
            None => {
                return Err(invalid(
                    origin,
                    "format",
                    format!("missing; expected \"{CALIB_FORMAT}\""),
                ))
            }
            Some(toml::Value::String(f)) if f == CALIB_FORMAT => {}
            Some(other) => {
                return Err(invalid(
                    origin,
                    "format",
                    format!("expected \"{CALIB_FORMAT}\", got {other}"),
                ))
            }
        }
        match &header.version {
            None => {
                return Err(invalid(
                    origin,
                    "version",
                    format!("missing; expected {CALIB_VERSION}"),
                ))
            }
            Some(toml::Value::Integer(v)) if *v == CALIB_VERSION => {}
            Some(other) => {
                return Err(invalid(
                    origin,
                    "version",
                    format!("this build reads version {CALIB_VERSION} only, got {other}"),
                ))
            }
        }
        let raw: RawFile = toml::from_str(text).map_err(|e| toml_error(origin, text, &e))?;
        Self::from_raw(raw, origin)
    }

    fn from_raw(raw: RawFile, origin: &str) -> Result<Self, CalibError> {
        let side = |field: &str, v: i64| -> Result<u32, CalibError> {
            if (1..=MAX_IMAGE_SIDE).contains(&v) {
                Ok(v as u32)
            } else {
                Err(invalid(
                    origin,
                    field,
                    format!("must be an integer in 1..={MAX_IMAGE_SIDE}, got {v}"),
                ))
            }
        };
        let calib = Self {
            name: raw.name,
            example: raw.example,
            image: ImageSize {
                width: side("image.width", raw.image.width)?,
                height: side("image.height", raw.image.height)?,
            },
            intrinsics: Intrinsics {
                fx: raw.intrinsics.fx,
                fy: raw.intrinsics.fy,
                cx: raw.intrinsics.cx,
                cy: raw.intrinsics.cy,
            },
            distortion: match raw.distortion {
                RawDistortion::None => Distortion::None,
                RawDistortion::Radtan { k1, k2, p1, p2, k3 } => {
                    Distortion::RadialTangential { k1, k2, p1, p2, k3 }
                }
                RawDistortion::Equidistant { k1, k2, k3, k4 } => {
                    Distortion::Equidistant { k1, k2, k3, k4 }
                }
            },
            mount: Mount {
                rotation_deg: raw.mount.rotation_deg,
                lever_arm_m: raw.mount.lever_arm_m,
            },
        };
        calib.check(origin)?;
        Ok(calib)
    }

    fn to_raw(&self) -> RawFile {
        RawFile {
            format: CALIB_FORMAT.to_string(),
            version: CALIB_VERSION,
            name: self.name.clone(),
            example: self.example,
            image: RawImage {
                width: i64::from(self.image.width),
                height: i64::from(self.image.height),
            },
            intrinsics: RawIntrinsics {
                fx: self.intrinsics.fx,
                fy: self.intrinsics.fy,
                cx: self.intrinsics.cx,
                cy: self.intrinsics.cy,
            },
            distortion: match self.distortion {
                Distortion::None => RawDistortion::None,
                Distortion::RadialTangential { k1, k2, p1, p2, k3 } => {
                    RawDistortion::Radtan { k1, k2, p1, p2, k3 }
                }
                Distortion::Equidistant { k1, k2, k3, k4 } => {
                    RawDistortion::Equidistant { k1, k2, k3, k4 }
                }
            },
            mount: RawMount {
                rotation_deg: self.mount.rotation_deg,
                lever_arm_m: self.mount.lever_arm_m,
            },
        }
    }

    /// The calibration as file text (what [`save`](Self::save) writes); [`from_toml_str`](Self::from_toml_str)
    /// reads it back to an equal value.
    pub fn to_toml_string(&self) -> Result<String, CalibError> {
        let body = toml::to_string(&self.to_raw()).map_err(|e| CalibError::Syntax {
            origin: format!("calibration `{}`", self.name),
            message: format!("cannot serialise: {e}"),
        })?;
        Ok(format!(
            "# vimgeo camera calibration; format: calib/README.md. Frames: OpenCV camera, FRD body.\n{body}"
        ))
    }

    /// Validates and writes the calibration to `path` atomically, so a reader never sees half a file.
    pub fn save(&self, path: impl AsRef<Path>) -> Result<(), CalibError> {
        let path = path.as_ref();
        let origin = path.display().to_string();
        self.check(&origin)?;
        let text = self.to_toml_string()?;
        crate::util::write_atomic_bytes(path, text.as_bytes()).map_err(|e| CalibError::Write {
            origin,
            source: e.source,
        })
    }

    /// Checks every field (ranges, finiteness, invertible distortion over the image); messages start with
    /// ``calibration `<name>` ``. Loading and the importers run the same checks with the file as origin.
    pub fn validate(&self) -> Result<(), CalibError> {
        self.check(&format!("calibration `{}`", self.name))
    }

    fn check(&self, origin: &str) -> Result<(), CalibError> {
        let ImageSize { width, height } = self.image;
        for (field, v) in [("image.width", width), ("image.height", height)] {
            if v == 0 || i64::from(v) > MAX_IMAGE_SIDE {
                return Err(invalid(
                    origin,
                    field,
                    format!("must be an integer in 1..={MAX_IMAGE_SIDE}, got {v}"),
                ));
            }
        }
        let Intrinsics { fx, fy, cx, cy } = self.intrinsics;
        for (field, v) in [("intrinsics.fx", fx), ("intrinsics.fy", fy)] {
            if !(v.is_finite() && v > 0.0) {
                return Err(invalid(
                    origin,
                    field,
                    format!("must be a finite number > 0, got {v}"),
                ));
            }
        }
        let aspect = fx / fy;
        if !(0.5..=2.0).contains(&aspect) {
            return Err(invalid(
                origin,
                "intrinsics.fy",
                format!(
                    "fx/fy must be within 0.5..2 (square-ish pixels), got fx = {fx}, fy = {fy}"
                ),
            ));
        }
        let (w, h) = (f64::from(width), f64::from(height));
        if !(cx.is_finite() && (0.0..w).contains(&cx)) {
            return Err(invalid(
                origin,
                "intrinsics.cx",
                format!("must lie in the image, [0, {width}), got {cx}"),
            ));
        }
        if !(cy.is_finite() && (0.0..h).contains(&cy)) {
            return Err(invalid(
                origin,
                "intrinsics.cy",
                format!("must lie in the image, [0, {height}), got {cy}"),
            ));
        }
        self.check_distortion(origin)?;
        for (i, axis) in ["roll", "pitch", "yaw"].iter().enumerate() {
            let a = self.mount.rotation_deg[i];
            if !(a.is_finite() && a.abs() <= 180.0) {
                return Err(invalid(
                    origin,
                    &format!("mount.rotation_deg[{i}]"),
                    format!("{axis} must be a finite angle in [-180, 180] degrees, got {a}"),
                ));
            }
        }
        for (i, &v) in self.mount.lever_arm_m.iter().enumerate() {
            if !(v.is_finite() && v.abs() <= MAX_LEVER_ARM_M) {
                return Err(invalid(
                    origin,
                    &format!("mount.lever_arm_m[{i}]"),
                    format!("must be a finite distance within ±{MAX_LEVER_ARM_M} m, got {v}"),
                ));
            }
        }
        Ok(())
    }

    /// The largest normalised *distorted* radius in the image: the corner farthest from the principal point,
    /// measured at the pixel edges (half a pixel beyond the corner pixels' centres).
    fn corner_radius(&self) -> f64 {
        let Intrinsics { fx, fy, cx, cy } = self.intrinsics;
        let (w, h) = (f64::from(self.image.width), f64::from(self.image.height));
        [
            (-0.5, -0.5),
            (w - 0.5, -0.5),
            (-0.5, h - 0.5),
            (w - 0.5, h - 0.5),
        ]
        .iter()
        .map(|&(u, v)| ((u - cx) / fx).hypot((v - cy) / fy))
        .fold(0.0, f64::max)
    }

    fn check_distortion(&self, origin: &str) -> Result<(), CalibError> {
        // Coefficient bounds: a real lens calibrated by OpenCV has |k1| ≲ 1 and |p| ≲ 0.01; higher orders grow
        // when they compensate each other on wide lenses (|k2| of a few, |k3| of tens are seen). The bounds sit
        // one to two orders of magnitude above that, to catch unit mistakes and garbage, not to judge the fit:
        // the monotonicity check below is what guarantees the model can be inverted.
        let bounded = |field: &str, v: f64, bound: f64| -> Result<(), CalibError> {
            if v.is_finite() && v.abs() <= bound {
                Ok(())
            } else {
                Err(invalid(
                    origin,
                    field,
                    format!("must be a finite coefficient within ±{bound}, got {v}"),
                ))
            }
        };
        let corner = self.corner_radius();
        match self.distortion {
            Distortion::None => Ok(()),
            Distortion::RadialTangential { k1, k2, p1, p2, k3 } => {
                bounded("distortion.k1", k1, 10.0)?;
                bounded("distortion.k2", k2, 100.0)?;
                bounded("distortion.k3", k3, 1000.0)?;
                bounded("distortion.p1", p1, 0.5)?;
                bounded("distortion.p2", p2, 0.5)?;
                // Radial part only: the tangential terms are orders of magnitude smaller and do not change
                // whether the radius grows. r is tan θ of the undistorted ray; stop at 89.4° off-axis.
                let rd = |r: f64| {
                    let r2 = r * r;
                    r * (1.0 + r2 * (k1 + r2 * (k2 + r2 * k3)))
                };
                let slope = |r: f64| {
                    let r2 = r * r;
                    1.0 + r2 * (3.0 * k1 + r2 * (5.0 * k2 + r2 * 7.0 * k3))
                };
                monotonic_to(origin, "radtan", rd, slope, corner, 100.0)
            }
            Distortion::Equidistant { k1, k2, k3, k4 } => {
                for (field, v) in [
                    ("distortion.k1", k1),
                    ("distortion.k2", k2),
                    ("distortion.k3", k3),
                    ("distortion.k4", k4),
                ] {
                    // Fisheye coefficients of real lenses are |k| < 1; ten times that is garbage.
                    bounded(field, v, 10.0)?;
                }
                let thd = |t: f64| {
                    let t2 = t * t;
                    t * (1.0 + t2 * (k1 + t2 * (k2 + t2 * (k3 + t2 * k4))))
                };
                let slope = |t: f64| {
                    let t2 = t * t;
                    1.0 + t2 * (3.0 * k1 + t2 * (5.0 * k2 + t2 * (7.0 * k3 + t2 * 9.0 * k4)))
                };
                // OpenCV's fisheye model takes θ = atan2(r, z) ∈ [0, π/2] for rays in front of the camera.
                monotonic_to(
                    origin,
                    "equidistant",
                    thd,
                    slope,
                    corner,
                    std::f64::consts::FRAC_PI_2,
                )
            }
        }
    }
}

/// Walks the undistorted radius (or angle) from 0 until the distorted one reaches the image corner's, and
/// refuses the model if its slope turns non-positive first (two rays would land on one pixel, so the frame
/// cannot be undistorted) or if it never reaches the corner within `limit`.
fn monotonic_to(
    origin: &str,
    model: &str,
    distorted: impl Fn(f64) -> f64,
    slope: impl Fn(f64) -> f64,
    corner: f64,
    limit: f64,
) -> Result<(), CalibError> {
    const STEPS_PER_UNIT: f64 = 2000.0;
    let steps = (limit * STEPS_PER_UNIT).ceil() as usize;
    for i in 0..=steps {
        let x = limit * i as f64 / steps as f64;
        if distorted(x) >= corner {
            return Ok(());
        }
        if slope(x) <= 0.0 {
            return Err(invalid(
                origin,
                "distortion",
                format!(
                    "the {model} model is not monotonic over the image: the distorted radius stops growing at \
                     {:.3} (normalised) before the image corner's {:.3}; the calibration cannot be inverted \
                     (an over-fitted high-order term?)",
                    distorted(x),
                    corner
                ),
            ));
        }
    }
    Err(invalid(
        origin,
        "distortion",
        format!(
            "the {model} model never reaches the image corner's normalised radius {corner:.3} (it reaches {:.3} \
             at the end of the field of view)",
            distorted(limit)
        ),
    ))
}

// ---------------------------------------------------------------------------------------------------------
// Importers: OpenCV FileStorage YAML and ROS camera_info YAML → one CameraCalibration.
// ---------------------------------------------------------------------------------------------------------

/// A parsed foreign YAML file and where it came from.
struct YamlDoc {
    origin: String,
    root: serde_yaml_ng::Mapping,
    stem: String,
}

impl YamlDoc {
    fn read(path: &Path) -> Result<Self, CalibError> {
        let origin = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| CalibError::Read {
            origin: origin.clone(),
            source,
        })?;
        // cv::FileStorage starts with `%YAML:1.0`, a directive YAML parsers refuse (the colon); the document
        // is otherwise plain YAML 1.1, so the directive line is dropped. A well-formed `%YAML 1.x` goes too.
        let body: String = if text.trim_start().starts_with("%YAML") {
            let start = text.len() - text.trim_start().len();
            let rest = &text[start..];
            rest.find('\n').map_or("", |i| &rest[i + 1..]).to_string()
        } else {
            text
        };
        let root: Yaml = serde_yaml_ng::from_str(&body).map_err(|e| CalibError::Syntax {
            origin: origin.clone(),
            message: format!("malformed YAML: {e}"),
        })?;
        let root = match root {
            Yaml::Mapping(m) => m,
            Yaml::Tagged(t) if t.value.is_mapping() => {
                t.value.as_mapping().cloned().unwrap_or_default()
            }
            _ => {
                return Err(CalibError::Syntax {
                    origin,
                    message: "malformed YAML: the document is not a mapping of keys".to_string(),
                })
            }
        };
        let stem = path.file_stem().map_or_else(
            || "camera".to_string(),
            |s| s.to_string_lossy().into_owned(),
        );
        Ok(Self { origin, root, stem })
    }

    fn get(&self, key: &str) -> Option<&Yaml> {
        self.root.get(key)
    }

    /// The first present key of `keys` (OpenCV samples spell the same thing differently).
    fn get_any<'a>(&self, keys: &[&'a str]) -> Option<(&'a str, &Yaml)> {
        keys.iter().find_map(|k| self.get(k).map(|v| (*k, v)))
    }

    fn missing(&self, field: &str) -> CalibError {
        CalibError::Syntax {
            origin: self.origin.clone(),
            message: format!("{field}: missing"),
        }
    }

    fn bad(&self, field: &str, message: impl Into<String>) -> CalibError {
        invalid(&self.origin, field, message)
    }

    fn image_side(&self, key: &str) -> Result<u32, CalibError> {
        let v = self.get(key).ok_or_else(|| self.missing(key))?;
        match v.as_i64() {
            Some(n) if (1..=MAX_IMAGE_SIDE).contains(&n) => Ok(n as u32),
            _ => Err(self.bad(
                key,
                format!(
                    "must be an integer in 1..={MAX_IMAGE_SIDE}, got {}",
                    show(v)
                ),
            )),
        }
    }

    /// A `{rows, cols, data}` matrix (OpenCV's `!!opencv-matrix` or ROS's plain map), row-major.
    fn matrix(&self, field: &str, v: &Yaml) -> Result<(usize, usize, Vec<f64>), CalibError> {
        let m = v.as_mapping().ok_or_else(|| {
            self.bad(
                field,
                format!("expected a matrix {{rows, cols, data}}, got {}", show(v)),
            )
        })?;
        let dim = |key: &str| -> Result<usize, CalibError> {
            let d = m
                .get(key)
                .ok_or_else(|| self.missing(&format!("{field}.{key}")))?;
            d.as_u64()
                .and_then(|n| usize::try_from(n).ok())
                .ok_or_else(|| {
                    self.bad(
                        &format!("{field}.{key}"),
                        format!("expected a count, got {}", show(d)),
                    )
                })
        };
        let (rows, cols) = (dim("rows")?, dim("cols")?);
        if let Some(dt) = m.get("dt") {
            // OpenCV's element type: d (f64) or f (f32); anything else is not a calibration matrix.
            if !matches!(dt.as_str(), Some("d" | "f")) {
                return Err(self.bad(
                    &format!("{field}.dt"),
                    format!(
                        "expected a floating-point matrix (d or f), got {}",
                        show(dt)
                    ),
                ));
            }
        }
        let data_field = format!("{field}.data");
        let data = m.get("data").ok_or_else(|| self.missing(&data_field))?;
        let seq = data.as_sequence().ok_or_else(|| {
            self.bad(
                &data_field,
                format!("expected a list of numbers, got {}", show(data)),
            )
        })?;
        let values = seq
            .iter()
            .enumerate()
            .map(|(i, x)| {
                number(x).ok_or_else(|| {
                    self.bad(
                        &format!("{data_field}[{i}]"),
                        format!("expected a number, got {}", show(x)),
                    )
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        if values.len() != rows * cols {
            return Err(self.bad(
                &data_field,
                format!("has {} values for a {rows}x{cols} matrix", values.len()),
            ));
        }
        Ok((rows, cols, values))
    }

    /// The 3x3 camera matrix → intrinsics; refuses skew and a non-pinhole last row.
    fn camera_matrix(&self, keys: &[&str]) -> Result<Intrinsics, CalibError> {
        let (key, v) = self.get_any(keys).ok_or_else(|| self.missing(keys[0]))?;
        let (rows, cols, k) = self.matrix(key, v)?;
        if (rows, cols) != (3, 3) {
            return Err(self.bad(key, format!("expected a 3x3 matrix, got {rows}x{cols}")));
        }
        let (fx, fy) = (k[0], k[4]);
        // OpenCV and ROS never estimate skew; a nonzero one means this is not a pinhole K.
        if k[1].abs() > 1e-9 * fx.abs().max(1.0) {
            return Err(CalibError::Unsupported {
                origin: self.origin.clone(),
                field: key.to_string(),
                message: format!(
                    "a skewed camera matrix (K[0][1] = {}) is not supported",
                    k[1]
                ),
            });
        }
        if k[3] != 0.0 || k[6] != 0.0 || k[7] != 0.0 || k[8] != 1.0 {
            return Err(self.bad(
                key,
                format!("not a camera matrix: expected [fx 0 cx; 0 fy cy; 0 0 1], got {k:?}"),
            ));
        }
        Ok(Intrinsics {
            fx,
            fy,
            cx: k[2],
            cy: k[5],
        })
    }

    /// The distortion vector (a 1xN or Nx1 matrix).
    fn coefficients(&self, keys: &[&str]) -> Result<(String, Vec<f64>), CalibError> {
        let (key, v) = self.get_any(keys).ok_or_else(|| self.missing(keys[0]))?;
        let (rows, cols, d) = self.matrix(key, v)?;
        if rows != 1 && cols != 1 {
            return Err(self.bad(
                key,
                format!("expected a vector (1xN or Nx1), got {rows}x{cols}"),
            ));
        }
        Ok((key.to_string(), d))
    }

    fn string(&self, key: &str) -> Result<Option<String>, CalibError> {
        match self.get(key) {
            None | Some(Yaml::Null) => Ok(None),
            Some(v) => v
                .as_str()
                .map(|s| Some(s.to_string()))
                .ok_or_else(|| self.bad(key, format!("expected a string, got {}", show(v)))),
        }
    }

    fn finish(&self, calib: CameraCalibration) -> Result<CameraCalibration, CalibError> {
        calib.check(&self.origin)?;
        log::warn!(
            "{}: imported calibration `{}` has no mount: assuming the nadir mount (optical axis down, image top \
             to the nose, no lever arm); edit [mount] in the saved TOML if the camera sits otherwise",
            self.origin,
            calib.name
        );
        Ok(calib)
    }
}

/// A YAML number (or a numeric string: OpenCV writes `.Nan`/`0.` forms some parsers keep as strings).
fn number(v: &Yaml) -> Option<f64> {
    match v {
        Yaml::Number(n) => n.as_f64(),
        Yaml::String(s) => s.trim().parse().ok(),
        Yaml::Tagged(t) => number(&t.value),
        _ => None,
    }
}

/// A short rendering of a YAML value for messages.
fn show(v: &Yaml) -> String {
    let s = serde_yaml_ng::to_string(v).unwrap_or_else(|_| format!("{v:?}"));
    let s = s.trim().replace('\n', " ");
    if s.len() > 60 {
        format!("{}…", &s[..s.floor_char_boundary(60)])
    } else {
        s
    }
}

/// Radial-tangential from OpenCV's order k1 k2 p1 p2 [k3 [k4 k5 k6 [s1 s2 s3 s4 [τx τy]]]]: 4 or 5 values, or
/// more if every extra (rational, thin-prism, tilt) term is zero.
fn radtan_from(doc: &YamlDoc, field: &str, d: &[f64]) -> Result<Distortion, CalibError> {
    if !matches!(d.len(), 4 | 5 | 8 | 12 | 14) {
        return Err(doc.bad(
            field,
            format!(
                "expected 4, 5, 8, 12 or 14 coefficients (OpenCV's k1 k2 p1 p2 [k3 ...]), got {}",
                d.len()
            ),
        ));
    }
    if d.len() > 5 && d[5..].iter().any(|&x| x != 0.0) {
        let model = match d.len() {
            8 => "the rational model (k4, k5, k6)",
            12 => "the rational + thin-prism model (k4..k6, s1..s4)",
            _ => "the rational + thin-prism + tilted model (k4..k6, s1..s4, τx, τy)",
        };
        return Err(CalibError::Unsupported {
            origin: doc.origin.clone(),
            field: field.to_string(),
            message: format!(
                "{model} has nonzero extra terms {:?}; vimgeo implements radial-tangential (k1 k2 p1 p2 k3) only: \
                 recalibrate without CALIB_RATIONAL_MODEL / CALIB_THIN_PRISM_MODEL / CALIB_TILTED_MODEL",
                &d[5..]
            ),
        });
    }
    Ok(Distortion::RadialTangential {
        k1: d[0],
        k2: d[1],
        p1: d[2],
        p2: d[3],
        k3: d.get(4).copied().unwrap_or(0.0),
    })
}

fn equidistant_from(doc: &YamlDoc, field: &str, d: &[f64]) -> Result<Distortion, CalibError> {
    if d.len() != 4 {
        return Err(doc.bad(
            field,
            format!(
                "the fisheye (equidistant) model has 4 coefficients k1..k4, got {}",
                d.len()
            ),
        ));
    }
    Ok(Distortion::Equidistant {
        k1: d[0],
        k2: d[1],
        k3: d[2],
        k4: d[3],
    })
}

impl CameraCalibration {
    /// Imports an OpenCV calibration written by `cv::FileStorage` (`%YAML:1.0`, `!!opencv-matrix`): keys
    /// `image_width`, `image_height`, `camera_matrix` (or `K`), `distortion_coefficients` (or `D`), and an
    /// optional `distortion_model` (`fisheye`/`equidistant` for `cv::fisheye` output, else radial-tangential).
    /// The name is the file stem; the mount is nadir (a warning says so).
    pub fn from_opencv_yaml(path: impl AsRef<Path>) -> Result<Self, CalibError> {
        let doc = YamlDoc::read(path.as_ref())?;
        let width = doc.image_side("image_width")?;
        let height = doc.image_side("image_height")?;
        let intrinsics = doc.camera_matrix(&["camera_matrix", "K"])?;
        let (field, d) = doc.coefficients(&["distortion_coefficients", "D"])?;
        let distortion = match doc.string("distortion_model")?.as_deref() {
            Some("fisheye" | "equidistant") => equidistant_from(&doc, &field, &d)?,
            None | Some("plumb_bob" | "radtan" | "radial_tangential" | "pinhole") => {
                // cv::fisheye output carries no model name and also has 4 coefficients: say which we chose.
                if d.len() == 4 && doc.get("distortion_model").is_none() {
                    log::warn!(
                        "{}: {field}: 4 coefficients and no distortion_model: read as radial-tangential \
                         k1 k2 p1 p2 (k3 = 0); add `distortion_model: fisheye` if this is cv::fisheye output",
                        doc.origin
                    );
                }
                radtan_from(&doc, &field, &d)?
            }
            Some(other) => {
                return Err(CalibError::Unsupported {
                    origin: doc.origin.clone(),
                    field: "distortion_model".to_string(),
                    message: format!("`{other}`; expected fisheye, equidistant or plumb_bob"),
                })
            }
        };
        let calib = Self {
            name: doc.stem.clone(),
            example: false,
            image: ImageSize { width, height },
            intrinsics,
            distortion,
            mount: Mount::default(),
        };
        doc.finish(calib)
    }

    /// Imports a ROS `camera_info` YAML (`camera_calibration_parsers`): `image_width`, `image_height`,
    /// `camera_name`, `camera_matrix`, `distortion_model` (`plumb_bob`, `rational_polynomial` with zero extra
    /// terms, or `equidistant`), `distortion_coefficients`. `rectification_matrix` and `projection_matrix`
    /// describe stereo rectification and are ignored. The mount is nadir (a warning says so).
    pub fn from_ros_camera_info(path: impl AsRef<Path>) -> Result<Self, CalibError> {
        let doc = YamlDoc::read(path.as_ref())?;
        let width = doc.image_side("image_width")?;
        let height = doc.image_side("image_height")?;
        let intrinsics = doc.camera_matrix(&["camera_matrix"])?;
        let model = doc
            .string("distortion_model")?
            .ok_or_else(|| doc.missing("distortion_model"))?;
        let (field, d) = doc.coefficients(&["distortion_coefficients"])?;
        let distortion = match model.as_str() {
            "plumb_bob" => {
                if !matches!(d.len(), 4 | 5) {
                    return Err(doc.bad(
                        &field,
                        format!("plumb_bob has 5 coefficients, got {}", d.len()),
                    ));
                }
                radtan_from(&doc, &field, &d)?
            }
            "rational_polynomial" => {
                if d.len() != 8 {
                    return Err(doc.bad(
                        &field,
                        format!("rational_polynomial has 8 coefficients, got {}", d.len()),
                    ));
                }
                radtan_from(&doc, &field, &d)?
            }
            "equidistant" => equidistant_from(&doc, &field, &d)?,
            other => {
                return Err(CalibError::Unsupported {
                    origin: doc.origin.clone(),
                    field: "distortion_model".to_string(),
                    message: format!(
                        "`{other}`; expected plumb_bob, rational_polynomial or equidistant"
                    ),
                })
            }
        };
        let name = doc
            .string("camera_name")?
            .unwrap_or_else(|| doc.stem.clone());
        let calib = Self {
            name,
            example: false,
            image: ImageSize { width, height },
            intrinsics,
            distortion,
            mount: Mount::default(),
        };
        doc.finish(calib)
    }
}

/// The simulation camera of `calib/sim.toml`, as a value: the one fixture every unit test of the geometry uses.
#[cfg(test)]
pub(crate) fn sim_calibration() -> CameraCalibration {
    CameraCalibration {
        name: "sim".into(),
        example: false,
        image: ImageSize {
            width: 640,
            height: 480,
        },
        intrinsics: Intrinsics {
            fx: 457.0,
            fy: 457.0,
            cx: 319.5,
            cy: 239.5,
        },
        distortion: Distortion::RadialTangential {
            k1: -0.05,
            k2: 0.01,
            p1: 0.0,
            p2: 0.0,
            k3: 0.0,
        },
        mount: Mount {
            rotation_deg: [0.0; 3],
            lever_arm_m: [0.05, 0.0, 0.1],
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sim() -> CameraCalibration {
        sim_calibration()
    }

    fn field_of(e: CalibError) -> String {
        match e {
            CalibError::Invalid { field, .. } | CalibError::Unsupported { field, .. } => field,
            other => panic!("expected a field error, got {other}"),
        }
    }

    #[test]
    fn toml_round_trip_is_exact() {
        let c = sim();
        let text = c.to_toml_string().unwrap();
        assert_eq!(CameraCalibration::from_toml_str(&text, "t").unwrap(), c);
        let mut f = c.clone();
        f.distortion = Distortion::Equidistant {
            k1: 0.1,
            k2: -0.01,
            k3: 0.001,
            k4: 0.0,
        };
        let text = f.to_toml_string().unwrap();
        assert_eq!(CameraCalibration::from_toml_str(&text, "t").unwrap(), f);
        let mut n = c;
        n.distortion = Distortion::None;
        let text = n.to_toml_string().unwrap();
        assert!(text.contains("model = \"none\""), "{text}");
        assert_eq!(CameraCalibration::from_toml_str(&text, "t").unwrap(), n);
    }

    #[test]
    fn field_checks() {
        let mut c = sim();
        c.intrinsics.fx = -3.0;
        let e = c.validate().unwrap_err();
        assert_eq!(
            e.to_string(),
            "calibration `sim`: intrinsics.fx: must be a finite number > 0, got -3"
        );
        let mut c = sim();
        c.intrinsics.fx = f64::NAN;
        assert_eq!(field_of(c.validate().unwrap_err()), "intrinsics.fx");
        let mut c = sim();
        c.intrinsics.fy = 200.0;
        assert_eq!(field_of(c.validate().unwrap_err()), "intrinsics.fy");
        let mut c = sim();
        c.intrinsics.cx = 640.0;
        assert_eq!(field_of(c.validate().unwrap_err()), "intrinsics.cx");
        let mut c = sim();
        c.intrinsics.cy = -0.1;
        assert_eq!(field_of(c.validate().unwrap_err()), "intrinsics.cy");
        let mut c = sim();
        c.image.width = 20_000;
        assert_eq!(field_of(c.validate().unwrap_err()), "image.width");
        let mut c = sim();
        c.mount.rotation_deg[1] = 181.0;
        assert_eq!(field_of(c.validate().unwrap_err()), "mount.rotation_deg[1]");
        let mut c = sim();
        c.mount.lever_arm_m[2] = 11.0;
        assert_eq!(field_of(c.validate().unwrap_err()), "mount.lever_arm_m[2]");
        let mut c = sim();
        c.distortion = Distortion::RadialTangential {
            k1: 0.0,
            k2: 0.0,
            p1: 0.0,
            p2: f64::INFINITY,
            k3: 0.0,
        };
        assert_eq!(field_of(c.validate().unwrap_err()), "distortion.p2");
    }

    #[test]
    fn monotonicity_over_the_image() {
        // Strong barrel with no higher terms: r(1 - 0.5 r²) peaks at r = 0.816 (r_d = 0.544) while the sim
        // camera's corner is at r_d = 0.876: not invertible.
        let mut c = sim();
        c.distortion = Distortion::RadialTangential {
            k1: -0.5,
            k2: 0.0,
            p1: 0.0,
            p2: 0.0,
            k3: 0.0,
        };
        let e = c.validate().unwrap_err();
        assert!(e.to_string().contains("not monotonic"), "{e}");
        assert_eq!(field_of(e), "distortion");
        // The same lens on a narrower field of view (long focal length) is fine: the peak lies outside.
        c.intrinsics.fx = 1000.0;
        c.intrinsics.fy = 1000.0;
        c.validate().unwrap();
        // A fisheye whose θd folds back before the corner.
        let mut f = sim();
        // Corner at a normalised radius of 400/300 = 1.33 (θ ≈ 76° for an ideal fisheye).
        f.intrinsics.fx = 300.0;
        f.intrinsics.fy = 300.0;
        f.distortion = Distortion::Equidistant {
            k1: -0.5,
            k2: 0.0,
            k3: 0.0,
            k4: 0.0,
        };
        let e = f.validate().unwrap_err();
        assert!(e.to_string().contains("not monotonic"), "{e}");
        f.distortion = Distortion::Equidistant {
            k1: -0.02,
            k2: 0.003,
            k3: 0.0,
            k4: 0.0,
        };
        f.validate().unwrap();
        // A corner beyond the 180° the model can see is refused too.
        f.intrinsics.fx = 200.0;
        f.intrinsics.fy = 200.0;
        let e = f.validate().unwrap_err();
        assert!(e.to_string().contains("never reaches"), "{e}");
    }

    #[test]
    fn positive_pitch_tilts_the_camera_forward() {
        // The README's example: rotation_deg = [0, 20, 0] looks down and 20° ahead.
        let m = Mount {
            rotation_deg: [0.0, 20.0, 0.0],
            lever_arm_m: [0.0; 3],
        };
        let axis = m.camera_to_body() * Vector3::z();
        let t = 20f64.to_radians();
        assert!(
            (axis - Vector3::new(t.sin(), 0.0, t.cos())).norm() < 1e-12,
            "{axis}"
        );
    }

    #[test]
    fn nadir_mount_maps_optical_axis_down_and_image_top_forward() {
        let r = Mount::default().camera_to_body();
        let down = r * Vector3::z();
        assert!((down - Vector3::z()).norm() < 1e-12);
        let image_up = r * -Vector3::y();
        assert!((image_up - Vector3::x()).norm() < 1e-12);
    }
}
