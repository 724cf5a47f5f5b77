//! A write's body that asks, before each piece goes out, whether it may still go.
//!
//! Dropping a call (as [`crate::sync::lease::Lease::guard`] does once the lease is stale) does not
//! stop a body already handed to the HTTP connection: the connection is a task of its own, and a
//! worker paused in the middle of a 2 MB upload goes on writing it the moment it wakes, before
//! the dropped call is noticed. Meta then receives a complete batch from a worker that no longer
//! holds the system. [`FencedBody`] closes that gap: its last byte goes out only while the fence
//! is open; when it is closed the body fails, the connection is dropped with the request
//! incomplete, and Meta (which reads the whole `Content-Length` before acting) acts on nothing.
//!
//! The body is two pieces: all but the last byte, then the last byte. A piece larger than the
//! connection's write buffer (hyper's default is about 408 KiB) is written out in full before the
//! next is asked for, so for a batch of that size the check falls after everything else has
//! reached the kernel. A smaller body can be buffered whole; it leaves the process in one write.
use std::fmt;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};

/// Whether a write may still go out, asked before each piece of its body.
#[derive(Clone)]
pub struct WriteFence(Arc<dyn Fn() -> bool + Send + Sync>);

impl WriteFence {
    pub fn new(open: impl Fn() -> bool + Send + Sync + 'static) -> Self {
        WriteFence(Arc::new(open))
    }

    fn is_open(&self) -> bool {
        (self.0)()
    }
}

impl fmt::Debug for WriteFence {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("WriteFence")
    }
}

/// The error a body fails with when its fence closed before its last piece.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error(
    "the write was stopped before its last byte: this worker may no longer change the audience"
)]
pub struct Fenced;

/// A JSON body whose pieces go out only while `fence` is open (see the module's text).
pub struct FencedBody {
    rest: Bytes,
    fence: WriteFence,
}

impl FencedBody {
    pub fn new(body: Bytes, fence: WriteFence) -> Self {
        FencedBody { rest: body, fence }
    }
}

impl Body for FencedBody {
    type Data = Bytes;
    type Error = Fenced;

    fn poll_frame(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Fenced>>> {
        let this = self.get_mut();
        if this.rest.is_empty() {
            return Poll::Ready(None);
        }
        if !this.fence.is_open() {
            return Poll::Ready(Some(Err(Fenced)));
        }
        let piece = match this.rest.len() {
            1 => std::mem::take(&mut this.rest),
            n => this.rest.split_to(n - 1),
        };
        Poll::Ready(Some(Ok(Frame::data(piece))))
    }

    fn is_end_stream(&self) -> bool {
        self.rest.is_empty()
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.rest.len() as u64)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    /// A fence open for its first `open_checks` checks, closed after.
    fn fence_open_for(open_checks: usize) -> WriteFence {
        let checks = AtomicUsize::new(0);
        WriteFence::new(move || checks.fetch_add(1, Ordering::SeqCst) < open_checks)
    }

    /// Sends `body` through reqwest to a bare TCP server; returns the request's head and the body
    /// bytes the server got before the connection ended or the request was complete, and what the
    /// client saw.
    async fn send_through(
        body: Bytes,
        fence: WriteFence,
    ) -> ((String, usize), reqwest::Result<u16>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/v1/act_1/users", listener.local_addr().unwrap());
        let expected = body.len();
        let server = tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await.unwrap();
            let mut got = Vec::new();
            let mut buf = vec![0; 64 * 1024];
            let body_at = loop {
                let n = socket.read(&mut buf).await.unwrap_or(0);
                if n == 0 {
                    return (String::new(), 0);
                }
                got.extend_from_slice(&buf[..n]);
                if let Some(at) = got.windows(4).position(|w| w == b"\r\n\r\n") {
                    break at + 4;
                }
            };
            let head = String::from_utf8_lossy(&got[..body_at]).to_ascii_lowercase();
            while got.len() - body_at < expected {
                match socket.read(&mut buf).await {
                    Ok(0) | Err(_) => return (head, got.len() - body_at),
                    Ok(n) => got.extend_from_slice(&buf[..n]),
                }
            }
            let answer = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}";
            let _ = socket.write_all(answer).await;
            (head, got.len() - body_at)
        });
        let sent = reqwest::Client::new()
            .post(url)
            .body(reqwest::Body::wrap(FencedBody::new(body, fence)))
            .send()
            .await
            .map(|r| r.status().as_u16());
        (server.await.unwrap(), sent)
    }

    #[tokio::test]
    async fn a_body_whose_fence_stays_open_arrives_whole_with_its_content_length() {
        let body = Bytes::from(vec![b'x'; 1_000_000]);
        let ((head, received), sent) = send_through(body, fence_open_for(usize::MAX)).await;
        assert!(head.contains("content-length: 1000000\r\n"), "{head}");
        assert!(!head.contains("chunked"), "{head}");
        assert_eq!(received, 1_000_000);
        assert_eq!(sent.unwrap(), 200);
    }

    #[tokio::test]
    async fn a_body_whose_fence_closes_before_the_last_byte_never_arrives_whole() {
        // Open for the first piece only: as a worker that wakes with its lease gone.
        let body = Bytes::from(vec![b'x'; 1_000_000]);
        let ((_, received), sent) = send_through(body, fence_open_for(1)).await;
        assert_eq!(
            received, 999_999,
            "all but the last byte, then the connection ended"
        );
        let e = sent.unwrap_err();
        let chain = std::iter::successors(Some(&e as &dyn std::error::Error), |e| e.source());
        assert!(
            chain
                .into_iter()
                .any(|c| c.downcast_ref::<Fenced>().is_some()),
            "{e:?}"
        );
    }

    #[tokio::test]
    async fn a_body_whose_fence_is_closed_from_the_start_sends_none_of_its_bytes() {
        let ((_, received), sent) =
            send_through(Bytes::from_static(b"{}"), fence_open_for(0)).await;
        assert_eq!(received, 0);
        assert!(sent.is_err());
    }
}
