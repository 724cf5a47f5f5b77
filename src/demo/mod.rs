//! Demo data: the CDP's source tables filled with synthetic, realistically messy customers, plus
//! the original design's three systems. Deterministic: the same count and seed give the same rows.
mod generate;
mod load;

pub use generate::{DemoCustomer, RFM_SEGMENTS, TENANTS, customer};
pub use load::{DEMO_SYSTEMS, LoadReport, Schema, load};
