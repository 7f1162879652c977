//! The planned flight area and whether a tile cache covers it.
//!
//! An area is any number of circles (`--area LAT,LON,RADIUS_M`, [`AreaCircle::parse`]) and waypoints (a
//! QGroundControl / Mission Planner `QGC WPL 110` mission file, [`read_waypoints`]). A point is covered when
//! it lies on the ground footprint of some tile: within half a tile side, north and east, of a tile centre
//! (tiles are square and north-up). A circle is covered when every point of a grid over it is (grid spacing:
//! half the smallest tile, coarser for very large circles, see [`CIRCLE_SAMPLES_MAX`]).

use std::path::{Path, PathBuf};

use crate::geodesy::{metres_per_degree, offset_lat_lon};
use crate::matching::TileCache;

/// The most grid points a circle is checked at; larger circles get a coarser grid.
pub const CIRCLE_SAMPLES_MAX: usize = 40_000;

/// A mission file or `--area` value that cannot be used. Messages name the file and line, or the value.
#[derive(Debug, thiserror::Error)]
pub enum AreaError {
    /// `--area` is not `LAT,LON,RADIUS_M` with a valid position and a positive radius.
    #[error("--area {value:?}: {reason} (expected LAT,LON,RADIUS_M in degrees and metres, e.g. 44.6,-110.5,800)")]
    BadCircle {
        /// The value as given.
        value: String,
        /// What is wrong.
        reason: String,
    },
    /// The mission file could not be read.
    #[error("{}: cannot read the mission file: {source}", file.display())]
    Read {
        /// The file.
        file: PathBuf,
        /// The operating system's reason.
        source: std::io::Error,
    },
    /// The mission file is not `QGC WPL 110` text, or a line of it is malformed.
    #[error("{}:{line}: {reason}", file.display())]
    Mission {
        /// The file.
        file: PathBuf,
        /// 1-based line number.
        line: usize,
        /// What is wrong.
        reason: String,
    },
}

/// A circle the flight stays in.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AreaCircle {
    /// Centre latitude, degrees.
    pub lat: f64,
    /// Centre longitude, degrees.
    pub lon: f64,
    /// Radius, metres.
    pub radius_m: f64,
}

impl AreaCircle {
    /// Parses `LAT,LON,RADIUS_M`.
    pub fn parse(value: &str) -> Result<Self, AreaError> {
        let bad = |reason: &str| AreaError::BadCircle {
            value: value.to_owned(),
            reason: reason.to_owned(),
        };
        let parts: Vec<&str> = value.split(',').map(str::trim).collect();
        let [lat, lon, r] = parts[..] else {
            return Err(bad("not three comma-separated numbers"));
        };
        let num = |s: &str, what: &str| {
            s.parse::<f64>()
                .ok()
                .filter(|v| v.is_finite())
                .ok_or_else(|| bad(&format!("{what} {s:?} is not a number")))
        };
        let (lat, lon, radius_m) = (
            num(lat, "latitude")?,
            num(lon, "longitude")?,
            num(r, "radius")?,
        );
        if !(-90.0..=90.0).contains(&lat) || !(-180.0..=180.0).contains(&lon) {
            return Err(bad(
                "latitude must be in [-90, 90] and longitude in [-180, 180]",
            ));
        }
        if radius_m <= 0.0 {
            return Err(bad("the radius must be > 0 metres"));
        }
        Ok(Self { lat, lon, radius_m })
    }
}

/// A mission item with a position.
#[derive(Debug, Clone, PartialEq)]
pub struct Waypoint {
    /// Its sequence number in the file (0 is Mission Planner's home).
    pub seq: u32,
    /// The MAV_CMD, e.g. 16 (NAV_WAYPOINT).
    pub command: u16,
    /// Latitude, degrees.
    pub lat: f64,
    /// Longitude, degrees.
    pub lon: f64,
}

/// Where the flight goes.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PlannedArea {
    /// Circles (`--area`).
    pub circles: Vec<AreaCircle>,
    /// Waypoints (`--waypoints`).
    pub waypoints: Vec<Waypoint>,
}

