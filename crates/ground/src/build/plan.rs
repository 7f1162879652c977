//! The tiling plan: which windows of an orthophoto become cache tiles, at which ground sizes.
//!
//! Pure arithmetic on the raster's size and ground sample distance; no GDAL. Tiles are north-up squares on
//! the ground (a window of `footprint / gsd_x` x `footprint / gsd_y` pixels, so a geographic raster whose
//! pixels are not square on the ground still gives square ground tiles), one set per scale, laid out on a
//! grid whose step is `stride x footprint`. The last column and row are pinned to the raster's right and
//! bottom edges so the whole image is covered. Order: scale, then row, then column; a tile's index in the
//! plan is its identity during a build.
//!
//! "North-up" is the raster's grid north: in a projected CRS it differs from true north by the
//! meridian convergence (under 2 degrees inside a UTM zone at mid latitudes), which the plan ignores.

use std::fmt;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use vimgeo_onboard::util::hex;

/// The ground footprints of the tiles: one per scale, and the step between neighbours.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TilingSpec {
    /// Side of a tile on the ground, metres, one per scale (scale index = position in this list).
    pub footprints_m: Vec<f64>,
    /// Step between neighbouring tiles as a fraction of the footprint, in (0, 1].
    pub stride: f64,
}

/// Why a tiling spec or plan cannot be made.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PlanError {
    /// No footprint was given (neither `--footprint` nor a height band with a field of view).
    #[error("no tile footprint: give --footprint METRES or --height LOW..HIGH with --hfov-deg")]
    NoFootprint,
    /// A footprint is not a positive, finite number of metres.
    #[error("tile footprint {0} m is not a positive number of metres")]
    BadFootprint(f64),
    /// The stride is outside (0, 1].
    #[error("stride {0} is not a fraction of the footprint in (0, 1]")]
    BadStride(f64),
    /// The height band is empty, negative, or the field of view is outside (0, 180) degrees.
    #[error(
        "height band {low}..{high} m with a {hfov_deg} degree field of view gives no footprint"
    )]
    BadHeightBand {
        /// Lowest height, metres above ground.
        low: f64,
        /// Highest height, metres above ground.
        high: f64,
        /// Horizontal field of view, degrees.
        hfov_deg: f64,
    },
    /// The raster's ground sample distance is not positive and finite.
    #[error("{source_name}: ground sample distance {gsd_x} x {gsd_y} m is not usable")]
    BadGsd {
        /// The orthophoto.
        source_name: String,
        /// Metres per pixel across.
        gsd_x: f64,
        /// Metres per pixel down.
        gsd_y: f64,
    },
    /// The orthophoto is smaller than one tile.
    #[error(
        "{source_name} is {width} x {height} px ({ground_w:.1} x {ground_h:.1} m at {gsd:.3} m/px), smaller than \
         the {footprint_m:.1} m tile of scale {scale} ({tile_w} x {tile_h} px): use a smaller footprint or a \
         larger orthophoto"
    )]
    ImageSmallerThanFootprint {
        /// The orthophoto.
        source_name: String,
        /// Raster width, pixels.
        width: u32,
        /// Raster height, pixels.
        height: u32,
        /// Raster width on the ground, metres.
        ground_w: f64,
        /// Raster height on the ground, metres.
        ground_h: f64,
        /// Mean ground sample distance, metres per pixel.
        gsd: f64,
        /// The scale that does not fit.
        scale: usize,
        /// Its footprint, metres.
        footprint_m: f64,
        /// Its window width, pixels.
        tile_w: u32,
        /// Its window height, pixels.
        tile_h: u32,
    },
    /// A footprint is under two pixels: the tile would carry no picture.
    #[error(
        "{source_name}: the {footprint_m:.1} m footprint of scale {scale} is under 2 px at {gsd:.3} m/px; \
         use a larger footprint or finer imagery"
    )]
    FootprintUnderTwoPixels {
        /// The orthophoto.
        source_name: String,
        /// The scale.
        scale: usize,
        /// Its footprint, metres.
        footprint_m: f64,
        /// Mean ground sample distance, metres per pixel.
        gsd: f64,
    },
}

