//! Recorded camera folders: replay one as a camera ([`ReplaySource`]) and record one ([`ReplayRecorder`]).
//!
//! A recording is a folder with `frames.csv` and one image file (PNG or JPEG) per frame:
//!
//! ```text
//! seq,file,exposure_mono_us,exposure_unix_us,roll_rad,pitch_rad,yaw_rad,height_agl_m
//! 1,00000001.png,81234567,1764086400123456,0.01,-0.02,1.5708,120.0
//! 2,00000002.png,81267900,1764086400156789,,,,
//! ```
//!
//! The four pose columns are all empty (no pose) or all numbers. Files are named relative to the
//! folder; fields are plain (no quoting), so file names must not contain commas. Exposure times never go
//! back.
//!
//! [`ReplaySource::open`] validates the whole CSV up front (errors name the file, line and column, and a
//! listed image that does not exist); images are decoded when their frame is asked for, and one that
//! cannot be read is a [`CameraError::CorruptFrame`] naming it, after which the replay goes on.
//!
//! Crash safety of [`ReplayRecorder`]: each image is written to a temporary name and renamed, before its
//! row is added; rows are appended to `frames.csv.part`, flushed to disk every
//! [`ReplayRecorder::FLUSH_EVERY`] frames, and `finish` (or drop) renames it to `frames.csv`. After a
//! crash, `frames.csv.part` holds every frame up to the last flush (its last line may be cut: delete it)
//! and renaming it to `frames.csv` makes the recording replayable.

use std::fs::{self, File};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::thread;
use std::time::{Duration, Instant};

use image::{ImageEncoder, RgbImage};

use super::error::CameraError;
use super::frame::{Frame, FramePose};
use super::CameraSource;
use crate::util::{read_csv, write_atomic_bytes, CsvFault, WriteError};

/// The index file of a recording.
pub const FRAMES_CSV: &str = "frames.csv";
/// The header `frames.csv` must start with.
pub const FRAMES_CSV_HEADER: &str =
    "seq,file,exposure_mono_us,exposure_unix_us,roll_rad,pitch_rad,yaw_rad,height_agl_m";
const COLUMNS: [&str; 8] = [
    "seq",
    "file",
    "exposure_mono_us",
    "exposure_unix_us",
    "roll_rad",
    "pitch_rad",
    "yaw_rad",
    "height_agl_m",
];
const PART_SUFFIX: &str = ".part";

/// How fast a replay delivers its frames.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ReplayPace {
    /// Each call returns the next frame at once (tests, offline evaluation).
    #[default]
    AsFastAsPossible,
    /// Frames come at their recorded spacing (`exposure_mono_us`), as from a live camera.
    RealTime,
}

/// How to replay a recording.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ReplayOptions {
    /// Delivery speed.
    pub pace: ReplayPace,
    /// Start again after the last frame instead of returning [`CameraError::Ended`]. Later passes shift
    /// `seq` and the timestamps forward so they keep increasing.
    pub loop_: bool,
}

/// One validated row of `frames.csv`.
#[derive(Debug, Clone, PartialEq)]
struct Entry {
    seq: u64,
    file: PathBuf,
    exposure_mono_us: u64,
    exposure_unix_us: u64,
    pose: Option<FramePose>,
}

/// A recorded folder, replayed as a camera.
#[derive(Debug)]
pub struct ReplaySource {
    dir: PathBuf,
    description: String,
    entries: Vec<Entry>,
    options: ReplayOptions,
    next: usize,
    pass: u64,
    /// Per-pass shift of seq and timestamps when looping.
    seq_span: u64,
    time_span_us: u64,
    /// Wall instant and recorded monotonic time of the pass's first delivered frame (RealTime).
    anchor: Option<(Instant, u64)>,
}

impl ReplaySource {
    /// Opens a recording folder and validates its `frames.csv`.
    pub fn open(dir: impl AsRef<Path>, options: ReplayOptions) -> Result<Self, CameraError> {
        let dir = dir.as_ref().to_path_buf();
        let csv = dir.join(FRAMES_CSV);
        let text = match fs::read_to_string(&csv) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let part = dir.join(format!("{FRAMES_CSV}{PART_SUFFIX}"));
                let reason = if part.exists() {
                    format!(
                        "no {FRAMES_CSV}, but {} exists: the recording was not finished; drop its \
                         last line if cut and rename it to {FRAMES_CSV}",
                        part.display()
                    )
                } else {
                    format!("no {FRAMES_CSV}: not a vimgeo recording")
                };
                return Err(CameraError::Recording { path: dir, reason });
            }
            Err(source) => {
                return Err(CameraError::Io {
                    path: csv,
                    operation: "read",
                    source,
                })
            }
        };
        let entries = parse_frames_csv(&csv, &dir, &text)?;
        let (seq_span, time_span_us) = spans(&entries);
        Ok(ReplaySource {
            description: format!("replay {}", dir.display()),
            dir,
            entries,
            options,
            next: 0,
            pass: 0,
            seq_span,
            time_span_us,
            anchor: None,
        })
    }

    /// Number of frames in the recording.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True for a recording without frames.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The recording's folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

