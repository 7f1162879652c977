//! The simulated flight's truth: waypoints → position, velocity and attitude at any time.
//!
//! [`Trajectory::new`] joins the waypoints (north/east metres in a local frame at `origin`) with straight legs
//! and rounds every corner with a circular arc of the plan's corner radius (shrunk where legs are too short),
//! so the path is smooth (continuous heading) and flown at constant ground speed. A closed loop goes back to
//! the first waypoint and around again; an open path ends hovering at the last waypoint.
//!
//! The attitude is a multicopter's: yaw along the course; roll and pitch tilt the thrust so that it supplies
//! the horizontal acceleration (the centripetal `v²/r` through a turn) and balances a quadratic drag at cruise
//! (`DRAG_PER_MPS2`: nose down a few degrees at 5 m/s). [`Trajectory::state`] also gives the truth latitude
//! and longitude through [`vimgeo_onboard::geodesy::LocalFrame`].

use std::f64::consts::PI;

use crate::sim::scenario::FlightPlan;
use vimgeo_onboard::geodesy::{GeodesyError, Geodetic, LocalFrame};

/// Standard gravity, m/s².
const G: f64 = 9.806_65;
/// Drag acceleration per (m/s)², 1/m: at 5 m/s a quadcopter of this kind pitches ~2.9° nose down.
const DRAG_PER_MPS2: f64 = 0.02;

/// The truth of the vehicle at one instant.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct VehicleState {
    /// Seconds since the start.
    pub t_s: f64,
    /// North, east of the origin, metres.
    pub ne_m: [f64; 2],
    /// Latitude, degrees.
    pub lat_deg: f64,
    /// Longitude, degrees.
    pub lon_deg: f64,
    /// Ground velocity north, east, m/s.
    pub vel_ne_mps: [f64; 2],
    /// Roll, radians (aerospace ZYX, right wing down positive).
    pub roll_rad: f64,
    /// Pitch, radians (nose up positive).
    pub pitch_rad: f64,
    /// Yaw, radians from north, clockwise.
    pub yaw_rad: f64,
    /// Height above the ground, metres.
    pub height_agl_m: f64,
}

#[derive(Debug, Clone, PartialEq)]
enum Piece {
    Line {
        from: [f64; 2],
        to: [f64; 2],
    },
    Arc {
        centre: [f64; 2],
        radius: f64,
        /// Bearing of the start point from the centre, radians (north = 0, east = π/2).
        start: f64,
        /// Signed sweep, radians: positive clockwise (a right turn).
        sweep: f64,
    },
}

impl Piece {
    fn length(&self) -> f64 {
        match self {
            Piece::Line { from, to } => (to[0] - from[0]).hypot(to[1] - from[1]),
            Piece::Arc { radius, sweep, .. } => radius * sweep.abs(),
        }
    }

    /// Position, unit tangent and signed curvature (positive: turning right) at `s` metres along.
    fn at(&self, s: f64) -> ([f64; 2], [f64; 2], f64) {
        match self {
            Piece::Line { from, to } => {
                let len = self.length();
                let d = if len > 0.0 {
                    [(to[0] - from[0]) / len, (to[1] - from[1]) / len]
                } else {
                    [1.0, 0.0]
                };
                ([from[0] + d[0] * s, from[1] + d[1] * s], d, 0.0)
            }
            Piece::Arc {
                centre,
                radius,
                start,
                sweep,
            } => {
                let dir = sweep.signum();
                let b = start + dir * s / radius;
                let p = [centre[0] + radius * b.cos(), centre[1] + radius * b.sin()];
                // d/db of (cos b, sin b) is (-sin b, cos b): the clockwise tangent in north/east.
                let t = [-b.sin() * dir, b.cos() * dir];
                (p, t, dir / radius)
            }
        }
    }
}

/// A flight path with timing and attitude. See the module documentation.
#[derive(Debug, Clone)]
pub struct Trajectory {
    frame: LocalFrame,
    pieces: Vec<Piece>,
    /// Cumulative length at the start of each piece.
    starts: Vec<f64>,
    length: f64,
    speed_mps: f64,
    height_agl_m: f64,
    loop_: bool,
}

