//! Validated write inputs. Each newtype can only hold a value that obeys the
//! contract, so code past the HTTP boundary never re-checks.
//!
//! Request bodies are parsed from a JSON object member by member (rather than
//! through a derived `Deserialize`) so every failure names its field and says
//! which rule it broke, and unknown members are reported by name.

use serde_json::{Map, Value};

use crate::{Product, ValidationError};

/// Largest accepted price: 10^12 cents.
pub const MAX_PRICE_CENTS: i64 = 1_000_000_000_000;
/// Largest accepted serialized `attributes` object, in bytes.
pub const MAX_ATTRIBUTES_BYTES: usize = 16 * 1024;
/// Largest number of products in one bulk create.
pub const MAX_BULK: usize = 1000;

macro_rules! string_newtype {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash)]
        pub struct $name(String);

        impl $name {
            pub fn as_str(&self) -> &str {
                &self.0
            }

            pub fn into_inner(self) -> String {
                self.0
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }
    };
}

string_newtype!(
    /// 1–64 characters of `[A-Za-z0-9._-]`, unique across the catalog.
    Sku
);
string_newtype!(
    /// 1–200 characters, not blank.
    ProductName
);
string_newtype!(
    /// At most 5000 characters; empty by default.
    #[derive(Default)]
    Description
);
string_newtype!(
    /// 1–64 characters of `[a-z0-9-]`.
    Category
);
string_newtype!(
    /// Three uppercase ASCII letters (ISO 4217 shape).
    Currency
);

impl Sku {
    pub fn parse(s: &str) -> Result<Self, String> {
        let ok = (1..=64).contains(&s.len())
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
        if ok {
            Ok(Self(s.to_owned()))
        } else {
            Err("sku must be 1-64 characters of A-Z, a-z, 0-9, '.', '_' or '-'".into())
        }
    }
}

impl ProductName {
    pub fn parse(s: &str) -> Result<Self, String> {
        let chars = s.chars().count();
        if chars == 0 || chars > 200 {
            Err("name must be 1-200 characters".into())
        } else if s.trim().is_empty() {
            Err("name must not be blank".into())
        } else {
            Ok(Self(s.to_owned()))
        }
    }
}

impl Description {
    pub fn parse(s: &str) -> Result<Self, String> {
        if s.chars().count() > 5000 {
            Err("description must be at most 5000 characters".into())
        } else {
            Ok(Self(s.to_owned()))
        }
    }
}

impl Category {
    pub fn parse(s: &str) -> Result<Self, String> {
        let ok = (1..=64).contains(&s.len())
            && s.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        if ok {
            Ok(Self(s.to_owned()))
        } else {
            Err("category must be 1-64 characters of a-z, 0-9 or '-'".into())
        }
    }
}

impl Currency {
    pub fn parse(s: &str) -> Result<Self, String> {
        if s.len() == 3 && s.bytes().all(|b| b.is_ascii_uppercase()) {
            Ok(Self(s.to_owned()))
        } else {
            Err("currency must be three uppercase ASCII letters".into())
        }
    }
}

/// A price in minor units, 0 ≤ p ≤ 10^12.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct PriceCents(i64);

impl PriceCents {
    pub fn new(cents: i64) -> Result<Self, String> {
        if (0..=MAX_PRICE_CENTS).contains(&cents) {
            Ok(Self(cents))
        } else {
            Err(format!(
                "price_cents must be an integer between 0 and {MAX_PRICE_CENTS}"
            ))
        }
    }

    pub fn get(self) -> i64 {
        self.0
    }
}

/// Units in stock, never negative.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct Stock(i64);

impl Stock {
    pub fn new(units: i64) -> Result<Self, String> {
        if units >= 0 {
            Ok(Self(units))
        } else {
            Err("stock must be an integer >= 0".into())
        }
    }

    pub fn get(self) -> i64 {
        self.0
    }
}

/// Free-form product attributes: a JSON object of at most 16 KiB serialized.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Attributes(Map<String, Value>);

