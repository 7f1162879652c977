//! The `vimgeo` binary starts and reports its build.

use std::process::Command;

#[test]
fn version_subcommand_prints_crate_version() {
    let out = Command::new(env!("CARGO_BIN_EXE_vimgeo"))
        .arg("version")
        .output()
        .expect("run vimgeo");
    assert!(out.status.success(), "vimgeo version failed: {out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.starts_with(&format!("vimgeo {}", env!("CARGO_PKG_VERSION"))),
        "unexpected output: {text}"
    );
}
