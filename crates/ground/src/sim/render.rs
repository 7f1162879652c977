//! The simulated camera: what a calibrated camera on a drone in a given pose sees of an orthophoto.
//!
//! [`OrthoMap`] is an RGB raster in memory with its georeference: a north-up affine geotransform (GDAL's six
//! coefficients) in a WGS84 UTM zone. Build one from parts ([`OrthoMap::from_parts`], no GDAL), or, with the
//! `gdal` feature, read a whole orthophoto at full resolution ([`OrthoMap::open`], through the cache
//! builder's [`Orthophoto`](crate::build::Orthophoto): same band choice and 16-bit stretch).
//!
//! [`render`] draws the camera's frame: for each camera pixel, [`CameraModel::unproject`] (lens distortion
//! included) → the ray in NED → where it meets the flat ground below the vehicle → latitude/longitude →
//! UTM → map pixel → bilinear sample. [`OrthoMap::patch`] cuts the north-up (true north) tile centred at a
//! position, as the tile cache and the pair generator see the ground. Both sample `k x k` points per output
//! pixel (a box filter, like GDAL's `average`) when one output pixel spans several map pixels. Pixels off
//! the map are black, and the fraction on the map is reported.
//!
//! Ground point → map pixel is exact at the nodes of a 33 x 33 grid over the map's extent (local NED →
//! WGS84 through ECEF, then the Krüger UTM series, both in [`vimgeo_onboard::geodesy`]) and bilinear in between: the
//! map is smooth (its curvature is the meridian convergence's change, about tan(lat)/R per metre), so the
//! interpolation error stays under a hundredth of a pixel for any map up to Landsat-scene size (tested
//! below), while a frame costs 1089 exact conversions instead of one per sample.
//!
//! The ground is the ellipsoid (height 0) seen as the tangent plane below the vehicle, the same flat ground
//! [`rectify`](vimgeo_onboard::rectify::rectify) assumes; the orthophoto carries no terrain heights.

use image::RgbImage;
use nalgebra::{Point2, Vector3};
use rand::Rng;
use rayon::prelude::*;

use crate::sim::photometric::{Photometric, PhotometricError};
use vimgeo_onboard::geodesy::{GeodesyError, Geodetic, LocalFrame, UtmZone};
use vimgeo_onboard::rectify::{bilinear, CameraModel, Pose};

/// Nodes per side of the exact ground → map grid.
const MAP_GRID_NODES: usize = 33;
/// Largest supersampling grid per output pixel.
const MAX_SUPERSAMPLE: u32 = 4;

/// Why rendering or cutting a patch failed.
#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    /// The map's geotransform is rotated, sheared or singular.
    #[error(
        "geotransform {0:?} is not a north-up, invertible affine map (terms 2 and 4 must be 0, 1 and 5 non-zero)"
    )]
    Geotransform([f64; 6]),
    /// The map image has no pixels.
    #[error("the map image is {width}x{height} px: it needs at least 2x2")]
    EmptyMap {
        /// Width, pixels.
        width: u32,
        /// Height, pixels.
        height: u32,
    },
    /// A position or projection was out of range.
    #[error("{what}: {source}")]
    Geodesy {
        /// What was being converted.
        what: String,
        /// The geodesy error.
        #[source]
        source: GeodesyError,
    },
    /// The vehicle's height puts the camera at or below the ground.
    #[error(
        "vehicle height {height_m} m above ground puts the camera at {camera_height_m} m: need > 0"
    )]
    BadHeight {
        /// The vehicle's height above ground, metres.
        height_m: f64,
        /// The camera's height above ground, metres.
        camera_height_m: f64,
    },
    /// A patch with no pixels or no ground size.
    #[error(
        "patch of {size_px} px over {ground_size_m} m is empty: need >= 1 px and a ground size > 0"
    )]
    EmptyPatch {
        /// Side, pixels.
        size_px: u32,
        /// Side on the ground, metres.
        ground_size_m: f64,
    },
    /// The photometric change failed.
    #[error("photometric change: {0}")]
    Photometric(#[from] PhotometricError),
    /// The orthophoto could not be read.
    #[error(transparent)]
    Ortho(#[from] crate::build::BuildError),
    /// The orthophoto's CRS is not a WGS84 UTM zone.
    #[error(
        "{path}: its CRS {crs} is not a WGS84 UTM zone ({source}); reproject it first, e.g. \
         `gdalwarp -t_srs EPSG:326zz` (north) or EPSG:327zz (south)"
    )]
    NotUtm {
        /// The orthophoto.
        path: std::path::PathBuf,
        /// Its CRS.
        crs: String,
        /// Why the CRS is refused.
        #[source]
        source: GeodesyError,
    },
}

