//! `vimgeo bench search`: milliseconds per exact top-k query on synthetic (or given) embeddings, set
//! against the memory-bandwidth bound measured in the same run, plus the memory a loaded cache uses.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Instant;

use half::f16;
use half::slice::HalfFloatSliceExt;
use rayon::prelude::*;
use serde::Serialize;

use super::{top_k, Hit, Kernel};
use crate::matching::cache::{
    CacheError, CacheExpectation, CacheMeta, EmbeddingDtype, Tile, TileCache, TileCacheWriter,
};

/// What to measure. Only the binary builds this (from `vimgeo bench search` arguments).
#[derive(Debug, Clone)]
pub struct BenchSearchConfig {
    /// Rows (tiles) to generate; ignored when `data` is given.
    pub tiles: usize,
    /// Embedding dimension.
    pub dim: usize,
    /// Storage types to time, each on the same data.
    pub dtypes: Vec<EmbeddingDtype>,
    /// Results per query.
    pub k: usize,
    /// Worker threads (0: rayon's default, one per core).
    pub threads: usize,
    /// Timed queries per storage type (after one untimed warm-up query).
    pub iters: usize,
    /// Seed of the synthetic embeddings and queries.
    pub seed: u64,
    /// Raw little-endian f32 embeddings (`rows x dim`, row-major, normalised) instead of synthetic ones.
    pub data: Option<PathBuf>,
    /// Raw little-endian f32 queries (`q x dim`) instead of synthetic ones; `iters` is then the count.
    pub queries: Option<PathBuf>,
    /// When set, also write a cache of `tiles` rows (first dtype) into this folder, load it memory-mapped
    /// and report the process's memory; the file is removed afterwards.
    pub cache_dir: Option<PathBuf>,
}

impl Default for BenchSearchConfig {
    fn default() -> Self {
        BenchSearchConfig {
            tiles: 1_000_000,
            dim: 384,
            dtypes: vec![EmbeddingDtype::F16, EmbeddingDtype::F32],
            k: 10,
            threads: 0,
            iters: 20,
            seed: 1,
            data: None,
            queries: None,
            cache_dir: None,
        }
    }
}

/// The timings of one storage type.
#[derive(Debug, Clone, Serialize)]
pub struct DtypeTiming {
    /// Storage type.
    pub dtype: EmbeddingDtype,
    /// Bytes of embeddings one query scans.
    pub bytes_scanned: usize,
    /// Median milliseconds per query.
    pub ms_median: f64,
    /// Fastest query, ms.
    pub ms_min: f64,
    /// Mean ms per query.
    pub ms_mean: f64,
    /// Embedding bytes scanned per second at the median, GB/s (1e9).
    pub scan_gb_s: f64,
    /// The bandwidth bound: `bytes_scanned` / the measured copy bandwidth, ms.
    pub bound_ms: f64,
    /// `ms_median / bound_ms` (1.0 = at the bound).
    pub vs_bound: f64,
    /// The tighter bound: `bytes_scanned` / the measured streaming-read bandwidth, ms (a scan only
    /// reads, while a copy both reads and writes each byte).
    pub read_bound_ms: f64,
    /// `ms_median / read_bound_ms`.
    pub vs_read_bound: f64,
    /// The first query's results (to compare with another implementation).
    pub first_query_top: Vec<(usize, f32)>,
}

/// Process memory before and after loading a cache (from `/proc/self/status`, kB).
#[derive(Debug, Clone, Serialize)]
pub struct CacheMemory {
    /// Cache file size, bytes.
    pub file_bytes: u64,
    /// Tiles in the cache.
    pub tiles: usize,
    /// Seconds `TileCache::open` took (checksum verification included).
    pub open_s: f64,
    /// Before open: `VmRSS`, `RssAnon`, `RssFile`, `VmHWM` (kB).
    pub before_kb: [u64; 4],
    /// After open (verified) and one search.
    pub after_kb: [u64; 4],
}

/// What `bench_search` measured.
#[derive(Debug, Clone, Serialize)]
pub struct BenchSearchReport {
    /// Kernel used.
    pub kernel: String,
    /// Worker threads.
    pub threads: usize,
    /// Rows searched.
    pub tiles: usize,
    /// Embedding dimension.
    pub dim: usize,
    /// Results per query.
    pub k: usize,
    /// Timed queries per storage type.
    pub queries: usize,
    /// Multi-threaded memcpy bandwidth measured in this run (bytes copied per second, GB/s = 1e9).
    pub copy_gb_s: f64,
    /// Multi-threaded streaming-read bandwidth measured in this run (bytes read per second, GB/s).
    pub read_gb_s: f64,
    /// Per storage type.
    pub timings: Vec<DtypeTiming>,
    /// The loaded-cache memory figures, when asked for.
    pub cache_memory: Option<CacheMemory>,
}

