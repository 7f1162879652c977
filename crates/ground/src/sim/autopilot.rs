//! A fake autopilot: streams ArduPilot- or PX4-like telemetry over UDP from a scripted [`Scenario`] and records
//! every message it receives.
//!
//! It flies a straight line at constant velocity from the scenario's start, reports a healthy 3D GNSS fix except
//! between [`Scenario::gnss_lost_at`] and [`Scenario::gnss_restored_at`] (no fix, no satellites, GPS health bit
//! cleared). Streams listed in [`Scenario::silent_streams`] start only when asked for with
//! MAV_CMD_SET_MESSAGE_INTERVAL; no command is acknowledged, every message received is recorded. Its thread
//! (`vimgeo-sim-autopilot`) stops and is joined on drop.
//!
//! For the closed-loop simulation ([`crate::sim::closed_loop`]) a scenario can also:
//! - follow a [`Trajectory`] ([`Scenario::trajectory`]): position, velocity, attitude and height above ground
//!   come from it, on a clock shared with the simulated camera ([`Scenario::clock_origin`]);
//! - lose GNSS in more windows ([`Scenario::gnss_lost_windows`], e.g. a flapping receiver);
//! - drop the link ([`Scenario::link_drops`]): in those windows it sends nothing and ignores (drains without
//!   recording) everything it receives, like a radio out of range;
//! - be spoofed ([`Scenario::gnss_spoofs`]): its receiver keeps a healthy 3D fix on the spoofed position and
//!   its EKF trusts it, so GPS_RAW_INT and GLOBAL_POSITION_INT both report the spoofed position and velocity
//!   while the vehicle (the trajectory, which the simulated camera sees) flies on where it really is.

use std::io::{self, Cursor};
use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use mavlink::dialects::ardupilotmega::{
    EkfStatusFlags, GpsFixType, MavAutopilot, MavCmd, MavDistanceSensor, MavMessage, MavModeFlag,
    MavSensorOrientation, MavState, MavSysStatusSensor, MavType, ATTITUDE_DATA,
    DISTANCE_SENSOR_DATA, EKF_STATUS_REPORT_DATA, GLOBAL_POSITION_INT_DATA, GPS_GLOBAL_ORIGIN_DATA,
    GPS_RAW_INT_DATA, HEARTBEAT_DATA, SYSTEM_TIME_DATA, SYS_STATUS_DATA,
};
use mavlink::MavlinkReader;

use crate::sim::autopilot_params::ParamTable;
use crate::sim::trajectory::Trajectory;
use vimgeo_onboard::fc::{messages, FcError};

/// Which flight stack the fake autopilot pretends to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FlightStack {
    /// MAV_AUTOPILOT_ARDUPILOTMEGA (sends EKF_STATUS_REPORT too).
    #[default]
    ArduPilot,
    /// MAV_AUTOPILOT_PX4.
    Px4,
}

/// The scripted flight.
#[derive(Debug, Clone)]
pub struct Scenario {
    /// Flight stack.
    pub stack: FlightStack,
    /// The autopilot's system id.
    pub system_id: u8,
    /// Start position, degrees.
    pub start_lat_lon_deg: [f64; 2],
    /// Altitude MSL, metres (also the EKF origin's altitude minus [`Self::height_agl_m`]).
    pub alt_msl_m: f32,
    /// Height above ground, metres (DISTANCE_SENSOR).
    pub height_agl_m: f32,
    /// Constant ground velocity north/east, m/s.
    pub vel_ne_mps: [f32; 2],
    /// GNSS is lost at this time after start.
    pub gnss_lost_at: Option<Duration>,
    /// GNSS comes back at this time after start.
    pub gnss_restored_at: Option<Duration>,
    /// Telemetry rate (every message), Hz; HEARTBEAT is always 1 Hz.
    pub telemetry_hz: f32,
    /// Message ids not streamed until asked for with MAV_CMD_SET_MESSAGE_INTERVAL (as after a fresh
    /// parameter reset, when `SRn_*` rates are zero).
    pub silent_streams: Vec<u32>,
    /// Fly this path instead of the straight line (position, velocity, attitude, height above ground); the
    /// EKF origin is then the trajectory's origin at [`Self::alt_msl_m`] minus the height.
    pub trajectory: Option<Arc<Trajectory>>,
    /// Time zero of the script (shared with a simulated camera); `None`: when the autopilot is spawned.
    pub clock_origin: Option<Instant>,
    /// More windows `[start, end)` after time zero without a GNSS fix (flapping), besides
    /// [`Self::gnss_lost_at`]..[`Self::gnss_restored_at`].
    pub gnss_lost_windows: Vec<(Duration, Duration)>,
    /// Windows `[start, end)` in which the link is down: nothing is sent, everything received is ignored.
    pub link_drops: Vec<(Duration, Duration)>,
    /// The parameters it answers PARAM_REQUEST_READ / _LIST / PARAM_SET with (shared: a test may change it
    /// while the autopilot runs); empty by default, so every read goes unanswered.
    pub params: ParamTable,
    /// Windows in which GNSS is spoofed.
    pub gnss_spoofs: Vec<GnssSpoof>,
}

