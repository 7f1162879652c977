//! The build journal `<cache>.partial`: the tiles encoded so far, so that a killed build resumes.
//!
//! Layout: a header (magic line, little-endian u32 length, JSON [`JournalHeader`] with the build's
//! fingerprint), then one record per encoded batch, appended and synced: `REC1`, first tile index (u64),
//! tile count (u32), one kept/skipped byte per tile, the kept tiles' embeddings (f32 LE), and the SHA-256
//! of all of that. A record cut short by a kill fails its checksum and is dropped, with everything after
//! it, when the journal is reopened; so every record read back is whole, and resuming continues at a batch
//! boundary exactly where the last complete batch ended.
//!
//! The journal is read as a stream: a build holds only the kept tiles' indices in memory, and the
//! embeddings go from the journal straight into the cache writer ([`read_rows`]).

use std::fs::{File, OpenOptions};
use std::io::{BufReader, ErrorKind, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::error::BuildError;

const MAGIC: &[u8] = b"VIMGEO-BUILD-JOURNAL\n";
const RECORD_MAGIC: &[u8; 4] = b"REC1";
const JOURNAL_VERSION: u32 = 1;

/// What a journal belongs to: a resumed build must match it exactly.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JournalHeader {
    /// Always 1.
    pub version: u32,
    /// SHA-256 over everything that decides the cache's content (imagery, model, plan, stretch, options).
    pub fingerprint: String,
    /// Tiles in the plan.
    pub tiles: u64,
    /// Embedding size.
    pub dim: u32,
}

/// The tiles a journal holds: a prefix of the plan.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct JournalState {
    /// Tiles of the plan done (encoded or skipped), from index 0.
    pub done: usize,
    /// Plan indices of the encoded tiles, ascending.
    pub kept: Vec<u32>,
}

/// An open journal, positioned to append the next batch.
#[derive(Debug)]
pub struct Journal {
    path: PathBuf,
    file: File,
    dim: usize,
}

impl Journal {
    /// Opens the journal at `path` for a build described by `header`, returning what it already holds.
    ///
    /// A missing journal, one of another build (different fingerprint, tile count or dimension) or an
    /// unreadable one starts empty (logged); a torn tail is cut off.
    pub fn open(
        path: &Path,
        header: &JournalHeader,
    ) -> Result<(Journal, JournalState), BuildError> {
        let io = |source| BuildError::Io {
            path: path.to_path_buf(),
            source,
        };
        let dim = header.dim as usize;
        match scan(path, header, &mut |_| Ok(()))? {
            Scan::Missing => {}
            Scan::Foreign(reason) => {
                log::info!("{}: {reason}; starting the build over", path.display())
            }
            Scan::Valid { state, valid_len } => {
                let mut file = OpenOptions::new().write(true).open(path).map_err(io)?;
                let len = file.metadata().map_err(io)?.len();
                if valid_len < len {
                    log::warn!(
                        "{}: dropping {} bytes of an unfinished batch",
                        path.display(),
                        len - valid_len
                    );
                    file.set_len(valid_len).map_err(io)?;
                }
                file.seek(SeekFrom::Start(valid_len)).map_err(io)?;
                if state.done > 0 {
                    log::info!(
                        "{}: resuming after {} of {} tiles",
                        path.display(),
                        state.done,
                        header.tiles
                    );
                }
                let journal = Journal {
                    path: path.to_path_buf(),
                    file,
                    dim,
                };
                return Ok((journal, state));
            }
        }
        let mut file = File::create(path).map_err(io)?;
        let json = serde_json::to_vec(header).expect("a journal header always serialises");
        let mut head = MAGIC.to_vec();
        head.extend_from_slice(&(json.len() as u32).to_le_bytes());
        head.extend_from_slice(&json);
        file.write_all(&head).map_err(io)?;
        file.sync_all().map_err(io)?;
        let journal = Journal {
            path: path.to_path_buf(),
            file,
            dim,
        };
        Ok((journal, JournalState::default()))
    }

