//! The link to the flight controller: one thread that owns the transport, reads telemetry into the
//! [`VehicleState`], runs the [`GnssMonitor`], sends our HEARTBEAT, STATUSTEXT and stream requests, and sends
//! the fixes [`FcLink::publish`] queues.
//!
//! Ordering and shutdown: `publish` decides on the caller's thread (policy, verdict, which message) and queues
//! the message on a bounded channel; the link thread sends queued messages in order before its next read.
//! Dropping the [`FcLink`] disconnects that channel and raises the stop flag, then joins the thread, which
//! exits within one read timeout (or, while reconnecting a TCP link, one connect attempt: at most 2 s). A read or write error on a stream transport (TCP, serial) closes it and the
//! thread reopens it every [`LinkConfig::reconnect_period`]; noise, truncated frames and bad CRCs are skipped by
//! the frame reader and only counted.
//!
//! Signing: with [`LinkConfig::signing_key`] set, every frame we send is MAVLink 2 signed (link id
//! [`LinkConfig::signing_link_id`], see [`super::signing`]). Incoming frames that are signed are verified: a bad
//! signature, or a timestamp not above the last one of its stream (link id, system, component: a replay),
//! drops the frame and counts it in [`LinkStats::bad_signatures`]. Unsigned incoming frames are
//! accepted and counted in [`LinkStats::unsigned_in`]: an autopilot only signs once signing is set up on it
//! (ArduPilot after `signing setup`), and refusing its unsigned telemetry would blind the link instead of
//! protecting it; what the key protects is the autopilot, which refuses our frames unless they are signed.
//! Without a key, frames are sent unsigned and incoming signatures are not checked.

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{bounded, Receiver, Sender, TryRecvError, TrySendError};
use mavlink::dialects::ardupilotmega::{MavCmd, MavMessage, MavSeverity, COMMAND_LONG_DATA};
use mavlink::error::MessageReadError;
use mavlink::{MAVLinkMessageRaw, MavlinkReader, Message};

use super::error::FcError;
use super::gnss::{GnssMonitor, GnssMonitorConfig, GnssStatus, GnssVerdict, PublishPolicy};
use super::messages::{self, GpsInputConfig, DEFAULT_COMPONENT_ID};
use super::params::{self, ParamBook, ParamError, ParamValue};
use super::signing::{self, Signer, SigningKey};
use super::state::{AutopilotKind, VehicleState};
use super::transport::{self, LinkAddress, TransportReader};
use crate::fix::Fix;
use crate::util::unix_now_us;

/// Which message carries our fixes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Publisher {
    /// By the autopilot's HEARTBEAT: GPS_INPUT to ArduPilot, GLOBAL_POSITION_SENSOR to PX4.
    #[default]
    Auto,
    /// Always GPS_INPUT (232).
    GpsInput,
    /// Always GLOBAL_POSITION_SENSOR (296).
    GlobalPositionSensor,
    /// ODOMETRY (331) in local NED from the EKF origin (needs GPS_GLOBAL_ORIGIN from the autopilot).
    Odometry,
}

/// The link's configuration, resolved (see [`LinkAddress::parse`] for the address).
#[derive(Debug, Clone)]
pub struct LinkConfig {
    /// Where the autopilot is.
    pub address: LinkAddress,
    /// Our system id; `None`: the autopilot's, learned from its HEARTBEAT (1 until then).
    pub system_id: Option<u8>,
    /// Our component id (default 197, MAV_COMP_ID_VISUAL_INERTIAL_ODOMETRY).
    pub component_id: u8,
    /// HEARTBEAT period (1 s).
    pub heartbeat_period: Duration,
    /// How long one read waits; bounds the send latency and the shutdown time.
    pub read_timeout: Duration,
    /// How often a lost stream link is reopened.
    pub reconnect_period: Duration,
    /// No autopilot HEARTBEAT for this long: the autopilot is reported lost.
    pub autopilot_timeout: Duration,
    /// A telemetry stream missing for this long is requested with MAV_CMD_SET_MESSAGE_INTERVAL (and again
    /// after each such period while it stays missing).
    pub stream_timeout: Duration,
    /// Fixes queued for sending; when full, `publish` reports it instead of blocking.
    pub queue_capacity: usize,
    /// When to publish.
    pub policy: PublishPolicy,
    /// What to publish.
    pub publisher: Publisher,
    /// GPS_INPUT settings.
    pub gps_input: GpsInputConfig,
    /// GLOBAL_POSITION_SENSOR sensor id.
    pub global_position_sensor_id: u8,
    /// GNSS monitor thresholds.
    pub gnss: GnssMonitorConfig,
    /// MAVLink 2 signing key file (format in [`super::signing`]); `None`: unsigned. See the module
    /// documentation for what is accepted from the autopilot.
    pub signing_key: Option<PathBuf>,
    /// The signature's link id (0).
    pub signing_link_id: u8,
    /// A fix still in the send queue this long after [`FcLink::publish`] queued it is dropped instead of
    /// sent (counted in [`LinkStats::stale_dropped`]); `None`: never dropped.
    pub max_fix_age: Option<Duration>,
}