/// What a GNSS spoofer does to the position the receiver (and the EKF that trusts it) reports.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Spoof {
    /// Drags: from the window's start the reported position moves away from the true one at `speed_mps`
    /// towards `bearing_deg` (clockwise from north), and the reported velocity carries that drift.
    Drag {
        /// m/s.
        speed_mps: f64,
        /// Degrees clockwise from north.
        bearing_deg: f64,
    },
    /// Jumps: the reported position is `offset_m` towards `bearing_deg` from the true one.
    Jump {
        /// Metres.
        offset_m: f64,
        /// Degrees clockwise from north.
        bearing_deg: f64,
    },
    /// Replays: the reported position and velocity are the true ones of `delay_s` earlier.
    Delay {
        /// Seconds.
        delay_s: f64,
    },
}

/// A spoofer active from `start` to `end` after time zero.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GnssSpoof {
    /// Start.
    pub start: Duration,
    /// End (exclusive).
    pub end: Duration,
    /// What it does.
    pub spoof: Spoof,
}

impl Default for Scenario {
    fn default() -> Self {
        Self {
            stack: FlightStack::ArduPilot,
            system_id: 1,
            start_lat_lon_deg: [47.397_742, 8.545_594],
            alt_msl_m: 588.0,
            height_agl_m: 100.0,
            vel_ne_mps: [5.0, 0.0],
            gnss_lost_at: None,
            gnss_restored_at: None,
            telemetry_hz: 10.0,
            silent_streams: Vec::new(),
            trajectory: None,
            clock_origin: None,
            gnss_lost_windows: Vec::new(),
            link_drops: Vec::new(),
            params: ParamTable::default(),
            gnss_spoofs: Vec::new(),
        }
    }
}

impl Scenario {
    /// Whether GNSS is available at `t` after start.
    pub fn gnss_ok(&self, t: Duration) -> bool {
        let lost = self.gnss_lost_at.is_some_and(|l| t >= l);
        let restored = self.gnss_restored_at.is_some_and(|r| t >= r);
        let in_window = |w: &[(Duration, Duration)]| w.iter().any(|(a, b)| t >= *a && t < *b);
        (!lost || restored) && !in_window(&self.gnss_lost_windows)
    }

    /// Whether the link is down at `t` after start.
    pub fn link_down(&self, t: Duration) -> bool {
        self.link_drops.iter().any(|(a, b)| t >= *a && t < *b)
    }

    /// The spoofer active at `t`, if any (the first whose window holds `t`).
    pub fn spoof_at(&self, t: Duration) -> Option<&GnssSpoof> {
        self.gnss_spoofs.iter().find(|w| t >= w.start && t < w.end)
    }

    /// What the receiver and the EKF report at `t`: position (degrees) and ground velocity north/east (m/s),
    /// the true ones unless a spoofer is active.
    pub fn reported(&self, t: Duration) -> ([f64; 2], [f32; 2]) {
        let truth = |t: Duration| (self.position(t), self.velocity(t));
        let Some(w) = self.spoof_at(t) else {
            return truth(t);
        };
        let towards = |metres: f64, bearing_deg: f64| {
            let b = bearing_deg.to_radians();
            (metres * b.cos(), metres * b.sin())
        };
        match w.spoof {
            Spoof::Delay { delay_s } => truth(t.saturating_sub(Duration::from_secs_f64(delay_s))),
            Spoof::Jump {
                offset_m,
                bearing_deg,
            } => {
                let ([lat, lon], v) = truth(t);
                let (n, e) = towards(offset_m, bearing_deg);
                let (lat, lon) = vimgeo_onboard::geodesy::offset_lat_lon(lat, lon, n, e);
                ([lat, lon], v)
            }
            Spoof::Drag {
                speed_mps,
                bearing_deg,
            } => {
                let ([lat, lon], [vn, ve]) = truth(t);
                let dragged_s = (t - w.start).as_secs_f64();
                let (n, e) = towards(speed_mps * dragged_s, bearing_deg);
                let (lat, lon) = vimgeo_onboard::geodesy::offset_lat_lon(lat, lon, n, e);
                let (dn, de) = towards(speed_mps, bearing_deg);
                ([lat, lon], [vn + dn as f32, ve + de as f32])
            }
        }
    }

