//! The tile cache on disk: round trips, refusal of bad caches (with messages naming the file), search
//! through a loaded cache with and without a prior window.

use std::path::{Path, PathBuf};

use vimgeo::matching::{
    write_cache, CacheError, CacheExpectation, CacheMeta, EmbeddingDtype, EmbeddingRows,
    PriorWindow, Tile, TileCache, TileCacheWriter,
};

const SHA: &str = "1111111111111111111111111111111111111111111111111111111111111111";
const OTHER_SHA: &str = "2222222222222222222222222222222222222222222222222222222222222222";

fn rows(n: usize, dim: usize, seed: u64) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    let mut out = Vec::with_capacity(n * dim);
    for _ in 0..n {
        let row: Vec<f32> = (0..dim)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                (s >> 40) as f32 / (1u64 << 23) as f32 - 1.0
            })
            .collect();
        let norm = row.iter().map(|x| x * x).sum::<f32>().sqrt();
        out.extend(row.iter().map(|x| x / norm));
    }
    out
}

fn grid(n: usize) -> Vec<Tile> {
    // 100 m apart east-west at 47 N (1e-3 deg lon ~ 75.8 m; use 0.0013 ~ 98.6 m), 10 per row.
    (0..n)
        .map(|i| Tile {
            lat: 47.0 + (i / 10) as f64 * 0.0009,
            lon: 8.0 + (i % 10) as f64 * 0.0013,
            ground_size_m: 120.0 + (i % 3) as f32,
            scale: [1.0, 1.5, 2.0][i % 3],
        })
        .collect()
}

fn meta() -> CacheMeta {
    let mut m = CacheMeta::new("vimgeo-small-384", SHA);
    m.imagery_sha256 = "3".repeat(64);
    m.imagery_path = "ortho.tif".into();
    m.crs = "EPSG:32632".into();
    m.gsd_m = 0.3;
    m.tile_px = 400;
    m.stride = 0.5;
    m.scales = vec![1.0, 1.5, 2.0];
    m.stretch =
        serde_json::json!({"kind": "percentile", "low": 2, "high": 98, "per_band": [[10, 900]]});
    m.extra.insert("height_m".into(), "80..150".into());
    m
}

struct Fixture {
    _dir: tempfile::TempDir,
    path: PathBuf,
    embeddings: Vec<f32>,
    tiles: Vec<Tile>,
}

fn fixture(n: usize, dim: usize, dtype: EmbeddingDtype) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("area.vgc");
    let embeddings = rows(n, dim, 42);
    let tiles = grid(n);
    write_cache(&path, &meta(), &tiles, &embeddings, dim, dtype).unwrap();
    Fixture {
        _dir: dir,
        path,
        embeddings,
        tiles,
    }
}

fn expect(dim: usize) -> CacheExpectation<'static> {
    CacheExpectation {
        model_sha256: Some(SHA),
        embedding_dim: Some(dim),
    }
}

fn open_err(path: &Path, expectation: &CacheExpectation<'_>) -> (CacheError, String) {
    let err = TileCache::open(path, expectation).expect_err("the cache must be refused");
    let msg = err.to_string();
    assert!(
        msg.contains(&path.display().to_string()),
        "message does not name the file: {msg}"
    );
    (err, msg)
}