impl LinkConfig {
    /// Defaults for `address`.
    pub fn new(address: LinkAddress) -> Self {
        Self {
            address,
            system_id: None,
            component_id: DEFAULT_COMPONENT_ID,
            heartbeat_period: Duration::from_secs(1),
            read_timeout: Duration::from_millis(20),
            reconnect_period: Duration::from_secs(1),
            autopilot_timeout: Duration::from_secs(3),
            stream_timeout: Duration::from_secs(3),
            queue_capacity: 8,
            policy: PublishPolicy::default(),
            publisher: Publisher::default(),
            gps_input: GpsInputConfig::default(),
            global_position_sensor_id: 0,
            gnss: GnssMonitorConfig::default(),
            signing_key: None,
            signing_link_id: 0,
            max_fix_age: None,
        }
    }
}

/// What `publish` did with a fix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PublishOutcome {
    /// Queued for sending, as this message.
    Queued(&'static str),
    /// Not sent: the policy does not publish under this verdict.
    Withheld(GnssVerdict),
    /// Not sent: policy `never` (dry run); logged.
    DryRun,
    /// Not sent: no autopilot HEARTBEAT yet, so we do not know which message it takes.
    NoAutopilot,
    /// Not sent: ODOMETRY needs the EKF origin, which the autopilot has not sent.
    NoEkfOrigin,
    /// Not sent: the send queue is full (the link is slower than the fixes).
    QueueFull,
}

/// Counters of the link thread.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LinkStats {
    /// Frames received with a valid CRC (from any sender) and, when signing, not dropped for a bad signature.
    pub frames_in: u64,
    /// Signing only: signed frames whose signature did not verify with our key, or replayed (timestamp not
    /// above the last of their stream); dropped.
    pub bad_signatures: u64,
    /// Signing only: unsigned frames received; accepted (see the module documentation).
    pub unsigned_in: u64,
    /// Frames that passed the CRC but did not parse (unknown id, bad enum).
    pub parse_errors: u64,
    /// Frames sent.
    pub frames_out: u64,
    /// Times the transport was reopened.
    pub reconnects: u64,
    /// Stream requests sent (SET_MESSAGE_INTERVAL / REQUEST_MESSAGE).
    pub stream_requests: u64,
    /// Fixes dropped from the send queue because they waited longer than [`LinkConfig::max_fix_age`].
    pub stale_dropped: u64,
}

/// A message in the send queue; a fix carries the instant after which it is too old to send.
struct Outgoing {
    message: MavMessage,
    stale_at: Option<Instant>,
}

/// A snapshot of the link for display and decisions.
#[derive(Debug, Clone)]
pub struct LinkSnapshot {
    /// Vehicle state.
    pub vehicle: VehicleState,
    /// GNSS verdict.
    pub gnss: GnssStatus,
    /// Whether the transport is open.
    pub open: bool,
    /// Whether an autopilot HEARTBEAT arrived within the timeout.
    pub autopilot_alive: bool,
    /// Counters.
    pub stats: LinkStats,
}

