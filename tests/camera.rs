//! The camera stage without hardware: record → replay round trips, recording validation, pacing,
//! timeouts, and the errors a missing V4L2 device gives.

use std::fs;
use std::path::Path;
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use image::{Rgb, RgbImage};
use vimgeo::camera::{
    CameraError, CameraSource, Frame, FramePose, ReplayOptions, ReplayPace, ReplayRecorder,
    ReplaySource, V4l2Config, V4l2Source,
};

const HEADER: &str =
    "seq,file,exposure_mono_us,exposure_unix_us,roll_rad,pitch_rad,yaw_rad,height_agl_m";

/// A frame whose image and pose depend on `i` (poses on even frames only).
fn frame(i: u64, start_us: u64, step_us: u64) -> Frame {
    let image = RgbImage::from_fn(13, 7, |x, y| {
        Rgb([(x * 17 + i as u32) as u8, (y * 31) as u8, (i * 40) as u8])
    });
    Frame {
        seq: 100 + i,
        exposure_mono_us: start_us + i * step_us,
        exposure_unix_us: 1_764_000_000_000_000 + i * step_us + 7,
        image,
        pose: i.is_multiple_of(2).then(|| FramePose {
            roll_rad: 0.1 * i as f64 - 0.3,
            pitch_rad: -0.017_453_292_519_943_295 * i as f64,
            yaw_rad: std::f64::consts::PI / 3.0 + i as f64,
            height_agl_m: 120.0 + 1.0 / 3.0 * i as f64,
        }),
    }
}

fn record(dir: &Path, n: u64, step_us: u64) -> Vec<Frame> {
    let frames: Vec<Frame> = (0..n).map(|i| frame(i, 5_000_000, step_us)).collect();
    let mut rec = ReplayRecorder::create(dir).unwrap();
    for f in &frames {
        rec.record(f).unwrap();
    }
    assert_eq!(rec.frames(), n as usize);
    rec.finish().unwrap();
    frames
}

/// Runs `f` on a thread and fails the test if it takes longer than `limit`.
fn within<T: Send + 'static>(limit: Duration, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(limit)
        .expect("camera call hung past its limit")
}

fn csv_error(dir: &Path) -> (String, usize, String, String) {
    match ReplaySource::open(dir, ReplayOptions::default()) {
        Err(e @ CameraError::Csv { .. }) => {
            let text = e.to_string();
            let CameraError::Csv {
                line, column, file, ..
            } = e
            else {
                unreachable!()
            };
            assert_eq!(file, dir.join("frames.csv"));
            (text, line, column, file.display().to_string())
        }
        other => panic!("expected a CSV error, got {other:?}"),
    }
}

#[test]
fn recorded_frames_replay_identically() {
    let dir = tempfile::tempdir().unwrap();
    let recorded = record(dir.path(), 6, 33_333);
    let mut replay = ReplaySource::open(dir.path(), ReplayOptions::default()).unwrap();
    assert_eq!(replay.len(), 6);
    assert!(replay
        .describe()
        .contains(&dir.path().display().to_string()));
    for want in &recorded {
        let got = replay.next_frame(Duration::from_secs(1)).unwrap();
        assert_eq!(
            &got, want,
            "frame {} differs after the round trip",
            want.seq
        );
    }
    let end = replay.next_frame(Duration::from_secs(1)).unwrap_err();
    assert!(matches!(end, CameraError::Ended), "{end:?}");
    // Ended stays ended.
    assert!(matches!(
        replay.next_frame(Duration::from_millis(1)),
        Err(CameraError::Ended)
    ));
}

#[test]
fn looping_replay_keeps_seq_and_time_increasing() {
    let dir = tempfile::tempdir().unwrap();
    let recorded = record(dir.path(), 3, 10_000);
    let opts = ReplayOptions {
        pace: ReplayPace::AsFastAsPossible,
        loop_: true,
    };
    let mut replay = ReplaySource::open(dir.path(), opts).unwrap();
    let frames: Vec<Frame> = (0..7)
        .map(|_| replay.next_frame(Duration::from_secs(1)).unwrap())
        .collect();
    for w in frames.windows(2) {
        assert!(w[1].seq > w[0].seq, "seq {} then {}", w[0].seq, w[1].seq);
        assert!(w[1].exposure_mono_us > w[0].exposure_mono_us);
        assert!(w[1].exposure_unix_us > w[0].exposure_unix_us);
    }
    assert_eq!(frames[3].image, recorded[0].image);
    assert_eq!(frames[3].pose, recorded[0].pose);
    // The second pass continues at the recording's own spacing.
    assert_eq!(
        frames[3].exposure_mono_us - frames[2].exposure_mono_us,
        10_000
    );
}

