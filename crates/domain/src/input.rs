//! Validated write inputs. Each newtype can only hold a value that obeys the
//! contract, so code past the HTTP boundary never re-checks.
//!
//! Request bodies are parsed from a JSON object member by member (rather than
//! through a derived `Deserialize`) so every failure names its field and says
//! which rule it broke, and unknown members are reported by name.
//!
//! The limits are constants here, and `crate::schema` builds the OpenAPI
//! schemas of these types from the same constants: the documents say what
//! this module enforces (its tests hold the patterns to the parsers).

use serde_json::{Map, Value};

use crate::{Product, ProductId, ValidationError, Version, text};

/// Longest sku, in characters (all ASCII).
pub const SKU_MAX_LEN: usize = 64;
/// What a sku is made of (the parser checks [`sku_char`]).
pub const SKU_PATTERN: &str = "^[A-Za-z0-9._-]+$";
/// Longest name, in characters.
pub const NAME_MAX_CHARS: usize = 200;
/// Longest description, in characters.
pub const DESCRIPTION_MAX_CHARS: usize = 5000;
/// Longest category, in characters (all ASCII).
pub const CATEGORY_MAX_LEN: usize = 64;
/// What a category is made of (the parser checks [`category_char`]).
pub const CATEGORY_PATTERN: &str = "^[a-z0-9-]+$";
/// Three uppercase ASCII letters.
pub const CURRENCY_PATTERN: &str = "^[A-Z]{3}$";
/// Largest accepted price: 10^12 cents.
pub const MAX_PRICE_CENTS: i64 = 1_000_000_000_000;
/// Largest accepted serialized `attributes` object, in bytes.
pub const MAX_ATTRIBUTES_BYTES: usize = 16 * 1024;
/// Largest number of products in one bulk create or bulk patch.
pub const MAX_BULK: usize = 1000;

/// A character a sku may hold.
pub fn sku_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-')
}

/// A character a category may hold.
pub fn category_char(b: u8) -> bool {
    b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-'
}

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
        let ok = (1..=SKU_MAX_LEN).contains(&s.len()) && s.bytes().all(sku_char);
        if ok {
            Ok(Self(s.to_owned()))
        } else {
            Err(format!(
                "sku must be 1-{SKU_MAX_LEN} characters of A-Z, a-z, 0-9, '.', '_' or '-'"
            ))
        }
    }
}

impl ProductName {
    pub fn parse(s: &str) -> Result<Self, String> {
        text::no_nul("name", s)?;
        let chars = s.chars().count();
        if chars == 0 || chars > NAME_MAX_CHARS {
            Err(format!("name must be 1-{NAME_MAX_CHARS} characters"))
        } else if text::is_blank(s) {
            Err("name must not be blank".into())
        } else {
            Ok(Self(s.to_owned()))
        }
    }
}

impl Description {
    pub fn parse(s: &str) -> Result<Self, String> {
        text::no_nul("description", s)?;
        if s.chars().count() > DESCRIPTION_MAX_CHARS {
            Err(format!(
                "description must be at most {DESCRIPTION_MAX_CHARS} characters"
            ))
        } else {
            Ok(Self(s.to_owned()))
        }
    }
}

