//! Delivering one batch when Meta may reject it for a single bad event: a rejected batch is split
//! in halves until the bad event stands alone; it is rejected, every other event is sent.
//!
//! The sender is a parameter, so the splitting is tested without HTTP.
use std::future::Future;
use std::ops::Range;

/// What one request to Meta came to.
#[derive(Debug, Clone, PartialEq)]
pub enum Attempt {
    /// HTTP 200: `events_received` and the request's trace id.
    Accepted {
        events_received: u64,
        fbtrace_id: Option<String>,
    },
    /// The request was refused for its content (code 100, or another non-transient error that
    /// is not about the caller; see `verdict.rs`): some event in it is invalid.
    Rejected {
        message: String,
        fbtrace_id: Option<String>,
    },
    /// Anything else (an expired token, retries exhausted): stop; undecided events are retried
    /// later and never rejected.
    Stop(Stopped),
}

/// Why delivery stopped, and whether the events wait out a backoff before they are tried again
/// (a transient error) or may go as soon as someone fixes the cause (a token, a permission).
#[derive(Debug, Clone, PartialEq)]
pub struct Stopped {
    pub reason: String,
    pub backoff: bool,
}

/// The fate of one event of the batch.
#[derive(Debug, Clone, PartialEq)]
pub enum Fate {
    Sent {
        fbtrace_id: Option<String>,
    },
    Rejected {
        message: String,
        fbtrace_id: Option<String>,
    },
}

/// The batch's outcome: a fate per decided event (by index), requests made, and why delivery
/// stopped, if it did (the events without a fate are then left pending).
#[derive(Debug, Default, PartialEq)]
pub struct Delivery {
    pub fates: Vec<(usize, Fate, u32)>,
    pub accepted: u64,
    pub requests: u32,
    pub stopped: Option<Stopped>,
}

/// Sends `len` events through `send(range)`, splitting rejected ranges in halves.
/// The third element of each fate is the number of requests that carried the event.
pub async fn deliver<F, Fut>(len: usize, mut send: F) -> Delivery
where
    F: FnMut(Range<usize>) -> Fut,
    Fut: Future<Output = Attempt>,
{
    let mut delivery = Delivery::default();
    let mut carried = vec![0u32; len];
    // Depth-first, left half first, so fates come out in batch order.
    let mut todo: Vec<Range<usize>> = Vec::new();
    if len > 0 {
        todo.push(0..len);
    }
    while let Some(range) = todo.pop() {
        delivery.requests += 1;
        for c in &mut carried[range.clone()] {
            *c += 1;
        }
        match send(range.clone()).await {
            Attempt::Accepted {
                events_received,
                fbtrace_id,
            } => {
                delivery.accepted += events_received;
                for i in range {
                    let fate = Fate::Sent {
                        fbtrace_id: fbtrace_id.clone(),
                    };
                    delivery.fates.push((i, fate, carried[i]));
                }
            }
            Attempt::Rejected {
                message,
                fbtrace_id,
            } if range.len() == 1 => {
                let i = range.start;
                let fate = Fate::Rejected {
                    message,
                    fbtrace_id,
                };
                delivery.fates.push((i, fate, carried[i]));
            }
            Attempt::Rejected { .. } => {
                let mid = range.start + range.len() / 2;
                todo.push(mid..range.end);
                todo.push(range.start..mid);
            }
            Attempt::Stop(stopped) => {
                delivery.stopped = Some(stopped);
                break;
            }
        }
    }
    delivery
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Meta as the docs describe it: any bad event in a request rejects the request.
    fn meta(bad: &'static [usize]) -> impl FnMut(Range<usize>) -> std::future::Ready<Attempt> {
        move |range: Range<usize>| {
            let attempt = if bad.iter().any(|b| range.contains(b)) {
                Attempt::Rejected {
                    message: "invalid event".into(),
                    fbtrace_id: Some("T".into()),
                }
            } else {
                Attempt::Accepted {
                    events_received: range.len() as u64,
                    fbtrace_id: Some("T".into()),
                }
            };
            std::future::ready(attempt)
        }
    }

    fn rejected(d: &Delivery) -> Vec<usize> {
        d.fates
            .iter()
            .filter(|(_, f, _)| matches!(f, Fate::Rejected { .. }))
            .map(|(i, _, _)| *i)
            .collect()
    }

    #[tokio::test]
    async fn a_good_batch_takes_one_request() {
        let d = deliver(1000, meta(&[])).await;
        assert_eq!((d.requests, d.accepted, d.fates.len()), (1, 1000, 1000));
    }

    #[tokio::test]
    async fn one_bad_event_is_isolated_and_every_other_event_is_sent() {
        let d = deliver(1000, meta(&[637])).await;
        assert_eq!(rejected(&d), vec![637]);
        assert_eq!(d.accepted, 999);
        assert_eq!(d.fates.len(), 1000);
        // One request per level of halving, two per level below the top.
        assert!(d.requests <= 1 + 2 * 10, "{}", d.requests);
        let order: Vec<usize> = d.fates.iter().map(|(i, _, _)| *i).collect();
        assert!(order.windows(2).all(|w| w[0] < w[1]));
    }

    #[tokio::test]
    async fn several_bad_events_are_each_rejected_alone() {
        let d = deliver(10, meta(&[0, 5, 9])).await;
        assert_eq!(rejected(&d), vec![0, 5, 9]);
        assert_eq!(d.accepted, 7);
    }

    #[tokio::test]
    async fn a_stop_leaves_undecided_events_without_a_fate() {
        let mut calls = 0;
        let d = deliver(8, |range: Range<usize>| {
            calls += 1;
            std::future::ready(match calls {
                1 => Attempt::Rejected {
                    message: "x".into(),
                    fbtrace_id: None,
                },
                2 => Attempt::Accepted {
                    events_received: range.len() as u64,
                    fbtrace_id: None,
                },
                _ => Attempt::Stop(Stopped {
                    reason: "token expired".into(),
                    backoff: false,
                }),
            })
        })
        .await;
        let decided: Vec<usize> = d.fates.iter().map(|(i, _, _)| *i).collect();
        assert_eq!(decided, vec![0, 1, 2, 3]);
        assert_eq!(
            d.stopped.map(|s| s.reason).as_deref(),
            Some("token expired")
        );
    }

    #[tokio::test]
    async fn an_empty_batch_makes_no_request() {
        let d = deliver(0, meta(&[])).await;
        assert_eq!(d.requests, 0);
    }
}
