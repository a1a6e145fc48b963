//! A lean HTTP/1.1 keep-alive client for the measuring loops.
//!
//! Each [`Conn`] is one TCP connection owned by one task: no pool, no locks,
//! no URL parsing per request (request URIs are built once, up front, and
//! cloning a [`Uri`] only bumps a reference count). A connection that fails or
//! times out is dropped and transparently re-opened on the next request, so a
//! server restart or an idle keep-alive close shows up as one error, not as a
//! dead worker.

use std::{
    fmt,
    net::{SocketAddr, ToSocketAddrs},
    time::Duration,
};

use anyhow::{Context, bail};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{
    HeaderMap, Method, Request, StatusCode, Uri,
    client::conn::http1::{self, SendRequest},
    header::{self, HeaderName, HeaderValue},
};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

/// One server to talk to: a parsed `http://host:port[/prefix]` base URL.
#[derive(Debug, Clone)]
pub struct Target {
    /// The URL as the user wrote it, without a trailing slash (for reports).
    pub base: String,
    /// Resolved once at start so the hot loop never does DNS.
    addrs: Vec<SocketAddr>,
    /// The `Host` header every request carries (hyper's bare connection
    /// API does not add one).
    host: HeaderValue,
    /// Path prefix of the base URL (`""` or `/api`), prepended to every path.
    prefix: String,
}

impl Target {
    /// Parses and resolves `http://host:port[/prefix]`. Only plain HTTP:
    /// the benchmark runs on loopback, and TLS would measure the cipher.
    pub fn parse(url: &str) -> anyhow::Result<Self> {
        let base = url.trim_end_matches('/').to_owned();
        let uri: Uri = base
            .parse()
            .with_context(|| format!("invalid URL {url:?}"))?;
        if uri.scheme_str() != Some("http") {
            bail!("{url:?}: only http:// URLs are supported");
        }
        let Some(authority) = uri.authority() else {
            bail!("{url:?}: the URL has no host");
        };
        if uri.query().is_some() {
            bail!("{url:?}: a base URL cannot have a query string");
        }
        let port = authority.port_u16().unwrap_or(80);
        let addrs: Vec<SocketAddr> = (authority.host().trim_matches(['[', ']']), port)
            .to_socket_addrs()
            .with_context(|| format!("resolving {}", authority.host()))?
            .collect();
        if addrs.is_empty() {
            bail!("{url:?}: the host resolves to no address");
        }
        Ok(Self {
            host: HeaderValue::from_str(authority.as_str())
                .with_context(|| format!("{url:?}: host is not a valid header value"))?,
            prefix: uri.path().trim_end_matches('/').to_owned(),
            addrs,
            base,
        })
    }

    /// The origin-form request URI for `path` (which starts with `/`).
    pub fn uri(&self, path: &str) -> anyhow::Result<Uri> {
        let full = format!("{}{path}", self.prefix);
        full.parse()
            .with_context(|| format!("invalid request path {full:?}"))
    }

    /// A header map holding `Host` plus `extra`, to clone into each request.
    pub fn headers(&self, extra: &[(HeaderName, HeaderValue)]) -> HeaderMap {
        let mut map = HeaderMap::with_capacity(extra.len() + 1);
        map.insert(header::HOST, self.host.clone());
        for (name, value) in extra {
            map.append(name.clone(), value.clone());
        }
        map
    }
}

/// Parses `Name: value` (the curl syntax of `--header`).
pub fn parse_header(raw: &str) -> anyhow::Result<(HeaderName, HeaderValue)> {
    let Some((name, value)) = raw.split_once(':') else {
        bail!("header {raw:?} is not of the form 'Name: value'");
    };
    let name = HeaderName::from_bytes(name.trim().as_bytes())
        .with_context(|| format!("invalid header name in {raw:?}"))?;
    let value = HeaderValue::from_str(value.trim())
        .with_context(|| format!("invalid header value in {raw:?}"))?;
    Ok((name, value))
}

/// Builds a request from parts prepared up front (no parsing here).
pub fn request(method: Method, uri: Uri, headers: HeaderMap, body: Bytes) -> Request<Full<Bytes>> {
    let mut req = Request::new(Full::new(body));
    *req.method_mut() = method;
    *req.uri_mut() = uri;
    *req.headers_mut() = headers;
    req
}

/// Why a request got no HTTP answer. Reports count these by [`Self::label`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientError {
    /// The TCP connect (or the HTTP handshake) failed.
    Connect,
    /// No complete answer within the request timeout.
    Timeout,
    /// The connection broke while sending or receiving.
    Io,
}

impl ClientError {
    /// A short stable name for reports and JSON.
    pub fn label(self) -> &'static str {
        match self {
            ClientError::Connect => "connect",
            ClientError::Timeout => "timeout",
            ClientError::Io => "io",
        }
    }
}