impl TilingSpec {
    /// Explicit footprints (metres), one per scale, sorted ascending.
    pub fn from_footprints(
        mut footprints_m: Vec<f64>,
        stride: f64,
    ) -> Result<TilingSpec, PlanError> {
        if footprints_m.is_empty() {
            return Err(PlanError::NoFootprint);
        }
        if let Some(&bad) = footprints_m.iter().find(|f| !(f.is_finite() && **f > 0.0)) {
            return Err(PlanError::BadFootprint(bad));
        }
        if !(stride.is_finite() && stride > 0.0 && stride <= 1.0) {
            return Err(PlanError::BadStride(stride));
        }
        footprints_m.sort_by(f64::total_cmp);
        footprints_m.dedup();
        Ok(TilingSpec {
            footprints_m,
            stride,
        })
    }

    /// The footprints a nadir camera with horizontal field of view `hfov_deg` sees from `scales` heights
    /// spread evenly over `low..=high` metres (one scale: the middle of the band):
    /// `2 h tan(hfov / 2)` each.
    pub fn from_height_band(
        low: f64,
        high: f64,
        hfov_deg: f64,
        scales: usize,
        stride: f64,
    ) -> Result<TilingSpec, PlanError> {
        let bad = || PlanError::BadHeightBand {
            low,
            high,
            hfov_deg,
        };
        if !(low.is_finite() && high.is_finite() && low > 0.0 && high >= low) {
            return Err(bad());
        }
        if !(hfov_deg > 0.0 && hfov_deg < 180.0) || scales == 0 {
            return Err(bad());
        }
        let half = (hfov_deg.to_radians() / 2.0).tan();
        let heights: Vec<f64> = if scales == 1 || high == low {
            vec![(low + high) / 2.0]
        } else {
            (0..scales)
                .map(|i| low + (high - low) * i as f64 / (scales - 1) as f64)
                .collect()
        };
        TilingSpec::from_footprints(heights.iter().map(|h| 2.0 * h * half).collect(), stride)
    }
}

/// The raster a plan is cut from: its size and how many metres on the ground one pixel covers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RasterGrid {
    /// Width, pixels.
    pub width: u32,
    /// Height, pixels.
    pub height: u32,
    /// Metres per pixel across (east-west).
    pub gsd_x_m: f64,
    /// Metres per pixel down (north-south).
    pub gsd_y_m: f64,
}

impl RasterGrid {
    /// The mean of the two ground sample distances, metres per pixel.
    pub fn gsd_m(&self) -> f64 {
        (self.gsd_x_m + self.gsd_y_m) / 2.0
    }
}

/// One tile: a pixel window of the raster and the ground it covers.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct PlannedTile {
    /// Scale index (position of its footprint in [`TilingSpec::footprints_m`]).
    pub scale: u16,
    /// Left column of the window.
    pub x0: u32,
    /// Top row of the window.
    pub y0: u32,
    /// Window width, pixels.
    pub width: u32,
    /// Window height, pixels.
    pub height: u32,
    /// Side of the tile on the ground, metres (the window's size times the GSD, after rounding to pixels).
    pub ground_size_m: f64,
}

impl PlannedTile {
    /// The window's centre in GDAL pixel/line coordinates (pixel `(i, j)` covers `[i, i+1) x [j, j+1)`).
    pub fn centre_px(&self) -> (f64, f64) {
        (
            f64::from(self.x0) + f64::from(self.width) / 2.0,
            f64::from(self.y0) + f64::from(self.height) / 2.0,
        )
    }
}

/// All tiles of one orthophoto at every scale, in build order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TilingPlan {
    /// The footprints and stride.
    pub spec: TilingSpec,
    /// The raster.
    pub grid: RasterGrid,
    /// The tiles: scale by scale, row by row, column by column.
    pub tiles: Vec<PlannedTile>,
}

