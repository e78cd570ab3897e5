//! The accepting side: a bound TCP listener and, when configured, the TLS handshake (ALPN h2 required).

use std::net::SocketAddr;
use std::time::Duration;

use rustls::pki_types::ServerName;
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;

use super::tls::{self, ServerTls};
use super::BoxIo;

#[derive(Debug, thiserror::Error)]
pub enum ListenError {
    #[error("cannot bind {address}: {source}")]
    Bind {
        address: String,
        source: std::io::Error,
    },
    #[error("TLS settings: {0}")]
    Tls(#[from] tls::TlsError),
}

#[derive(Debug, thiserror::Error)]
pub(crate) enum HandshakeError {
    #[error("TLS handshake timed out after {0:?}")]
    Timeout(Duration),
    #[error("TLS handshake: {0}")]
    Tls(std::io::Error),
    #[error("client did not negotiate the expected protocol (ALPN)")]
    NoAlpn,
    #[error("client certificate names none of the allowed subject names")]
    SanNotAllowed,
}

/// A bound listener, plain or TLS.
pub(crate) struct Listener {
    tcp: TcpListener,
    tls: Option<TlsAcceptor>,
    alpn: &'static [u8],
    allowed: std::sync::Arc<Vec<ServerName<'static>>>,
}

impl Listener {
    pub(crate) async fn bind(
        address: &str,
        tls_config: Option<&ServerTls>,
    ) -> Result<Self, ListenError> {
        Self::bind_with_alpn(address, tls_config, b"h2").await
    }

    /// A listener whose TLS handshake must negotiate `alpn` (e.g. the mux protocol).
    pub(crate) async fn bind_with_alpn(
        address: &str,
        tls_config: Option<&ServerTls>,
        alpn: &'static [u8],
    ) -> Result<Self, ListenError> {
        let tls = match tls_config {
            Some(config) => {
                let mut server = (*tls::server_config(config)?).clone();
                server.alpn_protocols = vec![alpn.to_vec()];
                Some(TlsAcceptor::from(std::sync::Arc::new(server)))
            }
            None => None,
        };
        let tcp = TcpListener::bind(address)
            .await
            .map_err(|source| ListenError::Bind {
                address: address.to_owned(),
                source,
            })?;
        let allowed = match tls_config {
            Some(config) => tls::allowed_names(config)?,
            None => Vec::new(),
        };
        Ok(Self {
            tcp,
            tls,
            alpn,
            allowed: std::sync::Arc::new(allowed),
        })
    }

    pub(crate) fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.tcp.local_addr()
    }

    pub(crate) async fn accept(&self) -> std::io::Result<(TcpStream, SocketAddr)> {
        let (stream, peer) = self.tcp.accept().await?;
        let _ = stream.set_nodelay(true);
        Ok((stream, peer))
    }

    /// The acceptor used to finish a connection (TLS handshake), run on the connection's own task so
    /// that a slow handshake never holds up the accept loop.
    pub(crate) fn handshaker(&self) -> Handshaker {
        Handshaker {
            tls: self.tls.clone(),
            alpn: self.alpn,
            allowed: std::sync::Arc::clone(&self.allowed),
        }
    }
}

#[derive(Clone)]
pub(crate) struct Handshaker {
    tls: Option<TlsAcceptor>,
    alpn: &'static [u8],
    allowed: std::sync::Arc<Vec<ServerName<'static>>>,
}

impl Handshaker {
    pub(crate) async fn handshake(
        &self,
        stream: TcpStream,
        timeout: Duration,
    ) -> Result<BoxIo, HandshakeError> {
        let Some(acceptor) = &self.tls else {
            return Ok(Box::new(stream));
        };
        let tls = tokio::time::timeout(timeout, acceptor.accept(stream))
            .await
            .map_err(|_| HandshakeError::Timeout(timeout))?
            .map_err(HandshakeError::Tls)?;
        if tls.get_ref().1.alpn_protocol() != Some(self.alpn) {
            return Err(HandshakeError::NoAlpn);
        }
        if !self.allowed.is_empty() {
            let names_one = tls
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|chain| chain.first())
                .is_some_and(|leaf| tls::names_any(leaf, &self.allowed));
            if !names_one {
                return Err(HandshakeError::SanNotAllowed);
            }
        }
        Ok(Box::new(tls))
    }
}