    /// True ground velocity north/east at `t` after start, m/s.
    fn velocity(&self, t: Duration) -> [f32; 2] {
        self.trajectory.as_ref().map_or(self.vel_ne_mps, |tr| {
            tr.state(t.as_secs_f64()).vel_ne_mps.map(|v| v as f32)
        })
    }

    /// Position at `t` after start, degrees.
    pub fn position(&self, t: Duration) -> [f64; 2] {
        let s = t.as_secs_f64();
        if let Some(tr) = &self.trajectory {
            let st = tr.state(s);
            return [st.lat_deg, st.lon_deg];
        }
        let [lat, lon] = self.start_lat_lon_deg;
        let (lat, lon) = vimgeo_onboard::geodesy::offset_lat_lon(
            lat,
            lon,
            f64::from(self.vel_ne_mps[0]) * s,
            f64::from(self.vel_ne_mps[1]) * s,
        );
        [lat, lon]
    }
}

/// A message the fake autopilot received.
#[derive(Debug, Clone)]
pub struct Received {
    /// Time after the autopilot started.
    pub at: Duration,
    /// Sender's system id (u32: MAVLink 2 allows extended ones).
    pub system_id: u32,
    /// Sender's component id.
    pub component_id: u8,
    /// The message.
    pub message: MavMessage,
}

/// A running fake autopilot. See the module documentation.
pub struct FakeAutopilot {
    socket: Arc<UdpSocket>,
    target: SocketAddr,
    received: Arc<Mutex<Vec<Received>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    started: Instant,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl FakeAutopilot {
    /// Binds 127.0.0.1 on a free port and streams `scenario` to `target` (our `udpin` link).
    pub fn spawn(scenario: Scenario, target: SocketAddr) -> Result<Self, FcError> {
        let link = format!("fake autopilot → udp:{target}");
        let open = |source: io::Error| FcError::Open {
            link: link.clone(),
            source,
        };
        let socket = UdpSocket::bind(("127.0.0.1", 0)).map_err(open)?;
        socket
            .set_read_timeout(Some(Duration::from_millis(5)))
            .map_err(open)?;
        let socket = Arc::new(socket);
        let received = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let started = scenario.clock_origin.unwrap_or_else(Instant::now);
        let thread = {
            let socket = Arc::clone(&socket);
            let received = Arc::clone(&received);
            let stop = Arc::clone(&stop);
            std::thread::Builder::new()
                .name("vimgeo-sim-autopilot".into())
                .spawn(move || run(&scenario, &socket, target, &received, &stop, started))
                .map_err(|source| FcError::Spawn {
                    link: link.clone(),
                    source,
                })?
        };
        Ok(Self {
            socket,
            target,
            received,
            stop,
            thread: Some(thread),
            started,
        })
    }

    /// The autopilot's own address.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.socket.local_addr()
    }

    /// Time zero of the script.
    pub fn started(&self) -> Instant {
        self.started
    }

    /// Time since start.
    pub fn elapsed(&self) -> Duration {
        Instant::now().saturating_duration_since(self.started)
    }

    /// Everything received so far.
    pub fn received(&self) -> Vec<Received> {
        lock(&self.received).clone()
    }

    /// Sends raw bytes to the link (noise, truncated or corrupted frames).
    pub fn send_raw(&self, bytes: &[u8]) -> io::Result<()> {
        self.socket.send_to(bytes, self.target).map(|_| ())
    }
}