impl Trajectory {
    /// The path of `plan` around `origin` (latitude, longitude, degrees; the waypoints' 0, 0).
    pub fn new(origin: (f64, f64), plan: &FlightPlan) -> Result<Trajectory, GeodesyError> {
        let frame = LocalFrame::new(Geodetic::new(origin.0, origin.1, 0.0)?)?;
        let mut wp: Vec<[f64; 2]> = Vec::with_capacity(plan.waypoints_ne_m.len());
        for w in &plan.waypoints_ne_m {
            // Repeated points make no leg.
            if wp
                .last()
                .is_none_or(|l: &[f64; 2]| (l[0] - w[0]).hypot(l[1] - w[1]) > 1e-6)
            {
                wp.push(*w);
            }
        }
        let loop_ = plan.loop_ && wp.len() > 2;
        if loop_ && (wp[0][0] - wp[wp.len() - 1][0]).hypot(wp[0][1] - wp[wp.len() - 1][1]) < 1e-6 {
            wp.pop();
        }
        let pieces = build_pieces(&wp, loop_, plan.corner_radius_m);
        let mut starts = Vec::with_capacity(pieces.len());
        let mut length = 0.0;
        for p in &pieces {
            starts.push(length);
            length += p.length();
        }
        Ok(Trajectory {
            frame,
            pieces,
            starts,
            length,
            speed_mps: plan.speed_mps,
            height_agl_m: plan.height_agl_m,
            loop_,
        })
    }

    /// The local frame the waypoints are in.
    pub fn frame(&self) -> &LocalFrame {
        &self.frame
    }

    /// Length of one lap (or of the open path), metres.
    pub fn length_m(&self) -> f64 {
        self.length
    }

    /// North, east of `(lat, lon)` in the trajectory's frame, metres.
    pub fn to_ne(&self, lat_deg: f64, lon_deg: f64) -> [f64; 2] {
        let (n, e) = self.frame.lat_lon_to_ne(lat_deg, lon_deg);
        [n, e]
    }

    /// The truth at `t_s` seconds after the start (before 0: the start).
    pub fn state(&self, t_s: f64) -> VehicleState {
        let t = t_s.max(0.0);
        let (ne, tangent, curvature, moving) = if self.pieces.is_empty() || self.length <= 0.0 {
            // A single waypoint: hover.
            let p = self.pieces.first().map_or([0.0, 0.0], |p| p.at(0.0).0);
            (p, [1.0, 0.0], 0.0, false)
        } else {
            let mut s = self.speed_mps * t;
            let moving = self.loop_ || s < self.length;
            if self.loop_ {
                s = s.rem_euclid(self.length);
            } else {
                s = s.min(self.length);
            }
            let i = match self.starts.binary_search_by(|x| x.total_cmp(&s)) {
                Ok(i) => i,
                Err(i) => i.saturating_sub(1),
            }
            .min(self.pieces.len() - 1);
            let (p, d, k) = self.pieces[i].at(s - self.starts[i]);
            (p, d, k, moving)
        };
        let v = if moving { self.speed_mps } else { 0.0 };
        let vel = [tangent[0] * v, tangent[1] * v];
        let yaw = tangent[1].atan2(tangent[0]);
        // Specific force the thrust must supply horizontally: the acceleration plus the drag it overcomes.
        // Body axes: forward along the tangent, right is the tangent turned clockwise.
        let a_forward = DRAG_PER_MPS2 * v * v;
        let a_right = curvature * v * v;
        let pitch = -(a_forward / G).atan();
        let roll = (a_right * pitch.cos() / G).atan();
        let (lat, lon) = self.frame.ne_to_lat_lon(ne[0], ne[1]);
        VehicleState {
            t_s: t,
            ne_m: ne,
            lat_deg: lat,
            lon_deg: lon,
            vel_ne_mps: vel,
            roll_rad: roll,
            pitch_rad: pitch,
            yaw_rad: wrap_pi(yaw),
            height_agl_m: self.height_agl_m,
        }
    }
}

