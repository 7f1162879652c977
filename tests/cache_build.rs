//! Building tile caches from the fetched orthophotos (GeoTIFF 8- and 16-bit, PNG + world file): the
//! georeference, the tiling, the cache on disk, querying it, resuming an interrupted build, and the CLI.
//!
//! Needs the `ground` feature (the default) and the imagery of the data folder (`make data`).

#![cfg(feature = "ground")]

mod common;

use common::imagery;
use std::path::Path;
use std::process::Command;

use gdal::spatial_ref::{AxisMappingStrategy, CoordTransform, SpatialRef};
use image::GenericImageView;
use vimgeo::build::{
    build_cache, journal_path, BuildError, BuildOutcome, BuildReport, CacheBuildConfig,
    EncodeOptions, OrthoOptions, Orthophoto, PlanError, TilingPlan, TilingSpec,
};
use vimgeo::encoder::{open_encoder, Encoder, EncoderConfig, EngineChoice};
use vimgeo::matching::{CacheExpectation, EmbeddingDtype, TileCache};

const LANDSAT: &str = "landsat8_30m_utm21s.tif";
const OSBS: &str = "osbs_forest_10cm_utm17n.tif";
const YELL: &str = "yell_forest_10cm.png";

/// How each orthophoto is read: the world-file PNG needs its CRS, Landsat is stored blue, green, red.
fn options(name: &str) -> OrthoOptions {
    match name {
        YELL => OrthoOptions {
            crs: Some("EPSG:32612".into()),
            ..OrthoOptions::default()
        },
        LANDSAT => OrthoOptions {
            bands: Some([3, 2, 1]),
            ..OrthoOptions::default()
        },
        _ => OrthoOptions::default(),
    }
}

/// Footprints small enough that every tile is read at full resolution (at most 4x the 64 px model input)
/// and a cache holds at most a few hundred tiles.
fn footprint(name: &str) -> f64 {
    match name {
        LANDSAT => 6000.0, // 200 px
        YELL => 20.0,      // 200 px
        _ => 8.0,          // 80 px
    }
}

fn encoder() -> Box<dyn Encoder> {
    let config = EncoderConfig {
        engine: EngineChoice::Tract,
        ..EncoderConfig::default()
    };
    open_encoder(&common::model("custom"), &config).expect("open the fixture model on tract")
}

fn config(name: &str, out: &Path, stride: f64) -> CacheBuildConfig {
    CacheBuildConfig {
        ortho: imagery(name),
        ortho_options: options(name),
        spec: TilingSpec::from_footprints(vec![footprint(name)], stride).unwrap(),
        out: out.to_path_buf(),
        dtype: EmbeddingDtype::F32,
        encode: EncodeOptions {
            batch: 8,
            ..EncodeOptions::default()
        },
    }
}

fn build(config: &CacheBuildConfig, encoder: &mut dyn Encoder) -> BuildReport {
    match build_cache(config, encoder, &mut |_| {}).expect("build the cache") {
        BuildOutcome::Written(report) => report,
        other => panic!("build stopped: {other:?}"),
    }
}

fn open(path: &Path) -> TileCache {
    TileCache::open(path, &CacheExpectation::default()).expect("open the cache")
}

/// GDAL's own transform of a projected point to WGS84 (lat, lon), independent of the builder's.
fn gdal_to_wgs84(path: &Path, crs: Option<&str>, e: f64, n: f64) -> (f64, f64) {
    let ds = gdal::Dataset::open(path).unwrap();
    let mut srs = match crs {
        Some(c) => SpatialRef::from_definition(c).unwrap(),
        None => ds.spatial_ref().unwrap(),
    };
    srs.set_axis_mapping_strategy(AxisMappingStrategy::TraditionalGisOrder);
    let mut wgs = SpatialRef::from_epsg(4326).unwrap();
    wgs.set_axis_mapping_strategy(AxisMappingStrategy::TraditionalGisOrder);
    let t = CoordTransform::new(&srs, &wgs).unwrap();
    let (mut x, mut y) = ([e], [n]);
    t.transform_coords(&mut x, &mut y, &mut []).unwrap();
    (y[0], x[0])
}

