//! "Another day, another sensor": how the world the simulated camera sees differs from the map the tile cache
//! was built from.
//!
//! A real flight matches today's frames against a map taken months or years earlier, by another sensor, in
//! another season and light, misregistered by a metre or more. [`Appearance`] is one such difference, in two
//! parts:
//!
//! - **the world** ([`Appearance::apply_world`]), applied once to the camera's orthophoto, never to the map:
//!   exposure and white balance, a tone curve, a change of season on vegetation (hue and saturation of the
//!   green class; a separate saturation for soil, rock and shadow), haze (a blend towards the airlight), and a
//!   misregistration ([`Appearance::shift_geotransform`]: the camera world moved against the map);
//! - **the camera** ([`Appearance::apply_frame`]), applied to every frame: vignetting, motion blur at the
//!   vehicle's speed over the exposure time, defocus, shot and read noise, JPEG compression.
//!
//! [`AppearancePreset`] names three strengths; [`Appearance::draw`] turns one into values with a seeded RNG
//! (the directions of every change and their sizes within the preset's range), so a flight is reproducible
//! from its seed. Every value can be overridden afterwards (a scenario's `[appearance]` table).
//!
//! The ranges and why (mild / strong):
//!
//! | parameter | mild | strong | why |
//! |---|---|---|---|
//! | exposure gain | 0.85-1.15 | 0.6-1.45 | auto-exposure between campaigns, ±1/4 stop; sun against overcast, ±1/2 stop |
//! | white balance, per channel | ±5 % | ±12 % | another sensor's colour response and auto white balance (a guess from survey-camera and drone-JPEG comparisons) |
//! | gamma | 0.9-1.1 | 0.75-1.3 | a survey orthophoto's linear-ish product against a drone camera's tone curve |
//! | vegetation hue | ±6° | 12-30° towards yellow | leaf colour from early to late summer; autumn / dry season (a guess: no multi-season pair of our maps exists) |
//! | vegetation saturation | 0.85-1.15 | 0.45-0.8 | same; dormant vegetation loses chroma |
//! | soil / rock / shadow saturation | 0.9-1.1 | 0.7-1.2 | wet against dry ground |
//! | haze | 0-0.06 | 0.08-0.2 | airlight at 30-150 m over tens of km of visibility is small; the strong value stands for a hazy satellite map |
//! | misregistration | 0.5-1.5 m | 2-4 m | a 10 cm aerial orthophoto is typically within 1 m absolute; satellite basemaps 3-5 m CE90 |
//! | vignetting at the corner | 0-15 % | 20-40 % | a small wide-angle lens, partly corrected by the camera pipeline |
//! | exposure time | 1-2 ms | 4-10 ms | sunny against overcast; the motion blur is speed x time over the ground pixel |
//! | defocus sigma | 0-0.5 px | 0.5-1.2 px | fixed-focus lenses and vibration |
//! | read noise sigma | 1-2 | 3-5 | 0..255 units; small-sensor cameras |
//! | shot noise gain | 0.05-0.15 | 0.25-0.5 | sigma = sqrt(gain x signal): photon noise scaled to 8 bits |
//! | JPEG quality | 85-95 | 55-75 | a camera's or a video link's compression |
//!
//! What a preset does to a real image, over 20 seeds on `tests/fixtures/forest-edge.png` (a 40 m crop of the
//! Yellowstone orthophoto), as this module's tests hold it: `mild` keeps a grey-level NCC with the clean image
//! of at least 0.97 and moves the colour histogram (half the L1 distance of 8 x 8 x 8 bins) by 0.05-0.8;
//! `strong` keeps an NCC of at least 0.75 and moves the histogram by 0.35-0.95. The values the presets give
//! inside these bands: sim/README.md, "Another day, another sensor".
//!
//! Not modelled: shadows that move with the sun (they need a surface model, which the shared imagery lacks),
//! seasonal changes of geometry (leaves falling, crops cut, snow), new or removed objects.

use image::RgbImage;
use rand::{Rng, RngExt};

use crate::sim::photometric::{
    add_noise_with, check_parameter, gaussian_blur, store, PhotometricError,
};

/// A named strength of the appearance change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AppearancePreset {
    /// The camera sees the map's own pixels.
    None,
    /// Another day of the same season, another camera: small colour and tone changes, a metre of
    /// misregistration, a good camera.
    Mild,
    /// Another season, another sensor: vegetation changes colour, haze, metres of misregistration, a cheap
    /// camera.
    Strong,
}

