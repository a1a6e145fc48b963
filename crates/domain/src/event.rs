//! The change event: what `write-api` publishes after each committed change and
//! what the invalidator and every `read-api` instance consume.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use crate::{Lsn, Product, ProductId, Version};

/// What happened to the product. Serialized as the event `type` and used as
/// the AMQP routing key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
pub enum EventKind {
    #[serde(rename = "product.created")]
    Created,
    #[serde(rename = "product.updated")]
    Updated,
    #[serde(rename = "product.deleted")]
    Deleted,
}

impl EventKind {
    pub const ALL: [EventKind; 3] = [Self::Created, Self::Updated, Self::Deleted];

    /// The routing key on the events exchange; equal to the `type` field.
    pub fn routing_key(self) -> &'static str {
        match self {
            Self::Created => "product.created",
            Self::Updated => "product.updated",
            Self::Deleted => "product.deleted",
        }
    }

    /// A short label for logs and metrics.
    pub fn label(self) -> &'static str {
        match self {
            Self::Created => "created",
            Self::Updated => "updated",
            Self::Deleted => "deleted",
        }
    }
}

/// A committed change, as published on `<namespace>.events`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ChangeEvent {
    /// Unique per event; also the AMQP `message_id`, so consumers can spot
    /// redeliveries (they need not: applying an event is idempotent).
    pub event_id: Uuid,
    #[serde(rename = "type")]
    pub kind: EventKind,
    pub product_id: ProductId,
    /// The committed version. For a delete: the deleted row's last version + 1,
    /// so the delete fences every cached copy of the product.
    pub version: Version,
    pub occurred_at: DateTime<Utc>,
    /// The product's category before and after the change (one entry when it
    /// did not change): every list family the change can touch.
    pub categories: Vec<String>,
    /// Whether the product was featured before or after the change, i.e.
    /// whether the featured list is concerned.
    pub featured: bool,
    /// The full product after the change; `null` for `product.deleted`.
    pub product: Option<Product>,
    /// A WAL position at or after the change's commit (read by the relay
    /// when it publishes): a reader can tell whether a replica has the
    /// change. Absent only from events published before it existed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>, example = "0/16B3748")]
    pub lsn: Option<Lsn>,
}

