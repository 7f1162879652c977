//! Finding and loading ONNX Runtime's shared library (`libonnxruntime.so`) at run time.
//!
//! Nothing is linked at build time (`ort`'s `load-dynamic`): the library comes from, in order,
//! 1. an explicit path (`--ort-lib`, or the config file),
//! 2. `ORT_DYLIB_PATH`,
//! 3. a Python environment's `onnxruntime` wheel: `$VIRTUAL_ENV`, then the project's cached
//!    `~/.cache/vimgeo/venv-*` environments.
//!
//! [`OrtLibrary::locate`] takes those values as arguments (the binary reads the environment, the library
//! never does). A path from 1 or 2 is used as given: if it does not load, that is an error, not a reason
//! to try the next place. [`OrtLibrary::load`] opens the library itself first and checks that it is ONNX
//! Runtime and new enough, so that a wrong file is a [`OrtLibraryError`], never a panic inside `ort`.

use std::ffi::{c_char, CStr};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

use super::error::OrtLibraryError;

/// The oldest ONNX Runtime minor version (1.x) whose C API this build uses.
pub const MIN_ORT_MINOR: u32 = ort::MINOR_VERSION;

/// Where to look for the library: the raw values, resolved by [`OrtLibrary::locate`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OrtLibrarySearch {
    /// An explicitly configured library (`--ort-lib`); used as is.
    pub explicit: Option<PathBuf>,
    /// The value of `ORT_DYLIB_PATH`, if set and not empty; used as is.
    pub env_dylib_path: Option<PathBuf>,
    /// The value of `VIRTUAL_ENV`: an active Python environment to search.
    pub virtual_env: Option<PathBuf>,
    /// The user's home directory, for the project's cached environments under `~/.cache/vimgeo/`.
    pub home: Option<PathBuf>,
}

/// A library path chosen by [`OrtLibrary::locate`], with where it came from (for messages).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrtLibraryCandidate {
    /// The library file.
    pub path: PathBuf,
    /// Where the path came from: `--ort-lib`, `ORT_DYLIB_PATH`, or the Python environment searched.
    pub origin: String,
}

/// ONNX Runtime, loaded and checked; the process-wide handle every ORT encoder is built from.
#[derive(Debug, Clone)]
pub struct OrtLibrary {
    path: PathBuf,
    version: String,
    environment: ort::environment::Environment,
}

/// The library this process has loaded (ONNX Runtime cannot be unloaded or loaded twice).
static LOADED: OnceLock<OrtLibrary> = OnceLock::new();
/// Serialises loading, so two threads cannot race two different libraries into `ort`.
static LOADING: Mutex<()> = Mutex::new(());

impl OrtLibrarySearch {
    /// The search the `vimgeo` binary makes: `explicit` (its `--ort-lib`), then the variables
    /// `ORT_DYLIB_PATH`, `VIRTUAL_ENV` and `HOME` as `var` reports them (empty counts as unset). The caller
    /// passes its environment in (`|name| std::env::var_os(name)`), so tests can reproduce the binary's
    /// search, or another environment, exactly.
    pub fn from_vars(
        explicit: Option<PathBuf>,
        var: impl Fn(&str) -> Option<std::ffi::OsString>,
    ) -> OrtLibrarySearch {
        let path = |name: &str| var(name).filter(|v| !v.is_empty()).map(PathBuf::from);
        OrtLibrarySearch {
            explicit,
            env_dylib_path: path("ORT_DYLIB_PATH"),
            virtual_env: path("VIRTUAL_ENV"),
            home: path("HOME"),
        }
    }
}

impl OrtLibrary {
    /// Picks the library to load from the search values; see the module documentation for the order.
    pub fn locate(search: &OrtLibrarySearch) -> Result<OrtLibraryCandidate, OrtLibraryError> {
        if let Some(path) = &search.explicit {
            return Ok(OrtLibraryCandidate {
                path: path.clone(),
                origin: "--ort-lib".into(),
            });
        }
        if let Some(path) = &search.env_dylib_path {
            return Ok(OrtLibraryCandidate {
                path: path.clone(),
                origin: "ORT_DYLIB_PATH".into(),
            });
        }
        let mut searched = Vec::new();
        if let Some(venv) = &search.virtual_env {
            searched.push(venv.clone());
            if let Some(path) = find_in_python_env(venv) {
                return Ok(OrtLibraryCandidate {
                    path,
                    origin: format!("VIRTUAL_ENV {}", venv.display()),
                });
            }
        }
        if let Some(home) = &search.home {
            // The Makefile keys each environment on the hash of models/requirements.txt, so several may
            // exist after the pins change: take the newest ONNX Runtime among them.
            let cache = home.join(".cache").join("vimgeo");
            searched.push(cache.join("venv-*"));
            let newest = read_dir_names(&cache)
                .into_iter()
                .filter(|n| n.starts_with("venv-"))
                .filter_map(|n| {
                    find_in_python_env(&cache.join(&n)).map(|lib| (version_key(&lib), lib, n))
                })
                .max();
            if let Some((_, path, venv)) = newest {
                let origin = format!("Python environment {}", cache.join(venv).display());
                return Ok(OrtLibraryCandidate { path, origin });
            }
        }
        Err(OrtLibraryError::NotFound { searched })
    }

