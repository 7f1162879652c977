//! Camera calibration files (`calib/`): the shipped files load, files round-trip, the OpenCV and ROS importers
//! give the expected values, and every invalid file is refused with a message naming the file and the field.

// The expected values are copied verbatim from the fixtures, which OpenCV writes with 17 significant digits.
#![allow(clippy::excessive_precision)]

use std::path::{Path, PathBuf};

use vimgeo::rectify::calib::{
    CalibError, CameraCalibration, Distortion, ImageSize, Intrinsics, Mount,
};

fn crate_root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn calib_fixture(name: &str) -> PathBuf {
    let p = crate_root().join("tests/fixtures/calib").join(name);
    assert!(p.exists(), "fixture {} is missing", p.display());
    p
}

/// The sim calibration as TOML with one line replaced (or appended when `from` is empty).
fn sim_with(from: &str, to: &str) -> String {
    let text = std::fs::read_to_string(crate_root().join("calib/sim.toml")).unwrap();
    if from.is_empty() {
        return format!("{text}{to}\n");
    }
    assert!(text.contains(from), "sim.toml has no `{from}`");
    text.replacen(from, to, 1)
}

/// Asserts that the error's message contains every substring.
fn assert_refused<T: std::fmt::Debug>(result: Result<T, CalibError>, needles: &[&str]) {
    let e = result.expect_err("expected the calibration to be refused");
    let msg = e.to_string();
    eprintln!("refused: {msg}");
    for n in needles {
        assert!(msg.contains(n), "message `{msg}` lacks `{n}`");
    }
}

#[test]
fn shipped_files_load_and_validate() {
    let sim = CameraCalibration::load(crate_root().join("calib/sim.toml")).unwrap();
    assert_eq!(
        sim,
        CameraCalibration {
            name: "sim".into(),
            example: false,
            image: ImageSize {
                width: 640,
                height: 480
            },
            intrinsics: Intrinsics {
                fx: 457.0,
                fy: 457.0,
                cx: 319.5,
                cy: 239.5
            },
            distortion: Distortion::RadialTangential {
                k1: -0.05,
                k2: 0.01,
                p1: 0.0,
                p2: 0.0,
                k3: 0.0
            },
            mount: Mount {
                rotation_deg: [0.0; 3],
                lever_arm_m: [0.05, 0.0, 0.1]
            },
        }
    );
    sim.validate().unwrap();
    let hfov = 2.0 * (320.0f64 / sim.intrinsics.fx).atan().to_degrees();
    assert!((hfov - 70.0).abs() < 0.5, "{hfov}");

    let jetson =
        CameraCalibration::load(crate_root().join("calib/jetson-csi-imx219-example.toml")).unwrap();
    assert!(jetson.example);
    assert_eq!(
        jetson.image,
        ImageSize {
            width: 1280,
            height: 720
        }
    );
    assert!(matches!(
        jetson.distortion,
        Distortion::RadialTangential { .. }
    ));
    jetson.validate().unwrap();
}

#[test]
fn save_then_load_is_equal() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = CameraCalibration::load(crate_root().join("calib/sim.toml")).unwrap();
    // Values without a short decimal form must survive too.
    c.intrinsics.fx = 457.123_456_789_012_3;
    c.mount.rotation_deg = [0.0, -20.0, 1.0 / 3.0];
    let path = dir.path().join("x.toml");
    c.save(&path).unwrap();
    assert_eq!(CameraCalibration::load(&path).unwrap(), c);
    // Only the file: the temporary one was renamed into place.
    let names: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, vec![std::ffi::OsString::from("x.toml")]);
    // An invalid calibration is not written.
    c.intrinsics.cx = -1.0;
    assert_refused(
        c.save(dir.path().join("bad.toml")),
        &["bad.toml", "intrinsics.cx"],
    );
    assert!(!dir.path().join("bad.toml").exists());
}

