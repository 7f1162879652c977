//! Exact top-k search by dot product over row-major embeddings (f32 or f16 storage, f32 accumulation).
//!
//! The core works on plain slices ([`top_k_f32`], [`top_k_f16`], [`top_k`]) so the benchmark and the tests
//! can run it on synthetic data; [`TileCache::search`](super::TileCache::search) wraps it with the tile
//! geometry and the [`PriorWindow`]. Rows are split into chunks that rayon scans in parallel (on the pool
//! the caller runs in), each chunk keeping its own top-k, merged at the end. The dot product runs on the
//! best SIMD [`Kernel`] the CPU has, chosen at run time.
//!
//! Ranking: higher similarity first; equal similarities rank the lower row index first; a NaN similarity
//! ranks below everything. Results are therefore deterministic whatever the thread count.

mod bench;
mod kernels;

use std::cmp::Ordering;
use std::collections::BinaryHeap;

use half::f16;
use rayon::prelude::*;

pub use self::bench::{
    bench_search, measure_copy_bandwidth, measure_read_bandwidth, process_memory_kb, BenchError,
    BenchSearchConfig, BenchSearchReport, CacheMemory, DtypeTiming,
};
pub use self::kernels::{Element, Kernel};
use crate::geodesy::{haversine_m, MEAN_RADIUS_M};

/// Fewest rows one parallel task scans: below this, splitting costs more than it saves.
const MIN_ROWS_PER_TASK: usize = 4096;

/// One search result on plain slices: the row and its similarity (dot product with the query).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Hit {
    /// Row index in the embeddings.
    pub index: usize,
    /// Dot product of the row with the query (cosine similarity for normalised vectors).
    pub similarity: f32,
}

/// A query that cannot be searched.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SearchError {
    /// The query's length is not the embedding dimension.
    #[error("query has {found} values but the embeddings have dimension {expected}")]
    QueryDimension {
        /// The embedding dimension.
        expected: usize,
        /// The query's length.
        found: usize,
    },
    /// The embeddings slice is not a whole number of rows (or the dimension is 0).
    #[error("embeddings hold {values} values, not a whole number of rows of dimension {dim}")]
    RaggedEmbeddings {
        /// Values in the slice.
        values: usize,
        /// The dimension given.
        dim: usize,
    },
}

/// Where the vehicle can be: only tiles whose centre lies within `radius_m` of (`lat`, `lon`) are
/// candidates. Distances are great-circle (haversine) on a spherical Earth; a cheap latitude/longitude box
/// rejects most rows before the exact test, and every rejected row skips its dot product.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PriorWindow {
    /// Centre latitude, degrees (WGS84).
    pub lat: f64,
    /// Centre longitude, degrees (WGS84).
    pub lon: f64,
    /// Radius in metres.
    pub radius_m: f64,
}

impl PriorWindow {
    /// Prepares the window for testing many points.
    pub fn prepare(&self) -> PreparedWindow {
        let dlat = (self.radius_m / MEAN_RADIUS_M).to_degrees();
        let cos_lat = self.lat.to_radians().cos();
        // Near a pole (or for huge radii) the longitude box is the whole circle.
        let dlon = if cos_lat * 180.0 > dlat {
            (dlat / cos_lat).min(360.0)
        } else {
            360.0
        };
        PreparedWindow {
            window: *self,
            lat_min: self.lat - dlat,
            lat_max: self.lat + dlat,
            dlon,
        }
    }
}

/// A [`PriorWindow`] with its bounding box precomputed.
#[derive(Debug, Clone, Copy)]
pub struct PreparedWindow {
    window: PriorWindow,
    lat_min: f64,
    lat_max: f64,
    dlon: f64,
}

impl PreparedWindow {
    /// Whether (`lat`, `lon`) lies within the window. NaN coordinates never do.
    #[inline]
    pub fn contains(&self, lat: f64, lon: f64) -> bool {
        if !(lat >= self.lat_min && lat <= self.lat_max) {
            return false;
        }
        let mut d = (lon - self.window.lon).abs() % 360.0;
        if d > 180.0 {
            d = 360.0 - d;
        }
        if d.is_nan() || d > self.dlon {
            return false;
        }
        haversine_m(self.window.lat, self.window.lon, lat, lon) <= self.window.radius_m
    }
}

