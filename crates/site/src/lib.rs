//! The site model: which pages exist, what is on each, and which pages a change
//! touches.
//!
//! This crate is the pure core of sesame. [`SiteState`] holds the published
//! documents in memory, indexed per listing group; [`SiteState::resolve`] says
//! what a page holds, [`SiteState::all_pages`] lists every page for a full
//! build, and [`SiteState::apply`] applies a batch of changes and returns the
//! pages to re-render. Full and incremental builds share `resolve`, which is
//! what makes them comparable byte for byte.
//!
//! Invariants: no I/O, no clock, no randomness, no knowledge of templates or
//! HTTP. Iteration order never leaks into results (hash maps are sorted before
//! anything is numbered).

mod apply;
mod content;
mod group;
mod head;
mod nav;
mod order;
mod page;
mod schema;
mod site;
mod state;

pub use apply::Applied;
pub use content::{KeyError, Rejection, Writer, refused_in_text};
pub use head::FEED;
pub use order::{Bucket, IdOrd, SortKey};
pub use page::{Body, Item, Link, ListingPage, PageId, Pagination, Resolved};
pub use schema::{FieldError, SchemaError};
pub use site::{RouteIx, STATIC_PREFIX, Site, field_str};
pub use state::SiteState;
