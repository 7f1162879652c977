//! Small helpers shared across the crate: atomic file writes, a plain CSV reader, lower-case hex and the wall
//! clock.
//!
//! An atomic write goes to a temporary file beside the target (same directory, so the same filesystem),
//! which is synced, renamed over the target, and followed by a sync of the directory (best effort), so a
//! reader sees the old file or the whole new one, never a part, even after a power loss. A write that fails
//! or is abandoned removes its temporary file and leaves the target untouched.

use std::fmt;
use std::fs::File;
use std::io::{self, BufWriter, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

/// A failed atomic write of [`WriteError::path`].
#[derive(Debug)]
pub struct WriteError {
    /// The target file.
    pub path: PathBuf,
    /// What failed (`create a temporary file beside`, `write`, `rename into place`, ...).
    pub operation: &'static str,
    /// The operating system's reason.
    pub source: io::Error,
}

impl fmt::Display for WriteError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "cannot {} {}: {}",
            self.operation,
            self.path.display(),
            self.source
        )
    }
}

impl std::error::Error for WriteError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.source)
    }
}

impl From<WriteError> for io::Error {
    fn from(e: WriteError) -> io::Error {
        io::Error::new(e.source.kind(), e.to_string())
    }
}

/// A file being written beside `path`, moved over it by [`commit`](Self::commit); dropped uncommitted, it
/// removes itself. Writes go straight to the file (wrap it in a `BufWriter` to buffer).
#[derive(Debug)]
pub struct AtomicFile {
    path: PathBuf,
    tmp: tempfile::NamedTempFile,
}

impl AtomicFile {
    /// Creates the temporary file `.<name>.<random>.tmp` in `path`'s directory (which must exist), with the
    /// permissions a new file gets (0666 less the umask).
    pub fn create(path: &Path) -> Result<AtomicFile, WriteError> {
        let err = |operation, source| WriteError {
            path: path.to_path_buf(),
            operation,
            source,
        };
        let name = path.file_name().ok_or_else(|| {
            err(
                "write",
                io::Error::new(io::ErrorKind::InvalidInput, "the path names no file"),
            )
        })?;
        let mut builder = tempfile::Builder::new();
        let prefix = format!(".{}.", name.to_string_lossy());
        builder.prefix(&prefix).suffix(".tmp");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            builder.permissions(std::fs::Permissions::from_mode(0o666));
        }
        let tmp = builder
            .tempfile_in(parent_dir(path))
            .map_err(|e| err("create a temporary file beside", e))?;
        Ok(AtomicFile {
            path: path.to_path_buf(),
            tmp,
        })
    }

    /// The target file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Syncs the file, renames it over the target and syncs the directory.
    pub fn commit(self) -> Result<(), WriteError> {
        let err = |operation, source| WriteError {
            path: self.path.clone(),
            operation,
            source,
        };
        self.tmp.as_file().sync_all().map_err(|e| err("write", e))?;
        self.tmp
            .persist(&self.path)
            .map_err(|e| err("rename into place", e.error))?;
        // The rename is durable once the directory is synced (best effort: some filesystems refuse).
        if let Ok(dir) = File::open(parent_dir(&self.path)) {
            let _ = dir.sync_all();
        }
        Ok(())
    }
}

impl Write for AtomicFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.tmp.write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.tmp.flush()
    }
}

impl Seek for AtomicFile {
    fn seek(&mut self, pos: SeekFrom) -> io::Result<u64> {
        self.tmp.seek(pos)
    }
}

/// Writes `path` atomically with what `write` puts into the (buffered) writer it is given.
pub fn write_atomic(
    path: &Path,
    write: impl FnOnce(&mut dyn Write) -> io::Result<()>,
) -> Result<(), WriteError> {
    let mut out = BufWriter::new(AtomicFile::create(path)?);
    let err = |source| WriteError {
        path: path.to_path_buf(),
        operation: "write",
        source,
    };
    write(&mut out).and_then(|()| out.flush()).map_err(err)?;
    let file = out.into_inner().map_err(|e| err(e.into_error()))?;
    file.commit()
}

/// Writes `bytes` to `path` atomically.
pub fn write_atomic_bytes(path: &Path, bytes: &[u8]) -> Result<(), WriteError> {
    write_atomic(path, |w| w.write_all(bytes))
}

/// The directory holding `path` (`.` for a bare file name).
fn parent_dir(path: &Path) -> &Path {
    path.parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
}

