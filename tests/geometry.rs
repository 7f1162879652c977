//! The camera geometry end to end on the fetched orthophotos (`make data`): render a frame with the simulated camera,
//! rectify it with the true pose, and compare with the north-up patch cut from the map at the same place.
//!
//! Heights: a nominal 50-300 m scaled by the map's GSD (`h = h_nominal · gsd / 0.1 m`, so every map is seen
//! at the same 0.5-3 map pixels per camera pixel), clamped to `min(map side) / 2.2` so the rectified
//! region (half the height wide, offset by up to `h·tan(28°)` from below the vehicle) stays on the map.
//! Tolerance: the geometry itself is exact (distortion inverted to 1e-9 px, geodesy to a hundredth of a
//! pixel), so what is left is resampling (three bilinear/box passes, symmetric blurs that do not move
//! features) and noise in locating the correlation peak on real, partly self-similar texture. A shift of
//! half an output pixel is what a systematic error (a sign, a half-pixel convention, a lever arm) would
//! exceed at once; the mean is held to a fifth of a pixel.

#![cfg(feature = "ground")]

mod common;

use common::imagery;
use std::path::{Path, PathBuf};

use image::RgbImage;
use nalgebra::Vector3;
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use vimgeo::build::OrthoOptions;
use vimgeo::geodesy::{Geodetic, LocalFrame};
use vimgeo::rectify::{
    rectify, AttitudeCheck, AttitudeVerdict, CameraCalibration, CameraModel, Pose, RectifyError,
    RectifyLimits, RectifyTarget,
};
use vimgeo::sim::render::{render, OrthoMap};

fn sim_camera() -> CameraModel {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("calib/sim.toml");
    let calib = CameraCalibration::load(&path)
        .unwrap_or_else(|e| panic!("cannot load {}: {e}", path.display()));
    CameraModel::new(&calib)
}

fn open(name: &str, crs: Option<&str>) -> OrthoMap {
    let options = OrthoOptions {
        crs: crs.map(str::to_string),
        ..OrthoOptions::default()
    };
    OrthoMap::open(&imagery(name), &options).unwrap_or_else(|e| panic!("{name}: {e}"))
}

fn gray(image: &RgbImage) -> Vec<f64> {
    image
        .pixels()
        .map(|p| 0.299 * f64::from(p[0]) + 0.587 * f64::from(p[1]) + 0.114 * f64::from(p[2]))
        .collect()
}

/// Normalised cross-correlation of `a` against `b` shifted by `(dx, dy)` over a central window.
fn ncc(a: &[f64], b: &[f64], size: usize, margin: usize, dx: i64, dy: i64) -> f64 {
    let (mut sa, mut sb, mut saa, mut sbb, mut sab, mut n) = (0.0, 0.0, 0.0, 0.0, 0.0, 0.0);
    for y in margin..size - margin {
        for x in margin..size - margin {
            let (xb, yb) = ((x as i64 + dx) as usize, (y as i64 + dy) as usize);
            let (va, vb) = (a[y * size + x], b[yb * size + xb]);
            sa += va;
            sb += vb;
            saa += va * va;
            sbb += vb * vb;
            sab += va * vb;
            n += 1.0;
        }
    }
    let cov = sab - sa * sb / n;
    let var = (saa - sa * sa / n) * (sbb - sb * sb / n);
    cov / var.sqrt().max(1e-12)
}

