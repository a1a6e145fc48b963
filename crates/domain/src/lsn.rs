//! A Postgres WAL position (`pg_lsn`), as events carry it: a reader uses a
//! replica only once the replica has replayed up to the highest position the
//! reader has seen.

use std::{fmt, str::FromStr};

use serde::{Deserialize, Serialize};

/// A WAL position, compared as the 64-bit number it is. Written as Postgres
/// writes it: two hex halves, `16/B374D848`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Lsn(pub u64);

/// Not of the form `<hex>/<hex>`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a WAL position (expected hex/hex, like 16/B374D848)")]
pub struct InvalidLsn;

impl FromStr for Lsn {
    type Err = InvalidLsn;

    fn from_str(s: &str) -> Result<Self, InvalidLsn> {
        let (high, low) = s.split_once('/').ok_or(InvalidLsn)?;
        let half = |h: &str| {
            if h.is_empty() || h.len() > 8 || !h.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(InvalidLsn);
            }
            u32::from_str_radix(h, 16).map_err(|_| InvalidLsn)
        };
        Ok(Self((u64::from(half(high)?) << 32) | u64::from(half(low)?)))
    }
}

impl fmt::Display for Lsn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:X}/{:X}", self.0 >> 32, self.0 & 0xFFFF_FFFF)
    }
}

impl Serialize for Lsn {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Lsn {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_orders_as_a_number() {
        for text in ["0/0", "0/16B3748", "16/B374D848", "FFFFFFFF/FFFFFFFF"] {
            let lsn: Lsn = text.parse().unwrap();
            assert_eq!(lsn.to_string(), text);
        }
        let a: Lsn = "0/FFFFFFFF".parse().unwrap();
        let b: Lsn = "1/0".parse().unwrap();
        assert!(a < b);
        for bad in ["", "16", "/1", "1/", "g/1", "1/2/3", "123456789/0", " 1/2"] {
            assert!(bad.parse::<Lsn>().is_err(), "{bad:?}");
        }
    }
}
