//! The companion-computer deployment in `deploy/`: the systemd unit passes `systemd-analyze verify`, the
//! install script is idempotent (a second run into the same root changes nothing) and refuses a model and a
//! tile cache that do not belong together before writing anything, and the udev rules parse.
//!
//! The install runs into a temporary root (`install.sh --root DIR`), never into `/`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::SystemTime;

use vimgeo::matching::{write_cache, CacheMeta, EmbeddingDtype, Tile};

fn deploy_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy")
}

fn fixture(name: &str) -> PathBuf {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests")
        .join("fixtures")
        .join(name);
    assert!(path.exists(), "fixture {} is missing", path.display());
    path
}

/// Whether `tool` runs here (`tool --version`).
fn have(tool: &str) -> bool {
    Command::new(tool)
        .arg("--version")
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

/// The manifest field `key` of a model's `<name>.json`.
fn manifest_field(model: &Path, key: &str) -> serde_json::Value {
    let text = std::fs::read_to_string(model.with_extension("json")).unwrap();
    let json: serde_json::Value = serde_json::from_str(&text).unwrap();
    json.pointer(key)
        .unwrap_or_else(|| panic!("manifest of {} has no {key}", model.display()))
        .clone()
}

/// A small tile cache whose recorded model is `model_sha256`, with `dim`-wide embeddings.
fn make_cache(path: &Path, model_sha256: &str, dim: usize) {
    let tiles: Vec<Tile> = (0..4)
        .map(|i| Tile {
            lat: 44.6 + i as f64 * 1e-3,
            lon: -110.5,
            ground_size_m: 100.0,
            scale: 1.0,
        })
        .collect();
    let embeddings: Vec<f32> = (0..tiles.len())
        .flat_map(|t| (0..dim).map(move |j| if j == t { 1.0 } else { 0.0 }))
        .collect();
    let mut meta = CacheMeta::new("vimgeo-test-custom", model_sha256);
    meta.crs = "EPSG:32612".into();
    meta.gsd_m = 0.1;
    meta.tile_px = 64;
    meta.stride = 0.5;
    meta.scales = vec![1.0];
    write_cache(path, &meta, &tiles, &embeddings, dim, EmbeddingDtype::F16).unwrap();
}

/// Everything `install.sh` needs, in a temp dir: a cache built for the fixture model (or for another model
/// when `matching` is false), config, calibration, a stand-in ONNX Runtime folder and the binary.
struct Inputs {
    _dir: tempfile::TempDir,
    model: PathBuf,
    cache: PathBuf,
    config: PathBuf,
    calib: PathBuf,
    ort_lib: PathBuf,
    /// A small script that execs the test's vimgeo, so the install copies kilobytes, not the debug build.
    binary: PathBuf,
}

fn inputs(matching: bool) -> Inputs {
    let dir = tempfile::tempdir().unwrap();
    let model = fixture("vimgeo-test-custom.onnx");
    let sha = manifest_field(&model, "/onnx_sha256");
    let sha = if matching {
        sha.as_str().unwrap().to_string()
    } else {
        "2".repeat(64)
    };
    let dim = manifest_field(&model, "/output/dim").as_u64().unwrap() as usize;
    let cache = dir.path().join("yell-forest.vgc");
    make_cache(&cache, &sha, dim);
    let config = dir.path().join("vimgeo.toml");
    std::fs::write(
        &config,
        "[model]\npath = \"/var/lib/vimgeo/models/vimgeo-test-custom.onnx\"\n\
         [cache]\npath = \"/var/lib/vimgeo/cache/yell-forest.vgc\"\n",
    )
    .unwrap();
    let calib = dir.path().join("camera.toml");
    std::fs::write(&calib, "# test calibration\nwidth = 640\nheight = 480\n").unwrap();
    let ort_lib = dir.path().join("ort");
    std::fs::create_dir(&ort_lib).unwrap();
    std::fs::write(ort_lib.join("libonnxruntime.so.1.20.0"), b"not really ELF").unwrap();
    std::fs::write(
        ort_lib.join("libonnxruntime_providers_shared.so"),
        b"not really ELF either",
    )
    .unwrap();
    let binary = dir.path().join("vimgeo");
    std::fs::write(
        &binary,
        format!(
            "#!/bin/sh\nexec '{}' \"$@\"\n",
            env!("CARGO_BIN_EXE_vimgeo")
        ),
    )
    .unwrap();
    set_mode(&binary, 0o755);
    Inputs {
        _dir: dir,
        model,
        cache,
        config,
        calib,
        ort_lib,
        binary,
    }
}

fn set_mode(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// Runs `deploy/install.sh --root ROOT` with `inputs` and `extra` arguments.
fn install(root: &Path, inputs: &Inputs, binary: &Path, extra: &[&str]) -> Output {
    Command::new("bash")
        .arg(deploy_dir().join("install.sh"))
        .arg("--root")
        .arg(root)
        .arg("--binary")
        .arg(binary)
        .arg("--config")
        .arg(&inputs.config)
        .arg("--model")
        .arg(&inputs.model)
        .arg("--cache")
        .arg(&inputs.cache)
        .arg("--calib")
        .arg(&inputs.calib)
        .arg("--ort-lib")
        .arg(&inputs.ort_lib)
        .args(extra)
        .output()
        .expect("run deploy/install.sh")
}

/// Every path under `root` with its kind, mode, size, mtime and (for files) content.
type Snapshot = BTreeMap<PathBuf, (u32, u64, SystemTime, Option<Vec<u8>>)>;

fn snapshot(root: &Path) -> Snapshot {
    use std::os::unix::fs::PermissionsExt;
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            let meta = std::fs::symlink_metadata(&path).unwrap();
            let content = if meta.is_file() {
                Some(std::fs::read(&path).unwrap())
            } else {
                None
            };
            if meta.is_dir() {
                stack.push(path.clone());
            }
            out.insert(
                path.strip_prefix(root).unwrap().to_path_buf(),
                (
                    meta.permissions().mode(),
                    meta.len(),
                    meta.modified().unwrap(),
                    content,
                ),
            );
        }
    }
    out
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn unit_passes_systemd_analyze_verify() {
    if !have("systemd-analyze") {
        eprintln!("skipped: systemd-analyze is not installed, the unit is not verified");
        return;
    }
    // `verify` checks that ExecStart's binary exists and is executable: render the unit with the test's
    // binary in place of /opt/vimgeo/bin/vimgeo, with the drop-ins that install.sh may add beside it.
    let dir = tempfile::tempdir().unwrap();
    let unit = std::fs::read_to_string(deploy_dir().join("systemd/vimgeo.service")).unwrap();
    assert!(unit.contains("ExecStart=/opt/vimgeo/bin/vimgeo run --config /etc/vimgeo/vimgeo.toml"));
    let rendered = unit.replace("/opt/vimgeo/bin/vimgeo", env!("CARGO_BIN_EXE_vimgeo"));
    let path = dir.path().join("vimgeo.service");
    std::fs::write(&path, rendered).unwrap();
    let dropins = dir.path().join("vimgeo.service.d");
    std::fs::create_dir(&dropins).unwrap();
    std::fs::copy(
        deploy_dir().join("systemd/vimgeo.service.d/jetson-gpu.conf"),
        dropins.join("jetson-gpu.conf"),
    )
    .unwrap();
    // backoff.conf's keys exist from systemd 254 on; older ones would (rightly) warn about them.
    let version = Command::new("systemd-analyze")
        .arg("--version")
        .output()
        .unwrap();
    let version: u32 = text(&version.stdout)
        .split_whitespace()
        .nth(1)
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    if version >= 254 {
        std::fs::copy(
            deploy_dir().join("systemd/vimgeo.service.d/backoff.conf"),
            dropins.join("backoff.conf"),
        )
        .unwrap();
    }

    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&path)
        .output()
        .unwrap();
    let stderr = text(&out.stderr);
    assert!(
        out.status.success(),
        "systemd-analyze verify failed: {stderr}"
    );
    // Unknown keys and bad values are only warnings (exit 0): any line about our unit is a failure.
    let ours: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("vimgeo") || l.contains(&*dir.path().to_string_lossy()))
        .collect();
    assert!(
        ours.is_empty(),
        "systemd {version} warns about the unit:\n{}",
        ours.join("\n")
    );
}

