//! Redis failures, sorted by what the caller should do about them.

use std::fmt;

/// Why Redis could not do what was asked.
#[derive(Debug, Clone, thiserror::Error)]
pub enum CacheError {
    /// Not the request's fault, and usually brief: Redis is unreachable or
    /// slow, restarting, failing over, or refusing writes for now. Readers
    /// skip the cache; the invalidator holds its work and retries, spending
    /// no retry budget.
    #[error("redis is unavailable ({kind})")]
    Unavailable {
        kind: Unavailable,
        /// The client's error, when there was one (not for a deadline or an
        /// open breaker).
        #[source]
        source: Option<redis::RedisError>,
    },
    /// Redis refused this command for its own input (say, WRONGTYPE on the
    /// key): the same input fails again, so it counts against the retries.
    #[error("redis refused the command")]
    Refused(#[source] redis::RedisError),
    /// Redis answered something the scripts never return.
    #[error("unexpected reply from redis: {0}")]
    UnexpectedReply(String),
}

/// The kinds of "not now" (see [`CacheError::Unavailable`]), each exported
/// as a metric label so an operator sees which one is going on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Unavailable {
    /// Connection refused, reset or lost.
    Unreachable,
    /// No answer within the deadline.
    Timeout,
    /// The circuit breaker is open: Redis was not asked.
    CircuitOpen,
    /// LOADING: restarting, reading its data set.
    Loading,
    /// READONLY: a replica (a failover in progress, or a stale address).
    ReadOnly,
    /// MASTERDOWN: a replica that lost its primary.
    MasterDown,
    /// TRYAGAIN: a cluster slot migrating.
    TryAgain,
    /// CLUSTERDOWN: the cluster has no quorum for the slot.
    ClusterDown,
    /// OOM: `maxmemory` reached under `noeviction`; writes refused, reads
    /// still served.
    OutOfMemory,
    /// BUSY: a script or a `DEBUG SLEEP` holds the server.
    Busy,
    /// NOSCRIPT: the script cache was flushed (a restart, `SCRIPT FLUSH`);
    /// cured by loading the scripts again.
    NoScript,
    /// `WAIT` timed out before enough replicas had the writes: the fences
    /// landed on the primary only, and a failover could lose them.
    NotReplicated,
    /// The TLS handshake failed: a configuration to fix (a wrong CA file, a
    /// refused client certificate), not an outage to wait out.
    Tls(tls::Failure),
}

impl Unavailable {
    /// The metric label.
    pub fn label(self) -> &'static str {
        match self {
            Self::Unreachable => "unreachable",
            Self::Timeout => "timeout",
            Self::CircuitOpen => "circuit_open",
            Self::Loading => "loading",
            Self::ReadOnly => "readonly",
            Self::MasterDown => "masterdown",
            Self::TryAgain => "tryagain",
            Self::ClusterDown => "clusterdown",
            Self::OutOfMemory => "oom",
            Self::Busy => "busy",
            Self::NoScript => "noscript",
            Self::NotReplicated => "not_replicated",
            Self::Tls(_) => "tls",
        }
    }

    /// Whether Redis answers but refuses writes: the invalidator is blocked
    /// rather than disconnected.
    pub fn refuses_writes(self) -> bool {
        matches!(
            self,
            Self::Loading
                | Self::ReadOnly
                | Self::MasterDown
                | Self::OutOfMemory
                | Self::Busy
                | Self::NotReplicated
        )
    }
}

impl fmt::Display for Unavailable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            // Logged as the error's own words: they name the key to fix.
            Self::Tls(failure) => f.write_str(failure.reason(tls::Backend::Redis)),
            _ => f.write_str(self.label()),
        }
    }
}

impl CacheError {
    pub fn unavailable(kind: Unavailable) -> Self {
        Self::Unavailable { kind, source: None }
    }

    /// The kind of "not now", if this is one.
    pub fn unavailable_kind(&self) -> Option<Unavailable> {
        match self {
            Self::Unavailable { kind, .. } => Some(*kind),
            _ => None,
        }
    }
}

impl From<redis::RedisError> for CacheError {
    fn from(e: redis::RedisError) -> Self {
        let kind = if let Some(failure) = tls::Failure::of(&e) {
            Some(Unavailable::Tls(failure))
        } else if e.is_timeout() {
            Some(Unavailable::Timeout)
        } else if e.is_io_error() || e.is_connection_dropped() || e.is_connection_refusal() {
            Some(Unavailable::Unreachable)
        } else {
            // Server error codes, as Redis sends them.
            match e.code() {
                Some("LOADING") => Some(Unavailable::Loading),
                Some("READONLY") => Some(Unavailable::ReadOnly),
                Some("MASTERDOWN") => Some(Unavailable::MasterDown),
                Some("TRYAGAIN") => Some(Unavailable::TryAgain),
                Some("CLUSTERDOWN") => Some(Unavailable::ClusterDown),
                Some("OOM") => Some(Unavailable::OutOfMemory),
                Some("BUSY") => Some(Unavailable::Busy),
                Some("NOSCRIPT") => Some(Unavailable::NoScript),
                Some(_) => None,
                None => match e.kind() {
                    // The client found no server to talk to.
                    redis::ErrorKind::ClusterConnectionNotFound
                    | redis::ErrorKind::MasterNameNotFoundBySentinel
                    | redis::ErrorKind::NoValidReplicasFoundBySentinel => {
                        Some(Unavailable::Unreachable)
                    }
                    // A reply of the wrong shape, a bad argument: a bug, and
                    // retrying will not cure it.
                    _ => None,
                },
            }
        };
        match kind {
            Some(kind) => Self::Unavailable {
                kind,
                source: Some(e),
            },
            None => Self::Refused(e),
        }
    }
}