fn geodesy(what: impl Into<String>) -> impl FnOnce(GeodesyError) -> RenderError {
    let what = what.into();
    move |source| RenderError::Geodesy { what, source }
}

/// A georeferenced RGB raster in memory.
#[derive(Debug, Clone, PartialEq)]
pub struct OrthoMap {
    image: RgbImage,
    transform: [f64; 6],
    zone: UtmZone,
}

/// A rendered image and the fraction of its samples that fell on the map.
#[derive(Debug, Clone, PartialEq)]
pub struct Rendered {
    /// The image; off-map samples are black.
    pub image: RgbImage,
    /// Fraction of samples on the map, 0..=1.
    pub coverage: f64,
}

impl OrthoMap {
    /// A map from its pixels, GDAL geotransform (UTM metres, pixel corners: pixel `(i, j)` spans
    /// `[i, i+1) x [j, j+1)`) and zone. Refuses rotated, sheared or singular transforms.
    pub fn from_parts(
        image: RgbImage,
        transform: [f64; 6],
        zone: UtmZone,
    ) -> Result<OrthoMap, RenderError> {
        let ok = transform.iter().all(|v| v.is_finite())
            && transform[2] == 0.0
            && transform[4] == 0.0
            && transform[1] != 0.0
            && transform[5] != 0.0;
        if !ok {
            return Err(RenderError::Geotransform(transform));
        }
        if image.width() < 2 || image.height() < 2 {
            return Err(RenderError::EmptyMap {
                width: image.width(),
                height: image.height(),
            });
        }
        Ok(OrthoMap {
            image,
            transform,
            zone,
        })
    }

    /// Reads a whole orthophoto at full resolution (GeoTIFF, or an image with a world file and
    /// `options.crs`). Its CRS must be a WGS84 UTM zone.
    pub fn open(
        path: &std::path::Path,
        options: &crate::build::OrthoOptions,
    ) -> Result<OrthoMap, RenderError> {
        use crate::build::Orthophoto;
        let ortho = Orthophoto::open(path, options)?;
        let crs = ortho.georef().crs().to_string();
        let zone = UtmZone::parse_crs(&crs).map_err(|source| RenderError::NotUtm {
            path: path.to_path_buf(),
            crs: crs.clone(),
            source,
        })?;
        let (w, h) = (ortho.grid().width, ortho.grid().height);
        let image = ortho.read_window((0, 0, w, h), (w, h))?.image;
        OrthoMap::from_parts(image, ortho.georef().transform(), zone)
    }

    /// The pixels.
    pub fn image(&self) -> &RgbImage {
        &self.image
    }

    /// The geotransform.
    pub fn geotransform(&self) -> [f64; 6] {
        self.transform
    }

    /// The UTM zone.
    pub fn zone(&self) -> UtmZone {
        self.zone
    }

    /// Width and height, pixels.
    pub fn dimensions(&self) -> (u32, u32) {
        self.image.dimensions()
    }

    /// Mean pixel size in grid metres (UTM metres: ground metres times the zone's scale factor, which is
    /// within 0.04% of 1 inside a zone).
    pub fn gsd_m(&self) -> f64 {
        0.5 * (self.transform[1].abs() + self.transform[5].abs())
    }

    /// GDAL pixel coordinates (corners at integers: the centre of pixel `(i, j)` is `(i + 0.5, j + 0.5)`)
    /// → latitude, longitude in degrees.
    pub fn pixel_to_lat_lon(&self, x: f64, y: f64) -> Result<(f64, f64), RenderError> {
        let t = &self.transform;
        let (e, n) = (t[0] + x * t[1], t[3] + y * t[5]);
        self.zone
            .inverse(e, n)
            .map_err(geodesy(format!("map pixel ({x}, {y})")))
    }

