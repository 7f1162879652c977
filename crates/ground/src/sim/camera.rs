//! The simulated camera: a [`CameraSource`] that renders what the drone's camera sees along a [`Trajectory`]
//! over an [`OrthoMap`], in real time, with the scenario's pose errors and camera faults.
//!
//! Frame `k` is exposed at `k / fps` seconds after the shared time zero (the fake autopilot's too). A call to
//! [`CameraSource::next_frame`] waits for the next exposure instant, renders the truth pose with a random
//! [`Photometric`] change (seeded per frame index, so a frame's pixels do not depend on timing), and returns
//! the frame with the pose the autopilot would report: the truth plus Gaussian attitude, heading and height
//! errors (plus a fixed error during a `wrong_attitude` fault). A caller slower than `fps` gets the frame of
//! the current instant, not a backlog: exposure slots that passed while it was busy are skipped (and
//! counted), as a real camera's unread buffers are overwritten.
//!
//! Faults: `camera_stall` delivers nothing (each call waits out its timeout and returns
//! [`CameraError::Timeout`]); `dropped_frames` loses frames before the pipeline sees them (their sequence
//! numbers are skipped: the gaps show in the reports); `corrupt_frames` alternates random-byte images and
//! [`CameraError::CorruptFrame`] errors. Every delivered, dropped or corrupted frame is logged with its truth
//! in [`SimCameraLog`], which the closed loop reads after the run.
//!
//! [`Photometric`]: crate::sim::photometric::Photometric

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use rand::{Rng, RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::StandardNormal;

use crate::sim::appearance::Appearance;
use crate::sim::photometric::PhotometricRange;
use crate::sim::render::{render_with, OrthoMap};
use crate::sim::scenario::{FaultKind, Scenario};
use crate::sim::trajectory::{Trajectory, VehicleState};
use vimgeo_onboard::camera::{CameraError, CameraSource, Frame, FramePose};
use vimgeo_onboard::rectify::{CameraModel, Pose};

/// What happened to one exposure slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameFate {
    /// Delivered as rendered.
    Delivered,
    /// Lost (a `dropped_frames` fault): its sequence number is skipped.
    Dropped,
    /// Delivered as random bytes (a `corrupt_frames` fault).
    Garbage,
    /// Returned as a [`CameraError::CorruptFrame`] (a `corrupt_frames` fault).
    Unreadable,
}

impl FrameFate {
    /// A short name for CSVs and summaries.
    pub fn name(self) -> &'static str {
        match self {
            FrameFate::Delivered => "delivered",
            FrameFate::Dropped => "dropped",
            FrameFate::Garbage => "garbage",
            FrameFate::Unreadable => "unreadable",
        }
    }
}

/// One exposure the camera handled.
#[derive(Debug, Clone, Copy)]
pub struct FrameTruth {
    /// The frame's sequence number.
    pub seq: u64,
    /// Seconds after time zero of the exposure.
    pub t_s: f64,
    /// UNIX time of the exposure, µs.
    pub exposure_unix_us: u64,
    /// The truth it was rendered from.
    pub truth: VehicleState,
    /// The pose it carries (roll, pitch, yaw radians; height metres).
    pub reported: [f64; 4],
    /// Whether a `wrong_attitude` fault was applied.
    pub wrong_attitude: bool,
    /// What became of it.
    pub fate: FrameFate,
    /// Fraction of the frame on the map.
    pub coverage: f64,
    /// Rendering time (photometric change included).
    pub render: Duration,
}

/// What the camera did, shared with the caller (read it after the run).
#[derive(Debug, Default)]
pub struct SimCameraLog {
    inner: Mutex<LogInner>,
}

#[derive(Debug, Default)]
struct LogInner {
    frames: Vec<FrameTruth>,
    stalled_calls: u64,
    skipped_slots: u64,
}

impl SimCameraLog {
    fn lock(&self) -> MutexGuard<'_, LogInner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Every exposure handled, in order.
    pub fn frames(&self) -> Vec<FrameTruth> {
        self.lock().frames.clone()
    }

