//! The one preprocessing path every engine uses: RGB8 image → NCHW float32 tensor, as the manifest says.
//!
//! Resize to the manifest's height x width with PIL's resampling (the exporter's reference pipeline is PIL
//! plus torchvision), then divide by `scale`, subtract `mean` and divide by `std` per channel.
//!
//! The resize reproduces PIL's `Image.resize` (`libImaging/Resample.c`) step for step: separable
//! convolution, the filter's support stretched by the shrink factor (antialiasing), coefficients in 22-bit
//! fixed point, horizontal pass first, and rounding to 8 bits after each pass. It therefore gives PIL's
//! pixels exactly, not just approximately; only the float normalisation that follows can differ by an ulp.

use image::RgbImage;

use super::manifest::{InputSpec, Interpolation};

/// Fixed-point precision of PIL's 8-bit resampling coefficients (`PRECISION_BITS` in Resample.c).
const PRECISION_BITS: u32 = 32 - 8 - 2;

/// Resizes `image` to `width` x `height` exactly as PIL's `Image.resize(size, filter)` does for RGB images.
/// Returns a copy when the size already matches.
pub fn resize_like_pil(
    image: &RgbImage,
    width: u32,
    height: u32,
    filter: Interpolation,
) -> RgbImage {
    let (w0, h0) = image.dimensions();
    let mut current = image.clone();
    // PIL resamples horizontally first, then vertically, each pass only when that side changes.
    if w0 != width {
        current = horizontal_pass(&current, width, filter);
    }
    if h0 != height {
        current = vertical_pass(&current, height, filter);
    }
    current
}

/// Writes the normalised NCHW tensor of one image (3 x height x width values) into `out`, resizing first if
/// the image is not the manifest's size.
///
/// # Panics
/// If `out` is not exactly 3 x height x width long (a caller bug, not a data error).
pub fn preprocess_into(image: &RgbImage, spec: &InputSpec, out: &mut [f32]) {
    let (w, h) = (spec.width, spec.height);
    let plane = (w as usize) * (h as usize);
    assert_eq!(
        out.len(),
        3 * plane,
        "preprocess_into: output slice is not 3 x {h} x {w}"
    );
    let resized;
    let image = if image.dimensions() == (w, h) {
        image
    } else {
        resized = resize_like_pil(image, w, h, spec.interpolation);
        &resized
    };
    let (r, rest) = out.split_at_mut(plane);
    let (g, b) = rest.split_at_mut(plane);
    let norm = |c: usize, v: u8| (f32::from(v) / spec.scale - spec.mean[c]) / spec.std[c];
    // (x / scale - mean) / std, in that order and in f32, as torchvision's ToTensor + Normalize compute it.
    for (i, px) in image.pixels().enumerate() {
        let [pr, pg, pb] = px.0;
        r[i] = norm(0, pr);
        g[i] = norm(1, pg);
        b[i] = norm(2, pb);
    }
}

/// Returns the normalised NCHW tensor (1 x 3 x height x width) of one image.
pub fn preprocess(image: &RgbImage, spec: &InputSpec) -> Vec<f32> {
    let mut out = vec![0.0; 3 * spec.width as usize * spec.height as usize];
    preprocess_into(image, spec, &mut out);
    out
}

/// PIL's filter kernels and their supports.
fn filter_support(filter: Interpolation) -> f64 {
    match filter {
        Interpolation::Bilinear => 1.0,
        Interpolation::Bicubic => 2.0,
    }
}

fn filter_weight(filter: Interpolation, x: f64) -> f64 {
    let x = x.abs();
    match filter {
        Interpolation::Bilinear => {
            if x < 1.0 {
                1.0 - x
            } else {
                0.0
            }
        }
        Interpolation::Bicubic => {
            // Keys' cubic with a = -0.5, PIL's `bicubic_filter`.
            const A: f64 = -0.5;
            if x < 1.0 {
                ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0
            } else if x < 2.0 {
                (((x - 5.0) * x + 8.0) * x - 4.0) * A
            } else {
                0.0
            }
        }
    }
}

/// One output sample's window into the input: first input index and fixed-point weights.
struct Taps {
    start: usize,
    weights: Vec<i32>,
}