    /// Latitude, longitude in degrees → GDAL pixel coordinates (see [`OrthoMap::pixel_to_lat_lon`]).
    pub fn lat_lon_to_pixel(&self, lat: f64, lon: f64) -> Result<(f64, f64), RenderError> {
        let (e, n) = self
            .zone
            .forward(lat, lon)
            .map_err(geodesy(format!("position ({lat}, {lon})")))?;
        let t = &self.transform;
        Ok(((e - t[0]) / t[1], (n - t[3]) / t[5]))
    }

    /// The north-up (true north) tile of `size_px` covering `ground_size_m` centred at `centre` (lat, lon):
    /// the view the tile cache and the pair generator cut. Off-map pixels are black.
    pub fn patch(
        &self,
        centre: (f64, f64),
        ground_size_m: f64,
        size_px: u32,
    ) -> Result<Rendered, RenderError> {
        if size_px == 0 || !(ground_size_m.is_finite() && ground_size_m > 0.0) {
            return Err(RenderError::EmptyPatch {
                size_px,
                ground_size_m,
            });
        }
        let frame = ground_frame(centre)?;
        let grid = MapGrid::new(self, &frame)?;
        let gsd = ground_size_m / f64::from(size_px);
        let half = (f64::from(size_px) - 1.0) / 2.0;
        // North, east of output pixel (i, j).
        let ground = |i: f64, j: f64| Some(((half - j) * gsd, (i - half) * gsd));
        let k = supersample(&grid, ground, half, half);
        Ok(self.draw(size_px, size_px, k, &grid, ground))
    }

    /// Draws a `width x height` image whose pixel `(i, j)` (sub-pixel positions allowed) shows the ground
    /// point `ground(i, j)` (north, east metres in `grid`'s frame), `k x k` samples per pixel.
    fn draw(
        &self,
        width: u32,
        height: u32,
        k: u32,
        grid: &MapGrid,
        ground: impl Fn(f64, f64) -> Option<(f64, f64)> + Sync,
    ) -> Rendered {
        let offsets: Vec<f64> = (0..k)
            .map(|a| (f64::from(a) + 0.5) / f64::from(k) - 0.5)
            .collect();
        let (mw, mh) = (
            f64::from(self.image.width()),
            f64::from(self.image.height()),
        );
        let samples = f32::from(u16::try_from(k * k).unwrap_or(u16::MAX));
        let mut buf = vec![0u8; width as usize * height as usize * 3];
        let on_map: u64 = buf
            .par_chunks_mut(width as usize * 3)
            .enumerate()
            .map(|(j, row)| {
                let mut on_map = 0u64;
                for (i, out) in row.chunks_exact_mut(3).enumerate() {
                    let mut acc = [0f32; 3];
                    for dj in &offsets {
                        for di in &offsets {
                            let Some((n, e)) = ground(i as f64 + di, j as f64 + dj) else {
                                continue;
                            };
                            // GDAL coordinates → pixel-centre coordinates.
                            let (x, y) = grid.map_px(n, e);
                            let (x, y) = (x - 0.5, y - 0.5);
                            if x >= -0.5 && y >= -0.5 && x <= mw - 0.5 && y <= mh - 0.5 {
                                on_map += 1;
                                let v = bilinear(&self.image, x, y);
                                acc[0] += v[0];
                                acc[1] += v[1];
                                acc[2] += v[2];
                            }
                        }
                    }
                    for (o, a) in out.iter_mut().zip(acc) {
                        *o = (a / samples).round().clamp(0.0, 255.0) as u8;
                    }
                }
                on_map
            })
            .sum();
        let total = f64::from(width) * f64::from(height) * f64::from(k * k);
        Rendered {
            image: RgbImage::from_raw(width, height, buf).expect("buffer is width x height x 3"),
            coverage: on_map as f64 / total,
        }
    }
}

/// The local frame on the ground (ellipsoid height 0) at `(lat, lon)`.
fn ground_frame((lat, lon): (f64, f64)) -> Result<LocalFrame, RenderError> {
    Geodetic::new(lat, lon, 0.0)
        .and_then(LocalFrame::new)
        .map_err(geodesy(format!("position ({lat}, {lon})")))
}