struct Shared {
    vehicle: VehicleState,
    gnss: GnssStatus,
    open: bool,
    autopilot_alive: bool,
    stats: LinkStats,
    /// PARAM_VALUEs received, for [`FcLink::read_param`].
    params: Arc<ParamBook>,
}

/// A running link. See the module documentation for ordering and shutdown.
pub struct FcLink {
    link: String,
    policy: PublishPolicy,
    publisher: Publisher,
    gps_input: GpsInputConfig,
    sensor_id: u8,
    shared: Arc<Mutex<Shared>>,
    tx: Option<Sender<Outgoing>>,
    max_fix_age: Option<Duration>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    local_addr: Option<SocketAddr>,
}

fn lock(shared: &Mutex<Shared>) -> MutexGuard<'_, Shared> {
    // A panic in the other holder cannot leave the plain-data state half-written in a harmful way.
    shared.lock().unwrap_or_else(|e| e.into_inner())
}

impl FcLink {
    /// Opens the transport and starts the link thread (`vimgeo-fc-link`).
    pub fn spawn(config: LinkConfig) -> Result<Self, FcError> {
        let link = config.address.to_string();
        let signer = config
            .signing_key
            .as_deref()
            .map(SigningKey::load)
            .transpose()?
            .map(|key| Signer::new(key, config.signing_link_id));
        let transport = transport::open(&config.address, config.read_timeout)?;
        let local_addr = transport.local_addr();
        let now = Instant::now();
        let monitor = GnssMonitor::new(config.gnss, now);
        let shared = Arc::new(Mutex::new(Shared {
            vehicle: VehicleState::default(),
            gnss: monitor.status(),
            open: true,
            autopilot_alive: false,
            stats: LinkStats::default(),
            params: Arc::default(),
        }));
        let (tx, rx) = bounded(config.queue_capacity.max(1));
        let stop = Arc::new(AtomicBool::new(false));
        let worker = Worker {
            link: link.clone(),
            sequence: 0,
            signer,
            stream_timestamps: HashMap::new(),
            learned_system_id: None,
            reader: Some(MavlinkReader::new(TransportReader::new(transport))),
            monitor,
            shared: Arc::clone(&shared),
            rx,
            stop: Arc::clone(&stop),
            last_seen: HashMap::new(),
            last_request: HashMap::new(),
            autopilot_since: None,
            config: config.clone(),
        };
        let thread = std::thread::Builder::new()
            .name("vimgeo-fc-link".into())
            .spawn(move || worker.run())
            .map_err(|source| FcError::Spawn {
                link: link.clone(),
                source,
            })?;
        Ok(Self {
            link,
            policy: config.policy,
            publisher: config.publisher,
            gps_input: config.gps_input,
            sensor_id: config.global_position_sensor_id,
            max_fix_age: config.max_fix_age,
            shared,
            tx: Some(tx),
            stop,
            thread: Some(thread),
            local_addr,
        })
    }

    /// The link address.
    pub fn link(&self) -> &str {
        &self.link
    }

