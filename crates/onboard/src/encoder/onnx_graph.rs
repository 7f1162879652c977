//! Just enough of the ONNX protobuf schema to check a graph against its manifest.
//!
//! Only the fields named here are decoded; everything else (weights above all) is skipped on the wire
//! without being copied, so inspecting a 100 MB model costs a walk over its bytes, not a second copy.
//! Field numbers follow `onnx/onnx.proto`.

use prost::Message;

/// `ModelProto`, reduced.
#[derive(Clone, PartialEq, Message)]
pub(crate) struct ModelProto {
    #[prost(message, optional, tag = "7")]
    pub graph: Option<GraphProto>,
    #[prost(message, repeated, tag = "8")]
    pub opset_import: Vec<OperatorSetId>,
}

/// `OperatorSetIdProto`.
#[derive(Clone, PartialEq, Message)]
pub(crate) struct OperatorSetId {
    #[prost(string, tag = "1")]
    pub domain: String,
    #[prost(int64, tag = "2")]
    pub version: i64,
}

/// `GraphProto`, reduced: initializers keep only their names.
#[derive(Clone, PartialEq, Message)]
pub(crate) struct GraphProto {
    #[prost(message, repeated, tag = "1")]
    pub node: Vec<NodeProto>,
    #[prost(message, repeated, tag = "5")]
    pub initializer: Vec<NamedTensor>,
    #[prost(message, repeated, tag = "11")]
    pub input: Vec<ValueInfo>,
    #[prost(message, repeated, tag = "12")]
    pub output: Vec<ValueInfo>,
}

/// `TensorProto`, reduced to its name.
#[derive(Clone, PartialEq, Message)]
pub(crate) struct NamedTensor {
    #[prost(string, tag = "8")]
    pub name: String,
}

/// `NodeProto`.
#[derive(Clone, PartialEq, Message)]
pub(crate) struct NodeProto {
    #[prost(string, repeated, tag = "1")]
    pub input: Vec<String>,
    #[prost(string, tag = "3")]
    pub name: String,
    #[prost(string, tag = "4")]
    pub op_type: String,
    #[prost(message, repeated, tag = "5")]
    pub attribute: Vec<Attribute>,
    #[prost(string, tag = "7")]
    pub domain: String,
}

/// `AttributeProto`, reduced to what can hold a subgraph.
#[derive(Clone, PartialEq, Message)]
pub(crate) struct Attribute {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(message, optional, tag = "6")]
    pub g: Option<GraphProto>,
    #[prost(message, repeated, tag = "11")]
    pub graphs: Vec<GraphProto>,
}

/// `ValueInfoProto`.
#[derive(Clone, PartialEq, Message)]
pub(crate) struct ValueInfo {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(message, optional, tag = "2")]
    pub r#type: Option<TypeProto>,
}

/// `TypeProto`, tensor types only.
#[derive(Clone, PartialEq, Message)]
pub(crate) struct TypeProto {
    #[prost(message, optional, tag = "1")]
    pub tensor_type: Option<TensorType>,
}

/// `TypeProto.Tensor`.
#[derive(Clone, PartialEq, Message)]
pub(crate) struct TensorType {
    #[prost(int32, tag = "1")]
    pub elem_type: i32,
    #[prost(message, optional, tag = "2")]
    pub shape: Option<TensorShape>,
}

/// `TensorShapeProto`.
#[derive(Clone, PartialEq, Message)]
pub(crate) struct TensorShape {
    #[prost(message, repeated, tag = "1")]
    pub dim: Vec<Dimension>,
}

/// `TensorShapeProto.Dimension`: a fixed size, a named symbol, or neither.
#[derive(Clone, PartialEq, Message)]
pub(crate) struct Dimension {
    #[prost(int64, optional, tag = "1")]
    pub dim_value: Option<i64>,
    #[prost(string, optional, tag = "2")]
    pub dim_param: Option<String>,
}

/// ONNX `TensorProto.DataType.FLOAT`.
pub(crate) const ELEM_TYPE_FLOAT: i32 = 1;

impl ModelProto {
    /// Decodes the reduced schema from the bytes of an `.onnx` file.
    pub(crate) fn decode_model(bytes: &[u8]) -> Result<ModelProto, prost::DecodeError> {
        ModelProto::decode(bytes)
    }
}

impl GraphProto {
    /// Calls `f` on every node of this graph and of its subgraphs (`If`, `Loop`, `Scan` bodies).
    pub(crate) fn visit_nodes<'a>(&'a self, f: &mut impl FnMut(&'a NodeProto)) {
        for node in &self.node {
            f(node);
            for attr in &node.attribute {
                if let Some(g) = &attr.g {
                    g.visit_nodes(f);
                }
                for g in &attr.graphs {
                    g.visit_nodes(f);
                }
            }
        }
    }
}

impl ValueInfo {
    /// The element type and dimensions (`None` for a symbolic or unknown size), if the type is recorded.
    pub(crate) fn tensor_shape(&self) -> Option<(i32, Vec<Option<i64>>)> {
        let t = self.r#type.as_ref()?.tensor_type.as_ref()?;
        let dims = t
            .shape
            .as_ref()
            .map(|s| {
                s.dim
                    .iter()
                    .map(|d| d.dim_value.filter(|v| *v > 0))
                    .collect()
            })
            .unwrap_or_default();
        Some((t.elem_type, dims))
    }
}
