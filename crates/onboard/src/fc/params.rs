//! Reading the autopilot's parameters over the link: PARAM_REQUEST_READ by name, answered by PARAM_VALUE.
//!
//! [`FcLink::read_param`](super::FcLink::read_param) queues a PARAM_REQUEST_READ for the autopilot the link
//! learned from its HEARTBEAT and waits for the matching PARAM_VALUE; the link thread records every
//! PARAM_VALUE the autopilot sends in a [`ParamBook`] (also the unsolicited ones, e.g. after a PARAM_SET from a
//! ground station), and wakes the waiting reader. A request that gets no answer within its timeout is sent
//! again, up to the number of attempts asked for: UDP and radio links lose frames, and an autopilot busy
//! streaming a parameter list may drop a request.
//!
//! Values: PARAM_VALUE carries a float. ArduPilot casts integer parameters to it (`14` arrives as `14.0`);
//! PX4 copies an integer's bytes into it ("bytewise" encoding, MAV_PROTOCOL_CAPABILITY_PARAM_ENCODE_BYTEWISE).
//! [`decode_value`] undoes either, so [`ParamValue::value`] is the parameter as the user sets it.

use std::collections::HashMap;
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use mavlink::dialects::ardupilotmega::{
    MavMessage, MavParamType, PARAM_REQUEST_READ_DATA, PARAM_VALUE_DATA,
};

use super::state::{Autopilot, AutopilotKind};

/// A parameter's name holds at most 16 bytes in MAVLink.
pub const MAX_PARAM_NAME_LEN: usize = 16;

/// One parameter as the autopilot reported it.
#[derive(Debug, Clone, PartialEq)]
pub struct ParamValue {
    /// Its name, e.g. `GPS2_TYPE`.
    pub name: String,
    /// The value as the user sets it (integers decoded, see the module documentation).
    pub value: f64,
    /// The float as it travelled in PARAM_VALUE.
    pub raw: f32,
    /// The parameter's type.
    pub param_type: MavParamType,
    /// Its index in the autopilot's table.
    pub index: u16,
    /// How many parameters the autopilot has.
    pub count: u16,
}

/// A parameter that could not be read. Every message names the link and the parameter.
#[derive(Debug, thiserror::Error)]
pub enum ParamError {
    /// The name does not fit MAVLink's 16 bytes, or is empty.
    #[error("{link}: parameter name {name:?} is not 1 to 16 ASCII characters")]
    InvalidName {
        /// The link.
        link: String,
        /// The name asked for.
        name: String,
    },
    /// No autopilot HEARTBEAT has arrived, so there is nobody to ask.
    #[error("{link}: cannot read parameter {name}: no autopilot HEARTBEAT on the link yet")]
    NoAutopilot {
        /// The link.
        link: String,
        /// The parameter.
        name: String,
    },
    /// No PARAM_VALUE answered any of the requests.
    #[error(
        "{link}: parameter {name} unreadable: no PARAM_VALUE after {attempts} request(s) of {timeout:?} each \
         (the parameter may not exist on this firmware, or the link drops frames)"
    )]
    Timeout {
        /// The link.
        link: String,
        /// The parameter.
        name: String,
        /// Requests sent.
        attempts: u32,
        /// How long each waited.
        timeout: Duration,
    },
    /// The link has shut down, or its send queue stayed full for the whole wait.
    #[error("{link}: cannot send PARAM_REQUEST_READ for {name}: the link's send queue is full or closed")]
    NotSent {
        /// The link.
        link: String,
        /// The parameter.
        name: String,
    },
}

/// Turns the float of a PARAM_VALUE into the parameter's value: PX4 sends integers bytewise, ArduPilot (and
/// everyone else) casts them.
pub fn decode_value(raw: f32, param_type: MavParamType, kind: AutopilotKind) -> f64 {
    let integer = !matches!(
        param_type,
        MavParamType::MAV_PARAM_TYPE_REAL32 | MavParamType::MAV_PARAM_TYPE_REAL64
    );
    if !(integer && kind == AutopilotKind::Px4) {
        return f64::from(raw);
    }
    let bits = raw.to_bits();
    match param_type {
        MavParamType::MAV_PARAM_TYPE_UINT8 => f64::from(bits as u8),
        MavParamType::MAV_PARAM_TYPE_INT8 => f64::from(bits as u8 as i8),
        MavParamType::MAV_PARAM_TYPE_UINT16 => f64::from(bits as u16),
        MavParamType::MAV_PARAM_TYPE_INT16 => f64::from(bits as u16 as i16),
        MavParamType::MAV_PARAM_TYPE_UINT32 => f64::from(bits),
        _ => f64::from(bits as i32),
    }
}

