/*!
One HTTP connection's guard.

Each connection is in one [`Phase`] at a time: waiting for (or reading) a request's line and
headers, handling a request, or idle between requests. [`ConnState::watch`] ends the connection
when a phase outlasts its limit — `HTTP_HEADER_TIMEOUT` from the first byte of a request (from
the opening, for a connection's first request), `HTTP_IDLE_TIMEOUT` after a response — or when
the pool sheds it; a request being handled is never timed out.

[`Guarded`] is the socket as hyper sees it: it notes when a request's first byte arrives, and
it replaces the empty-bodied responses hyper writes by itself for requests it cannot parse
(400, 414, 431) with the documented JSON error body, then reads and drops what the client was
still sending, so closing does not reset the connection under the client's feet before it has
read the answer.
*/

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use hyper::StatusCode;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::Notify;
use tokio::time::Instant;

use crate::metrics::Metrics;

/// Longest request target (path and query) answered; longer is a 414.
pub(super) const MAX_URI_BYTES: usize = 8 * 1024;
/// Longest request line plus headers hyper reads; longer is a 431 (a 414 when the request line
/// alone is that long).
pub(super) const MAX_HEAD_BYTES: usize = 16 * 1024;
/// Most headers in one request (hyper's default); more is a 431.
pub(super) const MAX_HEADERS: usize = 100;
/// At most this many bytes are read and dropped after an automatic error answer.
const LINGER_BYTES: usize = 1024 * 1024;

/// What a connection is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Phase {
    /// Waiting for a request's line and headers, or reading them.
    Head = 0,
    /// A request is being handled.
    Busy = 1,
    /// Between a response and the next request's first byte.
    Idle = 2,
}

/// Why [`ConnState::watch`] ended a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Closed {
    HeaderTimeout,
    IdleTimeout,
    /// The pool needed the slot (this connection was the oldest idle one).
    Shed,
}

impl Closed {
    pub(super) fn as_str(self) -> &'static str {
        match self {
            Closed::HeaderTimeout => "header_timeout",
            Closed::IdleTimeout => "idle_timeout",
            Closed::Shed => "shed",
        }
    }
}

/// A connection's phase and since when, shared by its socket wrapper, its service, its
/// watchdog and the pool.
pub(super) struct ConnState {
    /// The pool's time origin: `since_us` of all connections compare.
    epoch: Instant,
    phase: AtomicU8,
    since_us: AtomicU64,
    shed: AtomicBool,
    /// Responses that outlive their request's handling (event streams, upgraded sessions).
    holds: AtomicUsize,
    wake: Notify,
}

/// A response in progress after its service call returned: the connection stays busy (no
/// idle timeout, never shed as idle) until this is dropped.
pub(super) struct Hold(Arc<ConnState>);

impl Drop for Hold {
    fn drop(&mut self) {
        if self.0.holds.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.enter(Phase::Idle);
        }
        self.0.wake.notify_one();
    }
}

impl ConnState {
    /// A new connection, waiting for its first request.
    pub(super) fn new(epoch: Instant) -> Self {
        let state = Self {
            epoch,
            phase: AtomicU8::new(Phase::Head as u8),
            since_us: AtomicU64::new(0),
            shed: AtomicBool::new(false),
            holds: AtomicUsize::new(0),
            wake: Notify::new(),
        };
        state.since_us.store(state.now_us(), Ordering::Release);
        state
    }

