//! The flight-controller link: our frames decoded by pymavlink, and the link against the fake autopilot over
//! real UDP sockets on free loopback ports. Every wait has a deadline.
//!
//! Needs the `ground` feature (the default): the fake autopilot or the scenarios are the ground crate's.

#![cfg(feature = "ground")]

#[path = "common/pymavlink.rs"]
mod pymavlink;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use serde_json::Value;
use vimgeo::fc::messages::{self, EkfOrigin, GpsInputConfig, NOMINAL_UERE_M};
use vimgeo::fc::signing::{self, SigningKey};
use vimgeo::fc::{
    FcError, FcLink, GnssMonitorConfig, GnssVerdict, LinkAddress, LinkConfig, MavMessage,
    PublishOutcome, PublishPolicy,
};
use vimgeo::fix::{Fix, FixQuality};
use vimgeo::sim::autopilot::{FakeAutopilot, FlightStack, Received, Scenario};

/// 2023-11-14T22:13:20.123456Z.
const EXPOSURE_US: u64 = 1_700_000_000_123_456;

fn fix() -> Fix {
    Fix {
        time_of_exposure_us: EXPOSURE_US,
        lat_deg: 47.397_742_1,
        lon_deg: 8.545_594_3,
        alt_m: None,
        vel_ne_mps: None,
        horiz_accuracy_m: 5.0,
        quality: FixQuality::new(0.8),
    }
}

fn f(v: &Value, key: &str) -> f64 {
    v[key]
        .as_f64()
        .unwrap_or_else(|| panic!("{key} missing or not a number in {v}"))
}

fn check_frame(v: &Value, kind: &str, msgid: u64) {
    assert!(v.get("_error").is_none(), "pymavlink rejected {kind}: {v}");
    assert_eq!(v["mavpackettype"], kind, "{v}");
    assert_eq!(v["_msgid"], msgid);
    assert_eq!(v["_crc_ok"], true, "{v}");
    assert_eq!(v["_frames"], 1);
    assert_eq!(v["_src_system"], 7);
    assert_eq!(v["_src_component"], 197);
}