/// The sub-pixel shift `(dx, dy)` that best aligns `b` onto `a`: the integer peak of the NCC over ±4 px, then
/// a parabola through the peak and its neighbours along each axis.
fn shift(a: &RgbImage, b: &RgbImage) -> (f64, f64, f64) {
    let size = a.width() as usize;
    let (ga, gb) = (gray(a), gray(b));
    let r = 4i64;
    let margin = 8usize;
    let mut best = (f64::MIN, 0, 0);
    for dy in -r..=r {
        for dx in -r..=r {
            let c = ncc(&ga, &gb, size, margin, dx, dy);
            if c > best.0 {
                best = (c, dx, dy);
            }
        }
    }
    let (peak, dx, dy) = best;
    let vertex = |m: f64, p: f64| {
        let den = m - 2.0 * peak + p;
        if den.abs() < 1e-12 {
            0.0
        } else {
            0.5 * (m - p) / den
        }
    };
    let fx = vertex(
        ncc(&ga, &gb, size, margin, dx - 1, dy),
        ncc(&ga, &gb, size, margin, dx + 1, dy),
    );
    let fy = vertex(
        ncc(&ga, &gb, size, margin, dx, dy - 1),
        ncc(&ga, &gb, size, margin, dx, dy + 1),
    );
    (dx as f64 + fx, dy as f64 + fy, peak)
}

fn mean_abs_diff(a: &RgbImage, b: &RgbImage) -> f64 {
    let n = a.as_raw().len() as f64;
    a.as_raw()
        .iter()
        .zip(b.as_raw())
        .map(|(x, y)| (f64::from(*x) - f64::from(*y)).abs())
        .sum::<f64>()
        / n
}

struct Stats {
    shifts: Vec<f64>,
    intensity: Vec<f64>,
}

/// Renders, rectifies and compares `views` random poses over `map`.
fn round_trip(name: &str, map: &OrthoMap, views: usize, seed: u64) -> Stats {
    let camera = sim_camera();
    let gsd = map.gsd_m();
    let (w, h) = map.dimensions();
    let min_side_m = f64::from(w.min(h)) * gsd;
    let h_max = min_side_m / 2.2;
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let size = 128u32;
    let mut stats = Stats {
        shifts: Vec::new(),
        intensity: Vec::new(),
    };
    let mut attempts = 0;
    while stats.shifts.len() < views {
        attempts += 1;
        assert!(attempts < views * 20, "{name}: too few usable poses");
        let height = (rng.random_range(50.0..300.0) * gsd / 0.1).min(h_max);
        let (roll, pitch, yaw) = (
            rng.random_range(-20.0..20.0),
            rng.random_range(-20.0..20.0),
            rng.random_range(-180.0..180.0),
        );
        let pose = Pose::from_euler_deg(roll, pitch, yaw, height);
        let ground_size_m = 0.5 * height;
        // Keep the rectified region (within ~0.9 h of the vehicle) on the map.
        let margin_px = 0.95 * height / gsd;
        let x = rng.random_range(margin_px..f64::from(w) - margin_px);
        let y = rng.random_range(margin_px..f64::from(h) - margin_px);
        let vehicle = map.pixel_to_lat_lon(x, y).unwrap();

        let frame = render(map, &camera, vehicle, &pose).unwrap();
        let target = RectifyTarget {
            size_px: size,
            ground_size_m,
        };
        let rectified = rectify(
            &frame.image,
            &camera,
            &pose,
            &target,
            &RectifyLimits::default(),
        )
        .unwrap_or_else(|e| panic!("{name}: {e}"));
        let [n, e] = rectified.centre_offset_ne_m;
        let ground = LocalFrame::new(Geodetic::new(vehicle.0, vehicle.1, 0.0).unwrap()).unwrap();
        let centre = ground.from_ned(&Vector3::new(n, e, 0.0));
        let patch = map
            .patch((centre.lat_deg, centre.lon_deg), ground_size_m, size)
            .unwrap();
        assert!(patch.coverage > 0.999, "{name}: patch off the map");
        // Landsat has fill outside the scene: skip views that reach it.
        let black = patch.image.pixels().filter(|p| p.0 == [0, 0, 0]).count() as f64
            / f64::from(size * size);
        if black > 0.01 {
            continue;
        }
        if stats.shifts.is_empty() {
            // The estimator itself: a patch cut 0.4 px east and 0.25 px south must measure as such.
            let gsd_out = ground_size_m / f64::from(size);
            let moved = ground.from_ned(&Vector3::new(n - 0.25 * gsd_out, e + 0.4 * gsd_out, 0.0));
            let moved = map
                .patch((moved.lat_deg, moved.lon_deg), ground_size_m, size)
                .unwrap();
            let (dx, dy, _) = shift(&patch.image, &moved.image);
            assert!(
                (dx + 0.4).abs() < 0.1 && (dy + 0.25).abs() < 0.1,
                "{name}: the shift estimator measures ({dx:.3}, {dy:.3}) for (-0.4, -0.25)"
            );
        }
        let (dx, dy, peak) = shift(&rectified.image, &patch.image);
        assert!(peak > 0.5, "{name}: no correlation peak ({peak:.2}) for pose {roll:.1}/{pitch:.1}/{yaw:.1} at {height:.0} m");
        stats.shifts.push(dx.hypot(dy));
        stats
            .intensity
            .push(mean_abs_diff(&rectified.image, &patch.image));
    }
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
    let max = |v: &[f64]| v.iter().cloned().fold(0.0, f64::max);
    println!(
        "{name}: {views} views, heights up to {:.0} m: shift mean {:.3} px, max {:.3} px (output px of {size}); \
         mean abs intensity error {:.1} / 255",
        (300.0 * gsd / 0.1).min(h_max),
        mean(&stats.shifts),
        max(&stats.shifts),
        mean(&stats.intensity)
    );
    assert!(
        max(&stats.shifts) < 0.5,
        "{name}: shifts {:?}",
        stats.shifts
    );
    assert!(
        mean(&stats.shifts) < 0.2,
        "{name}: shifts {:?}",
        stats.shifts
    );
    stats
}

