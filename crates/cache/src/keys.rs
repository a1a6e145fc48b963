//! The Redis key schema. Every key starts with the namespace; the part in
//! braces is the Redis Cluster hash tag, so each script touches one slot.
//!
//! - `<ns>:p:{<id>}`: a product entry (see [`crate::entry`]).
//! - `<ns>:g:{<family>}`: a list family's generation: a random token and the
//!   WAL position of the change that made it, `<token>:<lsn>` (16 hex digits
//!   each, so positions compare as strings).
//! - `<ns>:l:{<family>}:<page>`: a cached page of that family, stored with
//!   the generation it was filled under; same tag as its generation, so both
//!   are read with one MGET.
//! - `<ns>:{<ns>:trending}:h:<hour>` and `...:top`: view counts per hour
//!   bucket and their 24-hour union.

use domain::ProductId;

/// A family of cached lists invalidated together by one generation bump.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Family {
    /// `GET /products?category=C` pages.
    Category(String),
    /// `GET /products` pages without a category.
    All,
    /// `GET /products/featured`.
    Featured,
    /// `GET /products/search`.
    Search,
}

impl Family {
    fn tag(&self) -> String {
        match self {
            Self::Category(c) => format!("c:{c}"),
            Self::All => "all".to_owned(),
            Self::Featured => "featured".to_owned(),
            Self::Search => "search".to_owned(),
        }
    }

    /// The families a product change touches: its categories (before and
    /// after), the unfiltered list, search, and featured when concerned.
    pub fn touched_by(event: &domain::ChangeEvent) -> Vec<Family> {
        let mut families: Vec<Family> = event
            .categories
            .iter()
            .map(|c| Family::Category(c.clone()))
            .collect();
        families.push(Family::All);
        families.push(Family::Search);
        if event.featured {
            families.push(Family::Featured);
        }
        families
    }
}

/// A generation bump: the family, and the WAL position of the newest change
/// that moved it. A page read from data older than that position (a lagging
/// replica) is never stored under the new generation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bump {
    pub family: Family,
    pub lsn: domain::Lsn,
}

/// The WAL position a generation (`<token>:<lsn>`) was made at.
pub fn generation_lsn(generation: &str) -> Option<domain::Lsn> {
    let (_, hex) = generation.rsplit_once(':')?;
    u64::from_str_radix(hex, 16).ok().map(domain::Lsn)
}

/// Key builder for one namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Keys {
    ns: String,
}

impl Keys {
    pub fn new(namespace: &str) -> Self {
        Self {
            ns: namespace.to_owned(),
        }
    }

    pub fn product(&self, id: ProductId) -> String {
        format!("{}:p:{{{id}}}", self.ns)
    }

    /// The pattern matching every product key (for the auditor's SCAN).
    pub fn product_pattern(&self) -> String {
        format!("{}:p:*", self.ns)
    }

    /// Parses the id back out of a product key.
    pub fn product_id(&self, key: &str) -> Option<ProductId> {
        key.strip_prefix(&self.ns)?
            .strip_prefix(":p:{")?
            .strip_suffix('}')?
            .parse()
            .ok()
    }

    pub fn generation(&self, family: &Family) -> String {
        format!("{}:g:{{{}}}", self.ns, family.tag())
    }

    /// A page of a family; `page` identifies it within the family (limit,
    /// cursor, query...).
    pub fn list(&self, family: &Family, page: &str) -> String {
        format!("{}:l:{{{}}}:{page}", self.ns, family.tag())
    }

    pub fn trending_bucket(&self, hour: i64) -> String {
        format!("{}:{{{}:trending}}:h:{hour}", self.ns, self.ns)
    }

    pub fn trending_top(&self) -> String {
        format!("{}:{{{}:trending}}:top", self.ns, self.ns)
    }

    pub fn trending_lock(&self) -> String {
        format!("{}:{{{}:trending}}:lock", self.ns, self.ns)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn product_keys_round_trip_and_carry_a_hash_tag() {
        let k = Keys::new("catalog");
        let id = ProductId::new(42).unwrap();
        assert_eq!(k.product(id), "catalog:p:{42}");
        assert_eq!(k.product_id("catalog:p:{42}"), Some(id));
        assert_eq!(k.product_id("other:p:{42}"), None);
        assert_eq!(k.product_id("catalog:p:{x}"), None);
    }

    #[test]
    fn a_page_shares_its_generation_slot() {
        let k = Keys::new("ns");
        let f = Family::Category("laptops".into());
        let tag = |key: &str| key[key.find('{').unwrap()..=key.find('}').unwrap()].to_owned();
        assert_eq!(tag(&k.generation(&f)), tag(&k.list(&f, "a0:l20")));
        assert_eq!(tag(&k.trending_bucket(1)), tag(&k.trending_top()));
    }
}