#[test]
fn install_twice_into_a_root_changes_nothing_the_second_time() {
    let inputs = inputs(true);
    let root = tempfile::tempdir().unwrap();
    let bin = env!("CARGO_BIN_EXE_vimgeo");
    let first = install(
        root.path(),
        &inputs,
        &inputs.binary,
        &["--verify-with", bin],
    );
    assert!(
        first.status.success(),
        "first install failed:\n{}\n{}",
        text(&first.stdout),
        text(&first.stderr)
    );
    let stdout = text(&first.stdout);
    assert!(
        stdout.contains("updated   /opt/vimgeo/bin/vimgeo"),
        "{stdout}"
    );
    assert!(
        stdout.contains("matches") || stdout.contains("ok: "),
        "no model/cache check reported:\n{stdout}"
    );

    // The layout, with the inputs' bytes.
    let r = root.path();
    for (installed, source) in [
        ("opt/vimgeo/bin/vimgeo", inputs.binary.clone()),
        ("etc/vimgeo/vimgeo.toml", inputs.config.clone()),
        ("etc/vimgeo/camera.toml", inputs.calib.clone()),
        (
            "var/lib/vimgeo/models/vimgeo-test-custom.onnx",
            inputs.model.clone(),
        ),
        (
            "var/lib/vimgeo/models/vimgeo-test-custom.json",
            inputs.model.with_extension("json"),
        ),
        ("var/lib/vimgeo/cache/yell-forest.vgc", inputs.cache.clone()),
        (
            "opt/vimgeo/lib/libonnxruntime.so.1.20.0",
            inputs.ort_lib.join("libonnxruntime.so.1.20.0"),
        ),
        (
            "etc/systemd/system/vimgeo.service",
            deploy_dir().join("systemd/vimgeo.service"),
        ),
        (
            "etc/udev/rules.d/99-vimgeo.rules",
            deploy_dir().join("udev/99-vimgeo.rules"),
        ),
        (
            "etc/sysusers.d/vimgeo.conf",
            deploy_dir().join("sysusers.d/vimgeo.conf"),
        ),
        (
            "etc/tmpfiles.d/vimgeo.conf",
            deploy_dir().join("tmpfiles.d/vimgeo.conf"),
        ),
    ] {
        assert_eq!(
            std::fs::read(r.join(installed)).unwrap_or_default(),
            std::fs::read(&source).unwrap(),
            "{installed} is not a copy of {}",
            source.display()
        );
    }
    let env = std::fs::read_to_string(r.join("etc/vimgeo/vimgeo.env")).unwrap();
    assert!(
        env.contains("ORT_DYLIB_PATH=/opt/vimgeo/lib/libonnxruntime.so.1.20.0"),
        "{env}"
    );
    for dir in ["var/lib/vimgeo/trt-cache", "var/lib/vimgeo/state"] {
        assert!(r.join(dir).is_dir(), "{dir} was not created");
    }
    // The installed binary runs (the wrapper execs the test's build).
    let version = Command::new(r.join("opt/vimgeo/bin/vimgeo"))
        .arg("version")
        .output()
        .unwrap();
    assert!(version.status.success());

    let before = snapshot(r);
    let second = install(r, &inputs, &inputs.binary, &["--verify-with", bin]);
    let stdout = text(&second.stdout);
    assert!(
        second.status.success(),
        "second install failed:\n{stdout}\n{}",
        text(&second.stderr)
    );
    let changed: Vec<&str> = stdout
        .lines()
        .filter(|l| l.starts_with("updated") || l.starts_with("created"))
        .collect();
    assert!(
        changed.is_empty(),
        "the second run changed:\n{}",
        changed.join("\n")
    );
    assert!(
        stdout.contains("unchanged /opt/vimgeo/bin/vimgeo"),
        "{stdout}"
    );
    assert!(stdout.contains("install.sh: 0 updated"), "{stdout}");
    let after = snapshot(r);
    assert_eq!(
        before.keys().collect::<Vec<_>>(),
        after.keys().collect::<Vec<_>>(),
        "the second run added or removed files"
    );
    for (path, was) in &before {
        assert!(
            after[path] == *was,
            "{} changed (mode, size, mtime or content) on the second run",
            path.display()
        );
    }
}