    /// Calls that returned a timeout because of a `camera_stall` fault.
    pub fn stalled_calls(&self) -> u64 {
        self.lock().stalled_calls
    }

    /// Exposure slots skipped because the caller was slower than `fps`.
    pub fn skipped_slots(&self) -> u64 {
        self.lock().skipped_slots
    }
}

/// The simulated camera. See the module documentation.
pub struct SimCamera {
    map: Arc<OrthoMap>,
    camera: CameraModel,
    trajectory: Arc<Trajectory>,
    scenario: Arc<Scenario>,
    photometric: Option<PhotometricRange>,
    origin: Instant,
    origin_unix_us: u64,
    origin_mono_us: u64,
    next_slot: u64,
    seq: u64,
    corrupt_toggle: bool,
    log: Arc<SimCameraLog>,
}

impl SimCamera {
    /// A camera with `camera`'s calibration flying `trajectory` over `map`; frame 0 is exposed at `origin`,
    /// which is UNIX time `origin_unix_us` and monotonic time `origin_mono_us` (the camera clock's
    /// microseconds). Faults, noise, fps, photometric changes and the seed come from `scenario`.
    pub fn new(
        map: Arc<OrthoMap>,
        camera: CameraModel,
        trajectory: Arc<Trajectory>,
        scenario: Arc<Scenario>,
        origin: Instant,
        origin_unix_us: u64,
        origin_mono_us: u64,
    ) -> SimCamera {
        SimCamera {
            photometric: scenario.camera.photometric.then(PhotometricRange::default),
            map,
            camera,
            trajectory,
            scenario,
            origin,
            origin_unix_us,
            origin_mono_us,
            next_slot: 0,
            seq: 0,
            corrupt_toggle: false,
            log: Arc::new(SimCameraLog::default()),
        }
    }

    /// The log, shared: keep a clone before handing the camera to the pipeline.
    pub fn log(&self) -> Arc<SimCameraLog> {
        Arc::clone(&self.log)
    }

    fn slot_time(&self, slot: u64) -> Duration {
        Duration::from_secs_f64(slot as f64 / self.scenario.camera.fps)
    }

    fn fault_at(&self, t_s: f64, pick: impl Fn(&FaultKind) -> bool) -> Option<FaultKind> {
        self.scenario
            .faults
            .iter()
            .find(|f| f.window.contains(t_s) && pick(&f.kind))
            .map(|f| f.kind)
    }

    /// The reported pose: truth plus noise (and a wrong-attitude error); seeded per slot.
    fn reported_pose(
        &self,
        truth: &VehicleState,
        rng: &mut ChaCha8Rng,
        t_s: f64,
    ) -> ([f64; 4], bool) {
        let n = &self.scenario.noise;
        let mut gauss = || gaussian(rng);
        let mut roll = truth.roll_rad + n.attitude_sigma_deg.to_radians() * gauss();
        let mut pitch = truth.pitch_rad + n.attitude_sigma_deg.to_radians() * gauss();
        let mut yaw = truth.yaw_rad + n.heading_sigma_deg.to_radians() * gauss();
        let height = truth.height_agl_m * (1.0 + n.height_error_frac * gauss());
        let wrong = self.fault_at(t_s, |k| matches!(k, FaultKind::WrongAttitude { .. }));
        if let Some(FaultKind::WrongAttitude { error_deg }) = wrong {
            roll += error_deg[0].to_radians();
            pitch += error_deg[1].to_radians();
            yaw += error_deg[2].to_radians();
        }
        (
            [roll, pitch, wrap_pi(yaw), height.max(0.1)],
            wrong.is_some(),
        )
    }