    /// Loads and checks the library, once per process; a later call with the same path returns the same
    /// handle, a call with another path is refused (ONNX Runtime is process-global).
    pub fn load(candidate: &OrtLibraryCandidate) -> Result<OrtLibrary, OrtLibraryError> {
        let _guard = LOADING
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(loaded) = LOADED.get() {
            return if same_file(&loaded.path, &candidate.path) {
                Ok(loaded.clone())
            } else {
                Err(OrtLibraryError::AlreadyLoaded {
                    loaded: loaded.path.clone(),
                    requested: candidate.path.clone(),
                })
            };
        }
        let path = absolute(&candidate.path);
        let version = probe(&path, &candidate.origin)?;
        let builder = ort::init_from(&path).map_err(|e| OrtLibraryError::Unusable {
            path: path.clone(),
            origin: candidate.origin.clone(),
            reason: e.to_string(),
        })?;
        let environment = builder
            .with_name("vimgeo")
            .with_telemetry(false)
            .build()
            .map_err(|source| OrtLibraryError::Init {
                path: path.clone(),
                source,
            })?;
        log::info!(
            "ONNX Runtime {version} loaded from {} ({})",
            path.display(),
            candidate.origin
        );
        let library = OrtLibrary {
            path,
            version,
            environment,
        };
        Ok(LOADED.get_or_init(|| library).clone())
    }

    /// The library file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// ONNX Runtime's version string, e.g. `1.32.0`.
    pub fn version(&self) -> &str {
        &self.version
    }

    /// The ONNX Runtime environment sessions are created in.
    pub(crate) fn environment(&self) -> &ort::environment::Environment {
        &self.environment
    }
}

/// Opens the library with the system loader and asks it for its version, without handing it to `ort`:
/// every way it can be wrong becomes an error here. The handle is kept open for the process's lifetime
/// (`ort` opens the same file again, which the loader reference-counts).
fn probe(path: &Path, origin: &str) -> Result<String, OrtLibraryError> {
    let unusable = |reason: String| OrtLibraryError::Unusable {
        path: path.to_path_buf(),
        origin: origin.into(),
        reason,
    };
    if !path.exists() {
        return Err(OrtLibraryError::Load {
            path: path.to_path_buf(),
            origin: origin.into(),
            reason: "no such file".into(),
        });
    }
    // SAFETY: loading a shared library runs its initialisers; this is the library the user pointed us at,
    // which is the trust `load-dynamic` rests on anyway.
    let library = unsafe { libloading::Library::new(path) }.map_err(|e| OrtLibraryError::Load {
        path: path.to_path_buf(),
        origin: origin.into(),
        reason: with_sources(&e),
    })?;
    type GetApiBase = unsafe extern "C" fn() -> *const ort::sys::OrtApiBase;
    // SAFETY: `OrtGetApiBase` has this signature in every ONNX Runtime release.
    let get_api_base = unsafe { library.get::<GetApiBase>(b"OrtGetApiBase\0") }.map_err(|_| {
        unusable("it does not export OrtGetApiBase (not an ONNX Runtime library)".into())
    })?;
    // SAFETY: the function takes no arguments and returns a pointer to a static table (or null).
    let base = unsafe { get_api_base() };
    if base.is_null() {
        return Err(unusable("OrtGetApiBase returned null".into()));
    }
    // SAFETY: `base` is non-null and points at the library's static `OrtApiBase`.
    let version_ptr: *const c_char = unsafe { ((*base).GetVersionString)() };
    if version_ptr.is_null() {
        return Err(unusable("GetVersionString returned null".into()));
    }
    // SAFETY: a NUL-terminated static string owned by the library, which stays loaded.
    let version = unsafe { CStr::from_ptr(version_ptr) }
        .to_string_lossy()
        .into_owned();
    if !version_is_supported(&version) {
        return Err(unusable(format!(
            "version {version} is too old or unrecognised; vimgeo needs ONNX Runtime 1.{MIN_ORT_MINOR} or newer"
        )));
    }
    // SAFETY: as above; `GetApi` returns null for an API version the library does not provide.
    let api = unsafe { ((*base).GetApi)(ort::sys::ORT_API_VERSION) };
    if api.is_null() {
        return Err(unusable(format!(
            "it does not provide C API version {}",
            ort::sys::ORT_API_VERSION
        )));
    }
    std::mem::forget(library);
    Ok(version)
}