/// Which rows may be candidates; `None` means all.
pub type RowFilter<'a> = Option<&'a (dyn Fn(usize) -> bool + Sync)>;

/// Exact top-`k` of f32 rows (`embeddings.len() == rows * dim`) by dot product with `query`.
pub fn top_k_f32(
    embeddings: &[f32],
    dim: usize,
    query: &[f32],
    k: usize,
    filter: RowFilter<'_>,
) -> Result<Vec<Hit>, SearchError> {
    top_k(Kernel::detect(), embeddings, dim, query, k, filter)
}

/// Exact top-`k` of f16 rows by dot product with an f32 `query`, accumulated in f32.
pub fn top_k_f16(
    embeddings: &[f16],
    dim: usize,
    query: &[f32],
    k: usize,
    filter: RowFilter<'_>,
) -> Result<Vec<Hit>, SearchError> {
    top_k(Kernel::detect(), embeddings, dim, query, k, filter)
}

/// Exact top-`k` with a chosen kernel (one the CPU lacks falls back to [`Kernel::Scalar`]). Runs on the
/// current rayon pool. Returns at most `k` hits (fewer when fewer rows pass the filter), best first.
pub fn top_k<E: Element>(
    kernel: Kernel,
    embeddings: &[E],
    dim: usize,
    query: &[f32],
    k: usize,
    filter: RowFilter<'_>,
) -> Result<Vec<Hit>, SearchError> {
    if dim == 0 || !embeddings.len().is_multiple_of(dim) {
        return Err(SearchError::RaggedEmbeddings {
            values: embeddings.len(),
            dim,
        });
    }
    if query.len() != dim {
        return Err(SearchError::QueryDimension {
            expected: dim,
            found: query.len(),
        });
    }
    let rows = embeddings.len() / dim;
    if k == 0 || rows == 0 {
        return Ok(Vec::new());
    }
    let dot = E::dot_fn(kernel);
    let tasks = rayon::current_num_threads().max(1) * 4;
    let rows_per_task = rows.div_ceil(tasks).max(MIN_ROWS_PER_TASK);
    let best = embeddings
        .par_chunks(rows_per_task * dim)
        .enumerate()
        .map(|(task, chunk)| {
            let first = task * rows_per_task;
            let mut top = TopK::new(k);
            match filter {
                None => scan(dot, query, chunk, dim, first, &mut top, |_| true),
                Some(keep) => scan(dot, query, chunk, dim, first, &mut top, keep),
            }
            top
        })
        .reduce(|| TopK::new(k), TopK::merge);
    Ok(best.into_sorted())
}

#[inline(always)]
fn scan<E: Element>(
    dot: kernels::DotFn<E>,
    query: &[f32],
    chunk: &[E],
    dim: usize,
    first: usize,
    top: &mut TopK,
    keep: impl Fn(usize) -> bool,
) {
    for (j, row) in chunk.chunks_exact(dim).enumerate() {
        let index = first + j;
        if !keep(index) {
            continue;
        }
        // SAFETY: `row` and `query` both have `dim` values (checked by `top_k`), and `E::dot_fn`
        // only hands out kernels whose CPU features were detected.
        let similarity = unsafe { dot(query, row) };
        top.push(Hit { index, similarity });
    }
}

/// A hit ordered by rank: `Greater` means better.
#[derive(Clone, Copy)]
struct Ranked(Hit);

fn rank_key(s: f32) -> f32 {
    if s.is_nan() {
        f32::NEG_INFINITY
    } else {
        s
    }
}

/// The ranking order of two hits: `Greater` when `a` ranks above `b`.
pub fn compare_hits(a: &Hit, b: &Hit) -> Ordering {
    rank_key(a.similarity)
        .total_cmp(&rank_key(b.similarity))
        .then_with(|| b.index.cmp(&a.index))
}

