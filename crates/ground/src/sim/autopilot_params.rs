//! The fake autopilot's parameter table: what it answers to PARAM_REQUEST_READ, PARAM_REQUEST_LIST and
//! PARAM_SET, so `vimgeo preflight` and other parameter readers run against the simulator.
//!
//! A [`ParamTable`] is shared (cloning it shares the table): a test fills it before spawning the
//! [`FakeAutopilot`](super::autopilot::FakeAutopilot) through [`Scenario::params`](super::autopilot::Scenario)
//! and may change or [`remove`](ParamTable::remove) values while it runs. A name that is not in the table
//! gets no answer, like a parameter the firmware does not have. Values travel as the real flight stacks send
//! them: cast to float by ArduPilot, integers bytewise by PX4 ([`vimgeo_onboard::fc::params::encode_value`]).
//!
//! [`ParamTable::from_param_file`] loads the parameter files in `deploy/`: ArduPilot's `NAME VALUE` (or
//! Mission Planner's `NAME,VALUE`) lines and PX4's `param set NAME VALUE` lines, `#` comments.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use mavlink::dialects::ardupilotmega::{MavMessage, MavParamType, PARAM_VALUE_DATA};

use super::autopilot::FlightStack;
use vimgeo_onboard::fc::params::{encode_value, MAX_PARAM_NAME_LEN};
use vimgeo_onboard::fc::AutopilotKind;

/// A parameter file that cannot be loaded; the message names the file and the line.
#[derive(Debug, thiserror::Error)]
pub enum ParamFileError {
    /// The file could not be read.
    #[error("{}: cannot read the parameter file: {source}", file.display())]
    Read {
        /// The file.
        file: PathBuf,
        /// The operating system's reason.
        source: std::io::Error,
    },
    /// A line is not `NAME VALUE`, `NAME,VALUE` or `param set NAME VALUE`.
    #[error("{}:{line}: {reason}", file.display())]
    Line {
        /// The file.
        file: PathBuf,
        /// 1-based line number.
        line: usize,
        /// What is wrong.
        reason: String,
    },
}

/// One parameter: name, value as the user sets it, type.
#[derive(Debug, Clone, PartialEq)]
struct Entry {
    name: String,
    value: f64,
    param_type: MavParamType,
}

/// The fake autopilot's parameters, in a stable order (their index). See the module documentation.
#[derive(Debug, Clone, Default)]
pub struct ParamTable {
    entries: Arc<Mutex<Vec<Entry>>>,
}

impl ParamTable {
    /// An empty table: every read goes unanswered.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, Vec<Entry>> {
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Sets `name` to `value`: an integer type (INT32) when the value is integral, else REAL32.
    pub fn set(&self, name: &str, value: f64) {
        let param_type = if value.fract() == 0.0 && value.abs() < 2.1e9 {
            MavParamType::MAV_PARAM_TYPE_INT32
        } else {
            MavParamType::MAV_PARAM_TYPE_REAL32
        };
        self.set_typed(name, value, param_type);
    }

    /// Sets `name` to `value` of `param_type` (added at the end when new).
    pub fn set_typed(&self, name: &str, value: f64, param_type: MavParamType) {
        let mut entries = self.lock();
        match entries.iter_mut().find(|e| e.name == name) {
            Some(e) => {
                e.value = value;
                e.param_type = param_type;
            }
            None => entries.push(Entry {
                name: name.to_owned(),
                value,
                param_type,
            }),
        }
    }

    /// Removes `name`: reads of it go unanswered from now on.
    pub fn remove(&self, name: &str) {
        self.lock().retain(|e| e.name != name);
    }

    /// The value of `name`.
    pub fn get(&self, name: &str) -> Option<f64> {
        self.lock().iter().find(|e| e.name == name).map(|e| e.value)
    }

    /// How many parameters the table holds.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether the table is empty.
    pub fn is_empty(&self) -> bool {
        self.lock().is_empty()
    }

    /// A table with the parameters of a file (see the module documentation).
    pub fn from_param_file(file: &Path) -> Result<Self, ParamFileError> {
        let text = std::fs::read_to_string(file).map_err(|source| ParamFileError::Read {
            file: file.to_path_buf(),
            source,
        })?;
        let table = Self::new();
        for (name, value) in parse_param_file(&text, file)? {
            table.set(&name, value);
        }
        Ok(table)
    }

