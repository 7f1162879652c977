//! The GNSS anchors a run fed its localizer, recorded beside its frames so a replay anchors alike.
//!
//! While the autopilot's GNSS is healthy the localize stage anchors the localizer on it (see
//! `gnss_anchor` in the stages). A recording ([`super::PipelineConfig::record`]) holds the frames and their
//! poses, but the autopilot's position is gone once the flight is over: without the anchors a replay would
//! start cold and its fixes would differ. So the localize stage keeps every anchor the localizer used and,
//! at shutdown, writes them into the recording as [`ANCHORS_SIDECAR`] (atomically: a temporary file, then a
//! rename; a run that crashes records none):
//!
//! ```text
//! seq,exposure_unix_us,lat_deg,lon_deg,accuracy95_m
//! 12,1764086400123456,44.59851234567891,-110.54812345678901,5.0
//! ```
//!
//! Numbers are written as the shortest text that parses back to the same `f64`, so a replay feeds the
//! localizer bit for bit what the live run fed it. A replay ([`super::PipelineConfig::replay_anchors`])
//! reads the file with [`RecordedAnchors::open_if_present`] at start-up (a malformed file is refused naming
//! the file, line and column) and anchors a frame on the row with its `seq` and exposure time.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::util::{read_csv, CsvFault};

/// The file, in a recording folder, that holds the anchors its live run used.
pub const ANCHORS_SIDECAR: &str = "anchors.csv";
/// The header `anchors.csv` must start with.
pub const ANCHORS_HEADER: &str = "seq,exposure_unix_us,lat_deg,lon_deg,accuracy95_m";
const COLUMNS: [&str; 5] = [
    "seq",
    "exposure_unix_us",
    "lat_deg",
    "lon_deg",
    "accuracy95_m",
];

/// One anchor the localizer used: the frame it came with, where (WGS84 degrees) and how well (95 %
/// horizontal radius, metres).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RecordedAnchor {
    /// The frame's sequence number.
    pub seq: u64,
    /// The frame's exposure time (UNIX µs): the anchor's time.
    pub exposure_unix_us: u64,
    /// Latitude, degrees.
    pub lat_deg: f64,
    /// Longitude, degrees.
    pub lon_deg: f64,
    /// 95 % horizontal radius, metres.
    pub accuracy95_m: f64,
}

/// Why `anchors.csv` could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum AnchorsError {
    /// The file could not be read, or written into place.
    #[error("recorded anchors {}: cannot {operation}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// What was being done (read, write, rename into place).
        operation: &'static str,
        /// The operating system's reason.
        #[source]
        source: std::io::Error,
    },
    /// A line of the file is malformed.
    #[error(
        "recorded anchors {}: line {line}, column {column} ({name}): {reason}",
        file.display()
    )]
    Csv {
        /// The file.
        file: PathBuf,
        /// 1-based line number.
        line: usize,
        /// 1-based column number.
        column: usize,
        /// The column's name (`(extra)` past the last one).
        name: &'static str,
        /// What is wrong with it.
        reason: String,
    },
}

/// The anchors of a recording, by frame.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RecordedAnchors {
    by_seq: BTreeMap<u64, RecordedAnchor>,
}

impl RecordedAnchors {
    /// Reads and validates `path`; `Ok(None)` when it does not exist (a recording made without anchors).
    pub fn open_if_present(path: &Path) -> Result<Option<Self>, AnchorsError> {
        match std::fs::read_to_string(path) {
            Ok(text) => Self::parse(&text, path).map(Some),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(AnchorsError::Io {
                path: path.to_path_buf(),
                operation: "read",
                source,
            }),
        }
    }