impl fmt::Display for BenchSearchReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "top-{} over {} x {} ({} queries, {} threads, kernel {})",
            self.k, self.tiles, self.dim, self.queries, self.threads, self.kernel
        )?;
        writeln!(
            f,
            "copy bandwidth {:.1} GB/s (memcpy, bytes copied per second); read bandwidth {:.1} GB/s",
            self.copy_gb_s, self.read_gb_s
        )?;
        for t in &self.timings {
            writeln!(
                f,
                "{}: {:.2} ms/query median ({:.2} min, {:.2} mean), {:.1} GB/s scanned; copy bound {:.2} ms ({:.2}x), read bound {:.2} ms ({:.2}x)",
                t.dtype,
                t.ms_median,
                t.ms_min,
                t.ms_mean,
                t.scan_gb_s,
                t.bound_ms,
                t.vs_bound,
                t.read_bound_ms,
                t.vs_read_bound
            )?;
        }
        if let Some(m) = &self.cache_memory {
            writeln!(
                f,
                "loaded cache: {} tiles, file {:.1} MB, open+verify {:.2} s; RSS {} -> {} kB (anon {} -> {}, file-backed {} -> {}), peak {} kB",
                m.tiles,
                m.file_bytes as f64 / 1e6,
                m.open_s,
                m.before_kb[0],
                m.after_kb[0],
                m.before_kb[1],
                m.after_kb[1],
                m.before_kb[2],
                m.after_kb[2],
                m.after_kb[3]
            )?;
        }
        Ok(())
    }
}

