//! Counters that are there but broken, for the gateway to mark offline.
//!
//! [`RefusingPort`] holds a loopback port bound but not listening: every connection to it is
//! refused, and no other process can take the port while the test runs. [`SilentPeer`]
//! accepts connections and never answers, so each Modbus request has to time out.

use std::net::SocketAddr;

use anyhow::Context;

use super::hall::loopback;

/// A port where connections are refused.
pub struct RefusingPort {
    _socket: tokio::net::TcpSocket,
    pub address: SocketAddr,
}

impl RefusingPort {
    pub fn bind() -> anyhow::Result<Self> {
        let socket = tokio::net::TcpSocket::new_v4().context("cannot create a socket")?;
        socket
            .bind(loopback(0))
            .context("cannot bind a loopback port")?;
        let address = socket
            .local_addr()
            .context("a bound socket has an address")?;
        Ok(RefusingPort {
            _socket: socket,
            address,
        })
    }
}

/// A port that accepts connections, reads nothing and answers nothing.
pub struct SilentPeer {
    task: tokio::task::JoinHandle<()>,
    pub address: SocketAddr,
}

impl SilentPeer {
    pub async fn listen() -> anyhow::Result<Self> {
        let listener = tokio::net::TcpListener::bind(loopback(0))
            .await
            .context("cannot listen on a loopback port")?;
        let address = listener.local_addr().context("a listener has an address")?;
        let task = tokio::spawn(async move {
            // Keep every connection open so the client waits for an answer that never comes.
            let mut open = Vec::new();
            while let Ok((stream, _)) = listener.accept().await {
                open.push(stream);
            }
        });
        Ok(SilentPeer { task, address })
    }
}

impl Drop for SilentPeer {
    fn drop(&mut self) {
        self.task.abort();
    }
}