    /// Parses the text of `anchors.csv` (`file` names it in errors). Blank lines are skipped; every
    /// other line must have the five columns, a `seq` seen once, finite coordinates in range and a
    /// positive accuracy.
    pub fn parse(text: &str, file: &Path) -> Result<Self, AnchorsError> {
        let err = |line: usize, column: usize, reason: String| AnchorsError::Csv {
            file: file.to_path_buf(),
            line,
            column: column + 1,
            name: COLUMNS.get(column).copied().unwrap_or("(extra)"),
            reason,
        };
        let mut by_seq = BTreeMap::new();
        let fault = |f: CsvFault| err(f.line, f.column, f.reason);
        read_csv(text, &COLUMNS, fault, |line, fields| {
            let integer = |i: usize| {
                fields[i].parse::<u64>().map_err(|_| {
                    err(
                        line,
                        i,
                        format!("`{}` is not a non-negative integer", fields[i]),
                    )
                })
            };
            let number = |i: usize, ok: &dyn Fn(f64) -> bool, expected: &str| match fields[i]
                .parse::<f64>()
            {
                Ok(v) if v.is_finite() && ok(v) => Ok(v),
                _ => Err(err(line, i, format!("`{}` is not {expected}", fields[i]))),
            };
            let anchor = RecordedAnchor {
                seq: integer(0)?,
                exposure_unix_us: integer(1)?,
                lat_deg: number(
                    2,
                    &|v| (-90.0..=90.0).contains(&v),
                    "a latitude (-90 to 90 degrees)",
                )?,
                lon_deg: number(
                    3,
                    &|v| (-180.0..=180.0).contains(&v),
                    "a longitude (-180 to 180 degrees)",
                )?,
                accuracy95_m: number(4, &|v| v > 0.0, "a positive number of metres")?,
            };
            if by_seq.insert(anchor.seq, anchor).is_some() {
                return Err(err(
                    line,
                    0,
                    format!("frame {} has a second anchor", anchor.seq),
                ));
            }
            Ok(())
        })?;
        Ok(RecordedAnchors { by_seq })
    }

    /// The anchor recorded for frame `seq` taken at `exposure_unix_us`; `None` when there is none, or when
    /// the recorded one was taken at another time (it then belongs to another recording).
    pub fn for_frame(&self, seq: u64, exposure_unix_us: u64) -> Option<&RecordedAnchor> {
        self.by_seq
            .get(&seq)
            .filter(|a| a.exposure_unix_us == exposure_unix_us)
    }

    /// The anchor recorded for frame `seq`, whatever its time.
    pub fn get(&self, seq: u64) -> Option<&RecordedAnchor> {
        self.by_seq.get(&seq)
    }

    /// The anchors, by ascending `seq`.
    pub fn iter(&self) -> impl Iterator<Item = &RecordedAnchor> {
        self.by_seq.values()
    }

    /// How many frames have an anchor.
    pub fn len(&self) -> usize {
        self.by_seq.len()
    }

    /// Whether no frame has an anchor.
    pub fn is_empty(&self) -> bool {
        self.by_seq.is_empty()
    }
}

/// The text of `anchors.csv` for `anchors`, in the order given.
pub fn anchors_csv(anchors: &[RecordedAnchor]) -> String {
    let mut text = String::with_capacity(64 * (anchors.len() + 1));
    text.push_str(ANCHORS_HEADER);
    text.push('\n');
    for a in anchors {
        // `{:?}` prints the shortest string that parses back to the same f64.
        text.push_str(&format!(
            "{},{},{:?},{:?},{:?}\n",
            a.seq, a.exposure_unix_us, a.lat_deg, a.lon_deg, a.accuracy95_m
        ));
    }
    text
}