#[test]
fn pixels_round_trip_through_wgs84_within_half_a_pixel() {
    // (file, plausible latitude range): Landsat UTM 21S (South America), OSBS Florida, YELL Wyoming.
    for (name, lat_range) in [
        (LANDSAT, -26.0..-24.0),
        (OSBS, 29.0..30.5),
        (YELL, 44.0..45.5),
    ] {
        let ortho = Orthophoto::open(&imagery(name), &options(name)).unwrap();
        let g = ortho.grid().clone();
        let (w, h) = (f64::from(g.width), f64::from(g.height));
        for (x, y) in [
            (0.0, 0.0),
            (w, h),
            (w / 2.0, h / 3.0),
            (0.5, h - 0.5),
            (w - 7.25, 3.75),
        ] {
            let (lat, lon) = ortho.georef().pixel_to_wgs84(x, y).unwrap();
            assert!(
                lat_range.contains(&lat),
                "{name}: latitude {lat} at ({x}, {y})"
            );
            assert!(lon.abs() < 180.0);
            let (x2, y2) = ortho.georef().wgs84_to_pixel(lat, lon).unwrap();
            assert!(
                (x2 - x).abs() < 0.5 && (y2 - y).abs() < 0.5,
                "{name}: ({x}, {y}) -> ({lat}, {lon}) -> ({x2}, {y2})"
            );
            // In fact far better than half a pixel: the transforms are exact inverses.
            assert!((x2 - x).abs() < 1e-3 && (y2 - y).abs() < 1e-3);
        }
    }
}

#[test]
fn ground_sample_distances_and_crs_come_from_the_georeference() {
    let expect = [
        (LANDSAT, 30.0, "EPSG:32621"),
        (OSBS, 0.1, "EPSG:32617"),
        (YELL, 0.1, "EPSG:32612"),
    ];
    for (name, gsd, crs) in expect {
        let ortho = Orthophoto::open(&imagery(name), &options(name)).unwrap();
        let g = ortho.grid();
        assert!(
            (g.gsd_x_m - gsd).abs() < 1e-6 && (g.gsd_y_m - gsd).abs() < 1e-6,
            "{name}: {g:?}"
        );
        assert_eq!(ortho.georef().crs(), crs, "{name}");
    }
    // The 16-bit scene is stretched by percentiles; the 8-bit ones are not.
    let landsat = Orthophoto::open(&imagery(LANDSAT), &options(LANDSAT)).unwrap();
    assert_eq!(landsat.stretch().kind, "percentile");
    assert_eq!(landsat.data_type(), "UInt16");
    for c in 0..3 {
        assert!(landsat.stretch().low[c] < landsat.stretch().high[c]);
        assert!(
            landsat.stretch().high[c] > 255.0,
            "16-bit values: {:?}",
            landsat.stretch()
        );
    }
    let osbs = Orthophoto::open(&imagery(OSBS), &options(OSBS)).unwrap();
    assert_eq!(osbs.stretch().kind, "none");
}

#[test]
fn a_world_file_image_without_crs_is_refused_clearly() {
    let err = Orthophoto::open(&imagery(YELL), &OrthoOptions::default()).unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("yell_forest_10cm.png") && msg.contains("--crs"),
        "{msg}"
    );
}

#[test]
fn an_image_smaller_than_the_footprint_is_refused_naming_file_and_sizes() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = config(OSBS, &dir.path().join("c.vgc"), 0.5);
    c.spec = TilingSpec::from_footprints(vec![50.0], 0.5).unwrap();
    let err = build_cache(&c, encoder().as_mut(), &mut |_| {}).unwrap_err();
    assert!(
        matches!(
            err,
            BuildError::Plan(PlanError::ImageSmallerThanFootprint { .. })
        ),
        "{err:?}"
    );
    let msg = err.to_string();
    assert!(
        msg.contains(OSBS) && msg.contains("400 x 400 px") && msg.contains("500 x 500 px"),
        "{msg}"
    );
}

