//! The ONNX Runtime engine: the fast path onboard (TensorRT or CUDA on a Jetson, the CPU elsewhere).
//!
//! A session is built from the checked model bytes on the first execution provider of
//! [`OrtConfig::providers`] that accepts the model, falling back down the list (TensorRT → CUDA → CPU by
//! default); the one in use is logged and reported by [`Encoder::device`]. Custom-form models get the
//! `vimgeo::SelectiveScan` operator registered on the session (an `ort::operator::OperatorDomain` holding
//! [`OrtSelectiveScan`]); ONNX Runtime places it on the CPU and copies its tensors there when a GPU runs
//! the rest.

use std::fmt;
use std::path::PathBuf;

use ort::ep::{self, ExecutionProvider};
use ort::operator::{
    ComputeContext, Kernel, KernelContext, Operator, OperatorDomain, OperatorInput, OperatorOutput,
};
use ort::session::builder::{GraphOptimizationLevel, SessionBuilder};
use ort::session::Session;
use ort::value::{TensorElementType, TensorRef};

use super::error::EncoderError;
use super::manifest::ScanForm;
use super::model::CheckedModel;
use super::ort_library::OrtLibrary;
use super::scan_op::{
    self, ScanArgs, ScanAttributes, TensorArg, SCAN_DOMAIN, SCAN_OP, SCAN_OP_VERSION,
};
use super::{Encoder, ModelManifest};

/// An ONNX Runtime execution provider vimgeo knows how to configure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ExecutionProviderKind {
    /// NVIDIA TensorRT (Jetson, discrete GPUs); builds an engine per model on first use.
    TensorRt,
    /// NVIDIA CUDA.
    Cuda,
    /// ONNX Runtime's CPU provider; always available.
    Cpu,
}

impl ExecutionProviderKind {
    /// ONNX Runtime's name for the provider.
    pub fn ort_name(self) -> &'static str {
        match self {
            ExecutionProviderKind::TensorRt => ep::TensorRT::NAME,
            ExecutionProviderKind::Cuda => ep::CUDA::NAME,
            ExecutionProviderKind::Cpu => "CPUExecutionProvider",
        }
    }
}

impl fmt::Display for ExecutionProviderKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.ort_name())
    }
}

/// Settings of the ONNX Runtime engine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrtConfig {
    /// Providers to try, in order; the first that builds a session is used.
    pub providers: Vec<ExecutionProviderKind>,
    /// GPU to run on (TensorRT and CUDA).
    pub device_id: i32,
    /// Folder for TensorRT's serialised engines, so only the first start pays the engine build (minutes
    /// on a Jetson). `None` disables the cache.
    pub tensorrt_cache_dir: Option<PathBuf>,
    /// Let TensorRT run layers in FP16 (faster on Jetson; embeddings move by about 1e-3).
    pub tensorrt_fp16: bool,
    /// Threads ONNX Runtime uses inside one operator on the CPU; `None` lets it choose (all cores).
    pub intra_threads: Option<usize>,
}

impl Default for OrtConfig {
    fn default() -> Self {
        OrtConfig {
            providers: vec![
                ExecutionProviderKind::TensorRt,
                ExecutionProviderKind::Cuda,
                ExecutionProviderKind::Cpu,
            ],
            device_id: 0,
            tensorrt_cache_dir: None,
            tensorrt_fp16: false,
            intra_threads: None,
        }
    }
}

/// An [`Encoder`] running on ONNX Runtime.
pub struct OrtEncoder {
    model: CheckedModel,
    session: Session,
    provider: ExecutionProviderKind,
}

impl fmt::Debug for OrtEncoder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OrtEncoder")
            .field("model", &self.model)
            .field("provider", &self.provider)
            .finish()
    }
}

