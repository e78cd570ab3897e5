//! Bytes in and out: accepting client connections (`listen`), dialing upstreams (`connect`), the
//! rustls configurations both use (`tls`) and certificate validity dates (`validity`). Everything
//! above this layer sees one boxed byte stream. Its settings are its own types (`tls::ServerTls`,
//! `tls::ClientTls`, `connect::ConnectSettings`): `config` converts into them, and nothing here
//! reads the config.

pub(crate) mod backoff;
pub(crate) mod coalesce;
pub(crate) mod connect;
pub(crate) mod listen;
pub mod mux;
pub(crate) mod tls;
pub mod validity;

use tokio::io::{AsyncRead, AsyncWrite};

/// A connected byte stream: plain TCP or TLS over TCP (later also a multiplexed substream).
pub trait Io: AsyncRead + AsyncWrite + Send + Unpin + 'static {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin + 'static> Io for T {}

pub(crate) type BoxIo = Box<dyn Io>;
