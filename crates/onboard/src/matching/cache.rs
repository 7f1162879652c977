//! The tile cache file: embeddings of satellite tiles plus their geometry, in one safetensors file.
//!
//! # Format (`format` = `vimgeo-tile-cache`, `format_version` = `1`)
//!
//! A safetensors file (little-endian u64 header length, JSON header, data) holding, in this data order:
//!
//! | tensor          | dtype      | shape   | meaning                                             |
//! |-----------------|------------|---------|-----------------------------------------------------|
//! | `lat`           | F64        | `[N]`   | tile centre latitude, degrees WGS84                 |
//! | `lon`           | F64        | `[N]`   | tile centre longitude, degrees WGS84                |
//! | `ground_size_m` | F32        | `[N]`   | tile side on the ground, metres                     |
//! | `scale`         | F32        | `[N]`   | the tile's scale (one of the `scales` metadata list) |
//! | `embeddings`    | F16 or F32 | `[N,E]` | L2-normalised tile embeddings, row-major            |
//!
//! The header is padded with spaces to a multiple of 8 bytes, so every tensor is aligned for its type
//! in a memory map. The safetensors string metadata (`__metadata__`) carries [`CacheMeta`]: every field
//! under its own name, numbers in decimal, `scales` and `stretch` as JSON, `extra` keys as they are, and
//! `checksum`: the lower-case hex SHA-256 of the whole file as written with the 64 checksum digits
//! themselves read as ASCII `0`. So truncation, or a changed byte anywhere (header or data), is detected.
//!
//! # Use
//!
//! Build with [`TileCacheWriter`] (streaming, for large caches) or [`write_cache`] (everything in
//! memory); both write to a temporary file beside the target, fsync it and rename it into place, so a
//! crash never leaves a half-written cache under the final name. Load with [`TileCache::open`], which
//! memory-maps the file and refuses it (a [`CacheError`] naming the file and the reason) when it is not
//! a cache, of another format version, damaged, or built with another model or dimension than the
//! running one ([`CacheExpectation`]).

use std::collections::BTreeMap;
use std::fmt;
use std::fs::File;
use std::io::{BufWriter, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use half::f16;
use half::slice::HalfFloatSliceExt;
use memmap2::Mmap;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::search::{self, Hit, PriorWindow, SearchError};
use crate::util::{hex, AtomicFile, WriteError};

/// The `format` metadata value of every tile cache.
pub const CACHE_FORMAT: &str = "vimgeo-tile-cache";
/// The `format_version` this runtime writes and reads.
pub const CACHE_FORMAT_VERSION: u32 = 1;

/// How far a row's L2 norm may stray from 1 before the writer refuses it (f16 rounding stays far inside).
const NORM_TOLERANCE: f32 = 1e-2;
/// The safetensors crate's own header limit.
const MAX_HEADER_BYTES: u64 = 100_000_000;
const CHECKSUM_PLACEHOLDER: &str =
    "0000000000000000000000000000000000000000000000000000000000000000";

/// How embeddings are stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EmbeddingDtype {
    /// IEEE half precision (2 bytes a value): the default, half the memory and scan time.
    F16,
    /// IEEE single precision (4 bytes a value).
    F32,
}

impl EmbeddingDtype {
    /// Bytes per value.
    pub fn bytes(self) -> usize {
        match self {
            EmbeddingDtype::F16 => 2,
            EmbeddingDtype::F32 => 4,
        }
    }

    /// The metadata spelling: `f16` or `f32`.
    pub fn as_str(self) -> &'static str {
        match self {
            EmbeddingDtype::F16 => "f16",
            EmbeddingDtype::F32 => "f32",
        }
    }

    fn safetensors(self) -> &'static str {
        match self {
            EmbeddingDtype::F16 => "F16",
            EmbeddingDtype::F32 => "F32",
        }
    }
}

impl std::str::FromStr for EmbeddingDtype {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "f16" => Ok(EmbeddingDtype::F16),
            "f32" => Ok(EmbeddingDtype::F32),
            other => Err(format!(
                "unknown embedding dtype {other:?} (expected f16 or f32)"
            )),
        }
    }
}

impl fmt::Display for EmbeddingDtype {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One tile's geometry.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Tile {
    /// Centre latitude, degrees WGS84.
    pub lat: f64,
    /// Centre longitude, degrees WGS84.
    pub lon: f64,
    /// Side of the (square, north-up) tile on the ground, metres.
    pub ground_size_m: f32,
    /// The tile's scale: one of [`CacheMeta::scales`].
    pub scale: f32,
}