impl AppearancePreset {
    /// Every preset with its name, as written in scenarios and on the command line.
    pub const NAMES: &'static [(&'static str, AppearancePreset)] = &[
        ("none", AppearancePreset::None),
        ("mild", AppearancePreset::Mild),
        ("strong", AppearancePreset::Strong),
    ];

    /// The preset's name.
    pub fn name(self) -> &'static str {
        match self {
            AppearancePreset::None => "none",
            AppearancePreset::Mild => "mild",
            AppearancePreset::Strong => "strong",
        }
    }

    /// The preset called `name`.
    pub fn parse(name: &str) -> Option<AppearancePreset> {
        Self::NAMES
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, p)| *p)
    }
}

/// One appearance change: every value the world and the camera parts use. [`Appearance::none`] changes
/// nothing.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Appearance {
    /// Gain on linear intensity (1: none).
    pub exposure_gain: f32,
    /// Per-channel (R, G, B) gain: the white balance.
    pub white_balance: [f32; 3],
    /// Tone curve exponent on [0, 1] (1: none).
    pub gamma: f32,
    /// Hue shift of the vegetation class, degrees (positive: from green towards yellow).
    pub vegetation_hue_deg: f32,
    /// Saturation gain of the vegetation class.
    pub vegetation_saturation: f32,
    /// Saturation gain of everything else (soil, rock, shadow).
    pub ground_saturation: f32,
    /// Fraction of the airlight blended in, 0..1.
    pub haze: f32,
    /// The camera world's offset against the map, metres (east, north).
    pub misregistration_m: [f64; 2],
    /// Darkening at the image corner, 0..1 (radial, quadratic in the distance from the centre).
    pub vignetting: f32,
    /// Exposure time, seconds: motion blur of speed x time.
    pub exposure_time_s: f32,
    /// Defocus blur sigma, pixels.
    pub defocus_sigma_px: f32,
    /// Read noise sigma, 0..255 units.
    pub read_noise: f32,
    /// Shot noise: sigma = sqrt(gain x signal), signal in 0..255 units.
    pub shot_noise_gain: f32,
    /// JPEG round trip at this quality, or none.
    pub jpeg_quality: Option<u8>,
}

/// The airlight colour haze blends towards (a bright, slightly blue grey).
const AIRLIGHT: [f32; 3] = [200.0, 208.0, 218.0];

impl Appearance {
    /// No change at all.
    pub fn none() -> Self {
        Appearance {
            exposure_gain: 1.0,
            white_balance: [1.0; 3],
            gamma: 1.0,
            vegetation_hue_deg: 0.0,
            vegetation_saturation: 1.0,
            ground_saturation: 1.0,
            haze: 0.0,
            misregistration_m: [0.0; 2],
            vignetting: 0.0,
            exposure_time_s: 0.0,
            defocus_sigma_px: 0.0,
            read_noise: 0.0,
            shot_noise_gain: 0.0,
            jpeg_quality: None,
        }
    }

    /// Draws the values of `preset` from `rng` (see the module's table); `None` is [`Appearance::none`].
    pub fn draw(preset: AppearancePreset, rng: &mut impl Rng) -> Self {
        let mut u = |lo: f32, hi: f32| lo + (hi - lo) * rng.random::<f32>();
        match preset {
            AppearancePreset::None => Self::none(),
            AppearancePreset::Mild => {
                let wb = [u(0.95, 1.05), u(0.95, 1.05), u(0.95, 1.05)];
                let (dist, dir) = (u(0.5, 1.5), u(0.0, std::f32::consts::TAU));
                Appearance {
                    exposure_gain: u(0.85, 1.15),
                    white_balance: wb,
                    gamma: u(0.9, 1.1),
                    vegetation_hue_deg: u(-6.0, 6.0),
                    vegetation_saturation: u(0.85, 1.15),
                    ground_saturation: u(0.9, 1.1),
                    haze: u(0.0, 0.06),
                    misregistration_m: [f64::from(dist * dir.sin()), f64::from(dist * dir.cos())],
                    vignetting: u(0.0, 0.15),
                    exposure_time_s: u(0.001, 0.002),
                    defocus_sigma_px: u(0.0, 0.5),
                    read_noise: u(1.0, 2.0),
                    shot_noise_gain: u(0.05, 0.15),
                    jpeg_quality: Some(u(85.0, 95.0).round() as u8),
                }
            }
            AppearancePreset::Strong => {
                let wb = [u(0.88, 1.12), u(0.88, 1.12), u(0.88, 1.12)];
                let (dist, dir) = (u(2.0, 4.0), u(0.0, std::f32::consts::TAU));
                let exposure = if u(0.0, 1.0) < 0.5 {
                    u(0.6, 0.85)
                } else {
                    u(1.15, 1.45)
                };
                Appearance {
                    exposure_gain: exposure,
                    white_balance: wb,
                    gamma: u(0.75, 1.3),
                    vegetation_hue_deg: u(12.0, 30.0),
                    vegetation_saturation: u(0.45, 0.8),
                    ground_saturation: u(0.7, 1.2),
                    haze: u(0.08, 0.2),
                    misregistration_m: [f64::from(dist * dir.sin()), f64::from(dist * dir.cos())],
                    vignetting: u(0.2, 0.4),
                    exposure_time_s: u(0.004, 0.010),
                    defocus_sigma_px: u(0.5, 1.2),
                    read_noise: u(3.0, 5.0),
                    shot_noise_gain: u(0.25, 0.5),
                    jpeg_quality: Some(u(55.0, 75.0).round() as u8),
                }
            }
        }
    }

