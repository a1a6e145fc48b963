//! The OpenAPI schemas of everything a client sends, built from the constants
//! the parsers check (`input`, `params`, `text`), so a limit changed in one
//! place changes the documents too. The tests below hold every pattern to
//! its parser, and scripts/fuzz.sh holds both services to their documents.
//!
//! What JSON Schema cannot say is left to the descriptions: the 16 KiB
//! bound on `attributes` (a size of its serialization) and the 1 MiB bound
//! on a body. Unique skus are state, like an sku already taken: a conflict
//! (409), not a shape.

use utoipa::{
    PartialSchema, ToSchema,
    openapi::{
        KnownFormat, Ref, RefOr, Schema, SchemaFormat,
        schema::{AnyOfBuilder, ArrayBuilder, ObjectBuilder, SchemaType, Type},
    },
};

use crate::{
    Attributes, Category, Currency, Description, NewProduct, PriceCents, ProductId, ProductName,
    ProductPatch, Sku, Stock, StockUpdate,
    input::{
        CATEGORY_MAX_LEN, CATEGORY_PATTERN, CURRENCY_PATTERN, DESCRIPTION_MAX_CHARS,
        MAX_ATTRIBUTES_BYTES, MAX_BULK, MAX_PRICE_CENTS, NAME_MAX_CHARS, SKU_MAX_LEN, SKU_PATTERN,
    },
    params::{
        DEFAULT_PAGE_LIMIT, IfMatch, MAX_PAGE_LIMIT, MinVersion, PageAfter, PageLimit,
        SEARCH_MAX_CHARS, SearchText,
    },
    text::{NO_NUL_PATTERN, not_blank_pattern},
};

fn string(description: &str) -> ObjectBuilder {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .description(Some(description))
}

fn int64(description: &str, min: i64, max: i64) -> ObjectBuilder {
    ObjectBuilder::new()
        .schema_type(Type::Integer)
        .format(Some(SchemaFormat::KnownFormat(KnownFormat::Int64)))
        .minimum(Some(min))
        .maximum(Some(max))
        .description(Some(description))
}

/// The same schema, also accepting `null` (a member whose `null` means "the
/// default").
fn or_null(schema: ObjectBuilder, ty: Type) -> ObjectBuilder {
    schema.schema_type(SchemaType::Array(vec![ty, Type::Null]))
}

fn reference<T: ToSchema>() -> Ref {
    Ref::from_schema_name(T::name())
}

macro_rules! schema {
    ($ty:ty, $builder:expr) => {
        impl PartialSchema for $ty {
            fn schema() -> RefOr<Schema> {
                $builder.into()
            }
        }
        impl ToSchema for $ty {}
    };
}

fn sku() -> ObjectBuilder {
    string("Letters, digits, '.', '_' and '-'; unique in the catalog.")
        .min_length(Some(1))
        .max_length(Some(SKU_MAX_LEN))
        .pattern(Some(SKU_PATTERN))
        .examples(["LAPTOP-42"])
}

fn name() -> ObjectBuilder {
    string("Not blank (white space alone is refused).")
        .min_length(Some(1))
        .max_length(Some(NAME_MAX_CHARS))
        .pattern(Some(not_blank_pattern()))
        .examples(["Ultrabook 14"])
}

fn description() -> ObjectBuilder {
    string("Free text, empty by default.")
        .max_length(Some(DESCRIPTION_MAX_CHARS))
        .pattern(Some(NO_NUL_PATTERN))
}

fn category() -> ObjectBuilder {
    string("A slug: lowercase letters, digits and '-'.")
        .min_length(Some(1))
        .max_length(Some(CATEGORY_MAX_LEN))
        .pattern(Some(CATEGORY_PATTERN))
        .examples(["laptops"])
}

fn currency() -> ObjectBuilder {
    string("Three uppercase letters (ISO 4217 shape).")
        .min_length(Some(3))
        .max_length(Some(3))
        .pattern(Some(CURRENCY_PATTERN))
        .examples(["USD"])
}

fn price_cents() -> ObjectBuilder {
    int64("The price in minor units.", 0, MAX_PRICE_CENTS).examples([99900])
}

fn stock() -> ObjectBuilder {
    int64("Units in stock.", 0, i64::MAX).examples([7])
}