/// A cache's metadata: what it was built from and with. Stored as the safetensors string map.
///
/// The writer sets `tiles`, `embedding_dim`, `dtype`, `tool_version` and `checksum` itself (whatever the
/// caller put there), and `created` when it is empty; the builder fills the rest.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CacheMeta {
    /// The model's name (manifest `name`).
    pub model_name: String,
    /// Lower-case hex SHA-256 of the model's ONNX file (manifest `onnx_sha256`).
    pub model_sha256: String,
    /// Embedding dimension E.
    pub embedding_dim: usize,
    /// How the embeddings are stored.
    pub dtype: EmbeddingDtype,
    /// Number of tiles N.
    pub tiles: usize,
    /// Lower-case hex SHA-256 of the source orthophoto file.
    pub imagery_sha256: String,
    /// The source orthophoto's path as given to the builder.
    pub imagery_path: String,
    /// The source imagery's CRS (e.g. `EPSG:32632`); tile centres are stored in WGS84 regardless.
    pub crs: String,
    /// Ground sample distance of the tiles as encoded (metres per pixel at scale 1).
    pub gsd_m: f64,
    /// Tile side in pixels as cut from the orthophoto (before the encoder's resize).
    pub tile_px: u32,
    /// Spacing between neighbouring tile centres as a fraction of the tile side (0.5 = 50 % overlap).
    pub stride: f64,
    /// The scales the tiles were cut at (`vimgeo cache build` records each scale's ground footprint in
    /// metres); each tile's `scale` is one of them.
    pub scales: Vec<f64>,
    /// The contrast stretch applied to the imagery, e.g. `{"kind":"percentile","low":2,"high":98,
    /// "per_band":[[lo,hi],...]}`, or the string `"none"`.
    pub stretch: serde_json::Value,
    /// When the cache was written (ISO 8601, UTC).
    pub created: String,
    /// The vimgeo version that wrote it.
    pub tool_version: String,
    /// See the module docs; empty until written.
    pub checksum: String,
    /// Further string entries the builder records (height band, footprint, ...); kept verbatim.
    pub extra: BTreeMap<String, String>,
}

impl CacheMeta {
    /// Metadata with the provenance fields to fill in; the writer completes the rest.
    pub fn new(model_name: &str, model_sha256: &str) -> CacheMeta {
        CacheMeta {
            model_name: model_name.to_string(),
            model_sha256: model_sha256.to_string(),
            embedding_dim: 0,
            dtype: EmbeddingDtype::F16,
            tiles: 0,
            imagery_sha256: String::new(),
            imagery_path: String::new(),
            crs: String::new(),
            gsd_m: 0.0,
            tile_px: 0,
            stride: 0.0,
            scales: Vec::new(),
            stretch: serde_json::Value::String("none".into()),
            created: String::new(),
            tool_version: crate::VERSION.to_string(),
            checksum: String::new(),
            extra: BTreeMap::new(),
        }
    }

    const KEYS: [&'static str; 16] = [
        "format",
        "format_version",
        "model_name",
        "model_sha256",
        "embedding_dim",
        "dtype",
        "tiles",
        "imagery_sha256",
        "imagery_path",
        "crs",
        "gsd_m",
        "tile_px",
        "stride",
        "scales",
        "stretch",
        "created",
    ];

    fn to_strings(&self) -> BTreeMap<String, String> {
        let mut m = self.extra.clone();
        let mut put = |k: &str, v: String| {
            m.insert(k.to_string(), v);
        };
        put("format", CACHE_FORMAT.into());
        put("format_version", CACHE_FORMAT_VERSION.to_string());
        put("model_name", self.model_name.clone());
        put("model_sha256", self.model_sha256.clone());
        put("embedding_dim", self.embedding_dim.to_string());
        put("dtype", self.dtype.as_str().into());
        put("tiles", self.tiles.to_string());
        put("imagery_sha256", self.imagery_sha256.clone());
        put("imagery_path", self.imagery_path.clone());
        put("crs", self.crs.clone());
        put("gsd_m", self.gsd_m.to_string());
        put("tile_px", self.tile_px.to_string());
        put("stride", self.stride.to_string());
        put(
            "scales",
            serde_json::to_string(&self.scales).unwrap_or_default(),
        );
        put(
            "stretch",
            serde_json::to_string(&self.stretch).unwrap_or_default(),
        );
        put("created", self.created.clone());
        put("tool_version", self.tool_version.clone());
        put("checksum", self.checksum.clone());
        m
    }