#[test]
fn round_trip_yellowstone_10cm() {
    let map = open("yell_forest_10cm.png", Some("EPSG:32612"));
    round_trip("yell", &map, 6, 1);
}

#[test]
fn round_trip_osbs_10cm() {
    let map = open("osbs_forest_10cm_utm17n.tif", None);
    round_trip("osbs", &map, 6, 2);
}

#[test]
fn round_trip_landsat_30m() {
    let map = open("landsat8_30m_utm21s.tif", None);
    round_trip("landsat", &map, 6, 3);
}

#[test]
fn oblique_and_horizon_views_are_refused() {
    let map = open("osbs_forest_10cm_utm17n.tif", None);
    let camera = sim_camera();
    let vehicle = map.pixel_to_lat_lon(200.0, 200.0).unwrap();
    let target = RectifyTarget {
        size_px: 64,
        ground_size_m: 5.0,
    };
    let pose = Pose::from_euler_deg(0.0, 45.0, 30.0, 15.0);
    let frame = render(&map, &camera, vehicle, &pose).unwrap();
    match rectify(
        &frame.image,
        &camera,
        &pose,
        &target,
        &RectifyLimits::default(),
    ) {
        Err(RectifyError::Tilted { tilt_deg, max_deg }) => {
            assert!((tilt_deg - 45.0).abs() < 1e-6 && max_deg == 35.0)
        }
        other => panic!("45° tilt: {:?}", other.map(|r| r.coverage)),
    }
    // Even with the tilt limit lifted, a camera rolled 65° sees the sky at its side edge (the horizontal
    // half field of view is 35°).
    let pose = Pose::from_euler_deg(-65.0, 0.0, 0.0, 15.0);
    let frame = render(&map, &camera, vehicle, &pose).unwrap();
    assert!(frame.coverage < 1.0, "the sky is not on the map");
    let lifted = RectifyLimits {
        max_tilt_deg: 89.0,
        ..RectifyLimits::default()
    };
    match rectify(&frame.image, &camera, &pose, &target, &lifted) {
        Err(e @ RectifyError::Horizon { .. }) => assert!(e.to_string().contains("horizon")),
        other => panic!("horizon in view: {:?}", other.map(|r| r.coverage)),
    }
}

// ---------------------------------------------------------------------------------------------------------
// The pair generator

use vimgeo::sim::pairs::{generate_pairs, PairsConfig, PairsError, PairsSource, SAMPLES_HEADER};

