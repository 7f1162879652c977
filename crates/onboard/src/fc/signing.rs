//! MAVLink 2 message signing (<https://mavlink.io/en/guide/message_signing.html>), implemented here with `sha2`
//! on the bytes `messages::encode` writes (the `mavlink` crate is built without its signing feature).
//!
//! A signed frame has the incompatibility flag 0x01 set (covered by the CRC) and 13 bytes after the CRC: the
//! link id (u8), a 48-bit little-endian timestamp in 10 µs units since 2015-01-01 00:00:00 UTC (strictly
//! increasing per link), and the first 6 bytes of SHA-256(secret key + frame from the start marker to the CRC +
//! link id + timestamp).
//!
//! # Key file
//! A text file of one line (surrounding whitespace ignored), in one of two forms:
//! - 64 hexadecimal digits: the 32-byte secret key itself;
//! - `passphrase:TEXT`: the key is SHA-256 of the UTF-8 bytes of TEXT, as MAVProxy's `signing setup TEXT`
//!   derives it, so the same passphrase sets up the autopilot (through MAVProxy) and vimgeo.
//!
//! Anything else (empty, another length, non-hex digits, an empty passphrase, unreadable) is refused with
//! [`FcError::SigningKey`] naming the file.

use std::fmt;
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use mavlink::dialects::ardupilotmega::MavMessage;
use mavlink::Message;
use sha2::{Digest, Sha256};

use super::error::FcError;

/// The MAVLink 2 start marker.
const STX_V2: u8 = 0xFD;
/// Header length including the start marker.
const HEADER_LEN: usize = 10;
/// Link id, timestamp and signature.
pub const SIGNATURE_BLOCK_LEN: usize = 13;
/// The "signed" incompatibility flag.
pub const IFLAG_SIGNED: u8 = 0x01;
/// 2015-01-01 00:00:00 UTC as UNIX seconds, the signing timestamp's epoch.
const SIGNING_EPOCH_UNIX_S: u64 = 1_420_070_400;

/// A 32-byte MAVLink 2 secret key. Its `Debug` does not print the key.
#[derive(Clone, PartialEq, Eq)]
pub struct SigningKey([u8; 32]);

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SigningKey(..)")
    }
}

impl SigningKey {
    /// The key itself.
    pub fn from_bytes(key: [u8; 32]) -> Self {
        Self(key)
    }

    /// SHA-256 of the passphrase, as MAVProxy's `signing setup PASSPHRASE`.
    pub fn from_passphrase(passphrase: &str) -> Self {
        Self(Sha256::digest(passphrase.as_bytes()).into())
    }

    /// The key bytes.
    pub fn bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// The key as 64 lowercase hex digits (the key file's hex form).
    pub fn to_hex(&self) -> String {
        crate::util::hex(&self.0)
    }

    /// Parses the key file's contents (see the module documentation); the error says why it was refused.
    pub fn parse(text: &str) -> Result<Self, String> {
        let text = text.trim();
        if text.is_empty() {
            return Err("the file is empty; expected 64 hex digits or passphrase:TEXT".into());
        }
        if let Some(passphrase) = text.strip_prefix("passphrase:") {
            if passphrase.is_empty() {
                return Err("the passphrase after \"passphrase:\" is empty".into());
            }
            return Ok(Self::from_passphrase(passphrase));
        }
        if text.len() != 64 {
            return Err(format!(
                "expected 64 hex digits (a 32-byte key) or passphrase:TEXT, found {} characters",
                text.chars().count()
            ));
        }
        if let Some(at) = text.find(|c: char| !c.is_ascii_hexdigit()) {
            return Err(format!("not a hex digit at position {at}"));
        }
        let mut key = [0u8; 32];
        for (i, byte) in key.iter_mut().enumerate() {
            *byte = text
                .get(2 * i..2 * i + 2)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| format!("not a hex digit pair at position {}", 2 * i))?;
        }
        Ok(Self(key))
    }

    /// Reads and parses a key file.
    pub fn load(path: &Path) -> Result<Self, FcError> {
        let error = |reason: String| FcError::SigningKey {
            path: path.to_path_buf(),
            reason,
        };
        let bytes = std::fs::read(path).map_err(|e| error(e.to_string()))?;
        let text =
            std::str::from_utf8(&bytes).map_err(|_| error("the file is not UTF-8 text".into()))?;
        Self::parse(text).map_err(error)
    }
}