#[test]
fn cache_round_trips_through_disk_in_both_dtypes() {
    for dtype in [EmbeddingDtype::F16, EmbeddingDtype::F32] {
        let (n, dim) = (57, 37);
        let f = fixture(n, dim, dtype);
        let cache = TileCache::open(&f.path, &expect(dim)).unwrap();
        assert!(cache.is_verified());
        assert_eq!((cache.len(), cache.dim()), (n, dim));
        let m = cache.meta();
        let mut want = meta();
        want.tiles = n;
        want.embedding_dim = dim;
        want.dtype = dtype;
        want.created = m.created.clone();
        want.checksum = m.checksum.clone();
        assert_eq!(m, &want);
        assert_eq!(m.checksum.len(), 64);
        assert_eq!(m.tool_version, vimgeo::VERSION);
        for (i, t) in f.tiles.iter().enumerate() {
            assert_eq!(cache.tile(i).unwrap(), *t);
        }
        assert!(cache.tile(n).is_none());
        let tol = if dtype == EmbeddingDtype::F16 {
            1e-3
        } else {
            0.0
        };
        for i in 0..n {
            let got = cache.embedding(i).unwrap();
            for (g, w) in got.iter().zip(&f.embeddings[i * dim..(i + 1) * dim]) {
                assert!((g - w).abs() <= tol, "{dtype} row {i}: {g} vs {w}");
            }
        }
        match (cache.embeddings(), dtype) {
            (EmbeddingRows::F16(e), EmbeddingDtype::F16) => assert_eq!(e.len(), n * dim),
            (EmbeddingRows::F32(e), EmbeddingDtype::F32) => assert_eq!(e.len(), n * dim),
            _ => panic!("wrong embedding storage"),
        }
        let summary = cache.summary();
        assert!(
            summary.contains("vimgeo-small-384") && summary.contains("verified"),
            "{summary}"
        );
        // The file is plain safetensors: the reference parser reads it.
        let bytes = std::fs::read(&f.path).unwrap();
        let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
        assert_eq!(st.tensor("embeddings").unwrap().shape(), &[n, dim]);
    }
}

#[test]
fn searching_a_cache_finds_each_tile_at_rank_one() {
    let (n, dim) = (200, 64);
    for dtype in [EmbeddingDtype::F16, EmbeddingDtype::F32] {
        let f = fixture(n, dim, dtype);
        let cache = TileCache::open(&f.path, &expect(dim)).unwrap();
        for i in [0, 17, 199] {
            let q = &f.embeddings[i * dim..(i + 1) * dim];
            let top = cache.search(q, 5, None).unwrap();
            assert_eq!(top.len(), 5);
            assert_eq!(top[0].index, i);
            assert!((top[0].similarity - 1.0).abs() < 2e-3);
            assert_eq!((top[0].lat, top[0].lon), (f.tiles[i].lat, f.tiles[i].lon));
            assert!(top.windows(2).all(|w| w[0].similarity >= w[1].similarity));
        }
        let all = cache.search(&f.embeddings[..dim], 1000, None).unwrap();
        assert_eq!(all.len(), n, "k > N returns every tile");
        let err = cache.search(&[1.0; 3], 5, None).unwrap_err();
        assert!(err.to_string().contains("dimension 64"), "{err}");
    }
}

#[test]
fn prior_window_restricts_the_candidates() {
    let (n, dim) = (200, 32);
    let f = fixture(n, dim, EmbeddingDtype::F16);
    let cache = TileCache::open(&f.path, &expect(dim)).unwrap();
    // Centre on tile 55; 150 m radius holds it and its neighbours (~100 m apart), not tile 0.
    let c = f.tiles[55];
    let window = PriorWindow {
        lat: c.lat,
        lon: c.lon,
        radius_m: 150.0,
    };
    let inside: Vec<usize> = (0..n)
        .filter(|&i| {
            let t = f.tiles[i];
            vimgeo::geodesy::haversine_m(c.lat, c.lon, t.lat, t.lon) <= 150.0
        })
        .collect();
    assert!(inside.len() >= 3 && inside.len() < 20, "{inside:?}");
    let q = &f.embeddings[..dim]; // tile 0's own embedding: the best match is outside the window
    let top = cache.search(q, 100, Some(&window)).unwrap();
    let mut got: Vec<usize> = top.iter().map(|m| m.index).collect();
    got.sort();
    assert_eq!(got, inside);
    assert!(cache.search(q, 1, None).unwrap()[0].index == 0);
}