/// A `w x h` crop of `map` at pixel `(x0, y0)`, georeferenced.
fn crop(map: &OrthoMap, x0: u32, y0: u32, w: u32, h: u32) -> OrthoMap {
    let image = image::imageops::crop_imm(map.image(), x0, y0, w, h).to_image();
    let t = map.geotransform();
    let t = [
        t[0] + f64::from(x0) * t[1],
        t[1],
        0.0,
        t[3] + f64::from(y0) * t[5],
        0.0,
        t[5],
    ];
    OrthoMap::from_parts(image, t, map.zone()).unwrap()
}

fn small_config(seed: u64) -> PairsConfig {
    PairsConfig {
        size_px: 32,
        tile_src_px: 64,
        views: 2,
        val_fraction: 0.5,
        seed,
        camera_name: "sim".into(),
        ..PairsConfig::default()
    }
}

/// Every file under `dir`, relative, sorted, with its bytes.
fn tree(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let p = entry.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push((
                    p.strip_prefix(dir).unwrap().to_path_buf(),
                    std::fs::read(&p).unwrap(),
                ));
            }
        }
    }
    out.sort();
    out
}

/// `(row, col)` of a tile id `<stem>-rRRR-cCCC`.
fn row_col(id: &str) -> (u32, u32) {
    let (rest, col) = id.rsplit_once("-c").unwrap();
    let (_, row) = rest.rsplit_once("-r").unwrap();
    (row.parse().unwrap(), col.parse().unwrap())
}

