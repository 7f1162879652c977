//! Geodesy: WGS84 geodetic coordinates, ECEF, local NED/ENU frames, UTM and geodesic distance.
//!
//! Everything here is pure Rust and exact to well under a millimetre, so the onboard binary needs neither
//! GDAL nor PROJ to turn a match into a position:
//!
//! - [`Geodetic`] ↔ ECEF: closed form forward, Heikkinen's exact closed-form inverse (Zhu 1993).
//! - [`LocalFrame`]: north-east-down / east-north-up offsets about an origin, through ECEF (no flat-earth
//!   approximation); [`LocalFrame::ne_to_lat_lon`] is the cheap first-order alternative for small offsets.
//! - [`UtmZone`]: WGS84 UTM (EPSG:326zz / 327zz) forward and inverse, with the grid convergence and point
//!   scale factor the renderer needs to map ENU to grid coordinates ([`UtmZone::grid_point`]).
//! - [`distance_m`]: the geodesic distance on the ellipsoid (Vincenty's inverse), used to report
//!   localisation error.
//!
//! Why no crate for UTM: `proj4rs` 0.3 (pure Rust) implements PROJ's `tmerc`, whose default there is the
//! older Snyder series rather than the Poder/Engsager extended form, adds a string-parsing layer we do not need
//! for the one projection family we use, and brings its own error and axis conventions. The Krüger series to
//! order six in n, as in GeographicLib's `TransverseMercator` (Karney 2011, "Transverse Mercator with an
//! accuracy of a few nanometers", J. Geodesy 85:475), is ~150 lines, is accurate to about 5 nm within 3900 km
//! of the central meridian, also gives convergence and scale in closed form, and is checked here against
//! GeographicLib's published example and PROJ/GDAL (tests/geodesy.rs). Likewise the distance is Vincenty's
//! inverse (accurate to about 0.5 mm on WGS84, iteration tolerance 1e-12 rad) instead of adding
//! `geographiclib-rs`: it only fails for nearly antipodal points, which a localisation error never is, and
//! then says so with [`GeodesyError::NoConvergence`] instead of returning a wrong number.
//!
//! Validation happens at the edges: [`Geodetic::new`], [`LocalFrame::new`], [`UtmZone::new`]/[`from_epsg`]
//! and every UTM or distance call return a [`GeodesyError`] for NaN or out-of-range input. The ECEF and local
//! frame conversions themselves are plain arithmetic: they never panic, and NaN in gives NaN out.
//!
//! ```
//! use vimgeo_onboard::geodesy::{Geodetic, LocalFrame, UtmZone};
//! let origin = Geodetic::new(44.9, -110.5, 2400.0).unwrap();
//! let frame = LocalFrame::new(origin).unwrap();
//! let p = frame.from_ned(&nalgebra::Vector3::new(100.0, -50.0, 0.0));
//! let zone = UtmZone::parse_crs("EPSG:32612").unwrap();
//! let (e, n) = zone.forward(p.lat_deg, p.lon_deg).unwrap();
//! # let _ = (e, n);
//! ```
//!
//! [`from_epsg`]: UtmZone::from_epsg

use nalgebra::{Matrix3, Vector3};
use thiserror::Error;

/// WGS84 semi-major axis (m).
pub const WGS84_A: f64 = 6_378_137.0;
/// WGS84 flattening.
pub const WGS84_F: f64 = 1.0 / 298.257_223_563;

/// The UTM scale factor on the central meridian.
const UTM_K0: f64 = 0.9996;
/// UTM false easting (m).
const UTM_FALSE_EASTING: f64 = 500_000.0;
/// UTM false northing in the southern hemisphere (m).
const UTM_FALSE_NORTHING_SOUTH: f64 = 10_000_000.0;
/// How far from its central meridian a zone may be used (degrees of longitude). The series stays accurate
/// to a few nanometres within 3900 km of the central meridian; 20° keeps well inside that at every latitude
/// and still lets a mission area straddle a zone boundary.
const UTM_MAX_LON_OFFSET_DEG: f64 = 20.0;
/// The northing/easting range accepted by the inverse (offset from the false origin, m): beyond it the point is
/// not in any sensible use of the zone.
const UTM_MAX_EASTING_OFFSET_M: f64 = 2_500_000.0;
const UTM_MAX_NORTHING_M: f64 = 10_000_000.0;

/// Errors of the geodesy module. Every message names the value that is wrong.
#[derive(Debug, Error, Clone, PartialEq)]
pub enum GeodesyError {
    /// A latitude that is NaN, infinite or outside -90..=90 degrees.
    #[error("latitude {0}° is not a number in -90..=90")]
    Latitude(f64),
    /// A longitude that is NaN or infinite (finite longitudes are wrapped to -180..180).
    #[error("longitude {0}° is not a finite number")]
    Longitude(f64),
    /// An ellipsoidal height that is NaN or infinite.
    #[error("altitude {0} m is not a finite number")]
    Altitude(f64),
    /// An EPSG code that is not a WGS84 UTM zone.
    #[error("EPSG:{0} is not a WGS84 UTM zone (expected 32601-32660 for north or 32701-32760 for south)")]
    NotUtmEpsg(u32),
    /// A CRS string that is not of the form `EPSG:326zz` / `EPSG:327zz`.
    #[error("CRS {0:?} is not a WGS84 UTM zone written as \"EPSG:326zz\" (north) or \"EPSG:327zz\" (south)")]
    CrsSyntax(String),
    /// A UTM zone number outside 1..=60.
    #[error("UTM zone {0} is outside 1..=60")]
    Zone(u8),
    /// A latitude outside UTM's range, 80°S to 84°N (the polar regions use UPS).
    #[error("latitude {0}° is outside the UTM range 80°S..84°N")]
    UtmLatitude(f64),
    /// A longitude too far from the zone's central meridian for the projection to be used.
    #[error(
        "longitude {lon}° is {offset:.1}° from the central meridian of UTM zone {zone} (at most {max}° allowed)"
    )]
    FarFromZone {
        /// The longitude given.
        lon: f64,
        /// The zone used.
        zone: u8,
        /// Its distance from the central meridian (degrees).
        offset: f64,
        /// The limit (degrees).
        max: f64,
    },
    /// A grid coordinate that is not finite or outside the range of the zone.
    #[error("UTM coordinate (easting {easting} m, northing {northing} m) is not finite or outside zone {zone}")]
    GridCoordinate {
        /// Easting given (m).
        easting: f64,
        /// Northing given (m).
        northing: f64,
        /// The zone, as `12N`.
        zone: String,
    },
    /// Vincenty's iteration did not converge: the points are nearly antipodal.
    #[error(
        "the geodesic from ({0}°, {1}°) to ({2}°, {3}°) did not converge (nearly antipodal points)"
    )]
    NoConvergence(f64, f64, f64, f64),
}