#[test]
fn mismatched_model_and_cache_are_refused_before_anything_is_installed() {
    let inputs = inputs(false);
    // Checked three ways: by the binary being installed (native here), with --verify-with, and in shell.
    let bin = PathBuf::from(env!("CARGO_BIN_EXE_vimgeo"));
    let cases: [(&str, &Path, &[&str]); 3] = [
        ("binary", &bin, &[]),
        (
            "verify-with",
            &inputs.binary,
            &["--verify-with", env!("CARGO_BIN_EXE_vimgeo")],
        ),
        ("shell", &inputs.binary, &["--verify-in-shell"]),
    ];
    for (how, binary, extra) in cases {
        let root = tempfile::tempdir().unwrap();
        let out = install(root.path(), &inputs, binary, extra);
        let stderr = text(&out.stderr);
        assert!(
            !out.status.success(),
            "{how}: a mismatched pair was installed:\n{}",
            text(&out.stdout)
        );
        for named in [&inputs.cache, &inputs.model] {
            assert!(
                stderr.contains(&*named.to_string_lossy()),
                "{how}: the refusal does not name {}:\n{stderr}",
                named.display()
            );
        }
        assert!(stderr.contains("nothing installed"), "{how}: {stderr}");
        assert_eq!(
            std::fs::read_dir(root.path()).unwrap().count(),
            0,
            "{how}: something was written into the root before the refusal"
        );
    }
    // The shell check accepts the matching pair (the other paths are covered by the idempotence test).
    let good = self::inputs(true);
    let root = tempfile::tempdir().unwrap();
    let out = install(root.path(), &good, &good.binary, &["--verify-in-shell"]);
    assert!(
        out.status.success(),
        "the shell check refused a matching pair:\n{}",
        text(&out.stderr)
    );
    assert!(text(&out.stdout).contains("in shell"));
}

