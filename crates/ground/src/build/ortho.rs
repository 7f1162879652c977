//! Orthophotos through GDAL: georeference, band choice, contrast stretch and tile windows.
//!
//! [`Orthophoto::open`] reads a GeoTIFF (or an image with a world file, whose CRS comes from
//! [`OrthoOptions::crs`]), picks the RGB bands by colour interpretation (or [`OrthoOptions::bands`]), finds
//! nodata (per-band nodata values, an alpha band), and fixes the contrast stretch: identity for 8-bit
//! data, per-band percentiles (2-98 by default) for anything wider. Tiles are read as windows, never the
//! whole raster; a window many times the model's input is read already downsampled by GDAL (average).
//! [`Georeference`] maps pixels to WGS84 and back through the geotransform and OSR, in traditional GIS axis
//! order (longitude first) whatever the CRS's official axis order.

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};

use gdal::raster::{ColorInterpretation, GdalDataType, ResampleAlg};
use gdal::spatial_ref::{AxisMappingStrategy, CoordTransform, SpatialRef};
use gdal::Dataset;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::encode::{SourceTile, TileSource};
use super::error::BuildError;
use super::plan::{PlannedTile, RasterGrid};
use vimgeo_onboard::encoder::RgbImage;
use vimgeo_onboard::util::hex;

/// How to read an orthophoto, as resolved from the command line.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct OrthoOptions {
    /// The CRS (`EPSG:32612`, WKT, PROJ string): required for an image whose georeference is a world file,
    /// overrides the file's own otherwise (logged when they differ).
    pub crs: Option<String>,
    /// The 1-based bands to use as red, green, blue; default by colour interpretation, else 1, 2, 3.
    pub bands: Option<[usize; 3]>,
    /// Low and high percentile of the stretch of data wider than 8 bits; default 2, 98.
    pub percentiles: Option<[f64; 2]>,
    /// The nodata value of every band, for files that fill with a value they do not declare (Landsat's
    /// 0 outside the scene); default the bands' own nodata values.
    pub nodata: Option<f64>,
}

/// The mapping of raw band values to 8 bits, recorded in the cache.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Stretch {
    /// `none` (8-bit values as they are) or `percentile`.
    pub kind: String,
    /// The percentiles that gave `low` and `high`, for `percentile`.
    pub percentiles: Option<[f64; 2]>,
    /// Raw value mapped to 0, per output channel (R, G, B).
    pub low: [f64; 3],
    /// Raw value mapped to 255, per output channel.
    pub high: [f64; 3],
}

impl Stretch {
    fn apply(&self, channel: usize, v: f64) -> u8 {
        let (lo, hi) = (self.low[channel], self.high[channel]);
        ((v - lo) / (hi - lo) * 255.0).round().clamp(0.0, 255.0) as u8
    }
}

/// Pixel ↔ WGS84 for one raster.
pub struct Georeference {
    transform: [f64; 6],
    inverse: [f64; 6],
    to_wgs84: CoordTransform,
    from_wgs84: CoordTransform,
    crs: String,
}

impl std::fmt::Debug for Georeference {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Georeference")
            .field("transform", &self.transform)
            .field("crs", &self.crs)
            .finish()
    }
}

impl Georeference {
    /// The geotransform (GDAL's six coefficients).
    pub fn transform(&self) -> [f64; 6] {
        self.transform
    }

    /// The raster's CRS, as `AUTHORITY:CODE` when it has one, else WKT.
    pub fn crs(&self) -> &str {
        &self.crs
    }

    /// GDAL pixel/line coordinates (pixel `(i, j)` spans `[i, i+1) x [j, j+1)`) → projected coordinates.
    pub fn pixel_to_projected(&self, x: f64, y: f64) -> (f64, f64) {
        affine(&self.transform, x, y)
    }

    /// Pixel/line coordinates → WGS84 `(lat, lon)` in degrees.
    pub fn pixel_to_wgs84(&self, x: f64, y: f64) -> Result<(f64, f64), String> {
        let (e, n) = self.pixel_to_projected(x, y);
        let (mut xs, mut ys) = ([e], [n]);
        self.to_wgs84
            .transform_coords(&mut xs, &mut ys, &mut [])
            .map_err(|err| format!("cannot transform pixel ({x}, {y}) to WGS84: {err}"))?;
        Ok((ys[0], xs[0]))
    }

