//! What a server accepts connections on: a TCP listener or a Unix domain socket.

use std::{io, net::SocketAddr};

use tokio::net::{TcpListener, TcpStream, UnixListener, UnixStream};

/// A bound socket for [`run`](crate::grpc::run): TCP, or a Unix domain socket (the peer then
/// has no address; TLS, if configured, still runs over it).
#[derive(Debug)]
pub enum Listener {
    /// A TCP listener.
    Tcp(TcpListener),
    /// A Unix domain socket listener.
    Unix(UnixListener),
}

impl From<TcpListener> for Listener {
    fn from(l: TcpListener) -> Self {
        Self::Tcp(l)
    }
}

impl From<UnixListener> for Listener {
    fn from(l: UnixListener) -> Self {
        Self::Unix(l)
    }
}

/// An accepted connection's byte stream.
pub(crate) enum Socket {
    Tcp(TcpStream),
    Unix(UnixStream),
}

impl Listener {
    pub(crate) async fn accept(&self) -> io::Result<(Socket, Option<SocketAddr>)> {
        match self {
            Self::Tcp(l) => {
                let (socket, addr) = l.accept().await?;
                let _ = socket.set_nodelay(true);
                Ok((Socket::Tcp(socket), Some(addr)))
            }
            Self::Unix(l) => Ok((Socket::Unix(l.accept().await?.0), None)),
        }
    }
}
