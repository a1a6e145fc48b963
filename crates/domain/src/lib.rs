//! Pure types shared by every Catalog service: the product, the validated inputs
//! that create and change it, and the change event that announces a commit.
//!
//! Nothing here does I/O. Every rule of the contract's validation section lives
//! in [`input`], so the write path, the bulk path and the tests agree on one
//! definition of "valid".

pub mod error;
pub mod event;
#[cfg(any(test, feature = "fixtures"))]
pub mod fixtures;
pub mod ids;
pub mod input;
pub mod lsn;
pub mod params;
pub mod product;
pub mod schema;
pub mod text;

pub use error::ValidationError;
pub use event::{ChangeEvent, EventKind};
pub use ids::{ProductId, Version};
pub use input::{
    Attributes, BulkPatchItem, Category, Currency, Description, NewProduct, PriceCents,
    ProductName, ProductPatch, Sku, Stock, StockUpdate,
};
pub use lsn::Lsn;
pub use params::{IfMatch, MinVersion, PageAfter, PageLimit, SearchText};
pub use product::{Availability, Product};
