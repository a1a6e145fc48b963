//! What a failed TLS handshake means for the operator, whichever client
//! failed: found by type in the error's chain (never by its text), and
//! worded as a fixed phrase that names the setting to fix.

use std::{
    error::Error,
    sync::{
        Arc,
        atomic::{AtomicU8, Ordering},
    },
};

use rustls::{AlertDescription, CertificateError};

/// Which backend a connection was for: the phrases name its keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Backend {
    Postgres,
    Redis,
    RabbitMq,
}

/// Why a TLS handshake failed, as far as the operator can fix it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Failure {
    /// The server's certificate does not chain to what we trust (a wrong or
    /// missing CA file), or is expired or malformed.
    Untrusted,
    /// The certificate is trusted but does not name the host we connected
    /// to.
    HostName,
    /// The server refused our client certificate, or wanted one and got none.
    ClientRefused,
    /// Anything else the TLS layer refused (no common version or cipher,
    /// a plain-text server on a TLS port...).
    Handshake,
}

impl Failure {
    /// The failure somewhere in `error`'s chain, if the chain holds a TLS
    /// error. Follows `source()`, and also looks inside the wrappers that
    /// hide their inner error from it (an `io::Error` built around a rustls
    /// error; the `Arc` redis-rs keeps its cause in).
    pub fn of(error: &(dyn Error + 'static)) -> Option<Self> {
        let mut next = Some(error);
        // A chain is short; the bound only guards against a cycle.
        for _ in 0..32 {
            let e = next?;
            if let Some(tls) = e.downcast_ref::<rustls::Error>() {
                return Some(Self::from_rustls(tls));
            }
            if let Some(inner) = e
                .downcast_ref::<std::io::Error>()
                .and_then(std::io::Error::get_ref)
                && let Some(found) = Self::of(inner)
            {
                return Some(found);
            }
            if let Some(inner) = e.downcast_ref::<Arc<dyn Error + Send + Sync>>()
                && let Some(found) = Self::of(&**inner)
            {
                return Some(found);
            }
            next = e.source();
        }
        None
    }

    fn from_rustls(e: &rustls::Error) -> Self {
        match e {
            rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            ) => Self::HostName,
            rustls::Error::InvalidCertificate(_) => Self::Untrusted,
            rustls::Error::AlertReceived(
                AlertDescription::BadCertificate
                | AlertDescription::UnsupportedCertificate
                | AlertDescription::CertificateRevoked
                | AlertDescription::CertificateExpired
                | AlertDescription::CertificateUnknown
                | AlertDescription::UnknownCA
                | AlertDescription::CertificateRequired
                | AlertDescription::AccessDenied,
            ) => Self::ClientRefused,
            _ => Self::Handshake,
        }
    }

    /// A fixed phrase for logs and `/readyz`: what failed and which key to
    /// check.
    pub fn reason(self, backend: Backend) -> &'static str {
        use Backend::{Postgres, RabbitMq, Redis};
        match (self, backend) {
            (Self::Untrusted, Postgres) => {
                "TLS handshake failed: the server's certificate is not trusted; check database.tls.ca_file"
            }
            (Self::Untrusted, Redis) => {
                "TLS handshake failed: the server's certificate is not trusted; check redis.tls.ca_file"
            }
            (Self::Untrusted, RabbitMq) => {
                "TLS handshake failed: the server's certificate is not trusted; check amqp.tls.ca_file"
            }
            (Self::HostName, Postgres) => {
                "TLS handshake failed: the server's certificate does not name the host in the database URL; check the host, or use sslmode=verify-ca"
            }
            (Self::HostName, Redis) => {
                "TLS handshake failed: the server's certificate does not name the host in the Redis URL; check the host in redis.url"
            }
            (Self::HostName, RabbitMq) => {
                "TLS handshake failed: the server's certificate does not name the host in the broker URL; check the host in amqp.url"
            }
            (Self::ClientRefused, Postgres) => {
                "TLS handshake failed: the server refused the client certificate; check database.tls.client_cert_file"
            }
            (Self::ClientRefused, Redis) => {
                "TLS handshake failed: the server refused the client certificate; check redis.tls.client_cert_file"
            }
            (Self::ClientRefused, RabbitMq) => {
                "TLS handshake failed: the server refused the client certificate; check amqp.tls.client_cert_file"
            }
            (Self::Handshake, Postgres) => {
                "TLS handshake failed; check the database URL's sslmode and the database.tls keys"
            }
            (Self::Handshake, Redis) => {
                "TLS handshake failed; check the rediss:// URL and the redis.tls keys"
            }
            (Self::Handshake, RabbitMq) => {
                "TLS handshake failed; check the amqps:// URL and the amqp.tls keys"
            }
        }
    }

    fn code(self) -> u8 {
        match self {
            Self::Untrusted => 1,
            Self::HostName => 2,
            Self::ClientRefused => 3,
            Self::Handshake => 4,
        }
    }

    fn from_code(code: u8) -> Option<Self> {
        match code {
            1 => Some(Self::Untrusted),
            2 => Some(Self::HostName),
            3 => Some(Self::ClientRefused),
            4 => Some(Self::Handshake),
            _ => None,
        }
    }
}