#[test]
fn pymavlink_decodes_every_message_we_send() {
    let enc = |m: MavMessage| messages::encode(&m, 7, 197, 3);
    let config = GpsInputConfig {
        gps_instance: 1,
        ..GpsInputConfig::default()
    };
    let moving = Fix {
        vel_ne_mps: Some([3.0, -4.0]),
        alt_m: Some(612.5),
        ..fix()
    };
    let origin = EkfOrigin {
        lat_deg: 47.397,
        lon_deg: 8.545,
        alt_m: 488.0,
    };
    let frames = vec![
        enc(MavMessage::GPS_INPUT(messages::gps_input(&fix(), &config))),
        enc(MavMessage::GPS_INPUT(messages::gps_input(&moving, &config))),
        enc(MavMessage::GLOBAL_POSITION_SENSOR(
            messages::global_position_sensor(&fix(), 2, EXPOSURE_US + 80_000, 1),
        )),
        enc(MavMessage::ODOMETRY(messages::odometry(
            &moving, &origin, 4,
        ))),
        enc(MavMessage::HEARTBEAT(messages::heartbeat(true))),
        enc(MavMessage::STATUSTEXT(messages::statustext(
            mavlink::dialects::ardupilotmega::MavSeverity::MAV_SEVERITY_WARNING,
            "vimgeo: GNSS denied, visual fixes active",
        ))),
    ];
    let d = pymavlink::decode(&frames);

    // GPS_INPUT without velocity or altitude.
    let g = &d[0];
    check_frame(g, "GPS_INPUT", 232);
    assert_eq!(g["gps_id"], 1);
    assert_eq!(g["time_usec"], EXPOSURE_US);
    assert_eq!(g["time_week"], 2288);
    assert_eq!(g["time_week_ms"], 252_818_123);
    assert_eq!(g["lat"], 473_977_421);
    assert_eq!(g["lon"], 85_455_943);
    assert!((f(g, "hdop") - 5.0 / f64::from(NOMINAL_UERE_M)).abs() < 1e-5);
    assert!((f(g, "horiz_accuracy") - 5.0).abs() < 1e-6);
    let flags = g["ignore_flags"].as_u64().unwrap();
    assert_eq!(flags & 2, 0, "HDOP must never be ignored");
    assert_eq!(
        flags & (1 | 8 | 32 | 128),
        1 | 8 | 32 | 128,
        "alt, vel_horiz, speed acc, vert acc ignored: {flags}"
    );
    assert_eq!(
        g["fix_type"], 3,
        "accurate without altitude: still 3D (altitude flagged ignored)"
    );
    assert!(g["satellites_visible"].as_u64().unwrap() >= 6);

    // GPS_INPUT with velocity and altitude.
    let g = &d[1];
    check_frame(g, "GPS_INPUT", 232);
    let flags = g["ignore_flags"].as_u64().unwrap();
    assert_eq!(flags & (1 | 2 | 8 | 32 | 64 | 128), 0, "{flags}");
    assert_eq!(g["fix_type"], 3);
    assert!((f(g, "vn") - 3.0).abs() < 1e-6 && (f(g, "ve") + 4.0).abs() < 1e-6);
    assert!((f(g, "alt") - 612.5).abs() < 1e-4);
    assert!(f(g, "speed_accuracy") > 0.0 && f(g, "vert_accuracy") > 0.0);

    // GLOBAL_POSITION_SENSOR.
    let p = &d[2];
    check_frame(p, "GLOBAL_POSITION_SENSOR", 296);
    assert_eq!(p["id"], 2);
    assert_eq!(p["target_system"], 1);
    assert_eq!(p["lat"], 473_977_421);
    assert_eq!(p["processing_time"], 80_000);
    assert_eq!(p["source"], 2, "GLOBAL_POSITION_SRC_VISION");
    assert!((f(p, "eph") - 5.0).abs() < 1e-6);
    assert_eq!(p["alt"], "NaN");
    assert_eq!(p["epv"], "NaN");

    // ODOMETRY.
    let o = &d[3];
    check_frame(o, "ODOMETRY", 331);
    assert_eq!(o["frame_id"], 1, "MAV_FRAME_LOCAL_NED");
    assert_eq!(o["child_frame_id"], 1);
    assert!((f(o, "x") - 82.6).abs() < 0.5, "north offset {o}");
    assert!((f(o, "y") - 44.9).abs() < 0.5, "east offset {o}");
    assert!((f(o, "z") - (488.0 - 612.5)).abs() < 1e-3);
    assert_eq!(o["q"][0], "NaN");
    assert!((o["pose_covariance"][0].as_f64().unwrap() - 25.0).abs() < 1e-4);
    assert_eq!(o["pose_covariance"][15], "NaN", "roll variance unknown");
    assert_eq!(o["reset_counter"], 4);
    assert_eq!(o["estimator_type"], 2, "MAV_ESTIMATOR_TYPE_VISION");

    // HEARTBEAT.
    let h = &d[4];
    check_frame(h, "HEARTBEAT", 0);
    assert_eq!(h["type"], 18, "MAV_TYPE_ONBOARD_CONTROLLER");
    assert_eq!(h["autopilot"], 8, "MAV_AUTOPILOT_INVALID");

    // STATUSTEXT.
    let s = &d[5];
    check_frame(s, "STATUSTEXT", 253);
    assert_eq!(s["severity"], 4);
    assert_eq!(s["text"], "vimgeo: GNSS denied, visual fixes active");
}