impl Category {
    pub fn parse(s: &str) -> Result<Self, String> {
        let ok = (1..=CATEGORY_MAX_LEN).contains(&s.len()) && s.bytes().all(category_char);
        if ok {
            Ok(Self(s.to_owned()))
        } else {
            Err(format!(
                "category must be 1-{CATEGORY_MAX_LEN} characters of a-z, 0-9 or '-'"
            ))
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

/// Free-form product attributes: a JSON object of at most 16 KiB serialized,
/// no NUL in any key or string at any depth.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Attributes(Map<String, Value>);

impl Attributes {
    /// A failure names the member that breaks the rule
    /// (`attributes.ports[2]` for a NUL), or `attributes` for the size.
    pub fn new(map: Map<String, Value>) -> Result<Self, ValidationError> {
        let map = Value::Object(map);
        no_nul_within("attributes", &map)?;
        let size = serde_json::to_vec(&map).map_or(usize::MAX, |v| v.len());
        match map {
            Value::Object(map) if size <= MAX_ATTRIBUTES_BYTES => Ok(Self(map)),
            _ => Err(ValidationError::field(
                "attributes",
                format!(
                    "attributes must be at most {MAX_ATTRIBUTES_BYTES} bytes of JSON (got {size})"
                ),
            )),
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

/// Refuses the first member not in `allowed`, saying why where a client
/// may wonder (a server-owned field; `sku` or `stock` in a patch).
fn reject_unknown(body: &Map<String, Value>, allowed: &[&str]) -> Result<(), ValidationError> {
    let patch = allowed == PATCH_FIELDS;
    for key in body.keys() {
        if allowed.contains(&key.as_str()) {
            continue;
        }
        let message = if SERVER_FIELDS.contains(&key.as_str()) {
            format!("{key} is set by the server and cannot be written")
        } else if patch && matches!(key.as_str(), "sku" | "stock") {
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

/// A string member; no string of any body may hold NUL.
fn string<'a>(field: &str, v: &'a Value) -> Result<&'a str, ValidationError> {
    let s = v
        .as_str()
        .ok_or_else(|| ValidationError::field(field, format!("{field} must be a string")))?;
    check(field, text::no_nul(field, s))?;
    Ok(s)
}

/// Refuses NUL anywhere in a JSON value, keys included, naming where.
fn no_nul_within(field: &str, v: &Value) -> Result<(), ValidationError> {
    match text::find_nul(field, v) {
        None => Ok(()),
        Some(at) => Err(ValidationError::field(
            at.as_str(),
            format!("{at} must not contain a NUL character (\\u0000) in a key or a string"),
        )),
    }
}

/// An integer member. JSON has one number type, and JSON Schema's
/// `integer` is any number without a fractional part, so `100.0` and `1e2`
/// are the integer 100 (a client or a language may write integers so).
fn integer(field: &str, v: &Value) -> Result<i64, ValidationError> {
    // 2^63 as a double: every integral double below it, down to -2^63,
    // converts to i64 exactly.
    const TWO_POW_63: f64 = 9_223_372_036_854_775_808.0;
    match v {
        Value::Number(n) => n
            .as_i64()
            .or_else(|| {
                n.as_f64()
                    .filter(|f| f.fract() == 0.0 && (-TWO_POW_63..TWO_POW_63).contains(f))
                    .map(|f| f as i64)
            })
            .ok_or_else(|| {
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
            Some(v) => Attributes::new(object("attributes", v)?.clone())?,
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
        items
            .iter()
            .enumerate()
            .map(|(i, item)| Self::from_json(item).map_err(|e| e.within(&format!("products[{i}]"))))
            .collect()
    }

    /// The first product of a bulk create whose sku an earlier one already
    /// has, by index. A duplicate sku is a conflict (409), whether the
    /// other product is in the catalog or in the same request: each product
    /// is valid on its own, and which skus exist is state, not shape.
    pub fn first_duplicate_sku(products: &[Self]) -> Option<(usize, &Sku)> {
        let mut skus = std::collections::HashSet::with_capacity(products.len());
        products
            .iter()
            .enumerate()
            .find(|(_, p)| !skus.insert(p.sku.as_str()))
            .map(|(i, p)| (i, &p.sku))
    }
}

/// The body of `PUT /products/{id}/stock`: `{"stock": N}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StockUpdate {
    pub stock: Stock,
}

impl StockUpdate {
    pub fn from_json(body: &Value) -> Result<Self, ValidationError> {
        let body = as_object(body)?;
        reject_unknown(body, &["stock"])?;
        let stock = check(
            "stock",
            Stock::new(integer("stock", required(body, "stock")?)?),
        )?;
        Ok(Self { stock })
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
            Some(v) => {
                let patch = Value::Object(object("attributes", v)?.clone());
                // Checked here, not only after the merge: a NUL in a key
                // the patch removes would otherwise go unnoticed.
                no_nul_within("attributes", &patch)?;
                Some(patch)
            }
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
                Attributes::new(map)?
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

/// One change of a bulk patch: which product, on which version, what
/// change.
#[derive(Debug, Clone, PartialEq)]
pub struct BulkPatchItem {
    pub id: ProductId,
    /// `None` (absent or `null`): no version condition.
    pub if_match: Option<Version>,
    pub patch: ProductPatch,
}

impl BulkPatchItem {
    /// Validates a bulk patch body `{"items": [{"id", "if_match", "patch"},
    /// ...]}` of 1 to 1000 items. Errors name the item:
    /// `items[3].patch.price_cents`.
    pub fn bulk_from_json(body: &Value) -> Result<Vec<Self>, ValidationError> {
        let body = as_object(body)?;
        reject_unknown(body, &["items"])?;
        let items = required(body, "items")?
            .as_array()
            .ok_or_else(|| ValidationError::field("items", "items must be an array"))?;
        if items.is_empty() || items.len() > MAX_BULK {
            return Err(ValidationError::field(
                "items",
                format!(
                    "items must hold 1 to {MAX_BULK} items (got {})",
                    items.len()
                ),
            ));
        }
        items
            .iter()
            .enumerate()
            .map(|(i, item)| Self::from_json(item).map_err(|e| e.within(&format!("items[{i}]"))))
            .collect()
    }

    /// The first item naming a product an earlier item already names, by
    /// index. Which of two patches of one product should win is not a
    /// question a caller should leave to us: a conflict (409), as a sku
    /// given twice in a bulk create is; each item is valid on its own.
    pub fn first_duplicate_id(items: &[Self]) -> Option<(usize, ProductId)> {
        let mut ids = std::collections::HashSet::with_capacity(items.len());
        items
            .iter()
            .enumerate()
            .find(|(_, item)| !ids.insert(item.id))
            .map(|(i, item)| (i, item.id))
    }

    fn from_json(item: &Value) -> Result<Self, ValidationError> {
        let item = as_object(item)
            .map_err(|_| ValidationError::body("each item must be a JSON object"))?;
        reject_unknown(item, &["id", "if_match", "patch"])?;
        let id = check(
            "id",
            ProductId::new(integer("id", required(item, "id")?)?)
                .map_err(|_| "id must be a positive 64-bit integer".to_owned()),
        )?;
        let if_match = optional(item, "if_match")
            .map(|v| {
                let v = integer("if_match", v)?;
                if v < 0 {
                    return Err(ValidationError::field(
                        "if_match",
                        "if_match must be a version, an integer >= 0",
                    ));
                }
                Ok(Version(v))
            })
            .transpose()?;
        let patch =
            ProductPatch::from_json(required(item, "patch")?).map_err(|e| e.within("patch"))?;
        Ok(Self {
            id,
            if_match,
            patch,
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
        let dup = json!({"products": [valid(), with("sku", json!("OTHER")), valid()]});
        let products = NewProduct::bulk_from_json(&dup).unwrap();
        let (index, sku) = NewProduct::first_duplicate_sku(&products).unwrap();
        assert_eq!((index, sku.as_str()), (2, "LAPTOP-42"));
        assert!(NewProduct::first_duplicate_sku(&products[..2]).is_none());
    }

    #[test]
    fn bulk_patch_items_are_checked_one_by_one_and_named() {
        let item = |id: i64| json!({"id": id, "if_match": 3, "patch": {"price_cents": 100}});
        let body = |items: Vec<Value>| json!({ "items": items });
        let parsed = BulkPatchItem::bulk_from_json(&body(vec![
            item(7),
            json!({"id": 8, "patch": {"featured": null}}),
        ]))
        .unwrap();
        assert_eq!(parsed[0].id.get(), 7);
        assert_eq!(parsed[0].if_match, Some(Version(3)));
        assert_eq!(parsed[0].patch.price_cents.map(PriceCents::get), Some(100));
        assert_eq!(parsed[1].if_match, None);
        assert_eq!(parsed[1].patch.featured, Some(false));
        assert_eq!(
            BulkPatchItem::bulk_from_json(&body((1..=1000).map(item).collect()))
                .unwrap()
                .len(),
            1000
        );
        let field = |b: Value| BulkPatchItem::bulk_from_json(&b).unwrap_err().field;
        for (bad, named) in [
            (body((1..=1001).map(item).collect()), "items"),
            (body(vec![]), "items"),
            (json!({"items": {}}), "items"),
            (json!({}), "items"),
            (json!({"items": [item(1)], "x": 1}), "x"),
            (body(vec![item(1), json!(5)]), "items[1]"),
            (body(vec![json!({"id": 0, "patch": {}})]), "items[0].id"),
            (body(vec![json!({"id": "1", "patch": {}})]), "items[0].id"),
            (body(vec![json!({"patch": {}})]), "items[0].id"),
            (body(vec![json!({"id": 1})]), "items[0].patch"),
            (body(vec![json!({"id": 1, "patch": [] })]), "items[0].patch"),
            (
                body(vec![json!({"id": 1, "if_match": -1, "patch": {}})]),
                "items[0].if_match",
            ),
            (
                body(vec![json!({"id": 1, "if_match": "\"3\"", "patch": {}})]),
                "items[0].if_match",
            ),
            (
                body(vec![json!({"id": 1, "patch": {}, "sku": "X"})]),
                "items[0].sku",
            ),
            (
                body(vec![
                    item(1),
                    json!({"id": 2, "patch": {"price_cents": -1}}),
                ]),
                "items[1].patch.price_cents",
            ),
            (
                body(vec![json!({"id": 2, "patch": {"sku": "X"}})]),
                "items[0].patch.sku",
            ),
        ] {
            assert_eq!(field(bad.clone()).as_deref(), Some(named), "{bad}");
        }
        let twice = BulkPatchItem::bulk_from_json(&body(vec![item(1), item(2), item(1)])).unwrap();
        assert_eq!(
            BulkPatchItem::first_duplicate_id(&twice).map(|(i, id)| (i, id.get())),
            Some((2, 1))
        );
        assert_eq!(BulkPatchItem::first_duplicate_id(&twice[..2]), None);
    }

    #[test]
    fn no_string_holds_nul_and_the_error_says_where() {
        for (body, field) in [
            (with("name", json!("a\u{0}b")), "name"),
            (with("sku", json!("A\u{0}")), "sku"),
            (with("description", json!("\u{0}")), "description"),
            (with("category", json!("c\u{0}")), "category"),
            (with("currency", json!("US\u{0}")), "currency"),
            (
                with("attributes", json!({"ports": [1, {"usb": "a\u{0}"}]})),
                "attributes.ports[1].usb",
            ),
            (with("attributes", json!({"k\u{0}": 1})), "attributes"),
            (
                with("attributes", json!({"outer": {"k\u{0}": true}})),
                "attributes.outer",
            ),
        ] {
            let err = NewProduct::from_json(&body).unwrap_err();
            assert_eq!(err.field.as_deref(), Some(field), "{body}");
            assert!(err.message.contains("NUL"), "{}", err.message);
        }
        for patch in [
            json!({"name": "x\u{0}"}),
            json!({"description": "\u{0}"}),
            // Even in a key the patch removes.
            json!({"attributes": {"gone\u{0}": null}}),
        ] {
            let err = ProductPatch::from_json(&patch).unwrap_err();
            assert!(err.message.contains("NUL"), "{patch}: {}", err.message);
        }
    }

    #[test]
    fn integers_may_be_written_as_integral_numbers() {
        for (written, cents) in [(json!(100.0), 100), (json!(1e2), 100), (json!(0.0), 0)] {
            let p = NewProduct::from_json(&with("price_cents", written)).unwrap();
            assert_eq!(p.price_cents.get(), cents);
        }
        for bad in [json!(100.5), json!(1e300), json!(-0.5)] {
            assert_eq!(
                err_field(&with("price_cents", bad.clone())).as_deref(),
                Some("price_cents"),
                "{bad}"
            );
        }
        let stock = |v: Value| StockUpdate::from_json(&json!({ "stock": v }));
        assert_eq!(
            stock(json!(9.0e18)).unwrap().stock.get(),
            9_000_000_000_000_000_000
        );
        assert!(stock(json!(9.3e18)).is_err(), "beyond i64");
        assert!(stock(json!(u64::MAX)).is_err(), "beyond i64");
    }

    #[test]
    fn stock_bodies() {
        assert_eq!(
            StockUpdate::from_json(&json!({"stock": i64::MAX}))
                .unwrap()
                .stock
                .get(),
            i64::MAX
        );
        for (body, field) in [
            (json!({"stock": -1}), Some("stock")),
            (json!({"stock": null}), Some("stock")),
            (json!({"stock": 1, "sku": "x"}), Some("sku")),
            (json!({}), Some("stock")),
            (json!([]), None),
        ] {
            let err = StockUpdate::from_json(&body).unwrap_err();
            assert_eq!(err.field.as_deref(), field, "{body}");
            assert!(!err.message.contains("PATCH"), "{}", err.message);
        }
    }

    fn product() -> Product {
        let mut p = crate::fixtures::product(1, 1, "c", true);
        p.description = "D".into();
        p.attributes = json!({"ram_gb": 16, "ports": {"usb": 2, "hdmi": 1}})
            .as_object()
            .unwrap()
            .clone();
        p
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
        assert_eq!(out.name.as_str(), "Thing", "untouched fields stay");
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