impl Attributes {
    pub fn new(map: Map<String, Value>) -> Result<Self, String> {
        let size = serde_json::to_vec(&map).map_or(usize::MAX, |v| v.len());
        if size > MAX_ATTRIBUTES_BYTES {
            Err(format!(
                "attributes must be at most {MAX_ATTRIBUTES_BYTES} bytes of JSON (got {size})"
            ))
        } else {
            Ok(Self(map))
        }
    }

    pub fn as_map(&self) -> &Map<String, Value> {
        &self.0
    }

    pub fn into_inner(self) -> Map<String, Value> {
        self.0
    }
}

/// A validated product to create.
#[derive(Debug, Clone, PartialEq)]
pub struct NewProduct {
    pub sku: Sku,
    pub name: ProductName,
    pub description: Description,
    pub category: Category,
    pub price_cents: PriceCents,
    pub currency: Currency,
    pub featured: bool,
    pub attributes: Attributes,
    pub stock: Stock,
}

/// Fields a create accepts.
const CREATE_FIELDS: &[&str] = &[
    "sku",
    "name",
    "description",
    "category",
    "price_cents",
    "currency",
    "featured",
    "attributes",
    "stock",
];
/// Fields a patch accepts.
const PATCH_FIELDS: &[&str] = &[
    "name",
    "description",
    "category",
    "price_cents",
    "currency",
    "featured",
    "attributes",
];
/// Fields the server owns; named in the error so a client knows why.
const SERVER_FIELDS: &[&str] = &["id", "version", "created_at", "updated_at"];

fn reject_unknown(body: &Map<String, Value>, allowed: &[&str]) -> Result<(), ValidationError> {
    for key in body.keys() {
        if allowed.contains(&key.as_str()) {
            continue;
        }
        let message = if SERVER_FIELDS.contains(&key.as_str()) {
            format!("{key} is set by the server and cannot be written")
        } else if matches!(key.as_str(), "sku" | "stock") {
            format!(
                "{key} cannot be changed with PATCH{}",
                if key == "stock" {
                    " (use PUT /products/{id}/stock)"
                } else {
                    ""
                }
            )
        } else {
            format!("unknown field {key}")
        };
        return Err(ValidationError::field(key.as_str(), message));
    }
    Ok(())
}

fn as_object(body: &Value) -> Result<&Map<String, Value>, ValidationError> {
    body.as_object()
        .ok_or_else(|| ValidationError::body("request body must be a JSON object"))
}

fn string<'a>(field: &str, v: &'a Value) -> Result<&'a str, ValidationError> {
    v.as_str()
        .ok_or_else(|| ValidationError::field(field, format!("{field} must be a string")))
}

fn integer(field: &str, v: &Value) -> Result<i64, ValidationError> {
    match v {
        Value::Number(n) => n.as_i64().ok_or_else(|| {
            let what = if n.is_f64() {
                "an integer"
            } else {
                "a 64-bit integer"
            };
            ValidationError::field(field, format!("{field} must be {what}"))
        }),
        _ => Err(ValidationError::field(
            field,
            format!("{field} must be an integer"),
        )),
    }
}

fn boolean(field: &str, v: &Value) -> Result<bool, ValidationError> {
    v.as_bool()
        .ok_or_else(|| ValidationError::field(field, format!("{field} must be true or false")))
}

fn object<'a>(field: &str, v: &'a Value) -> Result<&'a Map<String, Value>, ValidationError> {
    v.as_object()
        .ok_or_else(|| ValidationError::field(field, format!("{field} must be a JSON object")))
}

/// Applies a field parser and tags its message with the field name.
fn check<T>(field: &str, r: Result<T, String>) -> Result<T, ValidationError> {
    r.map_err(|m| ValidationError::field(field, m))
}

fn required<'a>(body: &'a Map<String, Value>, field: &str) -> Result<&'a Value, ValidationError> {
    match body.get(field) {
        None | Some(Value::Null) => Err(ValidationError::field(
            field,
            format!("{field} is required"),
        )),
        Some(v) => Ok(v),
    }
}

/// A member that may be absent; `null` means "use the default", as it does in
/// a merge patch.
fn optional<'a>(body: &'a Map<String, Value>, field: &str) -> Option<&'a Value> {
    body.get(field).filter(|v| !v.is_null())
}

