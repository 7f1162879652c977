//! The encode stage's errors. Every message names the file, library or operator that failed.

use std::path::PathBuf;

use super::manifest::ScanForm;

/// A model (ONNX graph plus manifest) that cannot be used: missing, corrupt, or not what its manifest says.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// The sidecar manifest `<name>.json` does not exist.
    #[error("model manifest {manifest} not found (every model needs its JSON sidecar from the exporter)")]
    ManifestMissing {
        /// Where the manifest was expected.
        manifest: PathBuf,
    },
    /// A file could not be read.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The operating system's reason.
        source: std::io::Error,
    },
    /// The manifest is not valid JSON, or has unknown, missing or mistyped keys.
    #[error("model manifest {path} is malformed: {source}")]
    ManifestParse {
        /// The manifest.
        path: PathBuf,
        /// What serde found.
        source: serde_json::Error,
    },
    /// The manifest's `format` is not `vimgeo-model`.
    #[error(
        "{path} is not a vimgeo model manifest (format is {found}, expected \"vimgeo-model\")"
    )]
    UnknownFormat {
        /// The manifest.
        path: PathBuf,
        /// The `format` value found (JSON), or `nothing`.
        found: String,
    },
    /// The manifest's `format_version` is not one this runtime reads.
    #[error(
        "model manifest {path} has format_version {found}; this vimgeo reads version {supported}"
    )]
    UnsupportedFormatVersion {
        /// The manifest.
        path: PathBuf,
        /// The `format_version` value found (JSON), or `nothing`.
        found: String,
        /// The version this runtime reads.
        supported: u32,
    },
    /// A manifest value is out of range or inconsistent with another.
    #[error("model manifest {path}: {field} {reason}")]
    InvalidManifest {
        /// The manifest.
        path: PathBuf,
        /// The offending key.
        field: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// The ONNX file's SHA-256 differs from the manifest's: corrupt, or another model.
    #[error("{path}: SHA-256 is {actual} but manifest {manifest} expects {expected} (corrupt file or wrong manifest)")]
    Sha256Mismatch {
        /// The ONNX file.
        path: PathBuf,
        /// The manifest.
        manifest: PathBuf,
        /// The manifest's hash.
        expected: String,
        /// The file's hash.
        actual: String,
    },
    /// The ONNX file is not a readable ONNX model.
    #[error("{path} is not a readable ONNX model: {reason}")]
    OnnxParse {
        /// The ONNX file.
        path: PathBuf,
        /// The decoder's message.
        reason: String,
    },
    /// The graph's input does not match the manifest's `input`.
    #[error("{path}: graph input does not match its manifest: {reason}")]
    InputMismatch {
        /// The ONNX file.
        path: PathBuf,
        /// The difference.
        reason: String,
    },
    /// The graph's output does not match the manifest's `output` (name, or embedding size).
    #[error("{path}: graph output does not match its manifest: {reason}")]
    OutputMismatch {
        /// The ONNX file.
        path: PathBuf,
        /// The difference.
        reason: String,
    },
    /// The manifest's `scan_form`/`custom_ops` disagree with the operators actually in the graph.
    #[error("{path}: manifest says scan_form {declared} but the graph {found}")]
    ScanFormMismatch {
        /// The ONNX file.
        path: PathBuf,
        /// The manifest's scan form.
        declared: ScanForm,
        /// What the graph holds instead.
        found: String,
    },
}

/// ONNX Runtime's shared library could not be found or used.
#[derive(Debug, thiserror::Error)]
pub enum OrtLibraryError {
    /// No candidate library was found anywhere the search looked.
    #[error(
        "ONNX Runtime library not found (looked in: {}); pass --ort-lib PATH, set ORT_DYLIB_PATH, \
         or create the Python environment with `make venv`",
        searched.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", ")
    )]
    NotFound {
        /// The places searched, in order.
        searched: Vec<PathBuf>,
    },
    /// The library file could not be opened (missing, not a shared library, missing dependencies).
    #[error("cannot load ONNX Runtime library {path} ({origin}): {reason}")]
    Load {
        /// The library.
        path: PathBuf,
        /// Where the path came from (`--ort-lib`, `ORT_DYLIB_PATH`, ...).
        origin: String,
        /// The dynamic loader's message.
        reason: String,
    },
    /// The file opened but is not ONNX Runtime, or is older than the API this build needs.
    #[error("ONNX Runtime library {path} ({origin}) is unusable: {reason}")]
    Unusable {
        /// The library.
        path: PathBuf,
        /// Where the path came from.
        origin: String,
        /// Why: missing entry point, version too old, ...
        reason: String,
    },
    /// ONNX Runtime is process-global: a second, different library cannot be loaded next to the first.
    #[error("ONNX Runtime is already loaded from {loaded}; cannot also load {requested}")]
    AlreadyLoaded {
        /// The library in use.
        loaded: PathBuf,
        /// The library asked for.
        requested: PathBuf,
    },
    /// The library loaded but its environment could not be created.
    #[error("ONNX Runtime library {path} failed to initialise: {source}")]
    Init {
        /// The library.
        path: PathBuf,
        /// ONNX Runtime's message.
        source: ort::Error,
    },
}

/// An encoder could not be built, or failed on a frame.
#[derive(Debug, thiserror::Error)]
pub enum EncoderError {
    /// The model was refused.
    #[error(transparent)]
    Model(#[from] ModelError),
    /// ONNX Runtime is unavailable.
    #[error(transparent)]
    OrtLibrary(#[from] OrtLibraryError),
    /// ONNX Runtime refused the model or failed while running it.
    #[error("ONNX Runtime failed on {path} while {during}: {source}")]
    Ort {
        /// The ONNX file.
        path: PathBuf,
        /// What was being done (building the session, running, ...).
        during: &'static str,
        /// ONNX Runtime's error.
        source: ort::Error,
    },
    /// tract refused the model or failed while running it.
    #[error("tract failed on {path} while {during}: {reason}")]
    Tract {
        /// The ONNX file.
        path: PathBuf,
        /// What was being done.
        during: &'static str,
        /// tract's error chain.
        reason: String,
    },
    /// The engine produced an output of the wrong size.
    #[error(
        "{path}: engine returned {got} values for a batch of {batch}, expected {batch} x {dim}"
    )]
    OutputShape {
        /// The ONNX file.
        path: PathBuf,
        /// Number of values returned.
        got: usize,
        /// Frames in the batch.
        batch: usize,
        /// The manifest's embedding size.
        dim: usize,
    },
    /// An image cannot be encoded (empty).
    #[error("cannot encode an image of {width}x{height} pixels")]
    EmptyImage {
        /// Width in pixels.
        width: u32,
        /// Height in pixels.
        height: u32,
    },
}