/// Writes `anchors` to `path` atomically (a reader sees the old file or the whole new one).
pub fn write_anchors(path: &Path, anchors: &[RecordedAnchor]) -> Result<(), AnchorsError> {
    crate::util::write_atomic_bytes(path, anchors_csv(anchors).as_bytes()).map_err(|e| {
        AnchorsError::Io {
            path: e.path,
            operation: e.operation,
            source: e.source,
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn anchor(seq: u64, lat_deg: f64, lon_deg: f64, accuracy95_m: f64) -> RecordedAnchor {
        RecordedAnchor {
            seq,
            exposure_unix_us: 1_764_086_400_000_000u64.wrapping_add(seq.wrapping_mul(33_333)),
            lat_deg,
            lon_deg,
            accuracy95_m,
        }
    }

    #[test]
    fn a_written_file_reads_back_bit_for_bit() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(ANCHORS_SIDECAR);
        let anchors = [
            anchor(1, 44.598_512_345_678_91, -110.548_123_456_789_01, 5.0),
            anchor(2, 0.1 + 0.2, -(1.0 / 3.0), 5.000_000_000_000_001),
            anchor(7, -90.0, 180.0, f64::MIN_POSITIVE),
            anchor(u64::MAX, 1e-300, -5e-324, 1e300),
        ];
        write_anchors(&path, &anchors).unwrap();
        let read = RecordedAnchors::open_if_present(&path).unwrap().unwrap();
        assert_eq!(read.len(), anchors.len());
        for a in &anchors {
            let b = read.for_frame(a.seq, a.exposure_unix_us).unwrap();
            assert_eq!(a.lat_deg.to_bits(), b.lat_deg.to_bits());
            assert_eq!(a.lon_deg.to_bits(), b.lon_deg.to_bits());
            assert_eq!(a.accuracy95_m.to_bits(), b.accuracy95_m.to_bits());
        }
        // Another time for the same frame is another recording's anchor.
        assert!(read.for_frame(1, anchors[0].exposure_unix_us + 1).is_none());
        assert!(read.for_frame(3, anchors[0].exposure_unix_us).is_none());
        // No temporary file is left beside it.
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, [std::ffi::OsString::from(ANCHORS_SIDECAR)]);
    }

    #[test]
    fn no_file_is_no_anchors_and_an_empty_list_is_a_header() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(ANCHORS_SIDECAR);
        assert!(RecordedAnchors::open_if_present(&path).unwrap().is_none());
        write_anchors(&path, &[]).unwrap();
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            format!("{ANCHORS_HEADER}\n")
        );
        assert!(RecordedAnchors::open_if_present(&path)
            .unwrap()
            .unwrap()
            .is_empty());
    }

    #[test]
    fn malformed_lines_are_refused_naming_line_and_column() {
        let file = Path::new("rec/anchors.csv");
        let cases: [(&str, usize, usize, &str); 9] = [
            ("", 1, 1, "seq"),
            (
                "seq,exposure_unix_us,lat,lon_deg,accuracy95_m\n",
                1,
                3,
                "lat_deg",
            ),
            (
                "seq,exposure_unix_us,lat_deg,lon_deg,accuracy95_m,x\n",
                1,
                6,
                "(extra)",
            ),
            ("H\n1,2,3.0,4.0,5.0\n\n3,4,5.0,6.0\n", 4, 5, "accuracy95_m"),
            ("H\n1,2,3.0,4.0,5.0,6\n", 2, 6, "(extra)"),
            ("H\n-1,2,3.0,4.0,5.0\n", 2, 1, "seq"),
            ("H\n1,2,91.0,4.0,5.0\n", 2, 3, "lat_deg"),
            ("H\n1,2,3.0,NaN,5.0\n", 2, 4, "lon_deg"),
            ("H\n1,2,3.0,4.0,5.0\n1,3,3.0,4.0,5.0\n", 3, 1, "seq"),
        ];
        for (text, line, column, name) in cases {
            let text = text.replacen('H', ANCHORS_HEADER, 1);
            match RecordedAnchors::parse(&text, file) {
                Err(
                    ref e @ AnchorsError::Csv {
                        line: l,
                        column: c,
                        name: n,
                        ..
                    },
                ) => {
                    assert_eq!((l, c, n), (line, column, name), "{text:?}: {e}");
                    let message = e.to_string();
                    assert!(
                        message.contains("rec/anchors.csv")
                            && message.contains(&format!("line {line}, column {column}")),
                        "{message}"
                    );
                }
                other => panic!("{text:?} gave {other:?}"),
            }
        }
        let zero_accuracy = format!("{ANCHORS_HEADER}\n0,0,0.0,0.0,0.0\n");
        assert!(RecordedAnchors::parse(&zero_accuracy, file).is_err());
        assert!(RecordedAnchors::parse(&format!("\u{feff}{ANCHORS_HEADER}\r\n"), file).is_ok());
    }
}
