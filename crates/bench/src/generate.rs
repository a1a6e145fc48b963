//! Realistic, deterministic fake products for `seed`.
//!
//! Product `i` depends only on (`seed`, `i`): each product gets an RNG of its
//! own, so the catalog is the same whatever the batch size or concurrency.
//! Every generated value passes write-api's validation (see the contract's
//! "Product" section): ASCII names, category slugs of `[a-z0-9-]`, prices
//! within range, small attribute objects.

use rand::{Rng, SeedableRng, rngs::StdRng, seq::IndexedRandom};
use serde_json::{Map, Value, json};

/// One category: its slug and what its products look like.
struct CategorySpec {
    slug: &'static str,
    /// Product nouns ("Ultrabook"), combined with a brand and a model.
    nouns: &'static [&'static str],
    /// Price range in cents; prices are drawn log-uniformly within it.
    price_cents: (u64, u64),
    /// Category-specific attributes: a key and the values it takes.
    attributes: &'static [(&'static str, &'static [i64])],
}

/// The fixed category list; `--categories N` uses the first N.
#[rustfmt::skip]
const CATEGORIES: &[CategorySpec] = &[
    spec("laptops", &["Ultrabook", "Notebook", "Chromebook", "Workstation"], (29_900, 349_900), &[("ram_gb", &[8, 16, 32, 64]), ("storage_gb", &[256, 512, 1024, 2048])]),
    spec("phones", &["Phone", "Smartphone", "Flip"], (9_900, 159_900), &[("storage_gb", &[64, 128, 256, 512])]),
    spec("tablets", &["Tablet", "Slate", "Pad"], (12_900, 129_900), &[("screen_in", &[8, 10, 11, 13])]),
    spec("monitors", &["Monitor", "Display", "Panel"], (9_900, 199_900), &[("size_in", &[24, 27, 32, 34]), ("refresh_hz", &[60, 144, 165, 240])]),
    spec("headphones", &["Headphones", "Earbuds", "Headset"], (1_900, 54_900), &[("battery_h", &[8, 20, 30, 40])]),
    spec("cameras", &["Camera", "Mirrorless", "Action Cam"], (14_900, 399_900), &[("megapixels", &[12, 24, 33, 45])]),
    spec("keyboards", &["Keyboard", "Mechanical Keyboard"], (1_900, 24_900), &[("keys", &[60, 75, 87, 104])]),
    spec("mice", &["Mouse", "Trackball", "Gaming Mouse"], (900, 14_900), &[("dpi", &[1600, 3200, 16000, 26000])]),
    spec("speakers", &["Speaker", "Soundbar", "Bookshelf Speaker"], (2_900, 99_900), &[("watts", &[10, 30, 60, 120])]),
    spec("smartwatches", &["Watch", "Fitness Band"], (4_900, 79_900), &[("battery_days", &[1, 2, 7, 14])]),
    spec("printers", &["Printer", "Laser Printer", "Photo Printer"], (7_900, 89_900), &[("ppm", &[10, 20, 30, 40])]),
    spec("routers", &["Router", "Mesh System", "Access Point"], (3_900, 59_900), &[("wifi", &[5, 6, 7])]),
    spec("storage", &["SSD", "Portable Drive", "NAS"], (2_900, 119_900), &[("capacity_gb", &[500, 1000, 2000, 4000])]),
    spec("gaming", &["Console", "Controller", "Racing Wheel"], (2_900, 69_900), &[("players", &[1, 2, 4])]),
    spec("kitchen", &["Blender", "Kettle", "Coffee Maker", "Air Fryer"], (1_900, 59_900), &[("capacity_ml", &[500, 1000, 1500, 1700])]),
    spec("furniture", &["Desk", "Chair", "Bookcase", "Standing Desk"], (4_900, 129_900), &[("width_cm", &[60, 80, 120, 160])]),
    spec("lighting", &["Lamp", "Light Strip", "Smart Bulb"], (900, 24_900), &[("lumens", &[400, 800, 1100, 1600])]),
    spec("outdoor", &["Tent", "Backpack", "Sleeping Bag"], (2_900, 59_900), &[("capacity_l", &[20, 35, 50, 65])]),
    spec("fitness", &["Treadmill", "Dumbbell Set", "Yoga Mat", "Bike Trainer"], (1_900, 199_900), &[("max_load_kg", &[100, 120, 150])]),
    spec("tools", &["Drill", "Screwdriver Set", "Multimeter", "Saw"], (1_900, 39_900), &[("voltage", &[12, 18, 20, 36])]),
    spec("books", &["Guide", "Handbook", "Cookbook", "Atlas"], (900, 6_900), &[("pages", &[120, 240, 360, 720])]),
    spec("toys", &["Building Set", "Puzzle", "Robot Kit"], (900, 19_900), &[("min_age", &[3, 6, 8, 12])]),
    spec("garden", &["Mower", "Hose Reel", "Planter", "Trimmer"], (1_900, 89_900), &[("area_m2", &[100, 300, 500, 1000])]),
    spec("office", &["Shredder", "Label Maker", "Whiteboard"], (1_900, 29_900), &[("sheets", &[6, 10, 20])]),
];

