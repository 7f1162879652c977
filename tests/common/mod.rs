//! Shared helpers of the integration tests: the golden fixtures and how to reach ONNX Runtime.
//!
//! The fixtures in `tests/fixtures/` come from `python -m vimgeo.export fixtures` (see
//! `models/vimgeo/fixtures.py`): a small seeded VimGeo in both scan forms, PNG images, and `golden.json`
//! with PyTorch's embeddings of them.

#![allow(dead_code)] // each test binary uses its own subset

use std::path::{Path, PathBuf};

use serde::Deserialize;
use vimgeo::data::DataDir;
use vimgeo::encoder::{OrtLibrary, OrtLibraryCandidate, OrtLibrarySearch, RgbImage};

/// The fixture folder.
pub fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests")
        .join("fixtures")
}

/// A fixture file, which must exist: a missing one fails the test with how to make it.
pub fn fixture(name: &str) -> PathBuf {
    let path = fixtures().join(name);
    assert!(
        path.exists(),
        "fixture {} is missing; regenerate the fixtures with \
         `cd models && python -m vimgeo.export fixtures --out ../tests/fixtures` (in the project's venv)",
        path.display()
    );
    path
}

/// The data folder, as the binary finds it (`VIMGEO_DATA`, else `~/.cache/vimgeo/data`; `make test` sets it).
pub fn data_dir() -> DataDir {
    DataDir::from_vars(|name| std::env::var_os(name))
}

/// A file of the fetched imagery (`data:imagery/NAME`), which must exist: a missing one fails the test with
/// the command that fetches it.
pub fn imagery(name: &str) -> PathBuf {
    data_dir()
        .file(&format!("imagery/{name}"))
        .unwrap_or_else(|e| panic!("{e}"))
}

/// The model of one scan form.
pub fn model(form: &str) -> PathBuf {
    fixture(&format!("vimgeo-test-{form}.onnx"))
}

/// `golden.json`.
#[derive(Debug, Deserialize)]
pub struct Golden {
    pub embedding_dim: usize,
    pub tolerance: f32,
    pub images: Vec<GoldenImage>,
}

/// One image of `golden.json`.
#[derive(Debug, Deserialize)]
pub struct GoldenImage {
    pub file: String,
    pub width: u32,
    pub height: u32,
    pub resized: bool,
    /// float64 sum of the preprocessed input tensor.
    pub input_sum: f64,
    /// Its first 8 values (channel 0, row 0).
    pub input_head: Vec<f32>,
    /// PyTorch's embedding.
    pub embedding: Vec<f32>,
}

impl GoldenImage {
    pub fn image(&self) -> RgbImage {
        let path = fixture(&self.file);
        let image = image::open(&path)
            .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
            .to_rgb8();
        assert_eq!(
            image.dimensions(),
            (self.width, self.height),
            "{}",
            path.display()
        );
        image
    }
}

pub fn golden() -> Golden {
    let path = fixture("golden.json");
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{} is malformed: {e}", path.display()))
}

/// The library search the `vimgeo` binary makes from this process's environment (no `--ort-lib`).
pub fn ort_search() -> OrtLibrarySearch {
    OrtLibrarySearch::from_vars(None, |name| std::env::var_os(name))
}

/// ONNX Runtime's library, found the way the binary finds it. Not finding it FAILS the test: the test
/// command (`make test`) exports ORT_DYLIB_PATH to the project environment's library.
pub fn ort_library() -> (OrtLibraryCandidate, OrtLibrary) {
    let candidate = OrtLibrary::locate(&ort_search()).unwrap_or_else(|e| {
        panic!(
            "these tests need ONNX Runtime: {e}\n\
             set ORT_DYLIB_PATH to libonnxruntime.so (make test does this from the project's Python environment)"
        )
    });
    let library = OrtLibrary::load(&candidate)
        .unwrap_or_else(|e| panic!("these tests need ONNX Runtime: {e}"));
    (candidate, library)
}

/// Cosine similarity, in f64.
pub fn cosine(a: &[f32], b: &[f32]) -> f64 {
    assert_eq!(a.len(), b.len());
    let dot: f64 = a
        .iter()
        .zip(b)
        .map(|(x, y)| f64::from(*x) * f64::from(*y))
        .sum();
    let na: f64 = a.iter().map(|x| f64::from(*x).powi(2)).sum::<f64>().sqrt();
    let nb: f64 = b.iter().map(|x| f64::from(*x).powi(2)).sum::<f64>().sqrt();
    dot / (na * nb)
}

/// Largest absolute difference.
pub fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

/// Asserts that two embeddings agree within `min_cos` and `max_abs`, naming `what` on failure.
pub fn assert_close(what: &str, got: &[f32], want: &[f32], min_cos: f64, max_abs: f32) {
    assert_eq!(got.len(), want.len(), "{what}: embedding length");
    let (cos, diff) = (cosine(got, want), max_abs_diff(got, want));
    assert!(
        cos >= min_cos && diff <= max_abs,
        "{what}: cosine {cos:.7} (need >= {min_cos}), max abs diff {diff:.2e} (need <= {max_abs:.0e})"
    );
}

/// Copies a fixture model and its manifest into `dir`, returning the copied `.onnx` path.
pub fn copy_model(form: &str, dir: &Path) -> PathBuf {
    let onnx = model(form);
    let json = onnx.with_extension("json");
    let to = dir.join(onnx.file_name().unwrap());
    std::fs::copy(&onnx, &to).unwrap();
    std::fs::copy(&json, to.with_extension("json")).unwrap();
    to
}