#[test]
fn corrupt_caches_are_refused_naming_the_file() {
    let dim = 24;
    let f = fixture(30, dim, EmbeddingDtype::F16);
    let good = std::fs::read(&f.path).unwrap();
    let header_len = u64::from_le_bytes(good[..8].try_into().unwrap()) as usize;

    // A flipped byte in the embeddings, in the geometry, and inside a header string value.
    let value_at = good
        .windows(9)
        .position(|w| w == b"ortho.tif")
        .expect("imagery path in header");
    for (what, at) in [
        ("embeddings", good.len() - 5),
        ("geometry", 8 + header_len + 3),
        ("header", value_at + 2),
    ] {
        let mut bad = good.clone();
        bad[at] ^= 0x01;
        std::fs::write(&f.path, &bad).unwrap();
        let (err, msg) = open_err(&f.path, &expect(dim));
        assert!(matches!(err, CacheError::Corrupt { .. }), "{what}: {msg}");
        assert!(msg.contains("checksum mismatch"), "{what}: {msg}");
        // Unverified opening trusts the checksum, but still names the file for structural faults.
        assert!(TileCache::open_unverified(&f.path, &expect(dim)).is_ok());
    }

    // Truncated in the data and in the header.
    for cut in [good.len() - 1, 8 + header_len + 10, 8 + header_len / 2] {
        std::fs::write(&f.path, &good[..cut]).unwrap();
        let (err, msg) = open_err(&f.path, &expect(dim));
        assert!(
            matches!(err, CacheError::Corrupt { .. }),
            "cut {cut}: {msg}"
        );
        assert!(msg.contains("truncated"), "cut {cut}: {msg}");
    }
}

#[test]
fn wrong_model_version_dimension_and_non_caches_are_refused() {
    let dim = 16;
    let f = fixture(10, dim, EmbeddingDtype::F32);

    let (err, msg) = open_err(
        &f.path,
        &CacheExpectation {
            model_sha256: Some(OTHER_SHA),
            embedding_dim: None,
        },
    );
    assert!(matches!(err, CacheError::ModelMismatch { .. }), "{msg}");
    assert!(
        msg.contains(SHA) && msg.contains(OTHER_SHA) && msg.contains("vimgeo-small-384"),
        "{msg}"
    );

    let (err, msg) = open_err(
        &f.path,
        &CacheExpectation {
            model_sha256: None,
            embedding_dim: Some(384),
        },
    );
    assert!(matches!(err, CacheError::DimensionMismatch { .. }), "{msg}");
    assert!(
        msg.contains("16-dimensional") && msg.contains("384"),
        "{msg}"
    );

    // Another format version: same length, so the header stays valid.
    let good = std::fs::read(&f.path).unwrap();
    let key = b"\"format_version\":\"1\"";
    let at = good.windows(key.len()).position(|w| w == key).unwrap() + key.len() - 2;
    let mut bad = good.clone();
    bad[at] = b'7';
    std::fs::write(&f.path, &bad).unwrap();
    let (err, msg) = open_err(&f.path, &expect(dim));
    assert!(matches!(err, CacheError::UnknownVersion { .. }), "{msg}");
    assert!(msg.contains("format_version 7"), "{msg}");

    // Not a cache: text, an empty file, and a safetensors file of something else.
    let other = f.path.with_file_name("model.safetensors");
    let data = [0u8; 16];
    let view =
        safetensors::tensor::TensorView::new(safetensors::Dtype::F32, vec![4], &data).unwrap();
    safetensors::serialize_to_file([("w", view)], None, &other).unwrap();
    let text_file = f.path.with_file_name("notes.txt");
    std::fs::write(&text_file, "hello, this is not a tile cache\n").unwrap();
    let empty = f.path.with_file_name("empty.vgc");
    std::fs::write(&empty, b"").unwrap();
    for path in [&other, &text_file, &empty] {
        let (err, msg) = open_err(path, &expect(dim));
        assert!(matches!(err, CacheError::NotACache { .. }), "{msg}");
        assert!(msg.contains("is not a vimgeo tile cache"), "{msg}");
    }

    let missing = f.path.with_file_name("missing.vgc");
    let (err, _) = open_err(&missing, &expect(dim));
    assert!(matches!(err, CacheError::Io { .. }));
}

