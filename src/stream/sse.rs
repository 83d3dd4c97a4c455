/*!
A Server-Sent Events response body: the subscription's opening messages (state or replay),
then its queue, each message as `id: {channel}:{seq}`, `event: {data_type}`, `data: {json}`;
a `: heartbeat` comment every [`HEARTBEAT`] without messages; and, for a client dropped as a
slow consumer, a final `event: error` with `slow_consumer` before the body ends.

Whatever is ready when the connection asks for more goes out as one body frame (up to
[`FRAME_BYTES`]): a tick's messages cost the client one chunk and one write, not three per
message.

The body holds a guard (the connection's busy mark) for as long as it streams.
*/

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use hyper::body::{Body, Frame as BodyFrame};

use super::hub::Subscription;
use super::message::Frame;
use super::{HEARTBEAT, SLOW_CONSUMER};

/// A frame is sent once it holds this much, even if more messages are ready.
const FRAME_BYTES: usize = 64 * 1024;

/// See the module documentation.
pub struct SseBody {
    sub: Subscription,
    /// What is ready to go out in the next frame.
    out: BytesMut,
    heartbeat: tokio::time::Interval,
    /// No more messages: what is in `out` is the last frame.
    done: bool,
    _guard: Box<dyn Send + Sync>,
}

impl SseBody {
    /// A body sending `opening` first, then what `sub` receives. Call within a runtime.
    pub fn new(sub: Subscription, opening: Vec<Arc<Frame>>, guard: Box<dyn Send + Sync>) -> Self {
        let mut out = BytesMut::with_capacity(4096);
        // Sent at once so the client knows the stream is open even before the first message.
        out.extend_from_slice(b": open\n\n");
        for frame in opening {
            frame.write_sse(&mut out);
        }
        let mut heartbeat =
            tokio::time::interval_at(tokio::time::Instant::now() + HEARTBEAT, HEARTBEAT);
        heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        Self {
            sub,
            out,
            heartbeat,
            done: false,
            _guard: guard,
        }
    }

    /// Queues the final error (after the events already queued, so none is cut in two).
    fn kicked(&mut self) {
        self.out.extend_from_slice(b"event: error\ndata: ");
        self.out.extend_from_slice(SLOW_CONSUMER.as_bytes());
        self.out.extend_from_slice(b"\n\n");
        self.done = true;
    }

    /// Takes what the subscription has ready into `out`, up to [`FRAME_BYTES`].
    fn gather(&mut self, cx: &mut Context<'_>) {
        while !self.done && self.out.len() < FRAME_BYTES {
            if self.sub.flags.kicked() {
                self.kicked();
                return;
            }
            match self.sub.rx.poll_recv(cx) {
                Poll::Ready(Some(frame)) => {
                    frame.write_sse(&mut self.out);
                    self.heartbeat.reset();
                }
                Poll::Ready(None) => {
                    if self.sub.flags.kicked() {
                        self.kicked();
                    } else {
                        self.out.extend_from_slice(b": server stopping\n\n");
                        self.done = true;
                    }
                }
                Poll::Pending => return,
            }
        }
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
        this.gather(cx);
        if this.out.is_empty() && !this.done && this.heartbeat.poll_tick(cx).is_ready() {
            this.out.extend_from_slice(b": heartbeat\n\n");
        }
        if !this.out.is_empty() {
            return Poll::Ready(Some(Ok(BodyFrame::data(this.out.split().freeze()))));
        }
        if this.done {
            return Poll::Ready(None);
        }
        Poll::Pending
    }

    fn is_end_stream(&self) -> bool {
        false
    }
}