impl Drop for FakeAutopilot {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn run(
    scenario: &Scenario,
    socket: &UdpSocket,
    target: SocketAddr,
    received: &Mutex<Vec<Received>>,
    stop: &AtomicBool,
    started: Instant,
) {
    let hz = if scenario.telemetry_hz.is_finite() {
        scenario.telemetry_hz.clamp(0.1, 100.0)
    } else {
        10.0
    };
    let period = Duration::from_secs_f32(1.0 / hz);
    // A shared time zero may lie in the past: start streaming now, not with a burst of catch-up messages.
    let mut next = started.max(Instant::now());
    let mut next_heartbeat = next;
    let mut sequence = 0u8;
    let mut buf = vec![0u8; 65_536];
    let mut silent: Vec<u32> = scenario.silent_streams.clone();
    while !stop.load(Ordering::Relaxed) {
        let now = Instant::now();
        let down = scenario.link_down(now.saturating_duration_since(started));
        if now >= next {
            let t = now.saturating_duration_since(started);
            let mut out = telemetry(scenario, t);
            out.retain(|m| !silent.contains(&mavlink::Message::message_id(m)));
            if now >= next_heartbeat {
                out.push(heartbeat(scenario));
                next_heartbeat += Duration::from_secs(1);
            }
            if down {
                out.clear();
            }
            for m in &out {
                let bytes = messages::encode(m, scenario.system_id, 1, sequence);
                sequence = sequence.wrapping_add(1);
                // Nobody listening yet is fine for a simulator.
                let _ = socket.send_to(&bytes, target);
            }
            next += period;
        }
        if let Ok((n, _)) = socket.recv_from(&mut buf) {
            if down {
                // Out of range: what was sent never arrived.
                continue;
            }
            let mut reader = MavlinkReader::new(Cursor::new(&buf[..n]));
            loop {
                match reader.read_any_message::<MavMessage>() {
                    Ok((h, message)) => {
                        if let MavMessage::COMMAND_LONG(c) = &message {
                            if c.command == MavCmd::MAV_CMD_SET_MESSAGE_INTERVAL && c.param2 > 0.0 {
                                silent.retain(|id| *id as f32 != c.param1);
                            }
                        }
                        for reply in scenario.params.answer(&message, scenario.stack) {
                            let bytes = messages::encode(&reply, scenario.system_id, 1, sequence);
                            sequence = sequence.wrapping_add(1);
                            let _ = socket.send_to(&bytes, target);
                        }
                        lock(received).push(Received {
                            at: Instant::now().saturating_duration_since(started),
                            system_id: h.system_id,
                            component_id: h.component_id,
                            message,
                        });
                    }
                    Err(mavlink::error::MessageReadError::Parse(_)) => {}
                    Err(_) => break,
                }
            }
        }
    }
}

fn heartbeat(scenario: &Scenario) -> MavMessage {
    MavMessage::HEARTBEAT(HEARTBEAT_DATA {
        custom_mode: 0,
        mavtype: MavType::MAV_TYPE_QUADROTOR,
        autopilot: match scenario.stack {
            FlightStack::ArduPilot => MavAutopilot::MAV_AUTOPILOT_ARDUPILOTMEGA,
            FlightStack::Px4 => MavAutopilot::MAV_AUTOPILOT_PX4,
        },
        base_mode: MavModeFlag::MAV_MODE_FLAG_SAFETY_ARMED
            | MavModeFlag::MAV_MODE_FLAG_CUSTOM_MODE_ENABLED,
        system_status: MavState::MAV_STATE_ACTIVE,
        mavlink_version: 3,
    })
}

fn telemetry(scenario: &Scenario, t: Duration) -> Vec<MavMessage> {
    let boot_ms = t.as_millis() as u32;
    let ([lat, lon], [rep_vn, rep_ve]) = scenario.reported(t);
    let e7 = |d: f64| (d * 1e7).round() as i32;
    // A spoofer is a signal: the receiver locks on to it even where the real one is jammed.
    let gnss = scenario.gnss_ok(t) || scenario.spoof_at(t).is_some();
    let truth = scenario
        .trajectory
        .as_ref()
        .map(|tr| tr.state(t.as_secs_f64()));
    let [vn, ve] = truth.map_or(scenario.vel_ne_mps, |s| s.vel_ne_mps.map(|v| v as f32));
    let (roll, pitch, yaw) = truth.map_or((0.01, -0.02, ve.atan2(vn)), |s| {
        (s.roll_rad as f32, s.pitch_rad as f32, s.yaw_rad as f32)
    });
    let height_agl_m = truth.map_or(scenario.height_agl_m, |s| s.height_agl_m as f32);
    let origin = scenario
        .trajectory
        .as_ref()
        .map_or(scenario.start_lat_lon_deg, |tr| {
            let o = tr.frame().origin();
            [o.lat_deg, o.lon_deg]
        });
    let gps_sensor = MavSysStatusSensor::MAV_SYS_STATUS_SENSOR_GPS;
    let unix_us = vimgeo_onboard::util::unix_now_us();
    let mut out = vec![
        MavMessage::ATTITUDE(ATTITUDE_DATA {
            time_boot_ms: boot_ms,
            roll,
            pitch,
            yaw,
            ..ATTITUDE_DATA::DEFAULT
        }),
        MavMessage::GLOBAL_POSITION_INT(GLOBAL_POSITION_INT_DATA {
            time_boot_ms: boot_ms,
            lat: e7(lat),
            lon: e7(lon),
            alt: (scenario.alt_msl_m * 1000.0) as i32,
            relative_alt: (height_agl_m * 1000.0) as i32,
            vx: (rep_vn * 100.0) as i16,
            vy: (rep_ve * 100.0) as i16,
            vz: 0,
            hdg: 0,
        }),
        MavMessage::GPS_RAW_INT(GPS_RAW_INT_DATA {
            time_usec: unix_us,
            fix_type: if gnss {
                GpsFixType::GPS_FIX_TYPE_3D_FIX
            } else {
                GpsFixType::GPS_FIX_TYPE_NO_FIX
            },
            lat: if gnss { e7(lat) } else { 0 },
            lon: if gnss { e7(lon) } else { 0 },
            alt: (scenario.alt_msl_m * 1000.0) as i32,
            eph: if gnss { 80 } else { u16::MAX },
            epv: if gnss { 120 } else { u16::MAX },
            vel: u16::MAX,
            cog: u16::MAX,
            satellites_visible: if gnss { 14 } else { 0 },
            ..GPS_RAW_INT_DATA::DEFAULT
        }),
        MavMessage::SYS_STATUS(SYS_STATUS_DATA {
            onboard_control_sensors_present: gps_sensor,
            onboard_control_sensors_enabled: gps_sensor,
            onboard_control_sensors_health: if gnss {
                gps_sensor
            } else {
                MavSysStatusSensor::empty()
            },
            voltage_battery: 15_800,
            ..SYS_STATUS_DATA::DEFAULT
        }),
        MavMessage::SYSTEM_TIME(SYSTEM_TIME_DATA {
            time_unix_usec: unix_us,
            time_boot_ms: boot_ms,
        }),
        MavMessage::DISTANCE_SENSOR(DISTANCE_SENSOR_DATA {
            time_boot_ms: boot_ms,
            min_distance: 20,
            max_distance: 40_000,
            current_distance: (height_agl_m * 100.0) as u16,
            mavtype: MavDistanceSensor::MAV_DISTANCE_SENSOR_LASER,
            id: 0,
            orientation: MavSensorOrientation::MAV_SENSOR_ROTATION_PITCH_270,
            covariance: u8::MAX,
            ..DISTANCE_SENSOR_DATA::DEFAULT
        }),
        MavMessage::GPS_GLOBAL_ORIGIN(GPS_GLOBAL_ORIGIN_DATA {
            latitude: e7(origin[0]),
            longitude: e7(origin[1]),
            altitude: ((scenario.alt_msl_m - height_agl_m) * 1000.0) as i32,
            ..GPS_GLOBAL_ORIGIN_DATA::DEFAULT
        }),
    ];
    if scenario.stack == FlightStack::ArduPilot {
        let mut flags = EkfStatusFlags::EKF_ATTITUDE
            | EkfStatusFlags::EKF_VELOCITY_HORIZ
            | EkfStatusFlags::EKF_POS_HORIZ_ABS;
        if !gnss {
            flags |= EkfStatusFlags::EKF_GPS_GLITCHING;
        }
        out.push(MavMessage::EKF_STATUS_REPORT(EKF_STATUS_REPORT_DATA {
            flags,
            velocity_variance: 0.1,
            pos_horiz_variance: if gnss { 0.1 } else { 0.9 },
            ..EKF_STATUS_REPORT_DATA::DEFAULT
        }));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use vimgeo_onboard::geodesy::offset_ne_m;

    /// The GLOBAL_POSITION_INT and GPS_RAW_INT of `telemetry` at `t`: position (degrees), velocity (m/s), and
    /// the receiver's fix type and satellites.
    fn reported(scenario: &Scenario, t: Duration) -> ([f64; 2], [f64; 2], [f64; 2], u8, u8) {
        let mut position = None;
        let mut receiver = None;
        for m in telemetry(scenario, t) {
            match m {
                MavMessage::GLOBAL_POSITION_INT(p) => {
                    position = Some((
                        [f64::from(p.lat) * 1e-7, f64::from(p.lon) * 1e-7],
                        [f64::from(p.vx) / 100.0, f64::from(p.vy) / 100.0],
                    ));
                }
                MavMessage::GPS_RAW_INT(g) => {
                    receiver = Some((
                        [f64::from(g.lat) * 1e-7, f64::from(g.lon) * 1e-7],
                        g.fix_type as u8,
                        g.satellites_visible,
                    ));
                }
                _ => {}
            }
        }
        let (p, v) = position.unwrap();
        let (r, fix, sats) = receiver.unwrap();
        (p, v, r, fix, sats)
    }

    fn spoofed(spoof: Spoof) -> Scenario {
        Scenario {
            vel_ne_mps: [5.0, 0.0],
            gnss_spoofs: vec![GnssSpoof {
                start: Duration::from_secs(10),
                end: Duration::from_secs(40),
                spoof,
            }],
            ..Scenario::default()
        }
    }

    /// Metres north and east of the true position at `t`.
    fn off(scenario: &Scenario, t: Duration, p: [f64; 2]) -> (f64, f64) {
        let [lat, lon] = scenario.position(t);
        offset_ne_m(lat, lon, p[0], p[1])
    }

    #[test]
    fn a_spoofed_receiver_stays_healthy_and_the_ekf_follows_it() {
        let drag = spoofed(Spoof::Drag {
            speed_mps: 1.0,
            bearing_deg: 90.0,
        });
        // Before the window: the truth.
        let (p, v, _, _, _) = reported(&drag, Duration::from_secs(5));
        let (n, e) = off(&drag, Duration::from_secs(5), p);
        assert!(n.abs() < 0.05 && e.abs() < 0.05, "{n} {e}");
        assert!((v[0] - 5.0).abs() < 0.011 && v[1].abs() < 0.011);
        // 20 s into a 1 m/s drag east: 20 m east, the velocity carries the drift, the receiver is healthy.
        let t = Duration::from_secs(30);
        let (p, v, r, fix, sats) = reported(&drag, t);
        let (n, e) = off(&drag, t, p);
        assert!(n.abs() < 0.05 && (e - 20.0).abs() < 0.05, "{n} {e}");
        assert!(
            (v[0] - 5.0).abs() < 0.011 && (v[1] - 1.0).abs() < 0.011,
            "{v:?}"
        );
        assert_eq!(p, r, "GPS_RAW_INT reports the spoofed position too");
        assert!(fix >= GpsFixType::GPS_FIX_TYPE_3D_FIX as u8 && sats >= 10);
        // After the window: the truth again.
        let (p, _, _, _, _) = reported(&drag, Duration::from_secs(45));
        let (n, e) = off(&drag, Duration::from_secs(45), p);
        assert!(n.abs() < 0.05 && e.abs() < 0.05, "{n} {e}");

        let jump = spoofed(Spoof::Jump {
            offset_m: 50.0,
            bearing_deg: 180.0,
        });
        let (p, _, _, _, _) = reported(&jump, Duration::from_secs(11));
        let (n, e) = off(&jump, Duration::from_secs(11), p);
        assert!((n + 50.0).abs() < 0.05 && e.abs() < 0.05, "{n} {e}");

        // A replay 4 s late at 5 m/s north: 20 m behind.
        let delay = spoofed(Spoof::Delay { delay_s: 4.0 });
        let (p, _, _, _, _) = reported(&delay, Duration::from_secs(20));
        let (n, e) = off(&delay, Duration::from_secs(20), p);
        assert!((n + 20.0).abs() < 0.05 && e.abs() < 0.05, "{n} {e}");
    }

    #[test]
    fn a_spoofer_is_received_where_the_real_signal_is_jammed() {
        let mut s = spoofed(Spoof::Jump {
            offset_m: 30.0,
            bearing_deg: 0.0,
        });
        s.gnss_lost_at = Some(Duration::ZERO);
        let (_, _, _, fix, _) = reported(&s, Duration::from_secs(5));
        assert!(fix < GpsFixType::GPS_FIX_TYPE_2D_FIX as u8);
        let (_, _, _, fix, _) = reported(&s, Duration::from_secs(15));
        assert!(fix >= GpsFixType::GPS_FIX_TYPE_3D_FIX as u8);
    }
}