fn attributes() -> ObjectBuilder {
    ObjectBuilder::new()
        .schema_type(Type::Object)
        .description(Some(format!(
            "A JSON object of at most {MAX_ATTRIBUTES_BYTES} bytes serialized; no NUL in any \
             key or string."
        )))
        .property_names(Some(string("A key.").pattern(Some(NO_NUL_PATTERN))))
        .additional_properties(Some(reference::<AttributeValue>()))
        .examples([serde_json::json!({"ram_gb": 16})])
}

schema!(Sku, sku());
schema!(ProductName, name());
schema!(Description, description());
schema!(Category, category());
schema!(Currency, currency());
schema!(PriceCents, price_cents());
schema!(Stock, stock());

/// Any JSON value whose strings and keys hold no NUL, at any depth: a value
/// inside `attributes` (recursive, hence a component of its own).
#[derive(Debug)]
pub enum AttributeValue {}

impl PartialSchema for AttributeValue {
    fn schema() -> RefOr<Schema> {
        let any = reference::<AttributeValue>();
        AnyOfBuilder::new()
            .description(Some("Any JSON value without NUL in a key or a string."))
            .item(ObjectBuilder::new().schema_type(Type::Null))
            .item(ObjectBuilder::new().schema_type(Type::Boolean))
            .item(ObjectBuilder::new().schema_type(Type::Number))
            .item(
                ObjectBuilder::new()
                    .schema_type(Type::String)
                    .pattern(Some(NO_NUL_PATTERN)),
            )
            .item(ArrayBuilder::new().items(any.clone()))
            .item(
                ObjectBuilder::new()
                    .schema_type(Type::Object)
                    .property_names(Some(
                        ObjectBuilder::new()
                            .schema_type(Type::String)
                            .pattern(Some(NO_NUL_PATTERN)),
                    ))
                    .additional_properties(Some(any)),
            )
            .into()
    }
}

impl ToSchema for AttributeValue {}

impl PartialSchema for Attributes {
    fn schema() -> RefOr<Schema> {
        attributes().into()
    }
}

impl ToSchema for Attributes {
    fn schemas(schemas: &mut Vec<(String, RefOr<Schema>)>) {
        schemas.push((AttributeValue::name().into(), AttributeValue::schema()));
    }
}

/// The components every body below refers to.
fn field_schemas(schemas: &mut Vec<(String, RefOr<Schema>)>) {
    schemas.extend([
        (Sku::name().into(), Sku::schema()),
        (ProductName::name().into(), ProductName::schema()),
        (Category::name().into(), Category::schema()),
        (Currency::name().into(), Currency::schema()),
        (PriceCents::name().into(), PriceCents::schema()),
        (Stock::name().into(), Stock::schema()),
        (AttributeValue::name().into(), AttributeValue::schema()),
    ]);
}

/// A closed object: unknown members are refused (422 naming them).
fn closed() -> ObjectBuilder {
    ObjectBuilder::new()
        .schema_type(Type::Object)
        .additional_properties(Some(false_schema()))
}

fn false_schema() -> utoipa::openapi::schema::AdditionalProperties<Schema> {
    utoipa::openapi::schema::AdditionalProperties::FreeForm(false)
}

impl PartialSchema for NewProduct {
    fn schema() -> RefOr<Schema> {
        closed()
            .description(Some(
                "A product to create. `null` for an optional member means its default; \
                 `id`, `version` and the timestamps are the server's (422 if sent).",
            ))
            .property("sku", reference::<Sku>())
            .property("name", reference::<ProductName>())
            .property(
                "description",
                or_null(description(), Type::String).default(Some("".into())),
            )
            .property("category", reference::<Category>())
            .property("price_cents", reference::<PriceCents>())
            .property("currency", reference::<Currency>())
            .property(
                "featured",
                ObjectBuilder::new()
                    .schema_type(SchemaType::Array(vec![Type::Boolean, Type::Null]))
                    .default(Some(false.into())),
            )
            .property(
                "attributes",
                or_null(attributes(), Type::Object).default(Some(serde_json::json!({}))),
            )
            .property(
                "stock",
                or_null(stock(), Type::Integer).default(Some(0.into())),
            )
            .required("sku")
            .required("name")
            .required("category")
            .required("price_cents")
            .required("currency")
            .into()
    }
}

impl ToSchema for NewProduct {
    fn schemas(schemas: &mut Vec<(String, RefOr<Schema>)>) {
        field_schemas(schemas);
    }
}