#[test]
fn caches_of_all_three_orthophotos_match_the_georeference_and_their_own_crops() {
    let dir = tempfile::tempdir().unwrap();
    let mut enc = encoder();
    for name in [OSBS, YELL, LANDSAT] {
        let out = dir.path().join(format!("{name}.vgc"));
        let c = config(name, &out, 1.0);
        let report = build(&c, enc.as_mut());
        let ortho = Orthophoto::open(&c.ortho, &c.ortho_options).unwrap();
        let plan = TilingPlan::new(ortho.grid(), &c.spec, "x").unwrap();
        assert_eq!(report.planned, plan.len(), "{name}");
        assert_eq!(report.skipped_nodata, 0, "{name}");
        assert!(
            plan.len() <= 300,
            "{name}: {} tiles: keep the test small",
            plan.len()
        );
        assert!(!journal_path(&out).exists(), "{name}: journal left behind");

        let cache = TileCache::open(
            &out,
            &CacheExpectation {
                model_sha256: Some(&enc.manifest().onnx_sha256),
                embedding_dim: Some(enc.manifest().output.dim as usize),
            },
        )
        .unwrap();
        assert_eq!(cache.len(), plan.len(), "{name}");
        let meta = cache.meta();
        assert_eq!(meta.crs, ortho.georef().crs());
        assert_eq!(meta.model_sha256, enc.manifest().onnx_sha256);
        assert_eq!(meta.scales, vec![footprint(name)]);
        assert_eq!(meta.dtype, EmbeddingDtype::F32);
        assert_eq!(meta.imagery_sha256, ortho.sha256().unwrap());

        // Every tile centre is GDAL's transform of its window's centre pixel (independently computed).
        let gt = gdal::Dataset::open(&c.ortho)
            .unwrap()
            .geo_transform()
            .unwrap();
        for (i, t) in plan.tiles.iter().enumerate() {
            let (px, py) = t.centre_px();
            let (e, n) = (
                gt[0] + px * gt[1] + py * gt[2],
                gt[3] + px * gt[4] + py * gt[5],
            );
            let (lat, lon) = gdal_to_wgs84(&c.ortho, c.ortho_options.crs.as_deref(), e, n);
            let tile = cache.tile(i).unwrap();
            assert!(
                (tile.lat - lat).abs() < 1e-9 && (tile.lon - lon).abs() < 1e-9,
                "{name} tile {i}: cache ({}, {}) vs GDAL ({lat}, {lon})",
                tile.lat,
                tile.lon
            );
            assert!((f64::from(tile.ground_size_m) - footprint(name)).abs() < 1e-3);
        }

        // A crop cut at a tile's window, encoded as a drone frame would be, finds that tile first.
        let probe = plan.len() / 2 + 1;
        let t = plan.tiles[probe];
        let crop = if name == YELL {
            // Cut independently of GDAL: the PNG decoded by the image crate.
            image::open(&c.ortho)
                .unwrap()
                .to_rgb8()
                .view(t.x0, t.y0, t.width, t.height)
                .to_image()
        } else {
            ortho
                .read_window((t.x0, t.y0, t.width, t.height), (t.width, t.height))
                .unwrap()
                .image
        };
        let query = enc.encode(&crop).unwrap();
        let top = cache.search(&query, 3, None).unwrap();
        assert_eq!(top[0].index, probe, "{name}: {top:?}");
        assert!(top[0].similarity > 0.999, "{name}: {top:?}");
    }
}

