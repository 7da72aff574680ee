//! Body wrappers on the data path. Both act on data frames only, pass trailers through and
//! forward end-of-stream.
//!
//! * [`LimitedBody`] streams the client's request body to the upstream, cutting it off past
//!   the size limit and recording *why* it failed, so the request path can answer 413 or 400
//!   instead of a generic 502.
//! * [`UpstreamBody`] streams the upstream's response to the client frame by frame, as each
//!   frame arrives. If the upstream dies mid-stream it ends the stream with one in-band error
//!   in the client's framing (see [`crate::edge::wire::Framing`]), and when it is dropped (stream
//!   done, or client gone) it writes the request's access-log line.
//! * [`PatchBody`] sits on top of [`UpstreamBody`] when rules apply: it runs each frame through
//!   a [`Rewriter`], sends only what the rules have decided, and ends the response early when a
//!   block rule fires (dropping the upstream request, so the model stops).

use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{ready, Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use http_body_util::combinators::UnsyncBoxBody;
use hyper::body::Incoming;
use pin_project_lite::pin_project;

use crate::audit::HitSink;
use crate::edge::wire::Framing;
use crate::patch::rewrite::Rewriter;
use crate::proxy::state::{RequestRecord, Stats};

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The body type of every response the proxy sends.
pub type ProxyBody = UnsyncBoxBody<Bytes, BoxError>;

/// Why a client's request body could not be forwarded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyFault {
    TooLarge,
    Incomplete,
}

#[derive(Debug, thiserror::Error)]
#[error("request body {0:?}")]
pub struct BodyFaultError(pub BodyFault);

pin_project! {
    /// The client's request body on its way upstream, at most `limit` bytes.
    pub struct LimitedBody {
        #[pin]
        inner: Incoming,
        remaining: u64,
        fault: Arc<OnceLock<BodyFault>>,
        stats: Arc<Stats>,
    }
}

impl LimitedBody {
    /// Wraps `inner`; the returned cell is set if the body fails. Bytes received are counted
    /// in `stats.bytes_from_clients`.
    pub fn new(inner: Incoming, limit: u64, stats: Arc<Stats>) -> (Self, Arc<OnceLock<BodyFault>>) {
        let fault = Arc::new(OnceLock::new());
        let body = LimitedBody {
            inner,
            remaining: limit,
            fault: fault.clone(),
            stats,
        };
        (body, fault)
    }
}

