//! The preview an operator checks before a flight: the cache's tiles drawn over the orthophoto.
//!
//! Each tile is placed from what the cache stores (WGS84 centre and ground size) through the orthophoto's
//! georeference, so a cache that does not belong to the picture shows up as misplaced or missing squares.

use std::path::{Path, PathBuf};

use image::Rgb;

use super::error::BuildError;
use super::ortho::Orthophoto;
use vimgeo_onboard::encoder::RgbImage;

/// Outline colours, one per scale (cycled), and their names for the legend.
const PALETTE: [([u8; 3], &str); 6] = [
    ([255, 40, 40], "red"),
    ([255, 220, 0], "yellow"),
    ([0, 220, 255], "cyan"),
    ([255, 0, 255], "magenta"),
    ([60, 255, 60], "green"),
    ([255, 140, 0], "orange"),
];

/// One tile to draw, as the cache stores it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PreviewTile {
    /// Centre latitude, degrees (WGS84).
    pub lat: f64,
    /// Centre longitude, degrees (WGS84).
    pub lon: f64,
    /// Side on the ground, metres.
    pub ground_size_m: f64,
    /// Scale index.
    pub scale: u16,
}

/// What [`render_preview`] drew.
#[derive(Debug, Clone, PartialEq)]
pub struct PreviewReport {
    /// The PNG written.
    pub out: PathBuf,
    /// Its size, pixels.
    pub width: u32,
    /// Its height, pixels.
    pub height: u32,
    /// Tiles drawn.
    pub drawn: usize,
    /// Tiles whose centre falls outside the orthophoto (a cache of another place?).
    pub outside: usize,
    /// Colour name of each scale, in scale order.
    pub legend: Vec<&'static str>,
}

/// Draws `tiles` over `ortho` downsampled to at most `max_side` pixels and writes a PNG to `out`.
pub fn render_preview(
    ortho: &Orthophoto,
    tiles: &[PreviewTile],
    max_side: u32,
    out: &Path,
) -> Result<PreviewReport, BuildError> {
    let mut canvas = ortho.overview(max_side)?;
    let grid = ortho.grid();
    let s = f64::from(canvas.width()) / f64::from(grid.width);
    let thick = (canvas.width().max(canvas.height()) / 800).max(1);
    let scales = tiles
        .iter()
        .map(|t| usize::from(t.scale) + 1)
        .max()
        .unwrap_or(0);
    let (mut drawn, mut outside) = (0, 0);
    for t in tiles {
        let (cx, cy) = ortho
            .georef()
            .wgs84_to_pixel(t.lat, t.lon)
            .map_err(|message| BuildError::Ortho {
                path: ortho.path().to_path_buf(),
                message,
            })?;
        if !(0.0..=f64::from(grid.width)).contains(&cx)
            || !(0.0..=f64::from(grid.height)).contains(&cy)
        {
            outside += 1;
            continue;
        }
        let hx = t.ground_size_m / 2.0 / grid.gsd_x_m;
        let hy = t.ground_size_m / 2.0 / grid.gsd_y_m;
        let colour = PALETTE[usize::from(t.scale) % PALETTE.len()].0;
        outline(
            &mut canvas,
            ((cx - hx) * s, (cy - hy) * s, (cx + hx) * s, (cy + hy) * s),
            colour,
            thick,
        );
        drawn += 1;
    }
    canvas.save(out).map_err(|e| BuildError::Io {
        path: out.to_path_buf(),
        source: std::io::Error::other(e),
    })?;
    Ok(PreviewReport {
        out: out.to_path_buf(),
        width: canvas.width(),
        height: canvas.height(),
        drawn,
        outside,
        legend: (0..scales).map(|i| PALETTE[i % PALETTE.len()].1).collect(),
    })
}

/// Draws a rectangle outline `thick` pixels wide, blended 70 % over the picture.
fn outline(
    img: &mut RgbImage,
    (x0, y0, x1, y1): (f64, f64, f64, f64),
    colour: [u8; 3],
    thick: u32,
) {
    let (w, h) = (img.width() as i64, img.height() as i64);
    let (x0, y0) = (x0.round() as i64, y0.round() as i64);
    let (x1, y1) = ((x1.round() as i64) - 1, (y1.round() as i64) - 1);
    let mut put = |x: i64, y: i64| {
        if (0..w).contains(&x) && (0..h).contains(&y) {
            let p = img.get_pixel_mut(x as u32, y as u32);
            let blend = |a: u8, b: u8| ((f32::from(a) * 0.3 + f32::from(b) * 0.7).round()) as u8;
            *p = Rgb([
                blend(p[0], colour[0]),
                blend(p[1], colour[1]),
                blend(p[2], colour[2]),
            ]);
        }
    };
    for t in 0..i64::from(thick) {
        for x in x0..=x1 {
            put(x, y0 + t);
            put(x, y1 - t);
        }
        for y in (y0 + t + 1)..(y1 - t) {
            put(x0 + t, y);
            put(x1 - t, y);
        }
    }
}
