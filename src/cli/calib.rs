//! `vimgeo calib ...`: check a camera calibration file, or import one from OpenCV or ROS.

use std::path::PathBuf;

use anyhow::{bail, Context};
use clap::{Args, Subcommand};
use vimgeo::rectify::CameraCalibration;

#[derive(Debug, Subcommand)]
pub(crate) enum CalibCommand {
    /// Read and validate a calibration file (`calib/*.toml`) and print what it describes.
    Check(CalibCheckArgs),
    /// Convert an OpenCV calibration YAML or a ROS camera_info YAML into our TOML format.
    Import(CalibImportArgs),
}

#[derive(Debug, Args)]
pub(crate) struct CalibCheckArgs {
    /// The calibration file.
    calib: PathBuf,
}

#[derive(Debug, Args)]
pub(crate) struct CalibImportArgs {
    /// An OpenCV calibration file (cv::FileStorage YAML: camera_matrix, distortion_coefficients).
    #[arg(long, value_name = "YAML", conflicts_with = "ros")]
    opencv: Option<PathBuf>,
    /// A ROS camera_info YAML (camera_calibration_parsers format).
    #[arg(long, value_name = "YAML")]
    ros: Option<PathBuf>,
    /// Name recorded in the file (default: the importer's).
    #[arg(long)]
    name: Option<String>,
    /// The TOML file to write (atomically). The mount is set to nadir: edit `[mount]` to match the airframe.
    #[arg(long, value_name = "TOML")]
    out: PathBuf,
}

pub(crate) fn calib(command: &CalibCommand) -> anyhow::Result<()> {
    match command {
        CalibCommand::Check(args) => check(args),
        CalibCommand::Import(args) => import(args),
    }
}

fn check(args: &CalibCheckArgs) -> anyhow::Result<()> {
    let calib = CameraCalibration::load(&args.calib)?;
    let i = calib.intrinsics;
    let hfov = 2.0
        * (f64::from(calib.image.width) / (2.0 * i.fx))
            .atan()
            .to_degrees();
    println!(
        "ok: {} `{}`{}: {}x{} px, fx {:.1} fy {:.1} cx {:.1} cy {:.1} (pinhole HFOV {:.1} deg), {:?}, mount \
         rotation {:?} deg, lever arm {:?} m",
        args.calib.display(),
        calib.name,
        if calib.example {
            " (EXAMPLE values, not a calibration: do not fly with it)"
        } else {
            ""
        },
        calib.image.width,
        calib.image.height,
        i.fx,
        i.fy,
        i.cx,
        i.cy,
        hfov,
        calib.distortion,
        calib.mount.rotation_deg,
        calib.mount.lever_arm_m
    );
    Ok(())
}

fn import(args: &CalibImportArgs) -> anyhow::Result<()> {
    let mut calib = match (&args.opencv, &args.ros) {
        (Some(path), None) => CameraCalibration::from_opencv_yaml(path)?,
        (None, Some(path)) => CameraCalibration::from_ros_camera_info(path)?,
        _ => bail!("give the file to import: --opencv YAML or --ros YAML"),
    };
    if let Some(name) = &args.name {
        calib.name.clone_from(name);
    }
    calib
        .save(&args.out)
        .with_context(|| format!("cannot write {}", args.out.display()))?;
    println!(
        "wrote {} (`{}`, {}x{}); the mount is nadir with no lever arm: set [mount] for this airframe",
        args.out.display(),
        calib.name,
        calib.image.width,
        calib.image.height
    );
    Ok(())
}
