//! The model manifest: the JSON sidecar `<name>.json` that travels next to `<name>.onnx`.
//!
//! The exporter (`models/`) writes it; the runtime reads it before it trusts the graph. It carries the
//! preprocessing contract (input size, mean, std, interpolation), the embedding size, the form in which the
//! selective scan was exported, and the ONNX file's SHA-256. [`ModelManifest`] is also what a tile cache
//! records (model name and hash), so a cache built with one model is refused by another.
//!
//! Reading is strict: unknown or missing keys are errors, and `format`/`format_version` are checked before
//! anything else so that a manifest from a future exporter is reported as such, not as a parse error.

use std::fmt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::error::ModelError;

/// The value of the manifest's `format` key.
pub const MANIFEST_FORMAT: &str = "vimgeo-model";
/// The manifest `format_version` this runtime reads.
pub const MANIFEST_FORMAT_VERSION: u32 = 1;

/// The contents of a model's JSON sidecar (`"format": "vimgeo-model"`, `"format_version": 1`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelManifest {
    /// Always [`MANIFEST_FORMAT`].
    pub format: String,
    /// Always [`MANIFEST_FORMAT_VERSION`] for manifests this runtime accepts.
    pub format_version: u32,
    /// The model's name, e.g. `vimgeo-small-384`.
    pub name: String,
    /// Version of the code that exported the model (`vimgeo.__version__`).
    pub model_version: String,
    /// File name of the ONNX graph this manifest describes, relative to the manifest.
    pub onnx_file: String,
    /// Lower-case hex SHA-256 of the ONNX file.
    pub onnx_sha256: String,
    /// How the selective scan appears in the graph.
    pub scan_form: ScanForm,
    /// The default-domain ONNX opset the graph was exported with.
    pub opset: u32,
    /// Custom operators the graph uses (empty unless `scan_form` is `custom`).
    pub custom_ops: Vec<CustomOpRef>,
    /// Free-form record of the exporting tool chain (versions of torch, onnx, the exporter).
    pub exporter: Map<String, Value>,
    /// The preprocessing contract and the graph input.
    pub input: InputSpec,
    /// The graph output: the embedding.
    pub output: OutputSpec,
    /// Free-form record of the network's configuration (depth, embed dim, ...).
    pub architecture: Map<String, Value>,
    /// Which branch of the cross-view model this encoder is (`drone`; with shared weights it serves both).
    pub branch: String,
    /// Free-form record of how the weights were trained (run, data, metrics); `null` for random weights.
    /// The key itself is required.
    #[serde(deserialize_with = "Option::deserialize")]
    pub training: Option<Map<String, Value>>,
    /// When the export happened (ISO 8601, UTC).
    pub created: String,
}

/// The form in which the exporter wrote the selective scan.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ScanForm {
    /// One `vimgeo::SelectiveScan` custom op per scan: needs the runtime's kernel registered.
    Custom,
    /// A chunked scan written in standard ONNX ops: runs on any ONNX runtime.
    Portable,
    /// No selective scan in the graph (a non-Mamba encoder).
    None,
}

impl fmt::Display for ScanForm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ScanForm::Custom => "custom",
            ScanForm::Portable => "portable",
            ScanForm::None => "none",
        })
    }
}

/// A custom operator the graph uses, as the manifest lists it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CustomOpRef {
    /// The operator's domain, e.g. `vimgeo`.
    pub domain: String,
    /// The operator's type, e.g. `SelectiveScan`.
    pub op: String,
    /// The domain's opset version.
    pub version: u32,
}

/// The graph input and how to make it from an RGB image.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InputSpec {
    /// Name of the graph input.
    pub name: String,
    /// Always `NCHW`.
    pub layout: String,
    /// Always `RGB`.
    pub color: String,
    /// Input height in pixels.
    pub height: u32,
    /// Input width in pixels.
    pub width: u32,
    /// Always `float32`.
    pub dtype: String,
    /// Pixel values are divided by this first (255.0: 8-bit to [0, 1]).
    pub scale: f32,
    /// Per-channel mean subtracted after scaling (R, G, B).
    pub mean: [f32; 3],
    /// Per-channel standard deviation divided by after the mean (R, G, B).
    pub std: [f32; 3],
    /// How an image of another size is resized to `height` x `width`.
    pub interpolation: Interpolation,
}