/// What the camera on a vehicle at `vehicle` (lat, lon) in `pose` sees of `map` (see the module's doc).
pub fn render(
    map: &OrthoMap,
    camera: &CameraModel,
    vehicle: (f64, f64),
    pose: &Pose,
) -> Result<Rendered, RenderError> {
    let view = pose.view(camera);
    let camera_height_m = view.camera_height_m();
    if !(pose.height_agl_m.is_finite() && camera_height_m > 0.0) {
        return Err(RenderError::BadHeight {
            height_m: pose.height_agl_m,
            camera_height_m,
        });
    }
    let frame = ground_frame(vehicle)?;
    let grid = MapGrid::new(map, &frame)?;
    let ground = |u: f64, v: f64| {
        let ray = camera.unproject(&Point2::new(u, v))?;
        let g = view.ground_point(&ray.into_inner())?;
        Some((g.x, g.y))
    };
    let size = camera.image_size();
    let k = supersample(
        &grid,
        ground,
        camera.intrinsics().cx,
        camera.intrinsics().cy,
    );
    Ok(map.draw(size.width, size.height, k, &grid, ground))
}

/// Whether the ground within `radius_m` of the points below the vehicle and below the optical axis of the
/// camera at `vehicle` (lat, lon) in `pose` lies on `map` (checked on a ring of 16 points and the centres).
pub fn view_on_map(
    map: &OrthoMap,
    camera: &CameraModel,
    vehicle: (f64, f64),
    pose: &Pose,
    radius_m: f64,
) -> Result<bool, RenderError> {
    let view = pose.view(camera);
    let grid = MapGrid::new(map, &ground_frame(vehicle)?)?;
    let (mw, mh) = map.dimensions();
    let axis = view
        .ground_point(&Vector3::z())
        .map_or((0.0, 0.0), |g| (g.x, g.y));
    let on = |n: f64, e: f64| {
        let (x, y) = grid.map_px(n, e);
        (0.0..=f64::from(mw)).contains(&x) && (0.0..=f64::from(mh)).contains(&y)
    };
    Ok([(0.0, 0.0), axis].iter().all(|&(n0, e0)| {
        on(n0, e0)
            && (0..16).all(|k| {
                let a = f64::from(k) * std::f64::consts::TAU / 16.0;
                on(n0 + radius_m * a.cos(), e0 + radius_m * a.sin())
            })
    }))
}

/// [`render`], then the photometric change `photometric` with randomness from `rng`.
pub fn render_with(
    map: &OrthoMap,
    camera: &CameraModel,
    vehicle: (f64, f64),
    pose: &Pose,
    photometric: &Photometric,
    rng: &mut impl Rng,
) -> Result<Rendered, RenderError> {
    let mut rendered = render(map, camera, vehicle, pose)?;
    photometric.apply(&mut rendered.image, rng)?;
    Ok(rendered)
}

/// Supersampling grid side: map pixels spanned by one output pixel at `(ci, cj)` (rounded up, 1..=4).
fn supersample(
    grid: &MapGrid,
    ground: impl Fn(f64, f64) -> Option<(f64, f64)>,
    ci: f64,
    cj: f64,
) -> u32 {
    let at = |i: f64, j: f64| {
        ground(i, j).map(|(n, e)| {
            let (x, y) = grid.map_px(n, e);
            Vector3::new(x, y, 0.0)
        })
    };
    let span = match (at(ci, cj), at(ci + 0.5, cj), at(ci, cj + 0.5)) {
        (Some(p), Some(pi), Some(pj)) => 2.0 * (pi - p).norm().max((pj - p).norm()),
        _ => 1.0,
    };
    // Up to 5% over one source pixel per output pixel aliases too little to pay for more samples (and
    // keeps equal resolutions, with UTM's scale factor, at one sample).
    ((span - 0.05).ceil() as u32).clamp(1, MAX_SUPERSAMPLE)
}

/// Ground (north, east metres in a local frame) → map GDAL pixel coordinates: exact at the nodes of a
/// regular grid over the map's extent, bilinear between them (and extrapolated linearly outside).
struct MapGrid {
    n0: f64,
    e0: f64,
    step_n: f64,
    step_e: f64,
    nodes: Vec<[f64; 2]>,
}