    /// WGS84 `(lat, lon)` in degrees → pixel/line coordinates.
    pub fn wgs84_to_pixel(&self, lat: f64, lon: f64) -> Result<(f64, f64), String> {
        let (mut xs, mut ys) = ([lon], [lat]);
        self.from_wgs84
            .transform_coords(&mut xs, &mut ys, &mut [])
            .map_err(|err| format!("cannot transform ({lat}, {lon}) from WGS84: {err}"))?;
        Ok(affine(&self.inverse, xs[0], ys[0]))
    }
}

fn affine(t: &[f64; 6], x: f64, y: f64) -> (f64, f64) {
    (t[0] + x * t[1] + y * t[2], t[3] + x * t[4] + y * t[5])
}

/// The inverse of a geotransform, if it has one.
fn invert(t: &[f64; 6]) -> Option<[f64; 6]> {
    let det = t[1] * t[5] - t[2] * t[4];
    if det == 0.0 || !det.is_finite() {
        return None;
    }
    let (a, b, c, d) = (t[5] / det, -t[2] / det, -t[4] / det, t[1] / det);
    Some([-(a * t[0] + b * t[3]), a, b, -(c * t[0] + d * t[3]), c, d])
}

/// An open orthophoto, ready to give tiles.
pub struct Orthophoto {
    path: PathBuf,
    dataset: Dataset,
    bands: [usize; 3],
    alpha: Option<usize>,
    nodata: [Option<f64>; 3],
    data_type: String,
    grid: RasterGrid,
    georef: Georeference,
    stretch: Stretch,
    /// Longest side (pixels) a window is read at; larger windows come downsampled to half of it.
    max_read_px: u32,
}

impl std::fmt::Debug for Orthophoto {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Orthophoto")
            .field("path", &self.path)
            .field("bands", &self.bands)
            .field("grid", &self.grid)
            .finish()
    }
}

