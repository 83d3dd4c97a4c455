/*!
A Server-Sent Events response body: the subscription's opening messages (state or replay),
then its queue, each message as `id: {channel}:{seq}`, `event: {data_type}`, `data: {json}`;
a `: heartbeat` comment every [`HEARTBEAT`] without messages; and, for a client dropped as a
slow consumer, a final `event: error` with `slow_consumer` before the body ends.

The body holds a guard (the connection's busy mark) for as long as it streams.
*/

use std::collections::VecDeque;
use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use hyper::body::{Body, Frame as BodyFrame};

use super::hub::Subscription;
use super::message::Frame;
use super::{HEARTBEAT, SLOW_CONSUMER};

/// See the module documentation.
pub struct SseBody {
    sub: Subscription,
    pending: VecDeque<Bytes>,
    heartbeat: tokio::time::Interval,
    done: bool,
    _guard: Box<dyn Send + Sync>,
}

impl SseBody {
    /// A body sending `opening` first, then what `sub` receives. Call within a runtime.
    pub fn new(sub: Subscription, opening: Vec<Arc<Frame>>, guard: Box<dyn Send + Sync>) -> Self {
        let mut pending = VecDeque::with_capacity(opening.len() * 3 + 1);
        // Sent at once so the client knows the stream is open even before the first message.
        pending.push_back(Bytes::from_static(b": open\n\n"));
        for frame in opening {
            pending.extend(frame.sse_chunks());
        }
        let mut heartbeat =
            tokio::time::interval_at(tokio::time::Instant::now() + HEARTBEAT, HEARTBEAT);
        heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        Self {
            sub,
            pending,
            heartbeat,
            done: false,
            _guard: guard,
        }
    }

    /// Queues the final error (after the event being sent, so none is cut in two).
    fn kicked(&mut self) {
        let mut text = Vec::with_capacity(SLOW_CONSUMER.len() + 24);
        text.extend_from_slice(b"event: error\ndata: ");
        text.extend_from_slice(SLOW_CONSUMER.as_bytes());
        text.extend_from_slice(b"\n\n");
        self.pending.push_back(Bytes::from(text));
        self.done = true;
    }
}

impl Body for SseBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<BodyFrame<Bytes>, Infallible>>> {
        let this = self.get_mut();
        loop {
            if let Some(chunk) = this.pending.pop_front() {
                return Poll::Ready(Some(Ok(BodyFrame::data(chunk))));
            }
            if this.done {
                return Poll::Ready(None);
            }
            if this.sub.flags.kicked() {
                this.kicked();
                continue;
            }
            match this.sub.rx.poll_recv(cx) {
                Poll::Ready(Some(frame)) => {
                    this.pending.extend(frame.sse_chunks());
                    this.heartbeat.reset();
                    continue;
                }
                Poll::Ready(None) => {
                    if this.sub.flags.kicked() {
                        this.kicked();
                    } else {
                        this.pending
                            .push_back(Bytes::from_static(b": server stopping\n\n"));
                        this.done = true;
                    }
                    continue;
                }
                Poll::Pending => {}
            }
            if this.heartbeat.poll_tick(cx).is_ready() {
                this.pending
                    .push_back(Bytes::from_static(b": heartbeat\n\n"));
                continue;
            }
            return Poll::Pending;
        }
    }

    fn is_end_stream(&self) -> bool {
        false
    }
}