#[test]
fn damaged_files_never_panic() {
    let dim = 8;
    let f = fixture(12, dim, EmbeddingDtype::F16);
    let good = std::fs::read(&f.path).unwrap();
    let e = CacheExpectation::default();
    // Truncated at every offset.
    for cut in 0..good.len() {
        std::fs::write(&f.path, &good[..cut]).unwrap();
        assert!(
            TileCache::open(&f.path, &e).is_err(),
            "cut at {cut} accepted"
        );
    }
    // Each byte flipped in turn (header and data): always refused, never a panic.
    for at in 0..good.len() {
        let mut bad = good.clone();
        bad[at] ^= 0x20;
        std::fs::write(&f.path, &bad).unwrap();
        assert!(
            TileCache::open(&f.path, &e).is_err(),
            "flip at {at} accepted"
        );
        let _ = TileCache::open_unverified(&f.path, &e);
    }
    // Random bytes, with and without a plausible header length.
    let mut s = 0x1234_5678_9abc_def0u64;
    for len in [9usize, 100, 1000, 5000] {
        for trial in 0..20 {
            let mut bytes: Vec<u8> = (0..len)
                .map(|_| {
                    s ^= s << 13;
                    s ^= s >> 7;
                    s ^= s << 17;
                    s as u8
                })
                .collect();
            if trial % 2 == 0 {
                let n = (len as u64 - 8).min(50);
                bytes[..8].copy_from_slice(&n.to_le_bytes());
                bytes[8] = b'{';
            }
            std::fs::write(&f.path, &bytes).unwrap();
            assert!(TileCache::open(&f.path, &e).is_err());
        }
    }
}

#[test]
fn writer_is_atomic_and_checks_its_input() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("area.vgc");
    let dim = 8;
    let tiles = grid(4);
    let emb = rows(4, dim, 1);

    // An unfinished writer leaves nothing behind, and an existing cache untouched.
    write_cache(&path, &meta(), &tiles, &emb, dim, EmbeddingDtype::F16).unwrap();
    let before = std::fs::read(&path).unwrap();
    {
        let mut w =
            TileCacheWriter::create(&path, &meta(), &tiles, dim, EmbeddingDtype::F32).unwrap();
        w.push_rows(&emb[..dim]).unwrap();
        assert_eq!(w.rows_written(), 1);
    }
    assert_eq!(std::fs::read(&path).unwrap(), before);
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);

    let mut w = TileCacheWriter::create(&path, &meta(), &tiles, dim, EmbeddingDtype::F32).unwrap();
    w.push_rows(&emb[..2 * dim]).unwrap();
    let err = w.finish().unwrap_err().to_string();
    assert!(
        err.contains("2 embedding rows written for 4 tiles"),
        "{err}"
    );
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);

    let unnormalised = vec![0.5f32; 4 * dim];
    let err = write_cache(
        &path,
        &meta(),
        &tiles,
        &unnormalised,
        dim,
        EmbeddingDtype::F16,
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("norm") && err.contains("area.vgc"), "{err}");
    let err = write_cache(
        &path,
        &meta(),
        &tiles,
        &emb[..dim * 3],
        dim,
        EmbeddingDtype::F16,
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("3 embedding rows written for 4 tiles"),
        "{err}"
    );

    // Streaming in pieces gives the same bytes as one call (apart from the creation time).
    let mut m = meta();
    m.created = "2026-01-01T00:00:00Z".into();
    let one = dir.path().join("one.vgc");
    write_cache(&one, &m, &tiles, &emb, dim, EmbeddingDtype::F16).unwrap();
    let two = dir.path().join("two.vgc");
    let mut w = TileCacheWriter::create(&two, &m, &tiles, dim, EmbeddingDtype::F16).unwrap();
    for row in emb.chunks(dim) {
        w.push_rows(row).unwrap();
    }
    w.finish().unwrap();
    assert_eq!(std::fs::read(&one).unwrap(), std::fs::read(&two).unwrap());
}

#[test]
fn an_empty_cache_is_valid_and_finds_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("empty.vgc");
    write_cache(&path, &meta(), &[], &[], 16, EmbeddingDtype::F16).unwrap();
    let cache = TileCache::open(&path, &expect(16)).unwrap();
    assert!(cache.is_empty());
    assert!(cache.search(&[0.25; 16], 5, None).unwrap().is_empty());
}