impl NewProduct {
    /// Validates one product of a create request.
    pub fn from_json(body: &Value) -> Result<Self, ValidationError> {
        let body = as_object(body)?;
        reject_unknown(body, CREATE_FIELDS)?;
        let sku = check("sku", Sku::parse(string("sku", required(body, "sku")?)?))?;
        let name = check(
            "name",
            ProductName::parse(string("name", required(body, "name")?)?),
        )?;
        let description = match optional(body, "description") {
            Some(v) => check("description", Description::parse(string("description", v)?))?,
            None => Description::default(),
        };
        let category = check(
            "category",
            Category::parse(string("category", required(body, "category")?)?),
        )?;
        let price_cents = check(
            "price_cents",
            PriceCents::new(integer("price_cents", required(body, "price_cents")?)?),
        )?;
        let currency = check(
            "currency",
            Currency::parse(string("currency", required(body, "currency")?)?),
        )?;
        let featured = match optional(body, "featured") {
            Some(v) => boolean("featured", v)?,
            None => false,
        };
        let attributes = match optional(body, "attributes") {
            Some(v) => check(
                "attributes",
                Attributes::new(object("attributes", v)?.clone()),
            )?,
            None => Attributes::default(),
        };
        let stock = match optional(body, "stock") {
            Some(v) => check("stock", Stock::new(integer("stock", v)?))?,
            None => Stock::default(),
        };
        Ok(Self {
            sku,
            name,
            description,
            category,
            price_cents,
            currency,
            featured,
            attributes,
            stock,
        })
    }

    /// Validates a bulk create body `{"products": [...]}` of 1 to 1000
    /// products; a failure names the index, e.g. `products[3].sku`.
    pub fn bulk_from_json(body: &Value) -> Result<Vec<Self>, ValidationError> {
        let body = as_object(body)?;
        reject_unknown(body, &["products"])?;
        let items = required(body, "products")?
            .as_array()
            .ok_or_else(|| ValidationError::field("products", "products must be an array"))?;
        if items.is_empty() || items.len() > MAX_BULK {
            return Err(ValidationError::field(
                "products",
                format!(
                    "products must hold 1 to {MAX_BULK} items (got {})",
                    items.len()
                ),
            ));
        }
        let products = items
            .iter()
            .enumerate()
            .map(|(i, item)| Self::from_json(item).map_err(|e| e.within(&format!("products[{i}]"))))
            .collect::<Result<Vec<_>, _>>()?;
        let mut skus = std::collections::HashSet::with_capacity(products.len());
        for (i, p) in products.iter().enumerate() {
            if !skus.insert(p.sku.as_str()) {
                return Err(ValidationError::field(
                    format!("products[{i}].sku"),
                    format!(
                        "products[{i}]: sku {} appears twice in this request",
                        p.sku.as_str()
                    ),
                ));
            }
        }
        Ok(products)
    }
}

/// A validated JSON merge patch (RFC 7396) of a product's mutable fields.
///
/// `None` leaves a field as it is. `description`, `featured` and `attributes`
/// accept `null`, which resets them to their defaults; the other fields are
/// required and refuse `null`. `attributes` merges recursively as RFC 7396
/// says: a nested `null` removes that key.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ProductPatch {
    pub name: Option<ProductName>,
    pub description: Option<Description>,
    pub category: Option<Category>,
    pub price_cents: Option<PriceCents>,
    pub currency: Option<Currency>,
    pub featured: Option<bool>,
    /// The merge patch document for `attributes`; `Some(Value::Null)` clears.
    pub attributes: Option<Value>,
}

/// A product's mutable fields after a patch was applied: what gets written.
#[derive(Debug, Clone, PartialEq)]
pub struct PatchedFields {
    pub name: ProductName,
    pub description: Description,
    pub category: Category,
    pub price_cents: PriceCents,
    pub currency: Currency,
    pub featured: bool,
    pub attributes: Attributes,
}

