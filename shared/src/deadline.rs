//! A request body that must arrive by a deadline.
//!
//! Both servers read request headers under hyper's header timeout, but a
//! body has no such bound: a client that sends its headers and then one
//! byte a second holds a connection slot (and a task) for as long as it
//! likes, and a few thousand of them exhaust the connection cap. Each
//! server wraps every request body in [`DeadlineBody`] the moment the
//! headers are parsed; past the deadline the next read fails with
//! [`DeadlineError::TimedOut`], which the body readers answer with
//! `408 request_timeout` and a closed connection.
//!
//! The timer is created only when a read would wait: a body that arrived
//! with its headers (every well-behaved small request) costs one clock read.

use std::future::Future as _;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http_body::{Body, Frame, SizeHint};
use tokio::time::{Instant, Sleep};

/// Why reading a [`DeadlineBody`] failed.
#[derive(Debug, thiserror::Error)]
pub enum DeadlineError {
    /// The body did not finish arriving before its deadline.
    #[error("the request body did not arrive before its deadline")]
    TimedOut,
    /// The underlying body failed (the client reset the connection, a
    /// malformed chunk).
    #[error(transparent)]
    Body(Box<dyn std::error::Error + Send + Sync>),
}

impl DeadlineError {
    /// Whether `e` (as boxed by body combinators such as `Limited`, or any
    /// error whose source chain holds one) is a body deadline passing.
    pub fn is_timeout(e: &(dyn std::error::Error + 'static)) -> bool {
        let mut cur = Some(e);
        while let Some(err) = cur {
            if matches!(
                err.downcast_ref::<DeadlineError>(),
                Some(DeadlineError::TimedOut)
            ) {
                return true;
            }
            cur = err.source();
        }
        false
    }
}

/// `inner`, failing with [`DeadlineError::TimedOut`] once `deadline` passes
/// before its last frame. After the failure it stays failed (ended).
pub struct DeadlineBody<B> {
    inner: B,
    deadline: Instant,
    sleep: Option<Pin<Box<Sleep>>>,
    /// Set when the deadline fired, for servers whose body readers turn
    /// every read error into their own answer (see [`Self::with_flag`]).
    flag: Option<Arc<AtomicBool>>,
    timed_out: bool,
}

impl<B> DeadlineBody<B> {
    /// `inner`, due within `timeout` from now.
    pub fn new(inner: B, timeout: Duration) -> Self {
        Self {
            inner,
            deadline: Instant::now() + timeout,
            sleep: None,
            flag: None,
            timed_out: false,
        }
    }

    /// Also sets `flag` when the deadline fires, so the server can replace
    /// whatever answer the handler made of the failed read with a `408`.
    pub fn with_flag(mut self, flag: Arc<AtomicBool>) -> Self {
        self.flag = Some(flag);
        self
    }
}

impl<B> Body for DeadlineBody<B>
where
    B: Body + Unpin,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    type Data = B::Data;
    type Error = DeadlineError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = self.get_mut();
        if this.timed_out {
            return Poll::Ready(None);
        }
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(frame) => {
                Poll::Ready(frame.map(|f| f.map_err(|e| DeadlineError::Body(e.into()))))
            }
            Poll::Pending => {
                let deadline = this.deadline;
                let sleep = this
                    .sleep
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
                if sleep.as_mut().poll(cx).is_pending() {
                    return Poll::Pending;
                }
                this.timed_out = true;
                if let Some(flag) = &this.flag {
                    flag.store(true, Ordering::Release);
                }
                Poll::Ready(Some(Err(DeadlineError::TimedOut)))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.timed_out || self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A body that never yields a frame.
    struct Stalled;

    impl Body for Stalled {
        type Data = std::io::Cursor<Vec<u8>>;
        type Error = std::io::Error;
        fn poll_frame(
            self: Pin<&mut Self>,
            _: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
            Poll::Pending
        }
    }

    #[tokio::test]
    async fn a_stalled_body_fails_at_its_deadline_and_sets_the_flag() {
        let flag = Arc::new(AtomicBool::new(false));
        let mut body =
            DeadlineBody::new(Stalled, Duration::from_millis(20)).with_flag(flag.clone());
        let frame = std::future::poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await;
        let err = frame.expect("a frame").expect_err("an error");
        assert!(DeadlineError::is_timeout(&err));
        assert!(flag.load(Ordering::Acquire));
        assert!(body.is_end_stream(), "a timed-out body stays ended");
        let boxed: Box<dyn std::error::Error + Send + Sync> = err.into();
        assert!(
            DeadlineError::is_timeout(&*boxed),
            "found through a box too"
        );
        let other = DeadlineError::Body("reset".into());
        assert!(!DeadlineError::is_timeout(&other));
    }
}