    /// Reads the metadata map; the error is `(key, reason)`.
    fn from_strings(
        map: &std::collections::HashMap<String, String>,
    ) -> Result<CacheMeta, (String, String)> {
        fn get<'a>(
            map: &'a std::collections::HashMap<String, String>,
            key: &str,
        ) -> Result<&'a str, (String, String)> {
            map.get(key)
                .map(String::as_str)
                .ok_or_else(|| (key.to_string(), "is missing".to_string()))
        }
        fn parse<T: std::str::FromStr>(
            map: &std::collections::HashMap<String, String>,
            key: &str,
        ) -> Result<T, (String, String)> {
            let s = get(map, key)?;
            s.parse()
                .map_err(|_| (key.to_string(), format!("has an invalid value {s:?}")))
        }
        fn json<T: serde::de::DeserializeOwned>(
            map: &std::collections::HashMap<String, String>,
            key: &str,
        ) -> Result<T, (String, String)> {
            let s = get(map, key)?;
            serde_json::from_str(s)
                .map_err(|e| (key.to_string(), format!("is not the expected JSON ({e})")))
        }
        let mut extra = BTreeMap::new();
        for (k, v) in map {
            if !Self::KEYS.contains(&k.as_str()) && k != "tool_version" && k != "checksum" {
                extra.insert(k.clone(), v.clone());
            }
        }
        Ok(CacheMeta {
            model_name: get(map, "model_name")?.to_string(),
            model_sha256: get(map, "model_sha256")?.to_string(),
            embedding_dim: parse(map, "embedding_dim")?,
            dtype: parse(map, "dtype")?,
            tiles: parse(map, "tiles")?,
            imagery_sha256: get(map, "imagery_sha256")?.to_string(),
            imagery_path: get(map, "imagery_path")?.to_string(),
            crs: get(map, "crs")?.to_string(),
            gsd_m: parse(map, "gsd_m")?,
            tile_px: parse(map, "tile_px")?,
            stride: parse(map, "stride")?,
            scales: json(map, "scales")?,
            stretch: json(map, "stretch")?,
            created: get(map, "created")?.to_string(),
            tool_version: get(map, "tool_version")?.to_string(),
            checksum: get(map, "checksum")?.to_string(),
            extra,
        })
    }
}

/// What the running system requires of a cache; `None` checks nothing.
#[derive(Debug, Clone, Copy, Default)]
pub struct CacheExpectation<'a> {
    /// The running model's ONNX SHA-256 (manifest `onnx_sha256`).
    pub model_sha256: Option<&'a str>,
    /// The running model's embedding dimension.
    pub embedding_dim: Option<usize>,
}

/// A tile cache that cannot be written or used. Every message names the file.
#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    /// The file could not be opened, read, mapped or written.
    #[error("tile cache {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The operating system's reason.
        source: std::io::Error,
    },
    /// The file is not a vimgeo tile cache at all (not safetensors, or another safetensors file).
    #[error("{path} is not a vimgeo tile cache: {reason}")]
    NotACache {
        /// The file.
        path: PathBuf,
        /// What was found instead.
        reason: String,
    },
    /// A tile cache of a format version this runtime does not read.
    #[error(
        "tile cache {path} has format_version {found}; this vimgeo reads version {supported} (rebuild it with `vimgeo cache build`)"
    )]
    UnknownVersion {
        /// The file.
        path: PathBuf,
        /// The version found.
        found: String,
        /// The version this runtime reads.
        supported: u32,
    },
    /// The file is damaged: truncated, checksum mismatch, unreadable header, inconsistent tensors.
    #[error("tile cache {path} is corrupt: {reason}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The cache was built with another model than the running one.
    #[error(
        "tile cache {path} was built with model {cache_model} (sha256 {cache_sha}), but the running model's sha256 is {running_sha}: rebuild the cache with this model"
    )]
    ModelMismatch {
        /// The file.
        path: PathBuf,
        /// The model name recorded in the cache.
        cache_model: String,
        /// The model SHA-256 recorded in the cache.
        cache_sha: String,
        /// The running model's SHA-256.
        running_sha: String,
    },
    /// The cache's embedding dimension is not the running model's.
    #[error(
        "tile cache {path} holds {cache_dim}-dimensional embeddings, but the running model produces {running_dim}"
    )]
    DimensionMismatch {
        /// The file.
        path: PathBuf,
        /// The cache's dimension.
        cache_dim: usize,
        /// The running model's dimension.
        running_dim: usize,
    },
    /// The writer was given data it cannot store (wrong row count, non-normalised rows, ...).
    #[error("cannot write tile cache {path}: {reason}")]
    InvalidInput {
        /// The file being written.
        path: PathBuf,
        /// What is wrong with the input.
        reason: String,
    },
}

fn write_err(e: WriteError) -> CacheError {
    CacheError::Io {
        path: e.path,
        source: e.source,
    }
}