fn wait_until(what: &str, timeout: Duration, mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !ok() {
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn fast_config(policy: PublishPolicy) -> LinkConfig {
    let mut c = LinkConfig::new(LinkAddress::parse("udpin:127.0.0.1:0").unwrap());
    c.policy = policy;
    c.gnss = GnssMonitorConfig {
        stale_after: Duration::from_millis(800),
        worsen_after: Duration::from_millis(300),
        recover_after: Duration::from_millis(600),
        ..GnssMonitorConfig::default()
    };
    c.autopilot_timeout = Duration::from_millis(1500);
    c
}

fn link_addr(link: &FcLink) -> SocketAddr {
    link.local_addr().expect("udp link has an address")
}

fn gps_inputs(received: &[Received]) -> Vec<&Received> {
    received
        .iter()
        .filter(|r| matches!(r.message, MavMessage::GPS_INPUT(_)))
        .collect()
}

/// Publishes a fix every 50 ms until `until` after the autopilot started; returns (time, outcome, verdict)
/// for the publications during which the verdict did not change.
fn fly(
    link: &FcLink,
    ap: &FakeAutopilot,
    until: Duration,
) -> Vec<(Duration, PublishOutcome, GnssVerdict)> {
    let mut log = Vec::new();
    while ap.elapsed() < until {
        let fix = Fix {
            time_of_exposure_us: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_micros() as u64,
            ..fix()
        };
        let before = link.snapshot().gnss.verdict;
        let outcome = link.publish(&fix).expect("valid fix");
        if link.snapshot().gnss.verdict == before {
            log.push((ap.elapsed(), outcome, before));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    log
}

#[test]
fn gnss_loss_denies_publishes_and_recovery_stops_it() {
    let link = FcLink::spawn(fast_config(PublishPolicy::WhenDenied)).unwrap();
    let scenario = Scenario {
        gnss_lost_at: Some(Duration::from_millis(1500)),
        gnss_restored_at: Some(Duration::from_millis(3500)),
        ..Scenario::default()
    };
    let ap = FakeAutopilot::spawn(scenario, link_addr(&link)).unwrap();
    let log = fly(&link, &ap, Duration::from_millis(5500));

    let denied: Vec<_> = log.iter().filter(|e| e.2 == GnssVerdict::Denied).collect();
    assert!(!denied.is_empty(), "never denied: {log:?}");
    let first_denied = denied[0].0;
    assert!(
        first_denied >= Duration::from_millis(1500 + 300),
        "denied before the hysteresis: {first_denied:?}"
    );
    assert!(
        first_denied < Duration::from_millis(2800),
        "denied too late: {first_denied:?}"
    );
    assert_eq!(
        log.last().unwrap().2,
        GnssVerdict::Healthy,
        "recovered: {log:?}"
    );
    for (t, outcome, verdict) in &log {
        match verdict {
            GnssVerdict::Denied => {
                assert_eq!(*outcome, PublishOutcome::Queued("GPS_INPUT"), "at {t:?}")
            }
            v => assert_eq!(*outcome, PublishOutcome::Withheld(*v), "at {t:?}"),
        }
    }

    std::thread::sleep(Duration::from_millis(200));
    let received = ap.received();
    let sent = gps_inputs(&received);
    assert!(
        sent.len() >= 5,
        "the autopilot got {} GPS_INPUT",
        sent.len()
    );
    assert!(sent.iter().all(|r| r.at > Duration::from_millis(1500)));
    assert!(
        sent.iter()
            .all(|r| r.at < Duration::from_millis(3500 + 600 + 400)),
        "GPS_INPUT after recovery"
    );
    for r in &sent {
        let MavMessage::GPS_INPUT(g) = &r.message else {
            unreachable!()
        };
        assert_eq!(g.gps_id, 1);
        assert!(g.hdop > 0.0);
        assert_eq!(
            (r.system_id, r.component_id),
            (1, 197),
            "system id learned from the autopilot"
        );
    }
    let heartbeats = received
        .iter()
        .filter(|r| matches!(r.message, MavMessage::HEARTBEAT(_)))
        .count();
    assert!(
        (4..=8).contains(&heartbeats),
        "{heartbeats} heartbeats in 5.5 s"
    );
    let texts: Vec<String> = received
        .iter()
        .filter_map(|r| match &r.message {
            MavMessage::STATUSTEXT(s) => Some(s.text.to_str().unwrap_or("").to_owned()),
            _ => None,
        })
        .collect();
    assert!(
        texts.iter().any(|t| t.starts_with("vimgeo: GNSS denied")),
        "{texts:?}"
    );

    let snap = link.snapshot();
    assert!(snap.autopilot_alive);
    assert!(snap.vehicle.attitude.is_some() && snap.vehicle.height_above_ground.is_some());
    assert!(snap.vehicle.ekf.is_some() && snap.vehicle.system_time.is_some());
    assert_eq!(
        snap.stats.stream_requests, 0,
        "every stream arrived: nothing to request"
    );
}

#[test]
fn policies_always_and_never() {
    let link = FcLink::spawn(fast_config(PublishPolicy::Always)).unwrap();
    let ap = FakeAutopilot::spawn(Scenario::default(), link_addr(&link)).unwrap();
    wait_until("autopilot heartbeat", Duration::from_secs(3), || {
        link.snapshot().autopilot_alive
    });
    let log = fly(&link, &ap, ap.elapsed() + Duration::from_millis(400));
    assert!(
        log.iter()
            .all(|e| e.1 == PublishOutcome::Queued("GPS_INPUT")),
        "{log:?}"
    );
    wait_until("GPS_INPUT at the autopilot", Duration::from_secs(2), || {
        !gps_inputs(&ap.received()).is_empty()
    });
    drop((link, ap));

    let link = FcLink::spawn(fast_config(PublishPolicy::Never)).unwrap();
    let scenario = Scenario {
        gnss_lost_at: Some(Duration::ZERO),
        ..Scenario::default()
    };
    let ap = FakeAutopilot::spawn(scenario, link_addr(&link)).unwrap();
    wait_until("denied", Duration::from_secs(3), || {
        link.snapshot().gnss.verdict == GnssVerdict::Denied
    });
    let log = fly(&link, &ap, ap.elapsed() + Duration::from_millis(300));
    assert!(log.iter().all(|e| e.1 == PublishOutcome::DryRun), "{log:?}");
    std::thread::sleep(Duration::from_millis(200));
    assert!(gps_inputs(&ap.received()).is_empty());
}

#[test]
fn px4_gets_global_position_sensor() {
    let link = FcLink::spawn(fast_config(PublishPolicy::Always)).unwrap();
    let scenario = Scenario {
        stack: FlightStack::Px4,
        ..Scenario::default()
    };
    let ap = FakeAutopilot::spawn(scenario, link_addr(&link)).unwrap();
    wait_until("autopilot heartbeat", Duration::from_secs(3), || {
        link.snapshot().autopilot_alive
    });
    assert_eq!(
        link.publish(&fix()).unwrap(),
        PublishOutcome::Queued("GLOBAL_POSITION_SENSOR")
    );
    wait_until(
        "GLOBAL_POSITION_SENSOR at the autopilot",
        Duration::from_secs(2),
        || {
            ap.received()
                .iter()
                .any(|r| matches!(r.message, MavMessage::GLOBAL_POSITION_SENSOR(_)))
        },
    );
}

#[test]
fn autopilot_restart_is_survived() {
    let link = FcLink::spawn(fast_config(PublishPolicy::WhenDenied)).unwrap();
    let ap = FakeAutopilot::spawn(Scenario::default(), link_addr(&link)).unwrap();
    wait_until("first autopilot", Duration::from_secs(3), || {
        link.snapshot().autopilot_alive
    });
    drop(ap);
    wait_until("autopilot lost", Duration::from_secs(4), || {
        !link.snapshot().autopilot_alive
    });
    // The restarted autopilot comes back from another port, GNSS already gone.
    let scenario = Scenario {
        gnss_lost_at: Some(Duration::ZERO),
        ..Scenario::default()
    };
    let ap = FakeAutopilot::spawn(scenario, link_addr(&link)).unwrap();
    wait_until("autopilot back", Duration::from_secs(3), || {
        link.snapshot().autopilot_alive
    });
    wait_until("denied after restart", Duration::from_secs(3), || {
        link.snapshot().gnss.verdict == GnssVerdict::Denied
    });
    assert_eq!(
        link.publish(&fix()).unwrap(),
        PublishOutcome::Queued("GPS_INPUT")
    );
    wait_until(
        "our heartbeat and fix at the new autopilot",
        Duration::from_secs(3),
        || {
            let r = ap.received();
            !gps_inputs(&r).is_empty()
                && r.iter()
                    .any(|m| matches!(m.message, MavMessage::HEARTBEAT(_)))
        },
    );
}

#[test]
fn garbage_on_the_link_neither_crashes_nor_stalls_the_reader() {
    let link = FcLink::spawn(fast_config(PublishPolicy::WhenDenied)).unwrap();
    let ap = FakeAutopilot::spawn(Scenario::default(), link_addr(&link)).unwrap();
    wait_until("autopilot heartbeat", Duration::from_secs(3), || {
        link.snapshot().autopilot_alive
    });
    let valid = messages::encode(&MavMessage::HEARTBEAT(messages::heartbeat(false)), 1, 1, 0);
    // Deterministic pseudo-random bytes (xorshift), salted with MAVLink start markers.
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut noise = || {
        let mut v = Vec::with_capacity(300);
        for i in 0..300 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            v.push(if i % 37 == 0 { 0xFD } else { x as u8 });
        }
        v
    };
    let frames_before = link.snapshot().stats.frames_in;
    for round in 0..50 {
        ap.send_raw(&noise()).unwrap();
        ap.send_raw(&valid[..valid.len() / 2]).unwrap(); // truncated
        let mut bad_crc = valid.clone();
        let n = bad_crc.len();
        bad_crc[n - 1] ^= 0xFF;
        ap.send_raw(&bad_crc).unwrap();
        // A huge length byte after a start marker.
        ap.send_raw(&[0xFD, 0xFF, 0, 0, round as u8, 1, 1, 0, 0, 0])
            .unwrap();
        // Garbage then a valid frame in one datagram: the valid one must still come through.
        let mut mixed = noise();
        mixed.extend_from_slice(&valid);
        ap.send_raw(&mixed).unwrap();
    }
    wait_until("telemetry still flowing", Duration::from_secs(3), || {
        link.snapshot().stats.frames_in > frames_before + 20
    });
    assert!(link.snapshot().autopilot_alive);
    let stopped = Instant::now();
    drop(link);
    assert!(
        stopped.elapsed() < Duration::from_secs(1),
        "shutdown took {:?}",
        stopped.elapsed()
    );
}

#[test]
fn tcp_link_reconnects_after_the_server_closes() {
    use std::io::Write;
    use std::net::TcpListener;
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let mut config = LinkConfig::new(LinkAddress::parse(&format!("tcp:{addr}")).unwrap());
    config.reconnect_period = Duration::from_millis(100);
    let hb = messages::encode(
        &MavMessage::HEARTBEAT(mavlink::dialects::ardupilotmega::HEARTBEAT_DATA {
            autopilot: mavlink::dialects::ardupilotmega::MavAutopilot::MAV_AUTOPILOT_ARDUPILOTMEGA,
            mavtype: mavlink::dialects::ardupilotmega::MavType::MAV_TYPE_QUADROTOR,
            ..mavlink::dialects::ardupilotmega::HEARTBEAT_DATA::DEFAULT
        }),
        1,
        1,
        0,
    );
    listener.set_nonblocking(true).unwrap();
    let accept = || {
        let deadline = Instant::now() + Duration::from_secs(3);
        loop {
            match listener.accept() {
                Ok((stream, _)) => break stream,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    assert!(Instant::now() < deadline, "the link did not connect");
                    std::thread::sleep(Duration::from_millis(10));
                }
                Err(e) => panic!("accept: {e}"),
            }
        }
    };
    let link = FcLink::spawn(config).unwrap();
    let mut first = accept();
    first.write_all(&hb).unwrap();
    wait_until("heartbeat over TCP", Duration::from_secs(3), || {
        link.snapshot().autopilot_alive
    });
    drop(first);
    let mut second = accept();
    second.write_all(&hb).unwrap();
    wait_until("reconnected", Duration::from_secs(3), || {
        link.snapshot().stats.reconnects >= 1 && link.snapshot().open
    });
}

#[test]
fn cli_fc_monitor_prints_state_and_verdict() {
    use std::process::{Command, Stdio};
    // A free port: bind, read it, release it for the CLI (a tiny race with other processes, fine on loopback).
    let port = std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let target: SocketAddr = ([127, 0, 0, 1], port).into();
    let child = Command::new(env!("CARGO_BIN_EXE_vimgeo"))
        .args(["fc", "monitor", "--link", &format!("udpin:{target}")])
        .args(["--interval", "0.5", "--duration", "2.5"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let _ap = FakeAutopilot::spawn(Scenario::default(), target).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut child = child;
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("`vimgeo fc monitor --duration 2.5` did not exit");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let last = stdout.lines().last().unwrap_or_default();
    assert!(last.contains("autopilot ArduPilot sys 1"), "{stdout}");
    assert!(last.contains("gps fix 3 sats 14"), "{stdout}");
    assert!(last.contains("GNSS "), "{stdout}");
}

#[test]
fn missing_streams_are_requested_with_set_message_interval() {
    let mut config = fast_config(PublishPolicy::WhenDenied);
    config.stream_timeout = Duration::from_millis(500);
    let link = FcLink::spawn(config).unwrap();
    let scenario = Scenario {
        silent_streams: vec![30, 132], // ATTITUDE, DISTANCE_SENSOR
        ..Scenario::default()
    };
    let ap = FakeAutopilot::spawn(scenario, link_addr(&link)).unwrap();
    wait_until("attitude after the request", Duration::from_secs(5), || {
        let v = link.snapshot().vehicle;
        v.attitude.is_some() && v.height_above_ground.is_some()
    });
    let requested: Vec<(f32, f32)> = ap
        .received()
        .iter()
        .filter_map(|r| match &r.message {
            MavMessage::COMMAND_LONG(c)
                if c.command
                    == mavlink::dialects::ardupilotmega::MavCmd::MAV_CMD_SET_MESSAGE_INTERVAL =>
            {
                assert_eq!((c.target_system, c.target_component), (1, 1));
                Some((c.param1, c.param2))
            }
            _ => None,
        })
        .collect();
    assert!(requested.contains(&(30.0, 100_000.0)), "{requested:?}");
    assert!(
        requested.iter().all(|(id, _)| *id == 30.0 || *id == 132.0),
        "only missing streams: {requested:?}"
    );
}

#[test]
fn serial_link_over_a_pseudo_terminal() {
    use serialport::SerialPort;
    use std::io::{Read, Write};
    // A pty pair stands in for the UART: we open the slave side by path like /dev/ttyTHS1.
    let (mut master, slave) = serialport::TTYPort::pair().expect("pseudo-terminal pair");
    let path = slave.name().expect("pty slave path");
    master.set_timeout(Duration::from_millis(50)).unwrap();
    let mut config = LinkConfig::new(LinkAddress::parse(&format!("serial:{path}:921600")).unwrap());
    config.heartbeat_period = Duration::from_millis(200);
    let link = FcLink::spawn(config).unwrap();
    let hb = messages::encode(
        &MavMessage::HEARTBEAT(mavlink::dialects::ardupilotmega::HEARTBEAT_DATA {
            autopilot: mavlink::dialects::ardupilotmega::MavAutopilot::MAV_AUTOPILOT_PX4,
            mavtype: mavlink::dialects::ardupilotmega::MavType::MAV_TYPE_QUADROTOR,
            ..mavlink::dialects::ardupilotmega::HEARTBEAT_DATA::DEFAULT
        }),
        3,
        1,
        0,
    );
    let deadline = Instant::now() + Duration::from_secs(3);
    while !link.snapshot().autopilot_alive {
        assert!(
            Instant::now() < deadline,
            "no autopilot heartbeat over the pty"
        );
        master.write_all(&hb).unwrap();
        std::thread::sleep(Duration::from_millis(50));
    }
    // Our HEARTBEAT comes back over the same line, from the learned system id (earlier ones carry the
    // default 1: they were sent before the autopilot's heartbeat arrived).
    let mut got = Vec::new();
    let mut buf = [0u8; 512];
    let deadline = Instant::now() + Duration::from_secs(3);
    let ours = loop {
        assert!(
            Instant::now() < deadline,
            "no heartbeat from vimgeo over the pty"
        );
        if let Ok(n) = master.read(&mut buf) {
            got.extend_from_slice(&buf[..n]);
        }
        let mut reader = mavlink::MavlinkReader::new(std::io::Cursor::new(got.clone()));
        let mut learned = None;
        while let Ok((h, m)) = reader.read_any_message::<MavMessage>() {
            if matches!(m, MavMessage::HEARTBEAT(_)) && h.system_id == 3 {
                learned = Some(h);
            }
        }
        if let Some(h) = learned {
            break h;
        }
    };
    assert_eq!((ours.system_id, ours.component_id), (3, 197));
    drop(slave);
}

/// An ArduPilot autopilot's HEARTBEAT.
fn autopilot_heartbeat() -> MavMessage {
    use mavlink::dialects::ardupilotmega::{
        MavAutopilot, MavModeFlag, MavState, MavType, HEARTBEAT_DATA,
    };
    MavMessage::HEARTBEAT(HEARTBEAT_DATA {
        custom_mode: 0,
        mavtype: MavType::MAV_TYPE_QUADROTOR,
        autopilot: MavAutopilot::MAV_AUTOPILOT_ARDUPILOTMEGA,
        base_mode: MavModeFlag::MAV_MODE_FLAG_CUSTOM_MODE_ENABLED,
        system_status: MavState::MAV_STATE_ACTIVE,
        mavlink_version: 3,
    })
}

#[test]
fn signed_frames_verify_in_pymavlink() {
    let key = SigningKey::from_passphrase("vimgeo signing test");
    let mut frames = Vec::new();
    for (i, m) in [
        MavMessage::HEARTBEAT(messages::heartbeat(true)),
        MavMessage::GPS_INPUT(messages::gps_input(&fix(), &GpsInputConfig::default())),
    ]
    .into_iter()
    .enumerate()
    {
        let mut frame = messages::encode(&m, 7, 197, i as u8);
        signing::sign_frame(&key, &mut frame, 1, 50_000_000_000 + i as u64);
        frames.push(frame);
    }
    for v in pymavlink::decode_signed(&frames, Some(&key.to_hex())) {
        assert!(
            v.get("_error").is_none(),
            "pymavlink rejected our signature: {v}"
        );
        assert_eq!(v["_signed"], true, "{v}");
        assert_eq!(v["_signature_ok"], true, "{v}");
        assert_eq!(v["_crc_ok"], true, "{v}");
        assert_eq!(v["_src_system"], 7);
    }
    // Under another key pymavlink refuses every one of them.
    let other = SigningKey::from_passphrase("another key").to_hex();
    for v in pymavlink::decode_signed(&frames, Some(&other)) {
        assert_eq!(v["_signature_ok"], false, "{v}");
        assert!(v["_error"].as_str().unwrap().contains("signature"), "{v}");
    }
    // Without signing, the signed frames still decode (the signature is ignored).
    for v in pymavlink::decode(&frames) {
        assert!(v.get("_error").is_none(), "{v}");
        assert_eq!(v["_crc_ok"], true, "{v}");
    }
}

#[test]
fn signed_link_signs_what_it_sends_and_drops_bad_signatures() {
    use std::net::UdpSocket;
    let key = SigningKey::from_passphrase("vimgeo link test");
    let wrong = SigningKey::from_passphrase("not the key");
    let dir = tempfile::tempdir().unwrap();
    let key_file = dir.path().join("signing.key");
    std::fs::write(&key_file, "passphrase:vimgeo link test\n").unwrap();
    let mut config = fast_config(PublishPolicy::WhenDenied);
    config.signing_key = Some(key_file);
    config.signing_link_id = 5;
    let link = FcLink::spawn(config).unwrap();
    let ap = UdpSocket::bind("127.0.0.1:0").unwrap();
    ap.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    ap.connect(link_addr(&link)).unwrap();
    let heartbeat = autopilot_heartbeat();
    // The autopilot's unsigned HEARTBEAT is accepted, and counted.
    ap.send(&messages::encode(&heartbeat, 1, 1, 0)).unwrap();
    wait_until(
        "unsigned heartbeat accepted",
        Duration::from_secs(3),
        || {
            let s = link.snapshot();
            s.autopilot_alive && s.stats.unsigned_in >= 1
        },
    );
    // Frames signed with the wrong key are dropped and counted; those with our key are accepted.
    let before = link.snapshot().stats;
    for i in 0..5u8 {
        let mut bad = messages::encode(&heartbeat, 1, 1, i);
        signing::sign_frame(&wrong, &mut bad, 0, 1_000 + u64::from(i));
        ap.send(&bad).unwrap();
        let mut good = messages::encode(&heartbeat, 1, 1, i);
        signing::sign_frame(&key, &mut good, 0, 2_000 + u64::from(i));
        ap.send(&good).unwrap();
    }
    wait_until("bad signatures counted", Duration::from_secs(3), || {
        let s = link.snapshot().stats;
        s.bad_signatures >= before.bad_signatures + 5 && s.frames_in >= before.frames_in + 5
    });
    let after = link.snapshot().stats;
    assert_eq!(after.bad_signatures, before.bad_signatures + 5);
    assert_eq!(after.frames_in, before.frames_in + 5);
    assert_eq!(after.unsigned_in, before.unsigned_in);
    // A replayed frame (a timestamp not above the last of its stream) is dropped too.
    let mut replay = messages::encode(&heartbeat, 1, 1, 9);
    signing::sign_frame(&key, &mut replay, 0, 2_004);
    ap.send(&replay).unwrap();
    wait_until("replay counted", Duration::from_secs(3), || {
        link.snapshot().stats.bad_signatures > after.bad_signatures
    });
    assert_eq!(link.snapshot().stats.frames_in, after.frames_in);
    // What the link sends is signed, with link id 5, and verifies here and in pymavlink.
    let mut sent = Vec::new();
    let mut buf = [0u8; 1024];
    let deadline = Instant::now() + Duration::from_secs(5);
    while sent.len() < 2 && Instant::now() < deadline {
        if let Ok(n) = ap.recv(&mut buf) {
            sent.push(buf[..n].to_vec());
        }
    }
    assert!(sent.len() >= 2, "the link sent {} frames", sent.len());
    for frame in &sent {
        assert!(signing::signature_is_valid(&key, frame), "{frame:02x?}");
        assert_eq!(frame[frame.len() - 13], 5, "link id");
    }
    for v in pymavlink::decode_signed(&sent, Some(&key.to_hex())) {
        assert!(
            v.get("_error").is_none(),
            "pymavlink rejected the link's frame: {v}"
        );
        assert_eq!(v["_signed"], true, "{v}");
        assert_eq!(v["_signature_ok"], true, "{v}");
        assert_eq!(v["_src_component"], 197);
    }
}

#[test]
fn malformed_signing_key_file_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    for (name, contents) in [
        ("short.key", "abcd"),
        ("empty.key", ""),
        ("nothex.key", &"g".repeat(64)),
    ] {
        let path = dir.path().join(name);
        std::fs::write(&path, contents).unwrap();
        let mut config = fast_config(PublishPolicy::WhenDenied);
        config.signing_key = Some(path.clone());
        let error = FcLink::spawn(config).err().expect("malformed key refused");
        assert!(
            matches!(&error, FcError::SigningKey { path: p, .. } if *p == path),
            "{error}"
        );
        assert!(error.to_string().contains(name), "{error}");
    }
    let mut config = fast_config(PublishPolicy::WhenDenied);
    config.signing_key = Some(dir.path().join("missing.key"));
    let error = FcLink::spawn(config).err().expect("missing key refused");
    assert!(error.to_string().contains("missing.key"), "{error}");
}