/// The TLS failure of a client's last connection attempt, shared by the
/// client (which records) and readiness (which reports): a lazily
/// connecting pool or a reconnect loop has no error at hand when `/readyz`
/// asks. Cleared by a connection that worked.
#[derive(Debug, Default)]
pub struct LastFailure(AtomicU8);

impl LastFailure {
    /// Records what the last attempt found (None: it worked, or failed for
    /// another reason than TLS).
    pub fn set(&self, failure: Option<Failure>) {
        let code = failure.map_or(0, Failure::code);
        // Read first: Redis calls record on every call, from every worker,
        // and a store each time would bounce the cache line between cores
        // even though the value almost never changes.
        if self.0.load(Ordering::Relaxed) != code {
            self.0.store(code, Ordering::Relaxed);
        }
    }

    pub fn get(&self) -> Option<Failure> {
        Failure::from_code(self.0.load(Ordering::Relaxed))
    }
}

#[cfg(test)]
mod tests {
    use std::io;

    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("outer")]
    struct Outer(#[source] io::Error);

    #[derive(Debug, thiserror::Error)]
    #[error("redis-like")]
    struct ArcCause(#[source] Arc<dyn Error + Send + Sync>);

    fn untrusted() -> rustls::Error {
        rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer)
    }

    #[test]
    fn finds_rustls_errors_behind_io_errors_and_arcs() {
        let io = io::Error::new(io::ErrorKind::InvalidData, untrusted());
        assert_eq!(Failure::of(&Outer(io)), Some(Failure::Untrusted));

        let io = io::Error::new(
            io::ErrorKind::InvalidData,
            rustls::Error::InvalidCertificate(CertificateError::NotValidForName),
        );
        let arc: Arc<dyn Error + Send + Sync> = Arc::new(io);
        assert_eq!(Failure::of(&ArcCause(arc)), Some(Failure::HostName));

        let refused = rustls::Error::AlertReceived(AlertDescription::CertificateRequired);
        assert_eq!(Failure::of(&refused), Some(Failure::ClientRefused));

        let plain = Outer(io::Error::from(io::ErrorKind::ConnectionRefused));
        assert_eq!(Failure::of(&plain), None);
    }

    #[test]
    fn every_phrase_names_what_to_check() {
        for failure in [
            Failure::Untrusted,
            Failure::HostName,
            Failure::ClientRefused,
            Failure::Handshake,
        ] {
            for (backend, section) in [
                (Backend::Postgres, "database"),
                (Backend::Redis, "redis"),
                (Backend::RabbitMq, "amqp"),
            ] {
                let reason = failure.reason(backend);
                assert!(reason.starts_with("TLS handshake failed"), "{reason}");
                assert!(
                    reason.contains(section) || reason.contains("URL"),
                    "{reason}"
                );
            }
            let cell = LastFailure::default();
            cell.set(Some(failure));
            assert_eq!(cell.get(), Some(failure));
            cell.set(None);
            assert_eq!(cell.get(), None);
        }
    }
}