    /// Appends one batch: tiles `first..first + kept.len()`, `kept[i]` telling whether tile `first + i` was
    /// encoded, and the encoded tiles' embeddings in order. Synced before returning.
    pub fn append(
        &mut self,
        first: usize,
        kept: &[bool],
        embeddings: &[f32],
    ) -> Result<(), BuildError> {
        let n_kept = kept.iter().filter(|k| **k).count();
        assert_eq!(embeddings.len(), n_kept * self.dim, "journal record size");
        let mut rec = Vec::with_capacity(16 + kept.len() + embeddings.len() * 4 + 32);
        rec.extend_from_slice(RECORD_MAGIC);
        rec.extend_from_slice(&(first as u64).to_le_bytes());
        rec.extend_from_slice(&(kept.len() as u32).to_le_bytes());
        rec.extend(kept.iter().map(|&k| u8::from(k)));
        for v in embeddings {
            rec.extend_from_slice(&v.to_le_bytes());
        }
        let digest = Sha256::digest(&rec);
        rec.extend_from_slice(&digest);
        let io = |source| BuildError::Io {
            path: self.path.clone(),
            source,
        };
        self.file.write_all(&rec).map_err(io)?;
        self.file.sync_data().map_err(io)
    }

    /// Deletes the journal (the cache it fed is written).
    pub fn remove(self) -> Result<(), BuildError> {
        drop(self.file);
        std::fs::remove_file(&self.path).map_err(|source| BuildError::Io {
            path: self.path,
            source,
        })
    }
}

/// Streams the embeddings of the journal at `path` (of the build `header`) to `on_rows`, one record's
/// kept rows (`n x dim` values) at a time, in tile order; returns what the journal holds. A journal of
/// another build is an error here (the caller has just written it).
pub fn read_rows(
    path: &Path,
    header: &JournalHeader,
    on_rows: &mut dyn FnMut(&[f32]) -> Result<(), BuildError>,
) -> Result<JournalState, BuildError> {
    let io = |message: String| BuildError::Io {
        path: path.to_path_buf(),
        source: std::io::Error::other(message),
    };
    match scan(path, header, on_rows)? {
        Scan::Valid { state, .. } => Ok(state),
        Scan::Missing => Err(io("the build journal is missing".into())),
        Scan::Foreign(reason) => Err(io(reason)),
    }
}

/// What a journal file holds.
enum Scan {
    /// No file.
    Missing,
    /// A file of another build, or not a journal; why.
    Foreign(String),
    /// This build's journal: its whole records and how many leading bytes they span.
    Valid { state: JournalState, valid_len: u64 },
}