    /// The local socket address (UDP/TCP), e.g. to point a simulator at a `udpin:127.0.0.1:0` link.
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.local_addr
    }

    /// A copy of the vehicle state, GNSS verdict and counters.
    pub fn snapshot(&self) -> LinkSnapshot {
        let s = lock(&self.shared);
        LinkSnapshot {
            vehicle: s.vehicle.clone(),
            gnss: s.gnss,
            open: s.open,
            autopilot_alive: s.autopilot_alive,
            stats: s.stats,
        }
    }

    /// Publishes `fix` if the policy and the GNSS verdict say so, as the message the autopilot takes.
    /// Never blocks.
    pub fn publish(&self, fix: &Fix) -> Result<PublishOutcome, FcError> {
        if !fix.is_valid() {
            return Err(FcError::InvalidFix {
                link: self.link.clone(),
                reason: "non-finite or out-of-range coordinates, accuracy, altitude or velocity",
            });
        }
        let message = {
            let s = lock(&self.shared);
            if !self.policy.publishes(s.gnss.verdict) {
                if self.policy == PublishPolicy::Never {
                    log::info!(
                        "dry run: fix {:.7} {:.7} ±{:.1} m not sent to {}",
                        fix.lat_deg,
                        fix.lon_deg,
                        fix.horiz_accuracy_m,
                        self.link
                    );
                    return Ok(PublishOutcome::DryRun);
                }
                return Ok(PublishOutcome::Withheld(s.gnss.verdict));
            }
            let target = s.vehicle.autopilot.map(|a| a.value);
            let publisher = match (self.publisher, target.map(|t| t.kind)) {
                (Publisher::Auto, Some(AutopilotKind::Px4)) => Publisher::GlobalPositionSensor,
                (Publisher::Auto, Some(_)) => Publisher::GpsInput,
                (Publisher::Auto, None) => return Ok(PublishOutcome::NoAutopilot),
                (p, _) => p,
            };
            match publisher {
                Publisher::GpsInput | Publisher::Auto => {
                    MavMessage::GPS_INPUT(messages::gps_input(fix, &self.gps_input))
                }
                Publisher::GlobalPositionSensor => {
                    MavMessage::GLOBAL_POSITION_SENSOR(messages::global_position_sensor(
                        fix,
                        self.sensor_id,
                        unix_now_us(),
                        target.map_or(0, |t| t.system_id),
                    ))
                }
                Publisher::Odometry => match s.vehicle.ekf_origin {
                    Some(origin) => MavMessage::ODOMETRY(messages::odometry(fix, &origin.value, 0)),
                    None => return Ok(PublishOutcome::NoEkfOrigin),
                },
            }
        };
        let name = message.message_name();
        let tx = self.tx.as_ref().ok_or_else(|| FcError::Closed {
            link: self.link.clone(),
        })?;
        let stale_at = self.max_fix_age.map(|age| Instant::now() + age);
        match tx.try_send(Outgoing { message, stale_at }) {
            Ok(()) => Ok(PublishOutcome::Queued(name)),
            Err(TrySendError::Full(_)) => Ok(PublishOutcome::QueueFull),
            Err(TrySendError::Disconnected(_)) => Err(FcError::Closed {
                link: self.link.clone(),
            }),
        }
    }
}

impl FcLink {
    /// Queues a STATUSTEXT (cut to 50 bytes) to the autopilot. Never blocks; `false` when the queue is full or
    /// the link has shut down.
    pub fn status_text(&self, severity: MavSeverity, text: &str) -> bool {
        let message = MavMessage::STATUSTEXT(messages::statustext(severity, text));
        self.tx.as_ref().is_some_and(|tx| {
            tx.try_send(Outgoing {
                message,
                stale_at: None,
            })
            .is_ok()
        })
    }

    /// Reads the autopilot parameter `name` (PARAM_REQUEST_READ → PARAM_VALUE), sending the request up to
    /// `attempts` times and waiting `timeout` after each. Blocks the caller, never the link thread. See
    /// [`super::params`].
    pub fn read_param(
        &self,
        name: &str,
        timeout: Duration,
        attempts: u32,
    ) -> Result<ParamValue, ParamError> {
        let (book, autopilot) = {
            let s = lock(&self.shared);
            (Arc::clone(&s.params), s.vehicle.autopilot.map(|a| a.value))
        };
        params::read(
            &self.link,
            &book,
            autopilot,
            name,
            timeout,
            attempts,
            |message| {
                self.tx.as_ref().is_some_and(|tx| {
                    tx.try_send(Outgoing {
                        message,
                        stale_at: None,
                    })
                    .is_ok()
                })
            },
        )
    }
}