/// A benchmark that could not run.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// A data or query file could not be read, or is not whole rows.
    #[error("benchmark data {path}: {reason}")]
    Data {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// The thread pool could not start.
    #[error("cannot start {threads} search threads: {reason}")]
    Threads {
        /// Threads asked for.
        threads: usize,
        /// Why.
        reason: String,
    },
    /// The loaded-cache measurement failed.
    #[error(transparent)]
    Cache(#[from] CacheError),
    /// A search failed (shapes).
    #[error(transparent)]
    Search(#[from] super::SearchError),
}

/// Runs the search benchmark described by `config`.
pub fn bench_search(config: &BenchSearchConfig) -> Result<BenchSearchReport, BenchError> {
    let mut builder = rayon::ThreadPoolBuilder::new();
    if config.threads > 0 {
        builder = builder.num_threads(config.threads);
    }
    let pool = builder.build().map_err(|e| BenchError::Threads {
        threads: config.threads,
        reason: e.to_string(),
    })?;
    pool.install(|| run(config))
}

fn run(config: &BenchSearchConfig) -> Result<BenchSearchReport, BenchError> {
    let dim = config.dim;
    // Memory first, while the process is still small, so its peak means something.
    let cache_memory = match &config.cache_dir {
        Some(dir) => Some(measure_cache_memory(
            dir,
            config.tiles,
            dim,
            config
                .dtypes
                .first()
                .copied()
                .unwrap_or(EmbeddingDtype::F16),
            config.seed,
        )?),
        None => None,
    };
    let embeddings = match &config.data {
        Some(path) => read_f32_rows(path, dim)?,
        None => synthetic_rows(config.tiles, dim, config.seed),
    };
    let tiles = embeddings.len() / dim;
    let queries = match &config.queries {
        Some(path) => read_f32_rows(path, dim)?,
        None => synthetic_rows(config.iters.max(1), dim, config.seed ^ 0x5eed),
    };
    let copy_gb_s = measure_copy_bandwidth(tiles * dim * 4);
    let read_gb_s = measure_read_bandwidth(tiles * dim * 4);
    let kernel = Kernel::detect();
    let mut timings = Vec::new();
    for &dtype in &config.dtypes {
        let timing = match dtype {
            EmbeddingDtype::F32 => time_queries(kernel, &embeddings, dim, &queries, config.k)?,
            EmbeddingDtype::F16 => {
                let mut halves = vec![f16::ZERO; embeddings.len()];
                halves.convert_from_f32_slice(&embeddings);
                time_queries(kernel, &halves, dim, &queries, config.k)?
            }
        };
        let (ms, first) = timing;
        timings.push(summarise(
            dtype,
            tiles * dim * dtype.bytes(),
            ms,
            first,
            copy_gb_s,
            read_gb_s,
        ));
    }
    Ok(BenchSearchReport {
        kernel: kernel.name().to_string(),
        threads: rayon::current_num_threads(),
        tiles,
        dim,
        k: config.k,
        queries: queries.len() / dim,
        copy_gb_s,
        read_gb_s,
        timings,
        cache_memory,
    })
}

fn time_queries<E: super::Element>(
    kernel: Kernel,
    rows: &[E],
    dim: usize,
    queries: &[f32],
    k: usize,
) -> Result<(Vec<f64>, Vec<Hit>), BenchError> {
    let first = top_k(kernel, rows, dim, &queries[..dim], k, None)?; // warm-up
    let mut ms = Vec::new();
    for q in queries.chunks_exact(dim) {
        let t = Instant::now();
        let hits = top_k(kernel, rows, dim, q, k, None)?;
        ms.push(t.elapsed().as_secs_f64() * 1e3);
        std::hint::black_box(hits);
    }
    Ok((ms, first))
}

fn summarise(
    dtype: EmbeddingDtype,
    bytes: usize,
    mut ms: Vec<f64>,
    first: Vec<Hit>,
    copy_gb_s: f64,
    read_gb_s: f64,
) -> DtypeTiming {
    ms.sort_by(f64::total_cmp);
    let median = ms.get(ms.len() / 2).copied().unwrap_or(f64::NAN);
    let bound_ms = bytes as f64 / (copy_gb_s * 1e9) * 1e3;
    let read_bound_ms = bytes as f64 / (read_gb_s * 1e9) * 1e3;
    DtypeTiming {
        dtype,
        bytes_scanned: bytes,
        ms_median: median,
        ms_min: ms.first().copied().unwrap_or(f64::NAN),
        ms_mean: ms.iter().sum::<f64>() / ms.len().max(1) as f64,
        scan_gb_s: bytes as f64 / (median * 1e-3) / 1e9,
        bound_ms,
        vs_bound: median / bound_ms,
        read_bound_ms,
        vs_read_bound: median / read_bound_ms,
        first_query_top: first.iter().map(|h| (h.index, h.similarity)).collect(),
    }
}

/// Copy bandwidth of this machine with the current rayon pool, GB/s (bytes copied per second, best of
/// three): each copied byte is read once and written once.
pub fn measure_copy_bandwidth(bytes: usize) -> f64 {
    let n = bytes.clamp(64 << 20, 1 << 30);
    let src = vec![1u8; n];
    let mut dst = vec![0u8; n];
    let chunk = (n / (rayon::current_num_threads() * 4)).max(1 << 20);
    let mut best = f64::INFINITY;
    for _ in 0..4 {
        let t = Instant::now();
        dst.par_chunks_mut(chunk)
            .zip(src.par_chunks(chunk))
            .for_each(|(d, s)| d.copy_from_slice(s));
        best = best.min(t.elapsed().as_secs_f64());
        std::hint::black_box(&dst);
    }
    n as f64 / best / 1e9
}

/// Streaming-read bandwidth of this machine with the current rayon pool, GB/s (best of four sums over
/// a buffer of about `bytes`, clamped to 64 MiB..1 GiB so it cannot sit in cache).
pub fn measure_read_bandwidth(bytes: usize) -> f64 {
    let n = bytes.clamp(64 << 20, 1 << 30) / 8;
    let src: Vec<u64> = (0..n as u64).collect();
    let chunk = (n / (rayon::current_num_threads() * 4)).max(1 << 17);
    let mut best = f64::INFINITY;
    for _ in 0..4 {
        let t = Instant::now();
        let sum = src
            .par_chunks(chunk)
            .map(|c| {
                // Eight independent lanes so the loop vectorises and is never latency-bound.
                let mut lanes = [0u64; 8];
                for block in c.chunks_exact(8) {
                    for l in 0..8 {
                        lanes[l] = lanes[l].wrapping_add(block[l]);
                    }
                }
                lanes.iter().fold(0u64, |a, &b| a.wrapping_add(b))
            })
            .reduce(|| 0, u64::wrapping_add);
        best = best.min(t.elapsed().as_secs_f64());
        std::hint::black_box(sum);
    }
    (n * 8) as f64 / best / 1e9
}

/// `rows x dim` pseudo-random L2-normalised rows (deterministic in `seed`, built in parallel).
pub(crate) fn synthetic_rows(rows: usize, dim: usize, seed: u64) -> Vec<f32> {
    let mut out = vec![0.0f32; rows * dim];
    out.par_chunks_mut(dim.max(1))
        .enumerate()
        .for_each(|(i, row)| fill_row(row, seed, i as u64));
    out
}

fn fill_row(row: &mut [f32], seed: u64, index: u64) {
    let mut s = seed
        .wrapping_mul(0x9e37_79b9_7f4a_7c15)
        .wrapping_add(index.wrapping_mul(0xbf58_476d_1ce4_e5b9));
    for x in row.iter_mut() {
        // splitmix64
        s = s.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = s;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^= z >> 31;
        *x = (z >> 40) as f32 / (1u64 << 23) as f32 - 1.0;
    }
    let norm = row
        .iter()
        .map(|x| x * x)
        .sum::<f32>()
        .sqrt()
        .max(f32::MIN_POSITIVE);
    row.iter_mut().for_each(|x| *x /= norm);
}

fn read_f32_rows(path: &Path, dim: usize) -> Result<Vec<f32>, BenchError> {
    let err = |reason: String| BenchError::Data {
        path: path.to_path_buf(),
        reason,
    };
    let bytes = std::fs::read(path).map_err(|e| err(e.to_string()))?;
    if dim == 0 || bytes.len() % (4 * dim) != 0 {
        return Err(err(format!(
            "{} bytes are not whole rows of {dim} little-endian f32",
            bytes.len()
        )));
    }
    Ok(bytes
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect())
}

/// `VmRSS`, `RssAnon`, `RssFile`, `VmHWM` of this process in kB (zeros where unavailable).
pub fn process_memory_kb() -> [u64; 4] {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0)
    };
    [
        field("VmRSS:"),
        field("RssAnon:"),
        field("RssFile:"),
        field("VmHWM:"),
    ]
}