impl PartialEq for Ranked {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}
impl Eq for Ranked {}
impl PartialOrd for Ranked {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Ranked {
    // Reversed, so the BinaryHeap's top is the worst hit kept.
    fn cmp(&self, other: &Self) -> Ordering {
        compare_hits(&other.0, &self.0)
    }
}

/// The best `k` hits seen so far (a heap whose top is the worst of them).
struct TopK {
    k: usize,
    heap: BinaryHeap<Ranked>,
}

impl TopK {
    fn new(k: usize) -> TopK {
        TopK {
            k,
            heap: BinaryHeap::with_capacity(k.min(1 << 16) + 1),
        }
    }

    #[inline]
    fn push(&mut self, hit: Hit) {
        if self.heap.len() < self.k {
            self.heap.push(Ranked(hit));
        } else if let Some(worst) = self.heap.peek() {
            if compare_hits(&hit, &worst.0) == Ordering::Greater {
                self.heap.pop();
                self.heap.push(Ranked(hit));
            }
        }
    }

    fn merge(mut self, other: TopK) -> TopK {
        for Ranked(hit) in other.heap {
            self.push(hit);
        }
        self
    }

    fn into_sorted(self) -> Vec<Hit> {
        // `Ranked` orders worse hits higher, so the ascending vector starts with the best.
        self.heap
            .into_sorted_vec()
            .into_iter()
            .map(|r| r.0)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Deterministic pseudo-random floats in [-1, 1).
    fn random(n: usize, seed: u64) -> Vec<f32> {
        let mut s = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
        (0..n)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                (s >> 40) as f32 / (1u64 << 23) as f32 - 1.0
            })
            .collect()
    }

    fn naive<E: Element>(
        embs: &[E],
        dim: usize,
        q: &[f32],
        k: usize,
        keep: impl Fn(usize) -> bool,
    ) -> Vec<Hit> {
        let mut all: Vec<Hit> = embs
            .chunks_exact(dim)
            .enumerate()
            .filter(|(i, _)| keep(*i))
            .map(|(index, row)| Hit {
                index,
                similarity: row
                    .iter()
                    .zip(q)
                    .map(|(e, &x)| e.to_f32() as f64 * x as f64)
                    .sum::<f64>() as f32,
            })
            .collect();
        all.sort_by(|a, b| compare_hits(b, a));
        all.truncate(k);
        all
    }

    fn assert_same(got: &[Hit], want: &[Hit], what: &str) {
        assert_eq!(got.len(), want.len(), "{what}: lengths");
        for (g, w) in got.iter().zip(want) {
            // Accumulation order differs from the f64 reference: near-ties may swap, so compare
            // similarities position by position, and indices where the gap is clear.
            assert!(
                (g.similarity - w.similarity).abs() < 1e-4,
                "{what}: {g:?} vs {w:?}"
            );
        }
        let got_idx: Vec<usize> = got.iter().map(|h| h.index).collect();
        let want_idx: Vec<usize> = want.iter().map(|h| h.index).collect();
        if got_idx != want_idx {
            let gaps_clear = want
                .windows(2)
                .all(|w| w[0].similarity - w[1].similarity > 1e-4);
            assert!(!gaps_clear, "{what}: indices {got_idx:?} vs {want_idx:?}");
        }
    }