#[test]
fn pairs_layout_split_and_determinism() {
    let yell = open("yell_forest_10cm.png", Some("EPSG:32612"));
    // 160 x 384 px (16 x 38 m) of Yellowstone: with 64 px tiles and a 0.5 validation fraction, 2 x 2
    // training tiles, a 4 x 4 validation gallery and 2 x 2 query tiles.
    let map = crop(&yell, 900, 1000, 160, 384);
    let source = PairsSource {
        name: "yell".into(),
        path: "yell_forest_10cm.png (crop)".into(),
        map: map.clone(),
        train_only: false,
    };
    let camera = sim_camera();
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (dir.path().join("a"), dir.path().join("b"));
    let config = small_config(7);
    let report = generate_pairs(std::slice::from_ref(&source), &camera, &config, &a).unwrap();
    generate_pairs(std::slice::from_ref(&source), &camera, &config, &b).unwrap();
    println!("pairs: {:?}", report.total);
    assert!(!dir.path().join("a.partial").exists());

    // Same seed, same bytes; another seed, other views.
    let (ta, tb) = (tree(&a), tree(&b));
    assert_eq!(
        ta.iter().map(|f| &f.0).collect::<Vec<_>>(),
        tb.iter().map(|f| &f.0).collect::<Vec<_>>()
    );
    for (fa, fb) in ta.iter().zip(&tb) {
        assert!(fa.1 == fb.1, "{} differs between runs", fa.0.display());
    }
    let c = dir.path().join("c");
    generate_pairs(std::slice::from_ref(&source), &camera, &small_config(8), &c).unwrap();
    assert_ne!(
        std::fs::read(a.join("samples.csv")).unwrap(),
        std::fs::read(c.join("samples.csv")).unwrap()
    );
    // An existing folder is not overwritten.
    assert!(matches!(
        generate_pairs(std::slice::from_ref(&source), &camera, &config, &a),
        Err(PairsError::Exists(_))
    ));

    let csv = std::fs::read_to_string(a.join("samples.csv")).unwrap();
    let mut lines = csv.lines();
    assert_eq!(lines.next().unwrap(), SAMPLES_HEADER);
    assert_eq!(
        SAMPLES_HEADER,
        "split,kind,id,file,ortho,tile_lat,tile_lon,ground_size_m,true_lat,true_lon,vehicle_lat,vehicle_lon,\
         height_m,roll_deg,pitch_deg,yaw_deg,err_roll_deg,err_pitch_deg,err_yaw_deg,err_height_frac"
    );
    let rows: Vec<Vec<&str>> = lines.map(|l| l.split(',').collect()).collect();
    assert!(rows.iter().all(|r| r.len() == 20));
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(a.join("pairs.json")).unwrap()).unwrap();
    assert_eq!(json["orthos"][0]["split_axis"], "rows");

    let tile = 64.0;
    let stride = 32.0;
    let gsd = map.gsd_m();
    let count = |split: &str, kind: &str| {
        rows.iter()
            .filter(|r| r[0] == split && r[1] == kind)
            .count()
    };
    assert_eq!(count("train", "satellite"), 4);
    assert_eq!(count("train", "drone"), 8);
    assert_eq!(count("val", "satellite"), 16);
    assert_eq!(count("val", "drone"), 8);
    let mut sat_ids = std::collections::BTreeSet::new();
    for r in rows.iter().filter(|r| r[1] == "satellite") {
        sat_ids.insert((r[0], r[2]));
        assert_eq!(r[3], format!("{}/satellite/{}/{}.png", r[0], r[2], r[2]));
        assert!(r[10..].iter().all(|v| v.is_empty()));
    }

    // Footprints on the map: satellite tiles are their windows (true north vs grid north: < 0.2 px here);
    // drone views are the rectified image's corners traced back to the true ground with the recorded pose
    // and pose errors.
    let num = |s: &str| s.parse::<f64>().unwrap();
    let mut footprints: Vec<(&str, [f64; 4])> = Vec::new();
    for r in &rows {
        let file = a.join(r[3]);
        let img = image::open(&file).unwrap().to_rgb8();
        assert_eq!(img.dimensions(), (32, 32), "{}", file.display());
        let (row, col) = row_col(r[2]);
        let (cx, cy) = (
            f64::from(col) * stride + tile / 2.0,
            f64::from(row) * stride + tile / 2.0,
        );
        if r[1] == "satellite" {
            footprints.push((r[0], [cx - 32.0, cy - 32.0, cx + 32.0, cy + 32.0]));
            continue;
        }
        assert!(
            sat_ids.contains(&(r[0], r[2])),
            "{}: no satellite tile {}",
            r[3],
            r[2]
        );
        // The true centre lies in the tile's central stride x stride square.
        let (tx, ty) = map.lat_lon_to_pixel(num(r[8]), num(r[9])).unwrap();
        assert!(
            (tx - cx).abs() <= stride / 2.0 + 1e-6 && (ty - cy).abs() <= stride / 2.0 + 1e-6,
            "{}: true centre ({tx:.2}, {ty:.2}) outside the central square of ({cx}, {cy})",
            r[3]
        );
        let vehicle = (num(r[10]), num(r[11]));
        let h = num(r[12]);
        let truth = Pose::from_euler_deg(num(r[13]), num(r[14]), num(r[15]), h).view(&camera);
        let believed = Pose::from_euler_deg(
            num(r[13]) + num(r[16]),
            num(r[14]) + num(r[17]),
            num(r[15]) + num(r[18]),
            h * (1.0 + num(r[19])),
        )
        .view(&camera);
        let centre = believed.ground_point(&Vector3::z()).unwrap();
        let half = num(r[7]) / 2.0;
        let below = LocalFrame::new(Geodetic::new(vehicle.0, vehicle.1, 0.0).unwrap()).unwrap();
        let mut bbox = [f64::MAX, f64::MAX, f64::MIN, f64::MIN];
        for (sn, se) in [(1.0, -1.0), (1.0, 1.0), (-1.0, 1.0), (-1.0, -1.0)] {
            let p = Vector3::new(
                centre.x + sn * half,
                centre.y + se * half,
                believed.ground_down_m,
            );
            let px = camera.project(&believed.to_camera(&p)).unwrap();
            let ray = camera.unproject(&px).unwrap();
            let g = truth.ground_point(&ray.into_inner()).unwrap();
            let ll = below.from_ned(&Vector3::new(g.x, g.y, 0.0));
            let (x, y) = map.lat_lon_to_pixel(ll.lat_deg, ll.lon_deg).unwrap();
            bbox = [
                bbox[0].min(x),
                bbox[1].min(y),
                bbox[2].max(x),
                bbox[3].max(y),
            ];
        }
        // The optical axis of the true pose sees the true centre.
        let axis = truth.ground_point(&Vector3::z()).unwrap();
        let t = below.from_ned(&Vector3::new(axis.x, axis.y, 0.0));
        assert!(
            (t.lat_deg - num(r[8])).abs() < 1e-8 && (t.lon_deg - num(r[9])).abs() < 1e-8,
            "{}: true centre is not where the optical axis looks",
            r[3]
        );
        assert!((num(r[7]) - tile * gsd).abs() < 1e-3);
        footprints.push((r[0], bbox));
    }
    // No training footprint within one tile of a validation footprint.
    let mut closest = f64::MAX;
    for (sa, fa) in footprints.iter().filter(|f| f.0 == "train") {
        for (_, fb) in footprints.iter().filter(|f| f.0 == "val") {
            let gap = (fb[0] - fa[2])
                .max(fa[0] - fb[2])
                .max(fb[1] - fa[3])
                .max(fa[1] - fb[3]);
            closest = closest.min(gap);
            assert!(
                gap >= tile,
                "{sa} footprint {fa:?} is {gap:.1} px from {fb:?}"
            );
        }
    }
    println!("closest train/val footprints: {closest:.1} map px (a tile is {tile})");
}