/// The resampling filter of the resize step, as PIL names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Interpolation {
    /// PIL's BICUBIC (Keys cubic, a = -0.5, antialiased when shrinking).
    Bicubic,
    /// PIL's BILINEAR (triangle filter, antialiased when shrinking).
    Bilinear,
}

/// The graph output.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutputSpec {
    /// Name of the graph output.
    pub name: String,
    /// Embedding size.
    pub dim: u32,
    /// Always true: the graph L2-normalises its embedding.
    pub normalized: bool,
}

impl ModelManifest {
    /// Where the manifest of the ONNX file `onnx` lives: the same path with the extension `.json`.
    pub fn path_for_model(onnx: &Path) -> PathBuf {
        onnx.with_extension("json")
    }

    /// Reads and checks the manifest at `path` (format, version, keys, value ranges), without looking at the
    /// ONNX file; [`crate::encoder::CheckedModel::open`] does the rest.
    pub fn read(path: &Path) -> Result<ModelManifest, ModelError> {
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(ModelError::ManifestMissing {
                    manifest: path.to_path_buf(),
                });
            }
            Err(source) => {
                return Err(ModelError::Io {
                    path: path.to_path_buf(),
                    source,
                })
            }
        };
        Self::parse(&text, path)
    }

    /// Parses and checks manifest text; `path` is only used to name the file in errors.
    pub fn parse(text: &str, path: &Path) -> Result<ModelManifest, ModelError> {
        let parse_error = |source| ModelError::ManifestParse {
            path: path.to_path_buf(),
            source,
        };
        // First the envelope, so that a newer format is reported as such rather than as unknown keys.
        let raw: Value = serde_json::from_str(text).map_err(parse_error)?;
        let format = raw.get("format").and_then(Value::as_str);
        if format != Some(MANIFEST_FORMAT) {
            return Err(ModelError::UnknownFormat {
                path: path.to_path_buf(),
                found: raw.get("format").map_or("nothing".into(), Value::to_string),
            });
        }
        match raw.get("format_version").and_then(Value::as_u64) {
            Some(v) if v == u64::from(MANIFEST_FORMAT_VERSION) => {}
            _ => {
                return Err(ModelError::UnsupportedFormatVersion {
                    path: path.to_path_buf(),
                    found: raw
                        .get("format_version")
                        .map_or("nothing".into(), Value::to_string),
                    supported: MANIFEST_FORMAT_VERSION,
                });
            }
        }
        let manifest: ModelManifest = serde_json::from_value(raw).map_err(parse_error)?;
        manifest.validate(path)?;
        Ok(manifest)
    }

    /// Checks the values serde cannot: fixed strings, positive sizes, usable normalisation constants.
    fn validate(&self, path: &Path) -> Result<(), ModelError> {
        let bad = |field: &'static str, reason: String| ModelError::InvalidManifest {
            path: path.to_path_buf(),
            field,
            reason,
        };
        let fixed = [
            ("input.layout", &self.input.layout, "NCHW"),
            ("input.color", &self.input.color, "RGB"),
            ("input.dtype", &self.input.dtype, "float32"),
        ];
        for (field, value, expected) in fixed {
            if value != expected {
                return Err(bad(field, format!("must be {expected:?}, found {value:?}")));
            }
        }
        if self.input.height == 0 || self.input.width == 0 {
            return Err(bad(
                "input.height/width",
                format!(
                    "must be positive, found {}x{}",
                    self.input.height, self.input.width
                ),
            ));
        }
        if !(self.input.scale.is_finite() && self.input.scale > 0.0) {
            return Err(bad(
                "input.scale",
                format!("must be positive, found {}", self.input.scale),
            ));
        }
        if self.input.std.iter().any(|s| !(s.is_finite() && *s > 0.0))
            || self.input.mean.iter().any(|m| !m.is_finite())
        {
            return Err(bad(
                "input.mean/std",
                format!(
                    "must be finite with std > 0, found mean {:?} std {:?}",
                    self.input.mean, self.input.std
                ),
            ));
        }
        if self.output.dim == 0 {
            return Err(bad("output.dim", "must be positive".into()));
        }
        if !self.output.normalized {
            return Err(bad(
                "output.normalized",
                "must be true (embeddings are compared by dot product)".into(),
            ));
        }
        let hash_ok = self.onnx_sha256.len() == 64
            && self
                .onnx_sha256
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        if !hash_ok {
            return Err(bad(
                "onnx_sha256",
                format!(
                    "must be 64 lower-case hex digits, found {:?}",
                    self.onnx_sha256
                ),
            ));
        }
        match (self.scan_form, self.custom_ops.is_empty()) {
            (ScanForm::Custom, true) => {
                return Err(bad(
                    "custom_ops",
                    "scan_form is \"custom\" but no custom op is listed".into(),
                ));
            }
            (ScanForm::Portable | ScanForm::None, false) => {
                return Err(bad(
                    "custom_ops",
                    format!(
                        "scan_form is {:?} but custom ops are listed",
                        self.scan_form.to_string()
                    ),
                ));
            }
            _ => {}
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Value {
        serde_json::json!({
            "format": "vimgeo-model", "format_version": 1, "name": "vimgeo-test", "model_version": "0",
            "onnx_file": "m.onnx", "onnx_sha256": "0".repeat(64), "scan_form": "custom", "opset": 17,
            "custom_ops": [{"domain": "vimgeo", "op": "SelectiveScan", "version": 1}],
            "exporter": {}, "input": {"name": "image", "layout": "NCHW", "color": "RGB", "height": 32,
            "width": 32, "dtype": "float32", "scale": 255.0, "mean": [0.5, 0.5, 0.5], "std": [0.2, 0.2, 0.2],
            "interpolation": "bicubic"}, "output": {"name": "embedding", "dim": 16, "normalized": true},
            "architecture": {}, "branch": "shared", "training": null, "created": "2025-01-01T00:00:00Z"
        })
    }

    fn parse(v: &Value) -> Result<ModelManifest, ModelError> {
        ModelManifest::parse(&v.to_string(), Path::new("m.json"))
    }

    #[test]
    fn reads_a_complete_manifest() {
        let m = parse(&sample()).unwrap();
        assert_eq!(m.scan_form, ScanForm::Custom);
        assert_eq!(m.input.interpolation, Interpolation::Bicubic);
        assert_eq!(m.output.dim, 16);
    }

    #[test]
    fn refuses_unknown_and_missing_keys() {
        let mut v = sample();
        v["surprise"] = 1.into();
        assert!(matches!(parse(&v), Err(ModelError::ManifestParse { .. })));
        for key in ["opset", "training"] {
            let mut v = sample();
            v.as_object_mut().unwrap().remove(key);
            assert!(
                matches!(parse(&v), Err(ModelError::ManifestParse { .. })),
                "{key}"
            );
        }
    }

    #[test]
    fn reports_future_versions_before_keys() {
        let mut v = sample();
        v["format_version"] = 2.into();
        v["new_key"] = 1.into();
        assert!(matches!(
            parse(&v),
            Err(ModelError::UnsupportedFormatVersion { .. })
        ));
        v["format"] = "other".into();
        assert!(matches!(parse(&v), Err(ModelError::UnknownFormat { .. })));
    }

    #[test]
    fn refuses_inconsistent_values() {
        let mut v = sample();
        v["custom_ops"] = serde_json::json!([]);
        assert!(matches!(
            parse(&v),
            Err(ModelError::InvalidManifest {
                field: "custom_ops",
                ..
            })
        ));
        let mut v = sample();
        v["input"]["std"] = serde_json::json!([0.2, 0.0, 0.2]);
        assert!(matches!(parse(&v), Err(ModelError::InvalidManifest { .. })));
        let mut v = sample();
        v["onnx_sha256"] = "XYZ".into();
        assert!(matches!(
            parse(&v),
            Err(ModelError::InvalidManifest {
                field: "onnx_sha256",
                ..
            })
        ));
    }
}