impl OrtEncoder {
    /// Builds a session for `model` on the first provider of `config.providers` that accepts it.
    pub fn new(
        model: CheckedModel,
        library: &OrtLibrary,
        config: &OrtConfig,
    ) -> Result<OrtEncoder, EncoderError> {
        let path = model.onnx_path().to_path_buf();
        let ort_error = |during: &'static str| {
            let path = path.clone();
            move |source: ort::Error| EncoderError::Ort {
                path,
                during,
                source,
            }
        };
        let mut last_error = None;
        for &kind in &config.providers {
            if kind != ExecutionProviderKind::Cpu {
                match provider_compiled_in(kind) {
                    Ok(true) => {}
                    Ok(false) => {
                        log::info!(
                            "ONNX Runtime {}: {kind} is not in this build; trying the next provider",
                            library.version()
                        );
                        continue;
                    }
                    Err(e) => {
                        log::warn!(
                            "ONNX Runtime: cannot list providers ({e}); trying {kind} anyway"
                        );
                    }
                }
            }
            match build_session(&model, library, config, kind) {
                Ok(session) => {
                    log::info!(
                        "ONNX Runtime {}: {} runs on {kind}{}",
                        library.version(),
                        path.display(),
                        if model.manifest().scan_form == ScanForm::Custom {
                            format!(
                                " ({} {SCAN_DOMAIN}::{SCAN_OP} nodes on the CPU kernel)",
                                model.scan_nodes()
                            )
                        } else {
                            String::new()
                        }
                    );
                    return Ok(OrtEncoder {
                        model: model.without_bytes(),
                        session,
                        provider: kind,
                    });
                }
                Err(e) if kind != ExecutionProviderKind::Cpu => {
                    log::warn!(
                        "ONNX Runtime: {kind} refused {}: {e}; falling back",
                        path.display()
                    );
                    last_error = Some(e);
                }
                Err(e) => return Err(ort_error("creating the session")(e)),
            }
        }
        Err(ort_error("creating the session")(
            last_error.unwrap_or_else(|| ort::Error::new("no execution provider configured")),
        ))
    }

    /// The execution provider the session runs on.
    pub fn provider(&self) -> ExecutionProviderKind {
        self.provider
    }
}

fn provider_compiled_in(kind: ExecutionProviderKind) -> ort::Result<bool> {
    match kind {
        ExecutionProviderKind::TensorRt => ep::TensorRT::is_available(),
        ExecutionProviderKind::Cuda => ep::CUDA::is_available(),
        ExecutionProviderKind::Cpu => Ok(true),
    }
}

fn build_session(
    model: &CheckedModel,
    library: &OrtLibrary,
    config: &OrtConfig,
    kind: ExecutionProviderKind,
) -> ort::Result<Session> {
    let mut builder: SessionBuilder = Session::builder(library.environment())?
        .with_optimization_level(GraphOptimizationLevel::Level3)?
        .with_no_environment_execution_providers()?;
    if let Some(n) = config.intra_threads {
        builder = builder.with_intra_threads(n)?;
    }
    let dispatch = match kind {
        ExecutionProviderKind::TensorRt => {
            let mut trt = ep::TensorRT::default()
                .with_device_id(config.device_id)
                .with_fp16(config.tensorrt_fp16);
            if let Some(dir) = &config.tensorrt_cache_dir {
                trt = trt
                    .with_engine_cache(true)
                    .with_engine_cache_path(dir.display())
                    .with_timing_cache_path(dir.display())
                    .with_timing_cache(true);
            }
            Some(trt.build().error_on_failure())
        }
        ExecutionProviderKind::Cuda => Some(
            ep::CUDA::default()
                .with_device_id(config.device_id)
                .build()
                .error_on_failure(),
        ),
        ExecutionProviderKind::Cpu => None,
    };
    if let Some(dispatch) = dispatch {
        builder = builder.with_execution_providers([dispatch])?;
    }
    if model.manifest().scan_form == ScanForm::Custom {
        builder =
            builder.with_operators(OperatorDomain::new(SCAN_DOMAIN)?.add(OrtSelectiveScan)?)?;
        // The scan kernel runs on rayon's threads; ONNX Runtime's idle workers spin-waiting next to them
        // would take the cores it needs (with them spinning the kernel runs 2-3x slower).
        builder = builder.with_config_entry("session.intra_op.allow_spinning", "0")?;
    }
    builder.commit_from_memory(model.bytes())
}

impl Encoder for OrtEncoder {
    fn manifest(&self) -> &ModelManifest {
        self.model.manifest()
    }

    fn engine_name(&self) -> &str {
        "ort"
    }

    fn device(&self) -> &str {
        self.provider.ort_name()
    }

    fn run_nchw(&mut self, input: &[f32], frames: usize) -> Result<Vec<f32>, EncoderError> {
        let manifest = self.model.manifest();
        let (h, w) = (
            manifest.input.height as usize,
            manifest.input.width as usize,
        );
        let dim = manifest.output.dim as usize;
        let path = self.model.onnx_path().to_path_buf();
        let fail = |during: &'static str| {
            let path = path.clone();
            move |source: ort::Error| EncoderError::Ort {
                path,
                during,
                source,
            }
        };
        let tensor = TensorRef::from_array_view(([frames, 3, h, w], input))
            .map_err(fail("building the input tensor"))?;
        let input_name = manifest.input.name.as_str();
        let outputs = self
            .session
            .run(ort::inputs![input_name => tensor])
            .map_err(fail("running the graph"))?;
        let output = outputs
            .get(manifest.output.name.as_str())
            .ok_or_else(|| fail("reading the embedding")(ort::Error::new("output missing")))?;
        let (_, values) = output
            .try_extract_tensor::<f32>()
            .map_err(fail("reading the embedding"))?;
        if values.len() != frames * dim {
            return Err(EncoderError::OutputShape {
                path,
                got: values.len(),
                batch: frames,
                dim,
            });
        }
        Ok(values.to_vec())
    }
}