/// Ellipsoid constants derived once from a and f.
struct Ellipsoid {
    a: f64,
    f: f64,
    /// Semi-minor axis.
    b: f64,
    /// First eccentricity squared.
    e2: f64,
    /// First eccentricity.
    e: f64,
}

fn ellipsoid() -> Ellipsoid {
    let f = WGS84_F;
    let e2 = f * (2.0 - f);
    Ellipsoid {
        a: WGS84_A,
        f,
        b: WGS84_A * (1.0 - f),
        e2,
        e: e2.sqrt(),
    }
}

fn check_lat(lat_deg: f64) -> Result<(), GeodesyError> {
    if lat_deg.is_finite() && (-90.0..=90.0).contains(&lat_deg) {
        Ok(())
    } else {
        Err(GeodesyError::Latitude(lat_deg))
    }
}

fn check_lon(lon_deg: f64) -> Result<(), GeodesyError> {
    if lon_deg.is_finite() {
        Ok(())
    } else {
        Err(GeodesyError::Longitude(lon_deg))
    }
}

/// Wraps a finite longitude into [-180, 180).
fn wrap_lon(lon_deg: f64) -> f64 {
    let w = (lon_deg + 180.0).rem_euclid(360.0) - 180.0;
    if w >= 180.0 {
        w - 360.0
    } else {
        w
    }
}

/// A WGS84 geodetic position.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Geodetic {
    /// Latitude, degrees north.
    pub lat_deg: f64,
    /// Longitude, degrees east.
    pub lon_deg: f64,
    /// Height above the WGS84 ellipsoid (m), not above the geoid/MSL.
    pub alt_m: f64,
}

impl Geodetic {
    /// A checked position: latitude in -90..=90, longitude finite (wrapped to -180..180), altitude finite.
    pub fn new(lat_deg: f64, lon_deg: f64, alt_m: f64) -> Result<Self, GeodesyError> {
        let g = Geodetic {
            lat_deg,
            lon_deg,
            alt_m,
        };
        g.validate()?;
        Ok(Geodetic {
            lon_deg: wrap_lon(lon_deg),
            ..g
        })
    }

    /// Checks the fields (see [`Geodetic::new`]); for positions built from the public fields.
    pub fn validate(&self) -> Result<(), GeodesyError> {
        check_lat(self.lat_deg)?;
        check_lon(self.lon_deg)?;
        if !self.alt_m.is_finite() {
            return Err(GeodesyError::Altitude(self.alt_m));
        }
        Ok(())
    }

    /// Earth-centred, earth-fixed coordinates (m).
    pub fn to_ecef(&self) -> Vector3<f64> {
        let el = ellipsoid();
        let (sp, cp) = self.lat_deg.to_radians().sin_cos();
        let (sl, cl) = self.lon_deg.to_radians().sin_cos();
        // Prime-vertical radius of curvature.
        let n = el.a / (1.0 - el.e2 * sp * sp).sqrt();
        Vector3::new(
            (n + self.alt_m) * cp * cl,
            (n + self.alt_m) * cp * sl,
            (n * (1.0 - el.e2) + self.alt_m) * sp,
        )
    }

    /// The position of an ECEF point, by Heikkinen's exact closed form (sub-nanometre near the surface; valid
    /// for any point more than ~45 km from the earth's centre).
    pub fn from_ecef(ecef: &Vector3<f64>) -> Geodetic {
        let el = ellipsoid();
        let (x, y, z) = (ecef.x, ecef.y, ecef.z);
        let a = el.a;
        let b = el.b;
        let e2 = el.e2;
        let ep2 = (a * a - b * b) / (b * b);
        let p = x.hypot(y);
        let f = 54.0 * b * b * z * z;
        let g = p * p + (1.0 - e2) * z * z - e2 * (a * a - b * b);
        let c = e2 * e2 * f * p * p / (g * g * g);
        let s = (1.0 + c + (c * c + 2.0 * c).sqrt()).cbrt();
        let k = s + 1.0 + 1.0 / s;
        let pp = f / (3.0 * k * k * g * g);
        let q = (1.0 + 2.0 * e2 * e2 * pp).sqrt();
        let r0 = -pp * e2 * p / (1.0 + q)
            + (0.5 * a * a * (1.0 + 1.0 / q)
                - pp * (1.0 - e2) * z * z / (q * (1.0 + q))
                - 0.5 * pp * p * p)
                .max(0.0)
                .sqrt();
        let t = p - e2 * r0;
        let u = t.hypot(z);
        let v = (t * t + (1.0 - e2) * z * z).sqrt();
        let z0 = b * b * z / (a * v);
        let h = u * (1.0 - b * b / (a * v));
        let lat = (z + ep2 * z0).atan2(p);
        let lon = y.atan2(x);
        Geodetic {
            lat_deg: lat.to_degrees(),
            lon_deg: lon.to_degrees(),
            alt_m: h,
        }
    }
}

/// Mean radius of the WGS84 ellipsoid, (2a + b) / 3, in metres: the sphere of the spherical approximations
/// ([`haversine_m`], the drop of a tangent plane below the horizon).
pub const MEAN_RADIUS_M: f64 = WGS84_A * (3.0 - WGS84_F) / 3.0;

/// Meridional and prime-vertical radii of curvature (m) of the WGS84 ellipsoid at `lat_deg`.
pub fn radii_of_curvature(lat_deg: f64) -> (f64, f64) {
    let el = ellipsoid();
    let sp = lat_deg.to_radians().sin();
    let w = (1.0 - el.e2 * sp * sp).sqrt();
    (el.a * (1.0 - el.e2) / (w * w * w), el.a / w)
}

/// Metres per degree of latitude and of longitude at `lat_deg` on the WGS84 ellipsoid (height 0); the
/// longitude's is 0 at the poles.
pub fn metres_per_degree(lat_deg: f64) -> (f64, f64) {
    let (m, n) = radii_of_curvature(lat_deg);
    let deg = 1f64.to_radians();
    (m * deg, n * lat_deg.to_radians().cos() * deg)
}