    #[test]
    fn every_kernel_matches_the_naive_top_k() {
        for &(rows, dim, k) in &[
            (1usize, 1usize, 1usize),
            (50, 17, 5),
            (1000, 33, 10),
            (9000, 384, 10),
            (300, 100, 400), // k > rows
            (5000, 7, 1),
        ] {
            let embs = random(rows * dim, rows as u64 + dim as u64);
            let embs16: Vec<f16> = embs.iter().map(|&x| f16::from_f32(x)).collect();
            let q = random(dim, 7);
            for kernel in Kernel::available() {
                let what = format!("{kernel} rows={rows} dim={dim} k={k}");
                let got = top_k(kernel, &embs, dim, &q, k, None).unwrap();
                assert_same(
                    &got,
                    &naive(&embs, dim, &q, k, |_| true),
                    &format!("{what} f32"),
                );
                let got = top_k(kernel, &embs16, dim, &q, k, None).unwrap();
                assert_same(
                    &got,
                    &naive(&embs16, dim, &q, k, |_| true),
                    &format!("{what} f16"),
                );
                let keep = |i: usize| i % 3 == 1;
                let got = top_k(kernel, &embs16, dim, &q, k, Some(&keep)).unwrap();
                assert!(got.iter().all(|h| h.index % 3 == 1));
                assert_same(
                    &got,
                    &naive(&embs16, dim, &q, k, keep),
                    &format!("{what} filtered"),
                );
            }
        }
    }

    #[test]
    fn ties_rank_the_lower_index_first_whatever_the_threads() {
        let dim = 16;
        let rows = 20_000;
        let mut embs = vec![0.0f32; rows * dim];
        for (i, row) in embs.chunks_exact_mut(dim).enumerate() {
            row[0] = if i % 1000 == 999 { 0.5 } else { 0.25 };
        }
        let q = {
            let mut q = vec![0.0; dim];
            q[0] = 1.0;
            q
        };
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(3)
            .build()
            .unwrap();
        let got = pool.install(|| top_k_f32(&embs, dim, &q, 25, None).unwrap());
        let idx: Vec<usize> = got.iter().map(|h| h.index).collect();
        let mut want: Vec<usize> = (0..20).map(|j| j * 1000 + 999).collect();
        want.extend(0..5);
        assert_eq!(idx, want);
    }

    #[test]
    fn nan_ranks_last_and_bad_shapes_are_errors() {
        let embs = vec![f32::NAN, 1.0, 0.5];
        let got = top_k_f32(&embs, 1, &[1.0], 3, None).unwrap();
        assert_eq!(
            got.iter().map(|h| h.index).collect::<Vec<_>>(),
            vec![1, 2, 0]
        );
        assert_eq!(
            top_k_f32(&embs, 1, &[1.0, 2.0], 3, None).unwrap_err(),
            SearchError::QueryDimension {
                expected: 1,
                found: 2
            }
        );
        assert!(matches!(
            top_k_f32(&embs, 2, &[1.0, 2.0], 3, None),
            Err(SearchError::RaggedEmbeddings { .. })
        ));
        assert!(top_k_f32(&embs, 1, &[1.0], 0, None).unwrap().is_empty());
        assert!(top_k_f32(&[], 4, &[0.0; 4], 3, None).unwrap().is_empty());
    }

    #[test]
    fn prior_window_keeps_exactly_the_points_within_the_radius() {
        let w = PriorWindow {
            lat: 47.0,
            lon: 8.0,
            radius_m: 1000.0,
        }
        .prepare();
        // 1 km north is 0.008993 deg of latitude.
        assert!(w.contains(47.0 + 0.0089, 8.0));
        assert!(!w.contains(47.0 + 0.0091, 8.0));
        // East: 1 km at 47 deg is 0.013186 deg of longitude.
        assert!(w.contains(47.0, 8.0 + 0.01315));
        assert!(!w.contains(47.0, 8.0 + 0.01325));
        assert!(!w.contains(f64::NAN, 8.0));
        // Across the antimeridian.
        let w = PriorWindow {
            lat: 0.0,
            lon: 179.999,
            radius_m: 500.0,
        }
        .prepare();
        assert!(w.contains(0.0, -179.999));
        let d = haversine_m(0.0, 179.999, 0.0, -179.999);
        assert!((d - 222.4).abs() < 0.5, "{d}");
        // Near the pole every longitude passes the box.
        let w = PriorWindow {
            lat: 89.9999,
            lon: 0.0,
            radius_m: 100.0,
        }
        .prepare();
        assert!(w.contains(89.9999, 90.0));
    }
}
