//! TOML configuration files: reading, the error type naming file / `[section]` key, value checks and path
//! resolution shared by the onboard configuration ([`crate::pipeline::OnboardConfig`]) and the simulation
//! scenario ([`crate::sim::scenario::Scenario`]).
//!
//! Both follow the same two steps: [`read`] and [`parse`] turn the file into its `Raw…` serde struct (unknown
//! keys refused by the struct's `deny_unknown_fields`), then a resolver checks every value once through a
//! [`ConfigFile`], which builds the [`ConfigFileError::Invalid`] naming the file, the table and the key, and
//! resolves relative paths against the file's folder:
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

use crate::data::{self, DataDir};
use crate::encoder::EngineChoice;

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
    /// The file is not valid TOML, has an unknown key, or a value of the wrong type (toml's message quotes
    /// the line and the key).
    #[error("{}: {message}", file.display())]
    Parse {
        /// The file.
        file: PathBuf,
        /// What toml says, with the offending line.
        message: String,
    },
    /// A value is out of range or inconsistent with another.
    #[error("{}: [{section}] {key}: {reason}", file.display())]
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

/// Reads `file` as text; `kind` says what it is in the error (`configuration`, `scenario`).
pub fn read(file: &Path, kind: &'static str) -> Result<String, ConfigFileError> {
    std::fs::read_to_string(file).map_err(|source| ConfigFileError::Read {
        file: file.to_path_buf(),
        kind,
        source,
    })
}

/// Parses `text`, read from `file`, into its raw struct.
pub fn parse<T: DeserializeOwned>(text: &str, file: &Path) -> Result<T, ConfigFileError> {
    toml::from_str(text).map_err(|e| ConfigFileError::Parse {
        file: file.to_path_buf(),
        message: e.to_string().trim_end().to_owned(),
    })
}

/// The names of the `[model] engine` key, in both files (for [`ConfigFile::one_of`]).
pub const ENGINES: &[(&str, EngineChoice)] = &[
    ("auto", EngineChoice::Auto),
    ("ort", EngineChoice::Ort),
    ("tract", EngineChoice::Tract),
];

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

    /// The value of the name `v` in `choices` (name, value); the error lists the names.
    pub fn one_of<T: Clone>(
        &self,
        section: &str,
        key: &str,
        v: &str,
        choices: &[(&str, T)],
    ) -> Result<T, ConfigFileError> {
        if let Some((_, value)) = choices.iter().find(|(name, _)| *name == v) {
            return Ok(value.clone());
        }
        let names: Vec<String> = choices.iter().map(|(n, _)| format!("{n:?}")).collect();
        let listed = match names.split_last() {
            Some((last, rest)) if !rest.is_empty() => format!("{} or {last}", rest.join(", ")),
            Some((last, _)) => last.clone(),
            None => String::new(),
        };
        Err(self.invalid(section, key, format!("{v:?} is not {listed}")))
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
    fn one_of_maps_names_and_lists_them_when_unknown() {
        let choices = [("auto", 0), ("ort", 1), ("tract", 2)];
        assert_eq!(f().one_of("model", "engine", "ort", &choices).unwrap(), 1);
        assert_eq!(
            f().one_of("model", "engine", "onnx", &choices)
                .unwrap_err()
                .to_string(),
            "/etc/x/a.toml: [model] engine: \"onnx\" is not \"auto\", \"ort\" or \"tract\""
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
