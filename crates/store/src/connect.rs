//! How a connection to Postgres is opened: in plain text, or over TLS
//! (rustls, ring) as the URL's `sslmode` asks.
//!
//! | `sslmode` | here |
//! |---|---|
//! | absent, `disable`, `prefer` | plain text. `prefer` never tries TLS: a server that refuses it gets the same plain connection, and an attacker on the path can always make it refuse, so `prefer` protects nothing; ask for `require` or stronger |
//! | `require` | TLS, the certificate not checked: encrypted, but not authenticated (unlike libpq, a CA file does not turn this into `verify-ca`: say `verify-ca`) |
//! | `verify-ca` | TLS, the certificate must chain to the CA file (or the system roots); any host name |
//! | `verify-full` | as `verify-ca`, and the certificate must name the URL's host |
//!
//! tokio-postgres knows only `disable`, `prefer` and `require`, and takes any
//! TLS connector: the URL it gets says `sslmode=require` for the three TLS
//! modes, and the connector carries the verification the mode asks for.

use std::{
    io,
    pin::Pin,
    str::FromStr,
    sync::Arc,
    task::{Context, Poll},
};

use diesel::ConnectionError;
use diesel_async::{AsyncConnection, AsyncPgConnection};
use futures::future::BoxFuture;
use rustls::{
    ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme,
    client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier},
    crypto::CryptoProvider,
    pki_types::{CertificateDer, ServerName, UnixTime},
};
use tls::{Backend, ClientTls, Failure, LastFailure};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_postgres::{
    Socket,
    tls::{ChannelBinding, MakeTlsConnect, TlsConnect},
};

/// What a URL's `sslmode` asks for (see the module table).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SslMode {
    /// `disable`, `prefer` or no `sslmode`: plain text.
    Plain,
    Require,
    VerifyCa,
    VerifyFull,
}

