//! Decoding our frames with pymavlink, the independent MAVLink implementation, through
//! `tests/pymavlink_decode.py` in the project's Python environment (`VIMGEO_PYTHON`, exported by the Makefile).

#![allow(dead_code)] // each test binary uses its own subset

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

use serde_json::Value;

/// Decodes each frame with pymavlink; one JSON object per frame (see the script for the keys).
pub fn decode(frames: &[Vec<u8>]) -> Vec<Value> {
    decode_signed(frames, None)
}

/// Like [`decode`], with pymavlink verifying MAVLink 2 signatures under `key_hex` (64 hex digits) when given:
/// each object then has `_signed` and `_signature_ok`.
pub fn decode_signed(frames: &[Vec<u8>], key_hex: Option<&str>) -> Vec<Value> {
    let python = std::env::var_os("VIMGEO_PYTHON").unwrap_or_else(|| {
        panic!(
            "VIMGEO_PYTHON is not set: run the tests through `make test-rust`, or set it to the project's \
             Python (e.g. VIMGEO_PYTHON=$(make -s print-python)), which has pymavlink installed"
        )
    });
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/pymavlink_decode.py");
    let mut child = Command::new(&python)
        .arg(&script)
        .args(key_hex.map(|k| ["--key-hex", k]).into_iter().flatten())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| {
            panic!(
                "cannot run {} {}: {e}",
                python.to_string_lossy(),
                script.display()
            )
        });
    let mut input = String::new();
    for f in frames {
        for b in f {
            input.push_str(&format!("{b:02x}"));
        }
        input.push('\n');
    }
    child
        .stdin
        .take()
        .expect("stdin is piped")
        .write_all(input.as_bytes())
        .expect("write frames to pymavlink");
    let out = child
        .wait_with_output()
        .expect("pymavlink decoder finished");
    assert!(
        out.status.success(),
        "pymavlink decoder failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let values: Vec<Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("decoder prints JSON"))
        .collect();
    assert_eq!(values.len(), frames.len(), "one decoded object per frame");
    values
}
