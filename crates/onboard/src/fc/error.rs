//! The flight-controller link's error type.

use std::io;

/// What went wrong on the flight-controller link. Every variant names the link it happened on, as given in the
/// configuration (`udpin:0.0.0.0:14550`, `serial:/dev/ttyTHS1:921600`, ...).
#[derive(Debug, thiserror::Error)]
pub enum FcError {
    /// The link address is not one we understand.
    #[error("invalid flight-controller link address {address:?}: {reason}")]
    InvalidAddress {
        /// The address as given.
        address: String,
        /// Why it was refused and what is expected.
        reason: String,
    },
    /// Opening the link (binding, connecting, opening the serial port) failed.
    #[error("cannot open flight-controller link {link}: {source}")]
    Open {
        /// The link address.
        link: String,
        /// The operating system's error.
        #[source]
        source: io::Error,
    },
    /// Reading or writing an open link failed; the link thread reconnects after it.
    #[error("I/O error on flight-controller link {link}: {source}")]
    Io {
        /// The link address.
        link: String,
        /// The operating system's error.
        #[source]
        source: io::Error,
    },
    /// The link's thread could not be started.
    #[error("cannot start the thread of flight-controller link {link}: {source}")]
    Spawn {
        /// The link address.
        link: String,
        /// The operating system's error.
        #[source]
        source: io::Error,
    },
    /// The link has shut down (its thread ended), so nothing more can be sent.
    #[error("flight-controller link {link} is closed")]
    Closed {
        /// The link address.
        link: String,
    },
    /// A fix with non-finite or out-of-range values was handed to a publisher.
    #[error("refusing to publish an invalid fix on {link}: {reason}")]
    InvalidFix {
        /// The link address.
        link: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The MAVLink 2 signing key file is unreadable or malformed (see [`super::signing`] for its format).
    #[error("invalid MAVLink signing key file {}: {reason}", path.display())]
    SigningKey {
        /// The key file.
        path: std::path::PathBuf,
        /// Why it was refused.
        reason: String,
    },
}
