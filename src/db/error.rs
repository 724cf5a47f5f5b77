//! Database errors in words safe for logs and `error_log`.
//!
//! Postgres puts values in its errors: a `DETAIL` line names the offending row (`Key
//! (email)=(ann@example.com) already exists`), a data error quotes the value it could not take
//! (`invalid input syntax for type integer: "ann@example.com"`), and a `RAISE` in a function of
//! the CDP says whatever its author wrote. tokio-postgres prints all of that. Here an error keeps
//! its severity, SQLSTATE and message, without DETAIL, HINT or WHERE; the message of a data
//! exception (class 22) loses everything after its first colon, and the message of a function's
//! `RAISE` (class P0) is not repeated.
use std::fmt::Write;

use tokio_postgres::error::DbError;

/// One database error, without the values it may quote.
pub fn error_text(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => db_error_text(db),
        None => e.to_string(),
    }
}

fn db_error_text(db: &DbError) -> String {
    let code = db.code().code();
    let message = db.message();
    let message = if code.starts_with("22") {
        message.split(':').next().unwrap_or_default().trim_end()
    } else if code.starts_with("P0") {
        "raised by a database function"
    } else {
        message
    };
    format!("{}: {message} (SQLSTATE {code})", db.severity())
}

/// An error chain as `a: b: c` (like `{:#}`), with every database error in it made safe by
/// [`error_text`].
pub fn describe(e: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in e.chain() {
        if !out.is_empty() {
            out.push_str(": ");
        }
        if let Some(pg) = cause.downcast_ref::<tokio_postgres::Error>() {
            out.push_str(&error_text(pg));
            // Its source is the DbError just described, DETAIL and all.
            break;
        }
        if let Some(db) = cause.downcast_ref::<DbError>() {
            out.push_str(&db_error_text(db));
            break;
        }
        let _ = write!(out, "{cause}");
    }
    out
}
