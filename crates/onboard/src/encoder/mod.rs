//! The encode stage: RGB frame → L2-normalised embedding, through ONNX Runtime or tract.
//!
//! A model is an ONNX file plus its manifest (`<name>.json`, [`ModelManifest`]); [`CheckedModel::open`]
//! refuses one whose bytes, input, output or custom operators disagree with its manifest. An [`Encoder`]
//! runs a checked model on one engine:
//!
//! - [`OrtEncoder`]: ONNX Runtime, loaded at run time ([`OrtLibrary`]), on TensorRT, CUDA or the CPU;
//! - [`TractEncoder`]: tract, pure Rust, always available.
//!
//! [`open_encoder`] opens a model and picks the engine ([`EngineChoice::Auto`]: ONNX Runtime when its
//! library loads, else tract). Every engine shares one preprocessing path ([`preprocess`]), so they
//! differ only in how they run the graph.
//!
//! `scan` holds the one SelectiveScan kernel (the op ONNX lacks) that both engines call through thin
//! adapters; [`ScanKernelTime`] reports how long it ran.
//!
//! ```no_run
//! use vimgeo_onboard::encoder::{open_encoder, EncoderConfig, Encoder};
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let mut encoder = open_encoder(std::path::Path::new("model.onnx"), &EncoderConfig::default())?;
//! let image = image::open("frame.png")?.to_rgb8();
//! let embedding = encoder.encode(&image)?;
//! assert_eq!(embedding.len(), encoder.manifest().output.dim as usize);
//! # Ok(()) }
//! ```

mod error;
mod manifest;
mod model;
mod onnx_graph;
mod ort_engine;
mod ort_library;
mod preprocess;
pub mod scan;
mod scan_op;
mod tract_engine;

use std::fmt;
use std::path::Path;

pub use image::RgbImage;

pub use self::error::{EncoderError, ModelError, OrtLibraryError};
pub use self::manifest::{
    CustomOpRef, InputSpec, Interpolation, ModelManifest, OutputSpec, ScanForm, MANIFEST_FORMAT,
    MANIFEST_FORMAT_VERSION,
};
pub use self::model::CheckedModel;
pub use self::ort_engine::{ExecutionProviderKind, OrtConfig, OrtEncoder, OrtSelectiveScan};
pub use self::ort_library::{OrtLibrary, OrtLibraryCandidate, OrtLibrarySearch, MIN_ORT_MINOR};
pub use self::preprocess::{preprocess, preprocess_into, resize_like_pil};
pub use self::scan_op::{ScanKernelTime, SCAN_DOMAIN, SCAN_OP, SCAN_OP_VERSION};
pub use self::tract_engine::{TractConfig, TractEncoder};

/// Turns RGB images into embeddings with one model on one engine.
///
/// Implementations provide [`Encoder::run_nchw`] (the graph, on preprocessed tensors); the provided
/// methods do the preprocessing, identically for every engine.
pub trait Encoder: Send {
    /// The model's manifest.
    fn manifest(&self) -> &ModelManifest;

    /// The engine: `ort` or `tract`.
    fn engine_name(&self) -> &str;

    /// Where the graph runs: an ONNX Runtime execution provider name, or `cpu` for tract.
    fn device(&self) -> &str;

    /// Runs the graph on `frames` preprocessed images (`frames x 3 x H x W` values, NCHW) and returns
    /// `frames x dim` embedding values.
    fn run_nchw(&mut self, input: &[f32], frames: usize) -> Result<Vec<f32>, EncoderError>;

    /// Encodes one image (any size: it is resized to the model's input).
    fn encode(&mut self, image: &RgbImage) -> Result<Vec<f32>, EncoderError> {
        Ok(self
            .encode_batch(std::slice::from_ref(image))?
            .pop()
            .unwrap_or_default())
    }

    /// Encodes several images in one run of the graph.
    fn encode_batch(&mut self, images: &[RgbImage]) -> Result<Vec<Vec<f32>>, EncoderError> {
        let spec = &self.manifest().input;
        let frame_len = 3 * spec.height as usize * spec.width as usize;
        let mut input = vec![0.0f32; images.len() * frame_len];
        for (image, out) in images.iter().zip(input.chunks_exact_mut(frame_len)) {
            if image.width() == 0 || image.height() == 0 {
                return Err(EncoderError::EmptyImage {
                    width: image.width(),
                    height: image.height(),
                });
            }
            preprocess_into(image, spec, out);
        }
        if images.is_empty() {
            return Ok(Vec::new());
        }
        let dim = self.manifest().output.dim as usize;
        let values = self.run_nchw(&input, images.len())?;
        Ok(values.chunks_exact(dim).map(<[f32]>::to_vec).collect())
    }
}

/// Which engine [`open_encoder`] uses.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum EngineChoice {
    /// ONNX Runtime; failing to load it is an error.
    Ort,
    /// tract.
    Tract,
    /// ONNX Runtime when its library loads and accepts the model, else tract (logged with the reason).
    #[default]
    Auto,
}

impl fmt::Display for EngineChoice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            EngineChoice::Ort => "ort",
            EngineChoice::Tract => "tract",
            EngineChoice::Auto => "auto",
        })
    }
}

/// Everything [`open_encoder`] needs besides the model path: resolved values, no environment reading.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EncoderConfig {
    /// The engine.
    pub engine: EngineChoice,
    /// Where to find ONNX Runtime's library (not used for [`EngineChoice::Tract`]).
    pub ort_library: OrtLibrarySearch,
    /// ONNX Runtime settings.
    pub ort: OrtConfig,
    /// tract settings.
    pub tract: TractConfig,
}

/// Opens and checks the model at `path` (`.onnx` or its `.json` manifest) and builds an encoder for it.
///
/// A model that fails its checks is refused whatever the engine. With [`EngineChoice::Auto`], any ONNX
/// Runtime failure (library missing or unusable, session refused) is logged and tract is used instead.
pub fn open_encoder(path: &Path, config: &EncoderConfig) -> Result<Box<dyn Encoder>, EncoderError> {
    let model = CheckedModel::open(path)?;
    let open_ort = |model: CheckedModel| -> Result<Box<dyn Encoder>, EncoderError> {
        let candidate = OrtLibrary::locate(&config.ort_library)?;
        let library = OrtLibrary::load(&candidate)?;
        Ok(Box::new(OrtEncoder::new(model, &library, &config.ort)?))
    };
    match config.engine {
        EngineChoice::Ort => open_ort(model),
        EngineChoice::Tract => Ok(Box::new(TractEncoder::new(model, &config.tract)?)),
        EngineChoice::Auto => match open_ort(model.clone()) {
            Ok(encoder) => {
                log::info!("engine auto: using ONNX Runtime");
                Ok(encoder)
            }
            Err(e) => {
                log::warn!("engine auto: ONNX Runtime unavailable ({e}); using tract");
                Ok(Box::new(TractEncoder::new(model, &config.tract)?))
            }
        },
    }
}