/// One udev rule: its `KEY{ATTR}`/`KEY`, operator and value, in order.
fn parse_rule(line: &str) -> Result<Vec<(String, String, String)>, String> {
    let mut out = Vec::new();
    let mut rest = line.trim();
    while !rest.is_empty() {
        let key_end = rest
            .find(['=', '!', '+', '-', ':'])
            .ok_or_else(|| format!("no operator after '{rest}'"))?;
        let key = rest[..key_end].trim().to_string();
        let after = &rest[key_end..];
        let op = ["==", "!=", "+=", "-=", ":=", "="]
            .into_iter()
            .find(|op| after.starts_with(op))
            .ok_or_else(|| format!("bad operator in '{after}'"))?;
        let after = after[op.len()..].trim_start();
        let after = after
            .strip_prefix('"')
            .ok_or_else(|| format!("value of {key} is not quoted"))?;
        let close = after
            .find('"')
            .ok_or_else(|| format!("value of {key} has no closing quote"))?;
        out.push((key, op.to_string(), after[..close].to_string()));
        rest = after[close + 1..].trim_start();
        if !rest.is_empty() {
            rest = rest
                .strip_prefix(',')
                .ok_or_else(|| format!("missing ',' before '{rest}'"))?
                .trim_start();
        }
    }
    Ok(out)
}