/// Reads a journal record by record (never all of it at once), passing each whole record's rows to
/// `on_rows`, and stops at the first record that is cut short or fails its checksum.
fn scan(
    path: &Path,
    want: &JournalHeader,
    on_rows: &mut dyn FnMut(&[f32]) -> Result<(), BuildError>,
) -> Result<Scan, BuildError> {
    let io = |source| BuildError::Io {
        path: path.to_path_buf(),
        source,
    };
    let file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(Scan::Missing),
        Err(e) => return Err(io(e)),
    };
    let mut r = BufReader::with_capacity(1 << 20, file);
    // Fills `buf` completely; false at end of file (a cut-short read counts as the end).
    let fill = |r: &mut BufReader<File>, buf: &mut [u8]| match r.read_exact(buf) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == ErrorKind::UnexpectedEof => Ok(false),
        Err(e) => Err(io(e)),
    };
    let mut magic = vec![0u8; MAGIC.len() + 4];
    if !fill(&mut r, &mut magic)? || &magic[..MAGIC.len()] != MAGIC {
        return Ok(Scan::Foreign("not a build journal (bad magic)".into()));
    }
    let len = u32::from_le_bytes(magic[MAGIC.len()..].try_into().unwrap()) as usize;
    if len > 1 << 20 {
        return Ok(Scan::Foreign("journal header is implausibly long".into()));
    }
    let mut json = vec![0u8; len];
    if !fill(&mut r, &mut json)? {
        return Ok(Scan::Foreign("journal header cut short".into()));
    }
    let header: JournalHeader = match serde_json::from_slice(&json) {
        Ok(h) => h,
        Err(e) => return Ok(Scan::Foreign(format!("unreadable journal header ({e})"))),
    };
    if header.version != JOURNAL_VERSION {
        return Ok(Scan::Foreign(format!(
            "journal version {} is not {JOURNAL_VERSION}",
            header.version
        )));
    }
    if header != *want {
        return Ok(Scan::Foreign(
            "the journal is of a build with other inputs (imagery, model, plan or options)".into(),
        ));
    }
    let dim = want.dim as usize;
    let mut valid_len = (MAGIC.len() + 4 + len) as u64;
    let mut state = JournalState::default();
    let mut head = [0u8; 16];
    let mut body = Vec::new();
    let mut rows = Vec::new();
    loop {
        if !fill(&mut r, &mut head)? || &head[..4] != RECORD_MAGIC {
            break;
        }
        let first = u64::from_le_bytes(head[4..12].try_into().unwrap()) as usize;
        let count = u32::from_le_bytes(head[12..16].try_into().unwrap()) as usize;
        if first != state.done || state.done + count > want.tiles as usize {
            break;
        }
        body.resize(count, 0);
        if !fill(&mut r, &mut body)? || body.iter().any(|f| *f > 1) {
            break;
        }
        let n_kept = body.iter().filter(|f| **f == 1).count();
        body.resize(count + n_kept * dim * 4 + 32, 0);
        if !fill(&mut r, &mut body[count..])? {
            break;
        }
        let (content, digest) = body.split_at(count + n_kept * dim * 4);
        let mut hasher = Sha256::new();
        hasher.update(head);
        hasher.update(content);
        if hasher.finalize().as_slice() != digest {
            break;
        }
        rows.clear();
        rows.extend(
            content[count..]
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes(b.try_into().unwrap())),
        );
        on_rows(&rows)?;
        for (i, f) in content[..count].iter().enumerate() {
            if *f == 1 {
                state.kept.push((first + i) as u32);
            }
        }
        state.done += count;
        valid_len += (16 + body.len()) as u64;
    }
    Ok(Scan::Valid { state, valid_len })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(fp: &str) -> JournalHeader {
        JournalHeader {
            version: JOURNAL_VERSION,
            fingerprint: fp.into(),
            tiles: 10,
            dim: 2,
        }
    }

    #[test]
    fn records_survive_reopening_and_a_torn_tail_is_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.partial");
        let (mut j, s) = Journal::open(&path, &header("a")).unwrap();
        assert_eq!(s, JournalState::default());
        j.append(0, &[true, false, true], &[1.0, 2.0, 3.0, 4.0])
            .unwrap();
        j.append(3, &[true], &[5.0, 6.0]).unwrap();
        drop(j);
        // A kill in the middle of the third record.
        let mut bytes = std::fs::read(&path).unwrap();
        let good = bytes.len();
        bytes.extend_from_slice(b"REC1\x04\0\0\0\0\0\0\0\x02\0\0\0\x01");
        std::fs::write(&path, &bytes).unwrap();
        let (mut j, s) = Journal::open(&path, &header("a")).unwrap();
        assert_eq!(s.done, 4);
        assert_eq!(s.kept, vec![0, 2, 3]);
        let mut rows = Vec::new();
        let again = read_rows(&path, &header("a"), &mut |r| {
            rows.extend_from_slice(r);
            Ok(())
        })
        .unwrap();
        assert_eq!(again, s);
        assert_eq!(rows, vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
        assert_eq!(std::fs::metadata(&path).unwrap().len() as usize, good);
        j.append(4, &[false], &[]).unwrap();
        drop(j);
        let (_, s) = Journal::open(&path, &header("a")).unwrap();
        assert_eq!(s.done, 5);
    }

    #[test]
    fn another_build_starts_over() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.partial");
        let (mut j, _) = Journal::open(&path, &header("a")).unwrap();
        j.append(0, &[true], &[1.0, 2.0]).unwrap();
        drop(j);
        let (_, s) = Journal::open(&path, &header("b")).unwrap();
        assert_eq!(s.done, 0);
        let (_, s) = Journal::open(&path, &header("b")).unwrap();
        assert_eq!(s.done, 0);
    }
}