/// Whether an ONNX Runtime version string (`1.32.0`) provides the C API this build uses. A 2.x would
/// need a new `ort`, so it is refused too rather than trusted.
fn version_is_supported(version: &str) -> bool {
    let mut parts = version.split('.');
    let major = parts.next();
    let minor = parts.next().and_then(|m| m.parse::<u32>().ok());
    matches!((major, minor), (Some("1"), Some(minor)) if minor >= MIN_ORT_MINOR)
}

/// `<root>/lib/python3*/site-packages/onnxruntime/capi/libonnxruntime.so*`, newest version first.
fn find_in_python_env(root: &Path) -> Option<PathBuf> {
    let lib = root.join("lib");
    let mut found: Vec<PathBuf> = Vec::new();
    for python in read_dir_names(&lib)
        .into_iter()
        .filter(|n| n.starts_with("python3"))
    {
        let capi = lib
            .join(python)
            .join("site-packages")
            .join("onnxruntime")
            .join("capi");
        for name in read_dir_names(&capi) {
            if name.starts_with("libonnxruntime.so") {
                found.push(capi.join(name));
            }
        }
    }
    // Prefer the most specific versioned name (libonnxruntime.so.1.32.0 over a libonnxruntime.so link),
    // and among versions the newest.
    found.sort_by_key(|p| version_key(p));
    found.pop()
}

/// Sort key of `libonnxruntime.so.X.Y.Z`: the numeric version (empty for the bare `.so`).
fn version_key(path: &Path) -> Vec<u64> {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    name.trim_start_matches("libonnxruntime.so")
        .split('.')
        .filter_map(|p| p.parse().ok())
        .collect()
}

fn read_dir_names(dir: &Path) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut names: Vec<String> = entries
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// An error's message followed by its sources' (libloading's says "dlopen failed"; the reason is below).
fn with_sources(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(e) = source {
        text.push_str(": ");
        text.push_str(&e.to_string());
        source = e.source();
    }
    text
}

fn absolute(path: &Path) -> PathBuf {
    std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf())
}

fn same_file(a: &Path, b: &Path) -> bool {
    match (a.canonicalize(), b.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => a == b,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn explicit_path_wins_and_is_not_checked_here() {
        let search = OrtLibrarySearch {
            explicit: Some("/nope/libonnxruntime.so".into()),
            env_dylib_path: Some("/also/nope.so".into()),
            ..Default::default()
        };
        let c = OrtLibrary::locate(&search).unwrap();
        assert_eq!(c.path, PathBuf::from("/nope/libonnxruntime.so"));
        assert_eq!(c.origin, "--ort-lib");
    }

    #[test]
    fn finds_the_newest_wheel_library_among_cached_envs() {
        let home = tempfile::tempdir().unwrap();
        for (venv, version) in [("venv-aaa", "1.20.0"), ("venv-bbb", "1.32.0")] {
            let capi = home
                .path()
                .join(".cache/vimgeo")
                .join(venv)
                .join("lib/python3.11/site-packages/onnxruntime/capi");
            std::fs::create_dir_all(&capi).unwrap();
            std::fs::write(capi.join(format!("libonnxruntime.so.{version}")), b"").unwrap();
        }
        let search = OrtLibrarySearch {
            home: Some(home.path().into()),
            ..Default::default()
        };
        let c = OrtLibrary::locate(&search).unwrap();
        assert!(c.path.ends_with("libonnxruntime.so.1.32.0"), "{c:?}");
    }

    #[test]
    fn nothing_found_lists_where_it_looked() {
        let home = tempfile::tempdir().unwrap();
        let search = OrtLibrarySearch {
            home: Some(home.path().into()),
            ..Default::default()
        };
        let err = OrtLibrary::locate(&search).unwrap_err();
        assert!(err.to_string().contains(".cache/vimgeo/venv-*"), "{err}");
    }

    #[test]
    fn versions_older_than_the_api_are_refused() {
        assert!(version_is_supported("1.32.0"));
        assert!(version_is_supported(&format!("1.{MIN_ORT_MINOR}.1")));
        assert!(!version_is_supported(&format!("1.{}.0", MIN_ORT_MINOR - 1)));
        assert!(!version_is_supported("2.0.0"));
        assert!(!version_is_supported("garbage"));
    }

    #[test]
    fn a_file_that_is_not_a_library_is_an_error_not_a_panic() {
        let dir = tempfile::tempdir().unwrap();
        let fake = dir.path().join("libonnxruntime.so");
        std::fs::write(&fake, b"not an ELF file").unwrap();
        let err = probe(&fake, "test").unwrap_err();
        assert!(matches!(err, OrtLibraryError::Load { .. }), "{err}");
        assert!(err.to_string().contains(&*fake.to_string_lossy()));
    }
}