#[test]
fn opencv_yaml_radtan_import() {
    let path = calib_fixture("opencv_radtan.yaml");
    let c = CameraCalibration::from_opencv_yaml(&path).unwrap();
    assert_eq!(c.name, "opencv_radtan");
    assert!(!c.example);
    assert_eq!(
        c.image,
        ImageSize {
            width: 1280,
            height: 720
        }
    );
    assert_eq!(
        c.intrinsics,
        Intrinsics {
            fx: 1.0012345678901234e+03,
            fy: 1.0023456789012345e+03,
            cx: 6.4123456789012345e+02,
            cy: 3.5834567890123456e+02
        }
    );
    assert_eq!(
        c.distortion,
        Distortion::RadialTangential {
            k1: -1.2345678901234567e-01,
            k2: 8.7654321098765432e-02,
            p1: 1.2345678901234567e-04,
            p2: -2.3456789012345678e-04,
            k3: -1.2345678901234567e-02
        }
    );
    assert_eq!(c.mount, Mount::default());
    // Imported, saved and loaded back: the same calibration.
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("imported.toml");
    c.save(&out).unwrap();
    assert_eq!(CameraCalibration::load(&out).unwrap(), c);
}

#[test]
fn opencv_yaml_fisheye_import() {
    let c = CameraCalibration::from_opencv_yaml(calib_fixture("opencv_fisheye.yaml")).unwrap();
    assert_eq!(
        c.image,
        ImageSize {
            width: 1920,
            height: 1080
        }
    );
    assert_eq!(c.intrinsics.fx, 8.1234567890123456e+02);
    assert_eq!(c.intrinsics.cy, 5.3998765432109876e+02);
    assert_eq!(
        c.distortion,
        Distortion::Equidistant {
            k1: 4.1234567890123456e-02,
            k2: -1.2345678901234567e-02,
            k3: 3.4567890123456789e-03,
            k4: -5.6789012345678901e-04
        }
    );
}

#[test]
fn opencv_rational_model_with_zero_extras_is_radtan() {
    let c =
        CameraCalibration::from_opencv_yaml(calib_fixture("opencv_rational_zero.yaml")).unwrap();
    assert_eq!(
        c.distortion,
        Distortion::RadialTangential {
            k1: -0.1,
            k2: 0.05,
            p1: 0.0,
            p2: 0.0,
            k3: 0.01
        }
    );
}

#[test]
fn ros_camera_info_plumb_bob_import() {
    let c = CameraCalibration::from_ros_camera_info(calib_fixture("ros_plumb_bob.yaml")).unwrap();
    assert_eq!(c.name, "narrow_stereo");
    assert_eq!(
        c.image,
        ImageSize {
            width: 640,
            height: 480
        }
    );
    assert_eq!(
        c.intrinsics,
        Intrinsics {
            fx: 462.1379699,
            fy: 462.1379699,
            cx: 320.5,
            cy: 240.5
        }
    );
    assert_eq!(
        c.distortion,
        Distortion::RadialTangential {
            k1: -0.0412,
            k2: 0.0165,
            p1: 0.0003,
            p2: -0.0007,
            k3: 0.0
        }
    );
    assert_eq!(c.mount, Mount::default());
}

#[test]
fn ros_camera_info_equidistant_import() {
    let c = CameraCalibration::from_ros_camera_info(calib_fixture("ros_equidistant.yaml")).unwrap();
    assert_eq!(c.name, "downward_fisheye");
    assert_eq!(
        c.image,
        ImageSize {
            width: 848,
            height: 800
        }
    );
    assert_eq!(c.intrinsics.fy, 452.2937);
    assert_eq!(
        c.distortion,
        Distortion::Equidistant {
            k1: -0.0110,
            k2: 0.0501,
            k3: -0.0487,
            k4: 0.0095
        }
    );
}