    /// The scenario's appearance change, camera part: motion blur along the ground's motion in the image (a
    /// camera whose image top points forward), of speed x exposure time over the ground pixel below.
    fn camera_part(
        &self,
        truth: &crate::sim::trajectory::VehicleState,
        image: &mut image::RgbImage,
        rng: &mut ChaCha8Rng,
    ) -> Result<(), crate::sim::render::RenderError> {
        let a = &self.scenario.camera_world.appearance;
        if *a == Appearance::none() {
            return Ok(());
        }
        let [vn, ve] = truth.vel_ne_mps;
        let (s, c) = truth.yaw_rad.sin_cos();
        let (forward, right) = (vn * c + ve * s, -vn * s + ve * c);
        let ground_px_m = truth.height_agl_m / self.camera.intrinsics().fx;
        let blur_px = (forward.hypot(right) * f64::from(a.exposure_time_s) / ground_px_m) as f32;
        a.apply_frame(image, blur_px, [right as f32, -forward as f32], rng)?;
        Ok(())
    }

    fn timeout(&self, waited: Duration) -> CameraError {
        CameraError::Timeout {
            source_name: self.describe(),
            waited,
        }
    }
}

fn wrap_pi(a: f64) -> f64 {
    use std::f64::consts::PI;
    (a + PI).rem_euclid(2.0 * PI) - PI
}

/// A standard normal sample.
fn gaussian(rng: &mut impl Rng) -> f64 {
    rng.sample(StandardNormal)
}

impl CameraSource for SimCamera {
    fn describe(&self) -> String {
        format!(
            "simulated camera over {} ({} fps)",
            self.scenario.ortho.display(),
            self.scenario.camera.fps
        )
    }