/// How far each looped pass shifts seq and time: the recording's span plus one typical step.
fn spans(entries: &[Entry]) -> (u64, u64) {
    let (Some(first), Some(last)) = (entries.first(), entries.last()) else {
        return (0, 0);
    };
    let n = entries.len() as u64;
    let seq_span = last.seq.saturating_sub(first.seq) + 1;
    let time = last.exposure_mono_us - first.exposure_mono_us;
    let step = if n > 1 { time / (n - 1) } else { 0 };
    (seq_span.max(n), time + step.max(1))
}

impl CameraSource for ReplaySource {
    fn describe(&self) -> String {
        self.description.clone()
    }

    /// Decoding is not bounded by `timeout`: only the pacing wait is.
    fn next_frame(&mut self, timeout: Duration) -> Result<Frame, CameraError> {
        if self.next >= self.entries.len() {
            if !self.options.loop_ || self.entries.is_empty() {
                return Err(CameraError::Ended);
            }
            self.next = 0;
            self.pass += 1;
        }
        let entry = &self.entries[self.next];
        let shift_us = self.pass * self.time_span_us;
        let mono = entry.exposure_mono_us + shift_us;

        if self.options.pace == ReplayPace::RealTime {
            let now = Instant::now();
            let (t0, mono0) = *self.anchor.get_or_insert((now, mono));
            let due = t0 + Duration::from_micros(mono.saturating_sub(mono0));
            let wait = due.saturating_duration_since(now);
            if wait > timeout {
                thread::sleep(timeout);
                return Err(CameraError::Timeout {
                    source_name: self.description.clone(),
                    waited: timeout,
                });
            }
            thread::sleep(wait);
        }

        self.next += 1;
        let seq = entry.seq + self.pass * self.seq_span;
        let path = self.dir.join(&entry.file);
        let image =
            image::open(&path)
                .map(|img| img.to_rgb8())
                .map_err(|e| CameraError::CorruptFrame {
                    source_name: self.description.clone(),
                    reason: format!("frame {seq}: {}: {e}", path.display()),
                })?;
        Ok(Frame {
            seq,
            exposure_mono_us: mono,
            exposure_unix_us: entry.exposure_unix_us + shift_us,
            image,
            pose: entry.pose,
        })
    }
}

/// Parses and validates `frames.csv` (`csv` is its path, for errors; `dir` the recording folder).
fn parse_frames_csv(csv: &Path, dir: &Path, text: &str) -> Result<Vec<Entry>, CameraError> {
    let err = |line: usize, column: &str, reason: String| CameraError::Csv {
        file: csv.to_path_buf(),
        line,
        column: column.to_string(),
        reason,
    };
    let mut entries = Vec::new();
    let mut last_mono: Option<u64> = None;
    let fault = |f: CsvFault| {
        let column = COLUMNS.get(f.column).copied().unwrap_or("(extra)");
        err(f.line, column, f.reason)
    };
    read_csv(text, &COLUMNS, fault, |line, fields| {
        let int = |i: usize| -> Result<u64, CameraError> {
            fields[i].parse::<u64>().map_err(|_| {
                err(
                    line,
                    COLUMNS[i],
                    format!("`{}` is not a non-negative integer", fields[i]),
                )
            })
        };
        let seq = int(0)?;
        let exposure_mono_us = int(2)?;
        let exposure_unix_us = int(3)?;

        let file = fields[1];
        if file.is_empty() {
            return Err(err(line, "file", "empty file name".into()));
        }
        let file = PathBuf::from(file);
        if file.is_absolute()
            || file
                .components()
                .any(|c| !matches!(c, std::path::Component::Normal(_)))
        {
            return Err(err(
                line,
                "file",
                format!(
                    "`{}` must be a plain path inside the recording folder",
                    file.display()
                ),
            ));
        }
        if !dir.join(&file).is_file() {
            return Err(err(
                line,
                "file",
                format!("image {} does not exist", dir.join(&file).display()),
            ));
        }

        let pose_fields = &fields[4..8];
        let pose = if pose_fields.iter().all(|f| f.is_empty()) {
            None
        } else {
            let mut v = [0.0f64; 4];
            for (k, f) in pose_fields.iter().enumerate() {
                let column = COLUMNS[4 + k];
                let x = f.parse::<f64>().ok().filter(|x| x.is_finite());
                v[k] = x.ok_or_else(|| {
                    err(
                        line,
                        column,
                        if f.is_empty() {
                            "empty, but other pose columns are set (all four or none)".to_string()
                        } else {
                            format!("`{f}` is not a finite number")
                        },
                    )
                })?;
            }
            Some(FramePose {
                roll_rad: v[0],
                pitch_rad: v[1],
                yaw_rad: v[2],
                height_agl_m: v[3],
            })
        };

        if let Some(prev) = last_mono {
            if exposure_mono_us < prev {
                return Err(err(
                    line,
                    "exposure_mono_us",
                    format!("{exposure_mono_us} goes back in time (previous row: {prev})"),
                ));
            }
        }
        last_mono = Some(exposure_mono_us);
        entries.push(Entry {
            seq,
            file,
            exposure_mono_us,
            exposure_unix_us,
            pose,
        });
        Ok(())
    })?;
    Ok(entries)
}