impl MapGrid {
    fn new(map: &OrthoMap, frame: &LocalFrame) -> Result<MapGrid, RenderError> {
        let (w, h) = map.dimensions();
        let (w, h) = (f64::from(w), f64::from(h));
        // The map's extent in the frame, from points along its border.
        let (mut n_min, mut n_max, mut e_min, mut e_max) = (f64::MAX, f64::MIN, f64::MAX, f64::MIN);
        let steps = 16;
        for s in 0..=steps {
            let f = f64::from(s) / f64::from(steps);
            for (x, y) in [(f * w, 0.0), (f * w, h), (0.0, f * h), (w, f * h)] {
                let (lat, lon) = map.pixel_to_lat_lon(x, y)?;
                let ned = frame.to_ned(&Geodetic {
                    lat_deg: lat,
                    lon_deg: lon,
                    alt_m: 0.0,
                });
                n_min = n_min.min(ned.x);
                n_max = n_max.max(ned.x);
                e_min = e_min.min(ned.y);
                e_max = e_max.max(ned.y);
            }
        }
        let margin = 0.02 * (n_max - n_min).max(e_max - e_min);
        let (n0, e0) = (n_min - margin, e_min - margin);
        let cells = (MAP_GRID_NODES - 1) as f64;
        let step_n = (n_max + margin - n0) / cells;
        let step_e = (e_max + margin - e0) / cells;
        let mut nodes = Vec::with_capacity(MAP_GRID_NODES * MAP_GRID_NODES);
        for a in 0..MAP_GRID_NODES {
            for b in 0..MAP_GRID_NODES {
                let (n, e) = (n0 + a as f64 * step_n, e0 + b as f64 * step_e);
                let g = frame.from_ned(&Vector3::new(n, e, 0.0));
                let (x, y) = map.lat_lon_to_pixel(g.lat_deg, g.lon_deg)?;
                nodes.push([x, y]);
            }
        }
        Ok(MapGrid {
            n0,
            e0,
            step_n,
            step_e,
            nodes,
        })
    }

