//! The match stage: the satellite tile cache and exact top-k search in it (the cache is built by the ground
//! crate's `build`).
//!
//! A tile cache ([`TileCache`]) is one safetensors file of L2-normalised tile embeddings plus each
//! tile's centre (WGS84), ground size and scale, with metadata naming the model, the imagery and how it
//! was tiled (format: [`cache`]'s docs). It is written atomically ([`TileCacheWriter`], [`write_cache`]),
//! and loaded memory-mapped by [`TileCache::open`], which refuses a cache that is damaged, of another
//! format version, or built with another model or dimension ([`CacheError`]).
//!
//! [`TileCache::search`] returns the exact top-k tiles by cosine similarity, optionally only within a
//! [`PriorWindow`] around the last known position. The kernels ([`search`]) also work on plain slices.
//!
//! ```no_run
//! use vimgeo_onboard::matching::{CacheExpectation, PriorWindow, TileCache};
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let cache = TileCache::open(
//!     std::path::Path::new("area.vgc"),
//!     &CacheExpectation { model_sha256: Some("ab12..."), embedding_dim: Some(384) },
//! )?;
//! let query = vec![0.0f32; cache.dim()]; // an encoder's embedding
//! let window = PriorWindow { lat: 47.37, lon: 8.54, radius_m: 500.0 };
//! for m in cache.search(&query, 10, Some(&window))? {
//!     println!("{:.6} {:.6} {:.3}", m.lat, m.lon, m.similarity);
//! }
//! # Ok(()) }
//! ```

pub mod cache;
pub mod search;

pub use self::cache::{
    write_cache, CacheError, CacheExpectation, CacheMeta, EmbeddingDtype, EmbeddingRows, Match,
    Tile, TileCache, TileCacheWriter, CACHE_FORMAT, CACHE_FORMAT_VERSION,
};
pub use self::search::{
    bench_search, top_k, top_k_f16, top_k_f32, BenchSearchConfig, BenchSearchReport, Hit, Kernel,
    PriorWindow, SearchError,
};