/// Writes a recording folder that [`ReplaySource`] replays: PNG images plus `frames.csv`.
///
/// Call [`finish`](Self::finish) at the end; dropping the recorder finishes it too (errors are only
/// logged then). See the module docs for what survives a crash.
#[derive(Debug)]
pub struct ReplayRecorder {
    dir: PathBuf,
    part: PathBuf,
    csv: Option<BufWriter<File>>,
    last_mono: Option<u64>,
    since_flush: usize,
    frames: usize,
}

impl ReplayRecorder {
    /// Rows are flushed to disk every this many frames (at most this many are lost in a crash).
    pub const FLUSH_EVERY: usize = 30;

    /// Creates the folder (if needed) and starts a recording in it; refuses a folder that already holds
    /// one.
    pub fn create(dir: impl AsRef<Path>) -> Result<Self, CameraError> {
        let dir = dir.as_ref().to_path_buf();
        fs::create_dir_all(&dir).map_err(|source| CameraError::Io {
            path: dir.clone(),
            operation: "create folder",
            source,
        })?;
        let part = dir.join(format!("{FRAMES_CSV}{PART_SUFFIX}"));
        for existing in [dir.join(FRAMES_CSV), part.clone()] {
            if existing.exists() {
                return Err(CameraError::Recording {
                    path: dir,
                    reason: format!(
                        "already holds a recording ({} exists); record into a new folder",
                        existing.display()
                    ),
                });
            }
        }
        let file = File::create(&part).map_err(|source| CameraError::Io {
            path: part.clone(),
            operation: "create",
            source,
        })?;
        let mut rec = ReplayRecorder {
            dir,
            part,
            csv: Some(BufWriter::new(file)),
            last_mono: None,
            since_flush: 0,
            frames: 0,
        };
        rec.write_line(FRAMES_CSV_HEADER)?;
        Ok(rec)
    }

    /// Frames recorded so far.
    pub fn frames(&self) -> usize {
        self.frames
    }

    /// Records one frame: its image as `<seq>.png` (written atomically), then its row.
    pub fn record(&mut self, frame: &Frame) -> Result<(), CameraError> {
        if self.csv.is_none() {
            return Err(CameraError::Recording {
                path: self.dir.clone(),
                reason: "already finished".into(),
            });
        }
        if let Some(prev) = self.last_mono {
            if frame.exposure_mono_us < prev {
                return Err(CameraError::Recording {
                    path: self.dir.clone(),
                    reason: format!(
                        "frame {} at {} µs goes back in time (previous frame at {prev} µs)",
                        frame.seq, frame.exposure_mono_us
                    ),
                });
            }
        }
        let name = format!("{:08}.png", frame.seq);
        let path = self.dir.join(&name);
        if path.exists() {
            return Err(CameraError::Recording {
                path,
                reason: format!("frame seq {} was already recorded", frame.seq),
            });
        }
        write_png_atomically(&path, &frame.image)?;

        let pose = match frame.pose {
            // `{:?}` prints the shortest string that parses back to the same f64.
            Some(p) => format!(
                "{:?},{:?},{:?},{:?}",
                p.roll_rad, p.pitch_rad, p.yaw_rad, p.height_agl_m
            ),
            None => ",,,".to_string(),
        };
        let row = format!(
            "{},{name},{},{},{pose}",
            frame.seq, frame.exposure_mono_us, frame.exposure_unix_us
        );
        self.write_line(&row)?;
        self.last_mono = Some(frame.exposure_mono_us);
        self.frames += 1;
        self.since_flush += 1;
        if self.since_flush >= Self::FLUSH_EVERY {
            self.flush()?;
        }
        Ok(())
    }