#[test]
fn real_time_pacing_follows_the_timestamps() {
    let dir = tempfile::tempdir().unwrap();
    record(dir.path(), 4, 40_000);
    let opts = ReplayOptions {
        pace: ReplayPace::RealTime,
        loop_: false,
    };
    let arrivals = within(Duration::from_secs(20), move || {
        let mut replay = ReplaySource::open(dir.path(), opts).unwrap();
        let mut out = Vec::new();
        for _ in 0..4 {
            let f = replay.next_frame(Duration::from_secs(5)).unwrap();
            out.push((Instant::now(), f.exposure_mono_us));
        }
        out
    });
    // Frames arrive in timestamp order, and never before their recorded spacing says they are due.
    let (t0, m0) = arrivals[0];
    for w in arrivals.windows(2) {
        assert!(w[1].1 > w[0].1 && w[1].0 >= w[0].0);
    }
    for (t, m) in &arrivals {
        assert!(t.duration_since(t0) >= Duration::from_micros(m - m0));
    }
}

#[test]
fn real_time_replay_times_out_before_a_late_frame_and_then_delivers_it() {
    let dir = tempfile::tempdir().unwrap();
    record(dir.path(), 2, 2_000_000); // the second frame is due 2 s after the first
    let opts = ReplayOptions {
        pace: ReplayPace::RealTime,
        loop_: false,
    };
    within(Duration::from_secs(30), move || {
        let mut replay = ReplaySource::open(dir.path(), opts).unwrap();
        let first = replay.next_frame(Duration::from_secs(1)).unwrap();
        let err = replay.next_frame(Duration::from_millis(50)).unwrap_err();
        match &err {
            CameraError::Timeout {
                source_name,
                waited,
            } => {
                assert!(source_name.contains("replay"), "{err}");
                assert_eq!(*waited, Duration::from_millis(50));
            }
            other => panic!("expected Timeout, got {other:?}"),
        }
        assert!(err.is_transient());
        assert!(err.to_string().contains("50 ms"), "{err}");
        // The frame is not lost: a long enough wait delivers it.
        let second = replay.next_frame(Duration::from_secs(10)).unwrap();
        assert_eq!(second.seq, first.seq + 1);
    });
}

#[test]
fn corrupt_image_is_one_bad_frame_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    record(dir.path(), 3, 1_000);
    let broken = dir.path().join("00000101.png");
    fs::write(&broken, b"not a png").unwrap();
    let mut replay = ReplaySource::open(dir.path(), ReplayOptions::default()).unwrap();
    assert_eq!(replay.next_frame(Duration::ZERO).unwrap().seq, 100);
    let err = replay.next_frame(Duration::ZERO).unwrap_err();
    match &err {
        CameraError::CorruptFrame { reason, .. } => {
            assert!(reason.starts_with("frame 101: "), "{err}");
            assert!(reason.contains("00000101.png"), "{err}");
        }
        other => panic!("expected CorruptFrame, got {other:?}"),
    }
    assert!(err.is_transient());
    // The replay goes on after it.
    assert_eq!(replay.next_frame(Duration::ZERO).unwrap().seq, 102);
    // An image deleted after opening is a corrupt frame too, not a panic.
    let mut replay = ReplaySource::open(dir.path(), ReplayOptions::default()).unwrap();
    fs::remove_file(dir.path().join("00000100.png")).unwrap();
    let err = replay.next_frame(Duration::ZERO).unwrap_err();
    assert!(err.to_string().contains("00000100.png"), "{err}");
}

#[test]
fn jpeg_recordings_replay_too() {
    let dir = tempfile::tempdir().unwrap();
    let img = RgbImage::from_pixel(8, 8, Rgb([10, 200, 90]));
    img.save(dir.path().join("f.jpg")).unwrap();
    fs::write(
        dir.path().join("frames.csv"),
        format!("{HEADER}\n1,f.jpg,1000,2000,,,,\n"),
    )
    .unwrap();
    let mut replay = ReplaySource::open(dir.path(), ReplayOptions::default()).unwrap();
    let f = replay.next_frame(Duration::ZERO).unwrap();
    assert_eq!(f.image.dimensions(), (8, 8));
    assert!(f.image.get_pixel(4, 4).0[1] > 180);
    assert_eq!(f.pose, None);
}

