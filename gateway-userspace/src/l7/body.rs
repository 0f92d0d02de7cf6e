//! Bodies on the request path, as Envoy's router streams them (§3.10, §3.11):
//!
//! - The downstream request body goes upstream as it arrives. While a retry or a mirror may
//!   still need it, a copy is kept, up to [`RETRY_BUFFER_LIMIT`]; a body larger than that gives
//!   up retries and mirrors for the request and keeps streaming (Envoy's
//!   `retry_or_shadow_abandoned`).
//! - The route `timeout` starts when the downstream request is complete and covers the whole
//!   upstream response: [`Deadline`] cuts a response body still streaming when it fires.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};

use bytes::{Bytes, BytesMut};
use http::HeaderMap;
use hyper::body::{Body as HttpBody, Frame, Incoming, SizeHint};
use tokio::time::{Instant, Sleep};

use super::conn::BoxError;

/// The copy of a request body kept for retries and mirrors is bounded by Envoy's default
/// per-connection buffer limit (1 MiB; Istio leaves the gateway listener's limit at Envoy's
/// default), which Envoy's router uses as its retry/shadow buffer limit.
pub const RETRY_BUFFER_LIMIT: usize = 1 << 20;

/// One downstream request body, shared by the attempts (and mirrors) of its request.
pub struct Source {
    state: Mutex<State>,
}

struct State {
    /// None once the end of the stream (or an error) was read.
    incoming: Option<Incoming>,
    /// Data read so far, while `keep` and within the limit.
    chunks: Vec<Bytes>,
    size: usize,
    /// Whether a copy is kept at all (a retry or a mirror may need it).
    keep: bool,
    /// The body outgrew the limit: retries and mirrors were given up.
    overflowed: bool,
    trailers: Option<HeaderMap>,
    /// The end of the stream was read (`failed`: the downstream body broke off), and when.
    done: bool,
    done_at: Option<Instant>,
    failed: bool,
    /// The attempt whose body reads the downstream one; a body of an earlier attempt that the
    /// upstream client still polls stops short instead of taking data from the current one.
    leader: u32,
    /// Mirrors and the route timer waiting for the end of the stream.
    waiters: Vec<Waker>,
    /// Attempt bodies alive, plus the request's own [`Hold`]: when none is left before the end
    /// of the stream, nothing will read it any more and waiting mirrors give up.
    readers: usize,
}

impl State {
    fn finish(&mut self, failed: bool) {
        self.incoming = None;
        self.done = true;
        self.done_at = Some(Instant::now());
        self.failed |= failed;
        self.wake();
    }

    fn wake(&mut self) {
        for w in self.waiters.drain(..) {
            w.wake();
        }
    }
}

