//! Opening a model: the ONNX bytes, checked against their manifest, ready for an engine.
//!
//! [`CheckedModel::open`] reads the manifest and the ONNX file once, hashes the bytes, and compares the graph
//! (input, output, custom operators) with what the manifest promises. Engines build from the checked bytes
//! themselves, so what runs is exactly what was checked.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use sha2::{Digest, Sha256};

use super::error::ModelError;
use super::manifest::{ModelManifest, ScanForm};
use super::onnx_graph::{ModelProto, ELEM_TYPE_FLOAT};
use super::scan_op::{SCAN_DOMAIN, SCAN_OP};
use crate::util::hex;

/// Operator domains every ONNX runtime implements.
const STANDARD_DOMAINS: [&str; 3] = ["", "ai.onnx", "ai.onnx.ml"];

/// A model whose ONNX bytes match their manifest.
#[derive(Clone)]
pub struct CheckedModel {
    manifest: ModelManifest,
    manifest_path: PathBuf,
    onnx_path: PathBuf,
    /// Shared so that trying one engine and falling back to another does not copy the model.
    bytes: Arc<[u8]>,
    scan_nodes: usize,
    fixed_batch: Option<usize>,
}

impl std::fmt::Debug for CheckedModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CheckedModel")
            .field("onnx_path", &self.onnx_path)
            .field("manifest", &self.manifest.name)
            .field("bytes", &self.bytes.len())
            .finish()
    }
}

impl CheckedModel {
    /// Opens `path` (the `.onnx` file, or its `.json` manifest) and checks it.
    ///
    /// Checked, in order: the manifest exists and is a `vimgeo-model` of a known version with exactly the
    /// expected keys; the ONNX file's SHA-256 equals `onnx_sha256`; the graph has the manifest's input (name,
    /// float32, 3 x height x width where the graph fixes them) and output (name, embedding size); and the
    /// custom operators in the graph are exactly those of `custom_ops` (none unless `scan_form` is `custom`).
    pub fn open(path: &Path) -> Result<CheckedModel, ModelError> {
        let (manifest_path, onnx_path, manifest) = if path.extension().is_some_and(|e| e == "json")
        {
            let manifest = ModelManifest::read(path)?;
            let onnx = path.with_file_name(&manifest.onnx_file);
            (path.to_path_buf(), onnx, manifest)
        } else {
            let manifest_path = ModelManifest::path_for_model(path);
            let manifest = ModelManifest::read(&manifest_path)?;
            if path.file_name().is_some_and(|n| *n != *manifest.onnx_file) {
                log::warn!(
                    "{} describes {:?}; using it for {} (the SHA-256 decides whether they match)",
                    manifest_path.display(),
                    manifest.onnx_file,
                    path.display()
                );
            }
            (manifest_path, path.to_path_buf(), manifest)
        };
        let bytes = std::fs::read(&onnx_path).map_err(|source| ModelError::Io {
            path: onnx_path.clone(),
            source,
        })?;
        let actual = hex(&Sha256::digest(&bytes));
        if actual != manifest.onnx_sha256 {
            return Err(ModelError::Sha256Mismatch {
                path: onnx_path,
                manifest: manifest_path,
                expected: manifest.onnx_sha256.clone(),
                actual,
            });
        }
        let bytes = Arc::from(bytes);
        let mut model = CheckedModel {
            manifest,
            manifest_path,
            onnx_path,
            bytes,
            scan_nodes: 0,
            fixed_batch: None,
        };
        model.check_graph()?;
        Ok(model)
    }

    /// The manifest.
    pub fn manifest(&self) -> &ModelManifest {
        &self.manifest
    }

    /// The ONNX file.
    pub fn onnx_path(&self) -> &Path {
        &self.onnx_path
    }

    /// The manifest file.
    pub fn manifest_path(&self) -> &Path {
        &self.manifest_path
    }

    /// The checked ONNX bytes (empty once an engine has been built from them).
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// This model without its bytes, for an engine to keep once it has built its graph from them.
    pub(crate) fn without_bytes(&self) -> CheckedModel {
        CheckedModel {
            bytes: Arc::from(Vec::new()),
            ..self.clone()
        }
    }

    /// How many `vimgeo::SelectiveScan` nodes the graph holds.
    pub fn scan_nodes(&self) -> usize {
        self.scan_nodes
    }

    /// The batch size the graph fixes, or `None` when the batch dimension is symbolic.
    pub fn fixed_batch(&self) -> Option<usize> {
        self.fixed_batch
    }