#[test]
fn pairs_refuses_an_orthophoto_too_small_to_split_unless_train_only() {
    let osbs = open("osbs_forest_10cm_utm17n.tif", None);
    let camera = sim_camera();
    let dir = tempfile::tempdir().unwrap();
    let mut source = PairsSource {
        name: "osbs_forest_10cm_utm17n".into(),
        path: "osbs_forest_10cm_utm17n.tif".into(),
        map: osbs,
        train_only: false,
    };
    let config = PairsConfig {
        views: 1,
        size_px: 32,
        ..PairsConfig::default()
    };
    let err = generate_pairs(
        std::slice::from_ref(&source),
        &camera,
        &config,
        &dir.path().join("x"),
    )
    .unwrap_err();
    let text = err.to_string();
    assert!(
        matches!(err, PairsError::TooSmall { .. })
            && text.contains("400x400")
            && text.contains("@train"),
        "{text}"
    );
    assert!(!dir.path().join("x").exists() && !dir.path().join("x.partial").exists());
    // Training-only, the 400 px image holds one 192 px tile with room for its views.
    source.train_only = true;
    let report = generate_pairs(
        std::slice::from_ref(&source),
        &camera,
        &config,
        &dir.path().join("y"),
    )
    .unwrap();
    assert_eq!(
        (
            report.total.train_tiles,
            report.total.val_tiles,
            report.total.train_views
        ),
        (1, 0, 1)
    );
    assert!(dir
        .path()
        .join("y/train/drone/osbs_forest_10cm_utm17n-r001-c001/osbs_forest_10cm_utm17n-r001-c001-0.png")
        .is_file());
}

