//! Photometric differences between the map and a camera frame, for the simulated camera.
//!
//! A real frame never looks like the orthophoto it is matched against: exposure, contrast, tone curve, white
//! balance, focus, sensor noise and compression all differ. [`Photometric`] is one such set of differences,
//! applied in place to an `image::RgbImage`; [`PhotometricRange`] draws one from a seeded RNG, so a simulated
//! flight is reproducible from its seed.
//!
//! Order of application (as in a camera pipeline): colour cast, gamma, contrast about mid-grey, brightness,
//! Gaussian blur (separable, edges clamped), Gaussian sensor noise (rand_distr normals), JPEG round trip through
//! `image`'s encoder and decoder.
//!
//! ```
//! use rand::SeedableRng;
//! use vimgeo_ground::sim::photometric::PhotometricRange;
//! let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
//! let mut img = image::RgbImage::from_pixel(64, 64, image::Rgb([90, 120, 60]));
//! let change = PhotometricRange::default().sample(&mut rng);
//! change.apply(&mut img, &mut rng).unwrap();
//! ```

use image::RgbImage;
use rand::RngExt;
use rand_distr::StandardNormal;
use thiserror::Error;

/// Errors of the photometric changes.
#[derive(Debug, Error)]
pub enum PhotometricError {
    /// A parameter that is not finite or outside its valid range.
    #[error("photometric parameter `{field}` = {value} is invalid: {why}")]
    Parameter {
        /// The field's name.
        field: &'static str,
        /// Its value.
        value: f64,
        /// What it must be.
        why: &'static str,
    },
    /// The JPEG round trip failed.
    #[error("JPEG round trip at quality {quality} failed: {source}")]
    Jpeg {
        /// The quality used.
        quality: u8,
        /// The codec's error.
        source: image::ImageError,
    },
}

/// One set of photometric changes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Photometric {
    /// Additive brightness, in 0..255 units.
    pub brightness: f32,
    /// Gain about mid-grey (128): 1 leaves contrast unchanged.
    pub contrast: f32,
    /// Tone curve exponent on [0, 1] intensities: out = in^gamma (> 1 darkens mid-tones).
    pub gamma: f32,
    /// Per-channel (R, G, B) gain: a colour cast / white-balance error.
    pub colour_gain: [f32; 3],
    /// Gaussian blur standard deviation in pixels (0: none).
    pub blur_sigma_px: f32,
    /// Additive Gaussian noise standard deviation, in 0..255 units (0: none).
    pub noise_sigma: f32,
    /// JPEG round trip at this quality (1..=100), or none.
    pub jpeg_quality: Option<u8>,
}

impl Photometric {
    /// No change at all.
    pub fn identity() -> Self {
        Photometric {
            brightness: 0.0,
            contrast: 1.0,
            gamma: 1.0,
            colour_gain: [1.0; 3],
            blur_sigma_px: 0.0,
            noise_sigma: 0.0,
            jpeg_quality: None,
        }
    }

    /// Whether [`Photometric::apply`] leaves every image unchanged.
    pub fn is_identity(&self) -> bool {
        *self == Self::identity()
    }

    /// Checks every field: finite, gamma > 0, contrast/gains/blur/noise >= 0, JPEG quality 1..=100.
    pub fn validate(&self) -> Result<(), PhotometricError> {
        let check = |field, v: f32, ok, why| check_parameter(field, f64::from(v), ok, why);
        check("brightness", self.brightness, true, "must be finite")?;
        check(
            "contrast",
            self.contrast,
            self.contrast >= 0.0,
            "must be >= 0",
        )?;
        check("gamma", self.gamma, self.gamma > 0.0, "must be > 0")?;
        for g in self.colour_gain {
            check("colour_gain", g, g >= 0.0, "must be >= 0")?;
        }
        check(
            "blur_sigma_px",
            self.blur_sigma_px,
            self.blur_sigma_px >= 0.0,
            "must be >= 0",
        )?;
        check(
            "noise_sigma",
            self.noise_sigma,
            self.noise_sigma >= 0.0,
            "must be >= 0",
        )?;
        if let Some(q) = self.jpeg_quality {
            if !(1..=100).contains(&q) {
                return Err(PhotometricError::Parameter {
                    field: "jpeg_quality",
                    value: f64::from(q),
                    why: "must be in 1..=100",
                });
            }
        }
        Ok(())
    }