const fn spec(
    slug: &'static str,
    nouns: &'static [&'static str],
    price_cents: (u64, u64),
    attributes: &'static [(&'static str, &'static [i64])],
) -> CategorySpec {
    CategorySpec {
        slug,
        nouns,
        price_cents,
        attributes,
    }
}

const BRANDS: &[&str] = &[
    "Acme",
    "Northwind",
    "Globex",
    "Initech",
    "Umbrella",
    "Stark",
    "Wayne",
    "Tyrell",
    "Cyberdyne",
    "Soylent",
    "Hooli",
    "Vandelay",
    "Contoso",
    "Fabrikam",
    "Aperture",
    "Wonka",
    "Gringotts",
    "Oscorp",
    "Massive",
    "Monarch",
];
const SUFFIXES: &[&str] = &[
    "", "", "Pro", "Air", "Max", "Plus", "Lite", "Mini", "Ultra", "SE",
];
const COLORS: &[&str] = &[
    "black", "white", "silver", "graphite", "blue", "red", "green", "sand",
];
const ADJECTIVES: &[&str] = &[
    "lightweight",
    "durable",
    "compact",
    "versatile",
    "quiet",
    "fast",
    "elegant",
    "rugged",
    "energy-efficient",
    "premium",
    "reliable",
    "sleek",
];
const FEATURES: &[&str] = &[
    "a long-lasting battery",
    "a two-year warranty",
    "a brushed aluminium finish",
    "tool-free assembly",
    "fast charging",
    "a recycled-plastic shell",
    "a detachable cable",
    "an anti-glare coating",
    "whisper-quiet operation",
    "a carrying case",
];
const AUDIENCES: &[&str] = &[
    "everyday use",
    "professionals",
    "students",
    "travel",
    "small offices",
    "gamers",
    "home cooks",
    "weekend projects",
    "families",
    "creators",
];

/// How many categories the built-in list has.
pub fn max_categories() -> usize {
    CATEGORIES.len()
}

/// Generates products as write-api's create bodies.
#[derive(Debug, Clone)]
pub struct ProductGen {
    seed: u64,
    /// How many of [`CATEGORIES`] to draw from (1..=len).
    categories: usize,
    featured_ratio: f64,
    sku_prefix: String,
}

impl ProductGen {
    /// `categories` is clamped to 1..=[`max_categories`], `featured_ratio`
    /// to 0..=1.
    pub fn new(seed: u64, categories: usize, featured_ratio: f64, sku_prefix: &str) -> Self {
        Self {
            seed,
            categories: categories.clamp(1, CATEGORIES.len()),
            featured_ratio: featured_ratio.clamp(0.0, 1.0),
            sku_prefix: sku_prefix.to_owned(),
        }
    }

    /// The SKU of product `index`: unique per prefix, within 64 chars for
    /// any prefix of at most 50.
    pub fn sku(&self, index: u64) -> String {
        format!("{}-{index:08}", self.sku_prefix)
    }

    /// Product `index` as a create body (every field the contract allows).
    pub fn product(&self, index: u64) -> Value {
        // Mix the index into the seed (splitmix64's constant) so neighbouring
        // products get unrelated streams.
        let mut rng = StdRng::seed_from_u64(self.seed ^ index.wrapping_mul(0x9E37_79B9_7F4A_7C15));
        let category = &CATEGORIES[rng.random_range(0..self.categories)];
        let brand = pick(&mut rng, BRANDS);
        let noun = pick(&mut rng, category.nouns);
        let suffix = pick(&mut rng, SUFFIXES);
        let model = rng.random_range(1..=99);
        let name = if suffix.is_empty() {
            format!("{brand} {noun} {model}")
        } else {
            format!("{brand} {noun} {model} {suffix}")
        };
        json!({
            "sku": self.sku(index),
            "name": name,
            "description": description(&mut rng, noun),
            "category": category.slug,
            "price_cents": price(&mut rng, category.price_cents),
            "currency": if rng.random_bool(0.75) { "USD" } else { "EUR" },
            "featured": rng.random_bool(self.featured_ratio),
            "attributes": attributes(&mut rng, category),
            "stock": rng.random_range(0..=500),
        })
    }
}