/// The body of a bulk create, `{"products": [...]}` (parsed by
/// [`NewProduct::bulk_from_json`]).
#[derive(Debug)]
pub enum BulkCreate {}

impl PartialSchema for BulkCreate {
    fn schema() -> RefOr<Schema> {
        closed()
            .description(Some(
                "Products created all or nothing. A sku given twice, or one already taken, \
                 is a conflict (409).",
            ))
            .property(
                "products",
                ArrayBuilder::new()
                    .items(reference::<NewProduct>())
                    .min_items(Some(1))
                    .max_items(Some(MAX_BULK)),
            )
            .required("products")
            .into()
    }
}

impl ToSchema for BulkCreate {
    fn schemas(schemas: &mut Vec<(String, RefOr<Schema>)>) {
        schemas.push((NewProduct::name().into(), NewProduct::schema()));
        field_schemas(schemas);
    }
}

impl PartialSchema for ProductPatch {
    fn schema() -> RefOr<Schema> {
        closed()
            .description(Some(
                "A JSON merge patch (RFC 7396). `null` resets `description`, `featured` and \
                 `attributes` to their defaults; inside `attributes`, `null` removes a key. \
                 `sku` and `stock` cannot be patched (422 naming them).",
            ))
            .property("name", reference::<ProductName>())
            .property("description", or_null(description(), Type::String))
            .property("category", reference::<Category>())
            .property("price_cents", reference::<PriceCents>())
            .property("currency", reference::<Currency>())
            .property(
                "featured",
                ObjectBuilder::new()
                    .schema_type(SchemaType::Array(vec![Type::Boolean, Type::Null])),
            )
            .property("attributes", or_null(attributes(), Type::Object))
            .into()
    }
}

impl ToSchema for ProductPatch {
    fn schemas(schemas: &mut Vec<(String, RefOr<Schema>)>) {
        field_schemas(schemas);
    }
}

/// The body of a bulk patch, `{"items": [{"id", "if_match", "patch"}, ...]}`
/// (parsed by [`crate::BulkPatchItem::bulk_from_json`]).
#[derive(Debug)]
pub enum BulkPatch {}

impl PartialSchema for BulkPatch {
    fn schema() -> RefOr<Schema> {
        let item = closed()
            .property("id", reference::<ProductId>())
            .property(
                "if_match",
                or_null(
                    int64(
                        "The version the product must have; absent or null: no condition.",
                        0,
                        i64::MAX,
                    ),
                    Type::Integer,
                ),
            )
            .property("patch", reference::<ProductPatch>())
            .required("id")
            .required("patch");
        closed()
            .description(Some(
                "Patches applied all or nothing, in one transaction. Each product at most \
                 once (a conflict, 409, naming the second). The first item whose if_match is not the \
                 current version fails the whole request (412), as does the first unknown \
                 id (404).",
            ))
            .property(
                "items",
                ArrayBuilder::new()
                    .items(item)
                    .min_items(Some(1))
                    .max_items(Some(MAX_BULK)),
            )
            .required("items")
            .into()
    }
}

impl ToSchema for BulkPatch {
    fn schemas(schemas: &mut Vec<(String, RefOr<Schema>)>) {
        schemas.push((ProductId::name().into(), ProductId::schema()));
        schemas.push((ProductPatch::name().into(), ProductPatch::schema()));
        field_schemas(schemas);
    }
}

impl PartialSchema for StockUpdate {
    fn schema() -> RefOr<Schema> {
        closed()
            .description(Some("New stock on hand."))
            .property("stock", reference::<Stock>())
            .required("stock")
            .into()
    }
}

impl ToSchema for StockUpdate {
    fn schemas(schemas: &mut Vec<(String, RefOr<Schema>)>) {
        schemas.push((Stock::name().into(), Stock::schema()));
    }
}