    /// Applies the changes to `img` in place; `rng` drives the noise (same seed, same bytes).
    pub fn apply(
        &self,
        img: &mut RgbImage,
        rng: &mut impl rand::Rng,
    ) -> Result<(), PhotometricError> {
        self.validate()?;
        if self.is_identity() || img.width() == 0 || img.height() == 0 {
            return Ok(());
        }
        let (w, h) = (img.width() as usize, img.height() as usize);
        let mut buf: Vec<f32> = img.as_raw().iter().map(|&v| f32::from(v)).collect();
        for px in buf.chunks_exact_mut(3) {
            for (c, v) in px.iter_mut().enumerate() {
                let mut x = (*v * self.colour_gain[c] / 255.0).clamp(0.0, 1.0);
                if self.gamma != 1.0 {
                    x = x.powf(self.gamma);
                }
                *v = (x * 255.0 - 128.0) * self.contrast + 128.0 + self.brightness;
            }
        }
        if self.blur_sigma_px > 0.0 {
            gaussian_blur(&mut buf, w, h, self.blur_sigma_px);
        }
        if self.noise_sigma > 0.0 {
            add_noise(&mut buf, self.noise_sigma, rng);
        }
        store(img, &buf, self.jpeg_quality)
    }
}

/// Writes the working buffer back into `img` (rounded, clamped to 0..=255), then the JPEG round trip at
/// `jpeg_quality` if any: the last steps of a camera pipeline, shared with the appearance's camera part.
pub(crate) fn store(
    img: &mut RgbImage,
    buf: &[f32],
    jpeg_quality: Option<u8>,
) -> Result<(), PhotometricError> {
    for (out, v) in img.iter_mut().zip(buf) {
        *out = v.round().clamp(0.0, 255.0) as u8;
    }
    if let Some(quality) = jpeg_quality {
        jpeg_round_trip(img, quality)?;
    }
    Ok(())
}

impl Default for Photometric {
    fn default() -> Self {
        Self::identity()
    }
}

/// `Ok` when `value` is finite and `ok`, else the error naming `field`, the value and `why` (what it must be).
pub(crate) fn check_parameter(
    field: &'static str,
    value: f64,
    ok: bool,
    why: &'static str,
) -> Result<(), PhotometricError> {
    if value.is_finite() && ok {
        Ok(())
    } else {
        Err(PhotometricError::Parameter { field, value, why })
    }
}

/// The range each field of a [`Photometric`] is drawn from (uniformly, inclusive bounds as `[min, max]`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PhotometricRange {
    /// Additive brightness, 0..255 units.
    pub brightness: [f32; 2],
    /// Contrast gain.
    pub contrast: [f32; 2],
    /// Gamma.
    pub gamma: [f32; 2],
    /// Per-channel gain, each channel drawn independently.
    pub colour_gain: [f32; 2],
    /// Blur sigma (px).
    pub blur_sigma_px: [f32; 2],
    /// Noise sigma (0..255 units).
    pub noise_sigma: [f32; 2],
    /// JPEG quality range.
    pub jpeg_quality: [u8; 2],
    /// Probability (0..=1) that a frame is JPEG-compressed at all.
    pub jpeg_probability: f32,
}

impl Default for PhotometricRange {
    /// Mild changes: brightness ±20, contrast 0.8-1.2, gamma 0.9-1.1, cast ±8 %, blur 0-1.2 px, noise 0-6,
    /// JPEG 60-95 half the time.
    fn default() -> Self {
        PhotometricRange {
            brightness: [-20.0, 20.0],
            contrast: [0.8, 1.2],
            gamma: [0.9, 1.1],
            colour_gain: [0.92, 1.08],
            blur_sigma_px: [0.0, 1.2],
            noise_sigma: [0.0, 6.0],
            jpeg_quality: [60, 95],
            jpeg_probability: 0.5,
        }
    }
}