fn pick<'a>(rng: &mut StdRng, from: &[&'a str]) -> &'a str {
    from.choose(rng).copied().unwrap_or_default()
}

/// One to three sentences from the word lists.
fn description(rng: &mut StdRng, noun: &str) -> String {
    let noun = noun.to_lowercase();
    let mut sentences = vec![format!(
        "A {} {noun} with {}.",
        pick(rng, ADJECTIVES),
        pick(rng, FEATURES)
    )];
    if rng.random_bool(0.7) {
        sentences.push(format!("Built for {}.", pick(rng, AUDIENCES)));
    }
    if rng.random_bool(0.4) {
        let first = pick(rng, ADJECTIVES);
        let mut upper = first.chars();
        let first = upper
            .next()
            .map(|c| c.to_uppercase().chain(upper).collect::<String>())
            .unwrap_or_default();
        sentences.push(format!("{first} and {}.", pick(rng, ADJECTIVES)));
    }
    sentences.join(" ")
}

/// Log-uniform in the range, ending in 99 cents like real price tags.
fn price(rng: &mut StdRng, (low, high): (u64, u64)) -> u64 {
    let (low, high) = ((low as f64).ln(), (high as f64).ln());
    let cents = rng.random_range(low..=high).exp() as u64;
    (cents / 100) * 100 + 99
}

fn attributes(rng: &mut StdRng, category: &CategorySpec) -> Value {
    let mut map = Map::new();
    map.insert("color".into(), pick(rng, COLORS).into());
    map.insert("weight_g".into(), rng.random_range(50..=25_000).into());
    for (key, values) in category.attributes {
        if let Some(v) = values.choose(rng) {
            map.insert((*key).into(), (*v).into());
        }
    }
    if rng.random_bool(0.3) {
        map.insert("warranty_years".into(), rng.random_range(1..=5).into());
    }
    Value::Object(map)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn valid_slug(s: &str) -> bool {
        (1..=64).contains(&s.len())
            && s.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    }

    #[test]
    fn products_are_deterministic_and_distinct() {
        let g = ProductGen::new(42, 20, 0.05, "run1");
        assert_eq!(g.product(7), g.product(7));
        assert_ne!(g.product(7), g.product(8));
        assert_ne!(
            g.product(7),
            ProductGen::new(43, 20, 0.05, "run1").product(7)
        );
    }

    #[test]
    fn products_pass_the_contract_rules() {
        let g = ProductGen::new(1, max_categories(), 0.5, "bench-x");
        let mut featured = 0;
        for i in 0..2000 {
            let p = g.product(i);
            let obj = p.as_object().unwrap();
            assert_eq!(obj.len(), 9, "{p}");
            let sku = obj["sku"].as_str().unwrap();
            assert!(
                sku.len() <= 64
                    && sku
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
            );
            let name = obj["name"].as_str().unwrap();
            assert!(!name.trim().is_empty() && name.chars().count() <= 200);
            let description = obj["description"].as_str().unwrap();
            assert!(description.ends_with('.') && description.len() <= 5000);
            assert!(valid_slug(obj["category"].as_str().unwrap()));
            let price = obj["price_cents"].as_u64().unwrap();
            assert!(price > 0 && price <= 1_000_000_000_000);
            assert!(["USD", "EUR"].contains(&obj["currency"].as_str().unwrap()));
            assert!(obj["attributes"].as_object().unwrap().len() >= 2);
            assert!(obj["stock"].as_u64().unwrap() <= 500);
            featured += u32::from(obj["featured"].as_bool().unwrap());
        }
        assert!((800..1200).contains(&featured), "{featured}");
    }

    #[test]
    fn category_slugs_are_valid_and_unique() {
        let mut slugs: Vec<_> = CATEGORIES.iter().map(|c| c.slug).collect();
        assert!(slugs.iter().all(|s| valid_slug(s)));
        slugs.sort_unstable();
        slugs.dedup();
        assert_eq!(slugs.len(), CATEGORIES.len());
        assert!(max_categories() >= 20);
    }

    #[test]
    fn category_count_limits_the_draw() {
        let g = ProductGen::new(3, 2, 0.0, "p");
        for i in 0..200 {
            let p = g.product(i);
            assert!(["laptops", "phones"].contains(&p["category"].as_str().unwrap()));
            assert_eq!(p["featured"], false);
        }
    }
}
