//! The trajectory plot of a closed-loop run: the orthophoto (dimmed) as background, the true path, the
//! GNSS-lost span, and every fix the autopilot received as a dot coloured by whether its error stayed within
//! its reported accuracy. Drawn with the `image` crate only: lines, dots and a legend of coloured boxes
//! (no text; the colours are documented here and in sim/README.md).
//!
//! Colours: the true path is white where GNSS was healthy and orange where it was lost; fixes are green when
//! their error is within their reported accuracy and red when not; the legend in the top-left corner shows
//! white, orange, green and red boxes in that order. Fault windows are drawn as magenta ticks on the path.

use image::{Rgb, RgbImage};

/// True path, GNSS healthy.
pub const TRUTH_OK: Rgb<u8> = Rgb([255, 255, 255]);
/// True path, GNSS lost.
pub const TRUTH_LOST: Rgb<u8> = Rgb([255, 150, 0]);
/// A fix within its reported accuracy.
pub const FIX_OK: Rgb<u8> = Rgb([40, 220, 60]);
/// A fix whose error exceeded its reported accuracy.
pub const FIX_BAD: Rgb<u8> = Rgb([235, 30, 30]);
/// The path during an injected fault.
pub const FAULT: Rgb<u8> = Rgb([255, 0, 255]);

/// What to draw, in background pixel coordinates (x right, y down).
#[derive(Debug, Clone, Default)]
pub struct PlotData {
    /// The true path, one point per sample, with whether GNSS was healthy and whether a fault was active.
    pub truth: Vec<([f64; 2], bool, bool)>,
    /// Each received fix and whether its error stayed within its reported accuracy.
    pub fixes: Vec<([f64; 2], bool)>,
}

/// Draws `data` over `background`, scaled so its longer side is at most `max_side` pixels.
pub fn draw(background: &RgbImage, data: &PlotData, max_side: u32) -> RgbImage {
    let (w, h) = background.dimensions();
    let scale = (f64::from(max_side) / f64::from(w.max(h).max(1))).min(1.0);
    let (ow, oh) = (
        ((f64::from(w) * scale).round() as u32).max(1),
        ((f64::from(h) * scale).round() as u32).max(1),
    );
    let mut img =
        image::imageops::resize(background, ow, oh, image::imageops::FilterType::Triangle);
    // Dim the background so the marks stand out.
    for p in img.pixels_mut() {
        for c in p.0.iter_mut() {
            *c = (f32::from(*c) * 0.55) as u8;
        }
    }
    let s = |p: [f64; 2]| [p[0] * scale, p[1] * scale];
    for pair in data.truth.windows(2) {
        let (a, ok_a, _) = pair[0];
        let (b, ok_b, fault) = pair[1];
        let ok = ok_a && ok_b;
        let colour = if fault {
            FAULT
        } else if ok {
            TRUTH_OK
        } else {
            TRUTH_LOST
        };
        line(&mut img, s(a), s(b), 1.5, colour);
    }
    for (p, ok) in &data.fixes {
        disc(&mut img, s(*p), 2.5, if *ok { FIX_OK } else { FIX_BAD });
    }
    for (i, c) in [TRUTH_OK, TRUTH_LOST, FIX_OK, FIX_BAD, FAULT]
        .iter()
        .enumerate()
    {
        let x0 = 6 + 16 * i as i64;
        for y in 6..18 {
            for x in x0..x0 + 12 {
                put(&mut img, x, y, *c);
            }
        }
    }
    img
}

fn put(img: &mut RgbImage, x: i64, y: i64, c: Rgb<u8>) {
    if x >= 0
        && y >= 0
        && (x as u64) < u64::from(img.width())
        && (y as u64) < u64::from(img.height())
    {
        img.put_pixel(x as u32, y as u32, c);
    }
}

/// A filled disc of radius `r` pixels.
fn disc(img: &mut RgbImage, c: [f64; 2], r: f64, colour: Rgb<u8>) {
    if !(c[0].is_finite() && c[1].is_finite()) {
        return;
    }
    let (x0, x1) = ((c[0] - r).floor() as i64, (c[0] + r).ceil() as i64);
    let (y0, y1) = ((c[1] - r).floor() as i64, (c[1] + r).ceil() as i64);
    for y in y0..=y1 {
        for x in x0..=x1 {
            let (dx, dy) = (x as f64 + 0.5 - c[0], y as f64 + 0.5 - c[1]);
            if dx * dx + dy * dy <= r * r {
                put(img, x, y, colour);
            }
        }
    }
}

/// A line of `width` pixels from `a` to `b` (discs stamped along it).
fn line(img: &mut RgbImage, a: [f64; 2], b: [f64; 2], width: f64, colour: Rgb<u8>) {
    let len = (b[0] - a[0]).hypot(b[1] - a[1]);
    if !len.is_finite() || len > 1e5 {
        return;
    }
    let steps = (len * 2.0).ceil().max(1.0) as usize;
    for i in 0..=steps {
        let t = i as f64 / steps as f64;
        disc(
            img,
            [a[0] + (b[0] - a[0]) * t, a[1] + (b[1] - a[1]) * t],
            width / 2.0 + 0.2,
            colour,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn draws_path_fixes_and_legend_in_their_colours() {
        let bg = RgbImage::from_pixel(400, 200, Rgb([100, 100, 100]));
        let data = PlotData {
            truth: vec![
                ([20.0, 100.0], true, false),
                ([200.0, 100.0], true, false),
                ([380.0, 100.0], false, false),
            ],
            fixes: vec![([100.0, 150.0], true), ([300.0, 150.0], false)],
        };
        let img = draw(&bg, &data, 200);
        assert_eq!(img.dimensions(), (200, 100));
        assert_eq!(*img.get_pixel(50, 50), TRUTH_OK);
        assert_eq!(*img.get_pixel(150, 50), TRUTH_LOST);
        assert_eq!(*img.get_pixel(50, 75), FIX_OK);
        assert_eq!(*img.get_pixel(150, 75), FIX_BAD);
        assert_eq!(*img.get_pixel(10, 10), TRUTH_OK);
        assert_eq!(*img.get_pixel(26, 10), TRUTH_LOST);
        // The background is dimmed.
        assert_eq!(img.get_pixel(100, 30).0, [55, 55, 55]);
    }
}