fn wrap_pi(a: f64) -> f64 {
    (a + PI).rem_euclid(2.0 * PI) - PI
}

/// A rounded corner: the tangent length it cuts off each leg, its arc, where it starts and where it ends.
type Corner = (f64, Piece, [f64; 2], [f64; 2]);

/// Straight legs between the waypoints, with each corner replaced by a tangent arc.
fn build_pieces(wp: &[[f64; 2]], loop_: bool, radius: f64) -> Vec<Piece> {
    let n = wp.len();
    if n < 2 {
        return wp
            .first()
            .map(|p| vec![Piece::Line { from: *p, to: *p }])
            .unwrap_or_default();
    }
    let legs = if loop_ { n } else { n - 1 };
    let leg = |i: usize| (wp[i % n], wp[(i + 1) % n]);
    let len = |a: [f64; 2], b: [f64; 2]| (b[0] - a[0]).hypot(b[1] - a[1]);
    // Corner at waypoint i (between leg i-1 and leg i): the tangent length cut off each leg and the arc.
    let corner = |i: usize| -> Option<Corner> {
        let (a, b) = leg((i + legs - 1) % legs);
        let (_, c) = leg(i);
        let (l1, l2) = (len(a, b), len(b, c));
        let d1 = [(b[0] - a[0]) / l1, (b[1] - a[1]) / l1];
        let d2 = [(c[0] - b[0]) / l2, (c[1] - b[1]) / l2];
        let cross = d1[0] * d2[1] - d1[1] * d2[0];
        let dot = (d1[0] * d2[0] + d1[1] * d2[1]).clamp(-1.0, 1.0);
        let turn = cross.atan2(dot);
        if turn.abs() < 1e-6 || radius <= 0.0 || turn.abs() > PI - 1e-3 {
            return None;
        }
        // The arc may use at most half of each adjacent leg.
        let max_tan = 0.5 * l1.min(l2);
        let mut r = radius;
        let mut tan = r * (turn.abs() / 2.0).tan();
        if tan > max_tan {
            r *= max_tan / tan;
            tan = max_tan;
        }
        let p1 = [b[0] - d1[0] * tan, b[1] - d1[1] * tan];
        let p2 = [b[0] + d2[0] * tan, b[1] + d2[1] * tan];
        // Right turn (clockwise in north/east, turn > 0 since cross(n,e) > 0 means clockwise): the centre
        // is to the right of d1.
        let right = [-d1[1], d1[0]];
        let side = turn.signum();
        let centre = [p1[0] + right[0] * r * side, p1[1] + right[1] * r * side];
        let start = (p1[1] - centre[1]).atan2(p1[0] - centre[0]);
        Some((
            tan,
            Piece::Arc {
                centre,
                radius: r,
                start,
                sweep: turn,
            },
            p1,
            p2,
        ))
    };
    let corners: Vec<Option<Corner>> = (0..n)
        .map(|i| {
            let interior = loop_ || (i > 0 && i < n - 1);
            if interior {
                corner(i)
            } else {
                None
            }
        })
        .collect();
    let mut pieces = Vec::with_capacity(2 * legs);
    for i in 0..legs {
        let (a, b) = leg(i);
        let start = corners[i].as_ref().map_or(a, |c| c.3);
        let end = corners[(i + 1) % n].as_ref().map_or(b, |c| c.2);
        pieces.push(Piece::Line {
            from: start,
            to: end,
        });
        if let Some(c) = &corners[(i + 1) % n] {
            if loop_ || i + 1 < n - 1 {
                pieces.push(c.1.clone());
            }
        }
    }
    pieces
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(waypoints: Vec<[f64; 2]>, loop_: bool) -> FlightPlan {
        FlightPlan {
            waypoints_ne_m: waypoints,
            speed_mps: 5.0,
            height_agl_m: 30.0,
            loop_,
            corner_radius_m: 10.0,
        }
    }

    #[test]
    fn a_square_loop_is_smooth_and_flown_at_constant_speed() {
        let t = Trajectory::new(
            (44.9, -110.6),
            &plan(
                vec![[-50.0, -50.0], [-50.0, 50.0], [50.0, 50.0], [50.0, -50.0]],
                true,
            ),
        )
        .unwrap();
        // Four 100 m sides, each corner replaces 2 x 10 m of legs by a quarter circle of radius 10.
        let expected = 4.0 * (100.0 - 20.0) + 4.0 * (PI / 2.0 * 10.0);
        assert!((t.length_m() - expected).abs() < 1e-9, "{}", t.length_m());
        let dt = 0.05;
        let mut prev = t.state(0.0);
        let mut max_roll = 0.0f64;
        for k in 1..(t.length_m() / 5.0 / dt) as usize + 40 {
            let s = t.state(k as f64 * dt);
            let step = (s.ne_m[0] - prev.ne_m[0]).hypot(s.ne_m[1] - prev.ne_m[1]);
            // Constant speed (chords are a hair shorter than arcs).
            assert!((step - 5.0 * dt).abs() < 1e-3, "step {step} at t {}", s.t_s);
            // Continuous heading.
            assert!(
                wrap_pi(s.yaw_rad - prev.yaw_rad).abs() < 0.03,
                "yaw jump at t {}",
                s.t_s
            );
            max_roll = max_roll.max(s.roll_rad.abs());
            prev = s;
        }
        // Through a 10 m turn at 5 m/s: a = 2.5 m/s², roll ≈ atan(2.5 / 9.81) ≈ 14°.
        assert!(
            (max_roll.to_degrees() - 14.3).abs() < 0.5,
            "{}",
            max_roll.to_degrees()
        );
        // First leg flies east (from (-50,-50) to (-50,50)): yaw 90°, nose down, no roll; then a left turn
        // to fly north (the loop is counter-clockwise seen from above).
        let s = t.state(2.0);
        assert!(
            (s.yaw_rad.to_degrees() - 90.0).abs() < 1e-6 && s.roll_rad == 0.0 && s.pitch_rad < 0.0
        );
        let corner = t.state((80.0 - 10.0 + PI / 4.0 * 10.0 + 10.0) / 5.0);
        assert!(
            corner.roll_rad < -0.2,
            "a left turn rolls left: {}",
            corner.roll_rad
        );
        assert!(
            (corner.yaw_rad.to_degrees() - 45.0).abs() < 1.0,
            "{}",
            corner.yaw_rad.to_degrees()
        );
        // Truth latitude/longitude agree with the frame.
        let ne = t.to_ne(s.lat_deg, s.lon_deg);
        assert!((ne[0] - s.ne_m[0]).abs() < 1e-6 && (ne[1] - s.ne_m[1]).abs() < 1e-6);
        // Periodic.
        let lap = t.length_m() / 5.0;
        let (a, b) = (t.state(3.0), t.state(3.0 + lap));
        assert!((a.ne_m[0] - b.ne_m[0]).abs() < 1e-6 && (a.ne_m[1] - b.ne_m[1]).abs() < 1e-6);
    }

    #[test]
    fn an_open_path_ends_hovering() {
        let t = Trajectory::new(
            (44.9, -110.6),
            &plan(vec![[0.0, 0.0], [0.0, 20.0], [20.0, 20.0]], false),
        )
        .unwrap();
        let end = t.state(100.0);
        assert!((end.ne_m[0] - 20.0).abs() < 1e-9 && (end.ne_m[1] - 20.0).abs() < 1e-9);
        assert_eq!(end.vel_ne_mps, [0.0, 0.0]);
        assert_eq!(end.pitch_rad, 0.0);
        // The left turn at (0, 20) rolls left.
        let mid = t.state(t.length_m() / 2.0 / 5.0);
        assert!(mid.roll_rad < 0.0, "{}", mid.roll_rad);
        let one = Trajectory::new((44.9, -110.6), &plan(vec![[5.0, 5.0]], true)).unwrap();
        assert_eq!(one.state(3.0).ne_m, [5.0, 5.0]);
    }
}