    /// Whether the world part changes no pixel (the misregistration aside).
    pub fn world_is_identity(&self) -> bool {
        let n = Self::none();
        self.exposure_gain == n.exposure_gain
            && self.white_balance == n.white_balance
            && self.gamma == n.gamma
            && self.vegetation_hue_deg == 0.0
            && self.vegetation_saturation == 1.0
            && self.ground_saturation == 1.0
            && self.haze == 0.0
    }

    /// Checks every value: finite, gains and sigmas >= 0, gamma > 0, haze and vignetting in 0..=1, JPEG
    /// quality in 1..=100. `field` names the value in the error.
    pub fn validate(&self) -> Result<(), PhotometricError> {
        let check = check_parameter;
        let nonneg = |field, v: f32| check(field, f64::from(v), v >= 0.0, "must be >= 0");
        let unit = |field, v: f32| {
            check(
                field,
                f64::from(v),
                (0.0..=1.0).contains(&v),
                "must be in 0..=1",
            )
        };
        nonneg("exposure_gain", self.exposure_gain)?;
        for g in self.white_balance {
            nonneg("white_balance", g)?;
        }
        check(
            "gamma",
            f64::from(self.gamma),
            self.gamma > 0.0,
            "must be > 0",
        )?;
        check(
            "vegetation_hue_deg",
            f64::from(self.vegetation_hue_deg),
            true,
            "must be finite",
        )?;
        nonneg("vegetation_saturation", self.vegetation_saturation)?;
        nonneg("ground_saturation", self.ground_saturation)?;
        unit("haze", self.haze)?;
        for m in self.misregistration_m {
            check("misregistration_m", m, true, "must be finite")?;
        }
        unit("vignetting", self.vignetting)?;
        nonneg("exposure_time_s", self.exposure_time_s)?;
        nonneg("defocus_sigma_px", self.defocus_sigma_px)?;
        nonneg("read_noise", self.read_noise)?;
        nonneg("shot_noise_gain", self.shot_noise_gain)?;
        if let Some(q) = self.jpeg_quality {
            check(
                "jpeg_quality",
                f64::from(q),
                (1..=100).contains(&q),
                "must be in 1..=100",
            )?;
        }
        Ok(())
    }