impl ProductPatch {
    pub fn from_json(body: &Value) -> Result<Self, ValidationError> {
        let body = as_object(body)?;
        reject_unknown(body, PATCH_FIELDS)?;
        let not_null = |field: &str| -> Result<Option<&Value>, ValidationError> {
            match body.get(field) {
                Some(Value::Null) => Err(ValidationError::field(
                    field,
                    format!("{field} cannot be null"),
                )),
                other => Ok(other),
            }
        };
        let name = not_null("name")?
            .map(|v| check("name", ProductName::parse(string("name", v)?)))
            .transpose()?;
        let category = not_null("category")?
            .map(|v| check("category", Category::parse(string("category", v)?)))
            .transpose()?;
        let price_cents = not_null("price_cents")?
            .map(|v| check("price_cents", PriceCents::new(integer("price_cents", v)?)))
            .transpose()?;
        let currency = not_null("currency")?
            .map(|v| check("currency", Currency::parse(string("currency", v)?)))
            .transpose()?;
        let description = match body.get("description") {
            None => None,
            Some(Value::Null) => Some(Description::default()),
            Some(v) => Some(check(
                "description",
                Description::parse(string("description", v)?),
            )?),
        };
        let featured = match body.get("featured") {
            None => None,
            Some(Value::Null) => Some(false),
            Some(v) => Some(boolean("featured", v)?),
        };
        let attributes = match body.get("attributes") {
            None => None,
            Some(Value::Null) => Some(Value::Null),
            Some(v) => Some(Value::Object(object("attributes", v)?.clone())),
        };
        Ok(Self {
            name,
            description,
            category,
            price_cents,
            currency,
            featured,
            attributes,
        })
    }

    /// Applies the patch to the current product, checking what can only be
    /// checked against it (the merged attributes' size).
    pub fn apply(&self, current: &Product) -> Result<PatchedFields, ValidationError> {
        let attributes = match &self.attributes {
            None => Attributes(current.attributes.clone()),
            Some(patch) => {
                let mut merged = Value::Object(current.attributes.clone());
                merge_patch(&mut merged, patch);
                let map = match merged {
                    Value::Object(map) => map,
                    _ => Map::new(),
                };
                check("attributes", Attributes::new(map))?
            }
        };
        Ok(PatchedFields {
            name: self
                .name
                .clone()
                .unwrap_or_else(|| ProductName(current.name.clone())),
            description: self
                .description
                .clone()
                .unwrap_or_else(|| Description(current.description.clone())),
            category: self
                .category
                .clone()
                .unwrap_or_else(|| Category(current.category.clone())),
            price_cents: self.price_cents.unwrap_or(PriceCents(current.price_cents)),
            currency: self
                .currency
                .clone()
                .unwrap_or_else(|| Currency(current.currency.clone())),
            featured: self.featured.unwrap_or(current.featured),
            attributes,
        })
    }
}