fn measure_cache_memory(
    dir: &Path,
    tiles: usize,
    dim: usize,
    dtype: EmbeddingDtype,
    seed: u64,
) -> Result<CacheMemory, BenchError> {
    let path = dir.join(format!("vimgeo-bench-{}.cache", std::process::id()));
    let meta = CacheMeta::new("bench", &"0".repeat(64));
    let geometry: Vec<Tile> = (0..tiles)
        .map(|i| Tile {
            lat: 47.0 + (i / 1000) as f64 * 1e-4,
            lon: 8.0 + (i % 1000) as f64 * 1e-4,
            ground_size_m: 100.0,
            scale: 1.0,
        })
        .collect();
    let mut writer = TileCacheWriter::create(&path, &meta, &geometry, dim, dtype)?;
    drop(geometry);
    const BLOCK: usize = 16_384;
    let mut row = 0;
    while row < tiles {
        let n = BLOCK.min(tiles - row);
        let mut block = vec![0.0f32; n * dim];
        block
            .par_chunks_mut(dim)
            .enumerate()
            .for_each(|(j, r)| fill_row(r, seed, (row + j) as u64));
        writer.push_rows(&block)?;
        row += n;
    }
    writer.finish()?;
    let result = (|| {
        let before_kb = process_memory_kb();
        let t = Instant::now();
        let cache = TileCache::open(&path, &CacheExpectation::default())?;
        let open_s = t.elapsed().as_secs_f64();
        let query = synthetic_rows(1, dim, seed ^ 0x5eed);
        std::hint::black_box(cache.search(&query, 10, None)?);
        let after_kb = process_memory_kb();
        Ok(CacheMemory {
            file_bytes: cache.file_bytes() as u64,
            tiles: cache.len(),
            open_s,
            before_kb,
            after_kb,
        })
    })();
    let _ = std::fs::remove_file(&path);
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_benchmark_runs_and_reports_sane_figures() {
        let dir = tempfile::tempdir().unwrap();
        let report = bench_search(&BenchSearchConfig {
            tiles: 5000,
            dim: 40,
            iters: 3,
            threads: 2,
            cache_dir: Some(dir.path().to_path_buf()),
            ..BenchSearchConfig::default()
        })
        .unwrap();
        assert_eq!(report.timings.len(), 2);
        assert_eq!(report.timings[0].first_query_top.len(), 10);
        assert!(report.copy_gb_s > 0.0);
        let mem = report.cache_memory.as_ref().unwrap();
        assert_eq!(mem.tiles, 5000);
        assert!(report.to_string().contains("ms/query"));
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }
}