/// North and east metres of (`lat_deg`, `lon_deg`) from (`lat0_deg`, `lon0_deg`), to first order on the
/// tangent plane at the latter (its radii of curvature, height 0; the longitude difference is wrapped to
/// ±180°). The error grows as the square of the distance: about 0.1 m at 1 km, a few metres at 10 km. For
/// small offsets; [`LocalFrame`] is exact at any distance.
pub fn offset_ne_m(lat0_deg: f64, lon0_deg: f64, lat_deg: f64, lon_deg: f64) -> (f64, f64) {
    let (m, n) = radii_of_curvature(lat0_deg);
    let north = (lat_deg - lat0_deg).to_radians() * m;
    let east = wrap_lon(lon_deg - lon0_deg).to_radians() * n * lat0_deg.to_radians().cos();
    (north, east)
}

/// The inverse of [`offset_ne_m`]: the (lat, lon) in degrees `north_m`, `east_m` from (`lat0_deg`,
/// `lon0_deg`). The longitude is not wrapped; at a pole an east offset moves it by a huge but finite amount.
pub fn offset_lat_lon(lat0_deg: f64, lon0_deg: f64, north_m: f64, east_m: f64) -> (f64, f64) {
    let (m, n) = radii_of_curvature(lat0_deg);
    let cos_lat = lat0_deg.to_radians().cos().max(1e-12);
    (
        lat0_deg + (north_m / m).to_degrees(),
        lon0_deg + (east_m / (n * cos_lat)).to_degrees(),
    )
}

/// Great-circle distance in metres between two positions (degrees) on the sphere of [`MEAN_RADIUS_M`]: cheap,
/// within 0.5 % of the ellipsoidal [`distance_m`].
pub fn haversine_m(lat1_deg: f64, lon1_deg: f64, lat2_deg: f64, lon2_deg: f64) -> f64 {
    let (p1, p2) = (lat1_deg.to_radians(), lat2_deg.to_radians());
    let dp = p2 - p1;
    let dl = (lon2_deg - lon1_deg).to_radians();
    let a = (dp / 2.0).sin().powi(2) + p1.cos() * p2.cos() * (dl / 2.0).sin().powi(2);
    2.0 * MEAN_RADIUS_M * a.sqrt().min(1.0).asin()
}

/// A local tangent frame about an origin: north-east-down (NED) and east-north-up (ENU) offsets in metres.
///
/// Conversions go through ECEF and are exact at any distance; "down" is along the ellipsoid normal at the
/// origin, so a point 5 km away on the ellipsoid is about 2 m "down" of the origin's horizon plane.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LocalFrame {
    origin: Geodetic,
    origin_ecef: Vector3<f64>,
    /// Rows: the east, north, up unit vectors at the origin, in ECEF.
    ecef_to_enu: Matrix3<f64>,
}

impl LocalFrame {
    /// The frame about `origin` (checked as by [`Geodetic::validate`]).
    pub fn new(origin: Geodetic) -> Result<Self, GeodesyError> {
        origin.validate()?;
        let (sp, cp) = origin.lat_deg.to_radians().sin_cos();
        let (sl, cl) = origin.lon_deg.to_radians().sin_cos();
        let ecef_to_enu = Matrix3::new(
            -sl,
            cl,
            0.0, // east
            -sp * cl,
            -sp * sl,
            cp, // north
            cp * cl,
            cp * sl,
            sp, // up
        );
        Ok(LocalFrame {
            origin,
            origin_ecef: origin.to_ecef(),
            ecef_to_enu,
        })
    }

    /// The origin.
    pub fn origin(&self) -> Geodetic {
        self.origin
    }

    /// East-north-up offset (m) of `p` from the origin.
    pub fn to_enu(&self, p: &Geodetic) -> Vector3<f64> {
        self.ecef_to_enu * (p.to_ecef() - self.origin_ecef)
    }

    /// The position at an east-north-up offset (m) from the origin.
    pub fn from_enu(&self, enu: &Vector3<f64>) -> Geodetic {
        Geodetic::from_ecef(&(self.origin_ecef + self.ecef_to_enu.transpose() * enu))
    }

    /// North-east-down offset (m) of `p` from the origin.
    pub fn to_ned(&self, p: &Geodetic) -> Vector3<f64> {
        enu_ned(&self.to_enu(p))
    }

    /// The position at a north-east-down offset (m) from the origin.
    pub fn from_ned(&self, ned: &Vector3<f64>) -> Geodetic {
        self.from_enu(&enu_ned(ned))
    }

    /// Cheap first-order (lat, lon) in degrees of a north/east offset (m) at the origin's height, from the
    /// radii of curvature at the origin. The error grows as the square of the distance: about 0.1 m at 1 km,
    /// a few metres at 10 km. Use [`LocalFrame::from_ned`] where that matters.
    pub fn ne_to_lat_lon(&self, north_m: f64, east_m: f64) -> (f64, f64) {
        let (m, n) = self.radii();
        let lat = self.origin.lat_deg + (north_m / m).to_degrees();
        let lon = self.origin.lon_deg
            + (east_m / (n * self.origin.lat_deg.to_radians().cos())).to_degrees();
        (lat, lon)
    }

    /// The inverse of [`LocalFrame::ne_to_lat_lon`]: (north, east) in metres.
    pub fn lat_lon_to_ne(&self, lat_deg: f64, lon_deg: f64) -> (f64, f64) {
        let (m, n) = self.radii();
        let north = (lat_deg - self.origin.lat_deg).to_radians() * m;
        let dlon = wrap_lon(lon_deg - self.origin.lon_deg);
        let east = dlon.to_radians() * n * self.origin.lat_deg.to_radians().cos();
        (north, east)
    }

    /// Meridional and prime-vertical radii of curvature at the origin, plus its height.
    fn radii(&self) -> (f64, f64) {
        let (m, n) = radii_of_curvature(self.origin.lat_deg);
        (m + self.origin.alt_m, n + self.origin.alt_m)
    }
}

/// ENU ↔ NED (the same swap both ways).
fn enu_ned(v: &Vector3<f64>) -> Vector3<f64> {
    Vector3::new(v.y, v.x, -v.z)
}

/// A WGS84 UTM zone: EPSG:326zz (north) or EPSG:327zz (south).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct UtmZone {
    /// Zone number, 1..=60.
    pub zone: u8,
    /// Northern hemisphere (false northing 0) or southern (false northing 10 000 km).
    pub north: bool,
}

