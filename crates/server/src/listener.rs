//! Binding a listen URL's socket with etcd's socket options: `--socket-reuse-port` (SO_REUSEPORT,
//! so several processes may listen on one port) and `--socket-reuse-address` (SO_REUSEADDR, so a
//! restarted member can bind while old connections linger in TIME_WAIT). Go's listeners, and so
//! etcd's, set SO_REUSEADDR on Unix whatever the flag says; tokio's do too, so the flag changes
//! nothing there either.

use std::net::SocketAddr;

use crate::Config;

/// The backlog Go's `net.Listen` asks for on Linux (it reads `somaxconn`, which caps this anyway).
const BACKLOG: u32 = 4096;

pub(crate) fn listen(addr: SocketAddr, cfg: &Config) -> std::io::Result<tokio::net::TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    if cfg.socket_reuse_port {
        socket.set_reuseport(true)?;
    }
    socket.bind(addr)?;
    socket.listen(BACKLOG)
}