    /// The world part, in place on the camera's orthophoto: exposure, white balance, tone curve, season by
    /// colour class, haze. Deterministic (no randomness).
    pub fn apply_world(&self, img: &mut RgbImage) -> Result<(), PhotometricError> {
        self.validate()?;
        if self.world_is_identity() {
            return Ok(());
        }
        let cos_h = self.vegetation_hue_deg.to_radians().cos();
        let sin_h = self.vegetation_hue_deg.to_radians().sin();
        for px in img.pixels_mut() {
            let mut c = [0f32; 3];
            for k in 0..3 {
                let lin = (f32::from(px[k]) / 255.0 * self.exposure_gain * self.white_balance[k])
                    .clamp(0.0, 1.0);
                c[k] = lin.powf(self.gamma);
            }
            // Season by colour class: the excess-green index 2g - r - b, softly thresholded, says how much a
            // pixel is vegetation; hue and saturation change about the pixel's grey axis (a rotation in the
            // chroma plane of YIQ-like opponent axes), so brightness is kept.
            let exg = 2.0 * c[1] - c[0] - c[2];
            let veg = smoothstep(0.02, 0.12, exg);
            let y = 0.299 * c[0] + 0.587 * c[1] + 0.114 * c[2];
            let (i, q) = (
                0.596 * c[0] - 0.274 * c[1] - 0.322 * c[2],
                0.211 * c[0] - 0.523 * c[1] + 0.312 * c[2],
            );
            // Green sits at negative I and Q; a positive hue shift turns it towards yellow (negative Q, I up).
            let (iv, qv) = (cos_h * i + sin_h * q, -sin_h * i + cos_h * q);
            let s_veg = self.vegetation_saturation;
            let s_ground = self.ground_saturation;
            let i2 = veg * iv * s_veg + (1.0 - veg) * i * s_ground;
            let q2 = veg * qv * s_veg + (1.0 - veg) * q * s_ground;
            let rgb = [
                y + 0.956 * i2 + 0.621 * q2,
                y - 0.272 * i2 - 0.647 * q2,
                y - 1.106 * i2 + 1.703 * q2,
            ];
            for k in 0..3 {
                let v = rgb[k].clamp(0.0, 1.0) * 255.0;
                let hazy = v * (1.0 - self.haze) + AIRLIGHT[k] * self.haze;
                px[k] = hazy.round().clamp(0.0, 255.0) as u8;
            }
        }
        Ok(())
    }

    /// `transform` (GDAL's six coefficients) moved by the misregistration: the camera world's pixel that
    /// shows a place lies `misregistration_m` (east, north) away from where the map has it.
    pub fn shift_geotransform(&self, transform: [f64; 6]) -> [f64; 6] {
        let mut t = transform;
        t[0] += self.misregistration_m[0];
        t[3] += self.misregistration_m[1];
        t
    }

    /// The camera part, in place on one frame: vignetting, motion blur of `blur_px` (the image shift during
    /// the exposure, pixels, along `blur_dir` in image x, y), defocus, shot and read noise (from `rng`), JPEG.
    pub fn apply_frame(
        &self,
        img: &mut RgbImage,
        blur_px: f32,
        blur_dir: [f32; 2],
        rng: &mut impl Rng,
    ) -> Result<(), PhotometricError> {
        self.validate()?;
        let (w, h) = (img.width() as usize, img.height() as usize);
        if w == 0 || h == 0 {
            return Ok(());
        }
        let mut buf: Vec<f32> = img.as_raw().iter().map(|&v| f32::from(v)).collect();
        if self.vignetting > 0.0 {
            let (cx, cy) = ((w as f32 - 1.0) / 2.0, (h as f32 - 1.0) / 2.0);
            let r2_corner = cx * cx + cy * cy;
            for (p, px) in buf.chunks_exact_mut(3).enumerate() {
                let (x, y) = ((p % w) as f32 - cx, (p / w) as f32 - cy);
                let g = 1.0 - self.vignetting * (x * x + y * y) / r2_corner;
                px.iter_mut().for_each(|v| *v *= g);
            }
        }
        if blur_px.is_finite() && blur_px >= 0.5 {
            motion_blur(&mut buf, w, h, blur_px, blur_dir);
        }
        if self.defocus_sigma_px > 0.0 {
            gaussian_blur(&mut buf, w, h, self.defocus_sigma_px);
        }
        if self.read_noise > 0.0 || self.shot_noise_gain > 0.0 {
            let (read, shot) = (self.read_noise, self.shot_noise_gain);
            add_noise_with(&mut buf, rng, |signal| {
                (read * read + shot * signal.max(0.0)).sqrt()
            });
        }
        store(img, &buf, self.jpeg_quality)
    }
}

impl Default for Appearance {
    fn default() -> Self {
        Self::none()
    }
}

fn smoothstep(lo: f32, hi: f32, x: f32) -> f32 {
    let t = ((x - lo) / (hi - lo)).clamp(0.0, 1.0);
    t * t * (3.0 - 2.0 * t)
}