    /// Writes an extra file into the recording (atomically), e.g. the camera calibration the frames were
    /// taken with, so a replay can be rectified as the live run was. `name` must be a plain file name
    /// that is neither `frames.csv` nor a frame's image.
    pub fn write_sidecar(&self, name: &str, contents: &[u8]) -> Result<PathBuf, CameraError> {
        let plain = !name.is_empty()
            && !name.starts_with('.')
            && Path::new(name).file_name() == Some(std::ffi::OsStr::new(name));
        let reserved = name.starts_with(FRAMES_CSV)
            || (name.ends_with(".png")
                && name[..name.len() - 4].bytes().all(|b| b.is_ascii_digit()));
        if !plain || reserved {
            return Err(CameraError::Recording {
                path: self.dir.join(name),
                reason: "a sidecar needs a plain file name other than frames.csv or a frame image"
                    .into(),
            });
        }
        let path = self.dir.join(name);
        write_atomic_bytes(&path, contents).map_err(write_error)?;
        Ok(path)
    }

    /// Flushes the rows to disk and publishes `frames.csv`; returns the recording's folder.
    pub fn finish(mut self) -> Result<PathBuf, CameraError> {
        self.finish_inner()?;
        Ok(self.dir.clone())
    }

    fn finish_inner(&mut self) -> Result<(), CameraError> {
        if self.csv.is_none() {
            return Ok(());
        }
        self.flush()?;
        self.csv = None;
        let csv = self.dir.join(FRAMES_CSV);
        fs::rename(&self.part, &csv).map_err(|source| CameraError::Io {
            path: csv,
            operation: "rename into place",
            source,
        })
    }

    fn write_line(&mut self, line: &str) -> Result<(), CameraError> {
        let Some(w) = self.csv.as_mut() else {
            return Ok(());
        };
        writeln!(w, "{line}").map_err(|source| CameraError::Io {
            path: self.part.clone(),
            operation: "write",
            source,
        })
    }

    fn flush(&mut self) -> Result<(), CameraError> {
        let Some(w) = self.csv.as_mut() else {
            return Ok(());
        };
        w.flush()
            .and_then(|()| w.get_ref().sync_data())
            .map_err(|source| CameraError::Io {
                path: self.part.clone(),
                operation: "flush",
                source,
            })?;
        self.since_flush = 0;
        Ok(())
    }
}

impl Drop for ReplayRecorder {
    fn drop(&mut self) {
        if let Err(e) = self.finish_inner() {
            log::error!("recording {}: not finished: {e}", self.dir.display());
        }
    }
}

/// Encodes `image` as PNG and writes it to `path` atomically.
fn write_png_atomically(path: &Path, image: &RgbImage) -> Result<(), CameraError> {
    let mut bytes = Vec::new();
    image::codecs::png::PngEncoder::new(&mut bytes)
        .write_image(
            image.as_raw(),
            image.width(),
            image.height(),
            image::ExtendedColorType::Rgb8,
        )
        .map_err(|e| CameraError::Recording {
            path: path.to_path_buf(),
            reason: format!("cannot encode PNG: {e}"),
        })?;
    write_atomic_bytes(path, &bytes).map_err(write_error)
}