/// 30 frames of a flight along a line at 5 m/s, 30 m up, every 0.2 s, with small true attitude changes and
/// the heading turning at `turn_dps` degrees a second; `error(k)` is the (roll, heading) error of frame k's
/// reported pose, degrees (what the camera saw did not change). The verdicts, and the check after them.
fn attitude_flight(
    turn_dps: f64,
    error: impl Fn(u32) -> (f64, f64),
) -> (Vec<AttitudeVerdict>, AttitudeCheck) {
    let map = open("yell_forest_10cm.png", Some("EPSG:32612"));
    let camera = sim_camera();
    let (w, h) = map.dimensions();
    let mut check = AttitudeCheck::new(10.0);
    let mut rng = ChaCha8Rng::seed_from_u64(4);
    let mut verdicts = Vec::new();
    for k in 0..30u32 {
        let t_s = 0.2 * f64::from(k);
        // East along the middle of the map, 1 m a frame (10 px at 0.1 m).
        let x = f64::from(w) / 2.0 - 150.0 + 10.0 * f64::from(k);
        let vehicle = map.pixel_to_lat_lon(x, f64::from(h) / 2.0).unwrap();
        let (roll, pitch, yaw) = (
            3.0 * (0.7 * t_s).sin() + rng.random_range(-0.3..0.3),
            2.0 * (0.5 * t_s).cos(),
            90.0 + 5.0 * (0.3 * t_s).sin() + turn_dps * t_s + rng.random_range(-0.5..0.5),
        );
        let truth = Pose::from_euler_deg(roll, pitch, yaw, 30.0);
        let frame = render(&map, &camera, vehicle, &truth).unwrap();
        let (roll_error, yaw_error) = error(k);
        let reported = Pose::from_euler_deg(roll + roll_error, pitch, yaw + yaw_error, 30.0);
        let t_us = 1_760_000_000_000_000 + u64::from(k) * 200_000;
        verdicts.push(check.observe(t_us, &frame.image, &reported, &camera));
    }
    (verdicts, check)
}

/// Asserts that exactly frames 10-19 were refused.
fn assert_refused_10_to_19(verdicts: &[AttitudeVerdict]) {
    assert_eq!(verdicts[0], AttitudeVerdict::NoReference);
    for (k, v) in verdicts.iter().enumerate() {
        let wrong = (10..20).contains(&k);
        assert_eq!(!v.is_usable(), wrong, "frame {k}: {v:?}");
    }
}

/// Frames 10-19 report 25° of roll too much: the check passes the true poses, refuses the wrong ones from
/// the first, and passes again once the error is gone.
#[test]
fn an_attitude_that_jumps_without_the_image_is_refused_until_it_jumps_back() {
    let (verdicts, check) = attitude_flight(0.0, |k| {
        (if (10..20).contains(&k) { 25.0 } else { 0.0 }, 0.0)
    });
    assert_refused_10_to_19(&verdicts);
    // The onset is measured as a jump of about 30 m · tan(25°) = 14 m (less the allowance for the
    // vehicle's own motion), and the bias comes back near zero at the end. A roll error is not mistaken for
    // a heading error.
    let AttitudeVerdict::Inconsistent {
        jump_m,
        bias_m,
        heading_deg,
    } = verdicts[10]
    else {
        panic!("{:?}", verdicts[10]);
    };
    assert!(
        jump_m > 4.0 && (bias_m - 14.0).abs() < 3.0 && heading_deg == 0.0,
        "{jump_m} {bias_m} {heading_deg}"
    );
    let b = check.bias_ne_m();
    assert!(b[0].hypot(b[1]) < 4.0, "bias left {b:?}");
}

/// A heading error rotates the view about the nadir: the ground under the centre does not move, but the
/// ground seen off-centre does. Frames 10-19 report the heading 20° clockwise of the truth while the vehicle
/// turns at 15°/s (3° a frame, which the check must not take for an error): exactly they are refused, and
/// the heading error measured is 20 ± 3°.
#[test]
fn a_heading_that_jumps_without_the_image_turning_is_refused_until_it_jumps_back() {
    let (verdicts, check) = attitude_flight(15.0, |k| {
        (0.0, if (10..20).contains(&k) { 20.0 } else { 0.0 })
    });
    assert_refused_10_to_19(&verdicts);
    let AttitudeVerdict::Inconsistent { heading_deg, .. } = verdicts[10] else {
        panic!("{:?}", verdicts[10]);
    };
    assert!((heading_deg - 20.0).abs() < 3.0, "{heading_deg}");
    assert_eq!(check.heading_bias_deg(), 0.0);
    // Counter-clockwise, smaller, on a straight line: 10° is still a jump.
    let (verdicts, _) = attitude_flight(0.0, |k| {
        (0.0, if (10..20).contains(&k) { -10.0 } else { 0.0 })
    });
    assert_refused_10_to_19(&verdicts);
}
