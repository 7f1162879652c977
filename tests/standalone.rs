//! The repository stands alone: a clone needs nothing beside it. Every file the main job and the tests read
//! comes from the repository or from the data folder that `make data` fetches from package registries; no
//! tracked file reaches outside the clone for the team's shared folder (CI's clone has one beside it, so this
//! test looks at what the files say instead of hoping the folder is absent).
//!
//! Needs the `ground` feature (the default): the fake autopilot or the scenarios are the ground crate's.

#![cfg(feature = "ground")]

mod common;

use std::path::Path;
use std::process::Command;

use vimgeo::sim::scenario::Scenario;

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn no_tracked_file_refers_to_a_folder_beside_the_clone() {
    let out = Command::new("git")
        .args(["ls-files", "-z"])
        .current_dir(repo())
        .output()
        .expect("git must be installed to list the tracked files");
    assert!(out.status.success(), "git ls-files failed: {out:?}");
    // Built at run time so that this file does not match itself.
    let beside = ["..", "shared"].join("/");
    let mut offenders = Vec::new();
    let mut n = 0;
    for name in out.stdout.split(|&b| b == 0).filter(|n| !n.is_empty()) {
        let name = String::from_utf8_lossy(name).into_owned();
        let Ok(bytes) = std::fs::read(repo().join(&name)) else {
            continue; // deleted in the work tree
        };
        n += 1;
        if bytes.windows(beside.len()).any(|w| w == beside.as_bytes()) {
            offenders.push(name);
        }
    }
    assert!(n > 50, "only {n} tracked files: is this the repository?");
    assert!(
        offenders.is_empty(),
        "these tracked files refer to {beside}, which a user's clone does not have (name imagery as \
         data:imagery/NAME, see data/README.md): {offenders:?}"
    );
}

#[test]
fn the_bundled_scenario_flies_over_fetched_imagery() {
    let data = common::data_dir();
    let scenario = Scenario::load(&repo().join("sim/scenarios/yell-gnss-denied.toml"), &data)
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(
        scenario.ortho.starts_with(data.root()),
        "{} is not in the data folder {}",
        scenario.ortho.display(),
        data.root().display()
    );
    assert!(
        scenario.ortho.is_file(),
        "{}: run `make data`",
        scenario.ortho.display()
    );
    assert!(
        scenario.ortho.with_extension("pgw").is_file(),
        "the world file beside {}",
        scenario.ortho.display()
    );
}