    fn now_us(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_micros()).unwrap_or(u64::MAX)
    }

    pub(super) fn phase(&self) -> Phase {
        match self.phase.load(Ordering::Acquire) {
            0 => Phase::Head,
            1 => Phase::Busy,
            _ => Phase::Idle,
        }
    }

    fn enter(&self, phase: Phase) {
        self.since_us.store(self.now_us(), Ordering::Release);
        self.phase.store(phase as u8, Ordering::Release);
        self.wake.notify_one();
    }

    /// Bytes arrived: after a response, they start the next request's head.
    fn on_bytes(&self) {
        if self
            .phase
            .compare_exchange(
                Phase::Idle as u8,
                Phase::Head as u8,
                Ordering::AcqRel,
                Ordering::Acquire,
            )
            .is_ok()
        {
            self.since_us.store(self.now_us(), Ordering::Release);
            self.wake.notify_one();
        }
    }

    /// The service got a request.
    pub(super) fn begin_request(&self) {
        self.enter(Phase::Busy);
    }

    /// The service produced its response (still busy while a [`Hold`] lives).
    pub(super) fn end_request(&self) {
        if self.holds.load(Ordering::Acquire) == 0 {
            self.enter(Phase::Idle);
        }
    }

    /// Keeps the connection busy past its service call, until the hold is dropped.
    pub(super) fn hold(self: &Arc<Self>) -> Hold {
        self.holds.fetch_add(1, Ordering::AcqRel);
        Hold(Arc::clone(self))
    }

    /// Completes when no [`Hold`] is left (an upgraded session has ended).
    pub(super) async fn released(&self) {
        while self.holds.load(Ordering::Acquire) > 0 {
            self.wake.notified().await;
        }
    }

    /// Asks the connection to close (its watchdog ends it).
    pub(super) fn shed(&self) {
        self.shed.store(true, Ordering::Release);
        self.wake.notify_one();
    }

    /// Since when the connection has been waiting (the smaller, the older), or `None` while it
    /// handles a request or once it was shed: such connections are not shed.
    pub(super) fn idle_since(&self) -> Option<u64> {
        if self.shed.load(Ordering::Acquire) || self.phase() == Phase::Busy {
            return None;
        }
        Some(self.since_us.load(Ordering::Acquire))
    }

    /// Completes when the connection must close: its phase outlasted its limit, or it was shed.
    /// `head_cutoff` (set once the server stops) ends a connection still sending its head by
    /// then at the latest.
    pub(super) async fn watch(
        &self,
        header: Duration,
        idle: Duration,
        head_cutoff: Option<Instant>,
    ) -> Closed {
        loop {
            if self.shed.load(Ordering::Acquire) {
                return Closed::Shed;
            }
            let since = self.epoch + Duration::from_micros(self.since_us.load(Ordering::Acquire));
            let deadline = match self.phase() {
                Phase::Busy => None,
                Phase::Head => {
                    let at = since + header;
                    Some((
                        head_cutoff.map_or(at, |cut| at.min(cut)),
                        Closed::HeaderTimeout,
                    ))
                }
                Phase::Idle => Some((since + idle, Closed::IdleTimeout)),
            };
            match deadline {
                None => self.wake.notified().await,
                Some((at, why)) if Instant::now() >= at => return why,
                Some((at, _)) => {
                    tokio::select! {
                        () = tokio::time::sleep_until(at) => {}
                        () = self.wake.notified() => {}
                    }
                }
            }
        }
    }
}

/// How long the request line of the head being read (or last read) is: enough to tell, when
/// hyper gives up on a head too large, whether the request line itself was the long part (a 414
/// rather than a 431).
#[derive(Debug, Default)]
struct HeadScan {
    /// Bytes of the current line, without CR.
    line_len: usize,
    /// Complete lines of the current head.
    lines: usize,
    request_line_len: usize,
    /// The empty line that ends the head was seen: the next byte starts another head.
    ended: bool,
}

impl HeadScan {
    fn feed(&mut self, bytes: &[u8]) {
        for &b in bytes {
            match b {
                b'\r' => {}
                b'\n' => {
                    if self.line_len > 0 {
                        self.lines += 1;
                    } else if self.lines > 0 {
                        self.ended = true;
                    } // else: an empty line before a request, which HTTP tolerates
                    self.line_len = 0;
                }
                _ => {
                    if self.ended {
                        *self = Self::default();
                    }
                    if self.lines == 0 {
                        self.request_line_len += 1;
                    }
                    self.line_len += 1;
                }
            }
        }
    }

    fn request_line_too_long(&self) -> bool {
        self.request_line_len > MAX_URI_BYTES
    }
}

/// The socket under hyper (see the module documentation).
pub(super) struct Guarded<T> {
    inner: T,
    state: Arc<ConnState>,
    metrics: Arc<Metrics>,
    scan: HeadScan,
    /// The JSON answer standing in for hyper's empty one, and how much of it is written.
    reply: Option<(Vec<u8>, usize)>,
    /// An automatic answer was replaced: read what the client still sends before closing.
    linger: bool,
    write_shut: bool,
    lingered: usize,
}

impl<T> Guarded<T> {
    pub(super) fn new(inner: T, state: Arc<ConnState>, metrics: Arc<Metrics>) -> Self {
        Self {
            inner,
            state,
            metrics,
            scan: HeadScan::default(),
            reply: None,
            linger: false,
            write_shut: false,
            lingered: 0,
        }
    }
}