/// PIL's `precompute_coeffs` followed by `normalize_coeffs_8bpc`, for the whole input extent.
fn coefficients(in_size: u32, out_size: u32, filter: Interpolation) -> Vec<Taps> {
    let scale = f64::from(in_size) / f64::from(out_size);
    let filterscale = scale.max(1.0);
    let support = filter_support(filter) * filterscale;
    let ss = 1.0 / filterscale;
    (0..out_size)
        .map(|xx| {
            let center = (f64::from(xx) + 0.5) * scale;
            // C's (int) truncates toward zero; the clamps make both ends non-negative where it matters.
            let xmin = ((center - support + 0.5) as i64).max(0) as usize;
            let xmax = ((center + support + 0.5) as i64).min(i64::from(in_size)) as usize;
            let mut w: Vec<f64> = (xmin..xmax)
                .map(|x| filter_weight(filter, (x as f64 - center + 0.5) * ss))
                .collect();
            let total: f64 = w.iter().sum();
            if total != 0.0 {
                w.iter_mut().for_each(|k| *k /= total);
            }
            let one = f64::from(1u32 << PRECISION_BITS);
            let weights = w
                .iter()
                .map(|&k| {
                    if k < 0.0 {
                        (-0.5 + k * one) as i32
                    } else {
                        (0.5 + k * one) as i32
                    }
                })
                .collect();
            Taps {
                start: xmin,
                weights,
            }
        })
        .collect()
}

/// PIL's `clip8`: drop the fixed-point fraction (the rounding half was added up front) and clamp.
fn clip8(acc: i64) -> u8 {
    (acc >> PRECISION_BITS).clamp(0, 255) as u8
}

fn horizontal_pass(image: &RgbImage, out_w: u32, filter: Interpolation) -> RgbImage {
    let (in_w, h) = image.dimensions();
    let taps = coefficients(in_w, out_w, filter);
    let src = image.as_raw();
    let mut out = RgbImage::new(out_w, h);
    let dst = &mut *out;
    let (in_row, out_row) = (in_w as usize * 3, out_w as usize * 3);
    for y in 0..h as usize {
        let row = &src[y * in_row..(y + 1) * in_row];
        for (x, t) in taps.iter().enumerate() {
            for c in 0..3 {
                let mut acc: i64 = 1 << (PRECISION_BITS - 1);
                for (k, &w) in t.weights.iter().enumerate() {
                    acc += i64::from(row[(t.start + k) * 3 + c]) * i64::from(w);
                }
                dst[y * out_row + x * 3 + c] = clip8(acc);
            }
        }
    }
    out
}

