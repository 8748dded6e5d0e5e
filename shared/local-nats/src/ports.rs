//! Free loopback ports for servers started by this crate.

use std::io;
use std::net::TcpListener;

/// Ask the kernel for `count` distinct free ports on 127.0.0.1.
///
/// All listeners are held until every port is chosen, so the ports differ from each
/// other; they are released before returning, so another process could grab one before
/// nats-server binds it. Callers handle that race by retrying on "address in use".
pub(crate) fn free_ports(count: usize) -> io::Result<Vec<u16>> {
    let listeners = (0..count).map(|_| TcpListener::bind(("127.0.0.1", 0))).collect::<io::Result<Vec<_>>>()?;
    listeners.iter().map(|l| Ok(l.local_addr()?.port())).collect()
}