#[test]
fn csv_errors_name_file_line_and_column() {
    let dir = tempfile::tempdir().unwrap();
    record(dir.path(), 2, 1_000);
    let csv = dir.path().join("frames.csv");
    let good = fs::read_to_string(&csv).unwrap();

    // Bad header.
    fs::write(&csv, good.replacen("exposure_mono_us", "exposure_us", 1)).unwrap();
    let (text, line, column, file) = csv_error(dir.path());
    assert_eq!((line, column.as_str()), (1, "exposure_mono_us"), "{text}");
    assert!(
        text.contains(&file) && text.contains("bad header"),
        "{text}"
    );

    // Non-numeric timestamp on the second data row (line 3).
    let rows: Vec<&str> = good.lines().collect();
    let bad_row = rows[2].replacen(",1764", ",17x64", 1);
    fs::write(&csv, format!("{}\n{}\n{}\n", rows[0], rows[1], bad_row)).unwrap();
    let (text, line, column, _) = csv_error(dir.path());
    assert_eq!((line, column.as_str()), (3, "exposure_unix_us"), "{text}");
    assert!(text.contains("17x64") && text.contains("line 3"), "{text}");

    // A listed image that does not exist.
    fs::write(&csv, good.replacen("00000101.png", "missing.png", 1)).unwrap();
    let (text, line, column, _) = csv_error(dir.path());
    assert_eq!((line, column.as_str()), (3, "file"), "{text}");
    assert!(
        text.contains("missing.png") && text.contains("does not exist"),
        "{text}"
    );

    // Not a recording at all.
    fs::remove_file(&csv).unwrap();
    let err = ReplaySource::open(dir.path(), ReplayOptions::default()).unwrap_err();
    assert!(err.to_string().contains("frames.csv"), "{err}");
}

#[test]
fn unfinished_recording_keeps_flushed_rows_and_says_how_to_recover() {
    let dir = tempfile::tempdir().unwrap();
    let mut rec = ReplayRecorder::create(dir.path()).unwrap();
    let n = ReplayRecorder::FLUSH_EVERY as u64 + 2;
    for i in 0..n {
        rec.record(&frame(i, 0, 1_000)).unwrap();
    }
    // Simulate a crash: the recorder never finishes.
    std::mem::forget(rec);
    let err = ReplaySource::open(dir.path(), ReplayOptions::default()).unwrap_err();
    assert!(err.to_string().contains("frames.csv.part"), "{err}");
    let part = fs::read_to_string(dir.path().join("frames.csv.part")).unwrap();
    // At least every row up to the last periodic flush is on disk.
    assert!(part.lines().count() > ReplayRecorder::FLUSH_EVERY, "{part}");
    fs::rename(
        dir.path().join("frames.csv.part"),
        dir.path().join("frames.csv"),
    )
    .unwrap();
    let replay = ReplaySource::open(dir.path(), ReplayOptions::default()).unwrap();
    assert!(replay.len() >= ReplayRecorder::FLUSH_EVERY);
}

#[test]
fn sources_work_behind_a_trait_object() {
    let dir = tempfile::tempdir().unwrap();
    record(dir.path(), 1, 1_000);
    let mut cam: Box<dyn CameraSource> =
        Box::new(ReplaySource::open(dir.path(), ReplayOptions::default()).unwrap());
    assert_eq!(cam.next_frame(Duration::ZERO).unwrap().seq, 100);
}

#[test]
fn missing_v4l2_device_gives_a_clear_error() {
    let cfg = V4l2Config::new("/dev/video-does-not-exist", 1280, 720, 30);
    let err = within(Duration::from_secs(10), move || {
        V4l2Source::open(&cfg).unwrap_err()
    });
    assert!(matches!(err, CameraError::Open { .. }), "{err:?}");
    assert_eq!(
        err.to_string(),
        "camera /dev/video-does-not-exist: cannot open: No such file or directory (os error 2) \
         (is the camera plugged in? `v4l2-ctl --list-devices`)"
    );
}

#[test]
fn a_file_that_is_not_a_v4l2_device_is_refused() {
    let err = within(Duration::from_secs(10), || {
        V4l2Source::open(&V4l2Config::new("/dev/null", 640, 480, 30)).unwrap_err()
    });
    assert!(
        matches!(err, CameraError::NotACaptureDevice { .. }),
        "{err:?}"
    );
    assert!(
        err.to_string().starts_with("camera /dev/null: not a V4L2"),
        "{err}"
    );
}