impl PhotometricRange {
    /// No change: every range collapsed onto the identity.
    pub fn identity() -> Self {
        PhotometricRange {
            brightness: [0.0; 2],
            contrast: [1.0; 2],
            gamma: [1.0; 2],
            colour_gain: [1.0; 2],
            blur_sigma_px: [0.0; 2],
            noise_sigma: [0.0; 2],
            jpeg_quality: [95, 95],
            jpeg_probability: 0.0,
        }
    }

    /// Draws one set of changes. Bounds given in the wrong order are swapped, never a panic; the result is
    /// checked by [`Photometric::apply`].
    pub fn sample(&self, rng: &mut impl rand::Rng) -> Photometric {
        let mut draw = |[lo, hi]: [f32; 2]| {
            let (lo, hi) = if lo <= hi { (lo, hi) } else { (hi, lo) };
            lo + (hi - lo) * rng.random::<f32>()
        };
        let brightness = draw(self.brightness);
        let contrast = draw(self.contrast);
        let gamma = draw(self.gamma);
        let colour_gain = [
            draw(self.colour_gain),
            draw(self.colour_gain),
            draw(self.colour_gain),
        ];
        let blur_sigma_px = draw(self.blur_sigma_px);
        let noise_sigma = draw(self.noise_sigma);
        let jpeg_quality = if rng.random::<f32>() < self.jpeg_probability {
            let [a, b] = self.jpeg_quality;
            Some(rng.random_range(a.min(b)..=a.max(b)))
        } else {
            None
        };
        Photometric {
            brightness,
            contrast,
            gamma,
            colour_gain,
            blur_sigma_px,
            noise_sigma,
            jpeg_quality,
        }
    }
}

/// Separable Gaussian blur of an interleaved RGB f32 buffer, edges clamped, kernel radius ceil(3 sigma).
pub(crate) fn gaussian_blur(buf: &mut [f32], w: usize, h: usize, sigma: f32) {
    let radius = (3.0 * sigma).ceil().max(1.0) as isize;
    let kernel: Vec<f32> = (-radius..=radius)
        .map(|i| (-(i * i) as f32 / (2.0 * sigma * sigma)).exp())
        .collect();
    let sum: f32 = kernel.iter().sum();
    let kernel: Vec<f32> = kernel.iter().map(|k| k / sum).collect();
    let mut tmp = vec![0.0f32; buf.len()];
    // Horizontal pass: buf -> tmp.
    for y in 0..h {
        for x in 0..w {
            for c in 0..3 {
                let mut acc = 0.0;
                for (k, &kv) in kernel.iter().enumerate() {
                    let xx = (x as isize + k as isize - radius).clamp(0, w as isize - 1) as usize;
                    acc += kv * buf[(y * w + xx) * 3 + c];
                }
                tmp[(y * w + x) * 3 + c] = acc;
            }
        }
    }
    // Vertical pass: tmp -> buf.
    for y in 0..h {
        for x in 0..w {
            for c in 0..3 {
                let mut acc = 0.0;
                for (k, &kv) in kernel.iter().enumerate() {
                    let yy = (y as isize + k as isize - radius).clamp(0, h as isize - 1) as usize;
                    acc += kv * tmp[(yy * w + x) * 3 + c];
                }
                buf[(y * w + x) * 3 + c] = acc;
            }
        }
    }
}

/// Adds independent Gaussian noise of standard deviation `sigma` to every sample.
fn add_noise(buf: &mut [f32], sigma: f32, rng: &mut impl rand::Rng) {
    add_noise_with(buf, rng, |_| sigma);
}

/// Adds independent Gaussian noise to every sample, of standard deviation `sigma_of(sample)`.
pub(crate) fn add_noise_with(
    buf: &mut [f32],
    rng: &mut impl rand::Rng,
    sigma_of: impl Fn(f32) -> f32,
) {
    for v in buf.iter_mut() {
        let z: f64 = rng.sample(StandardNormal);
        *v += sigma_of(*v) * z as f32;
    }
}