impl TilingPlan {
    /// Lays out the tiles of `spec` over `grid`. `source_name` names the orthophoto in errors.
    pub fn new(
        grid: &RasterGrid,
        spec: &TilingSpec,
        source_name: &str,
    ) -> Result<TilingPlan, PlanError> {
        let (gx, gy) = (grid.gsd_x_m, grid.gsd_y_m);
        if !(gx.is_finite() && gy.is_finite() && gx > 0.0 && gy > 0.0) {
            return Err(PlanError::BadGsd {
                source_name: source_name.to_owned(),
                gsd_x: gx,
                gsd_y: gy,
            });
        }
        let mut tiles = Vec::new();
        for (scale, &footprint) in spec.footprints_m.iter().enumerate() {
            let tile_w = (footprint / gx).round();
            let tile_h = (footprint / gy).round();
            if tile_w < 2.0 || tile_h < 2.0 {
                return Err(PlanError::FootprintUnderTwoPixels {
                    source_name: source_name.to_owned(),
                    scale,
                    footprint_m: footprint,
                    gsd: grid.gsd_m(),
                });
            }
            let (tile_w, tile_h) = (tile_w as u32, tile_h as u32);
            if tile_w > grid.width || tile_h > grid.height {
                return Err(PlanError::ImageSmallerThanFootprint {
                    source_name: source_name.to_owned(),
                    width: grid.width,
                    height: grid.height,
                    ground_w: f64::from(grid.width) * gx,
                    ground_h: f64::from(grid.height) * gy,
                    gsd: grid.gsd_m(),
                    scale,
                    footprint_m: footprint,
                    tile_w,
                    tile_h,
                });
            }
            let step_x = ((footprint * spec.stride / gx).round() as u32).max(1);
            let step_y = ((footprint * spec.stride / gy).round() as u32).max(1);
            let ground_size_m = (f64::from(tile_w) * gx + f64::from(tile_h) * gy) / 2.0;
            let ys = offsets(grid.height, tile_h, step_y);
            let xs = offsets(grid.width, tile_w, step_x);
            for &y0 in &ys {
                for &x0 in &xs {
                    tiles.push(PlannedTile {
                        scale: scale as u16,
                        x0,
                        y0,
                        width: tile_w,
                        height: tile_h,
                        ground_size_m,
                    });
                }
            }
        }
        Ok(TilingPlan {
            spec: spec.clone(),
            grid: grid.clone(),
            tiles,
        })
    }

    /// Number of tiles.
    pub fn len(&self) -> usize {
        self.tiles.len()
    }

    /// Whether the plan has no tiles (never, for a plan [`TilingPlan::new`] made).
    pub fn is_empty(&self) -> bool {
        self.tiles.is_empty()
    }

    /// Number of tiles of each scale.
    pub fn tiles_per_scale(&self) -> Vec<usize> {
        let mut counts = vec![0; self.spec.footprints_m.len()];
        for t in &self.tiles {
            counts[usize::from(t.scale)] += 1;
        }
        counts
    }

    /// Lower-case hex SHA-256 of the plan (spec, raster grid and every tile): two builds with the same hash
    /// cut the same windows.
    pub fn sha256(&self) -> String {
        let json = serde_json::to_vec(self).expect("a tiling plan always serialises");
        hex(&Sha256::digest(&json))
    }
}

impl fmt::Display for TilingPlan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} tiles over {} x {} px at {:.3} m/px, stride {}:",
            self.len(),
            self.grid.width,
            self.grid.height,
            self.grid.gsd_m(),
            self.spec.stride
        )?;
        for (scale, (footprint, count)) in self
            .spec
            .footprints_m
            .iter()
            .zip(self.tiles_per_scale())
            .enumerate()
        {
            write!(f, " scale {scale} {footprint:.1} m x {count}")?;
        }
        Ok(())
    }
}

