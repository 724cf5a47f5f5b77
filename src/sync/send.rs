//! Sends the planned changes: removals first, in their own session, then the additions (or, when
//! replacing, the whole set through `usersreplace`) in the add session, after any batches a first
//! sync streamed. An adopted audience Meta will not replace gets the source set added instead,
//! and the run says so.
use super::changes::Changes;
use super::context::SyncContext;
use super::error::SyncError;
use super::first_sync::SentWhileStaging;
use super::session_sender::UploadError;
use super::session_sender::{SessionProgress, Target};
use super::sessions::{RunSessions, new_session_id};
use super::system::SyncMode;
use super::upload::Upload;
use crate::meta::Direction;

/// What the run sent.
#[derive(Debug, Default)]
pub struct Sent {
    /// Members added, the streamed ones included.
    pub added: i64,
    pub removed: i64,
    pub interrupted: bool,
    /// Why the audience was added to instead of replaced.
    pub refused: Option<String>,
}

impl Sent {
    /// A run stopped while staging: only what was sent meanwhile.
    pub fn interrupted_after(streamed: &SentWhileStaging) -> Self {
        Sent {
            added: streamed.rows,
            interrupted: true,
            ..Sent::default()
        }
    }
}

pub async fn send(
    ctx: &SyncContext,
    stage: &tokio_postgres::Client,
    target: Target<'_>,
    sessions: &RunSessions,
    changes: &Changes,
    streamed: &SentWhileStaging,
) -> Result<Sent, SyncError> {
    let planned = &changes.planned;
    let upload = |total: i64, session_id: i64| Upload {
        stage,
        target,
        session_id,
        total,
        first_batch_seq: 1,
        session_total: total,
        progress: SessionProgress::default(),
        batch_rows: ctx.settings.worker.upload_batch_rows,
        upsert: sessions.mode == SyncMode::Append,
    };
    let removed = upload(planned.to_remove, sessions.remove)
        .run(Direction::Remove)
        .await?;
    if removed.interrupted {
        return Ok(Sent {
            added: streamed.rows,
            removed: removed.rows,
            interrupted: true,
            refused: None,
        });
    }
    let direction = match changes.replacing {
        true => Direction::Replace,
        false => Direction::Add,
    };
    // The add session goes on after the batches streamed while extracting (or, resuming a
    // replace, after the batches its first run sent).
    let sent = Upload {
        first_batch_seq: sessions.first_add_batch + streamed.batches,
        session_total: streamed.rows + planned.to_add,
        progress: streamed.progress,
        ..upload(planned.to_add, sessions.add)
    }
    .run(direction)
    .await;
    let mut refused = None;
    let added = match sent {
        // Meta will not replace this audience: when adopting it, add the source set instead
        // (what was there stays) and say so.
        Err(UploadError::Meta(e)) if sessions.adopting && e.refuses_replace() => {
            tracing::warn!(system = %target.plan.label(), error = %e, "usersreplace refused; adding instead");
            refused = Some(format!(
                "usersreplace was refused for audience {} ({e}); the source set was added, and \
                 members the audience held before were not removed",
                target.audience_id
            ));
            upload(planned.to_add, new_session_id())
                .run(Direction::Add)
                .await?
        }
        other => other?,
    };
    Ok(Sent {
        added: streamed.rows + added.rows,
        removed: removed.rows,
        interrupted: added.interrupted,
        refused,
    })
}