impl PlannedArea {
    /// Whether nothing was planned.
    pub fn is_empty(&self) -> bool {
        self.circles.is_empty() && self.waypoints.is_empty()
    }
}

/// NAV commands whose latitude/longitude is a place the vehicle flies to: WAYPOINT, LOITER_UNLIM,
/// LOITER_TURNS, LOITER_TIME, LAND, TAKEOFF, LOITER_TO_ALT, SPLINE_WAYPOINT, VTOL_TAKEOFF, VTOL_LAND,
/// PAYLOAD_PLACE.
const NAV_WITH_POSITION: [u16; 11] = [16, 17, 18, 19, 21, 22, 31, 82, 84, 85, 94];
/// MAV_FRAMEs whose x/y are latitude/longitude: GLOBAL, GLOBAL_RELATIVE_ALT, GLOBAL_INT,
/// GLOBAL_RELATIVE_ALT_INT, GLOBAL_TERRAIN_ALT, GLOBAL_TERRAIN_ALT_INT.
const GLOBAL_FRAMES: [u8; 6] = [0, 3, 5, 6, 10, 11];

/// Reads the NAV waypoints with a position from a `QGC WPL 110` mission file (tab- or space-separated
/// `INDEX CURRENT FRAME COMMAND P1 P2 P3 P4 LAT LON ALT AUTOCONTINUE` lines). Items in a local frame, other
/// commands, and items at 0,0 (a takeoff or land "here") are skipped.
pub fn read_waypoints(file: &Path) -> Result<Vec<Waypoint>, AreaError> {
    let text = std::fs::read_to_string(file).map_err(|source| AreaError::Read {
        file: file.to_path_buf(),
        source,
    })?;
    parse_waypoints(&text, file)
}

/// [`read_waypoints`] on text already read; `file` names it in errors.
pub fn parse_waypoints(text: &str, file: &Path) -> Result<Vec<Waypoint>, AreaError> {
    let err = |line: usize, reason: String| AreaError::Mission {
        file: file.to_path_buf(),
        line,
        reason,
    };
    let mut lines = text.lines().enumerate();
    match lines.next() {
        Some((_, first)) if first.trim().starts_with("QGC WPL 110") => {}
        Some((_, first)) => {
            return Err(err(
                1,
                format!(
                    "not a QGC WPL 110 mission file: the first line is {:?}",
                    first.trim()
                ),
            ))
        }
        None => return Err(err(1, "empty file: expected `QGC WPL 110`".into())),
    }
    let mut out = Vec::new();
    for (i, line) in lines {
        let line_no = i + 1;
        let fields: Vec<&str> = line.split_whitespace().collect();
        if fields.is_empty() {
            continue;
        }
        if fields.len() != 12 {
            return Err(err(
                line_no,
                format!("expected 12 fields (INDEX CURRENT FRAME COMMAND P1..P4 LAT LON ALT AUTOCONTINUE), found {}", fields.len()),
            ));
        }
        let int = |k: usize, what: &str| {
            fields[k]
                .parse::<u32>()
                .map_err(|_| err(line_no, format!("{what} {:?} is not an integer", fields[k])))
        };
        let float = |k: usize, what: &str| {
            fields[k]
                .parse::<f64>()
                .ok()
                .filter(|v| v.is_finite())
                .ok_or_else(|| err(line_no, format!("{what} {:?} is not a number", fields[k])))
        };
        let seq = int(0, "index")?;
        let frame = int(2, "frame")?;
        let command = int(3, "command")?;
        let (lat, lon) = (float(8, "latitude")?, float(9, "longitude")?);
        let Ok(command) = u16::try_from(command) else {
            return Err(err(line_no, format!("command {command} is not a MAV_CMD")));
        };
        let global = u8::try_from(frame).is_ok_and(|f| GLOBAL_FRAMES.contains(&f));
        if !NAV_WITH_POSITION.contains(&command) || !global || (lat == 0.0 && lon == 0.0) {
            continue;
        }
        if !(-90.0..=90.0).contains(&lat) || !(-180.0..=180.0).contains(&lon) {
            return Err(err(
                line_no,
                format!("position {lat}, {lon} is not a latitude/longitude"),
            ));
        }
        out.push(Waypoint {
            seq,
            command,
            lat,
            lon,
        });
    }
    Ok(out)
}