    fn check_graph(&mut self) -> Result<(), ModelError> {
        let path = &self.onnx_path;
        let proto = ModelProto::decode_model(&self.bytes).map_err(|e| ModelError::OnnxParse {
            path: path.clone(),
            reason: e.to_string(),
        })?;
        let graph = proto.graph.as_ref().ok_or_else(|| ModelError::OnnxParse {
            path: path.clone(),
            reason: "the model holds no graph".into(),
        })?;
        let manifest = &self.manifest;

        // Input: the one graph input that is not an initializer.
        let initializers: BTreeSet<&str> =
            graph.initializer.iter().map(|t| t.name.as_str()).collect();
        let inputs: Vec<_> = graph
            .input
            .iter()
            .filter(|i| !initializers.contains(i.name.as_str()))
            .collect();
        let input_mismatch = |reason: String| ModelError::InputMismatch {
            path: path.clone(),
            reason,
        };
        let [input] = inputs.as_slice() else {
            let names: Vec<_> = inputs.iter().map(|i| i.name.as_str()).collect();
            return Err(input_mismatch(format!(
                "expected one input {:?}, graph has {names:?}",
                manifest.input.name
            )));
        };
        if input.name != manifest.input.name {
            return Err(input_mismatch(format!(
                "manifest names input {:?}, graph input is {:?}",
                manifest.input.name, input.name
            )));
        }
        if let Some((elem, dims)) = input.tensor_shape() {
            if elem != ELEM_TYPE_FLOAT {
                return Err(input_mismatch(format!(
                    "input {:?} has ONNX element type {elem}, not float32",
                    input.name
                )));
            }
            let expected = [
                None,
                Some(3),
                Some(manifest.input.height.into()),
                Some(manifest.input.width.into()),
            ];
            let agrees = dims.len() == 4
                && dims
                    .iter()
                    .zip(expected)
                    .all(|(got, want)| got.is_none() || want.is_none() || *got == want);
            if !dims.is_empty() && !agrees {
                return Err(input_mismatch(format!(
                    "manifest says N x 3 x {} x {}, graph input {:?} is {}",
                    manifest.input.height,
                    manifest.input.width,
                    input.name,
                    show_dims(&dims)
                )));
            }
            self.fixed_batch = dims.first().copied().flatten().map(|b| b as usize);
        }

        // Output: the manifest's, with the embedding size as its last dimension.
        let output_mismatch = |reason: String| ModelError::OutputMismatch {
            path: path.clone(),
            reason,
        };
        let Some(output) = graph.output.iter().find(|o| o.name == manifest.output.name) else {
            let names: Vec<_> = graph.output.iter().map(|o| o.name.as_str()).collect();
            return Err(output_mismatch(format!(
                "manifest names output {:?}, graph outputs are {names:?}",
                manifest.output.name
            )));
        };
        match output.tensor_shape() {
            Some((_, dims)) if !dims.is_empty() => match dims.last().copied().flatten() {
                Some(dim) if dim != i64::from(manifest.output.dim) => {
                    return Err(output_mismatch(format!(
                        "manifest says embedding dim {}, graph output {:?} is {}",
                        manifest.output.dim,
                        output.name,
                        show_dims(&dims)
                    )));
                }
                Some(_) => {}
                None => log::warn!(
                    "{}: output {:?} has a symbolic last dimension; its size is checked on the first frame",
                    path.display(),
                    output.name
                ),
            },
            _ => log::warn!(
                "{}: output {:?} has no recorded shape; its size is checked on the first frame",
                path.display(),
                output.name
            ),
        }

        // Custom operators: present if and only if the manifest says the scan is in custom form.
        let mut custom = BTreeSet::new();
        let mut scan_nodes = 0;
        graph.visit_nodes(&mut |node| {
            if !STANDARD_DOMAINS.contains(&node.domain.as_str()) {
                custom.insert((node.domain.clone(), node.op_type.clone()));
            }
            if node.domain == SCAN_DOMAIN && node.op_type == SCAN_OP {
                scan_nodes += 1;
            }
        });
        let declared: BTreeSet<_> = manifest
            .custom_ops
            .iter()
            .map(|c| (c.domain.clone(), c.op.clone()))
            .collect();
        let show = |set: &BTreeSet<(String, String)>| {
            set.iter()
                .map(|(d, o)| format!("{d}::{o}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let scan_mismatch = |found: String| ModelError::ScanFormMismatch {
            path: path.clone(),
            declared: manifest.scan_form,
            found,
        };
        match manifest.scan_form {
            ScanForm::Custom if scan_nodes == 0 => {
                return Err(scan_mismatch(format!(
                    "has no {SCAN_DOMAIN}::{SCAN_OP} node"
                )));
            }
            ScanForm::Custom if custom != declared => {
                return Err(scan_mismatch(format!(
                    "uses custom ops [{}] while the manifest lists [{}]",
                    show(&custom),
                    show(&declared)
                )));
            }
            ScanForm::Portable | ScanForm::None if !custom.is_empty() => {
                return Err(scan_mismatch(format!(
                    "uses custom ops [{}]",
                    show(&custom)
                )));
            }
            _ => {}
        }
        for op in &manifest.custom_ops {
            let imported = proto
                .opset_import
                .iter()
                .find(|o| o.domain == op.domain)
                .map(|o| o.version);
            if imported != Some(i64::from(op.version)) {
                return Err(scan_mismatch(format!(
                    "imports domain {:?} at version {}, the manifest lists version {}",
                    op.domain,
                    imported.map_or("none".into(), |v| v.to_string()),
                    op.version
                )));
            }
        }
        let opset = proto
            .opset_import
            .iter()
            .find(|o| o.domain.is_empty() || o.domain == "ai.onnx")
            .map(|o| o.version);
        if opset != Some(i64::from(manifest.opset)) {
            log::warn!(
                "{}: graph imports opset {opset:?}, manifest says {}",
                path.display(),
                manifest.opset
            );
        }
        self.scan_nodes = scan_nodes;
        Ok(())
    }
}

fn show_dims(dims: &[Option<i64>]) -> String {
    let parts: Vec<_> = dims
        .iter()
        .map(|d| d.map_or("?".to_string(), |v| v.to_string()))
        .collect();
    format!("[{}]", parts.join(", "))
}
