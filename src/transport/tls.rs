//! rustls configurations from PEM files: server side (ALPN h2, optional verified client certificates)
//! and client side (CA or system roots, optional client certificate). Only the `ring` provider is used.
//! The settings are this module's own ([`ServerTls`], [`ClientTls`]); the config converts into them.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};

/// TLS on the accepting side: a certificate and key (PEM files), and optionally who may connect.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ServerTls {
    pub(crate) cert: PathBuf,
    pub(crate) key: PathBuf,
    /// Client certificates are required and verified against this CA.
    pub(crate) client_ca: Option<PathBuf>,
    /// With `client_ca`: the client certificate must also name one of these (DNS names or IP
    /// addresses in its subjectAltName). Empty = any certificate the CA signed.
    pub(crate) allowed_sans: Vec<String>,
}

/// TLS on the dialing side. Without `ca` the system's trust store is used.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct ClientTls {
    pub(crate) ca: Option<PathBuf>,
    /// A client certificate and its key, given together or not at all.
    pub(crate) cert: Option<PathBuf>,
    pub(crate) key: Option<PathBuf>,
    /// SNI and certificate name to expect; `None` = the host the connection dials.
    pub(crate) server_name: Option<String>,
}

/// A TLS setting that cannot be used; `key()` names the setting it came from.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {path}: {source}")]
    Read {
        field: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} holds no PEM certificate")]
    NoCertificate { field: &'static str, path: PathBuf },
    #[error("{path}: invalid PEM: {message}")]
    Pem {
        field: &'static str,
        path: PathBuf,
        message: String,
    },
    #[error("{path}: certificate not usable as a trust anchor: {source}")]
    Anchor {
        field: &'static str,
        path: PathBuf,
        source: rustls::Error,
    },
    #[error("cert and key must be given together")]
    Unpaired,
    #[error("no trusted roots: {0}")]
    NoRoots(String),
    #[error("certificate and key rejected: {0}")]
    CertKey(rustls::Error),
    #[error("client certificate verifier: {0}")]
    Verifier(String),
    #[error("TLS protocol setup: {0}")]
    Protocol(rustls::Error),
}

impl TlsError {
    /// The setting (a field of [`ServerTls`] or [`ClientTls`], as in the config below `tls.`) this
    /// error concerns.
    pub(crate) fn key(&self) -> &'static str {
        match self {
            TlsError::Read { field, .. }
            | TlsError::NoCertificate { field, .. }
            | TlsError::Pem { field, .. }
            | TlsError::Anchor { field, .. } => field,
            TlsError::Unpaired | TlsError::CertKey(_) => "key",
            TlsError::NoRoots(_) => "ca",
            TlsError::Verifier(_) => "client_ca",
            TlsError::Protocol(_) => "cert",
        }
    }
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn read(field: &'static str, path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        field,
        path: path.to_owned(),
        source,
    })
}

pub(crate) fn load_certs(
    field: &'static str,
    path: &Path,
) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = read(field, path)?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|err| TlsError::Pem {
            field,
            path: path.to_owned(),
            message: err.to_string(),
        })?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate {
            field,
            path: path.to_owned(),
        });
    }
    Ok(certs)
}

pub(crate) fn load_key(
    field: &'static str,
    path: &Path,
) -> Result<PrivateKeyDer<'static>, TlsError> {
    let pem = read(field, path)?;
    PrivateKeyDer::from_pem_slice(&pem).map_err(|err| TlsError::Pem {
        field,
        path: path.to_owned(),
        message: err.to_string(),
    })
}

fn root_store(field: &'static str, path: &Path) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    for cert in load_certs(field, path)? {
        roots.add(cert).map_err(|source| TlsError::Anchor {
            field,
            path: path.to_owned(),
            source,
        })?;
    }
    Ok(roots)
}

/// The subject names a client certificate must match one of (`allowed_sans`).
pub(crate) fn allowed_names(config: &ServerTls) -> Result<Vec<ServerName<'static>>, TlsError> {
    config
        .allowed_sans
        .iter()
        .map(|san| {
            ServerName::try_from(san.clone()).map_err(|_| {
                TlsError::Verifier(format!(
                    "allowed_sans: {san:?} is not a DNS name or IP address"
                ))
            })
        })
        .collect()
}

/// True when the end-entity certificate names one of `allowed` in its subjectAltName.
pub(crate) fn names_any(certificate: &CertificateDer<'_>, allowed: &[ServerName<'static>]) -> bool {
    let Ok(certificate) = webpki::EndEntityCert::try_from(certificate) else {
        return false;
    };
    allowed
        .iter()
        .any(|name| certificate.verify_is_valid_for_subject_name(name).is_ok())
}

/// Server side of a listener: ALPN `h2`; with `client_ca`, a verified client certificate is required.
pub(crate) fn server_config(config: &ServerTls) -> Result<Arc<ServerConfig>, TlsError> {
    if !config.allowed_sans.is_empty() && config.client_ca.is_none() {
        return Err(TlsError::Verifier(
            "allowed_sans needs client_ca".to_owned(),
        ));
    }
    allowed_names(config)?;
    let certs = load_certs("cert", &config.cert)?;
    let key = load_key("key", &config.key)?;
    let builder = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(TlsError::Protocol)?;
    let builder = match &config.client_ca {
        Some(ca) => {
            let roots = root_store("client_ca", ca)?;
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
                .build()
                .map_err(|err| TlsError::Verifier(err.to_string()))?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let mut server = builder
        .with_single_cert(certs, key)
        .map_err(TlsError::CertKey)?;
    server.alpn_protocols = vec![b"h2".to_vec()];
    Ok(Arc::new(server))
}

/// Client side towards an upstream: ALPN `h2`, roots from `ca` or the system store.
pub(crate) fn client_config(config: &ClientTls) -> Result<Arc<ClientConfig>, TlsError> {
    let roots = match &config.ca {
        Some(ca) => root_store("ca", ca)?,
        None => {
            let found = rustls_native_certs::load_native_certs();
            let mut roots = RootCertStore::empty();
            let (added, _ignored) = roots.add_parsable_certificates(found.certs);
            if added == 0 {
                return Err(TlsError::NoRoots(
                    "tls.ca is not set and the system trust store is empty".to_owned(),
                ));
            }
            roots
        }
    };
    let builder = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(TlsError::Protocol)?
        .with_root_certificates(roots);
    let mut client = match (&config.cert, &config.key) {
        (Some(cert), Some(key)) => builder
            .with_client_auth_cert(load_certs("cert", cert)?, load_key("key", key)?)
            .map_err(TlsError::CertKey)?,
        (None, None) => builder.with_no_client_auth(),
        _ => return Err(TlsError::Unpaired),
    };
    client.alpn_protocols = vec![b"h2".to_vec()];
    Ok(Arc::new(client))
}
