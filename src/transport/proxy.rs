//! The PROXY protocol (HAProxy's, versions 1 and 2), on listeners that sit
//! behind a load balancer: the balancer sends a header before the client's
//! bytes naming the client's address, which Petrel then uses as the peer.
//! The header is read exactly, never a byte past it, so TLS or MQTT that
//! follows is untouched.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use tokio::io::{AsyncRead, AsyncReadExt};

/// Version 2's signature.
const SIGNATURE_V2: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";
/// Version 1's longest header, CRLF included.
const MAX_V1: usize = 107;

/// Reads a PROXY header from `stream`: the client's address, or `None`
/// when the header says the connection is the balancer's own (LOCAL,
/// UNKNOWN). An error for anything that is not a valid header.
pub async fn read_header<S: AsyncRead + Unpin>(stream: &mut S) -> io::Result<Option<SocketAddr>> {
    let mut start = [0u8; 12];
    stream.read_exact(&mut start[..5]).await?;
    if &start[..5] == b"PROXY" {
        return read_v1(stream).await;
    }
    stream.read_exact(&mut start[5..]).await?;
    if start != SIGNATURE_V2 {
        return Err(invalid("no PROXY protocol header"));
    }
    read_v2(stream).await
}

fn invalid(message: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, message.to_owned())
}

async fn read_v1<S: AsyncRead + Unpin>(stream: &mut S) -> io::Result<Option<SocketAddr>> {
    // "PROXY" was read; the rest ends with CRLF.
    let mut line = Vec::with_capacity(MAX_V1);
    loop {
        let byte = stream.read_u8().await?;
        line.push(byte);
        if line.ends_with(b"\r\n") {
            break;
        }
        if line.len() > MAX_V1 - 5 {
            return Err(invalid("PROXY v1 header too long"));
        }
    }
    let text = std::str::from_utf8(&line[..line.len() - 2])
        .map_err(|_| invalid("PROXY v1 header is not text"))?;
    parse_v1(text)
}

/// Parses what follows "PROXY" in a version 1 header, CRLF left out.
fn parse_v1(text: &str) -> io::Result<Option<SocketAddr>> {
    let fields: Vec<&str> = text.split(' ').collect();
    match fields.as_slice() {
        ["", "UNKNOWN", ..] => Ok(None),
        ["", "TCP4" | "TCP6", source, _destination, source_port, _destination_port] => {
            let ip: IpAddr = source
                .parse()
                .map_err(|_| invalid("PROXY v1: bad source address"))?;
            let port: u16 = source_port
                .parse()
                .map_err(|_| invalid("PROXY v1: bad source port"))?;
            Ok(Some(SocketAddr::new(ip, port)))
        }
        _ => Err(invalid("PROXY v1: malformed header")),
    }
}

async fn read_v2<S: AsyncRead + Unpin>(stream: &mut S) -> io::Result<Option<SocketAddr>> {
    let mut head = [0u8; 4];
    stream.read_exact(&mut head).await?;
    let [version_command, family, high, low] = head;
    if version_command >> 4 != 2 {
        return Err(invalid("PROXY v2: unknown version"));
    }
    let length = usize::from(u16::from_be_bytes([high, low]));
    let mut body = vec![0u8; length];
    stream.read_exact(&mut body).await?;
    match version_command & 0x0F {
        // LOCAL: the balancer's own connection (a health check).
        0 => Ok(None),
        1 => parse_v2_addresses(family, &body),
        _ => Err(invalid("PROXY v2: unknown command")),
    }
}

/// The source address of a version 2 PROXY command's address block.
fn parse_v2_addresses(family: u8, body: &[u8]) -> io::Result<Option<SocketAddr>> {
    let short = || invalid("PROXY v2: address block too short");
    match family >> 4 {
        // AF_INET: source, destination (4 bytes each), then the ports.
        1 => {
            let block = body.get(..12).ok_or_else(short)?;
            let ip = Ipv4Addr::new(block[0], block[1], block[2], block[3]);
            let port = u16::from_be_bytes([block[8], block[9]]);
            Ok(Some(SocketAddr::new(IpAddr::V4(ip), port)))
        }
        // AF_INET6: 16 bytes each, then the ports.
        2 => {
            let block = body.get(..36).ok_or_else(short)?;
            let mut octets = [0u8; 16];
            octets.copy_from_slice(&block[..16]);
            let port = u16::from_be_bytes([block[32], block[33]]);
            Ok(Some(SocketAddr::new(
                IpAddr::V6(Ipv6Addr::from(octets)),
                port,
            )))
        }
        // AF_UNSPEC or AF_UNIX: no address Petrel can use.
        _ => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn read(bytes: &[u8]) -> (io::Result<Option<SocketAddr>>, Vec<u8>) {
        let mut reader = bytes;
        let header = read_header(&mut reader).await;
        (header, reader.to_vec())
    }

    #[tokio::test]
    async fn version_1_headers() {
        let (peer, rest) = read(b"PROXY TCP4 192.0.2.1 198.51.100.2 56324 1883\r\nMQTT").await;
        assert_eq!(peer.unwrap(), Some("192.0.2.1:56324".parse().unwrap()));
        assert_eq!(rest, b"MQTT", "nothing past the header is read");
        let (peer, _) = read(b"PROXY TCP6 2001:db8::1 2001:db8::2 4000 1883\r\n").await;
        assert_eq!(peer.unwrap(), Some("[2001:db8::1]:4000".parse().unwrap()));
        let (peer, _) = read(b"PROXY UNKNOWN\r\n").await;
        assert_eq!(peer.unwrap(), None);
        assert!(read(b"PROXY TCP4 nonsense\r\n").await.0.is_err());
        assert!(read(b"GET / HTTP/1.1\r\n").await.0.is_err());
        let long = [b"PROXY ".as_slice(), &[b'x'; 200]].concat();
        assert!(read(&long).await.0.is_err());
    }

    #[tokio::test]
    async fn version_2_headers() {
        let mut header = SIGNATURE_V2.to_vec();
        header.extend([0x21, 0x11, 0x00, 0x0C]); // PROXY, TCP over IPv4, 12 bytes
        header.extend([203, 0, 113, 7, 10, 0, 0, 1]);
        header.extend(1234u16.to_be_bytes());
        header.extend(1883u16.to_be_bytes());
        header.extend(b"\x10");
        let (peer, rest) = read(&header).await;
        assert_eq!(peer.unwrap(), Some("203.0.113.7:1234".parse().unwrap()));
        assert_eq!(rest, b"\x10");
        let mut local = SIGNATURE_V2.to_vec();
        local.extend([0x20, 0x00, 0x00, 0x00]);
        assert_eq!(read(&local).await.0.unwrap(), None);
        let mut short = SIGNATURE_V2.to_vec();
        short.extend([0x21, 0x11, 0x00, 0x04, 1, 2, 3, 4]);
        assert!(read(&short).await.0.is_err());
    }
}