impl Orthophoto {
    /// Opens `path` and fixes how it is read (see the module's documentation).
    pub fn open(path: &Path, options: &OrthoOptions) -> Result<Orthophoto, BuildError> {
        let fail = |message: String| BuildError::Ortho {
            path: path.to_path_buf(),
            message,
        };
        if !path.exists() {
            return Err(fail("no such file".into()));
        }
        let dataset = Dataset::open(path).map_err(|e| fail(format!("GDAL cannot open it: {e}")))?;
        let (width, height) = dataset.raster_size();
        let count = dataset.raster_count();
        let interp: Vec<ColorInterpretation> = (1..=count)
            .map(|i| {
                dataset
                    .rasterband(i)
                    .map(|b| b.color_interpretation())
                    .unwrap_or(ColorInterpretation::Undefined)
            })
            .collect();
        let find = |c: ColorInterpretation| interp.iter().position(|i| *i == c).map(|i| i + 1);
        let bands = match options.bands {
            Some(b) => {
                if let Some(bad) = b.iter().find(|i| **i == 0 || **i > count) {
                    return Err(fail(format!(
                        "band {bad} does not exist (the file has {count})"
                    )));
                }
                b
            }
            None => match (
                find(ColorInterpretation::RedBand),
                find(ColorInterpretation::GreenBand),
                find(ColorInterpretation::BlueBand),
            ) {
                (Some(r), Some(g), Some(b)) => [r, g, b],
                _ if count >= 3 => {
                    log::warn!(
                        "{}: no red/green/blue colour interpretation; using bands 1,2,3 as RGB \
                         (pass --bands R,G,B to choose)",
                        path.display()
                    );
                    [1, 2, 3]
                }
                _ => {
                    return Err(fail(format!(
                    "{count} band(s): an RGB orthophoto needs at least 3 (3-4 bands, or --bands)"
                )))
                }
            },
        };
        let alpha = find(ColorInterpretation::AlphaBand).filter(|a| !bands.contains(a));
        let band = |i: usize| {
            dataset
                .rasterband(i)
                .map_err(|e| fail(format!("cannot read band {i}: {e}")))
        };
        let mut nodata = [None; 3];
        let mut types = Vec::new();
        for (c, &i) in bands.iter().enumerate() {
            let b = band(i)?;
            nodata[c] = options.nodata.or(b.no_data_value());
            types.push(b.band_type());
        }
        let data_type = types[0].name();
        let eight_bit = types.iter().all(|t| *t == GdalDataType::UInt8);

        let georef = georeference(&dataset, options.crs.as_deref(), path)?;
        let t = georef.transform;
        if t[2] != 0.0 || t[4] != 0.0 {
            return Err(fail(
                "the raster is rotated or sheared (geotransform terms 2 and 4 are not 0); \
                 warp it north-up first (gdalwarp)"
                    .into(),
            ));
        }
        let srs = srs_for(&dataset, options.crs.as_deref(), path)?;
        let (gsd_x_m, gsd_y_m) = if srs.is_geographic() {
            let (lat, _) = georef
                .pixel_to_wgs84(width as f64 / 2.0, height as f64 / 2.0)
                .map_err(fail)?;
            // Degrees per unit of the raster's angular axes, then metres per degree at its centre.
            let deg_per_unit = srs.angular_units().to_degrees();
            let (m_per_deg_lat, m_per_deg_lon) = vimgeo_onboard::geodesy::metres_per_degree(lat);
            (
                t[1].abs() * deg_per_unit * m_per_deg_lon,
                t[5].abs() * deg_per_unit * m_per_deg_lat,
            )
        } else {
            let m = srs.linear_units();
            (t[1].abs() * m, t[5].abs() * m)
        };
        let grid = RasterGrid {
            width: width as u32,
            height: height as u32,
            gsd_x_m,
            gsd_y_m,
        };
        let mut ortho = Orthophoto {
            path: path.to_path_buf(),
            dataset,
            bands,
            alpha,
            nodata,
            data_type: data_type.clone(),
            grid,
            georef,
            stretch: Stretch {
                kind: "none".into(),
                percentiles: None,
                low: [0.0; 3],
                high: [255.0; 3],
            },
            max_read_px: 1024,
        };
        if !eight_bit {
            let p = options.percentiles.unwrap_or([2.0, 98.0]);
            if !((0.0..100.0).contains(&p[0]) && p[0] < p[1] && p[1] <= 100.0) {
                return Err(fail(format!(
                    "stretch percentiles {p:?} are not 0 <= low < high <= 100"
                )));
            }
            ortho.stretch = ortho.percentile_stretch(p)?;
            log::info!(
                "{}: {data_type} data, stretch p{}-p{}: low {:?} high {:?}",
                path.display(),
                p[0],
                p[1],
                ortho.stretch.low,
                ortho.stretch.high
            );
        }
        Ok(ortho)
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Raster size and ground sample distance.
    pub fn grid(&self) -> &RasterGrid {
        &self.grid
    }

    /// Pixel ↔ WGS84.
    pub fn georef(&self) -> &Georeference {
        &self.georef
    }

    /// The stretch to 8 bits.
    pub fn stretch(&self) -> &Stretch {
        &self.stretch
    }

    /// The 1-based bands used as R, G, B.
    pub fn bands(&self) -> [usize; 3] {
        self.bands
    }

    /// GDAL's name of the first RGB band's data type (`Byte`, `UInt16`, ...).
    pub fn data_type(&self) -> &str {
        &self.data_type
    }

    /// Sets the longest window side read at full resolution (the builder uses 4x the model's input).
    pub fn set_max_read_px(&mut self, px: u32) {
        self.max_read_px = px.max(2);
    }

    /// Reads the window at `(x0, y0)` of `w x h` pixels into an RGB image of `out_w x out_h`, with the
    /// fraction of nodata pixels.
    pub fn read_window(
        &self,
        (x0, y0, w, h): (u32, u32, u32, u32),
        (out_w, out_h): (u32, u32),
    ) -> Result<SourceTile, BuildError> {
        let fail = |e: gdal::errors::GdalError| BuildError::Ortho {
            path: self.path.clone(),
            message: format!("cannot read window {w}x{h} at {x0},{y0}: {e}"),
        };
        let alg = (out_w < w || out_h < h).then_some(ResampleAlg::Average);
        let read = |i: usize| -> Result<Vec<f64>, BuildError> {
            let band = self.dataset.rasterband(i).map_err(fail)?;
            Ok(band
                .read_as::<f64>(
                    (x0 as isize, y0 as isize),
                    (w as usize, h as usize),
                    (out_w as usize, out_h as usize),
                    alg,
                )
                .map_err(fail)?
                .into_shape_and_vec()
                .1)
        };
        let planes = [
            read(self.bands[0])?,
            read(self.bands[1])?,
            read(self.bands[2])?,
        ];
        let alpha = self.alpha.map(read).transpose()?;
        let n = (out_w * out_h) as usize;
        let mut buf = Vec::with_capacity(n * 3);
        let mut nodata = 0usize;
        for p in 0..n {
            let mut missing = alpha.as_ref().is_some_and(|a| a[p] == 0.0);
            for (c, plane) in planes.iter().enumerate() {
                let v = plane[p];
                missing |= v.is_nan() || self.nodata[c] == Some(v);
                buf.push(self.stretch.apply(c, v));
            }
            nodata += usize::from(missing);
        }
        let image = RgbImage::from_raw(out_w, out_h, buf).expect("buffer is out_w x out_h x 3");
        Ok(SourceTile {
            image,
            nodata_fraction: nodata as f32 / n.max(1) as f32,
        })
    }

    /// The whole raster, downsampled so its longer side is at most `max_side` pixels.
    pub fn overview(&self, max_side: u32) -> Result<RgbImage, BuildError> {
        let (w, h) = (self.grid.width, self.grid.height);
        let s = (f64::from(max_side) / f64::from(w.max(h))).min(1.0);
        let out = (
            ((f64::from(w) * s).round() as u32).max(1),
            ((f64::from(h) * s).round() as u32).max(1),
        );
        Ok(self.read_window((0, 0, w, h), out)?.image)
    }

    /// SHA-256 of the imagery: the file, then its world file if it has one.
    pub fn sha256(&self) -> Result<String, BuildError> {
        let mut hasher = Sha256::new();
        let mut files = vec![self.path.clone()];
        files.extend(world_file(&self.path));
        for f in files {
            let io = |source| BuildError::Io {
                path: f.clone(),
                source,
            };
            let mut file = File::open(&f).map_err(io)?;
            let mut buf = vec![0u8; 1 << 20];
            loop {
                let n = file.read(&mut buf).map_err(io)?;
                if n == 0 {
                    break;
                }
                hasher.update(&buf[..n]);
            }
        }
        Ok(hex(&hasher.finalize()))
    }

    fn percentile_stretch(&self, p: [f64; 2]) -> Result<Stretch, BuildError> {
        // Percentiles from an overview read (nearest neighbour: raw values, no averaging).
        let (w, h) = (self.grid.width, self.grid.height);
        let s = (1024.0 / f64::from(w.max(h))).min(1.0);
        let (ow, oh) = (
            ((f64::from(w) * s).round() as usize).max(1),
            ((f64::from(h) * s).round() as usize).max(1),
        );
        let fail = |e: gdal::errors::GdalError| BuildError::Ortho {
            path: self.path.clone(),
            message: format!("cannot read an overview for the stretch: {e}"),
        };
        let mut low = [0.0; 3];
        let mut high = [0.0; 3];
        for c in 0..3 {
            let band = self.dataset.rasterband(self.bands[c]).map_err(fail)?;
            let (_, mut values) = band
                .read_as::<f64>((0, 0), (w as usize, h as usize), (ow, oh), None)
                .map_err(fail)?
                .into_shape_and_vec();
            values.retain(|v| !v.is_nan() && self.nodata[c] != Some(*v));
            if values.is_empty() {
                return Err(BuildError::Ortho {
                    path: self.path.clone(),
                    message: format!("band {} is all nodata", self.bands[c]),
                });
            }
            values.sort_by(f64::total_cmp);
            let at = |q: f64| values[((values.len() - 1) as f64 * q / 100.0).round() as usize];
            low[c] = at(p[0]);
            high[c] = at(p[1]).max(low[c] + 1.0);
        }
        Ok(Stretch {
            kind: "percentile".into(),
            percentiles: Some(p),
            low,
            high,
        })
    }
}

impl TileSource for Orthophoto {
    fn read_tile(&mut self, tile: &PlannedTile) -> Result<SourceTile, BuildError> {
        let (w, h) = (tile.width, tile.height);
        let longest = w.max(h);
        let out = if longest > self.max_read_px {
            let s = f64::from(self.max_read_px / 2) / f64::from(longest);
            (
                ((f64::from(w) * s).round() as u32).max(1),
                ((f64::from(h) * s).round() as u32).max(1),
            )
        } else {
            (w, h)
        };
        self.read_window((tile.x0, tile.y0, w, h), out)
    }
}

/// The world file next to `image`, if any (`.pgw`/`.tfw`/... : first and last letter of the extension +
/// `w`, or the extension + `w`, or `.wld`).
fn world_file(image: &Path) -> Option<PathBuf> {
    let ext = image.extension()?.to_str()?.to_ascii_lowercase();
    let mut candidates = Vec::new();
    if ext.len() >= 2 {
        let b = ext.as_bytes();
        candidates.push(format!("{}{}w", b[0] as char, b[ext.len() - 1] as char));
    }
    candidates.push(format!("{ext}w"));
    candidates.push("wld".into());
    candidates
        .into_iter()
        .flat_map(|c| [c.clone(), c.to_ascii_uppercase()])
        .map(|c| image.with_extension(c))
        .find(|p| p.is_file())
}

/// The raster's SRS: `crs` when given (logged if the file says otherwise), else the file's.
fn srs_for(dataset: &Dataset, crs: Option<&str>, path: &Path) -> Result<SpatialRef, BuildError> {
    let fail = |message: String| BuildError::Ortho {
        path: path.to_path_buf(),
        message,
    };
    let own = dataset.spatial_ref().ok();
    let mut srs = match crs {
        Some(def) => {
            let given = SpatialRef::from_definition(def)
                .map_err(|e| fail(format!("--crs {def} is not a CRS GDAL knows: {e}")))?;
            if let Some(own) = &own {
                if own.to_wkt().ok() != given.to_wkt().ok() && crs_name(own) != crs_name(&given) {
                    log::warn!(
                        "{}: the file says {}, --crs says {}; using --crs",
                        path.display(),
                        crs_name(own),
                        crs_name(&given)
                    );
                }
            }
            given
        }
        None => own.ok_or_else(|| {
            fail("no CRS in the file (an image with a world file?): pass --crs EPSG:<code>".into())
        })?,
    };
    srs.set_axis_mapping_strategy(AxisMappingStrategy::TraditionalGisOrder);
    Ok(srs)
}

fn crs_name(srs: &SpatialRef) -> String {
    match (srs.auth_name(), srs.auth_code()) {
        (Some(name), Ok(code)) => format!("{name}:{code}"),
        _ => srs.to_wkt().unwrap_or_else(|_| "unknown CRS".into()),
    }
}

fn georeference(
    dataset: &Dataset,
    crs: Option<&str>,
    path: &Path,
) -> Result<Georeference, BuildError> {
    let fail = |message: String| BuildError::Ortho {
        path: path.to_path_buf(),
        message,
    };
    let transform = dataset.geo_transform().map_err(|e| {
        fail(format!(
            "no georeference (neither GeoTIFF tags nor a world file): {e}"
        ))
    })?;
    let inverse = invert(&transform)
        .ok_or_else(|| fail(format!("geotransform {transform:?} cannot be inverted")))?;
    let srs = srs_for(dataset, crs, path)?;
    let mut wgs84 = SpatialRef::from_epsg(4326).map_err(|e| fail(format!("EPSG:4326: {e}")))?;
    wgs84.set_axis_mapping_strategy(AxisMappingStrategy::TraditionalGisOrder);
    let to_wgs84 = CoordTransform::new(&srs, &wgs84).map_err(|e| {
        fail(format!(
            "no transformation from {} to WGS84: {e}",
            crs_name(&srs)
        ))
    })?;
    let from_wgs84 = CoordTransform::new(&wgs84, &srs).map_err(|e| {
        fail(format!(
            "no transformation from WGS84 to {}: {e}",
            crs_name(&srs)
        ))
    })?;
    Ok(Georeference {
        transform,
        inverse,
        to_wgs84,
        from_wgs84,
        crs: crs_name(&srs),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn geotransforms_invert() {
        let t = [528000.05, 0.1, 0.0, 4978247.15, 0.0, -0.1];
        let inv = invert(&t).unwrap();
        let (e, n) = affine(&t, 123.5, 456.25);
        let (x, y) = affine(&inv, e, n);
        assert!((x - 123.5).abs() < 1e-6 && (y - 456.25).abs() < 1e-6);
        assert!(invert(&[0.0, 0.0, 0.0, 0.0, 0.0, 0.0]).is_none());
    }
}