    fn next_frame(&mut self, timeout: Duration) -> Result<Frame, CameraError> {
        let called = Instant::now();
        let deadline = called + timeout;
        loop {
            let now = Instant::now();
            let elapsed = now.saturating_duration_since(self.origin);
            // Real time: a slot already a whole period in the past is gone.
            let current = (elapsed.as_secs_f64() * self.scenario.camera.fps).floor() as u64;
            if current > self.next_slot {
                self.log.lock().skipped_slots += current - self.next_slot;
                self.next_slot = current;
            }
            let slot = self.next_slot;
            let at = self.origin + self.slot_time(slot);
            if at > deadline {
                std::thread::sleep(deadline.saturating_duration_since(now));
                return Err(self.timeout(timeout));
            }
            std::thread::sleep(at.saturating_duration_since(now));
            let t_s = self.slot_time(slot).as_secs_f64();
            if self
                .fault_at(t_s, |k| matches!(k, FaultKind::CameraStall))
                .is_some()
            {
                // Nothing comes until the stall ends or the caller gives up.
                self.next_slot += 1;
                if Instant::now() + self.slot_time(1) > deadline {
                    std::thread::sleep(deadline.saturating_duration_since(Instant::now()));
                    self.log.lock().stalled_calls += 1;
                    return Err(self.timeout(timeout));
                }
                continue;
            }
            self.next_slot += 1;
            let seq = self.seq;
            self.seq += 1;
            let mut rng = ChaCha8Rng::seed_from_u64(
                self.scenario.run.seed ^ slot.wrapping_mul(0x9E37_79B9_7F4A_7C15),
            );
            let truth = self.trajectory.state(t_s);
            let (reported, wrong_attitude) = self.reported_pose(&truth, &mut rng, t_s);
            let exposure_unix_us = self.origin_unix_us + (t_s * 1e6).round() as u64;
            let mut record = FrameTruth {
                seq,
                t_s,
                exposure_unix_us,
                truth,
                reported,
                wrong_attitude,
                fate: FrameFate::Delivered,
                coverage: 0.0,
                render: Duration::ZERO,
            };
            let p_drop = match self.fault_at(t_s, |k| matches!(k, FaultKind::DroppedFrames { .. }))
            {
                Some(FaultKind::DroppedFrames { probability }) => probability,
                _ => 0.0,
            };
            let p_corrupt =
                match self.fault_at(t_s, |k| matches!(k, FaultKind::CorruptFrames { .. })) {
                    Some(FaultKind::CorruptFrames { probability }) => probability,
                    _ => 0.0,
                };
            let (u_drop, u_corrupt): (f64, f64) = (rng.random(), rng.random());
            if u_drop < p_drop {
                record.fate = FrameFate::Dropped;
                self.log.lock().frames.push(record);
                continue;
            }
            let pose_truth = Pose::from_euler(
                truth.roll_rad,
                truth.pitch_rad,
                truth.yaw_rad,
                truth.height_agl_m,
            );
            let started = Instant::now();
            let image = if u_corrupt < p_corrupt {
                self.corrupt_toggle = !self.corrupt_toggle;
                if !self.corrupt_toggle {
                    record.fate = FrameFate::Unreadable;
                    self.log.lock().frames.push(record);
                    return Err(CameraError::CorruptFrame {
                        source_name: self.describe(),
                        reason: format!("frame {seq}: injected corrupt frame"),
                    });
                }
                record.fate = FrameFate::Garbage;
                let size = self.camera.image_size();
                let mut bytes = vec![0u8; size.width as usize * size.height as usize * 3];
                rng.fill_bytes(&mut bytes);
                image::RgbImage::from_raw(size.width, size.height, bytes)
                    .expect("buffer is width x height x 3")
            } else {
                let photometric = self
                    .photometric
                    .as_ref()
                    .map_or_else(crate::sim::photometric::Photometric::identity, |r| {
                        r.sample(&mut rng)
                    });
                let rendered = render_with(
                    &self.map,
                    &self.camera,
                    (truth.lat_deg, truth.lon_deg),
                    &pose_truth,
                    &photometric,
                    &mut rng,
                )
                .and_then(|mut r| {
                    self.camera_part(&truth, &mut r.image, &mut rng)?;
                    Ok(r)
                });
                match rendered {
                    Ok(r) => {
                        record.coverage = r.coverage;
                        r.image
                    }
                    Err(e) => {
                        record.fate = FrameFate::Unreadable;
                        self.log.lock().frames.push(record);
                        return Err(CameraError::CorruptFrame {
                            source_name: self.describe(),
                            reason: format!("frame {seq}: cannot render: {e}"),
                        });
                    }
                }
            };
            record.render = started.elapsed();
            self.log.lock().frames.push(record);
            return Ok(Frame {
                seq,
                exposure_mono_us: self.origin_mono_us + (t_s * 1e6).round() as u64,
                exposure_unix_us,
                image,
                pose: Some(FramePose {
                    roll_rad: reported[0],
                    pitch_rad: reported[1],
                    yaw_rad: reported[2],
                    height_agl_m: reported[3],
                }),
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;
    use vimgeo_onboard::geodesy::UtmZone;
    use vimgeo_onboard::rectify::{CameraCalibration, Distortion, ImageSize, Intrinsics, Mount};

    /// A 200 x 200 m map at 0.5 m, a hover over its centre, a small camera, and `faults` (TOML).
    fn camera(faults: &str, noise: &str) -> SimCamera {
        let zone = UtmZone::new(12, true).unwrap();
        let image = image::RgbImage::from_fn(400, 400, |x, y| {
            image::Rgb([(x % 256) as u8, (y % 256) as u8, 90])
        });
        let map = OrthoMap::from_parts(image, [528_000.0, 0.5, 0.0, 4_978_000.0, 0.0, -0.5], zone)
            .unwrap();
        let centre = map.pixel_to_lat_lon(200.0, 200.0).unwrap();
        let text = format!(
            "[map]\northo = \"m.png\"\n[camera]\nfps = 40.0\nphotometric = false\n[flight]\n\
             waypoints_ne_m = [[0.0, 0.0]]\nspeed_mps = 1.0\nheight_agl_m = 20.0\n{noise}\n{faults}"
        );
        let scenario = Arc::new(
            Scenario::from_toml_str(
                &text,
                Path::new("t.toml"),
                &vimgeo_onboard::data::DataDir::new("d"),
            )
            .unwrap(),
        );
        let trajectory = Arc::new(Trajectory::new(centre, &scenario.flight).unwrap());
        let calib = CameraCalibration {
            name: "small".into(),
            example: false,
            image: ImageSize {
                width: 64,
                height: 48,
            },
            intrinsics: Intrinsics {
                fx: 46.0,
                fy: 46.0,
                cx: 31.5,
                cy: 23.5,
            },
            distortion: Distortion::None,
            mount: Mount {
                rotation_deg: [0.0; 3],
                lever_arm_m: [0.0; 3],
            },
        };
        SimCamera::new(
            Arc::new(map),
            CameraModel::new(&calib),
            trajectory,
            scenario,
            Instant::now(),
            1_700_000_000_000_000,
            5_000_000,
        )
    }

    const NO_NOISE: &str =
        "[noise]\nattitude_sigma_deg = 0.0\nheading_sigma_deg = 0.0\nheight_error_frac = 0.0";

    #[test]
    fn frames_come_at_fps_with_the_true_pose_when_there_is_no_noise() {
        let mut cam = camera("", NO_NOISE);
        let a = cam.next_frame(Duration::from_secs(1)).unwrap();
        let b = cam.next_frame(Duration::from_secs(1)).unwrap();
        assert_eq!((a.seq, b.seq), (0, 1));
        assert_eq!(b.exposure_unix_us - a.exposure_unix_us, 25_000);
        assert_eq!(b.exposure_mono_us - a.exposure_mono_us, 25_000);
        assert_eq!(a.image.dimensions(), (64, 48));
        let p = a.pose.unwrap();
        // Hovering: level, heading north, at the planned height.
        assert_eq!((p.roll_rad, p.pitch_rad, p.height_agl_m), (0.0, 0.0, 20.0));
        let log = cam.log().frames();
        assert_eq!(log.len(), 2);
        assert!(log
            .iter()
            .all(|f| f.fate == FrameFate::Delivered && f.coverage == 1.0));
    }

    #[test]
    fn faults_drop_corrupt_stall_and_skew_the_pose() {
        let mut cam = camera(
            "[[fault]]\nkind = \"dropped_frames\"\nstart_s = 0.0\nduration_s = 0.2\nprobability = 1.0\n\
             [[fault]]\nkind = \"wrong_attitude\"\nstart_s = 0.2\nduration_s = 0.2\nroll_deg = 20.0\n\
             [[fault]]\nkind = \"corrupt_frames\"\nstart_s = 0.4\nduration_s = 0.2\nprobability = 1.0\n\
             [[fault]]\nkind = \"camera_stall\"\nstart_s = 0.6\nduration_s = 10.0",
            NO_NOISE,
        );
        // Every frame of the first 0.2 s is dropped: the first delivered one has skipped sequence numbers.
        let f = cam.next_frame(Duration::from_secs(1)).unwrap();
        assert!(f.seq >= 8, "{}", f.seq);
        assert!((f.pose.unwrap().roll_rad.to_degrees() - 20.0).abs() < 1e-9);
        let mut garbage = 0;
        let mut unreadable = 0;
        let mut timeouts = 0;
        for _ in 0..40 {
            match cam.next_frame(Duration::from_millis(100)) {
                Ok(f) if f.exposure_unix_us >= 1_700_000_000_400_000 => garbage += 1,
                Ok(_) => {}
                Err(CameraError::CorruptFrame { .. }) => unreadable += 1,
                Err(CameraError::Timeout { .. }) => {
                    timeouts += 1;
                    if timeouts == 2 {
                        break;
                    }
                }
                Err(e) => panic!("{e}"),
            }
        }
        assert!(
            garbage > 0 && unreadable > 0 && timeouts == 2,
            "{garbage} {unreadable} {timeouts}"
        );
        let log = cam.log();
        assert!(log.stalled_calls() >= 1);
        let frames = log.frames();
        assert!(frames.iter().any(|f| f.fate == FrameFate::Dropped));
        assert!(frames.iter().any(|f| f.wrong_attitude));
    }
}