fn io_err(path: &Path) -> impl Fn(std::io::Error) -> CacheError + '_ {
    move |source| CacheError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Writes a tile cache in one go: `embeddings` holds `tiles.len()` rows of `dim` values (row-major,
/// L2-normalised), stored as `dtype`. Atomic (see [`TileCacheWriter`]).
pub fn write_cache(
    path: &Path,
    meta: &CacheMeta,
    tiles: &[Tile],
    embeddings: &[f32],
    dim: usize,
    dtype: EmbeddingDtype,
) -> Result<(), CacheError> {
    let mut writer = TileCacheWriter::create(path, meta, tiles, dim, dtype)?;
    writer.push_rows(embeddings)?;
    writer.finish()
}

/// Streams a tile cache to disk: the geometry of every tile up front, then the embeddings in tile
/// order, in as many [`push_rows`](Self::push_rows) calls as convenient.
///
/// Everything goes to an [`AtomicFile`] beside the target; [`finish`](Self::finish) writes the
/// checksum, fsyncs the file, renames it over the target and fsyncs the directory. A writer dropped
/// without `finish` (an error, a crash, Ctrl-C) removes its temporary file and leaves any existing
/// cache untouched.
///
/// Resume: the writer itself is not resumable (the checksum covers the whole file). A builder that must
/// survive being killed keeps its own progress (e.g. the embeddings encoded so far, in a side file
/// keyed by the tiling plan and model) and streams them into a fresh writer at the end.
pub struct TileCacheWriter {
    path: PathBuf,
    out: Option<BufWriter<AtomicFile>>,
    hasher: Sha256,
    checksum_at: u64,
    dim: usize,
    dtype: EmbeddingDtype,
    rows_total: usize,
    rows_written: usize,
    scratch: Vec<u8>,
}

impl TileCacheWriter {
    /// Starts a cache of `tiles.len()` tiles with `dim`-dimensional embeddings stored as `dtype`.
    pub fn create(
        path: &Path,
        meta: &CacheMeta,
        tiles: &[Tile],
        dim: usize,
        dtype: EmbeddingDtype,
    ) -> Result<TileCacheWriter, CacheError> {
        let invalid = |reason: String| CacheError::InvalidInput {
            path: path.to_path_buf(),
            reason,
        };
        if dim == 0 {
            return Err(invalid("embedding dimension is 0".into()));
        }
        if let Some(i) = tiles
            .iter()
            .position(|t| !(t.lat.is_finite() && t.lon.is_finite() && t.lat.abs() <= 90.0))
        {
            return Err(invalid(format!(
                "tile {i} has invalid coordinates {:?}",
                tiles[i]
            )));
        }
        let n = tiles.len();
        let mut meta = meta.clone();
        meta.tiles = n;
        meta.embedding_dim = dim;
        meta.dtype = dtype;
        meta.tool_version = crate::VERSION.to_string();
        meta.checksum = CHECKSUM_PLACEHOLDER.to_string();
        if meta.created.is_empty() {
            meta.created = utc_now_iso();
        }
        let header = header_json(&meta, n, dim, dtype)
            .map_err(|e| invalid(format!("cannot encode the header: {e}")))?;
        let needle = format!("\"checksum\":\"{CHECKSUM_PLACEHOLDER}\"");
        let checksum_at = header
            .find(&needle)
            .map(|p| (8 + p + "\"checksum\":\"".len()) as u64)
            .ok_or_else(|| invalid("header lacks the checksum entry".into()))?;

        if path.file_name().is_none() {
            return Err(invalid("the path names no file".into()));
        }
        let file = AtomicFile::create(path).map_err(write_err)?;
        let mut writer = TileCacheWriter {
            path: path.to_path_buf(),
            out: Some(BufWriter::with_capacity(1 << 20, file)),
            hasher: Sha256::new(),
            checksum_at,
            dim,
            dtype,
            rows_total: n,
            rows_written: 0,
            scratch: Vec::new(),
        };
        writer.write(&(header.len() as u64).to_le_bytes())?;
        writer.write(header.as_bytes())?;
        let lat: Vec<u8> = tiles.iter().flat_map(|t| t.lat.to_le_bytes()).collect();
        writer.write(&lat)?;
        let lon: Vec<u8> = tiles.iter().flat_map(|t| t.lon.to_le_bytes()).collect();
        writer.write(&lon)?;
        let size: Vec<u8> = tiles
            .iter()
            .flat_map(|t| t.ground_size_m.to_le_bytes())
            .collect();
        writer.write(&size)?;
        let scale: Vec<u8> = tiles.iter().flat_map(|t| t.scale.to_le_bytes()).collect();
        writer.write(&scale)?;
        Ok(writer)
    }

    fn write(&mut self, bytes: &[u8]) -> Result<(), CacheError> {
        self.hasher.update(bytes);
        let out = self.out.as_mut().expect("writer is open until finish");
        out.write_all(bytes).map_err(io_err(&self.path))
    }

    /// Appends embedding rows (a whole number of `dim`-value rows, finite, L2 norm within 1 %).
    pub fn push_rows(&mut self, rows: &[f32]) -> Result<(), CacheError> {
        let invalid = |reason: String| CacheError::InvalidInput {
            path: self.path.clone(),
            reason,
        };
        if !rows.len().is_multiple_of(self.dim) {
            return Err(invalid(format!(
                "{} values are not a whole number of {}-value rows",
                rows.len(),
                self.dim
            )));
        }
        let count = rows.len() / self.dim;
        if self.rows_written + count > self.rows_total {
            return Err(invalid(format!(
                "{} embedding rows for {} tiles",
                self.rows_written + count,
                self.rows_total
            )));
        }
        for (j, row) in rows.chunks_exact(self.dim).enumerate() {
            let norm = row.iter().map(|x| x * x).sum::<f32>().sqrt();
            if !(norm.is_finite() && (norm - 1.0).abs() <= NORM_TOLERANCE) {
                return Err(invalid(format!(
                    "embedding row {} has L2 norm {norm} (rows must be normalised)",
                    self.rows_written + j
                )));
            }
        }
        let mut scratch = std::mem::take(&mut self.scratch);
        scratch.clear();
        match self.dtype {
            EmbeddingDtype::F32 => scratch.extend(rows.iter().flat_map(|x| x.to_le_bytes())),
            EmbeddingDtype::F16 => {
                let mut halves = vec![f16::ZERO; rows.len()];
                halves.convert_from_f32_slice(rows);
                scratch.extend(halves.iter().flat_map(|x| x.to_le_bytes()));
            }
        }
        let result = self.write(&scratch);
        self.scratch = scratch;
        result?;
        self.rows_written += count;
        Ok(())
    }

    /// Rows pushed so far.
    pub fn rows_written(&self) -> usize {
        self.rows_written
    }

    /// Completes the file (checksum, fsync) and renames it into place. Fails, leaving no file behind,
    /// unless exactly one row per tile was pushed.
    pub fn finish(mut self) -> Result<(), CacheError> {
        if self.rows_written != self.rows_total {
            return Err(CacheError::InvalidInput {
                path: self.path.clone(),
                reason: format!(
                    "{} embedding rows written for {} tiles",
                    self.rows_written, self.rows_total
                ),
            });
        }
        let digest = hex(&std::mem::take(&mut self.hasher).finalize());
        let out = self.out.take().expect("writer is open until finish");
        let mut file = out
            .into_inner()
            .map_err(|e| io_err(&self.path)(e.into_error()))?;
        file.seek(SeekFrom::Start(self.checksum_at))
            .and_then(|_| file.write_all(digest.as_bytes()))
            .map_err(io_err(&self.path))?;
        file.commit().map_err(write_err)
    }
}

fn header_json(
    meta: &CacheMeta,
    n: usize,
    dim: usize,
    dtype: EmbeddingDtype,
) -> Result<String, serde_json::Error> {
    use serde_json::{json, Map, Value};
    let mut header = Map::new();
    header.insert(
        "__metadata__".into(),
        serde_json::to_value(meta.to_strings())?,
    );
    let mut offset = 0usize;
    let mut tensor = |name: &str, st_dtype: &str, shape: Vec<usize>, bytes: usize| {
        header.insert(
            name.into(),
            json!({"dtype": st_dtype, "shape": shape, "data_offsets": [offset, offset + bytes]}),
        );
        offset += bytes;
    };
    tensor("lat", "F64", vec![n], n * 8);
    tensor("lon", "F64", vec![n], n * 8);
    tensor("ground_size_m", "F32", vec![n], n * 4);
    tensor("scale", "F32", vec![n], n * 4);
    tensor(
        "embeddings",
        dtype.safetensors(),
        vec![n, dim],
        n * dim * dtype.bytes(),
    );
    let mut text = serde_json::to_string(&Value::Object(header))?;
    while !text.len().is_multiple_of(8) {
        text.push(' ');
    }
    Ok(text)
}

/// The current time as ISO 8601 UTC (`2026-11-25T13:47:59Z`), without a date library.
fn utc_now_iso() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

/// One search result on a tile cache.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Match {
    /// Tile index in the cache.
    pub index: usize,
    /// Cosine similarity with the query.
    pub similarity: f32,
    /// Tile centre latitude, degrees WGS84.
    pub lat: f64,
    /// Tile centre longitude, degrees WGS84.
    pub lon: f64,
    /// Tile side on the ground, metres.
    pub ground_size_m: f32,
    /// The tile's scale.
    pub scale: f32,
}