impl<T: AsyncWrite + Unpin> Guarded<T> {
    /// Writes what is left of the replacement answer.
    fn poll_reply(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while let Some((bytes, at)) = &mut self.reply {
            if *at == bytes.len() {
                self.reply = None;
                break;
            }
            let n = ready!(Pin::new(&mut self.inner).poll_write(cx, &bytes[*at..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            *at += n;
        }
        Poll::Ready(Ok(()))
    }

    /// If `buf` starts with one of hyper's automatic error answers, takes it in place of hyper's
    /// bytes and returns how many of them it stands for.
    fn replace_automatic(&mut self, buf: &[u8]) -> Option<usize> {
        let (status, head_len, date) = automatic_error(buf)?;
        let status = if status == StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE
            && self.scan.request_line_too_long()
        {
            StatusCode::URI_TOO_LONG
        } else {
            status
        };
        self.reply = Some((error_reply(status, date), 0));
        self.linger = true;
        self.metrics.http_requests.inc();
        self.metrics.http_client_errors.inc();
        Some(head_len)
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Guarded<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        ready!(Pin::new(&mut this.inner).poll_read(cx, buf))?;
        let new = &buf.filled()[before..];
        if !new.is_empty() {
            this.state.on_bytes();
            this.scan.feed(new);
        }
        Poll::Ready(Ok(()))
    }
}

impl<T: AsyncRead + AsyncWrite + Unpin> AsyncWrite for Guarded<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        ready!(this.poll_reply(cx))?;
        if let Some(n) = this.replace_automatic(buf) {
            // Written later (flush, shutdown) if the socket is not ready now.
            if let Poll::Ready(Err(e)) = this.poll_reply(cx) {
                return Poll::Ready(Err(e));
            }
            return Poll::Ready(Ok(n));
        }
        Pin::new(&mut this.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        ready!(this.poll_reply(cx))?;
        if let Some(first) = bufs.iter().find(|b| !b.is_empty())
            && let Some(n) = this.replace_automatic(first)
        {
            if let Poll::Ready(Err(e)) = this.poll_reply(cx) {
                return Poll::Ready(Err(e));
            }
            return Poll::Ready(Ok(n));
        }
        Pin::new(&mut this.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_reply(cx))?;
        Pin::new(&mut this.inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_reply(cx))?;
        if !this.write_shut {
            ready!(Pin::new(&mut this.inner).poll_shutdown(cx))?;
            this.write_shut = true;
        }
        // After an automatic error the client may still be sending the rest of what was too
        // long; closing with unread bytes would reset the connection and could destroy the
        // answer before the client reads it. Drain until the client closes (bounded in bytes
        // here, in time by the header timeout).
        while this.linger && this.lingered < LINGER_BYTES {
            let mut scratch = [0_u8; 4096];
            let mut buf = ReadBuf::new(&mut scratch);
            match Pin::new(&mut this.inner).poll_read(cx, &mut buf) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Ok(())) if !buf.filled().is_empty() => {
                    this.lingered += buf.filled().len();
                }
                Poll::Ready(_) => break,
            }
        }
        Poll::Ready(Ok(()))
    }
}

/// Hyper's own answer to a request it could not parse: `HTTP/1.x 400|414|431`, no
/// `content-type` (every answer of ours has one), empty. Returns its status, the length of its
/// head, and its `date` line if any.
fn automatic_error(buf: &[u8]) -> Option<(StatusCode, usize, Option<&[u8]>)> {
    let rest = buf.strip_prefix(b"HTTP/1.")?;
    let code = rest.get(2..5)?;
    let status = match code {
        b"400" => StatusCode::BAD_REQUEST,
        b"414" => StatusCode::URI_TOO_LONG,
        b"431" => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
        _ => return None,
    };
    let head_len = buf.windows(4).position(|w| w == b"\r\n\r\n")? + 4;
    let mut date = None;
    for line in buf[..head_len].split(|&b| b == b'\n').skip(1) {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let name = line.split(|&b| b == b':').next().unwrap_or_default();
        if name.eq_ignore_ascii_case(b"content-type") {
            return None;
        }
        if name.eq_ignore_ascii_case(b"content-length")
            && line[name.len()..]
                .iter()
                .any(|b| b.is_ascii_digit() && *b != b'0')
        {
            return None;
        }
        if name.eq_ignore_ascii_case(b"date") {
            date = Some(line);
        }
    }
    Some((status, head_len, date))
}