impl Source {
    /// `keep`: keep a copy for a retry or a mirror (up to the limit).
    pub fn new(incoming: Incoming, keep: bool) -> Arc<Source> {
        Arc::new(Source {
            state: Mutex::new(State {
                incoming: Some(incoming),
                chunks: Vec::new(),
                size: 0,
                keep,
                overflowed: false,
                trailers: None,
                done: false,
                done_at: None,
                failed: false,
                leader: 0,
                waiters: Vec::new(),
                readers: 0,
            }),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The body of attempt `attempt` (1-based): what was kept, then the rest as it arrives.
    pub fn body(self: &Arc<Self>, attempt: u32) -> UpBody {
        let mut s = self.lock();
        s.leader = attempt;
        s.readers += 1;
        drop(s);
        UpBody::Replay {
            src: self.clone(),
            next: 0,
            attempt,
            trailers_sent: false,
        }
    }

    /// Whether another attempt can still be sent with the whole body.
    pub fn replayable(&self) -> bool {
        let s = self.lock();
        s.keep && !s.overflowed && !s.failed
    }

    /// When the downstream body was read to its end (or broke off), if it was.
    pub fn finished_at(&self) -> Option<Instant> {
        self.lock().done_at
    }

    /// Resolves once the downstream body was read to its end (or broke off).
    pub fn finished(self: &Arc<Self>) -> Finished {
        Finished(self.clone())
    }

    /// The whole body for a mirror, once read; None if it outgrew the limit, broke off, or
    /// nothing reads it any more (the request is over).
    pub fn complete(self: &Arc<Self>) -> Complete {
        Complete(self.clone())
    }

    /// Keeps the body readable between attempts (the request holds it while it may retry).
    pub fn hold(self: &Arc<Self>) -> Hold {
        self.lock().readers += 1;
        Hold(self.clone())
    }

    fn release(&self) {
        let mut s = self.lock();
        s.readers -= 1;
        if s.readers == 0 && !s.done {
            // Nobody will read the rest: the downstream body is dropped, mirrors give up.
            s.finish(true);
        }
    }
}

/// See [`Source::hold`].
pub struct Hold(Arc<Source>);

impl Drop for Hold {
    fn drop(&mut self) {
        self.0.release();
    }
}

pub struct Finished(Arc<Source>);

impl Future for Finished {
    type Output = ();
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let mut s = self.0.lock();
        if s.done {
            return Poll::Ready(());
        }
        s.waiters.push(cx.waker().clone());
        Poll::Pending
    }
}

pub struct Complete(Arc<Source>);

impl Future for Complete {
    type Output = Option<Bytes>;
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Bytes>> {
        let mut s = self.0.lock();
        if s.overflowed || s.failed || !s.keep {
            return Poll::Ready(None);
        }
        if !s.done {
            s.waiters.push(cx.waker().clone());
            return Poll::Pending;
        }
        let mut all = BytesMut::with_capacity(s.size);
        for c in &s.chunks {
            all.extend_from_slice(c);
        }
        Poll::Ready(Some(all.freeze()))
    }
}

/// A request body on its way upstream.
pub enum UpBody {
    /// The request had no body.
    Empty,
    /// A body known whole (mirrors).
    Full(Option<Bytes>),
    /// One attempt's view of a streamed downstream body.
    Replay {
        src: Arc<Source>,
        /// Index of the next kept chunk to send again.
        next: usize,
        attempt: u32,
        trailers_sent: bool,
    },
}

impl HttpBody for UpBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.get_mut() {
            UpBody::Empty => Poll::Ready(None),
            UpBody::Full(b) => Poll::Ready(b.take().map(|b| Ok(Frame::data(b)))),
            UpBody::Replay {
                src,
                next,
                attempt,
                trailers_sent,
            } => {
                let mut s = src.lock();
                if s.leader != *attempt {
                    return Poll::Ready(Some(Err("request body taken over by a retry".into())));
                }
                if *next < s.chunks.len() {
                    *next += 1;
                    return Poll::Ready(Some(Ok(Frame::data(s.chunks[*next - 1].clone()))));
                }
                if s.done {
                    if s.failed {
                        return Poll::Ready(Some(Err("downstream request body broke off".into())));
                    }
                    return match (&s.trailers, *trailers_sent) {
                        (Some(t), false) => {
                            *trailers_sent = true;
                            Poll::Ready(Some(Ok(Frame::trailers(t.clone()))))
                        }
                        _ => Poll::Ready(None),
                    };
                }
                let Some(incoming) = s.incoming.as_mut() else {
                    return Poll::Ready(None);
                };
                match Pin::new(incoming).poll_frame(cx) {
                    Poll::Pending => Poll::Pending,
                    Poll::Ready(Some(Ok(frame))) => {
                        if let Some(d) = frame.data_ref() {
                            if s.keep && !s.overflowed {
                                if s.size + d.len() > RETRY_BUFFER_LIMIT {
                                    // Envoy gives up retry and shadow, and keeps streaming.
                                    s.overflowed = true;
                                    s.chunks = Vec::new();
                                    s.size = 0;
                                    *next = 0;
                                    s.wake();
                                } else {
                                    s.size += d.len();
                                    s.chunks.push(d.clone());
                                    *next = s.chunks.len();
                                }
                            }
                        } else if let Some(t) = frame.trailers_ref() {
                            s.trailers = Some(t.clone());
                            *trailers_sent = true;
                        }
                        // The upstream client stops polling once Content-Length bytes went out:
                        // the end is known here, not from a last poll.
                        if s.incoming.as_ref().is_some_and(|i| i.is_end_stream()) {
                            s.finish(false);
                        }
                        Poll::Ready(Some(Ok(frame)))
                    }
                    Poll::Ready(Some(Err(e))) => {
                        s.finish(true);
                        Poll::Ready(Some(Err(e.into())))
                    }
                    Poll::Ready(None) => {
                        s.finish(false);
                        Poll::Ready(None)
                    }
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            UpBody::Empty => true,
            UpBody::Full(b) => b.is_none(),
            UpBody::Replay {
                src,
                next,
                trailers_sent,
                ..
            } => {
                let s = src.lock();
                s.done
                    && !s.failed
                    && *next >= s.chunks.len()
                    && (s.trailers.is_none() || *trailers_sent)
            }
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            UpBody::Empty => SizeHint::with_exact(0),
            UpBody::Full(b) => SizeHint::with_exact(b.as_ref().map_or(0, |b| b.len() as u64)),
            UpBody::Replay { src, next, .. } => {
                let s = src.lock();
                let kept: u64 = s.chunks[(*next).min(s.chunks.len())..]
                    .iter()
                    .map(|c| c.len() as u64)
                    .sum();
                match &s.incoming {
                    Some(i) => {
                        let h = i.size_hint();
                        let mut out = SizeHint::new();
                        out.set_lower(h.lower() + kept);
                        if let Some(u) = h.upper() {
                            out.set_upper(u + kept);
                        }
                        out
                    }
                    None => SizeHint::with_exact(kept),
                }
            }
        }
    }
}

impl Drop for UpBody {
    fn drop(&mut self) {
        if let UpBody::Replay { src, .. } = self {
            src.release();
        }
    }
}

/// A response body cut off when the route timeout fires: the downstream stream is then reset
/// (h2) or the connection closed (HTTP/1.1), as Envoy does once headers were sent.
pub struct Deadline<B> {
    inner: B,
    sleep: Pin<Box<Sleep>>,
}

impl<B> Deadline<B> {
    pub fn new(inner: B, at: Instant) -> Deadline<B> {
        Deadline {
            inner,
            sleep: Box::pin(tokio::time::sleep_until(at)),
        }
    }
}

impl<B> HttpBody for Deadline<B>
where
    B: HttpBody<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(f) => Poll::Ready(f.map(|r| r.map_err(Into::into))),
            Poll::Pending => match this.sleep.as_mut().poll(cx) {
                Poll::Ready(()) => Poll::Ready(Some(Err("upstream request timeout".into()))),
                Poll::Pending => Poll::Pending,
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