fn write_error(e: WriteError) -> CameraError {
    CameraError::Io {
        path: e.path,
        operation: e.operation,
        source: e.source,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn csv_err(text: &str, dir: &Path) -> (usize, String, String) {
        match parse_frames_csv(&dir.join(FRAMES_CSV), dir, text) {
            Err(CameraError::Csv {
                line,
                column,
                reason,
                ..
            }) => (line, column, reason),
            other => panic!("expected a CSV error, got {other:?}"),
        }
    }

    #[test]
    fn csv_rows_parse_with_and_without_pose() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("a.png"), b"x").unwrap();
        let text = format!(
            "{FRAMES_CSV_HEADER}\r\n3,a.png,10,20,0.5,-0.25,3,100.5\r\n\n4,a.png,10,21,,,,\n"
        );
        let e = parse_frames_csv(&dir.path().join(FRAMES_CSV), dir.path(), &text).unwrap();
        assert_eq!(e.len(), 2);
        assert_eq!(e[0].seq, 3);
        assert_eq!(
            e[0].pose,
            Some(FramePose {
                roll_rad: 0.5,
                pitch_rad: -0.25,
                yaw_rad: 3.0,
                height_agl_m: 100.5
            })
        );
        assert_eq!(e[1].pose, None);
        assert_eq!(e[1].exposure_unix_us, 21);
    }

    #[test]
    fn csv_errors_name_line_and_column() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        fs::write(d.join("a.png"), b"x").unwrap();
        let h = FRAMES_CSV_HEADER;
        assert_eq!(csv_err(&format!("{h}\n1,a.png,5,6,1,2,3\n"), d).0, 2);
        let (l, c, _) = csv_err(&format!("{h}\n1,a.png,5,6,1,,3,4\n"), d);
        assert_eq!((l, c.as_str()), (2, "pitch_rad"));
        let (_, c, _) = csv_err(&format!("{h}\n1,a.png,5,6,1,nan,3,4\n"), d);
        assert_eq!(c, "pitch_rad");
        let (l, c, _) = csv_err(&format!("{h}\n1,a.png,5,6,,,,\n2,a.png,4,7,,,,\n"), d);
        assert_eq!((l, c.as_str()), (3, "exposure_mono_us"));
        let (_, c, r) = csv_err(&format!("{h}\n1,../a.png,5,6,,,,\n"), d);
        assert_eq!(c, "file", "{r}");
        let (_, c, _) = csv_err(&format!("{h}\n-1,a.png,5,6,,,,\n"), d);
        assert_eq!(c, "seq");
        let (l, c, _) = csv_err("seq,file,exposure_us\n", d);
        assert_eq!((l, c.as_str()), (1, "exposure_mono_us"));
        assert_eq!(csv_err("", d).0, 1);
    }

    #[test]
    fn loop_spans_keep_time_increasing() {
        let e = |seq, t| Entry {
            seq,
            file: "a".into(),
            exposure_mono_us: t,
            exposure_unix_us: t,
            pose: None,
        };
        assert_eq!(spans(&[e(1, 100), e(2, 200), e(3, 300)]), (3, 300));
        assert_eq!(spans(&[e(7, 100)]), (1, 1));
        assert_eq!(spans(&[]), (0, 0));
    }

    #[test]
    fn recorder_refuses_an_existing_recording_and_time_going_back() {
        let dir = tempfile::tempdir().unwrap();
        let mut rec = ReplayRecorder::create(dir.path()).unwrap();
        let frame = |seq, t| Frame {
            seq,
            exposure_mono_us: t,
            exposure_unix_us: t,
            image: RgbImage::new(2, 2),
            pose: None,
        };
        rec.record(&frame(1, 100)).unwrap();
        let err = rec.record(&frame(2, 50)).unwrap_err().to_string();
        assert!(err.contains("back in time"), "{err}");
        let err = rec.record(&frame(1, 200)).unwrap_err().to_string();
        assert!(err.contains("already recorded"), "{err}");
        rec.finish().unwrap();
        let err = ReplayRecorder::create(dir.path()).unwrap_err().to_string();
        assert!(err.contains("already holds a recording"), "{err}");
    }

    #[test]
    fn sidecars_are_plain_files_beside_the_frames() {
        let dir = tempfile::tempdir().unwrap();
        let rec = ReplayRecorder::create(dir.path()).unwrap();
        let p = rec.write_sidecar("calibration.toml", b"fx = 1\n").unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"fx = 1\n");
        for bad in ["", "../x", "a/b", ".hidden", "frames.csv", "00000001.png"] {
            assert!(rec.write_sidecar(bad, b"x").is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn dropping_a_recorder_finishes_it() {
        let dir = tempfile::tempdir().unwrap();
        {
            let mut rec = ReplayRecorder::create(dir.path()).unwrap();
            rec.record(&Frame {
                seq: 1,
                exposure_mono_us: 1,
                exposure_unix_us: 2,
                image: RgbImage::new(1, 1),
                pose: None,
            })
            .unwrap();
        }
        let src = ReplaySource::open(dir.path(), ReplayOptions::default()).unwrap();
        assert_eq!(src.len(), 1);
    }
}