impl fmt::Display for ClientError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.label())
    }
}

/// A complete HTTP answer: status, headers and (if asked for) the body.
#[derive(Debug)]
pub struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    /// The body when the caller asked to keep it; otherwise it was read and
    /// discarded without buffering.
    pub body: Option<Bytes>,
}

impl Answer {
    /// The version in `ETag: "<version>"` (weak validators accepted).
    pub fn etag_version(&self) -> Option<u64> {
        let raw = self.headers.get(header::ETAG)?.to_str().ok()?;
        raw.trim_start_matches("W/").trim_matches('"').parse().ok()
    }

    /// The `version` field of a JSON body, when the body was kept.
    pub fn body_version(&self) -> Option<u64> {
        #[derive(serde::Deserialize)]
        struct Versioned {
            version: u64,
        }
        let body = self.body.as_ref()?;
        serde_json::from_slice::<Versioned>(body)
            .ok()
            .map(|v| v.version)
    }
}

/// One keep-alive HTTP/1.1 connection to one [`Target`], re-opened on demand.
pub struct Conn {
    addrs: Vec<SocketAddr>,
    /// `None` until the first request and after any failure.
    sender: Option<SendRequest<Full<Bytes>>>,
    /// Bounds connect + send + full response, so a stuck server cannot
    /// stall a worker forever.
    timeout: Duration,
}

impl Conn {
    /// A connection to `target`; nothing is opened until the first request.
    pub fn new(target: &Target, timeout: Duration) -> Self {
        Self {
            addrs: target.addrs.clone(),
            sender: None,
            timeout,
        }
    }

    /// Sends `req` and reads the whole answer, keeping the body only when
    /// `keep_body`. On any failure the connection is dropped, so the next
    /// request starts on a fresh one.
    pub async fn send(
        &mut self,
        req: Request<Full<Bytes>>,
        keep_body: bool,
    ) -> Result<Answer, ClientError> {
        match tokio::time::timeout(self.timeout, self.exchange(req, keep_body)).await {
            Ok(Ok(answer)) => Ok(answer),
            Ok(Err(e)) => {
                self.sender = None;
                Err(e)
            }
            Err(_) => {
                self.sender = None;
                Err(ClientError::Timeout)
            }
        }
    }

    /// For idempotent requests: like [`Self::send`], but when a reused
    /// connection turns out to have been closed by the server (an idle
    /// keep-alive timeout), retries once on a fresh connection instead of
    /// reporting an error the server never caused.
    pub async fn send_idempotent(
        &mut self,
        make: impl Fn() -> Request<Full<Bytes>>,
        keep_body: bool,
    ) -> Result<Answer, ClientError> {
        let reused = self.sender.is_some();
        match self.send(make(), keep_body).await {
            Err(ClientError::Io) if reused => self.send(make(), keep_body).await,
            other => other,
        }
    }

    async fn exchange(
        &mut self,
        req: Request<Full<Bytes>>,
        keep_body: bool,
    ) -> Result<Answer, ClientError> {
        let sender = self.ready_sender().await?;
        let response = sender
            .send_request(req)
            .await
            .map_err(|_| ClientError::Io)?;
        let (parts, mut body) = response.into_parts();
        let body = if keep_body {
            Some(
                body.collect()
                    .await
                    .map_err(|_| ClientError::Io)?
                    .to_bytes(),
            )
        } else {
            // Drain frame by frame: the bytes are dropped as they arrive.
            while let Some(frame) = body.frame().await {
                frame.map_err(|_| ClientError::Io)?;
            }
            None
        };
        Ok(Answer {
            status: parts.status,
            headers: parts.headers,
            body,
        })
    }

    /// The sender of a live connection, connecting first if needed.
    async fn ready_sender(&mut self) -> Result<&mut SendRequest<Full<Bytes>>, ClientError> {
        if let Some(sender) = self.sender.as_mut()
            && sender.ready().await.is_err()
        {
            self.sender = None;
        }
        if self.sender.is_none() {
            self.sender = Some(connect(&self.addrs).await?);
        }
        self.sender.as_mut().ok_or(ClientError::Connect)
    }
}

/// Opens a TCP connection (Nagle off: requests are small and latency is
/// what we measure) and runs its HTTP/1 state machine on a task of its own.
async fn connect(addrs: &[SocketAddr]) -> Result<SendRequest<Full<Bytes>>, ClientError> {
    let stream = TcpStream::connect(addrs)
        .await
        .map_err(|_| ClientError::Connect)?;
    stream.set_nodelay(true).map_err(|_| ClientError::Connect)?;
    let (sender, connection) = http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|_| ClientError::Connect)?;
    // The task ends when the sender is dropped or the peer closes.
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(sender)
}