impl Body for LimitedBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.project();
        match ready!(this.inner.poll_frame(cx)) {
            Some(Ok(frame)) => {
                if let Some(data) = frame.data_ref() {
                    let len = data.len() as u64;
                    if len > *this.remaining {
                        let _ = this.fault.set(BodyFault::TooLarge);
                        return Poll::Ready(Some(Err(BodyFaultError(BodyFault::TooLarge).into())));
                    }
                    *this.remaining -= len;
                    this.stats
                        .bytes_from_clients
                        .fetch_add(len, std::sync::atomic::Ordering::Relaxed);
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Some(Err(error)) => {
                let _ = this.fault.set(BodyFault::Incomplete);
                Poll::Ready(Some(Err(error.into())))
            }
            None => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

pin_project! {
    /// The upstream's response body on its way to the client.
    pub struct UpstreamBody {
        // `None` while a `detect` retry is being sent (the first answer's body is dropped,
        // which cancels its generation).
        inner: Option<Incoming>,
        framing: Framing,
        // True when the response is length-delimited: extra bytes would corrupt it.
        fixed_length: bool,
        done: bool,
        // Last two bytes forwarded, to start an in-band error on a fresh line.
        tail: [u8; 2],
        tail_len: u8,
        record: RequestRecord,
    }

    impl PinnedDrop for UpstreamBody {
        fn drop(this: Pin<&mut Self>) {
            let this = this.project();
            this.record.finish();
        }
    }
}

impl UpstreamBody {
    pub fn new(inner: Incoming, framing: Framing, record: RequestRecord) -> Self {
        let fixed_length = inner.size_hint().exact().is_some();
        UpstreamBody {
            inner: Some(inner),
            framing,
            fixed_length,
            done: false,
            tail: [0; 2],
            tail_len: 0,
            record,
        }
    }
}

impl Body for UpstreamBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.project();
        if *this.done {
            return Poll::Ready(None);
        }
        let Some(inner) = this.inner.as_mut() else {
            return Poll::Pending;
        };
        match ready!(Pin::new(inner).poll_frame(cx)) {
            Some(Ok(frame)) => {
                if let Some(data) = frame.data_ref() {
                    this.record.add_bytes(data.len());
                    remember_tail(this.tail, this.tail_len, data);
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Some(Err(error)) => {
                *this.done = true;
                let message = format!("upstream connection lost mid-stream: {error}");
                this.record.upstream_failed(&message);
                let tail = &this.tail[2 - usize::from(*this.tail_len)..];
                match this.framing.inband_error(&message, tail) {
                    Some(bytes) if !*this.fixed_length => Poll::Ready(Some(Ok(Frame::data(bytes)))),
                    // No way to say it in-band: abort, so the client sees a cut stream.
                    _ => Poll::Ready(Some(Err(error.into()))),
                }
            }
            None => {
                *this.done = true;
                this.record.completed();
                Poll::Ready(None)
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.done || self.inner.as_ref().is_some_and(Body::is_end_stream)
    }

    fn size_hint(&self) -> SizeHint {
        self.inner
            .as_ref()
            .map_or_else(SizeHint::default, Body::size_hint)
    }
}

impl UpstreamBody {
    /// The response was ended on purpose by a block rule.
    pub fn mark_blocked(self: Pin<&mut Self>) {
        self.project().record.blocked();
    }

    /// Drops the upstream's body (which cancels its generation); nothing is read until
    /// [`UpstreamBody::resume`] gives it another.
    pub fn cancel(self: Pin<&mut Self>) {
        *self.project().inner = None;
    }

    /// Continues with the body of another upstream response (a retried request's).
    pub fn resume(self: Pin<&mut Self>, inner: Incoming) {
        let this = self.project();
        *this.fixed_length = inner.size_hint().exact().is_some();
        *this.inner = Some(inner);
        *this.done = false;
    }
}

/// A response body that a block rule may end early.
pub trait Blockable: Body<Data = Bytes, Error = BoxError> {
    fn mark_blocked(self: Pin<&mut Self>);
}

impl Blockable for UpstreamBody {
    fn mark_blocked(self: Pin<&mut Self>) {
        UpstreamBody::mark_blocked(self)
    }
}

pin_project! {
    /// A streamed response with the rules applied.
    pub struct PatchBody<B> {
        #[pin]
        inner: B,
        rewriter: Rewriter,
        sink: HitSink,
        done: bool,
    }
}

impl<B> PatchBody<B> {
    /// Corrections go to `sink` as they are decided.
    pub fn new(inner: B, rewriter: Rewriter, sink: HitSink) -> Self {
        PatchBody {
            inner,
            rewriter,
            sink,
            done: false,
        }
    }
}

impl<B: Blockable> Body for PatchBody<B> {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let mut this = self.project();
        loop {
            if *this.done {
                return Poll::Ready(None);
            }
            let out = match ready!(this.inner.as_mut().poll_frame(cx)) {
                Some(Ok(frame)) => match frame.into_data() {
                    Ok(data) => this.rewriter.feed(&data),
                    Err(frame) => return Poll::Ready(Some(Ok(frame))),
                },
                Some(Err(error)) => return Poll::Ready(Some(Err(error))),
                None => {
                    *this.done = true;
                    this.rewriter.finish()
                }
            };
            let hits = this.rewriter.take_hits();
            if !hits.is_empty() {
                this.sink.record(hits);
            }
            if this.rewriter.is_blocked() {
                // Stop reading: dropping the upstream body cancels the generation.
                *this.done = true;
                this.inner.as_mut().mark_blocked();
            }
            if !out.is_empty() {
                return Poll::Ready(Some(Ok(Frame::data(Bytes::from(out)))));
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.done
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::default()
    }
}

fn remember_tail(tail: &mut [u8; 2], tail_len: &mut u8, data: &[u8]) {
    match data.len() {
        0 => {}
        1 => {
            *tail = [tail[1], data[0]];
            *tail_len = (*tail_len + 1).min(2);
        }
        n => {
            *tail = [data[n - 2], data[n - 1]];
            *tail_len = 2;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tail_tracks_the_last_two_bytes() {
        let (mut tail, mut len) = ([0u8; 2], 0u8);
        remember_tail(&mut tail, &mut len, b"");
        assert_eq!(len, 0);
        remember_tail(&mut tail, &mut len, b"a");
        assert_eq!((&tail[2 - len as usize..], len), (&b"a"[..], 1));
        remember_tail(&mut tail, &mut len, b"b");
        assert_eq!(&tail, b"ab");
        remember_tail(&mut tail, &mut len, b"xyz\n");
        assert_eq!(&tail, b"z\n");
        assert_eq!(len, 2);
    }
}
