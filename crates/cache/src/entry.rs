//! A cache entry and the version rules that decide whether a fill or a fence
//! may replace it. These rules are the design's table, word for word (and
//! [`design_table`] holds it as data, for every tier's tests):
//!
//! | key holds        | fill(v) from a read    | fence(v) from an event                   |
//! |------------------|------------------------|------------------------------------------|
//! | nothing          | write value v          | write tombstone v                        |
//! | value u          | write if u < v         | tombstone v if u < v; keep value if u ≥ v|
//! | tombstone t      | write if t ≤ v         | raise to v if t < v                      |
//! | deleted marker d | refuse unless v > d    | raise if d < v                           |
//!
//! plus the "not found" marker at version 0, which any fill or fence of a real
//! version replaces.
//!
//! On the wire (Redis) an entry is `<kind><version>:<payload>`: `V42:{json}`,
//! `T43:`, `D44:`, `N0:`.

use bytes::Bytes;
use domain::Version;

/// What a cache entry says about the product.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum State {
    /// The product's JSON at this version, served as is.
    Value(Bytes),
    /// An invalidation: the committed version is at least this one. Readers
    /// treat it as a miss whose answer must not be older.
    Tombstone,
    /// The product was deleted; its last event carried this version.
    Deleted,
    /// No such product (version 0), cached briefly.
    Absent,
}

/// A versioned cache entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub version: Version,
    pub state: State,
}

/// A Redis value that is not an entry.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed cache entry")]
pub struct Malformed;

impl Entry {
    pub fn value(version: Version, json: Bytes) -> Self {
        Self {
            version,
            state: State::Value(json),
        }
    }

    /// The cached form of a product: its JSON, exactly as every tier serves
    /// it, in an allocation of exactly its size (serde_json grows its buffer
    /// by doubling, and a cache holding 100k products would carry the slack
    /// for their whole life).
    pub fn product(product: &domain::Product) -> Result<Self, serde_json::Error> {
        let mut json = serde_json::to_vec(product)?;
        json.shrink_to_fit();
        Ok(Self::value(product.version, Bytes::from(json)))
    }

    pub fn tombstone(version: Version) -> Self {
        Self {
            version,
            state: State::Tombstone,
        }
    }

    pub fn deleted(version: Version) -> Self {
        Self {
            version,
            state: State::Deleted,
        }
    }

    pub fn absent() -> Self {
        Self {
            version: Version::ZERO,
            state: State::Absent,
        }
    }

    /// The fill column: may a fill of `incoming` (a value, or the absent
    /// marker at version 0) replace this entry?
    pub fn admits_fill(&self, incoming: &Entry) -> bool {
        let v = incoming.version;
        match self.state {
            State::Value(_) => self.version < v,
            State::Tombstone => self.version <= v,
            State::Deleted => v > self.version,
            State::Absent => true,
        }
    }

    /// The fence column: may a fence at `v` replace this entry?
    pub fn admits_fence(&self, v: Version) -> bool {
        match self.state {
            State::Absent => true,
            _ => self.version < v,
        }
    }

    /// The floor a reader learns from this entry: any answer it serves must
    /// be at least this version.
    pub fn floor(&self) -> Version {
        self.version
    }

    fn kind_byte(&self) -> u8 {
        match self.state {
            State::Value(_) => b'V',
            State::Tombstone => b'T',
            State::Deleted => b'D',
            State::Absent => b'N',
        }
    }

    /// The Redis encoding.
    pub fn encode(&self) -> Vec<u8> {
        let payload: &[u8] = match &self.state {
            State::Value(b) => b,
            _ => &[],
        };
        let mut out = Vec::with_capacity(payload.len() + 22);
        out.push(self.kind_byte());
        out.extend_from_slice(self.version.get().to_string().as_bytes());
        out.push(b':');
        out.extend_from_slice(payload);
        out
    }

