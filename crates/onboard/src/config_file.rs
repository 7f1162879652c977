//! TOML configuration files: reading, the error type naming file / `[section]` key, value checks and path
//! resolution shared by the onboard configuration ([`crate::pipeline::OnboardConfig`]) and the simulation
//! scenario (the ground crate's `vimgeo_ground::sim::scenario::Scenario`).
//!
//! Both follow the same two steps: [`read`] and [`parse`] turn the file into its `Raw…` serde struct (unknown
//! keys refused by the struct's `deny_unknown_fields`, names of choices by serde enums, each missing key
//! taken from the struct's `Default`), then a resolver checks every value once through a [`ConfigFile`],
//! which builds the [`ConfigFileError::Invalid`] naming the file, the table and the key, and resolves relative
//! paths against the file's folder. Errors serde raises name the key path too ([`ConfigFileError::Parse`]):
//! `vimgeo.toml: [model] engine: unknown variant `onnx`, expected one of `ort`, `tract`, `auto` (line 8,
//! column 10)`.
//!
//! ```
//! use std::path::Path;
//! use vimgeo_onboard::config_file::ConfigFile;
//!
//! let f = ConfigFile::new(Path::new("/etc/vimgeo/vimgeo.toml"));
//! assert_eq!(f.path(Path::new("camera.toml")), Path::new("/etc/vimgeo/camera.toml"));
//! let e = f.positive("camera", "stall_timeout_s", 0.0).unwrap_err();
//! assert_eq!(e.to_string(), "/etc/vimgeo/vimgeo.toml: [camera] stall_timeout_s: is 0; it must be > 0");
//! ```

use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_path_to_error::Segment;

use crate::data::{self, DataDir};
use crate::encoder::EngineChoice;
use crate::localize::LocalizerConfig;

/// A configuration file that cannot be used. Every message names the file; value errors name the key.
#[derive(Debug, thiserror::Error)]
pub enum ConfigFileError {
    /// The file could not be read.
    #[error("{}: cannot read the {kind}: {source}", file.display())]
    Read {
        /// The file.
        file: PathBuf,
        /// What the file is, for the message: `configuration`, `scenario`.
        kind: &'static str,
        /// The operating system's reason.
        source: std::io::Error,
    },
    /// The file is not valid TOML, or serde refuses it: an unknown or missing key, a value of the wrong type,
    /// a name that is not one of the choices.
    #[error("{}: {}{message}", file.display(), place(section, key))]
    Parse {
        /// The file.
        file: PathBuf,
        /// The table, e.g. `localize.filter` or `fault 2`; empty for a top-level key or a syntax error.
        section: String,
        /// The key in it, e.g. `engine` or `waypoints_ne_m[2]`; empty for a syntax error.
        key: String,
        /// What toml says: with the line and column when the key is known, else with the offending line.
        message: String,
    },
    /// A value is out of range or inconsistent with another.
    #[error("{}: {}{reason}", file.display(), place(section, key))]
    Invalid {
        /// The file.
        file: PathBuf,
        /// The table, e.g. `camera` or `fault 2`; empty for a top-level key.
        section: String,
        /// The key in it, e.g. `fps`; empty when the whole table is wrong.
        key: String,
        /// What is wrong and what is expected.
        reason: String,
    },
}

/// Where in the file an error is, as its message starts: `[section] key: `, `[section]: ` for the whole
/// table, `key: ` for a top-level key, nothing for the whole file.
fn place(section: &str, key: &str) -> String {
    match (section.is_empty(), key.is_empty()) {
        (false, false) => format!("[{section}] {key}: "),
        (false, true) => format!("[{section}]: "),
        (true, false) => format!("{key}: "),
        (true, true) => String::new(),
    }
}

/// Reads `file` as text; `kind` says what it is in the error (`configuration`, `scenario`).
pub fn read(file: &Path, kind: &'static str) -> Result<String, ConfigFileError> {
    std::fs::read_to_string(file).map_err(|source| ConfigFileError::Read {
        file: file.to_path_buf(),
        kind,
        source,
    })
}

