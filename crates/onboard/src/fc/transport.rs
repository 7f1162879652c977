//! The byte transports under the link: UDP (listen or send), TCP client, serial port. One trait, one type per
//! transport, so the link and its tests do not care which carries the bytes.

use std::io::{self, Read};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs, UdpSocket};
use std::time::Duration;

use super::error::FcError;

/// A parsed link address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LinkAddress {
    /// `udpin:HOST:PORT`: listen on HOST:PORT, answer whoever sent last (the autopilot's telemetry port).
    UdpIn(String),
    /// `udpout:HOST:PORT`: send to HOST:PORT from an ephemeral port, read the replies.
    UdpOut(String),
    /// `tcp:HOST:PORT` (or `tcpout:`): connect to a TCP server (SITL, a telemetry radio bridge).
    Tcp(String),
    /// `serial:DEVICE:BAUD`: a UART such as `/dev/ttyTHS1` at 921600 baud.
    Serial {
        /// The device path.
        device: String,
        /// Baud rate.
        baud: u32,
    },
}

impl LinkAddress {
    /// Parses `udpin:`, `udpout:`, `tcp:`/`tcpout:` and `serial:` addresses.
    pub fn parse(address: &str) -> Result<Self, FcError> {
        let invalid = |reason: &str| FcError::InvalidAddress {
            address: address.to_owned(),
            reason: reason.to_owned(),
        };
        let (scheme, rest) = address.split_once(':').ok_or_else(|| {
            invalid(
                "expected udpin:HOST:PORT, udpout:HOST:PORT, tcp:HOST:PORT or serial:DEVICE:BAUD",
            )
        })?;
        let host_port = |rest: &str| -> Result<String, FcError> {
            match rest.rsplit_once(':') {
                Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok() => {
                    Ok(rest.to_owned())
                }
                _ => Err(invalid("expected HOST:PORT after the scheme")),
            }
        };
        match scheme {
            "udpin" => Ok(Self::UdpIn(host_port(rest)?)),
            "udpout" | "udp" => Ok(Self::UdpOut(host_port(rest)?)),
            "tcp" | "tcpout" => Ok(Self::Tcp(host_port(rest)?)),
            "serial" => {
                let (device, baud) = rest
                    .rsplit_once(':')
                    .ok_or_else(|| invalid("expected serial:DEVICE:BAUD"))?;
                let baud = baud
                    .parse::<u32>()
                    .ok()
                    .filter(|b| *b > 0)
                    .ok_or_else(|| invalid("the baud rate must be a positive integer"))?;
                if device.is_empty() {
                    return Err(invalid("the serial device is empty"));
                }
                Ok(Self::Serial {
                    device: device.to_owned(),
                    baud,
                })
            }
            _ => Err(invalid(
                "unknown scheme; expected udpin, udpout, tcp or serial",
            )),
        }
    }
}

impl std::fmt::Display for LinkAddress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::UdpIn(a) => write!(f, "udpin:{a}"),
            Self::UdpOut(a) => write!(f, "udpout:{a}"),
            Self::Tcp(a) => write!(f, "tcp:{a}"),
            Self::Serial { device, baud } => write!(f, "serial:{device}:{baud}"),
        }
    }
}

/// A bidirectional byte transport with a read timeout.
pub trait Transport: Send {
    /// Reads what has arrived (a datagram, or what the stream has) into `buf`. Waits at most the read timeout
    /// given at open, then fails with `WouldBlock` or `TimedOut`. `Ok(0)` means the peer closed the stream.
    fn recv(&mut self, buf: &mut [u8]) -> io::Result<usize>;
    /// Sends one frame. A datagram transport without a known peer drops it (`Ok(())`).
    fn send(&mut self, bytes: &[u8]) -> io::Result<()>;
    /// The local socket address, for UDP and TCP.
    fn local_addr(&self) -> Option<SocketAddr> {
        None
    }
    /// Whether `Ok(0)` from `recv` is just an empty datagram rather than a closed stream.
    fn is_datagram(&self) -> bool {
        false
    }
}