    fn map_px(&self, n: f64, e: f64) -> (f64, f64) {
        let last = (MAP_GRID_NODES - 2) as f64;
        let fa = (n - self.n0) / self.step_n;
        let fb = (e - self.e0) / self.step_e;
        let a = fa.floor().clamp(0.0, last);
        let b = fb.floor().clamp(0.0, last);
        let (ta, tb) = (fa - a, fb - b);
        let (a, b) = (a as usize, b as usize);
        let at = |a: usize, b: usize| self.nodes[a * MAP_GRID_NODES + b];
        let (p00, p01, p10, p11) = (at(a, b), at(a, b + 1), at(a + 1, b), at(a + 1, b + 1));
        let mix = |c: usize| {
            (p00[c] * (1.0 - tb) + p01[c] * tb) * (1.0 - ta)
                + (p10[c] * (1.0 - tb) + p11[c] * tb) * ta
        };
        (mix(0), mix(1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A map whose pixel colours encode their column and row.
    fn coded_map(width: u32, height: u32, transform: [f64; 6], zone: UtmZone) -> OrthoMap {
        let image = RgbImage::from_fn(width, height, |x, y| {
            image::Rgb([
                (x % 256) as u8,
                (y % 256) as u8,
                ((x / 256) * 16 + y / 256) as u8,
            ])
        });
        OrthoMap::from_parts(image, transform, zone).unwrap()
    }

    fn camera() -> CameraModel {
        let calib = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../calib/sim.toml");
        CameraModel::new(&vimgeo_onboard::rectify::CameraCalibration::load(calib).unwrap())
    }

    #[test]
    fn the_interpolated_map_grid_is_exact_to_a_hundredth_of_a_pixel() {
        // A Landsat-sized map (61 x 56 km at 30 m) in zone 21S far from the central meridian, and a 0.1 m map.
        for (transform, zone, size) in [
            (
                [600_000.0, 30.0, 0.0, 7_300_000.0, 0.0, -30.0],
                UtmZone::new(21, false).unwrap(),
                (2041, 1860),
            ),
            (
                [528_000.05, 0.1, 0.0, 4_978_247.15, 0.0, -0.1],
                UtmZone::new(12, true).unwrap(),
                (2299, 2472),
            ),
        ] {
            let map = coded_map(size.0, size.1, transform, zone);
            let (lat, lon) = map.pixel_to_lat_lon(700.0, 900.0).unwrap();
            let frame = ground_frame((lat, lon)).unwrap();
            let grid = MapGrid::new(&map, &frame).unwrap();
            let mut worst = 0.0f64;
            for s in 0..200 {
                let (x, y) = (
                    f64::from(s * 37 % 2000) + 0.3,
                    f64::from(s * 53 % 1800) + 0.7,
                );
                let (lat, lon) = map.pixel_to_lat_lon(x, y).unwrap();
                let ned = frame.to_ned(&Geodetic {
                    lat_deg: lat,
                    lon_deg: lon,
                    alt_m: 0.0,
                });
                // The grid maps tangent-plane points; the map point's tangent-plane projection is along the
                // frame's down axis, which displaces it by at most ~d³/R² (a few cm at 30 km).
                let g = frame.from_ned(&Vector3::new(ned.x, ned.y, 0.0));
                let (xe, ye) = map.lat_lon_to_pixel(g.lat_deg, g.lon_deg).unwrap();
                let (xi, yi) = grid.map_px(ned.x, ned.y);
                worst = worst.max((xi - xe).hypot(yi - ye));
            }
            assert!(worst < 0.01, "{zone}: worst interpolation error {worst} px");
        }
    }

    #[test]
    fn a_nadir_view_sees_the_map_north_up_at_the_expected_scale() {
        let zone = UtmZone::new(17, true).unwrap();
        let map = coded_map(
            1000,
            1000,
            [400_000.0, 0.1, 0.0, 3_280_000.0, 0.0, -0.1],
            zone,
        );
        let (lat, lon) = map.pixel_to_lat_lon(500.0, 500.0).unwrap();
        let pose = Pose::from_euler_deg(0.0, 0.0, 0.0, 20.0);
        let cam = camera();
        let out = render(&map, &cam, (lat, lon), &pose).unwrap();
        assert_eq!(out.coverage, 1.0);
        // Column and row of the map pixel a camera pixel shows (decoded; bilinear blends of neighbouring
        // codes are off by at most a pixel away from 256-pixel boundaries).
        let code = |u: u32, v: u32| {
            let c = out.image.get_pixel(u, v);
            (
                f64::from(c[0]) + 256.0 * f64::from(c[2] / 16),
                f64::from(c[1]) + 256.0 * f64::from(c[2] % 16),
            )
        };
        let (col, row) = code(320, 240);

        // To half-pixel precision: a map whose red and green are twice the column and row (mod 256), which
        // bilinear sampling reproduces exactly. The four camera pixels around the principal point (319.5,
        // 239.5) sample points symmetric about the optical axis' ground point, which is below the vehicle
        // (pixel-centre coordinates (499.5, 499.5)) moved 0.05 m north by the lever arm: (499.5, 499.0).
        let ramp = RgbImage::from_fn(1000, 1000, |x, y| {
            image::Rgb([((2 * x) % 256) as u8, ((2 * y) % 256) as u8, 0])
        });
        let ramp = OrthoMap::from_parts(ramp, map.geotransform(), zone).unwrap();
        let fine = render(&ramp, &cam, (lat, lon), &pose).unwrap();
        let mean = |c: usize| {
            [(319, 239), (320, 239), (319, 240), (320, 240)]
                .iter()
                .map(|&(u, v)| f64::from(fine.image.get_pixel(u, v)[c]))
                .sum::<f64>()
                / 4.0
        };
        let (want_r, want_g) = ((2.0 * 499.5) % 256.0, (2.0 * 499.0) % 256.0);
        assert!(
            (mean(0) - want_r).abs() <= 0.5 && (mean(1) - want_g).abs() <= 0.5,
            "axis sees codes ({}, {}), want ({want_r}, {want_g}): off by more than a quarter pixel",
            mean(0),
            mean(1)
        );
        // East is to the right, north up; scale: 100 camera px at 19.9 m (the lever arm is 0.1 m down) with
        // f = 457 px is 4.35 m = 43.5 map px.
        let expected = 100.0 * (20.0 - 0.1) / 457.0 / 0.1;
        let (right, _) = code(420, 240);
        let (_, below) = code(320, 340);
        assert!(
            (right - col - expected).abs() < 1.5,
            "{} vs {expected}",
            right - col
        );
        assert!(
            (below - row - expected).abs() < 1.5,
            "{} vs {expected}",
            below - row
        );
    }

    #[test]
    fn patch_is_north_up_and_off_map_is_black() {
        let zone = UtmZone::new(17, true).unwrap();
        let map = coded_map(
            200,
            200,
            [400_000.0, 0.1, 0.0, 3_280_000.0, 0.0, -0.1],
            zone,
        );
        // Centre of pixel (100, 100): GDAL coordinates (100.5, 100.5).
        let centre = map.pixel_to_lat_lon(100.5, 100.5).unwrap();
        let p = map.patch(centre, 5.0, 50).unwrap();
        assert_eq!(p.coverage, 1.0);
        // To the pixel: a single bright map pixel at (100, 100) is the centre pixel of a 51 px patch at the
        // map's own 0.1 m, at full strength, its neighbours dark (half a pixel off would split it in two).
        let mut dot = RgbImage::new(200, 200);
        dot.put_pixel(100, 100, image::Rgb([255, 255, 255]));
        let dot = OrthoMap::from_parts(dot, map.geotransform(), zone).unwrap();
        let p = dot.patch(centre, 5.1, 51).unwrap();
        assert!(
            p.image.get_pixel(25, 25)[0] >= 250,
            "{:?}",
            p.image.get_pixel(25, 25)
        );
        for (i, j) in [(24, 25), (26, 25), (25, 24), (25, 26)] {
            assert!(
                p.image.get_pixel(i, j)[0] <= 5,
                "({i}, {j}): {:?}",
                p.image.get_pixel(i, j)
            );
        }
        let edge = map
            .patch(map.pixel_to_lat_lon(0.0, 100.0).unwrap(), 5.0, 50)
            .unwrap();
        assert!((edge.coverage - 0.5).abs() < 0.03, "{}", edge.coverage);
        assert_eq!(edge.image.get_pixel(0, 25).0, [0, 0, 0]);
        assert!(matches!(
            map.patch(centre, 0.0, 50),
            Err(RenderError::EmptyPatch { .. })
        ));
    }

    #[test]
    fn bad_inputs_are_errors() {
        let zone = UtmZone::new(17, true).unwrap();
        let img = RgbImage::new(10, 10);
        assert!(OrthoMap::from_parts(img.clone(), [0.0, 0.1, 0.01, 0.0, 0.0, -0.1], zone).is_err());
        assert!(OrthoMap::from_parts(img.clone(), [0.0, 0.0, 0.0, 0.0, 0.0, -0.1], zone).is_err());
        assert!(
            OrthoMap::from_parts(RgbImage::new(1, 5), [0.0, 0.1, 0.0, 0.0, 0.0, -0.1], zone)
                .is_err()
        );
        let map = coded_map(
            100,
            100,
            [400_000.0, 0.1, 0.0, 3_280_000.0, 0.0, -0.1],
            zone,
        );
        let pose = Pose::from_euler_deg(0.0, 0.0, 0.0, -1.0);
        let e = render(&map, &camera(), (29.6, -81.9), &pose).unwrap_err();
        assert!(e.to_string().contains("-1 m"), "{e}");
        let pose = Pose::from_euler_deg(0.0, 0.0, 0.0, 10.0);
        let e = render(&map, &camera(), (f64::NAN, -81.9), &pose).unwrap_err();
        assert!(matches!(e, RenderError::Geodesy { .. }), "{e}");
    }

    /// `cargo test --release --lib sim::render -- --ignored --nocapture`: time per frame.
    #[test]
    #[ignore]
    fn time_render() {
        let zone = UtmZone::new(12, true).unwrap();
        let map = coded_map(
            2000,
            2000,
            [528_000.0, 0.1, 0.0, 4_978_000.0, 0.0, -0.1],
            zone,
        );
        let vehicle = map.pixel_to_lat_lon(1000.0, 1000.0).unwrap();
        let cam = camera();
        for height in [30.0, 100.0] {
            let pose = Pose::from_euler_deg(5.0, -8.0, 33.0, height);
            let runs = 10;
            let t = std::time::Instant::now();
            for _ in 0..runs {
                render(&map, &cam, vehicle, &pose).unwrap();
            }
            println!(
                "render 640x480 at {height} m over a 0.1 m map: {:.1} ms/frame on {} threads",
                t.elapsed().as_secs_f64() * 1e3 / f64::from(runs),
                rayon::current_num_threads()
            );
        }
        let t = std::time::Instant::now();
        for _ in 0..10 {
            map.patch(vehicle, 19.2, 128).unwrap();
        }
        println!(
            "patch 128 px over 19.2 m: {:.2} ms",
            t.elapsed().as_secs_f64() * 1e3 / 10.0
        );
    }
}