/// Parses `text`, read from `file`, into its raw struct. A value serde refuses is reported with its key path
/// (the table, e.g. `[localize.filter]`, then the key) and its line and column.
pub fn parse<T: DeserializeOwned>(text: &str, file: &Path) -> Result<T, ConfigFileError> {
    let whole_file = |e: toml::de::Error| ConfigFileError::Parse {
        file: file.to_path_buf(),
        section: String::new(),
        key: String::new(),
        message: e.to_string().trim_end().to_owned(),
    };
    let de = toml::Deserializer::parse(text).map_err(whole_file)?;
    serde_path_to_error::deserialize(de).map_err(|e| {
        let mut path: Vec<Segment> = e.path().iter().cloned().collect();
        let e = e.into_inner();
        let mut message = e.message().trim_end().to_owned();
        // serde names a missing key in its message, at the table's path: the key goes to the path.
        if let Some(name) = message
            .strip_prefix("missing field `")
            .and_then(|m| m.strip_suffix('`'))
        {
            path.push(Segment::Map {
                key: name.to_owned(),
            });
            message = "missing".to_owned();
        }
        let (section, key) = split_path(&path);
        if section.is_empty() && key.is_empty() {
            return whole_file(e);
        }
        if let Some(span) = e.span() {
            let before = &text[..span.start.min(text.len())];
            let line = before.matches('\n').count() + 1;
            let column = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
            message = format!("{message} (line {line}, column {column})");
        }
        ConfigFileError::Parse {
            file: file.to_path_buf(),
            section,
            key,
            message,
        }
    })
}

/// A serde path as the table and the key: the last name with the array indices after it is the key
/// (`waypoints_ne_m[2]`), the names before it the table (`localize.filter`; the second `[[fault]]` is
/// `fault 2`, as the resolver names it).
fn split_path(path: &[Segment]) -> (String, String) {
    let last_name = path
        .iter()
        .rposition(|s| matches!(s, Segment::Map { .. }))
        .unwrap_or(0);
    let mut section = String::new();
    let mut key = String::new();
    for (i, segment) in path.iter().enumerate() {
        match segment {
            Segment::Map { key: name } if i == last_name => key.push_str(name),
            Segment::Map { key: name } => {
                if !section.is_empty() {
                    section.push('.');
                }
                section.push_str(name);
            }
            Segment::Seq { index } if i > last_name => key.push_str(&format!("[{index}]")),
            Segment::Seq { index } => section.push_str(&format!(" {}", index + 1)),
            Segment::Enum { .. } | Segment::Unknown => {}
        }
    }
    (section, key)
}

/// The names of the `[model] engine` key, in both files: `auto`, `ort`, `tract` (for
/// `#[serde(with = "EngineName")]` on an [`EngineChoice`] field).
#[derive(Deserialize)]
#[serde(remote = "EngineChoice", rename_all = "snake_case")]
pub enum EngineName {
    /// `ort`.
    Ort,
    /// `tract`.
    Tract,
    /// `auto`.
    Auto,
}

/// The file whose values are being checked: every check's error names it, and relative paths resolve against
/// its folder.
#[derive(Debug, Clone, Copy)]
pub struct ConfigFile<'a> {
    file: &'a Path,
    data: Option<&'a DataDir>,
}

impl<'a> ConfigFile<'a> {
    /// Values read from `file`.
    pub fn new(file: &'a Path) -> Self {
        Self { file, data: None }
    }

    /// Values read from `file`, whose `data:NAME` paths name files in `data` (see [`crate::data`]).
    pub fn with_data(file: &'a Path, data: &'a DataDir) -> Self {
        Self {
            file,
            data: Some(data),
        }
    }

