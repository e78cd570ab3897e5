//! The dialing side: TCP (+ TLS) connections to an upstream, bounded by a connect timeout.

use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::ServerName;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use super::{tls, BoxIo};
use crate::config::UpstreamConfig;

#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("connect to {address} timed out after {timeout:?}")]
    Timeout { address: String, timeout: Duration },
    #[error("connect to {address}: {source}")]
    Tcp {
        address: String,
        source: std::io::Error,
    },
    #[error("TLS handshake with {address}: {source}")]
    Tls {
        address: String,
        source: std::io::Error,
    },
    #[error("{address} did not negotiate HTTP/2 (ALPN h2)")]
    NoAlpn { address: String },
    #[error("TLS settings: {0}")]
    Config(#[from] tls::TlsError),
}

/// Splits `host:port` (`[v6]:port` too), checking the port.
pub fn split_host_port(address: &str) -> Result<(String, u16), String> {
    let (host, port) = address
        .rsplit_once(':')
        .ok_or_else(|| format!("{address:?} is not host:port"))?;
    let port: u16 = port
        .parse()
        .map_err(|_| format!("{address:?} has an invalid port"))?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() || port == 0 {
        return Err(format!("{address:?} needs a host and a non-zero port"));
    }
    Ok((host.to_owned(), port))
}

/// The TLS server name for an upstream: `tls.server_name`, else the host of `address`.
pub fn server_name(upstream: &UpstreamConfig) -> Result<ServerName<'static>, String> {
    let name = match upstream.tls.as_ref().and_then(|t| t.server_name.clone()) {
        Some(name) => name,
        None => split_host_port(&upstream.address)?.0,
    };
    ServerName::try_from(name.clone())
        .map_err(|_| format!("{name:?} is not a valid TLS server name"))
}

/// Dials one upstream address, with TLS when configured.
#[derive(Clone)]
pub struct Connector {
    address: String,
    timeout: Duration,
    tls: Option<(TlsConnector, ServerName<'static>)>,
    alpn: &'static [u8],
}

impl Connector {
    pub fn new(upstream: &UpstreamConfig) -> Result<Self, ConnectError> {
        Self::with_alpn(upstream, b"h2")
    }

    /// A connector whose TLS handshake must negotiate `alpn` (e.g. the mux protocol).
    pub fn with_alpn(upstream: &UpstreamConfig, alpn: &'static [u8]) -> Result<Self, ConnectError> {
        let tls = match &upstream.tls {
            Some(tls_config) => {
                let mut config = (*tls::client_config(tls_config)?).clone();
                config.alpn_protocols = vec![alpn.to_vec()];
                let config = Arc::new(config);
                let name = server_name(upstream).map_err(|message| ConnectError::Tls {
                    address: upstream.address.clone(),
                    source: std::io::Error::new(std::io::ErrorKind::InvalidInput, message),
                })?;
                Some((TlsConnector::from(Arc::clone(&config)), name))
            }
            None => None,
        };
        Ok(Self {
            address: upstream.address.clone(),
            timeout: upstream.connect_timeout,
            tls,
            alpn,
        })
    }

    pub fn address(&self) -> &str {
        &self.address
    }

    pub fn is_tls(&self) -> bool {
        self.tls.is_some()
    }

    pub async fn connect(&self) -> Result<BoxIo, ConnectError> {
        let address = self.address.clone();
        let timeout = self.timeout;
        match tokio::time::timeout(timeout, self.connect_inner()).await {
            Ok(result) => result,
            Err(_) => Err(ConnectError::Timeout { address, timeout }),
        }
    }

    async fn connect_inner(&self) -> Result<BoxIo, ConnectError> {
        let tcp = TcpStream::connect(&self.address)
            .await
            .map_err(|source| ConnectError::Tcp {
                address: self.address.clone(),
                source,
            })?;
        // gRPC is latency-sensitive request/response traffic: never wait for Nagle.
        let _ = tcp.set_nodelay(true);
        let Some((connector, name)) = &self.tls else {
            return Ok(Box::new(tcp));
        };
        let stream = connector
            .connect(name.clone(), tcp)
            .await
            .map_err(|source| ConnectError::Tls {
                address: self.address.clone(),
                source,
            })?;
        if stream.get_ref().1.alpn_protocol() != Some(self.alpn) {
            return Err(ConnectError::NoAlpn {
                address: self.address.clone(),
            });
        }
        Ok(Box::new(stream))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn host_port_forms() {
        assert_eq!(
            split_host_port("127.0.0.1:7233").unwrap(),
            ("127.0.0.1".into(), 7233)
        );
        assert_eq!(split_host_port("[::1]:7233").unwrap(), ("::1".into(), 7233));
        assert_eq!(
            split_host_port("temporal.example:443").unwrap(),
            ("temporal.example".into(), 443)
        );
        assert!(split_host_port("nohost").is_err());
        assert!(split_host_port("host:0").is_err());
        assert!(split_host_port(":80").is_err());
        assert!(split_host_port("host:99999").is_err());
    }
}