/// A URL that cannot be used: an unknown `sslmode`, or one tokio-postgres
/// refuses.
#[derive(Debug, thiserror::Error)]
pub enum BadUrl {
    #[error("invalid URL: {0}")]
    Syntax(#[source] url::ParseError),
    #[error("sslmode {0:?} is not supported (disable, prefer, require, verify-ca or verify-full)")]
    SslMode(String),
    #[error("invalid connection URL: {0}")]
    Options(#[source] tokio_postgres::Error),
}

/// The URL's `sslmode`, and the URL as tokio-postgres takes it.
fn split(url: &str) -> Result<(SslMode, String), BadUrl> {
    let mut parsed = url::Url::parse(url).map_err(BadUrl::Syntax)?;
    let mut mode = SslMode::Plain;
    let mut others = Vec::new();
    for (k, v) in parsed.query_pairs() {
        if k == "sslmode" {
            mode = match &*v {
                "disable" | "prefer" => SslMode::Plain,
                "require" => SslMode::Require,
                "verify-ca" => SslMode::VerifyCa,
                "verify-full" => SslMode::VerifyFull,
                other => return Err(BadUrl::SslMode(other.to_owned())),
            };
        } else {
            others.push((k.into_owned(), v.into_owned()));
        }
    }
    if mode == SslMode::Plain {
        // Untouched: the plain path is exactly what it always was.
        return Ok((mode, url.to_owned()));
    }
    {
        let mut query = parsed.query_pairs_mut();
        query.clear();
        for (k, v) in &others {
            query.append_pair(k, v);
        }
        // TLS or nothing: tokio-postgres never falls back to plain text.
        query.append_pair("sslmode", "require");
    }
    Ok((mode, parsed.into()))
}

/// Checks a Postgres URL as the pool will read it: the `sslmode`, then every
/// other option tokio-postgres knows.
pub fn check_url(url: &str) -> Result<SslMode, BadUrl> {
    let (mode, rewritten) = split(url)?;
    tokio_postgres::Config::from_str(&rewritten).map_err(BadUrl::Options)?;
    Ok(mode)
}

/// Why a connection target cannot be set up.
#[derive(Debug, thiserror::Error)]
pub enum TargetError {
    #[error(transparent)]
    Url(#[from] BadUrl),
    #[error("the TLS configuration for Postgres")]
    Tls(#[source] rustls::Error),
    #[error("no CA to verify Postgres with")]
    Roots(#[source] tls::NoSystemRoots),
}

/// One server, ready to be connected to: its URL and, when its `sslmode`
/// asks for TLS, the connector (built once: the trust store is read once,
/// and TLS sessions can be resumed). Cheap to clone.
#[derive(Clone)]
pub(crate) struct Target {
    url: Arc<str>,
    config: Option<tokio_postgres::Config>,
    connector: Option<Connector>,
    /// The TLS failure of the last attempt, for readiness.
    pub(crate) last_failure: Arc<LastFailure>,
}

impl Target {
    pub(crate) fn new(url: &str, tls: &ClientTls) -> Result<Self, TargetError> {
        let (mode, rewritten) = split(url)?;
        let (config, connector) = if mode == SslMode::Plain {
            (None, None)
        } else {
            let config = tokio_postgres::Config::from_str(&rewritten).map_err(BadUrl::Options)?;
            (Some(config), Some(Connector::new(mode, tls)?))
        };
        Ok(Self {
            url: rewritten.into(),
            config,
            connector,
            last_failure: Arc::default(),
        })
    }

    /// Opens one connection. A TLS failure is recorded for readiness, and
    /// worded with the key to fix: diesel's `ConnectionError` keeps only a
    /// message, so the message must say it.
    pub(crate) async fn establish(&self) -> Result<AsyncPgConnection, ConnectionError> {
        let (Some(config), Some(connector)) = (&self.config, &self.connector) else {
            return AsyncPgConnection::establish(&self.url).await;
        };
        match config.connect(connector.clone()).await {
            Ok((client, connection)) => {
                self.last_failure.set(None);
                AsyncPgConnection::try_from_client_and_connection(client, connection).await
            }
            Err(e) => {
                let failure = Failure::of(&e);
                self.last_failure.set(failure);
                // The causes too: tokio-postgres' own text for a TLS error
                // leaves out what rustls said.
                let mut message = e.to_string();
                let mut source = std::error::Error::source(&e);
                while let Some(cause) = source {
                    message = format!("{message}: {cause}");
                    source = cause.source();
                }
                if let Some(f) = failure {
                    message = format!("{}: {message}", f.reason(Backend::Postgres));
                }
                Err(ConnectionError::BadConnection(message))
            }
        }
    }
}

/// A tokio-postgres TLS connector over rustls.
#[derive(Clone)]
struct Connector(Arc<ClientConfig>);

impl Connector {
    fn new(mode: SslMode, tls: &ClientTls) -> Result<Self, TargetError> {
        // Our own provider, not the process default: this works whether or
        // not the binary installed one.
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = ClientConfig::builder_with_provider(Arc::clone(&provider))
            .with_safe_default_protocol_versions()
            .map_err(TargetError::Tls)?;
        let builder = match mode {
            SslMode::Plain | SslMode::Require => builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(CertCheck {
                    roots: None,
                    provider,
                })),
            SslMode::VerifyCa => {
                let roots = Some(Arc::new(tls.roots().map_err(TargetError::Roots)?));
                builder
                    .dangerous()
                    .with_custom_certificate_verifier(Arc::new(CertCheck { roots, provider }))
            }
            SslMode::VerifyFull => {
                builder.with_root_certificates(tls.roots().map_err(TargetError::Roots)?)
            }
        };
        let mut config = match tls.identity() {
            Some((chain, key)) => builder
                .with_client_auth_cert(chain, key)
                .map_err(TargetError::Tls)?,
            None => builder.with_no_client_auth(),
        };
        // What libpq 17 offers; required by servers that take direct TLS
        // (`sslnegotiation=direct`), ignored by the others.
        config.alpn_protocols = vec![b"postgresql".to_vec()];
        Ok(Self(Arc::new(config)))
    }
}

impl MakeTlsConnect<Socket> for Connector {
    type Stream = TlsStream;
    type TlsConnect = Handshake;
    type Error = rustls::pki_types::InvalidDnsNameError;

    fn make_tls_connect(&mut self, host: &str) -> Result<Handshake, Self::Error> {
        Ok(Handshake {
            config: Arc::clone(&self.0),
            name: ServerName::try_from(host.to_owned())?,
        })
    }
}

/// One handshake with one host.
struct Handshake {
    config: Arc<ClientConfig>,
    name: ServerName<'static>,
}

impl TlsConnect<Socket> for Handshake {
    type Stream = TlsStream;
    type Error = io::Error;
    type Future = BoxFuture<'static, io::Result<TlsStream>>;

    fn connect(self, socket: Socket) -> Self::Future {
        Box::pin(async move {
            let stream = tokio_rustls::TlsConnector::from(self.config)
                .connect(self.name, socket)
                .await?;
            Ok(TlsStream(stream))
        })
    }
}

/// The TLS stream under one Postgres connection.
pub(crate) struct TlsStream(tokio_rustls::client::TlsStream<Socket>);

impl tokio_postgres::tls::TlsStream for TlsStream {
    // No channel binding: SCRAM then runs without it (tokio-postgres'
    // `channel_binding=prefer`), as it does over plain text. Binding would
    // need the certificate's signature hash, parsed out of its DER.
    fn channel_binding(&self) -> ChannelBinding {
        ChannelBinding::none()
    }
}

impl AsyncRead for TlsStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl AsyncWrite for TlsStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

/// What `sslmode=require` and `verify-ca` check of the server's
/// certificate; `verify-full` uses rustls' own verifier.
///
/// - `roots: None` (`require`): any certificate. The handshake's own
///   signatures are still checked, so the session is encrypted to whoever
///   holds the key of the certificate presented; who that is, nobody checked.
/// - `roots: Some` (`verify-ca`): the certificate must chain to a trusted
///   root; the host name is not checked (rustls' own chain check, without
///   its name check).
#[derive(Debug)]
struct CertCheck {
    roots: Option<Arc<RootCertStore>>,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for CertCheck {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if let Some(roots) = &self.roots {
            let cert = rustls::server::ParsedCertificate::try_from(end_entity)?;
            rustls::client::verify_server_cert_signed_by_trust_anchor(
                &cert,
                roots,
                intermediates,
                now,
                self.provider.signature_verification_algorithms.all,
            )?;
        }
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sslmode_picks_the_mode_and_tokio_postgres_gets_require() {
        let (mode, url) = split("postgres://u:p@db:5432/catalog").unwrap();
        assert_eq!(mode, SslMode::Plain);
        assert_eq!(url, "postgres://u:p@db:5432/catalog");
        let (mode, url) = split("postgres://db/catalog?sslmode=prefer").unwrap();
        assert_eq!(mode, SslMode::Plain);
        assert!(url.ends_with("sslmode=prefer"), "{url}");
        let (mode, url) =
            split("postgres://db/catalog?application_name=x&sslmode=verify-full").unwrap();
        assert_eq!(mode, SslMode::VerifyFull);
        assert_eq!(
            url,
            "postgres://db/catalog?application_name=x&sslmode=require"
        );
        assert_eq!(
            check_url("postgres://db/c?sslmode=verify-ca").unwrap(),
            SslMode::VerifyCa
        );
        assert!(matches!(
            check_url("postgres://db/c?sslmode=allow"),
            Err(BadUrl::SslMode(_))
        ));
        assert!(matches!(
            check_url("postgres://db/c?sslmode=require&bogus=1"),
            Err(BadUrl::Options(_))
        ));
    }
}