    /// The answers to `message` from a `stack` autopilot: PARAM_VALUE for a PARAM_REQUEST_READ of a known
    /// parameter (by name, or by index when it is >= 0), every parameter for PARAM_REQUEST_LIST, and the new
    /// value after a PARAM_SET (which updates the table). Nothing for anything else.
    pub fn answer(&self, message: &MavMessage, stack: FlightStack) -> Vec<MavMessage> {
        let kind = match stack {
            FlightStack::ArduPilot => AutopilotKind::ArduPilot,
            FlightStack::Px4 => AutopilotKind::Px4,
        };
        let value_of = |entries: &[Entry], index: usize| -> MavMessage {
            let e = &entries[index];
            MavMessage::PARAM_VALUE(PARAM_VALUE_DATA {
                param_value: encode_value(e.value, e.param_type, kind),
                param_count: entries.len() as u16,
                param_index: index as u16,
                param_id: e.name.as_str().into(),
                param_type: e.param_type,
            })
        };
        match message {
            MavMessage::PARAM_REQUEST_READ(r) => {
                let entries = self.lock();
                let index = if r.param_index >= 0 {
                    Some(r.param_index as usize).filter(|i| *i < entries.len())
                } else {
                    let name = r.param_id.to_str().unwrap_or_default();
                    entries.iter().position(|e| e.name == name)
                };
                index.map(|i| value_of(&entries, i)).into_iter().collect()
            }
            MavMessage::PARAM_REQUEST_LIST(_) => {
                let entries = self.lock();
                (0..entries.len()).map(|i| value_of(&entries, i)).collect()
            }
            MavMessage::PARAM_SET(s) => {
                let Ok(name) = s.param_id.to_str() else {
                    return Vec::new();
                };
                let value =
                    vimgeo_onboard::fc::params::decode_value(s.param_value, s.param_type, kind);
                self.set_typed(name, value, s.param_type);
                let entries = self.lock();
                entries
                    .iter()
                    .position(|e| e.name == name)
                    .map(|i| value_of(&entries, i))
                    .into_iter()
                    .collect()
            }
            _ => Vec::new(),
        }
    }
}

