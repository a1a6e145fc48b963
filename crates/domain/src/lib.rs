//! Pure types shared by every Catalog service: the product, the validated inputs
//! that create and change it, and the change event that announces a commit.
//!
//! Nothing here does I/O. Every rule of the contract's validation section lives
//! in [`input`], so the write path, the bulk path and the tests agree on one
//! definition of "valid".

pub mod error;
pub mod event;
pub mod ids;
pub mod input;
pub mod product;

pub use error::ValidationError;
pub use event::{ChangeEvent, EventKind};
pub use ids::{ProductId, Version};
pub use input::{
    Attributes, Category, Currency, Description, NewProduct, PriceCents, ProductName, ProductPatch,
    Sku, Stock,
};
pub use product::{Availability, Product};
