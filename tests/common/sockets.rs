//! What a process listens on, read from `/proc` as `ss -ltnp` would: the TCP sockets in LISTEN
//! state whose inodes are among the process's open file descriptors.

use std::collections::HashSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use anyhow::Context;

/// Every TCP address process `pid` listens on (IPv4 and IPv6).
pub fn listening(pid: u32) -> anyhow::Result<Vec<SocketAddr>> {
    let mut inodes = HashSet::new();
    let fd_dir = format!("/proc/{pid}/fd");
    for entry in std::fs::read_dir(&fd_dir).with_context(|| format!("cannot read {fd_dir}"))? {
        // A descriptor may close while we look; skip it.
        let Ok(target) = std::fs::read_link(entry?.path()) else {
            continue;
        };
        let target = target.to_string_lossy().into_owned();
        if let Some(inode) = target
            .strip_prefix("socket:[")
            .and_then(|s| s.strip_suffix(']'))
        {
            inodes.insert(inode.to_string());
        }
    }
    let mut found = Vec::new();
    for table in ["tcp", "tcp6"] {
        let path = format!("/proc/{pid}/net/{table}");
        let text = std::fs::read_to_string(&path).with_context(|| format!("cannot read {path}"))?;
        for line in text.lines().skip(1) {
            let fields: Vec<&str> = line.split_whitespace().collect();
            // sl local rem st tx:rx tr:when retrnsmt uid timeout inode
            let (Some(local), Some(state), Some(inode)) =
                (fields.get(1), fields.get(3), fields.get(9))
            else {
                continue;
            };
            const LISTEN: &str = "0A";
            if *state == LISTEN && inodes.contains(*inode) {
                found.push(
                    parse_address(local).with_context(|| format!("bad line in {path}: {line}"))?,
                );
            }
        }
    }
    Ok(found)
}

/// `0100007F:1F90` (IPv4) or 32 hex digits and a port (IPv6): the address as the kernel
/// prints it, each 32-bit word in host (little-endian) byte order.
pub fn parse_address(text: &str) -> anyhow::Result<SocketAddr> {
    let (ip, port) = text.split_once(':').context("no port")?;
    let port = u16::from_str_radix(port, 16)?;
    let words: Vec<u32> = (0..ip.len() / 8)
        .map(|i| u32::from_str_radix(&ip[i * 8..i * 8 + 8], 16))
        .collect::<Result<_, _>>()?;
    let bytes: Vec<u8> = words.iter().flat_map(|w| w.to_le_bytes()).collect();
    let ip = match bytes.len() {
        4 => IpAddr::V4(Ipv4Addr::new(bytes[0], bytes[1], bytes[2], bytes[3])),
        16 => {
            let octets: [u8; 16] = bytes.try_into().map_err(|_| anyhow::anyhow!("16 bytes"))?;
            IpAddr::V6(Ipv6Addr::from(octets))
        }
        n => anyhow::bail!("an address of {n} bytes"),
    };
    Ok(SocketAddr::new(ip, port))
}