/// A loaded (memory-mapped, checked) tile cache.
pub struct TileCache {
    path: PathBuf,
    meta: CacheMeta,
    map: Mmap,
    /// Byte ranges (in `map`) of the tensors.
    lat: (usize, usize),
    lon: (usize, usize),
    ground_size_m: (usize, usize),
    scale: (usize, usize),
    embeddings: (usize, usize),
    verified: bool,
}

impl fmt::Debug for TileCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TileCache")
            .field("path", &self.path)
            .field("tiles", &self.meta.tiles)
            .field("dim", &self.meta.embedding_dim)
            .field("dtype", &self.meta.dtype)
            .finish()
    }
}

/// The stored embeddings, typed.
#[derive(Debug, Clone, Copy)]
pub enum EmbeddingRows<'a> {
    /// f16 rows.
    F16(&'a [f16]),
    /// f32 rows.
    F32(&'a [f32]),
}

impl TileCache {
    /// Opens, checks and memory-maps a cache, verifying its checksum (reads the whole file once).
    pub fn open(path: &Path, expect: &CacheExpectation<'_>) -> Result<TileCache, CacheError> {
        Self::open_with(path, expect, true)
    }

    /// Like [`open`](Self::open) but skips the checksum (everything else is still checked): for
    /// benchmarks, and for a cache verified once already on this machine.
    pub fn open_unverified(
        path: &Path,
        expect: &CacheExpectation<'_>,
    ) -> Result<TileCache, CacheError> {
        Self::open_with(path, expect, false)
    }

    fn open_with(
        path: &Path,
        expect: &CacheExpectation<'_>,
        verify: bool,
    ) -> Result<TileCache, CacheError> {
        let not_cache = |reason: &str| CacheError::NotACache {
            path: path.to_path_buf(),
            reason: reason.to_string(),
        };
        let corrupt = |reason: String| CacheError::Corrupt {
            path: path.to_path_buf(),
            reason,
        };
        let file = File::open(path).map_err(io_err(path))?;
        let len = file.metadata().map_err(io_err(path))?.len();
        if len < 9 {
            return Err(not_cache(&format!("the file has only {len} bytes")));
        }
        // SAFETY: the map is read-only; a cache file changed underneath a running search would give
        // wrong similarities, not memory unsafety for these plain-number types. Caches are written by
        // rename, never in place.
        let map = unsafe { Mmap::map(&file) }.map_err(io_err(path))?;
        let bytes: &[u8] = &map;

        // Classify before trusting anything: a safetensors header of ours, or something else.
        let n = u64::from_le_bytes(bytes[..8].try_into().expect("8 bytes"));
        let looks_like_header = n <= MAX_HEADER_BYTES && bytes[8] == b'{';
        if !looks_like_header {
            return Err(not_cache("no safetensors header at the start"));
        }
        let header_end = 8 + n as usize;
        if header_end > bytes.len() {
            return Err(if contains(&bytes[8..], CACHE_FORMAT.as_bytes()) {
                corrupt(format!(
                    "truncated: the header claims {n} bytes but the file has only {len}"
                ))
            } else {
                not_cache("no safetensors header at the start")
            });
        }
        let header_bytes = &bytes[8..header_end];
        let ours = contains(header_bytes, CACHE_FORMAT.as_bytes());
        let header: serde_json::Value = match serde_json::from_slice(header_bytes) {
            Ok(v) => v,
            Err(e) if ours => return Err(corrupt(format!("the header is not valid JSON ({e})"))),
            Err(_) => return Err(not_cache("the safetensors header is not JSON")),
        };
        let metadata = header.get("__metadata__");
        let format = metadata
            .and_then(|m| m.get("format"))
            .and_then(|f| f.as_str());
        if format != Some(CACHE_FORMAT) {
            return Err(if ours {
                corrupt("the header's format entry is damaged".into())
            } else {
                not_cache(&format!(
                    "a safetensors file whose metadata format is {}, not {CACHE_FORMAT:?}",
                    format.map_or("missing".to_string(), |f| format!("{f:?}"))
                ))
            });
        }
        let version = metadata
            .and_then(|m| m.get("format_version"))
            .and_then(|v| v.as_str())
            .unwrap_or("missing");
        if version != CACHE_FORMAT_VERSION.to_string() {
            return Err(CacheError::UnknownVersion {
                path: path.to_path_buf(),
                found: version.to_string(),
                supported: CACHE_FORMAT_VERSION,
            });
        }

        // The safetensors crate checks the tensor table: contiguous offsets, sizes that match shapes
        // and dtypes, and a data section exactly as long as the table says.
        let tensors = safetensors::SafeTensors::deserialize(bytes).map_err(|e| match e {
            safetensors::SafeTensorError::MetadataIncompleteBuffer => corrupt(format!(
                "truncated or extended: the file has {len} bytes, which is not what its header describes"
            )),
            other => corrupt(format!("invalid safetensors header ({other})")),
        })?;
        let raw_meta = safetensors::SafeTensors::read_metadata(bytes)
            .map_err(|e| corrupt(format!("invalid safetensors header ({e})")))?
            .1;
        let strings = raw_meta.metadata().clone().unwrap_or_default();
        let meta = CacheMeta::from_strings(&strings)
            .map_err(|(key, reason)| corrupt(format!("metadata entry {key} {reason}")))?;

        let data_start = header_end;
        let base = bytes.as_ptr() as usize;
        let range = |name: &str, dtype: &str, shape: &[usize], align: usize| {
            let t = tensors
                .tensor(name)
                .map_err(|_| corrupt(format!("tensor {name} is missing")))?;
            let found_dtype = format!("{:?}", t.dtype());
            if found_dtype != dtype || t.shape() != shape {
                return Err(corrupt(format!(
                    "tensor {name} is {found_dtype} {:?}, metadata says {dtype} {shape:?}",
                    t.shape()
                )));
            }
            let start = t.data().as_ptr() as usize - base;
            if !start.is_multiple_of(align) {
                return Err(corrupt(format!(
                    "tensor {name} is not aligned for its type"
                )));
            }
            Ok((start, start + t.data().len()))
        };
        let (nt, dim) = (meta.tiles, meta.embedding_dim);
        let lat = range("lat", "F64", &[nt], 8)?;
        let lon = range("lon", "F64", &[nt], 8)?;
        let ground_size_m = range("ground_size_m", "F32", &[nt], 4)?;
        let scale = range("scale", "F32", &[nt], 4)?;
        let embeddings = range(
            "embeddings",
            meta.dtype.safetensors(),
            &[nt, dim],
            meta.dtype.bytes(),
        )?;
        debug_assert!(lat.0 >= data_start);
        if tensors.len() != 5 {
            return Err(corrupt(format!(
                "{} tensors where a version-1 cache has 5",
                tensors.len()
            )));
        }

        if let Some(running) = expect.model_sha256 {
            if !running.eq_ignore_ascii_case(&meta.model_sha256) {
                return Err(CacheError::ModelMismatch {
                    path: path.to_path_buf(),
                    cache_model: meta.model_name.clone(),
                    cache_sha: meta.model_sha256.clone(),
                    running_sha: running.to_string(),
                });
            }
        }
        if let Some(running_dim) = expect.embedding_dim {
            if running_dim != dim {
                return Err(CacheError::DimensionMismatch {
                    path: path.to_path_buf(),
                    cache_dim: dim,
                    running_dim,
                });
            }
        }

        if verify {
            verify_checksum(bytes, header_bytes, &meta.checksum).map_err(corrupt)?;
        }

        Ok(TileCache {
            path: path.to_path_buf(),
            meta,
            map,
            lat,
            lon,
            ground_size_m,
            scale,
            embeddings,
            verified: verify,
        })
    }

    /// The file this cache was loaded from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Its metadata.
    pub fn meta(&self) -> &CacheMeta {
        &self.meta
    }

    /// Number of tiles.
    pub fn len(&self) -> usize {
        self.meta.tiles
    }

    /// Whether the cache has no tiles.
    pub fn is_empty(&self) -> bool {
        self.meta.tiles == 0
    }

    /// Embedding dimension.
    pub fn dim(&self) -> usize {
        self.meta.embedding_dim
    }

    /// Whether the checksum was verified at load.
    pub fn is_verified(&self) -> bool {
        self.verified
    }

    /// Size of the file in bytes (all of it is mapped).
    pub fn file_bytes(&self) -> usize {
        self.map.len()
    }

    fn typed<T: bytemuck::Pod>(&self, (s, e): (usize, usize)) -> &[T] {
        // Alignment and length were checked at open.
        bytemuck::cast_slice(&self.map[s..e])
    }

    /// Tile `i`'s geometry, or `None` past the end.
    pub fn tile(&self, i: usize) -> Option<Tile> {
        Some(Tile {
            lat: *self.typed::<f64>(self.lat).get(i)?,
            lon: *self.typed::<f64>(self.lon).get(i)?,
            ground_size_m: *self.typed::<f32>(self.ground_size_m).get(i)?,
            scale: *self.typed::<f32>(self.scale).get(i)?,
        })
    }

    /// The stored embeddings (`len() * dim()` values, row-major).
    pub fn embeddings(&self) -> EmbeddingRows<'_> {
        match self.meta.dtype {
            EmbeddingDtype::F16 => EmbeddingRows::F16(self.typed::<f16>(self.embeddings)),
            EmbeddingDtype::F32 => EmbeddingRows::F32(self.typed::<f32>(self.embeddings)),
        }
    }

    /// Tile `i`'s embedding widened to f32, or `None` past the end.
    pub fn embedding(&self, i: usize) -> Option<Vec<f32>> {
        let d = self.dim();
        let range = i.checked_mul(d)?..(i + 1).checked_mul(d)?;
        Some(match self.embeddings() {
            EmbeddingRows::F16(v) => v.get(range)?.iter().map(|x| x.to_f32()).collect(),
            EmbeddingRows::F32(v) => v.get(range)?.to_vec(),
        })
    }

    /// Exact top-`k` tiles by cosine similarity with `query` (an L2-normalised embedding of `dim()`
    /// values), best first, restricted to tiles whose centre lies in `window` when given. Runs on the
    /// current rayon pool.
    pub fn search(
        &self,
        query: &[f32],
        k: usize,
        window: Option<&PriorWindow>,
    ) -> Result<Vec<Match>, SearchError> {
        let kernel = search::Kernel::detect();
        let lat = self.typed::<f64>(self.lat);
        let lon = self.typed::<f64>(self.lon);
        let prepared = window.map(PriorWindow::prepare);
        let inside = |i: usize| prepared.as_ref().is_none_or(|w| w.contains(lat[i], lon[i]));
        let filter: search::RowFilter<'_> = if window.is_some() {
            Some(&inside)
        } else {
            None
        };
        let hits = match self.embeddings() {
            EmbeddingRows::F16(e) => search::top_k(kernel, e, self.dim(), query, k, filter)?,
            EmbeddingRows::F32(e) => search::top_k(kernel, e, self.dim(), query, k, filter)?,
        };
        Ok(hits.into_iter().map(|h| self.to_match(h)).collect())
    }

    fn to_match(&self, hit: Hit) -> Match {
        let t = self
            .tile(hit.index)
            .expect("search returns rows of the cache");
        Match {
            index: hit.index,
            similarity: hit.similarity,
            lat: t.lat,
            lon: t.lon,
            ground_size_m: t.ground_size_m,
            scale: t.scale,
        }
    }

    /// A multi-line human summary (for `vimgeo cache info`).
    pub fn summary(&self) -> String {
        self.to_string()
    }
}