#[test]
fn udev_rules_parse_and_name_both_devices() {
    let path = deploy_dir().join("udev/99-vimgeo.rules");
    if have("udevadm") {
        // `udevadm verify` exists from systemd 254 on.
        let out = Command::new("udevadm")
            .arg("verify")
            .arg(&path)
            .output()
            .unwrap();
        if !text(&out.stderr).contains("Unknown command") {
            assert!(
                out.status.success(),
                "udevadm verify: {}{}",
                text(&out.stdout),
                text(&out.stderr)
            );
        }
    }
    // Our own check, always: active rules and the commented-out examples (uncommented, they must work too).
    let text = std::fs::read_to_string(&path).unwrap();
    let match_keys = [
        "SUBSYSTEM",
        "KERNEL",
        "ATTR",
        "ATTRS",
        "ENV",
        "DRIVERS",
        "SUBSYSTEMS",
    ];
    let assign_keys = ["SYMLINK", "GROUP", "MODE", "TAG", "ENV", "OWNER"];
    let mut active_names = Vec::new();
    let mut rules = 0;
    for (n, line) in text.lines().enumerate() {
        let trimmed = line.trim();
        let (active, body) = match trimmed.strip_prefix('#') {
            Some(body) if body.starts_with("SUBSYSTEM") => (false, body),
            Some(_) => continue,
            None if trimmed.is_empty() => continue,
            None => (true, trimmed),
        };
        let rule = parse_rule(body).unwrap_or_else(|e| panic!("line {}: {e}: {line}", n + 1));
        rules += 1;
        let mut symlink = None;
        for (key, op, value) in &rule {
            let base = key.split('{').next().unwrap();
            let is_match = op == "==" || op == "!=";
            let known = if is_match {
                match_keys.contains(&base)
            } else {
                assign_keys.contains(&base)
            };
            assert!(
                known,
                "line {}: {key}{op} is not a known udev key/operator",
                n + 1
            );
            if key.contains('{') {
                assert!(
                    key.ends_with('}'),
                    "line {}: unbalanced braces in {key}",
                    n + 1
                );
            }
            if base == "SYMLINK" {
                symlink = Some(value.clone());
            }
        }
        let has = |k: &str, v: &str| rule.iter().any(|(key, _, val)| key == k && val == v);
        let symlink = symlink.unwrap_or_else(|| panic!("line {}: no SYMLINK+=", n + 1));
        assert!(
            symlink == "vimgeo-camera" || symlink == "vimgeo-fc",
            "line {}: unexpected name {symlink}",
            n + 1
        );
        assert!(has("MODE", "0660"), "line {}: MODE must be 0660", n + 1);
        assert!(
            has("TAG", "systemd"),
            "line {}: needs TAG+=\"systemd\"",
            n + 1
        );
        let group = if symlink == "vimgeo-camera" {
            "video"
        } else {
            "dialout"
        };
        assert!(has("GROUP", group), "line {}: GROUP must be {group}", n + 1);
        if active {
            active_names.push(symlink);
        }
    }
    assert!(
        rules >= 5,
        "expected the rules plus their examples, found {rules}"
    );
    active_names.sort();
    assert_eq!(
        active_names,
        ["vimgeo-camera", "vimgeo-fc"],
        "exactly one active rule per stable name"
    );
}

#[test]
fn deploy_scripts_parse() {
    for script in ["install.sh", "build-aarch64.sh"] {
        let out = Command::new("bash")
            .arg("-n")
            .arg(deploy_dir().join(script))
            .output()
            .unwrap();
        assert!(out.status.success(), "{script}: {}", text(&out.stderr));
        let help = Command::new("bash")
            .arg(deploy_dir().join(script))
            .arg("--help")
            .output()
            .unwrap();
        assert!(help.status.success(), "{script} --help failed");
        assert!(!help.stdout.is_empty(), "{script} --help printed nothing");
    }
}
