//! Geodesy against independent references: GeographicLib's published example, PROJ (cs2cs / `proj -V`, which
//! use the Poder/Engsager extended transverse Mercator, an implementation independent of ours), and, with the
//! `ground` feature, GDAL's OSR transform for 100 points in each of zones 12N, 17N and 21S.

use vimgeo::geodesy::{distance_m, Geodetic, UtmZone};

/// (EPSG, lat, lon, easting, northing): what the reference gives for the point.
const REFERENCE_POINTS: &[(u32, f64, f64, f64, f64, &str)] = &[
    // GeographicLib, UTMUPS example and GeoConvert documentation ("33.3 44.4" -> "38n 444140.54 3684706.36"),
    // given there to the centimetre.
    (32638, 33.3, 44.4, 444_140.54, 3_684_706.36, "GeographicLib"),
    // PROJ 9 `cs2cs +proj=longlat +datum=WGS84 +to +proj=utm +zone=Z [+south] +datum=WGS84 -f %.4f`.
    (32612, 44.9, -110.5, 539476.1386, 4971963.3513, "PROJ"),
    // On the western edge of zone 12 (-114°).
    (32612, 44.9, -114.0, 263142.6673, 4976220.8281, "PROJ"),
    (32617, 29.7, -82.0, 403261.0238, 3285961.9752, "PROJ"),
    // On the western edge of zone 17 (-84°), near the equator.
    (32617, 10.0, -84.0, 171071.2639, 1106908.8542, "PROJ"),
    // Southern hemisphere: the central meridian of 21S, the western edge of 21S, Melbourne in 55S, and
    // UTM's southern limit.
    (32721, -25.0, -57.0, 500_000.0, 7235052.2525, "PROJ"),
    (32721, -34.9, -60.0, 225868.8087, 6133938.1013, "PROJ"),
    (32755, -37.81, 144.96, 320422.8203, 5813305.2225, "PROJ"),
    (32731, -80.0, 0.0, 441867.7849, 1116915.0441, "PROJ"),
];

#[test]
fn utm_forward_matches_reference_points() {
    for &(epsg, lat, lon, e_ref, n_ref, source) in REFERENCE_POINTS {
        let zone = UtmZone::from_epsg(epsg).unwrap();
        // GeographicLib's value is rounded to 1 cm, PROJ's to 0.1 mm.
        let tol = if source == "GeographicLib" {
            0.005
        } else {
            1e-3
        };
        let (e, n) = zone.forward(lat, lon).unwrap();
        assert!(
            (e - e_ref).abs() < tol && (n - n_ref).abs() < tol,
            "EPSG:{epsg} ({lat}, {lon}): ({e:.4}, {n:.4}), {source} says ({e_ref}, {n_ref})"
        );
        let (lat2, lon2) = zone.inverse(e_ref, n_ref).unwrap();
        let back = zone.forward(lat2, lon2).unwrap();
        assert!((back.0 - e_ref).abs() < 1e-3 && (back.1 - n_ref).abs() < 1e-3);
        assert!(
            (lat2 - lat).abs() < 1e-7 && (lon2 - lon).abs() < 1e-7,
            "{lat2} {lon2}"
        );
    }
}

#[test]
fn convergence_and_scale_match_proj() {
    // PROJ 9 `proj -V +proj=utm +zone=Z [+south] +datum=WGS84`: "Convergence" and "Meridian scale (h)".
    let cases = [
        (32612, 44.9, -114.0, -2.118_595_82, 1.000_289_91),
        (32755, -37.81, 144.96, 1.250_945_81, 0.999_997_21),
    ];
    for (epsg, lat, lon, conv, scale) in cases {
        let g = UtmZone::from_epsg(epsg)
            .unwrap()
            .grid_point(lat, lon)
            .unwrap();
        assert!(
            (g.convergence_deg - conv).abs() < 1e-7,
            "{epsg}: {} vs {conv}",
            g.convergence_deg
        );
        assert!(
            (g.scale - scale).abs() < 1e-8,
            "{epsg}: {} vs {scale}",
            g.scale
        );
    }
}

#[test]
fn geodesic_distance_matches_karney() {
    // PROJ 9 `geod -I +ellps=WGS84 -f %.6f` (Karney's algorithm, GeographicLib's).
    let a = Geodetic::new(44.9, -110.5, 0.0).unwrap();
    let b = Geodetic::new(44.95, -110.45, 0.0).unwrap();
    let d = distance_m(&a, &b).unwrap();
    assert!((d - GEOD_SHORT_M).abs() < 0.6e-3, "{d}");
}

/// `echo 44.9 -110.5 44.95 -110.45 | geod -I +ellps=WGS84` (printed to the millimetre).
const GEOD_SHORT_M: f64 = 6815.972;

#[cfg(feature = "ground")]
#[test]
fn utm_forward_matches_gdal_osr() {
    use gdal::spatial_ref::{AxisMappingStrategy, CoordTransform, SpatialRef};
    use rand::{RngExt, SeedableRng};

    let mut wgs84 = SpatialRef::from_epsg(4326).unwrap();
    wgs84.set_axis_mapping_strategy(AxisMappingStrategy::TraditionalGisOrder);
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(6);
    for epsg in [32612u32, 32617, 32721] {
        let zone = UtmZone::from_epsg(epsg).unwrap();
        let mut utm = SpatialRef::from_epsg(epsg).unwrap();
        utm.set_axis_mapping_strategy(AxisMappingStrategy::TraditionalGisOrder);
        let to_utm = CoordTransform::new(&wgs84, &utm).unwrap();
        let cm = zone.central_meridian_deg();
        let (lat_lo, lat_hi) = if zone.north {
            (0.0, 84.0)
        } else {
            (-80.0, 0.0)
        };
        // Longitude first (traditional GIS order); a few points just outside the zone edges too.
        let mut lons: Vec<f64> = (0..100).map(|_| cm + rng.random_range(-3.5..3.5)).collect();
        let mut lats: Vec<f64> = (0..100).map(|_| rng.random_range(lat_lo..lat_hi)).collect();
        let (lon0, lat0) = (lons.clone(), lats.clone());
        to_utm
            .transform_coords(&mut lons, &mut lats, &mut [])
            .unwrap();
        let gdal_points = lons.iter().zip(&lats);
        for ((&lat, &lon), (&e_gdal, &n_gdal)) in lat0.iter().zip(&lon0).zip(gdal_points) {
            let (e, n) = zone.forward(lat, lon).unwrap();
            let err = (e - e_gdal).hypot(n - n_gdal);
            assert!(
                err < 1e-3,
                "EPSG:{epsg} ({lat}, {lon}): ours ({e}, {n}) GDAL ({e_gdal}, {n_gdal}) {err} m"
            );
        }
    }
}