impl fmt::Display for TileCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let m = &self.meta;
        writeln!(f, "tile cache     {}", self.path.display())?;
        writeln!(f, "format         {CACHE_FORMAT} v{CACHE_FORMAT_VERSION}")?;
        writeln!(f, "tiles          {}", m.tiles)?;
        writeln!(
            f,
            "embeddings     {} x {} {}",
            m.tiles, m.embedding_dim, m.dtype
        )?;
        writeln!(f, "file size      {} bytes", self.map.len())?;
        writeln!(
            f,
            "model          {} (sha256 {})",
            m.model_name, m.model_sha256
        )?;
        writeln!(
            f,
            "imagery        {} (sha256 {})",
            m.imagery_path, m.imagery_sha256
        )?;
        writeln!(f, "crs            {}", m.crs)?;
        writeln!(f, "gsd            {} m/px", m.gsd_m)?;
        writeln!(f, "tile           {} px, stride {}", m.tile_px, m.stride)?;
        writeln!(f, "scales         {:?}", m.scales)?;
        writeln!(f, "stretch        {}", m.stretch)?;
        if !self.is_empty() {
            let (mut lat0, mut lat1, mut lon0, mut lon1) = (90.0f64, -90.0f64, 180.0f64, -180.0f64);
            for (&la, &lo) in self
                .typed::<f64>(self.lat)
                .iter()
                .zip(self.typed::<f64>(self.lon))
            {
                lat0 = lat0.min(la);
                lat1 = lat1.max(la);
                lon0 = lon0.min(lo);
                lon1 = lon1.max(lo);
            }
            writeln!(
                f,
                "extent         lat {lat0:.6}..{lat1:.6}, lon {lon0:.6}..{lon1:.6}"
            )?;
        }
        for (k, v) in &m.extra {
            writeln!(f, "{k:<14} {v}")?;
        }
        writeln!(
            f,
            "created        {} by vimgeo {}",
            m.created, m.tool_version
        )?;
        write!(
            f,
            "checksum       {} ({})",
            m.checksum,
            if self.verified {
                "verified"
            } else {
                "not verified"
            }
        )
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// Checks the whole-file checksum (see the module docs); the error is the reason.
fn verify_checksum(bytes: &[u8], header: &[u8], recorded: &str) -> Result<(), String> {
    let valid_hex = recorded.len() == 64
        && recorded
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    if !valid_hex {
        return Err(format!(
            "the recorded checksum {recorded:?} is not a SHA-256"
        ));
    }
    let needle = format!("\"checksum\":\"{recorded}\"");
    let Some(at) = header
        .windows(needle.len())
        .position(|w| w == needle.as_bytes())
    else {
        return Err("the checksum entry is not where the writer puts it".into());
    };
    let start = 8 + at + "\"checksum\":\"".len();
    let mut hasher = Sha256::new();
    hasher.update(&bytes[..start]);
    hasher.update(CHECKSUM_PLACEHOLDER.as_bytes());
    // Hash in large blocks: this is the one full read of the file.
    for block in bytes[start + 64..].chunks(1 << 22) {
        hasher.update(block);
    }
    let actual = hex(&hasher.finalize());
    if actual != recorded {
        return Err(format!(
            "checksum mismatch (recorded {recorded}, contents hash to {actual}): the file was damaged after it was written"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_now_is_iso() {
        let s = utc_now_iso();
        assert_eq!(s.len(), 20, "{s}");
        assert!(s.starts_with("20") && s.ends_with('Z'));
    }

    #[test]
    fn metadata_round_trips_through_strings() {
        let mut m = CacheMeta::new("vimgeo-small-384", &"ab".repeat(32));
        m.scales = vec![1.0, 1.5];
        m.stretch = serde_json::json!({"kind": "percentile", "low": 2, "high": 98});
        m.extra.insert("height_m".into(), "80..150".into());
        m.checksum = "0".repeat(64);
        let strings: std::collections::HashMap<String, String> =
            m.to_strings().into_iter().collect();
        assert_eq!(CacheMeta::from_strings(&strings).unwrap(), m);
    }
}
