//! TLS material the three backends' clients share, so that Postgres, Redis
//! and RabbitMQ are configured, checked and diagnosed the same way.
//!
//! - [`ClientTls`]: what a client trusts and how it identifies itself, read
//!   from PEM files once at start and checked then, so a bad file stops the
//!   binary with the key named instead of failing the first connection.
//! - [`Failure`]: what a failed handshake means, found in any client's error
//!   chain, worded as a fixed phrase that names the key to fix (for logs and
//!   `/readyz`, which never shows raw error text).
//! - [`install_provider`]: ring as rustls' process-wide crypto provider.
//!
//! rustls only, on ring: no C toolchain is needed to build any of it.

mod failure;

use std::{
    path::{Path, PathBuf},
    sync::Arc,
};

use rustls::{
    RootCertStore,
    pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject},
};

pub use failure::{Backend, Failure, LastFailure};

/// Installs ring as rustls' process-wide crypto provider. The Redis and
/// RabbitMQ clients build their TLS configurations from the process default;
/// the binaries call this once at start, and the clients call it again
/// before their first TLS connection, which costs nothing once installed.
pub fn install_provider() {
    // Err only means a provider is installed already (this one, or a test's
    // own choice): either serves.
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// The files one backend's TLS settings name (`<section>.tls.*`).
#[derive(Debug, Clone, Copy, Default)]
pub struct Files<'a> {
    /// CA certificates (PEM) trusted instead of the system roots.
    pub ca_file: Option<&'a Path>,
    /// Client certificate chain (PEM), for servers that ask for one.
    pub client_cert_file: Option<&'a Path>,
    /// The client certificate's private key (PEM: PKCS#8, PKCS#1 or SEC1).
    pub client_key_file: Option<&'a Path>,
}

/// What a client trusts and how it identifies itself. Cheap to clone. The
/// default trusts the system roots and presents no certificate.
#[derive(Clone, Default)]
pub struct ClientTls {
    /// None: trust the system roots.
    ca: Option<Arc<Ca>>,
    identity: Option<Arc<Identity>>,
}

/// CA certificates, as read (for clients that take PEM) and parsed.
struct Ca {
    pem: Vec<u8>,
    certs: Vec<CertificateDer<'static>>,
}

/// A client certificate chain and its key.
struct Identity {
    cert_pem: Vec<u8>,
    key_pem: Vec<u8>,
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
}

/// The PEM contents never show: a key would leak, certificates are noise.
impl std::fmt::Debug for ClientTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientTls")
            .field(
                "ca",
                &match &self.ca {
                    Some(ca) => format!("{} certificate(s) from a file", ca.certs.len()),
                    None => "system roots".to_owned(),
                },
            )
            .field("client_certificate", &self.identity.is_some())
            .finish()
    }
}

/// A file a TLS key names is unreadable or holds no usable PEM.
#[derive(Debug, thiserror::Error)]
#[error("{key}: {problem}")]
pub struct LoadError {
    /// The settings key naming the file, e.g. `redis.tls.ca_file`.
    pub key: String,
    /// What is wrong, with the path.
    pub problem: String,
    #[source]
    pub source: Option<Box<dyn std::error::Error + Send + Sync>>,
}

impl LoadError {
    fn new(key: String, problem: String) -> Self {
        Self {
            key,
            problem,
            source: None,
        }
    }

    fn caused(
        key: String,
        problem: String,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> Self {
        Self {
            key,
            problem,
            source: Some(Box::new(source)),
        }
    }
}

/// The system's trust store yielded nothing to trust.
#[derive(Debug, thiserror::Error)]
#[error(
    "no root certificates in the system's trust store (install ca-certificates, or name a CA file)"
)]
pub struct NoSystemRoots {
    /// What the store said while loading, if anything.
    pub errors: String,
}

impl ClientTls {
    /// Reads and checks the files; `prefix` is the settings section the keys
    /// live in (`database.tls`), for the error to name the key.
    pub fn load(prefix: &str, files: Files<'_>) -> Result<Self, LoadError> {
        let key = |name: &str| format!("{prefix}.{name}");
        let ca = match files.ca_file {
            Some(path) => Some(Arc::new(load_ca(&key("ca_file"), path)?)),
            None => None,
        };
        let identity = match (files.client_cert_file, files.client_key_file) {
            (None, None) => None,
            (Some(_), None) => {
                return Err(LoadError::new(
                    key("client_key_file"),
                    format!("must be set with {}", key("client_cert_file")),
                ));
            }
            (None, Some(_)) => {
                return Err(LoadError::new(
                    key("client_cert_file"),
                    format!("must be set with {}", key("client_key_file")),
                ));
            }
            (Some(cert), Some(private)) => Some(Arc::new(load_identity(
                (&key("client_cert_file"), cert),
                (&key("client_key_file"), private),
            )?)),
        };
        Ok(Self { ca, identity })
    }