/// Signs an unsigned MAVLink 2 frame in place: sets the signed flag, recomputes the CRC and appends the
/// signature block. Anything that is not a complete MAVLink 2 frame is left as it is.
pub fn sign_frame(key: &SigningKey, frame: &mut Vec<u8>, link_id: u8, timestamp: u64) {
    if frame.len() < HEADER_LEN + 2 || frame[0] != STX_V2 {
        return;
    }
    let payload_len = usize::from(frame[1]);
    let crc_at = HEADER_LEN + payload_len;
    if frame.len() < crc_at + 2 {
        return;
    }
    frame.truncate(crc_at + 2);
    frame[2] |= IFLAG_SIGNED;
    let msgid = u32::from_le_bytes([frame[7], frame[8], frame[9], 0]);
    let crc = mavlink::calculate_crc(&frame[1..crc_at], MavMessage::extra_crc(msgid));
    frame[crc_at..crc_at + 2].copy_from_slice(&crc.to_le_bytes());
    frame.push(link_id);
    frame.extend_from_slice(&timestamp.to_le_bytes()[..6]);
    let signature = signature(key, frame);
    frame.extend_from_slice(&signature);
}

/// The 6-byte signature of `signed_part` (start marker to timestamp).
fn signature(key: &SigningKey, signed_part: &[u8]) -> [u8; 6] {
    let mut hasher = Sha256::new();
    hasher.update(key.0);
    hasher.update(signed_part);
    let digest = hasher.finalize();
    let mut out = [0u8; 6];
    out.copy_from_slice(&digest[..6]);
    out
}

/// Whether `frame` is a MAVLink 2 frame with the signed flag set.
pub fn is_signed(frame: &[u8]) -> bool {
    frame.len() > 2 && frame[0] == STX_V2 && frame[2] & IFLAG_SIGNED != 0
}

/// Whether the complete signed MAVLink 2 `frame` carries a valid signature under `key` (the CRC is checked by
/// the frame reader, not here). Unsigned or malformed frames give `false`.
pub fn signature_is_valid(key: &SigningKey, frame: &[u8]) -> bool {
    if !is_signed(frame) || frame.len() < HEADER_LEN + 2 + SIGNATURE_BLOCK_LEN {
        return false;
    }
    let expected_len = HEADER_LEN + usize::from(frame[1]) + 2 + SIGNATURE_BLOCK_LEN;
    if frame.len() != expected_len {
        return false;
    }
    let (signed_part, sig) = frame.split_at(expected_len - 6);
    signature(key, signed_part) == sig
}

/// The link id and timestamp of a signed frame (`None` when `frame` is not a complete signed frame).
pub fn link_id_and_timestamp(frame: &[u8]) -> Option<(u8, u64)> {
    if !is_signed(frame) || frame.len() < HEADER_LEN + 2 + SIGNATURE_BLOCK_LEN {
        return None;
    }
    let block = &frame[frame.len() - SIGNATURE_BLOCK_LEN..];
    let mut timestamp = [0u8; 8];
    timestamp[..6].copy_from_slice(&block[1..7]);
    Some((block[0], u64::from_le_bytes(timestamp)))
}

/// The signing timestamp for UNIX time `unix_us`: 10 µs units since 2015-01-01 00:00:00 UTC.
pub fn timestamp_from_unix_us(unix_us: u64) -> u64 {
    unix_us.saturating_sub(SIGNING_EPOCH_UNIX_S * 1_000_000) / 10
}