/// The `(name, value)` pairs of a parameter file's text (see the module documentation); `file` names it in
/// errors.
pub fn parse_param_file(text: &str, file: &Path) -> Result<Vec<(String, f64)>, ParamFileError> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let err = |reason: String| ParamFileError::Line {
            file: file.to_path_buf(),
            line: i + 1,
            reason,
        };
        let line = line.split('#').next().unwrap_or_default().trim();
        if line.is_empty() {
            continue;
        }
        let line = line.strip_prefix("param set ").unwrap_or(line);
        let mut parts = line
            .split(|c: char| c == ',' || c.is_whitespace())
            .filter(|p| !p.is_empty());
        let (Some(name), Some(value), None) = (parts.next(), parts.next(), parts.next()) else {
            return Err(err(format!(
                "expected `NAME VALUE`, `NAME,VALUE` or `param set NAME VALUE`, got {line:?}"
            )));
        };
        if name.len() > MAX_PARAM_NAME_LEN || !name.is_ascii() {
            return Err(err(format!(
                "parameter name {name:?} is not 1 to 16 ASCII characters"
            )));
        }
        let value: f64 = value
            .parse()
            .ok()
            .filter(|v: &f64| v.is_finite())
            .ok_or_else(|| err(format!("value of {name} is not a number: {value:?}")))?;
        out.push((name.to_owned(), value));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use mavlink::dialects::ardupilotmega::{
        PARAM_REQUEST_LIST_DATA, PARAM_REQUEST_READ_DATA, PARAM_SET_DATA,
    };

    use super::*;

    fn read(name: &str) -> MavMessage {
        MavMessage::PARAM_REQUEST_READ(PARAM_REQUEST_READ_DATA {
            param_index: -1,
            target_system: 1,
            target_component: 1,
            param_id: name.into(),
        })
    }

    fn values(answers: &[MavMessage]) -> Vec<(String, f32)> {
        answers
            .iter()
            .map(|m| match m {
                MavMessage::PARAM_VALUE(v) => {
                    (v.param_id.to_str().unwrap().to_owned(), v.param_value)
                }
                other => panic!("not a PARAM_VALUE: {other:?}"),
            })
            .collect()
    }

    #[test]
    fn reads_lists_and_sets_are_answered_as_each_stack_encodes_values() {
        let t = ParamTable::new();
        t.set("GPS2_TYPE", 14.0);
        t.set("EKF2_AGP_NOISE", 0.5);
        assert_eq!(
            values(&t.answer(&read("GPS2_TYPE"), FlightStack::ArduPilot)),
            [("GPS2_TYPE".to_owned(), 14.0)]
        );
        let px4 = values(&t.answer(&read("GPS2_TYPE"), FlightStack::Px4));
        assert_eq!(px4[0].1.to_bits(), 14, "PX4 sends integers bytewise");
        assert!(t
            .answer(&read("NO_SUCH"), FlightStack::ArduPilot)
            .is_empty());
        let list = MavMessage::PARAM_REQUEST_LIST(PARAM_REQUEST_LIST_DATA {
            target_system: 1,
            target_component: 1,
        });
        assert_eq!(t.answer(&list, FlightStack::ArduPilot).len(), 2);
        let set = MavMessage::PARAM_SET(PARAM_SET_DATA {
            param_value: 5.0,
            target_system: 1,
            target_component: 1,
            param_id: "GPS2_TYPE".into(),
            param_type: MavParamType::MAV_PARAM_TYPE_INT8,
        });
        assert_eq!(values(&t.answer(&set, FlightStack::ArduPilot))[0].1, 5.0);
        assert_eq!(t.get("GPS2_TYPE"), Some(5.0));
        t.remove("GPS2_TYPE");
        assert!(t
            .answer(&read("GPS2_TYPE"), FlightStack::ArduPilot)
            .is_empty());
    }

    #[test]
    fn the_deploy_parameter_files_load() {
        let root = repo().join("deploy");
        let ap = ParamTable::from_param_file(&root.join("ardupilot.param")).unwrap();
        assert_eq!(ap.get("GPS2_TYPE"), Some(14.0));
        let px4 = ParamTable::from_param_file(&root.join("px4.params")).unwrap();
        assert_eq!(px4.get("EKF2_AGP_CTRL"), Some(1.0));
        assert_eq!(px4.get("EKF2_AGP_NOISE"), Some(0.5));
    }

    #[test]
    fn malformed_lines_name_file_and_line() {
        let e = parse_param_file(
            "# ok\nGPS2_TYPE 14\nGPS2_TYPE fourteen\n",
            Path::new("x.param"),
        )
        .unwrap_err()
        .to_string();
        assert!(e.starts_with("x.param:3:") && e.contains("fourteen"), "{e}");
        let e = parse_param_file("JUST_A_NAME\n", Path::new("x.param"))
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("x.param:1:"), "{e}");
        assert_eq!(
            parse_param_file("GPS2_TYPE,14\nparam set EKF2_AGP_CTRL 1\n", Path::new("x")).unwrap(),
            [
                ("GPS2_TYPE".to_owned(), 14.0),
                ("EKF2_AGP_CTRL".to_owned(), 1.0)
            ]
        );
    }

    #[test]
    fn the_deploy_parameter_files_meet_every_rule() {
        let deploy = repo().join("deploy");
        for (kind, file) in [
            (AutopilotKind::ArduPilot, "ardupilot.param"),
            (AutopilotKind::Px4, "px4.params"),
        ] {
            let table = ParamTable::from_param_file(&deploy.join(file)).unwrap();
            // deploy/ardupilot.param is written for vimgeo's default GPS instance.
            let instance = vimgeo_onboard::fc::GpsInputConfig::default().gps_instance;
            let rules = vimgeo_onboard::preflight::expected_params(
                kind,
                vimgeo_onboard::fc::Publisher::Auto,
                instance,
            );
            assert!(!rules.is_empty());
            for e in rules {
                let v = table
                    .get(&e.name)
                    .unwrap_or_else(|| panic!("{file} does not set {}", e.name));
                assert!(
                    e.rule.holds(v),
                    "{file}: {} = {v} is not {}",
                    e.name,
                    e.rule
                );
            }
        }
    }

    /// The repository root (this crate is crates/ground).
    fn repo() -> std::path::PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
    }
}