impl Drop for FcLink {
    fn drop(&mut self) {
        // Release the sending end first, then stop and join: the thread never waits on us.
        self.tx = None;
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// The telemetry we ask for when it does not arrive: (message id, interval µs, ArduPilot only).
const WANTED_STREAMS: [(u32, f32, bool); 6] = [
    (30, 100_000.0, false),  // ATTITUDE 10 Hz
    (33, 200_000.0, false),  // GLOBAL_POSITION_INT 5 Hz
    (24, 200_000.0, false),  // GPS_RAW_INT 5 Hz
    (1, 500_000.0, false),   // SYS_STATUS 2 Hz
    (193, 500_000.0, true),  // EKF_STATUS_REPORT 2 Hz (ArduPilot dialect)
    (2, 1_000_000.0, false), // SYSTEM_TIME 1 Hz
];
/// DISTANCE_SENSOR only exists with a rangefinder: asked for like the others but its absence is normal.
const DISTANCE_SENSOR_STREAM: (u32, f32) = (132, 100_000.0);
const GPS_GLOBAL_ORIGIN_ID: u32 = 49;

/// The sender of a frame, with a classic 8-bit system id.
struct Header {
    system_id: u8,
    component_id: u8,
}

struct Worker {
    link: String,
    config: LinkConfig,
    sequence: u8,
    signer: Option<Signer>,
    /// Signing only: the last timestamp of each incoming signed stream (link id, system id, component id).
    stream_timestamps: HashMap<(u8, u32, u8), u64>,
    learned_system_id: Option<u8>,
    reader: Option<MavlinkReader<TransportReader>>,
    monitor: GnssMonitor,
    shared: Arc<Mutex<Shared>>,
    rx: Receiver<Outgoing>,
    stop: Arc<AtomicBool>,
    last_seen: HashMap<u32, Instant>,
    last_request: HashMap<u32, Instant>,
    /// Since when the autopilot's HEARTBEAT has been arriving without a gap longer than the timeout.
    autopilot_since: Option<Instant>,
}

impl Worker {
    fn run(mut self) {
        let tick = Duration::from_millis(100);
        let mut next_heartbeat = Instant::now();
        let mut next_tick = Instant::now();
        let mut next_reconnect = Instant::now();
        while !self.stop.load(Ordering::Relaxed) {
            let now = Instant::now();
            if now >= next_tick {
                self.tick(now);
                next_tick = now + tick;
            }
            if self.reader.is_none() {
                // Drop what was queued while the link was down: stale fixes are worse than none.
                loop {
                    match self.rx.try_recv() {
                        Ok(_) => {}
                        Err(TryRecvError::Empty) => break,
                        Err(TryRecvError::Disconnected) => return,
                    }
                }
                if now >= next_reconnect {
                    match transport::open(&self.config.address, self.config.read_timeout) {
                        Ok(t) => {
                            log::info!("flight-controller link {} reopened", self.link);
                            self.reader = Some(MavlinkReader::new(TransportReader::new(t)));
                            let mut s = lock(&self.shared);
                            s.open = true;
                            s.stats.reconnects += 1;
                        }
                        Err(e) => {
                            log::debug!("{e}");
                            next_reconnect = now + self.config.reconnect_period;
                        }
                    }
                } else {
                    std::thread::sleep(self.config.read_timeout.min(next_reconnect - now));
                }
                continue;
            }
            loop {
                match self.rx.try_recv() {
                    Ok(Outgoing {
                        stale_at: Some(t), ..
                    }) if Instant::now() > t => {
                        log::debug!("stale fix dropped from the send queue of {}", self.link);
                        lock(&self.shared).stats.stale_dropped += 1;
                    }
                    Ok(m) => self.send(&m.message),
                    Err(TryRecvError::Empty) => break,
                    Err(TryRecvError::Disconnected) => return,
                }
            }
            if now >= next_heartbeat {
                let active = self.config.policy.publishes(self.monitor.status().verdict);
                self.send(&MavMessage::HEARTBEAT(messages::heartbeat(active)));
                // Keep the 1 Hz cadence; after a stall, restart it rather than sending a burst.
                next_heartbeat += self.config.heartbeat_period;
                if next_heartbeat <= now {
                    next_heartbeat = now + self.config.heartbeat_period;
                }
            }
            self.read_one();
        }
    }

    fn system_id(&self) -> u8 {
        self.config
            .system_id
            .or(self.learned_system_id)
            .unwrap_or(1)
    }

    fn close(&mut self, error: io::Error) {
        if self.reader.take().is_some() {
            log::warn!(
                "{}",
                FcError::Io {
                    link: self.link.clone(),
                    source: error
                }
            );
            lock(&self.shared).open = false;
        }
    }

    fn send(&mut self, message: &MavMessage) {
        let mut bytes = messages::encode(
            message,
            self.system_id(),
            self.config.component_id,
            self.sequence,
        );
        if let Some(signer) = self.signer.as_mut() {
            signer.sign(&mut bytes);
        }
        let Some(reader) = self.reader.as_mut() else {
            return;
        };
        match reader.get_mut().transport.send(&bytes) {
            Ok(()) => {
                self.sequence = self.sequence.wrapping_add(1);
                lock(&self.shared).stats.frames_out += 1;
            }
            Err(e) => self.close(e),
        }
    }

    fn read_one(&mut self) {
        let Some(reader) = self.reader.as_mut() else {
            return;
        };
        match reader.read_any_raw_message::<MavMessage>() {
            Ok(raw) => self.receive_raw(&raw),
            Err(MessageReadError::Io(e))
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) => {}
            Err(MessageReadError::Io(e)) => self.close(e),
            Err(MessageReadError::Parse(e)) => {
                log::debug!("unparsable frame on {}: {e}", self.link);
                lock(&self.shared).stats.parse_errors += 1;
            }
        }
    }

    /// Checks the signature (when signing), parses and hands the message to [`Self::receive`].
    fn receive_raw(&mut self, raw: &MAVLinkMessageRaw) {
        if let Some(signer) = &self.signer {
            let signed = match raw {
                MAVLinkMessageRaw::V2(m) => Some(m.raw_bytes()).filter(|b| signing::is_signed(b)),
                MAVLinkMessageRaw::V1(_) => None,
            };
            match signed {
                Some(bytes) if !signing::signature_is_valid(signer.key(), bytes) => {
                    log::debug!("frame with a bad signature dropped on {}", self.link);
                    lock(&self.shared).stats.bad_signatures += 1;
                    return;
                }
                Some(bytes) => {
                    if let Some((link_id, timestamp)) = signing::link_id_and_timestamp(bytes) {
                        let stream = (link_id, raw.system_id(), raw.component_id());
                        if self
                            .stream_timestamps
                            .get(&stream)
                            .is_some_and(|last| timestamp <= *last)
                        {
                            log::debug!("replayed signed frame dropped on {}", self.link);
                            lock(&self.shared).stats.bad_signatures += 1;
                            return;
                        }
                        self.stream_timestamps.insert(stream, timestamp);
                    }
                }
                None => lock(&self.shared).stats.unsigned_in += 1,
            }
        }
        let header = mavlink::MavHeader {
            system_id: raw.system_id(),
            component_id: raw.component_id(),
            sequence: raw.sequence(),
        };
        match MavMessage::parse(raw.version(), raw.message_id(), raw.payload()) {
            Ok(message) => self.receive(header, message),
            Err(e) => {
                log::debug!("unparsable frame on {}: {e}", self.link);
                lock(&self.shared).stats.parse_errors += 1;
            }
        }
    }

    fn receive(&mut self, header: mavlink::MavHeader, message: MavMessage) {
        let now = Instant::now();
        lock(&self.shared).stats.frames_in += 1;
        // Extended (MAVLink 2, > 255) system ids are never an ArduPilot or PX4 autopilot.
        let Ok(system_id) = u8::try_from(header.system_id) else {
            return;
        };
        let header = Header {
            system_id,
            component_id: header.component_id,
        };
        if header.component_id == self.config.component_id && header.system_id == self.system_id() {
            return; // our own frames echoed back by a router
        }
        if let MavMessage::HEARTBEAT(h) = &message {
            use mavlink::dialects::ardupilotmega::{MavAutopilot, MavType};
            let is_autopilot = h.autopilot != MavAutopilot::MAV_AUTOPILOT_INVALID
                && !matches!(
                    h.mavtype,
                    MavType::MAV_TYPE_GCS | MavType::MAV_TYPE_ONBOARD_CONTROLLER
                );
            if !is_autopilot {
                return;
            }
            if let Some(id) = self.config.system_id {
                if header.system_id != id {
                    return;
                }
            } else if self.learned_system_id != Some(header.system_id) {
                log::info!(
                    "autopilot on {} is system {} (component {})",
                    self.link,
                    header.system_id,
                    header.component_id
                );
                self.learned_system_id = Some(header.system_id);
            }
        } else if let Some(target) = self.config.system_id.or(self.learned_system_id) {
            if header.system_id != target {
                return;
            }
        }
        if let MavMessage::PARAM_VALUE(p) = &message {
            lock(&self.shared).params.record(p, header.component_id);
        }
        self.last_seen.insert(message.message_id(), now);
        lock(&self.shared)
            .vehicle
            .apply(&message, header.system_id, header.component_id, now);
    }

    /// The periodic work: the GNSS verdict, the autopilot timeout and stream requests.
    fn tick(&mut self, now: Instant) {
        let (vehicle, changed) = {
            let mut s = lock(&self.shared);
            let changed = self.monitor.update(&s.vehicle, now);
            s.gnss = self.monitor.status();
            s.autopilot_alive = s
                .vehicle
                .autopilot
                .is_some_and(|a| a.age(now) <= self.config.autopilot_timeout);
            (s.vehicle.clone(), changed)
        };
        if let Some(status) = changed {
            let publishing = self.config.policy.publishes(status.verdict);
            // STATUSTEXT holds 50 bytes: the verdict goes to the autopilot, the reason to our log.
            let text = format!(
                "vimgeo: GNSS {}, visual fixes {}",
                status.verdict,
                if publishing { "active" } else { "off" }
            );
            log::info!("{text} ({})", status.reason);
            let severity = match status.verdict {
                GnssVerdict::Denied => MavSeverity::MAV_SEVERITY_WARNING,
                GnssVerdict::Degraded => MavSeverity::MAV_SEVERITY_NOTICE,
                GnssVerdict::Healthy => MavSeverity::MAV_SEVERITY_INFO,
            };
            self.send(&MavMessage::STATUSTEXT(messages::statustext(
                severity, &text,
            )));
        }
        let Some(autopilot) = vehicle
            .autopilot
            .filter(|a| a.age(now) <= self.config.autopilot_timeout)
        else {
            self.autopilot_since = None;
            return;
        };
        self.autopilot_since.get_or_insert(now);
        let ardupilot = autopilot.value.kind == AutopilotKind::ArduPilot;
        let mut requests = Vec::new();
        for (id, interval, ardupilot_only) in WANTED_STREAMS.iter().copied() {
            if !ardupilot_only || ardupilot {
                requests.push((id, interval, MavCmd::MAV_CMD_SET_MESSAGE_INTERVAL));
            }
        }
        requests.push((
            DISTANCE_SENSOR_STREAM.0,
            DISTANCE_SENSOR_STREAM.1,
            MavCmd::MAV_CMD_SET_MESSAGE_INTERVAL,
        ));
        if vehicle.ekf_origin.is_none() {
            requests.push((GPS_GLOBAL_ORIGIN_ID, 0.0, MavCmd::MAV_CMD_REQUEST_MESSAGE));
        }
        let timeout = self.config.stream_timeout;
        for (id, interval, command) in requests {
            // Give the autopilot its own stream settings first: only ask after a full timeout of silence.
            let missing = self
                .last_seen
                .get(&id)
                .is_none_or(|t| now.duration_since(*t) > timeout);
            let asked_recently = self
                .last_request
                .get(&id)
                .is_some_and(|t| now.duration_since(*t) < timeout);
            let connected_long_enough = self
                .autopilot_since
                .is_some_and(|t| now.duration_since(t) >= timeout);
            if missing && !asked_recently && connected_long_enough {
                self.last_request.insert(id, now);
                lock(&self.shared).stats.stream_requests += 1;
                self.send(&MavMessage::COMMAND_LONG(COMMAND_LONG_DATA {
                    target_system: autopilot.value.system_id,
                    target_component: autopilot.value.component_id,
                    command,
                    confirmation: 0,
                    param1: id as f32,
                    param2: interval,
                    param3: 0.0,
                    param4: 0.0,
                    param5: 0.0,
                    param6: 0.0,
                    param7: 0.0,
                }));
            }
        }
    }
}