schema!(
    ProductId,
    int64("A product id.", 1, i64::MAX).examples([42])
);
schema!(
    PageLimit,
    int64("Items per page.", 1, MAX_PAGE_LIMIT).default(Some(DEFAULT_PAGE_LIMIT.into()))
);
schema!(
    PageAfter,
    int64(
        "The previous page's `next_after`; 0 or absent starts at the first page.",
        0,
        i64::MAX
    )
);
schema!(
    MinVersion,
    int64(
        "Never answer with an older version if Postgres has this one (read-your-writes).",
        1,
        i64::MAX
    )
);
schema!(
    SearchText,
    string(
        "Web-search syntax: \"a phrase\", -excluded, or. Not blank (white space alone is refused)."
    )
    .min_length(Some(1))
    .max_length(Some(SEARCH_MAX_CHARS))
    .pattern(Some(not_blank_pattern()))
);
/// `*`, or a quoted version. Two alternatives rather than one pattern:
/// a fuzzer can then draw `*` from the enum even where it only draws
/// letters and digits from patterns (as schemathesis does for headers).
impl PartialSchema for IfMatch {
    fn schema() -> RefOr<Schema> {
        AnyOfBuilder::new()
            .schema_type(Type::String)
            .description(Some(
                "`*`, or the quoted version of the product's `ETag`, e.g. \"3\".",
            ))
            .examples(["\"3\""])
            .item(
                ObjectBuilder::new()
                    .schema_type(Type::String)
                    .enum_values(Some(["*"])),
            )
            .item(
                ObjectBuilder::new()
                    .schema_type(Type::String)
                    .pattern(Some(IfMatch::version_pattern())),
            )
            .into()
    }
}

