//! A member channel whose request bodies say they have ended with their last message,
//! so that hyper sends a unary call's DATA with END_STREAM instead of an empty DATA frame
//! after it.
//!
//! Why: tonic's request body reports its end only when polled once more after its
//! message, and hyper's body pipe sends that end as a frame of its own, flushed in its
//! own `write`. On loopback a write costs the sender the receiver's TCP work too, and
//! the orchestrator makes thousands of calls a second (docs/scaling.md, "Orchestrator
//! cost"). Looking one frame ahead in the body costs nothing: a unary body's second
//! poll is ready at once.

use bytes::Bytes;
use http_body::{Body as HttpBody, Frame, SizeHint};
use std::pin::Pin;
use std::task::{Context, Poll};
use tonic::body::Body;
use tonic::Status;

/// A service (a member's `Channel`) whose requests' bodies look one frame ahead.
#[derive(Debug, Clone)]
pub struct EndsWithMessage<S>(pub S);

impl<S> tower::Service<http::Request<Body>> for EndsWithMessage<S>
where
    S: tower::Service<http::Request<Body>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<Body>) -> Self::Future {
        self.0.call(req.map(|body| Body::new(LookAhead::new(body))))
    }
}

/// A body that, on handing out a frame, polls for the next one: when there is none,
/// it has ended with that frame ([`HttpBody::is_end_stream`]).
struct LookAhead {
    inner: Body,
    next: Option<Result<Frame<Bytes>, Status>>,
    ended: bool,
}

impl LookAhead {
    fn new(inner: Body) -> Self {
        Self {
            inner,
            next: None,
            ended: false,
        }
    }
}

impl HttpBody for LookAhead {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
        if let Some(next) = self.next.take() {
            return Poll::Ready(Some(next));
        }
        if self.ended {
            return Poll::Ready(None);
        }
        let frame = match Pin::new(&mut self.inner).poll_frame(cx) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(None) => {
                self.ended = true;
                return Poll::Ready(None);
            }
            Poll::Ready(Some(frame)) => frame,
        };
        if frame.is_ok() {
            match Pin::new(&mut self.inner).poll_frame(cx) {
                Poll::Ready(None) => self.ended = true,
                Poll::Ready(Some(next)) => self.next = Some(next),
                // Not ready yet (a streaming body): asked again when it wakes us.
                Poll::Pending => {}
            }
        }
        Poll::Ready(Some(frame))
    }

    fn is_end_stream(&self) -> bool {
        self.next.is_none() && (self.ended || self.inner.is_end_stream())
    }

    fn size_hint(&self) -> SizeHint {
        match &self.next {
            Some(_) => SizeHint::default(),
            None => self.inner.size_hint(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frames(parts: Vec<&'static str>) -> Body {
        let stream = futures::stream::iter(
            parts
                .into_iter()
                .map(|p| Ok::<_, Status>(Frame::data(Bytes::from(p)))),
        );
        Body::new(http_body_util::StreamBody::new(stream))
    }

    async fn next(body: &mut LookAhead) -> Option<Bytes> {
        std::future::poll_fn(|cx| Pin::new(&mut *body).poll_frame(cx))
            .await
            .map(|f| f.unwrap().into_data().unwrap())
    }

    #[tokio::test]
    async fn a_body_ends_with_its_last_frame_and_loses_none() {
        let mut one = LookAhead::new(frames(vec!["message"]));
        assert!(!one.is_end_stream());
        assert_eq!(next(&mut one).await.as_deref(), Some(&b"message"[..]));
        assert!(one.is_end_stream(), "ended with its only frame");
        assert_eq!(next(&mut one).await, None);

        let mut three = LookAhead::new(frames(vec!["a", "b", "c"]));
        let mut got = vec![];
        while let Some(b) = next(&mut three).await {
            got.push(b);
            if got.len() < 3 {
                assert!(!three.is_end_stream());
            }
        }
        assert_eq!(got, ["a", "b", "c"]);
        assert!(three.is_end_stream());
    }
}