/// The JSON answer for a request the server could not take.
fn error_reply(status: StatusCode, date: Option<&[u8]>) -> Vec<u8> {
    let (kind, message) = match status {
        StatusCode::URI_TOO_LONG => (
            "uri_too_long",
            format!("the request target is longer than {MAX_URI_BYTES} bytes"),
        ),
        StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE => (
            "headers_too_large",
            format!(
                "the request line and headers are longer than {MAX_HEAD_BYTES} bytes or number more than {MAX_HEADERS} headers"
            ),
        ),
        _ => (
            "bad_request",
            "malformed HTTP request: the request line or a header could not be parsed".into(),
        ),
    };
    let body = serde_json::to_vec(&serde_json::json!({ "error": kind, "message": message }))
        .unwrap_or_default();
    let mut out = Vec::with_capacity(body.len() + 160);
    out.extend_from_slice(
        format!(
            "HTTP/1.1 {} {}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n",
            status.as_u16(),
            status.canonical_reason().unwrap_or_default(),
            body.len()
        )
        .as_bytes(),
    );
    if let Some(date) = date {
        out.extend_from_slice(date);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(&body);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn automatic_errors_are_recognised_and_ours_are_not() {
        let hyper_431 =
            b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-length: 0\r\ndate: Mon, 01 Jan 2024 00:00:00 GMT\r\n\r\n";
        let (status, len, date) = automatic_error(hyper_431).expect("automatic");
        assert_eq!(status, StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE);
        assert_eq!(len, hyper_431.len());
        assert_eq!(date, Some(&b"date: Mon, 01 Jan 2024 00:00:00 GMT"[..]));
        let ours = b"HTTP/1.1 400 Bad Request\r\ncontent-type: application/json\r\ncontent-length: 20\r\n\r\n{\"error\":\"x\"}";
        assert!(automatic_error(ours).is_none());
        assert!(automatic_error(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n").is_none());
        assert!(automatic_error(b"{\"error\":\"HTTP/1.1 400\"}").is_none());
        let reply = String::from_utf8(error_reply(StatusCode::BAD_REQUEST, None)).expect("utf-8");
        let (head, body) = reply.split_once("\r\n\r\n").expect("head");
        assert!(head.starts_with("HTTP/1.1 400 Bad Request\r\n"), "{head}");
        assert!(
            head.contains(&format!("content-length: {}", body.len())),
            "{head}"
        );
        let json: serde_json::Value = serde_json::from_str(body).expect("JSON");
        assert_eq!(json["error"], "bad_request");
    }

    #[test]
    fn the_scan_measures_the_request_line() {
        let long = "a".repeat(MAX_URI_BYTES);
        let mut scan = HeadScan::default();
        scan.feed(b"\r\nGET /");
        scan.feed(long.as_bytes());
        assert!(scan.request_line_too_long(), "unterminated");
        scan.feed(b" HTTP/1.1\r\nHost: x\r\n\r\n");
        assert!(
            scan.request_line_too_long(),
            "the head ended; still its request line"
        );
        scan.feed(b"GET /health HTTP/1.1\r\nX-Long: ");
        scan.feed(long.as_bytes());
        scan.feed(b"\r\n\r\n");
        assert!(
            !scan.request_line_too_long(),
            "a new head, with a long header"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn phases_have_their_own_deadlines() {
        let header = Duration::from_secs(5);
        let idle = Duration::from_secs(30);
        let state = ConnState::new(Instant::now());
        let start = Instant::now();
        assert_eq!(state.watch(header, idle, None).await, Closed::HeaderTimeout);
        assert_eq!(start.elapsed(), header, "a silent new connection");

        let state = Arc::new(ConnState::new(Instant::now()));
        state.begin_request();
        let busy =
            tokio::time::timeout(Duration::from_secs(3_600), state.watch(header, idle, None));
        assert!(
            busy.await.is_err(),
            "a request being handled is never timed out"
        );
        state.end_request();
        let start = Instant::now();
        let watched = {
            let state = Arc::clone(&state);
            tokio::spawn(async move { state.watch(header, idle, None).await })
        };
        tokio::time::sleep(Duration::from_secs(20)).await;
        state.on_bytes(); // the next request starts: the header limit counts from here
        assert_eq!(watched.await.expect("join"), Closed::HeaderTimeout);
        assert_eq!(start.elapsed(), Duration::from_secs(25));

        state.end_request();
        let start = Instant::now();
        assert_eq!(state.watch(header, idle, None).await, Closed::IdleTimeout);
        assert_eq!(start.elapsed(), idle);

        state.on_bytes();
        let cut = Instant::now() + Duration::from_secs(1);
        assert_eq!(
            state.watch(header, idle, Some(cut)).await,
            Closed::HeaderTimeout
        );
        assert_eq!(Instant::now(), cut, "stopping cuts a slow head short");

        state.shed();
        assert_eq!(state.idle_since(), None);
        assert_eq!(state.watch(header, idle, None).await, Closed::Shed);
    }
}