/// A UTM projection of one point, with the local distortion of the grid there.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GridPoint {
    /// Easting (m).
    pub easting: f64,
    /// Northing (m).
    pub northing: f64,
    /// Grid (meridian) convergence, degrees: the bearing of grid north clockwise from true north (positive
    /// east of the central meridian in the northern hemisphere). A true-north ENU vector maps to the grid by
    /// rotating it by this angle anticlockwise, and scaling it by `scale`.
    pub convergence_deg: f64,
    /// Point scale factor: grid distance / ellipsoid distance (0.9996 on the central meridian).
    pub scale: f64,
}

impl std::fmt::Display for UtmZone {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}{}", self.zone, if self.north { 'N' } else { 'S' })
    }
}

impl UtmZone {
    /// A zone checked to be 1..=60.
    pub fn new(zone: u8, north: bool) -> Result<Self, GeodesyError> {
        if (1..=60).contains(&zone) {
            Ok(UtmZone { zone, north })
        } else {
            Err(GeodesyError::Zone(zone))
        }
    }

    /// The zone of a WGS84 UTM EPSG code: 32601-32660 (north), 32701-32760 (south).
    pub fn from_epsg(code: u32) -> Result<Self, GeodesyError> {
        match code {
            32601..=32660 => Ok(UtmZone {
                zone: (code - 32600) as u8,
                north: true,
            }),
            32701..=32760 => Ok(UtmZone {
                zone: (code - 32700) as u8,
                north: false,
            }),
            _ => Err(GeodesyError::NotUtmEpsg(code)),
        }
    }

    /// The zone of a CRS written `EPSG:32612` (case and surrounding spaces ignored).
    pub fn parse_crs(crs: &str) -> Result<Self, GeodesyError> {
        let syntax = || GeodesyError::CrsSyntax(crs.to_string());
        let t = crs.trim();
        let (authority, code) = t.split_once(':').ok_or_else(syntax)?;
        if !authority.trim().eq_ignore_ascii_case("EPSG") {
            return Err(syntax());
        }
        let code: u32 = code.trim().parse().map_err(|_| syntax())?;
        Self::from_epsg(code)
    }

    /// The standard zone of a position, with the Norway (32V) and Svalbard (31X-37X) exceptions.
    pub fn for_position(lat_deg: f64, lon_deg: f64) -> Result<Self, GeodesyError> {
        check_utm_lat(lat_deg)?;
        check_lon(lon_deg)?;
        let lon = wrap_lon(lon_deg);
        let mut zone = (((lon + 180.0) / 6.0).floor() as i32 + 1).clamp(1, 60) as u8;
        if (56.0..64.0).contains(&lat_deg) && (3.0..12.0).contains(&lon) {
            zone = 32;
        } else if lat_deg >= 72.0 && (0.0..42.0).contains(&lon) {
            zone = match lon {
                l if l < 9.0 => 31,
                l if l < 21.0 => 33,
                l if l < 33.0 => 35,
                _ => 37,
            };
        }
        Ok(UtmZone {
            zone,
            north: lat_deg >= 0.0,
        })
    }

    /// The EPSG code (32601-32660 or 32701-32760).
    pub fn epsg(&self) -> u32 {
        (if self.north { 32600 } else { 32700 }) + u32::from(self.zone)
    }

    /// Longitude of the zone's central meridian (degrees).
    pub fn central_meridian_deg(&self) -> f64 {
        6.0 * f64::from(self.zone) - 183.0
    }

    /// (easting, northing) in metres of a WGS84 position.
    pub fn forward(&self, lat_deg: f64, lon_deg: f64) -> Result<(f64, f64), GeodesyError> {
        let g = self.grid_point(lat_deg, lon_deg)?;
        Ok((g.easting, g.northing))
    }

    /// Grid convergence (degrees) at a position; see [`GridPoint::convergence_deg`].
    pub fn convergence_deg(&self, lat_deg: f64, lon_deg: f64) -> Result<f64, GeodesyError> {
        Ok(self.grid_point(lat_deg, lon_deg)?.convergence_deg)
    }

    /// Point scale factor at a position; see [`GridPoint::scale`].
    pub fn scale_factor(&self, lat_deg: f64, lon_deg: f64) -> Result<f64, GeodesyError> {
        Ok(self.grid_point(lat_deg, lon_deg)?.scale)
    }

    /// Projects a WGS84 position and gives the grid convergence and scale there (Krüger series, order 6).
    pub fn grid_point(&self, lat_deg: f64, lon_deg: f64) -> Result<GridPoint, GeodesyError> {
        Self::new(self.zone, self.north)?;
        check_utm_lat(lat_deg)?;
        check_lon(lon_deg)?;
        let dlon = wrap_lon(lon_deg - self.central_meridian_deg());
        if dlon.abs() > UTM_MAX_LON_OFFSET_DEG {
            return Err(GeodesyError::FarFromZone {
                lon: lon_deg,
                zone: self.zone,
                offset: dlon.abs(),
                max: UTM_MAX_LON_OFFSET_DEG,
            });
        }
        let tm = TransverseMercator::wgs84();
        let (x, y, gamma, k) = tm.forward(lat_deg.to_radians(), dlon.to_radians());
        Ok(GridPoint {
            easting: UTM_FALSE_EASTING + UTM_K0 * x,
            northing: UTM_K0 * y
                + if self.north {
                    0.0
                } else {
                    UTM_FALSE_NORTHING_SOUTH
                },
            convergence_deg: gamma.to_degrees(),
            scale: UTM_K0 * k,
        })
    }

    /// (lat, lon) in degrees of a grid coordinate (m).
    pub fn inverse(&self, easting: f64, northing: f64) -> Result<(f64, f64), GeodesyError> {
        Self::new(self.zone, self.north)?;
        let x = easting - UTM_FALSE_EASTING;
        let y = northing
            - if self.north {
                0.0
            } else {
                UTM_FALSE_NORTHING_SOUTH
            };
        if !(x.is_finite()
            && y.is_finite()
            && x.abs() <= UTM_MAX_EASTING_OFFSET_M
            && y.abs() <= UTM_MAX_NORTHING_M)
        {
            return Err(GeodesyError::GridCoordinate {
                easting,
                northing,
                zone: self.to_string(),
            });
        }
        let tm = TransverseMercator::wgs84();
        let (lat, dlon) = tm.inverse(x / UTM_K0, y / UTM_K0);
        Ok((
            lat.to_degrees(),
            wrap_lon(self.central_meridian_deg() + dlon.to_degrees()),
        ))
    }
}

