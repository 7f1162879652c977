//! The pure-Rust engine: tract runs the same ONNX files, with no native library to find.
//!
//! The graph is parsed from the checked bytes, its input fixed to `batch x 3 x H x W` (H, W from the
//! manifest), and optimised once at load. For custom-form models the `vimgeo::SelectiveScan` node is built
//! by [`build_selective_scan`], registered in tract-onnx's op register under its op type; the op it builds is
//! a thin adapter over the shared kernel (see `scan_op`).

use std::sync::Arc;

use tract_onnx::pb::NodeProto;
use tract_onnx::prelude::*;
use tract_onnx::tract_hir::internal::*;

use super::error::EncoderError;
use super::model::CheckedModel;
use super::scan_op::{
    self, ScanArgs, ScanAttributes, TensorArg, SCAN_DOMAIN, SCAN_OP, SCAN_OP_VERSION,
};
use super::{Encoder, ModelManifest};

/// Settings of the tract engine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TractConfig {
    /// Frames per run: the input's batch dimension is fixed to this at load (tract optimises for one shape).
    /// A larger batch is run in slices of this size; a smaller one is padded.
    pub batch: usize,
}

impl Default for TractConfig {
    fn default() -> Self {
        TractConfig { batch: 1 }
    }
}

type Plan = TypedSimplePlan;

/// An [`Encoder`] running on tract.
pub struct TractEncoder {
    model: CheckedModel,
    plan: Arc<Plan>,
    batch: usize,
}

impl std::fmt::Debug for TractEncoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TractEncoder")
            .field("model", &self.model)
            .field("batch", &self.batch)
            .finish()
    }
}

impl TractEncoder {
    /// Parses, fixes the input shape of, and optimises the model.
    pub fn new(model: CheckedModel, config: &TractConfig) -> Result<TractEncoder, EncoderError> {
        let path = model.onnx_path().to_path_buf();
        let fail = |during: &'static str| {
            let path = path.clone();
            move |e: TractError| EncoderError::Tract {
                path,
                during,
                reason: format!("{e:#}"),
            }
        };
        let batch = config.batch.max(1);
        if let Some(fixed) = model.fixed_batch() {
            if fixed != batch {
                return Err(EncoderError::Tract {
                    path,
                    during: "fixing the input shape",
                    reason: format!(
                        "the graph fixes batch {fixed}, the engine is configured for {batch}"
                    ),
                });
            }
        }
        let input = &model.manifest().input;
        let mut onnx = tract_onnx::onnx();
        onnx.op_register.insert(SCAN_OP, build_selective_scan);
        let proto = onnx
            .proto_model_for_read(&mut model.bytes())
            .map_err(fail("decoding the graph"))?;
        let shape = [batch, 3, input.height as usize, input.width as usize];
        let plan = onnx
            .model_for_proto_model(&proto)
            .map_err(fail("importing the graph"))?
            .with_input_fact(0, f32::fact(shape).into())
            .map_err(fail("fixing the input shape"))?
            .into_optimized()
            .map_err(fail("optimising the graph"))?
            .into_runnable()
            .map_err(fail("planning the graph"))?;
        drop(proto);
        log::info!("tract: {} optimised for input {:?}", path.display(), shape);
        Ok(TractEncoder {
            model: model.without_bytes(),
            plan,
            batch,
        })
    }
}

impl Encoder for TractEncoder {
    fn manifest(&self) -> &ModelManifest {
        self.model.manifest()
    }

    fn engine_name(&self) -> &str {
        "tract"
    }

    fn device(&self) -> &str {
        "cpu"
    }

    fn run_nchw(&mut self, input: &[f32], frames: usize) -> Result<Vec<f32>, EncoderError> {
        let spec = &self.model.manifest().input;
        let frame_len = 3 * spec.height as usize * spec.width as usize;
        let dim = self.model.manifest().output.dim as usize;
        let path = self.model.onnx_path();
        let mut embeddings = Vec::with_capacity(frames * dim);
        for chunk in input.chunks(self.batch * frame_len) {
            let n = chunk.len() / frame_len;
            let mut data = chunk.to_vec();
            data.resize(self.batch * frame_len, 0.0);
            let shape = [self.batch, 3, spec.height as usize, spec.width as usize];
            let tensor = Tensor::from_shape(&shape, &data).map_err(|e| EncoderError::Tract {
                path: path.to_path_buf(),
                during: "building the input tensor",
                reason: format!("{e:#}"),
            })?;
            let outputs =
                self.plan
                    .run(tvec!(tensor.into_tvalue()))
                    .map_err(|e| EncoderError::Tract {
                        path: path.to_path_buf(),
                        during: "running the graph",
                        reason: format!("{e:#}"),
                    })?;
            let values = outputs[0]
                .try_as_plain_ram()
                .and_then(|view| view.as_slice::<f32>().map(<[f32]>::to_vec))
                .map_err(|e| EncoderError::Tract {
                    path: path.to_path_buf(),
                    during: "reading the embedding",
                    reason: format!("{e:#}"),
                })?;
            if values.len() != self.batch * dim {
                return Err(EncoderError::OutputShape {
                    path: path.to_path_buf(),
                    got: values.len(),
                    batch: self.batch,
                    dim,
                });
            }
            embeddings.extend_from_slice(&values[..n * dim]);
        }
        Ok(embeddings)
    }
}

