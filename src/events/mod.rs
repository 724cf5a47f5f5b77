//! Conversion events: the `cdp.conversion_events` outbox, the pump that sends pending events to
//! the Conversions API (`POST /{pixel_id}/events`), and CSV import into the outbox.
//!
//! * `outbox.rs` — every SQL statement on the outbox, deliveries and delivery runs.
//! * `lease.rs` — claims: a batch is leased to one worker in a short transaction.
//! * `payload.rs` — pure: outbox row → server event JSON; the expiry window.
//! * `verdict.rs` — pure: Meta's answer → sent, to split (the events' fault) or stop (retry later).
//! * `split.rs` — a rejected batch is halved until the bad event stands alone.
//! * `pump.rs` — [`EventPump`]: claims, then each batch's outcomes recorded.
//! * `prepare.rs` — pure: a claimed batch → what is settled without Meta and the events to send.
//! * `batch.rs` — one claimed batch with Meta: sent, split, its outcomes.
//! * `map.rs`, `csv_rows.rs`, `import.rs` — CSV exports (streamed) → outbox rows, through
//!   `config/maps/*.toml`.
mod batch;
pub mod csv_rows;
pub mod import;
pub mod lease;
pub mod map;
pub mod outbox;
pub mod payload;
mod prepare;
mod pump;
pub mod split;
pub mod verdict;

pub use outbox::{PendingSummary, pending_by_system};
pub use pump::{DEFAULT_CLAIM_LEASE, DEFAULT_RETRY_DELAY, EventPump, NOTIFY_CHANNEL, PumpReport};