fn vertical_pass(image: &RgbImage, out_h: u32, filter: Interpolation) -> RgbImage {
    let (w, in_h) = image.dimensions();
    let taps = coefficients(in_h, out_h, filter);
    let src = image.as_raw();
    let mut out = RgbImage::new(w, out_h);
    let dst = &mut *out;
    let row = w as usize * 3;
    for (y, t) in taps.iter().enumerate() {
        for i in 0..row {
            let mut acc: i64 = 1 << (PRECISION_BITS - 1);
            for (k, &wt) in t.weights.iter().enumerate() {
                acc += i64::from(src[(t.start + k) * row + i]) * i64::from(wt);
            }
            dst[y * row + i] = clip8(acc);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A 7 x 5 test image with structure in both directions and channels.
    fn source() -> RgbImage {
        RgbImage::from_fn(7, 5, |x, y| {
            let v = |c: u32| ((x * x * 37 + y * 91 + c * 53 + x * y * 11) % 256) as u8;
            image::Rgb([v(0), v(1), v(2)])
        })
    }

    // Expected pixels from Pillow 13.0 (`Image.fromarray(source).resize((w, h), filter)`).
    const BICUBIC_3X4: [u8; 36] = [
        48, 109, 168, 112, 151, 169, 110, 126, 94, 139, 150, 160, 121, 136, 125, 149, 107, 114,
        133, 106, 119, 171, 132, 120, 102, 137, 144, 123, 172, 138, 120, 130, 154, 162, 112, 93,
    ];
    const BICUBIC_11X9: [u8; 297] = [
        0, 43, 96, 1, 54, 107, 38, 91, 144, 138, 191, 242, 138, 190, 251, 67, 120, 194, 57, 125,
        207, 95, 165, 145, 166, 219, 1, 97, 161, 85, 31, 106, 179, 21, 71, 134, 37, 94, 152, 65,
        127, 180, 95, 151, 209, 111, 167, 190, 116, 169, 142, 120, 114, 150, 123, 111, 124, 123,
        174, 54, 109, 119, 90, 97, 66, 131, 77, 129, 194, 105, 164, 223, 121, 185, 238, 26, 81,
        152, 64, 126, 87, 197, 250, 56, 225, 95, 56, 170, 21, 90, 53, 100, 146, 130, 51, 100, 211,
        1, 53, 142, 204, 124, 176, 170, 150, 190, 122, 181, 68, 101, 168, 61, 139, 137, 146, 199,
        103, 167, 109, 114, 151, 83, 119, 109, 159, 108, 149, 114, 117, 187, 66, 126, 178, 249, 28,
        213, 146, 49, 236, 38, 101, 151, 139, 199, 92, 163, 216, 69, 122, 175, 76, 129, 201, 121,
        174, 161, 191, 244, 46, 150, 203, 136, 104, 157, 228, 82, 144, 63, 111, 115, 103, 157, 78,
        154, 194, 77, 149, 181, 128, 125, 141, 194, 98, 163, 111, 117, 167, 98, 130, 134, 195, 127,
        73, 150, 156, 31, 98, 178, 12, 64, 130, 39, 111, 161, 99, 147, 181, 198, 46, 111, 221, 100,
        63, 188, 241, 47, 221, 103, 62, 199, 38, 113, 100, 119, 185, 41, 98, 145, 14, 68, 99, 71,
        124, 199, 111, 172, 144, 157, 214, 85, 141, 129, 141, 118, 115, 151, 102, 155, 128, 127,
        138, 161, 160, 98, 164, 186, 52, 121, 150, 120, 69, 117, 183, 37, 109, 162, 235, 156, 208,
        131, 193, 247, 29, 108, 178, 160, 57, 125, 205, 50, 103, 177, 70, 158, 219, 136, 135, 194,
        236, 18, 81, 214, 136, 26, 177, 249, 6,
    ];
    const BILINEAR_4X7: [u8; 84] = [
        23, 76, 129, 106, 159, 212, 95, 148, 149, 98, 151, 95, 71, 124, 177, 95, 148, 160, 142,
        119, 109, 122, 92, 98, 135, 157, 171, 99, 137, 139, 157, 115, 103, 141, 90, 112, 204, 148,
        66, 129, 131, 184, 107, 160, 162, 145, 198, 141, 99, 112, 127, 174, 117, 119, 166, 124,
        111, 79, 123, 145, 93, 140, 145, 153, 129, 120, 160, 115, 127, 112, 111, 106, 142, 195,
        138, 101, 154, 155, 119, 121, 174, 191, 135, 53,
    ];
    const BICUBIC_7X2: [u8; 42] = [
        79, 132, 123, 125, 117, 178, 86, 131, 184, 131, 184, 123, 143, 82, 135, 115, 176, 79, 126,
        73, 134, 91, 144, 135, 162, 154, 118, 150, 97, 150, 121, 174, 113, 159, 98, 151, 157, 121,
        121, 94, 139, 103,
    ];

    #[test]
    fn resize_reproduces_pillow_exactly() {
        let cases: [(u32, u32, Interpolation, &[u8]); 4] = [
            (3, 4, Interpolation::Bicubic, &BICUBIC_3X4), // shrink both ways (antialiased)
            (11, 9, Interpolation::Bicubic, &BICUBIC_11X9), // enlarge both ways
            (4, 7, Interpolation::Bilinear, &BILINEAR_4X7), // shrink one way, enlarge the other
            (7, 2, Interpolation::Bicubic, &BICUBIC_7X2), // vertical pass only
        ];
        for (w, h, filter, want) in cases {
            let got = resize_like_pil(&source(), w, h, filter);
            assert_eq!(got.dimensions(), (w, h));
            assert_eq!(got.as_raw().as_slice(), want, "{filter:?} to {w}x{h}");
        }
    }

    #[test]
    fn normalises_into_nchw_planes() {
        let spec = InputSpec {
            name: "image".into(),
            layout: "NCHW".into(),
            color: "RGB".into(),
            height: 5,
            width: 7,
            dtype: "float32".into(),
            scale: 255.0,
            mean: [0.485, 0.456, 0.406],
            std: [0.229, 0.224, 0.225],
            interpolation: Interpolation::Bicubic,
        };
        let image = source();
        let x = preprocess(&image, &spec);
        assert_eq!(x.len(), 3 * 35);
        let px = image.get_pixel(3, 2).0;
        for c in 0..3 {
            let want = (f32::from(px[c]) / 255.0 - spec.mean[c]) / spec.std[c];
            assert_eq!(x[c * 35 + 2 * 7 + 3], want);
        }
    }
}