#[test]
fn invalid_toml_files_are_refused_naming_file_and_field() {
    let dir = tempfile::tempdir().unwrap();
    let cases: Vec<(&str, String, Vec<&str>)> = vec![
        (
            "missing.toml",
            sim_with("fx = 457.0\n", ""),
            vec!["fx", "missing"],
        ),
        (
            "unknown.toml",
            sim_with("cy = 239.5\n", "cy = 239.5\nskew = 0.0\n"),
            vec!["skew", "unknown"],
        ),
        (
            "unknown_top.toml",
            sim_with("", "[extra]\nfoo = 1"),
            vec!["extra"],
        ),
        (
            "fx.toml",
            sim_with("fx = 457.0", "fx = -3"),
            vec!["intrinsics.fx: must be a finite number > 0, got -3"],
        ),
        (
            "cx.toml",
            sim_with("cx = 319.5", "cx = 640.0"),
            vec!["intrinsics.cx", "640"],
        ),
        (
            "width.toml",
            sim_with("width = 640", "width = 0"),
            vec!["image.width", "got 0"],
        ),
        (
            "monotonic.toml",
            sim_with("k1 = -0.05", "k1 = -0.5"),
            vec!["distortion", "not monotonic"],
        ),
        (
            "format.toml",
            sim_with("format = \"vimgeo-camera\"", "format = \"opencv\""),
            vec!["format", "vimgeo-camera"],
        ),
        (
            "version.toml",
            sim_with("version = 1", "version = 2"),
            vec!["version", "got 2"],
        ),
        (
            "noversion.toml",
            sim_with("version = 1\n", ""),
            vec!["version", "missing"],
        ),
        (
            "model.toml",
            sim_with("model = \"radtan\"", "model = \"rational\""),
            vec!["rational"],
        ),
        (
            "k1.toml",
            sim_with("k1 = -0.05", "k1 = 50.0"),
            vec!["distortion.k1", "50"],
        ),
        (
            "angle.toml",
            sim_with(
                "rotation_deg = [0.0, 0.0, 0.0]",
                "rotation_deg = [0.0, 200.0, 0.0]",
            ),
            vec!["mount.rotation_deg[1]", "200"],
        ),
        (
            "arm.toml",
            sim_with(
                "lever_arm_m = [0.05, 0.0, 0.1]",
                "lever_arm_m = [0.05, 0.0]",
            ),
            vec!["lever_arm_m"],
        ),
        (
            "syntax.toml",
            sim_with("fx = 457.0", "fx = = 457"),
            vec!["line"],
        ),
    ];
    for (file, text, needles) in cases {
        let path = dir.path().join(file);
        std::fs::write(&path, text).unwrap();
        let mut all = vec![file];
        all.extend(needles);
        assert_refused(CameraCalibration::load(&path), &all);
    }
    assert_refused(
        CameraCalibration::load(dir.path().join("absent.toml")),
        &["absent.toml", "cannot read"],
    );
}

#[test]
fn invalid_foreign_files_are_refused_naming_file_and_field() {
    assert_refused(
        CameraCalibration::from_opencv_yaml(calib_fixture("opencv_rational_nonzero.yaml")),
        &[
            "opencv_rational_nonzero.yaml",
            "distortion_coefficients",
            "rational",
            "unsupported",
        ],
    );
    assert_refused(
        CameraCalibration::from_opencv_yaml(calib_fixture("opencv_malformed.yaml")),
        &["opencv_malformed.yaml", "malformed YAML"],
    );
    assert_refused(
        CameraCalibration::from_opencv_yaml(calib_fixture("opencv_wrong_matrix_size.yaml")),
        &[
            "opencv_wrong_matrix_size.yaml",
            "camera_matrix",
            "3x3",
            "2x3",
        ],
    );
    assert_refused(
        CameraCalibration::from_ros_camera_info(calib_fixture("ros_missing_model.yaml")),
        &["ros_missing_model.yaml", "distortion_model", "missing"],
    );
    // A ROS file is not an OpenCV one for want of the `%YAML` line: only the keys matter.
    CameraCalibration::from_opencv_yaml(calib_fixture("ros_plumb_bob.yaml")).unwrap();
    // Fisheye coefficients in a ROS file that says plumb_bob: wrong count.
    let dir = tempfile::tempdir().unwrap();
    let text = std::fs::read_to_string(calib_fixture("ros_plumb_bob.yaml"))
        .unwrap()
        .replace(
            "cols: 5\n  data: [-0.0412, 0.0165, 0.0003, -0.0007, 0]",
            "cols: 3\n  data: [-0.0412, 0.0165, 0.0003]",
        );
    let path = dir.path().join("three.yaml");
    std::fs::write(&path, text).unwrap();
    assert_refused(
        CameraCalibration::from_ros_camera_info(&path),
        &["three.yaml", "distortion_coefficients", "got 3"],
    );
}