/// Where a CSV read by [`read_csv`] is malformed: 1-based `line`, 0-based `column` (`columns.len()` for a
/// field past the last one), and why.
#[derive(Debug, Clone, PartialEq)]
pub struct CsvFault {
    pub line: usize,
    pub column: usize,
    pub reason: String,
}

/// Reads a headed CSV of plain comma-separated fields (no quoting). The first line must be `columns` joined
/// by commas (a UTF-8 byte-order mark before it is allowed); blank lines are skipped; every other line must
/// have exactly `columns.len()` fields, which `row` gets trimmed, with the line's number. A bad header or
/// field count becomes an error through `fault`; `row`'s errors pass through.
pub fn read_csv<E>(
    text: &str,
    columns: &[&str],
    fault: impl Fn(CsvFault) -> E,
    mut row: impl FnMut(usize, &[&str]) -> Result<(), E>,
) -> Result<(), E> {
    let expected = columns.join(",");
    let mut lines = text.lines().enumerate().map(|(i, l)| (i + 1, l));
    let header = lines.next().map_or("", |(_, l)| l.trim());
    let header = header.strip_prefix('\u{feff}').unwrap_or(header);
    if header != expected {
        let got: Vec<&str> = header.split(',').map(str::trim).collect();
        let column = (0..=columns.len())
            .find(|&i| got.get(i) != columns.get(i))
            .unwrap_or(columns.len());
        return Err(fault(CsvFault {
            line: 1,
            column,
            reason: format!("bad header `{header}`, expected `{expected}`"),
        }));
    }
    let mut fields = Vec::with_capacity(columns.len());
    for (line, raw) in lines {
        let raw = raw.trim();
        if raw.is_empty() {
            continue;
        }
        fields.clear();
        fields.extend(raw.split(',').map(str::trim));
        if fields.len() != columns.len() {
            return Err(fault(CsvFault {
                line,
                column: fields.len().min(columns.len()),
                reason: format!(
                    "{} fields, expected {} (`{expected}`)",
                    fields.len(),
                    columns.len()
                ),
            }));
        }
        row(line, &fields)?;
    }
    Ok(())
}

/// Lower-case hex of `bytes` (two digits a byte).
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(2 * bytes.len());
    for b in bytes {
        s.push(DIGITS[usize::from(b >> 4)] as char);
        s.push(DIGITS[usize::from(b & 0xf)] as char);
    }
    s
}

/// The wall clock (UNIX time) now, µs; 0 if the clock is set before 1970.
pub fn unix_now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_is_lower_case_two_digits_a_byte() {
        assert_eq!(hex(&[0x00, 0x0f, 0xa5, 0xff]), "000fa5ff");
        assert_eq!(hex(&[]), "");
    }

    #[test]
    fn csv_rows_come_trimmed_and_faults_name_line_and_column() {
        let columns = ["a", "b"];
        let mut rows = Vec::new();
        read_csv(
            "\u{feff}a,b\n 1 , 2\n\n3,4\n",
            &columns,
            |f| f,
            |line, fields| {
                rows.push((line, fields.join("|")));
                Ok(())
            },
        )
        .unwrap();
        assert_eq!(rows, [(2, "1|2".to_string()), (4, "3|4".to_string())]);
        let fault = |text| read_csv(text, &columns, |f| f, |_, _| Ok(())).unwrap_err();
        assert_eq!((fault("a,c\n").line, fault("a,c\n").column), (1, 1));
        assert_eq!(fault("a,b,c\n").column, 2);
        let short = fault("a,b\n1,2\n1\n");
        assert_eq!((short.line, short.column), (3, 1));
        assert!(
            short.reason.starts_with("1 fields, expected 2"),
            "{short:?}"
        );
    }

    #[test]
    fn an_atomic_write_replaces_the_file_and_leaves_nothing_else() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.txt");
        std::fs::write(&path, b"old").unwrap();
        write_atomic_bytes(&path, b"new").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"new");
        let err = write_atomic(&path, |w| {
            w.write_all(b"partial")?;
            Err(io::Error::other("refused"))
        })
        .unwrap_err();
        assert!(err.to_string().contains("out.txt"), "{err}");
        assert_eq!(std::fs::read(&path).unwrap(), b"new");
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["out.txt"]);
    }

    #[test]
    fn an_uncommitted_file_removes_itself() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cache.bin");
        let mut file = AtomicFile::create(&path).unwrap();
        file.write_all(b"x").unwrap();
        drop(file);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    #[test]
    fn a_missing_directory_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("no/such/dir/f.txt");
        let err = write_atomic_bytes(&path, b"x").unwrap_err();
        assert!(err.to_string().contains("f.txt"), "{err}");
    }
}