fn check_utm_lat(lat_deg: f64) -> Result<(), GeodesyError> {
    check_lat(lat_deg)?;
    if (-80.0..=84.0).contains(&lat_deg) {
        Ok(())
    } else {
        Err(GeodesyError::UtmLatitude(lat_deg))
    }
}

/// Transverse Mercator on the WGS84 ellipsoid with unit scale on the central meridian, after Karney (2011),
/// as in GeographicLib's `TransverseMercator` with the series to order six in the third flattening n.
struct TransverseMercator {
    e: f64,
    e2: f64,
    /// Rectifying radius A = a/(1+n) (1 + n²/4 + n⁴/64 + n⁶/256).
    a1: f64,
    /// Forward series coefficients α1..α6 (index 0 unused).
    alp: [f64; 7],
    /// Inverse series coefficients β1..β6 (index 0 unused).
    bet: [f64; 7],
}

impl TransverseMercator {
    fn wgs84() -> Self {
        let el = ellipsoid();
        let n = el.f / (2.0 - el.f);
        let n2 = n * n;
        let n3 = n2 * n;
        let n4 = n3 * n;
        let n5 = n4 * n;
        let n6 = n5 * n;
        let a1 = el.a / (1.0 + n) * (1.0 + n2 / 4.0 + n4 / 64.0 + n6 / 256.0);
        let alp = [
            0.0,
            n / 2.0 - 2.0 * n2 / 3.0 + 5.0 * n3 / 16.0 + 41.0 * n4 / 180.0 - 127.0 * n5 / 288.0
                + 7891.0 * n6 / 37800.0,
            13.0 * n2 / 48.0 - 3.0 * n3 / 5.0 + 557.0 * n4 / 1440.0 + 281.0 * n5 / 630.0
                - 1983433.0 * n6 / 1935360.0,
            61.0 * n3 / 240.0 - 103.0 * n4 / 140.0
                + 15061.0 * n5 / 26880.0
                + 167603.0 * n6 / 181440.0,
            49561.0 * n4 / 161280.0 - 179.0 * n5 / 168.0 + 6601661.0 * n6 / 7257600.0,
            34729.0 * n5 / 80640.0 - 3418889.0 * n6 / 1995840.0,
            212378941.0 * n6 / 319334400.0,
        ];
        let bet = [
            0.0,
            n / 2.0 - 2.0 * n2 / 3.0 + 37.0 * n3 / 96.0 - n4 / 360.0 - 81.0 * n5 / 512.0
                + 96199.0 * n6 / 604800.0,
            n2 / 48.0 + n3 / 15.0 - 437.0 * n4 / 1440.0 + 46.0 * n5 / 105.0
                - 1118711.0 * n6 / 3870720.0,
            17.0 * n3 / 480.0 - 37.0 * n4 / 840.0 - 209.0 * n5 / 4480.0 + 5569.0 * n6 / 90720.0,
            4397.0 * n4 / 161280.0 - 11.0 * n5 / 504.0 - 830251.0 * n6 / 7257600.0,
            4583.0 * n5 / 161280.0 - 108847.0 * n6 / 3991680.0,
            20648693.0 * n6 / 638668800.0,
        ];
        TransverseMercator {
            e: el.e,
            e2: el.e2,
            a1,
            alp,
            bet,
        }
    }

    /// tan of the conformal latitude from tan of the geodetic latitude.
    fn taupf(&self, tau: f64) -> f64 {
        let tau1 = 1f64.hypot(tau);
        let sig = (self.e * (self.e * tau / tau1).atanh()).sinh();
        1f64.hypot(sig) * tau - sig * tau1
    }

    /// tan of the geodetic latitude from tan of the conformal latitude (Newton, Karney 2011 eq. 19-21).
    fn tauf(&self, taup: f64) -> f64 {
        let e2m = 1.0 - self.e2;
        let mut tau = taup / e2m;
        let stol = f64::EPSILON.sqrt() * 0.1 * taup.abs().max(1.0);
        for _ in 0..8 {
            let taupa = self.taupf(tau);
            let dtau = (taup - taupa) * (1.0 + e2m * tau * tau)
                / (e2m * 1f64.hypot(tau) * 1f64.hypot(taupa));
            tau += dtau;
            if dtau.abs() < stol || dtau.is_nan() {
                break;
            }
        }
        tau
    }

    /// (x, y, convergence, scale) for latitude `phi` and longitude `lam` from the central meridian (radians),
    /// |lam| < 90°, unit scale on the central meridian.
    fn forward(&self, phi: f64, lam: f64) -> (f64, f64, f64, f64) {
        let (sl, cl) = lam.sin_cos();
        let (sp, cp) = phi.sin_cos();
        let tau = if cp == 0.0 {
            // At a pole: the conformal latitude is ±90° as well; a large tau keeps the formulas finite.
            sp.signum() * 1e300_f64.sqrt()
        } else {
            sp / cp
        };
        let taup = self.taupf(tau);
        let xip = taup.atan2(cl);
        let etap = (sl / taup.hypot(cl)).asinh();
        let gamma1 = (sl * taup).atan2(cl * 1f64.hypot(taup));
        let k1 = (1.0 - self.e2 * sp * sp).sqrt() * 1f64.hypot(tau) / taup.hypot(cl);
        let mut xi = xip;
        let mut eta = etap;
        // d(zeta)/d(zeta') = p - i q.
        let mut p = 1.0;
        let mut q = 0.0;
        for j in 1..=6 {
            let t = 2.0 * j as f64;
            let (s, c) = (t * xip).sin_cos();
            let (sh, ch) = ((t * etap).sinh(), (t * etap).cosh());
            xi += self.alp[j] * s * ch;
            eta += self.alp[j] * c * sh;
            p += t * self.alp[j] * c * ch;
            q += t * self.alp[j] * s * sh;
        }
        let gamma = gamma1 + q.atan2(p);
        let k = k1 * (self.a1 / WGS84_A) * p.hypot(q);
        (self.a1 * eta, self.a1 * xi, gamma, k)
    }