/// Opens the transport of `address`; reads time out after `read_timeout`.
pub fn open(address: &LinkAddress, read_timeout: Duration) -> Result<Box<dyn Transport>, FcError> {
    let link = address.to_string();
    let open_err = |source: io::Error| FcError::Open {
        link: link.clone(),
        source,
    };
    let resolve = |a: &str| -> Result<SocketAddr, FcError> {
        a.to_socket_addrs()
            .map_err(open_err)?
            .next()
            .ok_or_else(|| open_err(io::Error::new(io::ErrorKind::NotFound, "no address")))
    };
    match address {
        LinkAddress::UdpIn(a) => {
            let socket = UdpSocket::bind(resolve(a)?).map_err(open_err)?;
            socket
                .set_read_timeout(Some(read_timeout))
                .map_err(open_err)?;
            Ok(Box::new(Udp {
                socket,
                peer: None,
                fixed_peer: false,
            }))
        }
        LinkAddress::UdpOut(a) => {
            let peer = resolve(a)?;
            let any: SocketAddr = if peer.is_ipv4() {
                ([0, 0, 0, 0], 0).into()
            } else {
                (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
            };
            let socket = UdpSocket::bind(any).map_err(open_err)?;
            socket
                .set_read_timeout(Some(read_timeout))
                .map_err(open_err)?;
            Ok(Box::new(Udp {
                socket,
                peer: Some(peer),
                fixed_peer: true,
            }))
        }
        LinkAddress::Tcp(a) => {
            let stream = TcpStream::connect_timeout(&resolve(a)?, Duration::from_secs(2))
                .map_err(open_err)?;
            stream
                .set_read_timeout(Some(read_timeout))
                .map_err(open_err)?;
            stream.set_nodelay(true).map_err(open_err)?;
            Ok(Box::new(Tcp { stream }))
        }
        LinkAddress::Serial { device, baud } => {
            let port = serialport::new(device, *baud)
                .timeout(read_timeout)
                .open()
                .map_err(|e| open_err(io::Error::other(e)))?;
            Ok(Box::new(Serial { port }))
        }
    }
}

struct Udp {
    socket: UdpSocket,
    peer: Option<SocketAddr>,
    /// `udpout`: the peer is configured, never re-learned.
    fixed_peer: bool,
}

impl Transport for Udp {
    fn recv(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let (n, from) = self.socket.recv_from(buf)?;
        if !self.fixed_peer {
            // An autopilot that restarts may come back from another port: answer the latest sender.
            self.peer = Some(from);
        }
        Ok(n)
    }

    fn send(&mut self, bytes: &[u8]) -> io::Result<()> {
        match self.peer {
            Some(peer) => match self.socket.send_to(bytes, peer) {
                // Nobody listening yet on loopback (ICMP port unreachable): not a link failure for UDP.
                Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => Ok(()),
                other => other.map(|_| ()),
            },
            None => Ok(()),
        }
    }

    fn local_addr(&self) -> Option<SocketAddr> {
        self.socket.local_addr().ok()
    }

    fn is_datagram(&self) -> bool {
        true
    }
}

struct Tcp {
    stream: TcpStream,
}

impl Transport for Tcp {
    fn recv(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.stream.read(buf)
    }

    fn send(&mut self, bytes: &[u8]) -> io::Result<()> {
        io::Write::write_all(&mut self.stream, bytes)
    }

    fn local_addr(&self) -> Option<SocketAddr> {
        self.stream.local_addr().ok()
    }
}

struct Serial {
    port: Box<dyn serialport::SerialPort>,
}

impl Transport for Serial {
    fn recv(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self.port.read(buf) {
            // A serial port has no "closed" state: zero bytes is a timeout.
            Ok(0) => Err(io::ErrorKind::TimedOut.into()),
            other => other,
        }
    }

    fn send(&mut self, bytes: &[u8]) -> io::Result<()> {
        io::Write::write_all(&mut self.port, bytes)
    }
}

/// `Read` over a [`Transport`] for the MAVLink frame reader: keeps a whole datagram and hands it out in the
/// pieces the reader asks for (a datagram read into a short buffer would be cut).
pub(crate) struct TransportReader {
    pub(crate) transport: Box<dyn Transport>,
    pending: Vec<u8>,
    pos: usize,
}

impl TransportReader {
    pub(crate) fn new(transport: Box<dyn Transport>) -> Self {
        Self {
            transport,
            pending: Vec::new(),
            pos: 0,
        }
    }
}

impl Read for TransportReader {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if self.pos >= self.pending.len() {
            self.pending.resize(65_536, 0);
            let n = match self.transport.recv(&mut self.pending) {
                Ok(0) if self.transport.is_datagram() => {
                    self.pending.clear();
                    return Err(io::ErrorKind::WouldBlock.into());
                }
                Ok(n) => n,
                Err(e) => {
                    self.pending.clear();
                    return Err(e);
                }
            };
            self.pending.truncate(n);
            self.pos = 0;
            if n == 0 {
                return Ok(0);
            }
        }
        let n = out.len().min(self.pending.len() - self.pos);
        out[..n].copy_from_slice(&self.pending[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_addresses() {
        assert_eq!(
            LinkAddress::parse("udpin:127.0.0.1:14550").unwrap(),
            LinkAddress::UdpIn("127.0.0.1:14550".into())
        );
        assert_eq!(
            LinkAddress::parse("serial:/dev/ttyTHS1:921600").unwrap(),
            LinkAddress::Serial {
                device: "/dev/ttyTHS1".into(),
                baud: 921_600
            }
        );
        assert_eq!(
            LinkAddress::parse("tcp:localhost:5760")
                .unwrap()
                .to_string(),
            "tcp:localhost:5760"
        );
        for bad in [
            "",
            "udpin:",
            "udpin:host",
            "serial:/dev/x:0",
            "bogus:1:2",
            "udpin:h:99999",
        ] {
            assert!(LinkAddress::parse(bad).is_err(), "{bad}");
        }
    }
}