/// Window offsets along one axis: `0, step, 2 step, ...` while the window fits, then one pinned to the far
/// edge if the last regular one stops short of it.
fn offsets(extent: u32, window: u32, step: u32) -> Vec<u32> {
    let last = extent - window;
    let mut out: Vec<u32> = (0..=last).step_by(step as usize).collect();
    if out.last() != Some(&last) {
        out.push(last);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grid(w: u32, h: u32, gsd: f64) -> RasterGrid {
        RasterGrid {
            width: w,
            height: h,
            gsd_x_m: gsd,
            gsd_y_m: gsd,
        }
    }

    #[test]
    fn height_band_gives_footprints_at_low_mid_high() {
        let spec = TilingSpec::from_height_band(80.0, 150.0, 90.0, 3, 0.5).unwrap();
        let f = &spec.footprints_m;
        assert_eq!(f.len(), 3);
        // tan(45°) = 1: footprint = 2 h.
        for (got, want) in f.iter().zip([160.0, 230.0, 300.0]) {
            assert!((got - want).abs() < 1e-9, "{got} vs {want}");
        }
        let one = TilingSpec::from_height_band(80.0, 150.0, 90.0, 1, 0.5).unwrap();
        assert!((one.footprints_m[0] - 230.0).abs() < 1e-9);
    }

    #[test]
    fn bad_specs_are_refused() {
        assert_eq!(
            TilingSpec::from_footprints(vec![], 0.5),
            Err(PlanError::NoFootprint)
        );
        assert!(matches!(
            TilingSpec::from_footprints(vec![-1.0], 0.5),
            Err(PlanError::BadFootprint(_))
        ));
        assert!(matches!(
            TilingSpec::from_footprints(vec![10.0], 0.0),
            Err(PlanError::BadStride(_))
        ));
        assert!(matches!(
            TilingSpec::from_footprints(vec![10.0], 1.5),
            Err(PlanError::BadStride(_))
        ));
        assert!(matches!(
            TilingSpec::from_height_band(150.0, 80.0, 60.0, 3, 0.5),
            Err(PlanError::BadHeightBand { .. })
        ));
        assert!(matches!(
            TilingSpec::from_height_band(80.0, 150.0, 180.0, 3, 0.5),
            Err(PlanError::BadHeightBand { .. })
        ));
    }

    #[test]
    fn tiles_cover_the_raster_edge_to_edge() {
        // 100 x 70 px at 1 m, 20 m tiles, stride 0.5 → 10 px steps; x: 0..=80 (9), y: 0..=50 (6).
        let spec = TilingSpec::from_footprints(vec![20.0], 0.5).unwrap();
        let plan = TilingPlan::new(&grid(100, 70, 1.0), &spec, "test.tif").unwrap();
        assert_eq!(plan.len(), 9 * 6);
        let t = plan.tiles.last().unwrap();
        assert_eq!((t.x0 + t.width, t.y0 + t.height), (100, 70));
        assert_eq!(plan.tiles[0].centre_px(), (10.0, 10.0));
        assert!(plan
            .tiles
            .iter()
            .all(|t| t.width == 20 && t.ground_size_m == 20.0));
    }

    #[test]
    fn a_short_last_step_is_pinned_to_the_edge() {
        assert_eq!(
            offsets(105, 20, 10),
            vec![0, 10, 20, 30, 40, 50, 60, 70, 80, 85]
        );
        assert_eq!(offsets(20, 20, 10), vec![0]);
    }

    #[test]
    fn scales_come_in_order_and_are_counted() {
        let spec = TilingSpec::from_footprints(vec![40.0, 20.0], 1.0).unwrap();
        let plan = TilingPlan::new(&grid(80, 80, 1.0), &spec, "test.tif").unwrap();
        assert_eq!(plan.tiles_per_scale(), vec![16, 4]);
        assert!(plan.tiles[..16]
            .iter()
            .all(|t| t.scale == 0 && t.width == 20));
        assert!(plan.tiles[16..]
            .iter()
            .all(|t| t.scale == 1 && t.width == 40));
    }

    #[test]
    fn non_square_pixels_give_square_ground_tiles() {
        let g = RasterGrid {
            width: 200,
            height: 200,
            gsd_x_m: 0.5,
            gsd_y_m: 1.0,
        };
        let spec = TilingSpec::from_footprints(vec![50.0], 1.0).unwrap();
        let plan = TilingPlan::new(&g, &spec, "test.tif").unwrap();
        assert_eq!((plan.tiles[0].width, plan.tiles[0].height), (100, 50));
    }

    #[test]
    fn an_image_smaller_than_a_tile_is_refused_by_name() {
        let spec = TilingSpec::from_footprints(vec![50.0], 0.5).unwrap();
        let err = TilingPlan::new(&grid(40, 400, 1.0), &spec, "small.tif").unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains("small.tif") && msg.contains("40 x 400 px") && msg.contains("50 x 50 px"),
            "{msg}"
        );
    }

    #[test]
    fn the_hash_changes_with_the_plan() {
        let spec = TilingSpec::from_footprints(vec![20.0], 0.5).unwrap();
        let a = TilingPlan::new(&grid(100, 70, 1.0), &spec, "a").unwrap();
        let b = TilingPlan::new(&grid(100, 70, 1.0), &spec, "b").unwrap();
        let c = TilingPlan::new(&grid(100, 71, 1.0), &spec, "a").unwrap();
        assert_eq!(a.sha256(), b.sha256());
        assert_ne!(a.sha256(), c.sha256());
        assert_eq!(a.sha256().len(), 64);
    }
}