/// The tiles' footprints, sorted by latitude for range queries.
#[derive(Debug, Clone)]
pub struct Coverage {
    /// (lat, lon, half side in metres), by latitude.
    tiles: Vec<(f64, f64, f64)>,
    max_half_m: f64,
    min_half_m: f64,
}

impl Coverage {
    /// The footprints of every tile of `cache`.
    pub fn of_cache(cache: &TileCache) -> Self {
        Self::from_tiles(
            (0..cache.len())
                .filter_map(|i| cache.tile(i))
                .map(|t| (t.lat, t.lon, f64::from(t.ground_size_m) / 2.0)),
        )
    }

    /// Footprints from (lat, lon, half side in metres).
    pub fn from_tiles(tiles: impl IntoIterator<Item = (f64, f64, f64)>) -> Self {
        let mut tiles: Vec<_> = tiles
            .into_iter()
            .filter(|(lat, lon, h)| lat.is_finite() && lon.is_finite() && h.is_finite() && *h > 0.0)
            .collect();
        tiles.sort_by(|a, b| a.0.total_cmp(&b.0));
        let max_half_m = tiles.iter().map(|t| t.2).fold(0.0, f64::max);
        let min_half_m = tiles.iter().map(|t| t.2).fold(f64::INFINITY, f64::min);
        Self {
            tiles,
            max_half_m,
            min_half_m,
        }
    }