#[test]
fn an_interrupted_build_resumes_to_the_same_cache() {
    let dir = tempfile::tempdir().unwrap();
    let mut enc = encoder();
    let whole = dir.path().join("whole.vgc");
    let parts = dir.path().join("parts.vgc");
    let straight = build(&config(OSBS, &whole, 0.5), enc.as_mut());

    let mut c = config(OSBS, &parts, 0.5);
    c.encode.batch = 8;
    c.encode.stop_after_batches = Some(3);
    let stopped = build_cache(&c, enc.as_mut(), &mut |_| {}).unwrap();
    assert_eq!(
        stopped,
        BuildOutcome::Stopped {
            done: 24,
            total: straight.planned
        }
    );
    assert!(journal_path(&parts).exists() && !parts.exists());
    // A kill in the middle of writing a batch leaves a torn record: it is dropped on resume.
    let mut journal = std::fs::read(journal_path(&parts)).unwrap();
    journal.extend_from_slice(b"REC1\x18\0\0\0\0\0\0\0\x08\0\0\0\x01\x01");
    std::fs::write(journal_path(&parts), journal).unwrap();

    c.encode.stop_after_batches = Some(2);
    let stopped = build_cache(&c, enc.as_mut(), &mut |_| {}).unwrap();
    assert_eq!(
        stopped,
        BuildOutcome::Stopped {
            done: 40,
            total: straight.planned
        }
    );
    c.encode.stop_after_batches = None;
    let resumed = build(&c, enc.as_mut());
    assert_eq!(resumed.resumed, 40);
    assert_eq!(resumed.written, straight.written);
    assert!(!journal_path(&parts).exists());

    let (a, b) = (open(&whole), open(&parts));
    assert_eq!(a.len(), b.len());
    for i in 0..a.len() {
        assert_eq!(a.tile(i), b.tile(i), "tile {i}");
        assert_eq!(a.embedding(i), b.embedding(i), "embedding {i}");
    }
    let (mut ma, mut mb) = (a.meta().clone(), b.meta().clone());
    for m in [&mut ma, &mut mb] {
        m.created.clear();
        m.checksum.clear();
    }
    assert_eq!(ma, mb);
    // Byte for byte, apart from the creation time and the checksum.
    let masked = |path: &Path, cache: &TileCache| {
        let mut bytes = std::fs::read(path).unwrap();
        for field in [&cache.meta().created, &cache.meta().checksum] {
            let at = bytes
                .windows(field.len())
                .position(|w| w == field.as_bytes())
                .unwrap();
            bytes[at..at + field.len()].fill(b'0');
        }
        bytes
    };
    assert!(
        masked(&whole, &a) == masked(&parts, &b),
        "the caches differ"
    );

    // A journal of other inputs (another stride) is not resumed from.
    let other = dir.path().join("other.vgc");
    let mut c2 = config(OSBS, &other, 0.5);
    c2.encode.stop_after_batches = Some(1);
    build_cache(&c2, enc.as_mut(), &mut |_| {}).unwrap();
    let mut c3 = config(OSBS, &other, 1.0);
    c3.encode.batch = 8;
    assert_eq!(build(&c3, enc.as_mut()).resumed, 0);
}

#[test]
fn tiles_mostly_nodata_are_skipped_and_counted() {
    use gdal::raster::Buffer;
    use gdal::DriverManager;
    // A 16-bit, 4-band GeoTIFF in EPSG:4326 whose left half is nodata.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("half.tif");
    let (w, h) = (200usize, 100usize);
    {
        let driver = DriverManager::get_driver_by_name("GTiff").unwrap();
        let mut ds = driver
            .create_with_band_type::<u16, _>(&path, w, h, 4)
            .unwrap();
        ds.set_geo_transform(&[-105.0, 1e-5, 0.0, 45.0, 0.0, -1e-5])
            .unwrap();
        ds.set_spatial_ref(&SpatialRef::from_epsg(4326).unwrap())
            .unwrap();
        for b in 1..=4 {
            let mut band = ds.rasterband(b).unwrap();
            band.set_no_data_value(Some(0.0)).unwrap();
            let data: Vec<u16> = (0..w * h)
                .map(|i| {
                    let (x, y) = (i % w, i / w);
                    if x < w / 2 {
                        0
                    } else {
                        (1000 + 37 * x + 11 * y * b) as u16
                    }
                })
                .collect();
            let mut buf = Buffer::new((w, h), data);
            band.write((0, 0), (w, h), &mut buf).unwrap();
        }
    }
    let out = dir.path().join("half.vgc");
    let c = CacheBuildConfig {
        ortho: path.clone(),
        ortho_options: OrthoOptions::default(),
        spec: TilingSpec::from_footprints(vec![25.0], 1.0).unwrap(),
        out: out.clone(),
        dtype: EmbeddingDtype::F16,
        encode: EncodeOptions::default(),
    };
    let report = build(&c, encoder().as_mut());
    assert!(
        report.skipped_nodata > 0 && report.written > 0,
        "{report:?}"
    );
    assert_eq!(report.written + report.skipped_nodata, report.planned);
    let cache = open(&out);
    assert_eq!(cache.len(), report.written);
    assert_eq!(cache.meta().crs, "EPSG:4326");
    // Geographic pixels are not square on the ground at 45°N: windows are wider than tall.
    let ortho = Orthophoto::open(&path, &OrthoOptions::default()).unwrap();
    assert!(ortho.grid().gsd_x_m < ortho.grid().gsd_y_m);
    for i in 0..cache.len() {
        let t = cache.tile(i).unwrap();
        let (x, _) = ortho.georef().wgs84_to_pixel(t.lat, t.lon).unwrap();
        assert!(
            x > w as f64 / 2.0 - 10.0,
            "a kept tile centred at column {x}"
        );
    }
}

