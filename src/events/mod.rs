//! Conversion events: the `cdp.conversion_events` outbox, the pump that sends pending events to
//! the Conversions API (`POST /{pixel_id}/events`), and CSV import into the outbox.
//!
//! * `map.rs`, `import.rs`: CSV exports → outbox rows, through `config/maps/*.toml`.
pub mod import;
pub mod map;
pub mod payload;
pub mod split;