    /// The tile centres' bounding box, `[min lat, min lon, max lat, max lon]`; `None` without tiles.
    pub fn extent(&self) -> Option<[f64; 4]> {
        let first = self.tiles.first()?;
        let last = self.tiles.last()?;
        let (lon0, lon1) = self
            .tiles
            .iter()
            .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), t| {
                (a.min(t.1), b.max(t.1))
            });
        Some([first.0, lon0, last.0, lon1])
    }

    /// Whether `lat`, `lon` lies on some tile's footprint.
    pub fn covers(&self, lat: f64, lon: f64) -> bool {
        let (m_per_deg_lat, m_per_deg_lon) = metres_per_degree(lat);
        let dlat = self.max_half_m / m_per_deg_lat;
        let start = self.tiles.partition_point(|t| t.0 < lat - dlat);
        self.tiles[start..]
            .iter()
            .take_while(|t| t.0 <= lat + dlat)
            .any(|&(tlat, tlon, half)| {
                let north = (lat - tlat) * m_per_deg_lat;
                let mut dlon = lon - tlon;
                if dlon > 180.0 {
                    dlon -= 360.0;
                } else if dlon < -180.0 {
                    dlon += 360.0;
                }
                north.abs() <= half && (dlon * m_per_deg_lon).abs() <= half
            })
    }

    /// The grid points of `circle` that no tile covers, and how many points were checked.
    pub fn uncovered_in_circle(&self, circle: &AreaCircle) -> (Vec<(f64, f64)>, usize) {
        let r = circle.radius_m;
        let mut step = if self.min_half_m.is_finite() {
            self.min_half_m
        } else {
            r
        };
        // The grid has about π r² / step² points: keep it under the cap.
        let points = std::f64::consts::PI * r * r / (step * step);
        if points > CIRCLE_SAMPLES_MAX as f64 {
            step *= (points / CIRCLE_SAMPLES_MAX as f64).sqrt();
        }
        let n = (r / step).ceil() as i64;
        let mut uncovered = Vec::new();
        let mut checked = 0;
        let mut check = |north: f64, east: f64| {
            let (lat, lon) = offset_lat_lon(circle.lat, circle.lon, north, east);
            checked += 1;
            if !self.covers(lat, lon) {
                uncovered.push((lat, lon));
            }
        };
        for i in -n..=n {
            for j in -n..=n {
                let (north, east) = (i as f64 * step, j as f64 * step);
                if north.hypot(east) <= r {
                    check(north, east);
                }
            }
        }
        // The rim itself, so a circle smaller than the grid step is still checked at its edge.
        let rim = ((std::f64::consts::TAU * r / step).ceil() as usize).clamp(8, 4096);
        for k in 0..rim {
            let a = std::f64::consts::TAU * k as f64 / rim as f64;
            check(r * a.cos(), r * a.sin());
        }
        (uncovered, checked)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A 5 x 5 grid of 20 m tiles at a 10 m stride around 45, 7: covers ±30 m.
    fn grid() -> Coverage {
        Coverage::from_tiles((-2..=2).flat_map(|i| {
            (-2..=2).map(move |j| {
                let (lat, lon) = at(f64::from(i) * 10.0, f64::from(j) * 10.0);
                (lat, lon, 10.0)
            })
        }))
    }

    fn at(north: f64, east: f64) -> (f64, f64) {
        offset_lat_lon(45.0, 7.0, north, east)
    }

    #[test]
    fn points_are_covered_within_half_a_tile_of_a_centre() {
        let c = grid();
        for (n, e, want) in [
            (0.0, 0.0, true),
            (29.0, -29.0, true),
            (31.0, 0.0, false),
            (0.0, -40.0, false),
        ] {
            let (lat, lon) = at(n, e);
            assert_eq!(c.covers(lat, lon), want, "{n} m north, {e} m east");
        }
        let inside = AreaCircle {
            lat: 45.0,
            lon: 7.0,
            radius_m: 25.0,
        };
        let (uncovered, checked) = c.uncovered_in_circle(&inside);
        assert!(uncovered.is_empty() && checked > 8, "{uncovered:?}");
        let beyond = AreaCircle {
            lat: 45.0,
            lon: 7.0,
            radius_m: 45.0,
        };
        assert!(!c.uncovered_in_circle(&beyond).0.is_empty());
        let empty = Coverage::from_tiles([]);
        assert!(!empty.covers(45.0, 7.0));
        assert!(!empty.uncovered_in_circle(&inside).0.is_empty());
    }

    #[test]
    fn area_values_parse_or_say_what_is_wrong() {
        let c = AreaCircle::parse("44.6, -110.5, 800").unwrap();
        assert_eq!((c.lat, c.lon, c.radius_m), (44.6, -110.5, 800.0));
        for bad in ["44.6,-110.5", "a,b,c", "95,0,10", "44,7,0"] {
            let msg = AreaCircle::parse(bad).unwrap_err().to_string();
            assert!(msg.contains(bad), "{msg}");
        }
    }

    #[test]
    fn qgc_missions_keep_nav_items_with_a_position() {
        let text = "QGC WPL 110\n\
            0\t1\t0\t16\t0\t0\t0\t0\t45.000000\t7.000000\t500\t1\n\
            1\t0\t3\t22\t0\t0\t0\t0\t0\t0\t30\t1\n\
            2\t0\t3\t16\t0\t0\t0\t0\t45.001\t7.002\t30\t1\n\
            3\t0\t3\t178\t0\t5\t0\t0\t0\t0\t0\t1\n\
            4\t0\t1\t16\t0\t0\t0\t0\t10\t20\t30\t1\n\
            5\t0\t3\t20\t0\t0\t0\t0\t0\t0\t0\t1\n";
        let w = parse_waypoints(text, Path::new("m.waypoints")).unwrap();
        assert_eq!(w.iter().map(|w| w.seq).collect::<Vec<_>>(), [0, 2]);
        assert_eq!((w[1].lat, w[1].lon), (45.001, 7.002));
        let e = parse_waypoints("hello\n", Path::new("m.waypoints"))
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("m.waypoints:1:") && e.contains("QGC WPL 110"),
            "{e}"
        );
        let e = parse_waypoints("QGC WPL 110\n0 1 0 16 0 0 0 0 45 x 1 1\n", Path::new("m"))
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("m:2:") && e.contains("longitude"), "{e}");
    }
}