#[test]
fn bands_follow_the_colour_interpretation_and_an_alpha_band_marks_nodata() {
    use gdal::raster::{Buffer, ColorInterpretation};
    use gdal::DriverManager;
    // An 8-bit GeoTIFF stored blue, green, red, alpha; transparent in its top quarter.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bgra.tif");
    let (w, h) = (120usize, 160usize);
    {
        let driver = DriverManager::get_driver_by_name("GTiff").unwrap();
        let mut ds = driver
            .create_with_band_type::<u8, _>(&path, w, h, 4)
            .unwrap();
        ds.set_geo_transform(&[500000.0, 0.5, 0.0, 5000000.0, 0.0, -0.5])
            .unwrap();
        ds.set_spatial_ref(&SpatialRef::from_epsg(32633).unwrap())
            .unwrap();
        let interps = [
            ColorInterpretation::BlueBand,
            ColorInterpretation::GreenBand,
            ColorInterpretation::RedBand,
            ColorInterpretation::AlphaBand,
        ];
        for (b, interp) in interps.into_iter().enumerate() {
            let mut band = ds.rasterband(b + 1).unwrap();
            band.set_color_interpretation(interp).unwrap();
            let data: Vec<u8> = (0..w * h)
                .map(|i| {
                    let (x, y) = (i % w, i / w);
                    match b {
                        3 => {
                            if y < h / 4 {
                                0
                            } else {
                                255
                            }
                        }
                        // Blue, green, red: 10, 20, 30 plus texture.
                        _ => (10 * (b + 1) + (x * y) % 7) as u8,
                    }
                })
                .collect();
            let mut buf = Buffer::new((w, h), data);
            band.write((0, 0), (w, h), &mut buf).unwrap();
        }
    }
    let ortho = Orthophoto::open(&path, &OrthoOptions::default()).unwrap();
    assert_eq!(ortho.bands(), [3, 2, 1]);
    let tile = ortho.read_window((0, 100, 4, 4), (4, 4)).unwrap();
    let px = tile.image.get_pixel(0, 0).0;
    assert!(px[0] >= 30 && px[1] < 30 && px[2] < 20, "red first: {px:?}");
    assert_eq!(tile.nodata_fraction, 0.0);
    assert_eq!(
        ortho
            .read_window((0, 0, 4, 4), (4, 4))
            .unwrap()
            .nodata_fraction,
        1.0
    );

    let c = CacheBuildConfig {
        ortho: path,
        ortho_options: OrthoOptions::default(),
        spec: TilingSpec::from_footprints(vec![20.0], 1.0).unwrap(),
        out: dir.path().join("bgra.vgc"),
        dtype: EmbeddingDtype::F16,
        encode: EncodeOptions::default(),
    };
    // 40 px tiles: 3 columns x 4 rows, the top row transparent.
    let report = build(&c, encoder().as_mut());
    assert_eq!((report.planned, report.skipped_nodata), (12, 3));
}

