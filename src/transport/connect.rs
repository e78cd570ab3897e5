//! The dialing side: TCP (+ TLS) connections to an upstream, bounded by a connect timeout.

use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::ServerName;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use super::tls::{self, ClientTls};
use super::BoxIo;

/// Where and how to dial: this module's own settings (the config converts into them).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ConnectSettings {
    /// `host:port` to dial.
    pub(crate) address: String,
    pub(crate) connect_timeout: Duration,
    pub(crate) tls: Option<ClientTls>,
}

impl ConnectSettings {
    /// The TLS server name: `tls.server_name`, else the host of `address`.
    pub(crate) fn server_name(&self) -> Result<ServerName<'static>, String> {
        let name = match self.tls.as_ref().and_then(|t| t.server_name.clone()) {
            Some(name) => name,
            None => split_host_port(&self.address)?.0,
        };
        ServerName::try_from(name.clone())
            .map_err(|_| format!("{name:?} is not a valid TLS server name"))
    }
}

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

/// Longest DNS name (RFC 1035), and longest label of one.
const MAX_HOST_LEN: usize = 253;
const MAX_LABEL_LEN: usize = 63;

/// Splits and checks a dialable `host:port`: the host is an IPv4 address, a bracketed IPv6
/// address (`[::1]:7233`) or a DNS name; the port is 1-65535 in decimal. Anything else (a scheme, a
/// path, spaces, an unbracketed IPv6 address) is refused here, so that `strait check` refuses what
/// the dialer could not use.
pub(crate) fn split_host_port(address: &str) -> Result<(String, u16), String> {
    let invalid = |why: &str| {
        Err(format!(
            "{address:?} is not host:port ({why}; e.g. \"127.0.0.1:7233\", \"[::1]:7233\" or \"temporal.example.com:7233\")"
        ))
    };
    let (host, port) = if let Some(rest) = address.strip_prefix('[') {
        let Some((v6, port)) = rest.split_once("]:") else {
            return invalid("an IPv6 address needs a closing ] followed by :port");
        };
        if v6.parse::<std::net::Ipv6Addr>().is_err() {
            return invalid("not an IPv6 address inside [ ]");
        }
        (v6, port)
    } else {
        let Some((host, port)) = address.rsplit_once(':') else {
            return invalid("no :port");
        };
        if host.contains(':') {
            return invalid("an IPv6 address must be in brackets, a URL is not an address");
        }
        if host.is_empty() {
            return invalid("no host");
        }
        if !is_dns_name(host) {
            return invalid("the host is neither an IP address nor a DNS name");
        }
        (host, port)
    };
    if port.is_empty() || !port.bytes().all(|b| b.is_ascii_digit()) {
        return invalid("the port must be a decimal number");
    }
    match port.parse::<u16>() {
        Ok(port) if port != 0 => Ok((host.to_owned(), port)),
        _ => invalid("the port must be between 1 and 65535"),
    }
}

/// A DNS name or an IPv4 address in dotted form (which has the shape of one): labels of letters,
/// digits, '-' and '_', not starting or ending with '-'; one trailing dot allowed.
fn is_dns_name(host: &str) -> bool {
    let name = host.strip_suffix('.').unwrap_or(host);
    !name.is_empty()
        && name.len() <= MAX_HOST_LEN
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= MAX_LABEL_LEN
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
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
    pub(crate) fn new(settings: &ConnectSettings) -> Result<Self, ConnectError> {
        Self::with_alpn(settings, b"h2")
    }

    /// A connector whose TLS handshake must negotiate `alpn` (e.g. the mux protocol).
    pub(crate) fn with_alpn(
        settings: &ConnectSettings,
        alpn: &'static [u8],
    ) -> Result<Self, ConnectError> {
        let tls = match &settings.tls {
            Some(tls_config) => {
                let mut config = (*tls::client_config(tls_config)?).clone();
                config.alpn_protocols = vec![alpn.to_vec()];
                let config = Arc::new(config);
                let name = settings
                    .server_name()
                    .map_err(|message| ConnectError::Tls {
                        address: settings.address.clone(),
                        source: std::io::Error::new(std::io::ErrorKind::InvalidInput, message),
                    })?;
                Some((TlsConnector::from(Arc::clone(&config)), name))
            }
            None => None,
        };
        Ok(Self {
            address: settings.address.clone(),
            timeout: settings.connect_timeout,
            tls,
            alpn,
        })
    }

    pub(crate) fn address(&self) -> &str {
        &self.address
    }

    pub(crate) fn is_tls(&self) -> bool {
        self.tls.is_some()
    }

    pub(crate) async fn connect(&self) -> Result<BoxIo, ConnectError> {
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
        assert_eq!(
            split_host_port("localhost:7233").unwrap(),
            ("localhost".into(), 7233)
        );
        assert_eq!(
            split_host_port("temporal_1.internal.:7233").unwrap(),
            ("temporal_1.internal.".into(), 7233)
        );
        for bad in [
            "nohost",
            "host:0",
            ":80",
            "host:99999",
            "host:+80",
            "host:",
            "http://127.0.0.1:7233",
            "[::1:7233",
            "[::1]7233",
            "[nothost]:7233",
            "::1:7233",
            "a b:7233",
            "host/x:7233",
            "-host:7233",
            "a..b:7233",
            ".:7233",
            "host:7233 ",
        ] {
            let err = split_host_port(bad).unwrap_err();
            assert!(err.contains(&format!("{bad:?}")), "{err}");
        }
        let long_label = format!("{}.example:7233", "a".repeat(64));
        assert!(split_host_port(&long_label).is_err());
        let long_name = format!("{}a:7233", "a.".repeat(127));
        assert!(split_host_port(&long_name).is_err());
    }
}