/// An event whose fields contradict each other; consumers dead-letter it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("inconsistent event: {0}")]
pub struct InvalidEvent(pub &'static str);

impl ChangeEvent {
    /// Builds the event for a created or updated product. `before` is the
    /// product as it was (None for a create).
    pub fn upserted(before: Option<&Product>, after: &Product, occurred_at: DateTime<Utc>) -> Self {
        let mut categories = vec![after.category.clone()];
        if let Some(b) = before.filter(|b| b.category != after.category) {
            categories.insert(0, b.category.clone());
        }
        Self {
            event_id: Uuid::new_v4(),
            kind: if before.is_some() {
                EventKind::Updated
            } else {
                EventKind::Created
            },
            product_id: after.id,
            version: after.version,
            occurred_at,
            categories,
            featured: after.featured || before.is_some_and(|b| b.featured),
            product: Some(after.clone()),
            lsn: None,
        }
    }

    /// Builds the event for a deleted product, fencing at its last version + 1.
    pub fn deleted(last: &Product, occurred_at: DateTime<Utc>) -> Self {
        Self {
            event_id: Uuid::new_v4(),
            kind: EventKind::Deleted,
            product_id: last.id,
            version: last.version.next(),
            occurred_at,
            categories: vec![last.category.clone()],
            featured: last.featured,
            product: None,
            lsn: None,
        }
    }

    /// Parses and checks an event from the wire.
    pub fn from_slice(bytes: &[u8]) -> Result<Self, ParseEventError> {
        let event: Self = serde_json::from_slice(bytes)?;
        event.check()?;
        Ok(event)
    }

    /// Parses a message body: one event (a JSON object) or several (a
    /// non-empty JSON array of them, in commit order), as the relay
    /// publishes them. Every event is checked; one bad event makes the
    /// whole message bad.
    pub fn many_from_slice(bytes: &[u8]) -> Result<Vec<Self>, ParseEventError> {
        let is_batch = bytes
            .iter()
            .find(|b| !b.is_ascii_whitespace())
            .is_some_and(|b| *b == b'[');
        if !is_batch {
            return Self::from_slice(bytes).map(|e| vec![e]);
        }
        let events: Vec<Self> = serde_json::from_slice(bytes)?;
        if events.is_empty() {
            return Err(InvalidEvent("a batch holds at least one event").into());
        }
        for event in &events {
            event.check()?;
        }
        Ok(events)
    }

    /// Checks what the type system cannot: the snapshot agrees with the header.
    pub fn check(&self) -> Result<(), InvalidEvent> {
        if self.version <= Version::ZERO {
            return Err(InvalidEvent("version must be >= 1"));
        }
        if self.categories.is_empty() {
            return Err(InvalidEvent("categories must not be empty"));
        }
        match (&self.kind, &self.product) {
            (EventKind::Deleted, Some(_)) => Err(InvalidEvent("a delete carries no product")),
            (EventKind::Deleted, None) => Ok(()),
            (_, None) => Err(InvalidEvent("a create or update carries the product")),
            (_, Some(p)) if p.id != self.product_id || p.version != self.version => Err(
                InvalidEvent("the product's id and version must match the event's"),
            ),
            (_, Some(_)) => Ok(()),
        }
    }
}

/// Why bytes from the wire are not an event.
#[derive(Debug, thiserror::Error)]
pub enum ParseEventError {
    #[error("malformed event JSON: {0}")]
    Json(#[from] serde_json::Error),
    #[error(transparent)]
    Invalid(#[from] InvalidEvent),
}

#[cfg(test)]
mod tests {
    use super::*;
    fn product(category: &str, featured: bool, version: i64) -> Product {
        crate::fixtures::product(42, version, category, featured)
    }

    #[test]
    fn update_names_both_categories_and_either_featured() {
        let before = product("laptops", true, 1);
        let after = product("tablets", false, 2);
        let e = ChangeEvent::upserted(Some(&before), &after, Utc::now());
        assert_eq!(e.kind, EventKind::Updated);
        assert_eq!(e.categories, ["laptops", "tablets"]);
        assert!(e.featured);
        assert_eq!(e.version, Version(2));
        let same = ChangeEvent::upserted(Some(&after), &after, Utc::now());
        assert_eq!(same.categories, ["tablets"]);
        assert!(!same.featured);
    }

    #[test]
    fn wire_format_matches_the_contract() {
        let e = ChangeEvent::deleted(&product("laptops", false, 7), Utc::now());
        let v = serde_json::to_value(&e).unwrap();
        assert_eq!(v["type"], "product.deleted");
        assert_eq!(v["version"], 8);
        assert_eq!(v["product"], Value::Null);
        let back = ChangeEvent::from_slice(&serde_json::to_vec(&e).unwrap()).unwrap();
        assert_eq!(back, e);
    }

    #[test]
    fn rejects_inconsistent_events() {
        let mut e = ChangeEvent::upserted(None, &product("c", false, 1), Utc::now());
        e.version = Version(5);
        assert!(ChangeEvent::from_slice(&serde_json::to_vec(&e).unwrap()).is_err());
        assert!(ChangeEvent::from_slice(b"{not json").is_err());
        assert!(ChangeEvent::from_slice(br#"{"type":"product.exploded"}"#).is_err());
    }

    #[test]
    fn a_message_holds_one_event_or_a_batch() {
        let a = ChangeEvent::upserted(None, &product("c", false, 1), Utc::now());
        let b = ChangeEvent::deleted(&product("c", false, 1), Utc::now());
        let one = serde_json::to_vec(&a).unwrap();
        assert_eq!(
            ChangeEvent::many_from_slice(&one).unwrap(),
            std::slice::from_ref(&a)
        );
        let two = serde_json::to_vec(&[&a, &b]).unwrap();
        assert_eq!(ChangeEvent::many_from_slice(&two).unwrap(), [a.clone(), b]);
        let spaced = [b" \n".as_slice(), &two].concat();
        assert_eq!(ChangeEvent::many_from_slice(&spaced).unwrap().len(), 2);
        assert!(ChangeEvent::many_from_slice(b"[]").is_err());
        let mut bad = a.clone();
        bad.version = Version(0);
        let mixed = serde_json::to_vec(&[&a, &bad]).unwrap();
        assert!(ChangeEvent::many_from_slice(&mixed).is_err());
        assert!(ChangeEvent::many_from_slice(b"[{\"x\": 1}]").is_err());
    }

    use serde_json::Value;
}