#[test]
fn undeclared_fill_given_as_nodata_is_skipped_and_left_out_of_the_stretch() {
    // The Landsat crop is 0 outside the scene (its top right), without a nodata tag.
    let path = imagery(LANDSAT);
    let plain = Orthophoto::open(&path, &options(LANDSAT)).unwrap();
    let with_fill = OrthoOptions {
        nodata: Some(0.0),
        ..options(LANDSAT)
    };
    let filled = Orthophoto::open(&path, &with_fill).unwrap();
    for c in 0..3 {
        assert_eq!(plain.stretch().low[c], 0.0);
        assert!(filled.stretch().low[c] > 1000.0, "{:?}", filled.stretch());
    }
    let dir = tempfile::tempdir().unwrap();
    let mut c = config(LANDSAT, &dir.path().join("l.vgc"), 1.0);
    c.ortho_options = with_fill;
    let report = build(&c, encoder().as_mut());
    assert!(report.skipped_nodata >= 10, "{report:?}");
    assert_eq!(report.written + report.skipped_nodata, report.planned);
    assert_eq!(open(&c.out).len(), report.written);
}

fn vimgeo(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_vimgeo"))
        .args(args)
        .env("RUST_LOG", "warn")
        .output()
        .expect("run vimgeo")
}

#[test]
fn the_cli_builds_inspects_verifies_queries_and_previews() {
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("osbs.vgc");
    let model = common::model("custom");
    let ortho = imagery(OSBS);
    let s = |p: &Path| p.to_str().unwrap().to_owned();
    let out = vimgeo(&[
        "cache",
        "build",
        "--ortho",
        &s(&ortho),
        "--model",
        &s(&model),
        "--engine",
        "tract",
        "--out",
        &s(&cache),
        "--height",
        "8..16",
        "--hfov-deg",
        "53.13",
        "--scales",
        "2",
        "--stride",
        "1",
    ]);
    assert!(
        out.status.success(),
        "build: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("wrote") && text.contains("tiles"), "{text}");

    let out = vimgeo(&["cache", "info", &s(&cache)]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("EPSG:32617") && text.contains("vimgeo-test-custom"),
        "{text}"
    );

    let out = vimgeo(&["cache", "verify", &s(&cache), "--model", &s(&model)]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Another model's cache is refused, naming the cache.
    let out = vimgeo(&[
        "cache",
        "verify",
        &s(&cache),
        "--model",
        &s(&common::model("portable")),
    ]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("osbs.vgc"), "{err}");

    // Query with a crop at the first tile of the first scale (8 m at 0.1 m/px: 80 px at the corner).
    let crop = dir.path().join("crop.png");
    Orthophoto::open(&ortho, &OrthoOptions::default())
        .unwrap()
        .read_window((0, 0, 80, 80), (80, 80))
        .unwrap()
        .image
        .save(&crop)
        .unwrap();
    let out = vimgeo(&[
        "cache",
        "query",
        &s(&cache),
        "--model",
        &s(&model),
        "--engine",
        "tract",
        "--top-k",
        "3",
        &s(&crop),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let line: serde_json::Value =
        serde_json::from_str(String::from_utf8_lossy(&out.stdout).trim()).unwrap();
    assert_eq!(line["image"], s(&crop));
    let matches = line["matches"].as_array().unwrap();
    assert_eq!(matches.len(), 3);
    assert_eq!(matches[0]["tile"], 0);
    assert!(matches[0]["lat"].as_f64().unwrap() > 29.0);
    assert!(matches[0]["similarity"].as_f64().unwrap() > 0.999);

    let preview = dir.path().join("preview.png");
    let out = vimgeo(&[
        "cache",
        "preview",
        &s(&cache),
        "--ortho",
        &s(&ortho),
        "--out",
        &s(&preview),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let img = image::open(&preview).unwrap();
    assert_eq!((img.width(), img.height()), (400, 400));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("tiles drawn") && !text.contains("outside"),
        "{text}"
    );
}
