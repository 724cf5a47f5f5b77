//! LISTEN on Postgres channels with a connection of its own (pooled connections never see
//! NOTIFY): the configuration table's and the event outbox's triggers wake the scheduler and the
//! event pump within seconds of an operator's change.
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use anyhow::Context;
use futures_util::StreamExt;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::health::Health;

/// Listens on `channels` with a dedicated connection (pooled connections never see NOTIFY) and
/// wakes `wake` on each notification. Reconnects after errors until `shutdown`; `health.listener`
/// says whether the connection is up.
pub async fn listen(
    settings: crate::configuration::DatabaseSettings,
    channels: Vec<(&'static str, Arc<Notify>)>,
    health: Arc<Health>,
    shutdown: CancellationToken,
) {
    while !shutdown.is_cancelled() {
        if let Err(e) = listen_once(&settings, &channels, &health, &shutdown).await {
            tracing::warn!(error = %super::describe(&e), "LISTEN connection lost; reconnecting");
        }
        health.listener.store(false, Ordering::Relaxed);
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(2)) => {}
            _ = shutdown.cancelled() => {}
        }
    }
}

async fn listen_once(
    settings: &crate::configuration::DatabaseSettings,
    channels: &[(&'static str, Arc<Notify>)],
    health: &Health,
    shutdown: &CancellationToken,
) -> anyhow::Result<()> {
    let config = super::pool::pg_config(settings)?;
    let (client, mut connection) = config
        .connect(super::tls_connector(settings)?)
        .await
        .context("Failed to connect for LISTEN")?;
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let driver = tokio::spawn(async move {
        let mut messages = futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
        while let Some(message) = messages.next().await {
            match message {
                Ok(tokio_postgres::AsyncMessage::Notification(n)) => {
                    let _ = tx.send(n.channel().to_string());
                }
                Ok(_) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    });
    let listen: String = channels
        .iter()
        .map(|(c, _)| format!("LISTEN {c};"))
        .collect();
    client
        .batch_execute(&listen)
        .await
        .context("LISTEN failed")?;
    health.listener.store(true, Ordering::Relaxed);
    // A notification may have been missed while disconnected: wake everyone once.
    for (_, notify) in channels {
        notify.notify_one();
    }
    loop {
        tokio::select! {
            channel = rx.recv() => match channel {
                Some(channel) => {
                    for (name, notify) in channels {
                        if *name == channel {
                            notify.notify_one();
                        }
                    }
                }
                None => break,
            },
            _ = shutdown.cancelled() => break,
        }
    }
    driver.abort();
    if shutdown.is_cancelled() {
        Ok(())
    } else {
        anyhow::bail!("the LISTEN connection closed")
    }
}