/// The inverse of [`decode_value`]: the float that carries `value` of `param_type` from an autopilot of
/// `kind` (used by the simulated autopilot).
pub fn encode_value(value: f64, param_type: MavParamType, kind: AutopilotKind) -> f32 {
    let integer = !matches!(
        param_type,
        MavParamType::MAV_PARAM_TYPE_REAL32 | MavParamType::MAV_PARAM_TYPE_REAL64
    );
    if integer && kind == AutopilotKind::Px4 {
        let v = value.round();
        let bits = match param_type {
            MavParamType::MAV_PARAM_TYPE_UINT8 => u32::from(v as u8),
            MavParamType::MAV_PARAM_TYPE_INT8 => u32::from(v as i8 as u8),
            MavParamType::MAV_PARAM_TYPE_UINT16 => u32::from(v as u16),
            MavParamType::MAV_PARAM_TYPE_INT16 => u32::from(v as i16 as u16),
            MavParamType::MAV_PARAM_TYPE_UINT32 => v as u32,
            _ => v as i32 as u32,
        };
        return f32::from_bits(bits);
    }
    value as f32
}

/// The PARAM_REQUEST_READ for `name` (by name: index -1) to `target`.
pub fn request_read(name: &str, target_system: u8, target_component: u8) -> MavMessage {
    MavMessage::PARAM_REQUEST_READ(PARAM_REQUEST_READ_DATA {
        param_index: -1,
        target_system,
        target_component,
        param_id: name.into(),
    })
}

/// A PARAM_VALUE as recorded, with who sent it and when.
#[derive(Debug, Clone)]
struct Recorded {
    data: PARAM_VALUE_DATA,
    component_id: u8,
    serial: u64,
}

#[derive(Debug, Default)]
struct BookInner {
    values: HashMap<String, Recorded>,
    serial: u64,
}

/// The PARAM_VALUEs received on a link, by name; the link thread records, readers wait. Shared between the
/// two through an `Arc`.
#[derive(Debug, Default)]
pub struct ParamBook {
    inner: Mutex<BookInner>,
    changed: Condvar,
}

impl ParamBook {
    fn lock(&self) -> MutexGuard<'_, BookInner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records a PARAM_VALUE from `component_id` and wakes the readers.
    pub fn record(&self, data: &PARAM_VALUE_DATA, component_id: u8) {
        let Ok(name) = data.param_id.to_str() else {
            return;
        };
        let mut inner = self.lock();
        inner.serial += 1;
        let serial = inner.serial;
        inner.values.insert(
            name.to_owned(),
            Recorded {
                data: data.clone(),
                component_id,
                serial,
            },
        );
        drop(inner);
        self.changed.notify_all();
    }

    /// The serial number of the last value recorded: values recorded later have a larger one.
    fn serial(&self) -> u64 {
        self.lock().serial
    }

