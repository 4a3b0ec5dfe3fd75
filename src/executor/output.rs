//! A guest's stdout and stderr: an in-memory pipe that keeps the first
//! bytes up to a cap and counts the rest. A write never fails, so a guest
//! that logs a lot is not turned into a failing one (Rust's `eprintln!`
//! panics on a write error); what the cap means is the caller's to decide:
//! for a log, a note that the rest was dropped; for a CGI response, an
//! error naming the limit.

use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use tokio::io::AsyncWrite;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamResult};

use crate::messages::RequestId;

/// What a guest may send to the node's log per request (WASI stdout and
/// stderr of Terrafirma guests, stderr of CGI guests).
pub const GUEST_LOG_BYTES: usize = 64 << 10;

/// Bytes a write may hand over at once.
const WRITE_PERMIT: usize = 64 << 10;

#[derive(Debug, Default)]
struct Buffer {
    kept: BytesMut,
    dropped: usize,
}

/// The pipe; clones share one buffer.
#[derive(Debug, Clone)]
pub struct CappedPipe {
    cap: usize,
    buffer: Arc<Mutex<Buffer>>,
}

impl CappedPipe {
    pub fn new(cap: usize) -> CappedPipe {
        CappedPipe { cap, buffer: Arc::default() }
    }

    fn lock(&self) -> MutexGuard<'_, Buffer> {
        self.buffer.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The bytes kept, at most the cap.
    pub fn contents(&self) -> Bytes {
        self.lock().kept.clone().freeze()
    }

    /// How many bytes past the cap the guest wrote.
    pub fn dropped(&self) -> usize {
        self.lock().dropped
    }

    fn append(&self, bytes: &[u8]) {
        let mut buffer = self.lock();
        let room = self.cap.saturating_sub(buffer.kept.len());
        let kept = bytes.len().min(room);
        buffer.kept.extend_from_slice(&bytes[..kept]);
        buffer.dropped += bytes.len() - kept;
    }
}

impl IsTerminal for CappedPipe {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for CappedPipe {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }

    fn async_stream(&self) -> Box<dyn AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

#[wasmtime_wasi::async_trait]
impl Pollable for CappedPipe {
    async fn ready(&mut self) {}
}

impl OutputStream for CappedPipe {
    fn write(&mut self, bytes: Bytes) -> StreamResult<()> {
        self.append(&bytes);
        Ok(())
    }

    fn flush(&mut self) -> StreamResult<()> {
        Ok(())
    }

    fn check_write(&mut self) -> StreamResult<usize> {
        Ok(WRITE_PERMIT)
    }
}

impl AsyncWrite for CappedPipe {
    fn poll_write(self: Pin<&mut Self>, _cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        self.append(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

/// Sends what a guest wrote to its log pipe to the node's log, a line at a
/// time, and says once if the guest wrote more than was kept.
pub fn log_guest_output(label: &str, request: &RequestId, log: &CappedPipe) {
    let output = log.contents();
    for line in String::from_utf8_lossy(&output).lines() {
        tracing::info!(target: "guest", module = %label, request = %request, "{line}");
    }
    let dropped = log.dropped();
    if dropped > 0 {
        tracing::warn!(target: "guest", module = %label, request = %request, "guest output over {} bytes: the remaining {dropped} bytes were dropped", log.cap);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_up_to_the_cap_and_counts_the_rest_without_failing() {
        let mut pipe = CappedPipe::new(10);
        pipe.write(Bytes::from_static(b"0123456")).unwrap();
        pipe.write(Bytes::from_static(b"789abc")).unwrap();
        assert!(pipe.check_write().unwrap() > 0, "a full pipe still takes writes");
        pipe.write(Bytes::from_static(b"def")).unwrap();
        assert_eq!(&pipe.contents()[..], b"0123456789");
        assert_eq!(pipe.dropped(), 6);
    }
}