/// RFC 7396 merge: objects merge key by key, `null` removes, anything else
/// replaces.
fn merge_patch(target: &mut Value, patch: &Value) {
    let Value::Object(patch) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    if let Value::Object(target) = target {
        for (key, value) in patch {
            if value.is_null() {
                target.remove(key);
            } else {
                merge_patch(target.entry(key.clone()).or_insert(Value::Null), value);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn valid() -> Value {
        json!({"sku": "LAPTOP-42", "name": "Ultrabook 14", "category": "laptops",
               "price_cents": 99900, "currency": "USD"})
    }

    fn with(field: &str, value: Value) -> Value {
        let mut body = valid();
        body[field] = value;
        body
    }

    fn err_field(body: &Value) -> Option<String> {
        NewProduct::from_json(body).err().and_then(|e| e.field)
    }

    #[test]
    fn accepts_a_minimal_product_with_defaults() {
        let p = NewProduct::from_json(&valid()).unwrap();
        assert_eq!(p.description.as_str(), "");
        assert!(!p.featured);
        assert!(p.attributes.as_map().is_empty());
        assert_eq!(p.stock.get(), 0);
    }

    #[test]
    fn each_rule_names_its_field() {
        let cases = [
            ("sku", json!("")),
            ("sku", json!("a b")),
            ("sku", json!("x".repeat(65))),
            ("sku", json!(12)),
            ("name", json!("")),
            ("name", json!("   ")),
            ("name", json!("n".repeat(201))),
            ("description", json!("d".repeat(5001))),
            ("category", json!("Laptops")),
            ("category", json!("")),
            ("category", json!("c".repeat(65))),
            ("price_cents", json!(-1)),
            ("price_cents", json!(1_000_000_000_001_i64)),
            ("price_cents", json!(1.5)),
            ("price_cents", json!("100")),
            ("currency", json!("usd")),
            ("currency", json!("USDX")),
            ("featured", json!("yes")),
            ("attributes", json!([1, 2])),
            ("attributes", json!({"blob": "x".repeat(17 * 1024)})),
            ("stock", json!(-1)),
            ("bogus", json!(1)),
            ("id", json!(1)),
            ("version", json!(1)),
        ];
        for (field, value) in cases {
            assert_eq!(
                err_field(&with(field, value.clone())).as_deref(),
                Some(field),
                "{field} = {value}"
            );
        }
        for field in ["sku", "name", "category", "price_cents", "currency"] {
            let mut body = valid();
            body.as_object_mut().unwrap().remove(field);
            assert_eq!(err_field(&body).as_deref(), Some(field));
        }
    }

    #[test]
    fn boundaries_are_inclusive() {
        for (field, value) in [
            ("sku", json!("x".repeat(64))),
            ("name", json!("é".repeat(200))),
            ("description", json!("d".repeat(5000))),
            ("category", json!("c".repeat(64))),
            ("price_cents", json!(0)),
            ("price_cents", json!(MAX_PRICE_CENTS)),
            ("stock", json!(0)),
        ] {
            assert!(
                NewProduct::from_json(&with(field, value)).is_ok(),
                "{field}"
            );
        }
    }

    #[test]
    fn bulk_limits_and_indexes_errors() {
        let many = |n: usize| json!({"products": (0..n).map(|i| with("sku", json!(format!("S-{i}")))).collect::<Vec<_>>()});
        assert_eq!(NewProduct::bulk_from_json(&many(1000)).unwrap().len(), 1000);
        assert_eq!(
            NewProduct::bulk_from_json(&many(1001))
                .unwrap_err()
                .field
                .as_deref(),
            Some("products")
        );
        assert!(NewProduct::bulk_from_json(&many(0)).is_err());
        let bad = json!({"products": [valid(), with("price_cents", json!(-5))]});
        assert_eq!(
            NewProduct::bulk_from_json(&bad)
                .unwrap_err()
                .field
                .as_deref(),
            Some("products[1].price_cents")
        );
        let dup = json!({"products": [valid(), valid()]});
        assert_eq!(
            NewProduct::bulk_from_json(&dup)
                .unwrap_err()
                .field
                .as_deref(),
            Some("products[1].sku")
        );
    }

    fn product() -> Product {
        serde_json::from_value(json!({
            "id": 1, "sku": "S", "name": "N", "description": "D", "category": "c",
            "price_cents": 1, "currency": "USD", "featured": true,
            "attributes": {"ram_gb": 16, "ports": {"usb": 2, "hdmi": 1}},
            "version": 1, "created_at": "2026-11-26T09:00:00Z", "updated_at": "2026-11-26T09:00:00Z"
        }))
        .unwrap()
    }

    #[test]
    fn patch_merges_attributes_and_resets_defaults() {
        let patch = ProductPatch::from_json(&json!({
            "description": null, "featured": null,
            "attributes": {"ram_gb": 32, "ports": {"hdmi": null}, "color": "grey"}
        }))
        .unwrap();
        let out = patch.apply(&product()).unwrap();
        assert_eq!(out.description.as_str(), "");
        assert!(!out.featured);
        assert_eq!(
            Value::Object(out.attributes.into_inner()),
            json!({"ram_gb": 32, "ports": {"usb": 2}, "color": "grey"})
        );
        assert_eq!(out.name.as_str(), "N");
    }

    #[test]
    fn patch_refuses_null_required_and_read_only_fields() {
        for (field, value) in [
            ("name", Value::Null),
            ("price_cents", Value::Null),
            ("sku", json!("X")),
            ("stock", json!(1)),
            ("version", json!(3)),
            ("nope", json!(1)),
            ("price_cents", json!(-1)),
        ] {
            let err = ProductPatch::from_json(&json!({ field: value })).unwrap_err();
            assert_eq!(err.field.as_deref(), Some(field));
        }
        assert!(
            ProductPatch::from_json(&json!([]))
                .unwrap_err()
                .field
                .is_none()
        );
    }
}