    /// Waits until `deadline` for a value of `name` from `component_id` recorded after `after`.
    fn wait_for(
        &self,
        name: &str,
        component_id: u8,
        after: u64,
        deadline: Instant,
    ) -> Option<PARAM_VALUE_DATA> {
        let mut inner = self.lock();
        loop {
            if let Some(r) = inner.values.get(name) {
                if r.serial > after && r.component_id == component_id {
                    return Some(r.data.clone());
                }
            }
            let now = Instant::now();
            if now >= deadline {
                return None;
            }
            inner = self
                .changed
                .wait_timeout(inner, deadline - now)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }
}

/// Reads `name` from `autopilot`: sends the request through `send` (false: not queued) and waits for the
/// answer in `book`, `attempts` times `timeout` at most. The body of [`super::FcLink::read_param`].
pub(crate) fn read(
    link: &str,
    book: &ParamBook,
    autopilot: Option<Autopilot>,
    name: &str,
    timeout: Duration,
    attempts: u32,
    send: impl Fn(MavMessage) -> bool,
) -> Result<ParamValue, ParamError> {
    if name.is_empty() || name.len() > MAX_PARAM_NAME_LEN || !name.is_ascii() {
        return Err(ParamError::InvalidName {
            link: link.to_owned(),
            name: name.to_owned(),
        });
    }
    let Some(autopilot) = autopilot else {
        return Err(ParamError::NoAutopilot {
            link: link.to_owned(),
            name: name.to_owned(),
        });
    };
    let attempts = attempts.max(1);
    let mut sent_any = false;
    for _ in 0..attempts {
        let after = book.serial();
        let deadline = Instant::now() + timeout;
        if send(request_read(
            name,
            autopilot.system_id,
            autopilot.component_id,
        )) {
            sent_any = true;
        }
        if let Some(data) = book.wait_for(name, autopilot.component_id, after, deadline) {
            return Ok(ParamValue {
                name: name.to_owned(),
                value: decode_value(data.param_value, data.param_type, autopilot.kind),
                raw: data.param_value,
                param_type: data.param_type,
                index: data.param_index,
                count: data.param_count,
            });
        }
    }
    if !sent_any {
        return Err(ParamError::NotSent {
            link: link.to_owned(),
            name: name.to_owned(),
        });
    }
    Err(ParamError::Timeout {
        link: link.to_owned(),
        name: name.to_owned(),
        attempts,
        timeout,
    })
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    fn autopilot(kind: AutopilotKind) -> Autopilot {
        Autopilot {
            kind,
            system_id: 1,
            component_id: 1,
            armed: false,
        }
    }

    fn value(name: &str, raw: f32, param_type: MavParamType) -> PARAM_VALUE_DATA {
        PARAM_VALUE_DATA {
            param_value: raw,
            param_count: 10,
            param_index: 3,
            param_id: name.into(),
            param_type,
        }
    }

    #[test]
    fn px4_integers_are_bytewise_and_ardupilot_integers_are_cast() {
        let t = MavParamType::MAV_PARAM_TYPE_INT32;
        for v in [0.0, 1.0, 14.0, -3.0, 921_600.0] {
            let px4 = encode_value(v, t, AutopilotKind::Px4);
            assert_eq!(px4.to_bits() as i32, v as i32);
            assert_eq!(decode_value(px4, t, AutopilotKind::Px4), v);
            let ap = encode_value(v, t, AutopilotKind::ArduPilot);
            assert_eq!(ap, v as f32);
            assert_eq!(decode_value(ap, t, AutopilotKind::ArduPilot), v);
        }
        let r = MavParamType::MAV_PARAM_TYPE_REAL32;
        assert_eq!(decode_value(0.5, r, AutopilotKind::Px4), 0.5);
        let i8t = MavParamType::MAV_PARAM_TYPE_INT8;
        assert_eq!(
            decode_value(
                encode_value(-2.0, i8t, AutopilotKind::Px4),
                i8t,
                AutopilotKind::Px4
            ),
            -2.0
        );
    }

    #[test]
    fn a_read_is_answered_by_the_matching_value_only() {
        let book = Arc::new(ParamBook::default());
        let answering = Arc::clone(&book);
        let got = read(
            "udpin:test",
            &book,
            Some(autopilot(AutopilotKind::ArduPilot)),
            "GPS2_TYPE",
            Duration::from_secs(5),
            1,
            move |m| {
                let MavMessage::PARAM_REQUEST_READ(r) = m else {
                    panic!("not a PARAM_REQUEST_READ: {m:?}");
                };
                assert_eq!(r.param_id.to_str().unwrap(), "GPS2_TYPE");
                assert_eq!(r.param_index, -1);
                let b = Arc::clone(&answering);
                std::thread::spawn(move || {
                    // Another component's answer and another parameter do not count.
                    b.record(
                        &value("GPS2_TYPE", 5.0, MavParamType::MAV_PARAM_TYPE_INT8),
                        154,
                    );
                    b.record(
                        &value("GPS1_TYPE", 1.0, MavParamType::MAV_PARAM_TYPE_INT8),
                        1,
                    );
                    b.record(
                        &value("GPS2_TYPE", 14.0, MavParamType::MAV_PARAM_TYPE_INT8),
                        1,
                    );
                });
                true
            },
        )
        .unwrap();
        assert_eq!(got.value, 14.0);
        assert_eq!(got.name, "GPS2_TYPE");
    }

    #[test]
    fn unanswered_reads_retry_then_time_out_naming_the_parameter() {
        let book = ParamBook::default();
        let sent = std::sync::atomic::AtomicU32::new(0);
        let err = read(
            "udpin:test",
            &book,
            Some(autopilot(AutopilotKind::Px4)),
            "EKF2_AGP_CTRL",
            Duration::from_millis(20),
            3,
            |_| {
                sent.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                true
            },
        )
        .unwrap_err();
        assert_eq!(sent.into_inner(), 3);
        let msg = err.to_string();
        assert!(
            msg.contains("EKF2_AGP_CTRL") && msg.contains("3 request"),
            "{msg}"
        );
        let err = read("l", &book, None, "X", Duration::ZERO, 1, |_| true).unwrap_err();
        assert!(matches!(err, ParamError::NoAutopilot { .. }));
        let err = read(
            "l",
            &book,
            Some(autopilot(AutopilotKind::Px4)),
            "A_NAME_LONGER_THAN_16",
            Duration::ZERO,
            1,
            |_| true,
        )
        .unwrap_err();
        assert!(matches!(err, ParamError::InvalidName { .. }));
    }
}