    /// Parses the Redis encoding; the payload is sliced, not copied.
    pub fn decode(raw: Bytes) -> Result<Self, Malformed> {
        let colon = raw
            .iter()
            .take(22)
            .position(|&b| b == b':')
            .ok_or(Malformed)?;
        if colon < 2 {
            return Err(Malformed);
        }
        let digits = std::str::from_utf8(&raw[1..colon]).map_err(|_| Malformed)?;
        if !digits.bytes().all(|b| b.is_ascii_digit()) {
            return Err(Malformed);
        }
        let version = Version(digits.parse().map_err(|_| Malformed)?);
        let state = match raw[0] {
            b'V' => State::Value(raw.slice(colon + 1..)),
            b'T' => State::Tombstone,
            b'D' => State::Deleted,
            b'N' => State::Absent,
            _ => return Err(Malformed),
        };
        Ok(Self { version, state })
    }
}

/// The design table as data: `(held, v, fill of v admitted?, fence at v
/// admitted?)`, `held = None` for an empty key. Every tier's tests run it:
/// the rules here, L1, and the Lua scripts against a real Redis.
pub fn design_table() -> Vec<(Option<Entry>, i64, bool, bool)> {
    let v = |n| Entry::value(Version(n), Bytes::from_static(b"{}"));
    vec![
        (None, 5, true, true),
        (Some(Entry::absent()), 5, true, true),
        (Some(v(4)), 5, true, true),
        (Some(v(5)), 5, false, false),
        (Some(v(6)), 5, false, false),
        (Some(Entry::tombstone(Version(4))), 5, true, true),
        (Some(Entry::tombstone(Version(5))), 5, true, false),
        (Some(Entry::tombstone(Version(6))), 5, false, false),
        (Some(Entry::deleted(Version(4))), 5, true, true),
        (Some(Entry::deleted(Version(5))), 5, false, false),
        (Some(Entry::deleted(Version(6))), 5, false, false),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_covers_every_state() {
        let mut seen = [false; 4];
        for (held, ..) in design_table() {
            if let Some(held) = held {
                // Exhaustive on purpose: a new state does not compile until
                // the table (and so every tier's test) covers it.
                let i = match held.state {
                    State::Value(_) => 0,
                    State::Tombstone => 1,
                    State::Deleted => 2,
                    State::Absent => 3,
                };
                seen[i] = true;
            }
        }
        assert_eq!(seen, [true; 4]);
    }

    #[test]
    fn rules_follow_the_design_table() {
        for (held, v, fill, fence) in design_table() {
            let Some(held) = held else { continue };
            let incoming = Entry::value(Version(v), Bytes::new());
            assert_eq!(held.admits_fill(&incoming), fill, "fill {v} over {held:?}");
            assert_eq!(
                held.admits_fence(Version(v)),
                fence,
                "fence {v} over {held:?}"
            );
        }
    }

    #[test]
    fn absent_marker_yields_to_everything_real() {
        let absent = Entry::absent();
        for held in [
            Entry::value(Version(1), Bytes::new()),
            Entry::tombstone(Version(1)),
            Entry::deleted(Version(1)),
        ] {
            assert!(!held.admits_fill(&absent), "{held:?}");
        }
        assert!(Entry::absent().admits_fill(&absent));
    }

    #[test]
    fn encoding_round_trips() {
        for e in [
            Entry::value(Version(42), Bytes::from_static(br#"{"id":1,"x":"a:b"}"#)),
            Entry::tombstone(Version(7)),
            Entry::deleted(Version(i64::MAX)),
            Entry::absent(),
        ] {
            assert_eq!(Entry::decode(Bytes::from(e.encode())).unwrap(), e);
        }
        for bad in [&b""[..], b"V", b"V:", b"X1:", b"V-1:", b"Vabc:", b"V1"] {
            assert!(Entry::decode(Bytes::from_static(bad)).is_err(), "{bad:?}");
        }
    }
}