    /// The CA certificates (PEM) to trust instead of the system roots; None
    /// when no CA file was named.
    pub fn ca_pem(&self) -> Option<&[u8]> {
        self.ca.as_deref().map(|ca| ca.pem.as_slice())
    }

    /// The client certificate chain and key (PEM), when configured.
    pub fn identity_pem(&self) -> Option<(&[u8], &[u8])> {
        self.identity
            .as_deref()
            .map(|id| (id.cert_pem.as_slice(), id.key_pem.as_slice()))
    }

    /// The client certificate chain and key, parsed, for a rustls
    /// configuration of our own.
    pub fn identity(&self) -> Option<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)> {
        self.identity
            .as_deref()
            .map(|id| (id.chain.clone(), id.key.clone_key()))
    }

    /// What to trust: the CA file's certificates, or else the system roots
    /// (read from the OS store now: call once per configuration, not per
    /// connection).
    pub fn roots(&self) -> Result<RootCertStore, NoSystemRoots> {
        let mut roots = RootCertStore::empty();
        if let Some(ca) = &self.ca {
            // Checked at load: every certificate parses as a trust anchor.
            roots.add_parsable_certificates(ca.certs.iter().cloned());
            return Ok(roots);
        }
        let native = rustls_native_certs::load_native_certs();
        roots.add_parsable_certificates(native.certs);
        if roots.is_empty() {
            let errors = native
                .errors
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("; ");
            return Err(NoSystemRoots { errors });
        }
        Ok(roots)
    }
}

fn read(key: &str, path: &Path) -> Result<Vec<u8>, LoadError> {
    std::fs::read(path).map_err(|e| {
        LoadError::caused(
            key.to_owned(),
            format!("cannot read {}: {e}", path.display()),
            e,
        )
    })
}

fn certificates(
    key: &str,
    path: &Path,
    pem: &[u8],
) -> Result<Vec<CertificateDer<'static>>, LoadError> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| {
            LoadError::caused(
                key.to_owned(),
                format!("{} is not valid PEM: {e}", path.display()),
                e,
            )
        })?;
    if certs.is_empty() {
        return Err(LoadError::new(
            key.to_owned(),
            format!("{} holds no PEM certificate", path.display()),
        ));
    }
    Ok(certs)
}

fn load_ca(key: &str, path: &Path) -> Result<Ca, LoadError> {
    let pem = read(key, path)?;
    let certs = certificates(key, path, &pem)?;
    let mut roots = RootCertStore::empty();
    for cert in &certs {
        roots.add(cert.clone()).map_err(|e| {
            LoadError::caused(
                key.to_owned(),
                format!(
                    "{} holds a certificate that cannot be trusted as a CA: {e}",
                    path.display()
                ),
                e,
            )
        })?;
    }
    Ok(Ca { pem, certs })
}

fn load_identity(cert: (&str, &Path), key: (&str, &Path)) -> Result<Identity, LoadError> {
    let cert_pem = read(cert.0, cert.1)?;
    let chain = certificates(cert.0, cert.1, &cert_pem)?;
    let key_pem = read(key.0, key.1)?;
    let private = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| {
        LoadError::caused(
            key.0.to_owned(),
            format!("{} holds no usable PEM private key: {e}", key.1.display()),
            e,
        )
    })?;
    // A throwaway configuration: rustls checks that ring can sign with the
    // key and that it belongs to the certificate, which the handshake would
    // otherwise find out much later and less clearly.
    rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .map_err(|e| LoadError::caused(key.0.to_owned(), "no TLS versions".to_owned(), e))?
        .with_root_certificates(RootCertStore::empty())
        .with_client_auth_cert(chain.clone(), private.clone_key())
        .map_err(|e| {
            LoadError::caused(
                key.0.to_owned(),
                format!(
                    "{} does not fit the certificate in {}: {e}",
                    key.1.display(),
                    cert.1.display()
                ),
                e,
            )
        })?;
    Ok(Identity {
        cert_pem,
        key_pem,
        chain,
        key: private,
    })
}

/// A path from a setting, `None` when unset or empty (an empty environment
/// variable means "not set").
pub fn path_setting(value: &Option<PathBuf>) -> Option<&Path> {
    value.as_deref().filter(|p| !p.as_os_str().is_empty())
}