    /// The file.
    pub fn file(&self) -> &'a Path {
        self.file
    }

    /// The error for `[section] key`: `reason`.
    pub fn invalid(&self, section: &str, key: &str, reason: impl Into<String>) -> ConfigFileError {
        ConfigFileError::Invalid {
            file: self.file.to_path_buf(),
            section: section.to_owned(),
            key: key.to_owned(),
            reason: reason.into(),
        }
    }

    /// `p` as written in the file: `data:NAME` in the data folder (when the file has one), absolute as is,
    /// relative against the file's folder.
    pub fn path(&self, p: &Path) -> PathBuf {
        if let (Some(d), Some(_)) = (self.data, data::name_of(p)) {
            d.resolve(p)
        } else if p.is_absolute() {
            p.to_path_buf()
        } else {
            self.file.parent().unwrap_or(Path::new("")).join(p)
        }
    }

    /// `p` (already resolved) exists.
    pub fn exists(&self, section: &str, key: &str, p: &Path) -> Result<(), ConfigFileError> {
        if p.exists() {
            Ok(())
        } else {
            Err(self.invalid(section, key, format!("{} does not exist", p.display())))
        }
    }

    /// A finite number > 0.
    pub fn positive(&self, section: &str, key: &str, v: f64) -> Result<f64, ConfigFileError> {
        if v.is_finite() && v > 0.0 {
            Ok(v)
        } else {
            Err(self.invalid(section, key, format!("is {v}; it must be > 0")))
        }
    }

    /// A finite number >= 0.
    pub fn non_negative(&self, section: &str, key: &str, v: f64) -> Result<f64, ConfigFileError> {
        if v.is_finite() && v >= 0.0 {
            Ok(v)
        } else {
            Err(self.invalid(section, key, format!("is {v}; it must be >= 0")))
        }
    }

    /// A fraction in (0, 1].
    pub fn fraction(&self, section: &str, key: &str, v: f64) -> Result<f64, ConfigFileError> {
        if v.is_finite() && v > 0.0 && v <= 1.0 {
            Ok(v)
        } else {
            Err(self.invalid(section, key, format!("is {v}; it must be in (0, 1]")))
        }
    }

    /// A count or a period that must not be zero.
    pub fn nonzero<T>(&self, section: &str, key: &str, v: T) -> Result<T, ConfigFileError>
    where
        T: Copy + Default + PartialEq,
    {
        if v != T::default() {
            Ok(v)
        } else {
            Err(self.invalid(section, key, "must be > 0"))
        }
    }

    /// Checks a `[localize]` configuration; the error names the table (`localize.filter`) and the key.
    pub fn localize(&self, c: &LocalizerConfig) -> Result<(), ConfigFileError> {
        c.validate().map_err(|e| {
            let crate::localize::ConfigError::Invalid { table, key, reason } = e;
            self.invalid(&table, &key, reason)
        })
    }

    /// A key the file must give.
    pub fn given<T>(&self, section: &str, key: &str, v: Option<T>) -> Result<T, ConfigFileError> {
        v.ok_or_else(|| self.invalid(section, key, "missing"))
    }

    /// A key that this choice of another key requires (`why`: `for source "v4l2"`).
    pub fn required<T>(
        &self,
        section: &str,
        key: &str,
        v: Option<T>,
        why: &str,
    ) -> Result<T, ConfigFileError> {
        v.ok_or_else(|| self.invalid(section, key, format!("missing: required {why}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f() -> ConfigFile<'static> {
        ConfigFile::new(Path::new("/etc/x/a.toml"))
    }

    #[test]
    fn relative_paths_resolve_against_the_files_folder() {
        assert_eq!(
            f().path(Path::new("b/c.onnx")),
            Path::new("/etc/x/b/c.onnx")
        );
        assert_eq!(f().path(Path::new("/var/d")), Path::new("/var/d"));
        let bare = ConfigFile::new(Path::new("a.toml"));
        assert_eq!(bare.path(Path::new("c.toml")), Path::new("c.toml"));
    }

    #[test]
    fn checks_name_file_section_key_and_value() {
        let msg = |e: ConfigFileError| e.to_string();
        assert_eq!(
            msg(f().positive("flight", "speed_mps", f64::NAN).unwrap_err()),
            "/etc/x/a.toml: [flight] speed_mps: is NaN; it must be > 0"
        );
        assert_eq!(
            msg(f().non_negative("gnss", "lost_at_s", -1.0).unwrap_err()),
            "/etc/x/a.toml: [gnss] lost_at_s: is -1; it must be >= 0"
        );
        assert_eq!(
            msg(f().fraction("cache", "stride", 1.5).unwrap_err()),
            "/etc/x/a.toml: [cache] stride: is 1.5; it must be in (0, 1]"
        );
        assert_eq!(
            msg(f().nonzero("camera", "fps", 0u32).unwrap_err()),
            "/etc/x/a.toml: [camera] fps: must be > 0"
        );
        assert_eq!(
            msg(f()
                .required::<u32>("camera", "width", None, "for source \"v4l2\"")
                .unwrap_err()),
            "/etc/x/a.toml: [camera] width: missing: required for source \"v4l2\""
        );
        assert_eq!(f().fraction("cache", "stride", 1.0).unwrap(), 1.0);
        assert_eq!(f().non_negative("gnss", "lost_at_s", 0.0).unwrap(), 0.0);
        assert_eq!(
            f().nonzero("pipeline", "report_capacity", 3usize).unwrap(),
            3
        );
    }

    #[test]
    fn read_and_parse_errors_name_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("none.toml");
        let e = read(&missing, "scenario").unwrap_err().to_string();
        assert!(
            e.starts_with(&format!("{}: cannot read the scenario:", missing.display())),
            "{e}"
        );
        #[derive(Debug, serde::Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Raw {
            #[allow(dead_code)]
            a: u32,
        }
        let e = parse::<Raw>("a = 1\nb = 2\n", Path::new("/etc/x/a.toml")).unwrap_err();
        let e = e.to_string();
        assert!(e.starts_with("/etc/x/a.toml: ") && e.contains('b'), "{e}");
        assert_eq!(parse::<Raw>("a = 1\n", Path::new("x")).unwrap().a, 1);
    }
}