/// tract-onnx's builder for `SelectiveScan` nodes. The register is keyed by op type alone, so the domain is
/// checked here: a `SelectiveScan` from any other domain is not ours to run.
fn build_selective_scan(
    ctx: &tract_onnx::model::ParsingContext,
    node: &NodeProto,
) -> TractResult<(Box<dyn InferenceOp>, Vec<String>)> {
    if node.domain != SCAN_DOMAIN {
        bail!(
            "{} node {:?} is from domain {:?}; only {SCAN_DOMAIN:?} is supported",
            SCAN_OP,
            node.name,
            node.domain
        );
    }
    let version = ctx
        .model
        .opset_import
        .iter()
        .find(|o| o.domain == SCAN_DOMAIN)
        .map(|o| o.version);
    if version != Some(i64::from(SCAN_OP_VERSION)) {
        bail!("{SCAN_DOMAIN} opset version {version:?} is not supported (this runtime implements {SCAN_OP_VERSION})");
    }
    // tract drops empty ("absent") input names when wiring, so remember which optional inputs exist.
    let present = |i: usize| node.input.get(i).is_some_and(|name| !name.is_empty());
    if !(0..5).all(present) {
        bail!(
            "{SCAN_OP} node {:?} lacks one of its required inputs u, delta, A, B, C",
            node.name
        );
    }
    let op = TractSelectiveScan {
        attrs: ScanAttributes {
            delta_softplus: node.get_attr_opt::<i64>("delta_softplus")?.unwrap_or(0) != 0,
            reverse: node.get_attr_opt::<i64>("reverse")?.unwrap_or(0) != 0,
        },
        has_d: present(5),
        has_z: present(6),
        has_delta_bias: present(7),
    };
    Ok((inference_wrap(op, 1, scan_rules), vec![]))
}

fn scan_rules<'p>(
    op: &dyn Op,
    s: &mut Solver,
    ins: &'p [TensorProxy],
    outs: &'p [TensorProxy],
) -> InferenceResult {
    let op = op
        .downcast_ref::<TractSelectiveScan>()
        .context("scan_rules: not a SelectiveScan op")?;
    check_input_arity(ins, op.input_count())?;
    check_output_arity(outs, 1)?;
    s.equals(&ins[0].datum_type, f32::datum_type())?;
    s.equals(&outs[0].datum_type, f32::datum_type())?;
    s.equals(&outs[0].shape, &ins[0].shape)?;
    Ok(())
}

/// The tract op: evaluates one `SelectiveScan` node with the shared kernel.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct TractSelectiveScan {
    attrs: ScanAttributes,
    has_d: bool,
    has_z: bool,
    has_delta_bias: bool,
}

impl TractSelectiveScan {
    fn input_count(&self) -> usize {
        5 + usize::from(self.has_d) + usize::from(self.has_z) + usize::from(self.has_delta_bias)
    }
}

impl Op for TractSelectiveScan {
    fn name(&self) -> StaticName {
        format!("{SCAN_DOMAIN}.{SCAN_OP}").into()
    }

    fn info(&self) -> TractResult<Vec<String>> {
        Ok(vec![format!(
            "delta_softplus={} reverse={}",
            self.attrs.delta_softplus, self.attrs.reverse
        )])
    }

    op_as_typed_op!();
}

impl EvalOp for TractSelectiveScan {
    op_out_of_plan!();

    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        ensure!(
            inputs.len() == self.input_count(),
            "{SCAN_OP}: {} inputs, expected {}",
            inputs.len(),
            self.input_count()
        );
        let views = inputs
            .iter()
            .map(|t| t.try_as_plain_ram().and_then(|v| v.as_slice::<f32>()))
            .collect::<TractResult<Vec<_>>>()?;
        let arg = |i: usize| TensorArg {
            shape: inputs[i].shape(),
            data: views[i],
        };
        let mut next = 5;
        let mut optional = |present: bool| {
            present.then(|| {
                next += 1;
                arg(next - 1)
            })
        };
        let args = ScanArgs {
            u: arg(0),
            delta: arg(1),
            a: arg(2),
            b: arg(3),
            c: arg(4),
            d: optional(self.has_d),
            z: optional(self.has_z),
            delta_bias: optional(self.has_delta_bias),
        };
        let mut out = Tensor::zero::<f32>(inputs[0].shape())?;
        scan_op::evaluate(
            self.attrs,
            &args,
            out.try_as_plain_ram_mut()?.as_slice_mut::<f32>()?,
        )
        .map_err(|e| anyhow!(e))?;
        Ok(tvec!(out.into_tvalue()))
    }
}

impl TypedOp for TractSelectiveScan {
    as_op!();

    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        ensure!(
            inputs.len() == self.input_count(),
            "{SCAN_OP}: {} inputs, expected {}",
            inputs.len(),
            self.input_count()
        );
        Ok(tvec!(f32::fact(inputs[0].shape.clone())))
    }
}