/// The `vimgeo::SelectiveScan` custom operator for ONNX Runtime's CPU provider.
pub struct OrtSelectiveScan;

impl Operator for OrtSelectiveScan {
    type Kernel<'attr> = OrtScanKernel;

    fn name(&self) -> &str {
        SCAN_OP
    }

    fn versions(&self) -> std::ops::RangeInclusive<u32> {
        SCAN_OP_VERSION..=SCAN_OP_VERSION
    }

    fn inputs(&self) -> impl IntoIterator<Item = OperatorInput> {
        let f32 = TensorElementType::Float32;
        [
            OperatorInput::required(f32), // u
            OperatorInput::required(f32), // delta
            OperatorInput::required(f32), // A
            OperatorInput::required(f32), // B
            OperatorInput::required(f32), // C
            OperatorInput::optional(f32), // D
            OperatorInput::optional(f32), // z
            OperatorInput::optional(f32), // delta_bias
        ]
    }

    fn outputs(&self) -> impl IntoIterator<Item = OperatorOutput> {
        [OperatorOutput::required(TensorElementType::Float32)]
    }

    fn create_kernel<'attr>(&self, ctx: &KernelContext<'attr>) -> ort::Result<OrtScanKernel> {
        let flag = |name: &str| ctx.get::<i64>(name).unwrap_or(0) != 0;
        Ok(OrtScanKernel {
            attrs: ScanAttributes {
                delta_softplus: flag("delta_softplus"),
                reverse: flag("reverse"),
            },
        })
    }

    fn infer_shape(&self, ctx: &mut ort::operator::ShapeInferenceContext) -> ort::Result<()> {
        let u = ctx
            .inputs()
            .into_iter()
            .next()
            .ok_or_else(|| ort::Error::new("SelectiveScan: no input u"))?;
        ctx.set_output(0, &u)
    }
}

/// One `SelectiveScan` node's kernel: its attributes; the tensors arrive per run.
pub struct OrtScanKernel {
    attrs: ScanAttributes,
}

impl Kernel for OrtScanKernel {
    fn compute(&mut self, ctx: &ComputeContext) -> ort::Result<()> {
        let count = ctx.num_inputs()?;
        let mut shapes: Vec<Vec<usize>> = Vec::with_capacity(8);
        let mut values = Vec::with_capacity(8);
        for i in 0..8 {
            let value = if i < count { ctx.input(i)? } else { None };
            values.push(value);
        }
        let mut datas: Vec<Option<&[f32]>> = Vec::with_capacity(8);
        for value in &values {
            match value {
                Some(v) => {
                    let (shape, data) = v.try_extract_tensor::<f32>()?;
                    shapes.push(
                        shape
                            .iter()
                            .map(|&d| usize::try_from(d).unwrap_or(0))
                            .collect(),
                    );
                    datas.push(Some(data));
                }
                None => {
                    shapes.push(Vec::new());
                    datas.push(None);
                }
            }
        }
        let arg = |i: usize| {
            datas[i].map(|data| TensorArg {
                shape: &shapes[i],
                data,
            })
        };
        let required = |i: usize| {
            arg(i)
                .ok_or_else(|| ort::Error::new(format!("{SCAN_OP}: required input {i} is missing")))
        };
        let args = ScanArgs {
            u: required(0)?,
            delta: required(1)?,
            a: required(2)?,
            b: required(3)?,
            c: required(4)?,
            d: arg(5),
            z: arg(6),
            delta_bias: arg(7),
        };
        let out_shape: Vec<i64> = shapes[0].iter().map(|&d| d as i64).collect();
        let mut output = ctx
            .output(0, out_shape)?
            .ok_or_else(|| ort::Error::new(format!("{SCAN_OP}: no output")))?;
        let (_, out) = output.try_extract_tensor_mut::<f32>()?;
        scan_op::evaluate(self.attrs, &args, out).map_err(ort::Error::new)
    }
}