/// Signs the frames of one link with strictly increasing timestamps.
#[derive(Debug)]
pub struct Signer {
    key: SigningKey,
    link_id: u8,
    last_timestamp: u64,
}

impl Signer {
    /// A signer for link `link_id`.
    pub fn new(key: SigningKey, link_id: u8) -> Self {
        Self {
            key,
            link_id,
            last_timestamp: 0,
        }
    }

    /// The key.
    pub fn key(&self) -> &SigningKey {
        &self.key
    }

    /// Signs `frame` with the current time, or one more than the last timestamp if the clock has not advanced.
    pub fn sign(&mut self, frame: &mut Vec<u8>) {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_micros() as u64);
        let timestamp = timestamp_from_unix_us(now).max(self.last_timestamp + 1);
        self.last_timestamp = timestamp;
        sign_frame(&self.key, frame, self.link_id, timestamp);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fc::messages;

    const HEX: &str = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";

    #[test]
    fn parses_hex_and_passphrase() {
        let key = SigningKey::parse(&format!("  {HEX}\n")).unwrap();
        assert_eq!(key.bytes()[31], 0x1f);
        assert_eq!(key.to_hex(), HEX);
        assert_eq!(
            SigningKey::parse(&HEX.to_uppercase()).unwrap().to_hex(),
            HEX
        );
        // SHA-256("abc").
        assert_eq!(
            SigningKey::parse("passphrase:abc\n").unwrap().to_hex(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn refuses_malformed_keys() {
        for bad in [
            "",
            " \n",
            &HEX[..62],
            &format!("{HEX}00"),
            &format!("{}zz", &HEX[..62]),
            "passphrase:",
            "éé000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e",
        ] {
            assert!(SigningKey::parse(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn load_names_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bad.key");
        std::fs::write(&path, "not a key").unwrap();
        let e = SigningKey::load(&path).unwrap_err();
        assert!(matches!(e, FcError::SigningKey { .. }));
        assert!(e.to_string().contains("bad.key"), "{e}");
        std::fs::write(&path, [0xFFu8; 64]).unwrap();
        assert!(SigningKey::load(&path).is_err());
        let missing = dir.path().join("missing.key");
        let e = SigningKey::load(&missing).unwrap_err();
        assert!(e.to_string().contains("missing.key"), "{e}");
        std::fs::write(&path, HEX).unwrap();
        assert_eq!(SigningKey::load(&path).unwrap().to_hex(), HEX);
    }

    #[test]
    fn signs_and_verifies() {
        let key = SigningKey::from_passphrase("vimgeo");
        let mut frame = messages::encode(
            &MavMessage::HEARTBEAT(messages::heartbeat(false)),
            1,
            197,
            0,
        );
        let unsigned_len = frame.len();
        let mut signer = Signer::new(key.clone(), 2);
        signer.sign(&mut frame);
        assert_eq!(frame.len(), unsigned_len + SIGNATURE_BLOCK_LEN);
        assert!(is_signed(&frame));
        assert_eq!(frame[unsigned_len], 2);
        assert_eq!(link_id_and_timestamp(&frame).map(|(l, _)| l), Some(2));
        assert!(signature_is_valid(&key, &frame));
        assert!(!signature_is_valid(
            &SigningKey::from_passphrase("other"),
            &frame
        ));
        let mut tampered = frame.clone();
        tampered[HEADER_LEN] ^= 1;
        assert!(!signature_is_valid(&key, &tampered));
        // Timestamps strictly increase even within one clock tick.
        let mut second = frame[..unsigned_len].to_vec();
        signer.sign(&mut second);
        let ts = |f: &[u8]| {
            let mut b = [0u8; 8];
            b[..6].copy_from_slice(&f[unsigned_len + 1..unsigned_len + 7]);
            u64::from_le_bytes(b)
        };
        assert!(ts(&second) > ts(&frame));
        assert_eq!(
            timestamp_from_unix_us(SIGNING_EPOCH_UNIX_S * 1_000_000 + 25),
            2
        );
    }
}
