//! The owner of one TCP socket by its addresses, through NETLINK_SOCK_DIAG. An edge.
//!
//! Used for accepted (server-side) sockets, whose state changes happen in softirq context where
//! the kernel programs cannot tell the process. The answer gives the socket's uid and inode;
//! [`super::procfs::InodeIndex`] maps the inode to a pid.

use std::net::SocketAddr;

use netlink_packet_core::{NLM_F_REQUEST, NetlinkHeader, NetlinkMessage, NetlinkPayload};
use netlink_packet_sock_diag::{
    SockDiagMessage,
    constants::{AF_INET, AF_INET6, IPPROTO_TCP},
    inet::{ExtensionFlags, InetRequest, SocketId, StateFlags},
};
use netlink_sys::{Socket, SocketAddr as NlAddr, protocols::NETLINK_SOCK_DIAG};

/// What sock_diag says about a socket.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Found {
    pub uid: u32,
    pub inode: u64,
}

/// Errors talking to the kernel.
#[derive(Debug, thiserror::Error)]
pub enum SockDiagError {
    #[error("netlink socket: {0}")]
    Io(#[from] std::io::Error),
    #[error("decoding the answer: {0}")]
    Decode(String),
}

/// Look up the TCP socket bound to `local` and connected to `remote`, in this network
/// namespace. `cookie` narrows it to one socket (0: any). When no connected socket matches, the
/// kernel answers with the socket listening on `local`, if any: the same server process.
/// `Ok(None)` when there is neither.
pub fn lookup(
    local: SocketAddr,
    remote: SocketAddr,
    cookie: u64,
) -> Result<Option<Found>, SockDiagError> {
    if local.is_ipv4() != remote.is_ipv4() {
        return Ok(None);
    }
    let mut socket = Socket::new(NETLINK_SOCK_DIAG)?;
    socket.bind_auto()?;
    socket.connect(&NlAddr::new(0, 0))?;

    let cookie_bytes = if cookie == 0 {
        [0xff; 8] // INET_DIAG_NOCOOKIE
    } else {
        let mut b = [0u8; 8];
        b[..4].copy_from_slice(&(cookie as u32).to_ne_bytes());
        b[4..].copy_from_slice(&((cookie >> 32) as u32).to_ne_bytes());
        b
    };
    let mut header = NetlinkHeader::default();
    header.flags = NLM_F_REQUEST;
    let mut packet = NetlinkMessage::new(
        header,
        SockDiagMessage::InetRequest(InetRequest {
            family: if local.is_ipv4() { AF_INET } else { AF_INET6 },
            protocol: IPPROTO_TCP,
            extensions: ExtensionFlags::empty(),
            states: StateFlags::all(),
            socket_id: SocketId {
                source_port: local.port(),
                destination_port: remote.port(),
                source_address: local.ip(),
                destination_address: remote.ip(),
                interface_id: 0,
                cookie: cookie_bytes,
            },
        })
        .into(),
    );
    packet.finalize();
    let mut buf = vec![0; packet.buffer_len()];
    packet.serialize(&mut buf[..]);
    socket.send(&buf[..], 0)?;

    let mut rx = vec![0u8; 8192];
    let n = socket.recv(&mut &mut rx[..], 0)?;
    let msg = <NetlinkMessage<SockDiagMessage>>::deserialize(&rx[..n])
        .map_err(|e| SockDiagError::Decode(e.to_string()))?;
    match msg.payload {
        NetlinkPayload::InnerMessage(SockDiagMessage::InetResponse(resp)) => Ok(Some(Found {
            uid: resp.header.uid,
            inode: u64::from(resp.header.inode),
        })),
        // ENOENT and friends: no such socket.
        _ => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_an_accepted_socket_of_this_process() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (server, _) = listener.accept().unwrap();
        let local = server.local_addr().unwrap();
        let remote = server.peer_addr().unwrap();
        let found = lookup(local, remote, 0)
            .unwrap()
            .expect("the accepted socket");
        // SAFETY: getuid has no preconditions.
        assert_eq!(found.uid, unsafe { libc::getuid() });
        assert_ne!(found.inode, 0);
        // An unknown peer falls back to the listening socket: same owner.
        let listening = lookup(local, "127.0.0.1:1".parse().unwrap(), 0).unwrap();
        assert_eq!(listening.map(|f| f.uid), Some(found.uid));
        assert_ne!(listening.map(|f| f.inode), Some(found.inode));
        drop(listener);
        drop(server);
        drop(client);
        let gone = lookup(local, remote, 0).unwrap();
        assert!(gone.is_none_or(|f| f.inode != found.inode), "{gone:?}");
    }
}