impl ToSchema for IfMatch {}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::text::{WHITESPACE, decimal_at_most};
    use regex_lite::Regex;

    /// Every code point, and a few strings that each pattern must judge as
    /// its parser does (all within the length bounds, which are
    /// `minLength` and `maxLength`, checked below).
    fn agree(pattern: &str, parse: impl Fn(&str) -> bool, extra: &[String]) {
        let re = Regex::new(pattern).unwrap();
        let singles = (0..=0x10_ffff_u32)
            .filter_map(char::from_u32)
            .map(String::from);
        for s in singles.chain(extra.iter().cloned()) {
            assert_eq!(re.is_match(&s), parse(&s), "{pattern} on {s:?}");
        }
    }

    fn pattern_of<T: PartialSchema>() -> String {
        let json = serde_json::to_value(T::schema()).unwrap();
        json["pattern"].as_str().unwrap().to_owned()
    }

    #[test]
    fn patterns_say_what_the_parsers_accept() {
        let long = |c: &str, n: usize| c.repeat(n);
        agree(
            &pattern_of::<Sku>(),
            |s| Sku::parse(s).is_ok(),
            &[long("A", 64), "a.b_c-D9".into(), "a b".into(), "a\n".into()],
        );
        agree(
            &pattern_of::<Category>(),
            |s| Category::parse(s).is_ok(),
            &[long("c", 64), "a-1".into(), "A".into(), "c\n".into()],
        );
        agree(
            &pattern_of::<Currency>(),
            |s| Currency::parse(s).is_ok(),
            &["USD".into(), "usd".into(), "USDX".into(), "US".into()],
        );
        let mut blanks: Vec<String> = WHITESPACE
            .iter()
            .flat_map(|&(lo, hi)| [format!("{lo}{hi}x{lo}"), format!("{lo}{hi}")])
            .collect();
        blanks.extend([" a\0".into(), "\u{feff}".into(), "\u{85}\u{85}".into()]);
        agree(
            &pattern_of::<ProductName>(),
            |s| ProductName::parse(s).is_ok(),
            &blanks,
        );
        agree(
            &pattern_of::<SearchText>(),
            |s| SearchText::parse(s).is_ok(),
            &blanks,
        );
        agree(
            &pattern_of::<Description>(),
            |s| Description::parse(s).is_ok(),
            &["a\0b".into(), "\n".into()],
        );
    }

    #[test]
    fn decimal_patterns_stop_at_their_maximum() {
        for max in [0, 1, 9, 10, 19, 100, 305, 1000, i64::MAX.unsigned_abs()] {
            let re = Regex::new(&format!("^{}$", decimal_at_most(max))).unwrap();
            let mut probes: Vec<u64> = (0..=1100).collect();
            probes.extend([max.saturating_sub(1), max, max.saturating_add(1)]);
            for p in probes {
                assert_eq!(re.is_match(&p.to_string()), p <= max, "{p} vs {max}");
            }
            assert!(re.is_match(&format!("000{max}")), "leading zeros");
            assert!(!re.is_match("") && !re.is_match("-1") && !re.is_match("1a"));
        }
        let version = Regex::new(&IfMatch::version_pattern()).unwrap();
        let re = |v: &str| v == "*" || version.is_match(v);
        for value in ["*", "\"0\"", "\"3\"", "\"9223372036854775807\"", "\"007\""] {
            assert!(re(value) && IfMatch::parse(value).is_ok(), "{value}");
        }
        for value in [
            "null",
            "3",
            "\"\"",
            "\"9223372036854775808\"",
            "W/\"3\"",
            "**",
        ] {
            assert!(!re(value) && IfMatch::parse(value).is_err(), "{value}");
        }
        // Every 19-digit neighbour of the maximum, either side.
        for delta in 0..1000_u64 {
            for v in [
                i64::MAX.unsigned_abs() - delta,
                i64::MAX.unsigned_abs() + delta,
            ] {
                let value = format!("\"{v}\"");
                assert_eq!(re(&value), IfMatch::parse(&value).is_ok(), "{value}");
            }
        }
    }

    #[test]
    fn numbers_and_lengths_are_the_parsers() {
        let json = |s: RefOr<Schema>| serde_json::to_value(s).unwrap();
        let price = json(PriceCents::schema());
        assert_eq!(price["maximum"], MAX_PRICE_CENTS);
        assert!(
            PriceCents::new(MAX_PRICE_CENTS).is_ok()
                && PriceCents::new(MAX_PRICE_CENTS + 1).is_err()
        );
        assert!(PriceCents::new(0).is_ok() && PriceCents::new(-1).is_err());
        assert_eq!(price["minimum"], 0);
        let stock = json(Stock::schema());
        assert_eq!(
            (stock["minimum"].clone(), stock["maximum"].clone()),
            (0.into(), i64::MAX.into())
        );
        assert!(Stock::new(i64::MAX).is_ok() && Stock::new(-1).is_err());
        let limit = json(PageLimit::schema());
        assert_eq!(limit["maximum"], MAX_PAGE_LIMIT);
        assert!(
            PageLimit::new(MAX_PAGE_LIMIT).is_ok() && PageLimit::new(MAX_PAGE_LIMIT + 1).is_err()
        );
        assert_eq!(json(ProductId::schema())["minimum"], 1);
        assert!(ProductId::new(1).is_ok() && ProductId::new(0).is_err());
        assert_eq!(json(PageAfter::schema())["minimum"], 0);
        assert!(PageAfter::new(0).is_ok() && PageAfter::new(-1).is_err());
        assert_eq!(json(MinVersion::schema())["minimum"], 1);
        assert!(MinVersion::new(1).is_ok() && MinVersion::new(0).is_err());
        for (schema, max, parse) in [
            (
                json(Sku::schema()),
                SKU_MAX_LEN,
                &(|s: &str| Sku::parse(s).is_ok()) as &dyn Fn(&str) -> bool,
            ),
            (json(Category::schema()), CATEGORY_MAX_LEN, &|s: &str| {
                Category::parse(s).is_ok()
            }),
            (json(ProductName::schema()), NAME_MAX_CHARS, &|s: &str| {
                ProductName::parse(s).is_ok()
            }),
            (
                json(Description::schema()),
                DESCRIPTION_MAX_CHARS,
                &|s: &str| Description::parse(s).is_ok(),
            ),
            (json(SearchText::schema()), SEARCH_MAX_CHARS, &|s: &str| {
                SearchText::parse(s).is_ok()
            }),
        ] {
            assert_eq!(schema["maxLength"], max);
            // `é` counts as one character, like JSON Schema's maxLength.
            let fill = if schema["pattern"] == CATEGORY_PATTERN || schema["pattern"] == SKU_PATTERN
            {
                "a"
            } else {
                "é"
            };
            assert!(parse(&fill.repeat(max)), "{max}");
            assert!(!parse(&fill.repeat(max + 1)), "{max} + 1");
        }
    }

    #[test]
    fn bodies_are_closed_and_name_their_required_members() {
        let json = |s: RefOr<Schema>| serde_json::to_value(s).unwrap();
        for body in [
            json(NewProduct::schema()),
            json(ProductPatch::schema()),
            json(BulkCreate::schema()),
            json(BulkPatch::schema()),
            json(StockUpdate::schema()),
        ] {
            assert_eq!(body["additionalProperties"], false, "{body}");
        }
        let create = json(NewProduct::schema());
        assert_eq!(
            create["required"],
            serde_json::json!(["sku", "name", "category", "price_cents", "currency"])
        );
        assert_eq!(
            json(BulkCreate::schema())["properties"]["products"]["maxItems"],
            MAX_BULK
        );
    }
}