/// Encodes `img` as JPEG at `quality` and decodes it back in place.
fn jpeg_round_trip(img: &mut RgbImage, quality: u8) -> Result<(), PhotometricError> {
    let err = |source| PhotometricError::Jpeg { quality, source };
    let mut bytes = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut bytes, quality)
        .encode_image(&*img)
        .map_err(err)?;
    let decoded = image::load_from_memory_with_format(&bytes, image::ImageFormat::Jpeg)
        .map_err(err)?
        .to_rgb8();
    *img = decoded;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    /// A textured test image: smooth gradients plus a fine checker, mid-range values.
    fn scene() -> RgbImage {
        RgbImage::from_fn(96, 80, |x, y| {
            let checker = if (x + y) % 2 == 0 { 20 } else { 0 };
            image::Rgb([
                (60 + x + checker) as u8,
                (70 + y + checker) as u8,
                (100 + (x + y) / 2 + checker) as u8,
            ])
        })
    }

    fn means(img: &RgbImage) -> [f64; 3] {
        let mut m = [0.0; 3];
        for p in img.pixels() {
            for c in 0..3 {
                m[c] += f64::from(p[c]);
            }
        }
        let n = f64::from(img.width() * img.height());
        m.map(|v| v / n)
    }

    /// Mean squared difference between horizontally adjacent samples: high-frequency energy.
    fn hf_energy(img: &RgbImage) -> f64 {
        let mut e = 0.0;
        for y in 0..img.height() {
            for x in 1..img.width() {
                for c in 0..3 {
                    let d =
                        f64::from(img.get_pixel(x, y)[c]) - f64::from(img.get_pixel(x - 1, y)[c]);
                    e += d * d;
                }
            }
        }
        e
    }

    #[test]
    fn identity_leaves_the_image_unchanged() {
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let mut img = scene();
        assert!(Photometric::identity().is_identity());
        Photometric::identity().apply(&mut img, &mut rng).unwrap();
        assert_eq!(img, scene());
        let drawn = PhotometricRange::identity().sample(&mut rng);
        assert!(drawn.is_identity(), "{drawn:?}");
    }

    #[test]
    fn same_seed_same_bytes() {
        let run = |seed| {
            let mut rng = ChaCha8Rng::seed_from_u64(seed);
            let mut img = scene();
            let p = PhotometricRange {
                jpeg_probability: 1.0,
                noise_sigma: [3.0, 6.0],
                ..PhotometricRange::default()
            }
            .sample(&mut rng);
            p.apply(&mut img, &mut rng).unwrap();
            img
        };
        assert_eq!(run(42), run(42));
        assert_ne!(run(42), run(43));
    }

    #[test]
    fn brightness_contrast_and_cast_move_the_means() {
        let mut rng = ChaCha8Rng::seed_from_u64(2);
        let base = means(&scene());
        let apply = |p: Photometric, rng: &mut ChaCha8Rng| {
            let mut img = scene();
            p.apply(&mut img, rng).unwrap();
            means(&img)
        };
        let brighter = apply(
            Photometric {
                brightness: 15.0,
                ..Photometric::identity()
            },
            &mut rng,
        );
        for c in 0..3 {
            assert!(
                (brighter[c] - base[c] - 15.0).abs() < 0.5,
                "{brighter:?} {base:?}"
            );
        }
        // Contrast > 1 pushes means away from mid-grey: (m - 128) * 1.2 + 128.
        let contrast = apply(
            Photometric {
                contrast: 1.2,
                ..Photometric::identity()
            },
            &mut rng,
        );
        for c in 0..3 {
            let want = (base[c] - 128.0) * 1.2 + 128.0;
            assert!(
                (contrast[c] - want).abs() < 0.5,
                "{c}: {} vs {want}",
                contrast[c]
            );
        }
        let cast = apply(
            Photometric {
                colour_gain: [1.08, 1.0, 0.92],
                ..Photometric::identity()
            },
            &mut rng,
        );
        assert!((cast[0] - base[0] * 1.08).abs() < 0.5);
        assert!((cast[1] - base[1]).abs() < 1e-9);
        assert!((cast[2] - base[2] * 0.92).abs() < 0.5);
        // Gamma > 1 darkens.
        let dark = apply(
            Photometric {
                gamma: 1.1,
                ..Photometric::identity()
            },
            &mut rng,
        );
        assert!((0..3).all(|c| dark[c] < base[c] - 1.0), "{dark:?}");
    }

    #[test]
    fn blur_reduces_high_frequency_energy() {
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let mut img = scene();
        let before = hf_energy(&img);
        let before_mean = means(&img);
        Photometric {
            blur_sigma_px: 1.0,
            ..Photometric::identity()
        }
        .apply(&mut img, &mut rng)
        .unwrap();
        let after = hf_energy(&img);
        assert!(after < 0.2 * before, "{after} vs {before}");
        let m = means(&img);
        assert!((0..3).all(|c| (m[c] - before_mean[c]).abs() < 0.5));
    }

    #[test]
    fn noise_has_the_requested_std() {
        let mut rng = ChaCha8Rng::seed_from_u64(4);
        let flat = RgbImage::from_pixel(128, 128, image::Rgb([128, 128, 128]));
        let mut img = flat.clone();
        Photometric {
            noise_sigma: 5.0,
            ..Photometric::identity()
        }
        .apply(&mut img, &mut rng)
        .unwrap();
        let n = img.as_raw().len() as f64;
        let mean = img.as_raw().iter().map(|&v| f64::from(v)).sum::<f64>() / n;
        let var = img
            .as_raw()
            .iter()
            .map(|&v| (f64::from(v) - mean).powi(2))
            .sum::<f64>()
            / n;
        let std = var.sqrt();
        assert!((std - 5.0).abs() < 1.0, "std {std}");
        assert!((mean - 128.0).abs() < 0.2, "mean {mean}");
    }

    #[test]
    fn jpeg_changes_bytes_keeps_mean() {
        let mut rng = ChaCha8Rng::seed_from_u64(5);
        let mut img = scene();
        Photometric {
            jpeg_quality: Some(60),
            ..Photometric::identity()
        }
        .apply(&mut img, &mut rng)
        .unwrap();
        assert_ne!(img, scene());
        assert_eq!(img.dimensions(), scene().dimensions());
        let (a, b) = (means(&img), means(&scene()));
        assert!((0..3).all(|c| (a[c] - b[c]).abs() < 2.0), "{a:?} {b:?}");
    }

    #[test]
    fn invalid_parameters_are_errors() {
        let mut rng = ChaCha8Rng::seed_from_u64(6);
        let mut img = scene();
        for p in [
            Photometric {
                gamma: 0.0,
                ..Photometric::identity()
            },
            Photometric {
                noise_sigma: f32::NAN,
                ..Photometric::identity()
            },
            Photometric {
                blur_sigma_px: -1.0,
                ..Photometric::identity()
            },
            Photometric {
                jpeg_quality: Some(0),
                ..Photometric::identity()
            },
        ] {
            let err = p.apply(&mut img, &mut rng).unwrap_err();
            assert!(matches!(err, PhotometricError::Parameter { .. }), "{err}");
        }
        assert_eq!(img, scene());
    }

    #[test]
    fn default_range_samples_stay_in_range() {
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        let r = PhotometricRange::default();
        let mut jpeg = 0;
        for _ in 0..200 {
            let p = r.sample(&mut rng);
            p.validate().unwrap();
            assert!(p.brightness.abs() <= 20.0 && (0.8..=1.2).contains(&p.contrast));
            assert!(p.colour_gain.iter().all(|g| (0.92..=1.08).contains(g)));
            if let Some(q) = p.jpeg_quality {
                assert!((60..=95).contains(&q));
                jpeg += 1;
            }
        }
        assert!((60..140).contains(&jpeg), "{jpeg}");
    }
}