/// A box blur along a line of `length` pixels in direction `dir` (image x, y), centred, bilinear samples
/// one pixel apart, edges clamped.
fn motion_blur(buf: &mut [f32], w: usize, h: usize, length: f32, dir: [f32; 2]) {
    let norm = (dir[0] * dir[0] + dir[1] * dir[1]).sqrt();
    let (dx, dy) = if norm > 0.0 {
        (dir[0] / norm, dir[1] / norm)
    } else {
        (1.0, 0.0)
    };
    let n = length.ceil() as usize + 1;
    let offsets: Vec<(f32, f32)> = (0..n)
        .map(|k| {
            let s = (k as f32 / (n - 1) as f32 - 0.5) * length;
            (s * dx, s * dy)
        })
        .collect();
    let src = buf.to_vec();
    let at = |x: isize, y: isize, c: usize| {
        let x = x.clamp(0, w as isize - 1) as usize;
        let y = y.clamp(0, h as isize - 1) as usize;
        src[(y * w + x) * 3 + c]
    };
    for y in 0..h {
        for x in 0..w {
            let mut acc = [0f32; 3];
            for &(ox, oy) in &offsets {
                let (fx, fy) = (x as f32 + ox, y as f32 + oy);
                let (x0, y0) = (fx.floor(), fy.floor());
                let (ax, ay) = (fx - x0, fy - y0);
                let (x0, y0) = (x0 as isize, y0 as isize);
                for (c, a) in acc.iter_mut().enumerate() {
                    let top = at(x0, y0, c) * (1.0 - ax) + at(x0 + 1, y0, c) * ax;
                    let bottom = at(x0, y0 + 1, c) * (1.0 - ax) + at(x0 + 1, y0 + 1, c) * ax;
                    *a += top * (1.0 - ay) + bottom * ay;
                }
            }
            for c in 0..3 {
                buf[(y * w + x) * 3 + c] = acc[c] / n as f32;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    fn forest() -> RgbImage {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../tests/fixtures/forest-edge.png");
        image::open(&path)
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
            .to_rgb8()
    }

    /// The full change of one preset: world, then camera (a 5 m/s, 30 m pass: ~0.1-0.7 px of blur).
    fn changed(preset: AppearancePreset, seed: u64) -> RgbImage {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let a = Appearance::draw(preset, &mut rng);
        let mut img = forest();
        a.apply_world(&mut img).unwrap();
        let blur = 5.0 * a.exposure_time_s / 0.066;
        a.apply_frame(&mut img, blur, [1.0, 0.3], &mut rng).unwrap();
        img
    }

    fn grey(img: &RgbImage) -> Vec<f64> {
        img.pixels()
            .map(|p| 0.299 * f64::from(p[0]) + 0.587 * f64::from(p[1]) + 0.114 * f64::from(p[2]))
            .collect()
    }

    fn ncc(a: &[f64], b: &[f64]) -> f64 {
        let n = a.len() as f64;
        let (ma, mb) = (a.iter().sum::<f64>() / n, b.iter().sum::<f64>() / n);
        let (mut ab, mut aa, mut bb) = (0.0, 0.0, 0.0);
        for (x, y) in a.iter().zip(b) {
            ab += (x - ma) * (y - mb);
            aa += (x - ma) * (x - ma);
            bb += (y - mb) * (y - mb);
        }
        ab / (aa * bb).sqrt()
    }

    /// Half the L1 distance between the two images' 8 x 8 x 8 colour histograms: 0 same colours, 1 disjoint.
    fn histogram_distance(a: &RgbImage, b: &RgbImage) -> f64 {
        let hist = |img: &RgbImage| {
            let mut h = vec![0f64; 512];
            for p in img.pixels() {
                h[(usize::from(p[0]) >> 5) * 64
                    + (usize::from(p[1]) >> 5) * 8
                    + (usize::from(p[2]) >> 5)] += 1.0;
            }
            let n = f64::from(img.width() * img.height());
            h.iter_mut().for_each(|v| *v /= n);
            h
        };
        let (ha, hb) = (hist(a), hist(b));
        0.5 * ha.iter().zip(&hb).map(|(x, y)| (x - y).abs()).sum::<f64>()
    }

    #[test]
    fn none_leaves_every_pixel_unchanged() {
        assert_eq!(changed(AppearancePreset::None, 3), forest());
        let a = Appearance::none();
        assert_eq!(
            a.shift_geotransform([1.0, 0.1, 0.0, 2.0, 0.0, -0.1]),
            [1.0, 0.1, 0.0, 2.0, 0.0, -0.1]
        );
    }

    #[test]
    fn the_same_seed_gives_the_same_bytes_and_another_seed_other_ones() {
        for preset in [AppearancePreset::Mild, AppearancePreset::Strong] {
            assert_eq!(
                changed(preset, 11),
                changed(preset, 11),
                "{}",
                preset.name()
            );
            assert_ne!(
                changed(preset, 11),
                changed(preset, 12),
                "{}",
                preset.name()
            );
        }
    }

    /// Each preset changes a real forest image by an amount inside the documented band (20 seeds on
    /// tests/fixtures/forest-edge.png; the bands hold the extremes with a margin).
    #[test]
    fn each_preset_changes_the_image_by_its_documented_amount() {
        let clean = forest();
        let g0 = grey(&clean);
        let stats = |preset| {
            let (mut ncc_min, mut ncc_max, mut h_min, mut h_max) =
                (f64::MAX, f64::MIN, f64::MAX, f64::MIN);
            for seed in 0..20 {
                let img = changed(preset, seed);
                let c = ncc(&g0, &grey(&img));
                let h = histogram_distance(&clean, &img);
                (ncc_min, ncc_max) = (ncc_min.min(c), ncc_max.max(c));
                (h_min, h_max) = (h_min.min(h), h_max.max(h));
            }
            (ncc_min, ncc_max, h_min, h_max)
        };
        let mild = stats(AppearancePreset::Mild);
        let strong = stats(AppearancePreset::Strong);
        eprintln!(
            "mild: ncc {:.3}..{:.3}, histogram {:.3}..{:.3}",
            mild.0, mild.1, mild.2, mild.3
        );
        eprintln!(
            "strong: ncc {:.3}..{:.3}, histogram {:.3}..{:.3}",
            strong.0, strong.1, strong.2, strong.3
        );
        // Mild keeps the structure (NCC of grey levels) almost whole and moves the colours a little.
        assert!(
            mild.0 > MILD_NCC_MIN && mild.1 < 0.9999,
            "mild NCC {:?}",
            (mild.0, mild.1)
        );
        assert!(
            mild.2 > MILD_HIST[0] && mild.3 < MILD_HIST[1],
            "mild histogram {:?}",
            (mild.2, mild.3)
        );
        // Strong loses more structure and moves colours a lot, always more than mild at its worst.
        assert!(
            strong.0 > STRONG_NCC_MIN && strong.1 < mild.1,
            "strong NCC {:?}",
            (strong.0, strong.1)
        );
        assert!(
            strong.2 > STRONG_HIST[0] && strong.3 < STRONG_HIST[1],
            "strong histogram {:?}",
            (strong.2, strong.3)
        );
        assert!(strong.2 > mild.2, "strong moves colours more than mild");
    }

    // The documented bands (module doc), around the values the presets give (sim/README.md) with a margin.
    const MILD_NCC_MIN: f64 = 0.97;
    const MILD_HIST: [f64; 2] = [0.05, 0.8];
    const STRONG_NCC_MIN: f64 = 0.75;
    const STRONG_HIST: [f64; 2] = [0.35, 0.95];

    #[test]
    fn the_season_moves_vegetation_not_grey_ground() {
        let a = Appearance {
            vegetation_hue_deg: 30.0,
            vegetation_saturation: 0.6,
            ..Appearance::none()
        };
        let mut img = RgbImage::from_fn(2, 1, |x, _| {
            if x == 0 {
                image::Rgb([60, 120, 40])
            } else {
                image::Rgb([120, 120, 120])
            }
        });
        a.apply_world(&mut img).unwrap();
        let green = img.get_pixel(0, 0);
        // Towards yellow: red rises relative to green; grey stays grey.
        assert!(
            f32::from(green[0]) / f32::from(green[1]) > 60.0 / 120.0 + 0.1,
            "{green:?}"
        );
        assert_eq!(*img.get_pixel(1, 0), image::Rgb([120, 120, 120]));
    }

    #[test]
    fn motion_blur_smears_along_the_motion_only() {
        let mut img = RgbImage::new(21, 21);
        img.put_pixel(10, 10, image::Rgb([255, 255, 255]));
        let a = Appearance::none();
        let mut rng = ChaCha8Rng::seed_from_u64(0);
        a.apply_frame(&mut img, 4.0, [1.0, 0.0], &mut rng).unwrap();
        assert!(img.get_pixel(8, 10)[0] > 0 && img.get_pixel(12, 10)[0] > 0);
        assert_eq!(img.get_pixel(10, 8)[0], 0);
        assert_eq!(img.get_pixel(10, 12)[0], 0);
    }

    #[test]
    fn bad_values_are_refused_naming_the_field() {
        let a = Appearance {
            haze: 1.5,
            ..Appearance::none()
        };
        let e = a
            .apply_world(&mut RgbImage::new(2, 2))
            .unwrap_err()
            .to_string();
        assert!(e.contains("haze"), "{e}");
    }
}