    /// (phi, lam) in radians of (x, y) with unit scale on the central meridian.
    fn inverse(&self, x: f64, y: f64) -> (f64, f64) {
        let xi = y / self.a1;
        let eta = x / self.a1;
        let mut xip = xi;
        let mut etap = eta;
        for j in 1..=6 {
            let t = 2.0 * j as f64;
            let (s, c) = (t * xi).sin_cos();
            xip -= self.bet[j] * s * (t * eta).cosh();
            etap -= self.bet[j] * c * (t * eta).sinh();
        }
        let s = etap.sinh();
        let c = xip.cos().max(0.0);
        let r = s.hypot(c);
        let (phi, lam) = if r != 0.0 {
            let taup = xip.sin() / r;
            (self.tauf(taup).atan(), s.atan2(c))
        } else {
            (std::f64::consts::FRAC_PI_2.copysign(xip), 0.0)
        };
        (phi, lam)
    }
}

/// Geodesic (shortest) distance in metres between two positions on the WGS84 ellipsoid; heights are ignored.
///
/// Vincenty's inverse formula iterated to 1e-12 rad (about 0.006 mm), accurate to about 0.5 mm. Nearly
/// antipodal points, where it does not converge, give [`GeodesyError::NoConvergence`].
pub fn distance_m(a: &Geodetic, b: &Geodetic) -> Result<f64, GeodesyError> {
    check_lat(a.lat_deg)?;
    check_lon(a.lon_deg)?;
    check_lat(b.lat_deg)?;
    check_lon(b.lon_deg)?;
    let el = ellipsoid();
    let f = el.f;
    let l = wrap_lon(b.lon_deg - a.lon_deg).to_radians();
    let u1 = ((1.0 - f) * a.lat_deg.to_radians().tan()).atan();
    let u2 = ((1.0 - f) * b.lat_deg.to_radians().tan()).atan();
    let (su1, cu1) = u1.sin_cos();
    let (su2, cu2) = u2.sin_cos();
    let mut lambda = l;
    for _ in 0..200 {
        let (sl, cl) = lambda.sin_cos();
        let sin_sigma = ((cu2 * sl).powi(2) + (cu1 * su2 - su1 * cu2 * cl).powi(2)).sqrt();
        if sin_sigma == 0.0 {
            return Ok(0.0); // coincident points
        }
        let cos_sigma = su1 * su2 + cu1 * cu2 * cl;
        let sigma = sin_sigma.atan2(cos_sigma);
        let sin_alpha = cu1 * cu2 * sl / sin_sigma;
        let cos2_alpha = 1.0 - sin_alpha * sin_alpha;
        // On the equator cos²α = 0 and the term vanishes.
        let cos_2sm = if cos2_alpha != 0.0 {
            cos_sigma - 2.0 * su1 * su2 / cos2_alpha
        } else {
            0.0
        };
        let c = f / 16.0 * cos2_alpha * (4.0 + f * (4.0 - 3.0 * cos2_alpha));
        let prev = lambda;
        lambda = l
            + (1.0 - c)
                * f
                * sin_alpha
                * (sigma
                    + c * sin_sigma * (cos_2sm + c * cos_sigma * (-1.0 + 2.0 * cos_2sm * cos_2sm)));
        if (lambda - prev).abs() < 1e-12 {
            let u2sq = cos2_alpha * (el.a * el.a - el.b * el.b) / (el.b * el.b);
            let aa =
                1.0 + u2sq / 16384.0 * (4096.0 + u2sq * (-768.0 + u2sq * (320.0 - 175.0 * u2sq)));
            let bb = u2sq / 1024.0 * (256.0 + u2sq * (-128.0 + u2sq * (74.0 - 47.0 * u2sq)));
            let dsigma = bb
                * sin_sigma
                * (cos_2sm
                    + bb / 4.0
                        * (cos_sigma * (-1.0 + 2.0 * cos_2sm * cos_2sm)
                            - bb / 6.0
                                * cos_2sm
                                * (-3.0 + 4.0 * sin_sigma * sin_sigma)
                                * (-3.0 + 4.0 * cos_2sm * cos_2sm)));
            return Ok(el.b * aa * (sigma - dsigma));
        }
        if !lambda.is_finite() {
            break;
        }
    }
    Err(GeodesyError::NoConvergence(
        a.lat_deg, a.lon_deg, b.lat_deg, b.lon_deg,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ecef_round_trip() {
        for &lat in &[-89.9, -60.0, -33.3, 0.0, 12.5, 44.95, 71.0, 89.999] {
            for &lon in &[-179.0, -110.5, 0.0, 44.4, 135.0] {
                for &h in &[-100.0, 0.0, 2400.0, 12_000.0] {
                    let g = Geodetic::new(lat, lon, h).unwrap();
                    let back = Geodetic::from_ecef(&g.to_ecef());
                    let err = LocalFrame::new(g).unwrap().to_ned(&back).norm();
                    assert!(err < 1e-6, "{g:?} -> {back:?}: {err} m");
                    assert!((back.alt_m - h).abs() < 1e-6);
                }
            }
        }
    }

    #[test]
    fn ecef_known_points() {
        let eq = Geodetic::new(0.0, 0.0, 0.0).unwrap().to_ecef();
        assert!((eq - Vector3::new(WGS84_A, 0.0, 0.0)).norm() < 1e-9);
        let pole = Geodetic::new(90.0, 0.0, 0.0).unwrap().to_ecef();
        assert!((pole.z - WGS84_A * (1.0 - WGS84_F)).abs() < 1e-6);
        assert!(pole.x.abs() < 1e-6);
    }

    #[test]
    fn ned_round_trip_5km() {
        for &lat in &[-70.0, -33.3, 0.0, 29.6, 44.9, 65.0] {
            let origin = Geodetic::new(lat, -110.5, 2400.0).unwrap();
            let frame = LocalFrame::new(origin).unwrap();
            for &n in &[-5000.0, -1234.0, 0.0, 2500.0, 5000.0] {
                for &e in &[-5000.0, 0.0, 777.0, 5000.0] {
                    for &d in &[-300.0, 0.0, 120.0] {
                        let ned = Vector3::new(n, e, d);
                        let p = frame.from_ned(&ned);
                        let back = frame.to_ned(&p);
                        assert!((back - ned).norm() < 1e-3, "{lat}: {ned:?} -> {back:?}");
                        let enu = frame.to_enu(&p);
                        assert!((enu - Vector3::new(e, n, -d)).norm() < 1e-3);
                        assert!((frame.from_enu(&enu).lat_deg - p.lat_deg).abs() < 1e-11);
                    }
                }
            }
        }
    }

    #[test]
    fn ned_axes_point_the_right_way() {
        let frame = LocalFrame::new(Geodetic::new(45.0, 10.0, 100.0).unwrap()).unwrap();
        let north = frame.from_ned(&Vector3::new(1000.0, 0.0, 0.0));
        assert!(north.lat_deg > 45.0 && (north.lon_deg - 10.0).abs() < 1e-9);
        let east = frame.from_ned(&Vector3::new(0.0, 1000.0, 0.0));
        assert!(east.lon_deg > 10.0);
        let down = frame.from_ned(&Vector3::new(0.0, 0.0, 50.0));
        assert!((down.alt_m - 50.0).abs() < 1e-6);
    }

    #[test]
    fn cheap_ne_agrees_with_exact_near_origin() {
        let frame = LocalFrame::new(Geodetic::new(44.9, -110.5, 2400.0).unwrap()).unwrap();
        let (lat, lon) = frame.ne_to_lat_lon(300.0, -400.0);
        let exact = frame.to_ned(&Geodetic::new(lat, lon, 2400.0).unwrap());
        assert!(
            (exact.x - 300.0).abs() < 0.05 && (exact.y + 400.0).abs() < 0.05,
            "{exact:?}"
        );
        let (n, e) = frame.lat_lon_to_ne(lat, lon);
        assert!((n - 300.0).abs() < 1e-6 && (e + 400.0).abs() < 1e-6);
    }

    #[test]
    fn bad_input_is_an_error_not_a_panic() {
        assert_eq!(
            Geodetic::new(90.5, 0.0, 0.0),
            Err(GeodesyError::Latitude(90.5))
        );
        assert!(Geodetic::new(f64::NAN, 0.0, 0.0).is_err());
        assert!(Geodetic::new(0.0, f64::INFINITY, 0.0).is_err());
        assert!(Geodetic::new(0.0, 0.0, f64::NAN).is_err());
        assert!(LocalFrame::new(Geodetic {
            lat_deg: f64::NAN,
            lon_deg: 0.0,
            alt_m: 0.0
        })
        .is_err());
        assert_eq!(UtmZone::new(0, true), Err(GeodesyError::Zone(0)));
        assert_eq!(UtmZone::new(61, false), Err(GeodesyError::Zone(61)));
        let z = UtmZone {
            zone: 0,
            north: true,
        };
        assert_eq!(z.forward(10.0, 10.0), Err(GeodesyError::Zone(0)));
        let z12 = UtmZone::from_epsg(32612).unwrap();
        assert_eq!(
            z12.forward(84.5, -111.0),
            Err(GeodesyError::UtmLatitude(84.5))
        );
        assert_eq!(
            z12.forward(-80.5, -111.0),
            Err(GeodesyError::UtmLatitude(-80.5))
        );
        assert!(z12.forward(f64::NAN, -111.0).is_err());
        assert!(z12.forward(45.0, f64::NAN).is_err());
        assert!(matches!(
            z12.forward(45.0, 10.0),
            Err(GeodesyError::FarFromZone { zone: 12, .. })
        ));
        assert!(z12.inverse(f64::NAN, 0.0).is_err());
        assert!(z12.inverse(500_000.0, 1e12).is_err());
        assert!(UtmZone::for_position(85.0, 0.0).is_err());
        let nan = Geodetic {
            lat_deg: f64::NAN,
            lon_deg: 0.0,
            alt_m: 0.0,
        };
        assert!(distance_m(&nan, &nan).is_err());
        // NaN through the infallible conversions stays NaN.
        assert!(Geodetic::from_ecef(&Vector3::new(f64::NAN, 0.0, 0.0))
            .lat_deg
            .is_nan());
    }

    #[test]
    fn epsg_and_crs_parsing() {
        assert_eq!(
            UtmZone::from_epsg(32601).unwrap(),
            UtmZone {
                zone: 1,
                north: true
            }
        );
        assert_eq!(
            UtmZone::from_epsg(32660).unwrap(),
            UtmZone {
                zone: 60,
                north: true
            }
        );
        assert_eq!(
            UtmZone::from_epsg(32721).unwrap(),
            UtmZone {
                zone: 21,
                north: false
            }
        );
        for bad in [32600, 32661, 32700, 32761, 4326, 3857] {
            let err = UtmZone::from_epsg(bad).unwrap_err();
            assert!(err.to_string().contains(&bad.to_string()), "{err}");
        }
        assert_eq!(UtmZone::parse_crs(" epsg:32612 ").unwrap().epsg(), 32612);
        assert_eq!(UtmZone::parse_crs("EPSG:32717").unwrap().epsg(), 32717);
        assert!(matches!(
            UtmZone::parse_crs("EPSG:4326"),
            Err(GeodesyError::NotUtmEpsg(4326))
        ));
        assert!(matches!(
            UtmZone::parse_crs("32612"),
            Err(GeodesyError::CrsSyntax(_))
        ));
        assert!(matches!(
            UtmZone::parse_crs("ESRI:32612"),
            Err(GeodesyError::CrsSyntax(_))
        ));
        assert_eq!(UtmZone::from_epsg(32612).unwrap().to_string(), "12N");
    }

    #[test]
    fn standard_zones() {
        let z = |lat, lon| UtmZone::for_position(lat, lon).unwrap();
        assert_eq!(
            z(44.9, -110.5),
            UtmZone {
                zone: 12,
                north: true
            }
        );
        assert_eq!(
            z(29.7, -82.0),
            UtmZone {
                zone: 17,
                north: true
            }
        );
        assert_eq!(
            z(-25.0, -57.0),
            UtmZone {
                zone: 21,
                north: false
            }
        );
        assert_eq!(z(0.0, -180.0).zone, 1);
        assert_eq!(z(0.0, 180.0).zone, 1); // 180 wraps to -180
        assert_eq!(z(0.0, 179.99).zone, 60);
        assert_eq!(z(0.0, 6.0).zone, 32); // zone edge belongs to the zone to the east
        assert_eq!(z(60.0, 5.0).zone, 32); // Norway
        assert_eq!(z(78.0, 15.0).zone, 33); // Svalbard
        assert_eq!(z(78.0, 8.0).zone, 31);
    }

    #[test]
    fn utm_geographiclib_example() {
        // GeographicLib's UTMUPS example / GeoConvert documentation: 33.3N 44.4E (Baghdad) is
        // 38n 444140.54 3684706.36.
        let zone = UtmZone::for_position(33.3, 44.4).unwrap();
        assert_eq!(zone.epsg(), 32638);
        let (e, n) = zone.forward(33.3, 44.4).unwrap();
        assert!(
            (e - 444_140.54).abs() < 0.005 && (n - 3_684_706.36).abs() < 0.005,
            "{e} {n}"
        );
    }

    #[test]
    fn utm_round_trip() {
        for zone in [1u8, 12, 17, 21, 38, 60] {
            for north in [true, false] {
                let z = UtmZone::new(zone, north).unwrap();
                let cm = z.central_meridian_deg();
                let lats: &[f64] = if north {
                    &[0.0, 10.0, 45.0, 70.0, 83.99]
                } else {
                    &[-79.99, -60.0, -25.0, -0.5]
                };
                for &lat in lats {
                    for dlon in [-9.0, -3.0, 0.0, 1.5, 3.0, 9.0] {
                        let (e, n) = z.forward(lat, cm + dlon).unwrap();
                        let (lat2, lon2) = z.inverse(e, n).unwrap();
                        let (e2, n2) = z.forward(lat2, lon2).unwrap();
                        assert!(
                            (e2 - e).abs() < 1e-3 && (n2 - n).abs() < 1e-3,
                            "{z} {lat} {dlon}"
                        );
                        assert!((lat2 - lat).abs() < 1e-9, "{z} {lat} {dlon}: {lat2}");
                        assert!(
                            wrap_lon(lon2 - cm - dlon).abs() < 1e-9,
                            "{z} {lat} {dlon}: {lon2}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn convergence_and_scale_match_finite_differences() {
        // Independent of the closed forms: differentiate the projection numerically.
        let z = UtmZone::from_epsg(32612).unwrap();
        for &(lat, lon) in &[
            (44.9, -110.5),
            (44.9, -113.9),
            (10.0, -108.2),
            (70.0, -115.0),
        ] {
            let g = z.grid_point(lat, lon).unwrap();
            let frame = LocalFrame::new(Geodetic::new(lat, lon, 0.0).unwrap()).unwrap();
            let north = frame.from_ned(&Vector3::new(1.0, 0.0, 0.0));
            let east = frame.from_ned(&Vector3::new(0.0, 1.0, 0.0));
            let (e0, n0) = (g.easting, g.northing);
            let (en, nn) = z.forward(north.lat_deg, north.lon_deg).unwrap();
            let (ee, ne) = z.forward(east.lat_deg, east.lon_deg).unwrap();
            // True north in the grid points at -convergence (anticlockwise from grid north when positive).
            let conv = -(en - e0).atan2(nn - n0).to_degrees();
            assert!(
                (conv - g.convergence_deg).abs() < 1e-5,
                "{lat} {lon}: {conv} vs {}",
                g.convergence_deg
            );
            let k_n = (en - e0).hypot(nn - n0);
            let k_e = (ee - e0).hypot(ne - n0);
            assert!(
                (k_n - g.scale).abs() < 1e-6 && (k_e - g.scale).abs() < 1e-6,
                "{k_n} {k_e} {}",
                g.scale
            );
        }
        let cm = z.grid_point(30.0, -111.0).unwrap();
        assert!(cm.convergence_deg.abs() < 1e-12 && (cm.scale - 0.9996).abs() < 1e-12);
        assert!((cm.easting - 500_000.0).abs() < 1e-9);
    }

    #[test]
    fn vincenty_distance() {
        let p = |lat, lon| Geodetic::new(lat, lon, 0.0).unwrap();
        // PROJ's `geod -I +ellps=WGS84` (Karney's algorithm): 33.3 44.4 -> 40 -100 is 11104334.011 m.
        let d = distance_m(&p(33.3, 44.4), &p(40.0, -100.0)).unwrap();
        assert!((d - 11_104_334.011).abs() < 0.002, "{d}");
        assert_eq!(distance_m(&p(10.0, 20.0), &p(10.0, 20.0)).unwrap(), 0.0);
        // A short one agrees with the exact chord of the local frame.
        let a = p(44.9, -110.5);
        let frame = LocalFrame::new(a).unwrap();
        let b = frame.from_ned(&Vector3::new(300.0, 400.0, 0.0));
        let b = Geodetic { alt_m: 0.0, ..b };
        let d = distance_m(&a, &b).unwrap();
        assert!((d - 500.0).abs() < 0.01, "{d}");
        // Along the equator: a * dlon.
        let d = distance_m(&p(0.0, 0.0), &p(0.0, 1.0)).unwrap();
        assert!((d - WGS84_A * 1f64.to_radians()).abs() < 1e-6, "{d}");
        assert!(matches!(
            distance_m(&p(0.0, 0.0), &p(0.5, 179.7)),
            Err(GeodesyError::NoConvergence(..))
        ));
    }

    #[test]
    fn small_offsets_agree_with_the_exact_frame() {
        // At 45° (WGS84): M·π/180 = 111 131.78 m a degree of latitude, N·cos φ·π/180 = 78 846.8 m of longitude.
        let (m_lat, m_lon) = metres_per_degree(45.0);
        assert!((m_lat - 111_131.777).abs() < 0.01, "{m_lat}");
        assert!((m_lon - 78_846.8).abs() < 0.1, "{m_lon}");
        let frame = LocalFrame::new(Geodetic::new(45.0, 7.0, 0.0).unwrap()).unwrap();
        for (north, east) in [(100.0, 0.0), (0.0, -250.0), (300.0, 400.0)] {
            let (lat, lon) = offset_lat_lon(45.0, 7.0, north, east);
            assert_eq!((lat, lon), frame.ne_to_lat_lon(north, east));
            let (n, e) = offset_ne_m(45.0, 7.0, lat, lon);
            assert!((n - north).abs() < 1e-9 && (e - east).abs() < 1e-9);
            let exact = frame.to_ned(&Geodetic::new(lat, lon, 0.0).unwrap());
            assert!((exact.x - north).abs() < 0.05 && (exact.y - east).abs() < 0.05);
        }
        // Across the antimeridian the east offset is the short way round.
        let (_, east) = offset_ne_m(0.0, 179.9995, 0.0, -179.9995);
        assert!((east - 111.32).abs() < 0.01, "{east}");
        assert!((MEAN_RADIUS_M - 6_371_008.771).abs() < 1e-3);
    }
}
