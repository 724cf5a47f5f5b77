//! Conversion events: the `cdp.conversion_events` outbox, the pump that sends pending events to
//! the Conversions API (`POST /{pixel_id}/events`), and CSV import into the outbox.
//!
//! * `outbox.rs` — every SQL statement on the outbox, deliveries and delivery runs.
//! * `payload.rs` — pure: outbox row → server event JSON; the expiry window.
//! * `split.rs` — a rejected batch is halved until the bad event stands alone.
//! * `pump.rs` — [`EventPump`]: batches, transactions, Meta, outcomes.
//! * `map.rs`, `import.rs` — CSV exports → outbox rows, through `config/maps/*.toml`.
pub mod import;
pub mod map;
pub mod outbox;
pub mod payload;
mod pump;
pub mod split;

pub use outbox::{PendingSummary, pending_by_system};
pub use pump::{EventPump, NOTIFY_CHANNEL, PumpReport};
