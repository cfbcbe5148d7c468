//! HTTP/1.1 on the public listener without hyper's per-request machinery,
//! for the requests the hot routes get; hyper serves everything else.
//!
//! Why: on the hot routes the engine's own work is a few thousand
//! instructions, and hyper's connection state machine around it (its
//! dispatcher, the body channel, a header-read timer armed and dropped for
//! every request, the response encoder's header map walk) was as large
//! again (`deploy/instructions.sh`, BENCHMARKS.md "An HTTP/1.1 fast path").
//! This loop reads a request into one buffer, parses its head with
//! `httparse` (the parser hyper uses), hands the router the request as it
//! lies in that buffer (a [`crate::router::Incoming`]: no `Uri`, no
//! `HeaderMap`, no copy), and writes the answer's head and body with one
//! `write`.
//!
//! It takes only what it can serve exactly: an HTTP/1.1 request with no
//! `Transfer-Encoding`, `Expect` or `Upgrade`, at most one `Content-Length`
//! no larger than the body cap, and a method other than `HEAD` and
//! `CONNECT`, whose target is a path of visible ASCII ([`target`]). At the
//! first request that is anything else (a parse error included) the
//! connection is handed to hyper with every byte read so far
//! ([`End::Handover`]), and hyper serves it to its end, answering the same
//! way it always has. The tests in `h1/tests.rs` send the same requests to
//! both and compare the answers.
//!
//! The deadlines of `server.rs` hold here too: the headers within
//! `header_read_timeout` of accept or of the previous answer, the body within
//! `body_read_timeout` of the headers (`408`, closed), the answer within
//! `handler_timeout` (`503`, closed; a route still waiting then finishes
//! in the connection's task). One timer per connection, created at the
//! first wait and moved only when it fires before the current deadline or
//! a new deadline comes before it, serves all three: a request answered at
//! once costs no timer operation and no clock read of its own (the next
//! header deadline and the `Date` come from the router's closing clock
//! read), one that waits a clock read for its handler deadline.

use std::future::Future as _;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::header::{CONNECTION, CONTENT_LENGTH, DATE};
use http::{HeaderMap, Method, Response, StatusCode};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt as _, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::Notify;
use tokio::time::{Instant, Sleep};

use crate::request::{Field, Headers};
use crate::response::{self, Body, Timing, SERVER_TIMING};
use crate::router::{Incoming, RequestBody};

/// The body type of an [`Incoming`] here: there is none to read, it came
/// with the head ([`RequestBody::Read`]).
pub(crate) type NoBody = http_body_util::Empty<Bytes>;

/// What the loop hands a request to: the router (`server.rs`), or a test's
/// route. The request borrows the connection's buffer, and the answer's
/// future may borrow it too.
pub(crate) trait Route {
    /// The answer to `req`, and when it was made ([`Timing`]).
    fn route<'a>(
        &'a self,
        req: Incoming<'a, NoBody>,
    ) -> impl std::future::Future<Output = (Response<Body>, Timing)> + 'a;
}

#[cfg(test)]
mod tests;

/// The longest request head taken here; a longer one goes to hyper, which
/// has its own limit.
pub(crate) const MAX_HEAD: usize = 16 * 1024;
/// Most header fields in a request taken here.
const MAX_HEADERS: usize = 64;
// A head's fields are hidden by one bit each (`request::Headers`).
const _: () = assert!(MAX_HEADERS <= 64);
/// A connection's read buffer: hyper's initial size. It grows for a large
/// body and shrinks back once that request is served, so an idle connection
/// holds this much.
const READ_BUFFER: usize = 8 * 1024;
/// A write buffer grown past this by a large answer is given back.
const KEEP_WRITE_BUFFER: usize = 64 * 1024;

/// Tells idle connections to close: set once, when the server stops.
#[derive(Default)]
pub(crate) struct Stop {
    stopping: AtomicBool,
    notify: Notify,
}

impl Stop {
    /// Asks every connection to close once it is idle (between requests):
    /// an answer being made is still written, with `connection: close`.
    pub(crate) fn stop(&self) {
        self.stopping.store(true, Ordering::Release);
        self.notify.notify_waiters();
    }

    fn stopping(&self) -> bool {
        self.stopping.load(Ordering::Acquire)
    }
}

/// The three deadlines of a request (see `server::ServerLimits`).
#[derive(Clone, Copy)]
pub(crate) struct Deadlines {
    pub(crate) header: Duration,
    pub(crate) body: Duration,
    pub(crate) handler: Duration,
}

/// How a connection ended here.
pub(crate) enum End {
    /// Closed: by the client, a deadline, an answer with `connection:
    /// close`, an I/O error, or the server stopping.
    Closed,
    /// A request this loop does not take: hyper goes on from the bytes
    /// read so far (the start of that request and anything after it).
    Handover(Bytes),
}

/// Why a wait for more bytes ended.
enum Wait {
    Data,
    Eof,
    Late,
    Stopped,
}

/// What the head of the buffered request says, by offsets into the buffer.
#[derive(Default)]
struct Head {
    /// Bytes of the head, blank line included.
    len: usize,
    method: Method,
    path: (usize, usize),
    /// Name start and length, value start and length.
    headers: Fields,
    count: usize,
    body: usize,
    close: bool,
}

/// Serves `stream` until it closes or hands over. `route` makes the answer
/// to a request (the router); `late` makes the answer when a deadline
/// passes first: the body's (`408`, or `503` if the handler's is shorter)
/// or, for a route still waiting, the handler's (`late(false)`, the `503`).
///
/// The route's future lives in this connection's own task, not in a box of
/// its own: no allocation and copy of the router's state machine per
/// request, and a route that waits (a store read, anti-ATO's durable write)
/// is held to the handler deadline by the connection's one timer instead of
/// a timer of its own. A route still waiting at the deadline is answered
/// `503` with `connection: close`, then finishes in this task (as
/// `server::answer_within` finishes it in a task of its own), so no route
/// is cut off between two store writes; the connection's slot is held until
/// it has, which bounds such routes by the connection cap.
pub(crate) async fn serve<R: Route>(
    stream: &mut TcpStream,
    deadlines: Deadlines,
    stop: &Stop,
    route: &R,
    late: impl Fn(bool) -> Response<Body>,
) -> End {
    let mut notified = Box::pin(stop.notify.notified());
    notified.as_mut().enable();
    let mut conn = Conn {
        stream,
        stop,
        notified,
        head: Head::default(),
        buf: vec![0; READ_BUFFER],
        start: 0,
        end: 0,
        out: Vec::with_capacity(1024),
        timer: None,
        deadline: Instant::now() + deadlines.header,
        registered: false,
    };
    loop {
        // A whole head, or a reason to stop.
        loop {
            match parse(&conn.buf[conn.start..conn.end], &mut conn.head) {
                Parsed::Head => break,
                Parsed::Other => return conn.handover(),
                Parsed::Partial if conn.end - conn.start >= MAX_HEAD => return conn.handover(),
                Parsed::Partial => {}
            }
            let idle = conn.start == conn.end;
            match conn.fill(idle).await {
                Ok(Wait::Data) => {}
                Ok(Wait::Eof | Wait::Late | Wait::Stopped) | Err(_) => return End::Closed,
            }
        }
        let head = &conn.head;
        let (total, close) = (head.len + head.body, head.close);
        // Its body: within the body deadline, and the handler's.
        let mut budget = deadlines.handler;
        if conn.end - conn.start < total {
            let headers_at = Instant::now();
            conn.deadline = headers_at + deadlines.handler.min(deadlines.body);
            // The buffer grows as bytes arrive (`fill`), not to the declared
            // length: a client that declares 64 KiB and sends nothing holds
            // only the usual buffer.
            while conn.end - conn.start < total {
                match conn.fill(false).await {
                    Ok(Wait::Data) => {}
                    Ok(Wait::Late) => {
                        let res = late(deadlines.body <= deadlines.handler);
                        let timing = Timing {
                            at: std::time::Instant::now(),
                            total_micros: None,
                        };
                        let _ = send(conn.stream, &mut conn.out, res, true, timing).await;
                        return End::Closed;
                    }
                    Ok(Wait::Eof | Wait::Stopped) | Err(_) => return End::Closed,
                }
            }
            budget = budget.saturating_sub(headers_at.elapsed());
        }
        let at = conn.start;
        let Some(req) = incoming(&conn.buf[at..at + total], &conn.head) else {
            // A target this loop does not take (not a plain path):
            // hyper answers it as it always has.
            return conn.handover();
        };
        // The route borrows the request's bytes in the buffer, so it is
        // polled and dropped in this block, before the buffer moves on.
        let (res, timing) = {
            let mut routed = std::pin::pin!(route.route(req));
            match within(&mut conn.timer, routed.as_mut(), budget).await {
                Some(answer) => answer,
                None => {
                    let timing = Timing {
                        at: std::time::Instant::now(),
                        total_micros: None,
                    };
                    if send(conn.stream, &mut conn.out, late(false), true, timing)
                        .await
                        .is_ok()
                    {
                        let _ = conn.stream.shutdown().await;
                    }
                    let _ = routed.await;
                    return End::Closed;
                }
            }
        };
        conn.start += total;
        // A body's `408` leaves the connection unusable, as in hyper's path.
        let close = close
            || stop.stopping()
            || res.status() == StatusCode::REQUEST_TIMEOUT
            || wants_close(res.headers());
        let waited = match send(conn.stream, &mut conn.out, res, close, timing).await {
            Ok(waited) if !close => waited,
            _ => return End::Closed,
        };
        // The next head is due within the header deadline of this answer:
        // of the moment it was made when it left at once (the router's
        // clock read, no new one), else of the moment the client took it.
        let sent = if waited {
            Instant::now()
        } else {
            Instant::from_std(timing.at)
        };
        conn.deadline = sent + deadlines.header;
        conn.settle();
    }
}

/// Makes room in a full read buffer (`end == buf.len()`) for one more
/// read: the unserved bytes `buf[start..end]` move to the front, and the
/// buffer grows only by what those bytes leave too little room for. The
/// loop reads only while the current request is incomplete, so the
/// unserved bytes are at most one head (under [`MAX_HEAD`]) or one request
/// (under the body cap), and the buffer stays within that plus
/// [`READ_BUFFER`] however long a client keeps a pipeline full. (Growing
/// by a step at every full buffer, as the first version did, let a client
/// that always left a partial request at the end grow it without bound.)
fn make_room(buf: &mut Vec<u8>, start: &mut usize, end: &mut usize) {
    if *start > 0 {
        buf.copy_within(*start..*end, 0);
        *end -= *start;
        *start = 0;
    }
    if buf.len() - *end < READ_BUFFER / 2 {
        buf.resize(*end + READ_BUFFER, 0);
    }
}

/// One connection's buffers and deadline.
struct Conn<'a> {
    stream: &'a mut TcpStream,
    /// The current request's head, parsed in place (it is a kilobyte of
    /// offsets: not moved per request).
    head: Head,
    stop: &'a Stop,
    /// On the stop signal's list from the start; polled once, at the first
    /// idle wait, to leave this task's waker there (the waker of a task does
    /// not change, so later waits only read [`Stop::stopping`]).
    notified: Pin<Box<tokio::sync::futures::Notified<'a>>>,
    /// Read buffer, initialised (reads go into `buf[end..]`); the unserved
    /// bytes are `buf[start..end]`.
    buf: Vec<u8>,
    start: usize,
    end: usize,
    out: Vec<u8>,
    /// Armed at or before `deadline`: moved on when it fires early, moved
    /// back when the deadline comes before it.
    timer: Option<Pin<Box<Sleep>>>,
    deadline: Instant,
    /// Whether `notified` holds this task's waker.
    registered: bool,
}

impl Conn<'_> {
    /// Reads once into the buffer, waiting if nothing is there: until the
    /// deadline, or, when `idle` (no request begun), until the server stops.
    async fn fill(&mut self, idle: bool) -> io::Result<Wait> {
        if self.end == self.buf.len() {
            make_room(&mut self.buf, &mut self.start, &mut self.end);
        }
        std::future::poll_fn(|cx| {
            let mut read = ReadBuf::new(&mut self.buf[self.end..]);
            match Pin::new(&mut *self.stream).poll_read(cx, &mut read) {
                Poll::Ready(Ok(())) => {
                    let n = read.filled().len();
                    self.end += n;
                    return Poll::Ready(Ok(if n == 0 { Wait::Eof } else { Wait::Data }));
                }
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => {}
            }
            if idle {
                if self.stop.stopping() {
                    return Poll::Ready(Ok(Wait::Stopped));
                }
                if !self.registered {
                    self.registered = true;
                    if self.notified.as_mut().poll(cx).is_ready() {
                        return Poll::Ready(Ok(Wait::Stopped));
                    }
                }
            }
            if passed(&mut self.timer, self.deadline, cx) {
                return Poll::Ready(Ok(Wait::Late));
            }
            Poll::Pending
        })
        .await
    }

    /// After an answer: an empty buffer starts over at its front, and one
    /// grown by a large request goes back to its usual size.
    fn settle(&mut self) {
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
            if self.buf.len() > READ_BUFFER {
                self.buf = vec![0; READ_BUFFER];
            }
        }
        if self.out.capacity() > KEEP_WRITE_BUFFER {
            self.out = Vec::with_capacity(1024);
        }
    }

    fn handover(self) -> End {
        End::Handover(Bytes::copy_from_slice(&self.buf[self.start..self.end]))
    }
}

/// Polls `routed` to its answer within `budget`: `None` once the budget
/// has passed. A route that answers at its first poll (a cache hit)
/// costs no clock read; one that waits is given a deadline then, kept
/// by the connection's `timer`, which is moved only if it would fire
/// later (the header deadline it holds is usually sooner).
async fn within<F: std::future::Future>(
    timer: &mut Option<Pin<Box<Sleep>>>,
    mut routed: Pin<&mut F>,
    budget: Duration,
) -> Option<F::Output> {
    let mut deadline = None;
    std::future::poll_fn(|cx| {
        if let Poll::Ready(answer) = routed.as_mut().poll(cx) {
            return Poll::Ready(Some(answer));
        }
        let deadline = *deadline.get_or_insert_with(|| Instant::now() + budget);
        if passed(timer, deadline, cx) {
            return Poll::Ready(None);
        }
        Poll::Pending
    })
    .await
}

/// Writes `res` to `stream` with one `write`, encoded in `out`: status
/// line, its headers, `content-length`, `date` (of when the answer was
/// made), the router's total in `server-timing`, `connection: close` when
/// closing, the body. Says whether it had to wait for the client to take
/// it (a full socket buffer).
async fn send(
    stream: &mut TcpStream,
    out: &mut Vec<u8>,
    res: Response<Body>,
    close: bool,
    timing: Timing,
) -> io::Result<bool> {
    let (parts, body) = res.into_parts();
    let body = full_bytes(body);
    encode(out, parts.status, &parts.headers, &body, close, timing);
    let sent = match stream.try_write(out) {
        Ok(n) => n,
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => 0,
        Err(e) => return Err(e),
    };
    if sent == out.len() {
        return Ok(false);
    }
    stream.write_all(&out[sent..]).await?;
    Ok(true)
}

/// Whether `deadline` has passed, kept by a connection's one timer: armed at
/// the first wait, moved earlier when `deadline` comes before it, moved on
/// when it fires before `deadline`. Until then `cx` is woken at the
/// deadline. Deadlines mostly move later (the header one after each
/// answer), and then the timer is left alone; a body or handler deadline can
/// come before the header one it replaces (an idle timeout configured
/// longer than the body's), and then it is moved.
fn passed(timer: &mut Option<Pin<Box<Sleep>>>, deadline: Instant, cx: &mut Context<'_>) -> bool {
    let timer = timer.get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
    if timer.deadline() > deadline {
        timer.as_mut().reset(deadline);
    }
    while timer.as_mut().poll(cx).is_ready() {
        if Instant::now() >= deadline {
            return true;
        }
        timer.as_mut().reset(deadline);
    }
    false
}

/// The bytes of a [`Body`]: one frame, ready at once.
fn full_bytes(mut body: Body) -> Bytes {
    let mut cx = Context::from_waker(std::task::Waker::noop());
    match hyper::body::Body::poll_frame(Pin::new(&mut body), &mut cx) {
        Poll::Ready(Some(Ok(frame))) => frame.into_data().unwrap_or_default(),
        _ => Bytes::new(),
    }
}

/// Whether an answer's `Connection` header says `close`.
fn wants_close(headers: &HeaderMap) -> bool {
    headers
        .get_all(CONNECTION)
        .iter()
        .any(|v| has_token(v.as_bytes(), b"close"))
}

/// Whether the comma-separated list `value` holds `token` (any case).
fn has_token(value: &[u8], token: &[u8]) -> bool {
    value
        .split(|&b| b == b',')
        .any(|t| t.trim_ascii().eq_ignore_ascii_case(token))
}

/// The answer's bytes into `out`, dated by `timing.at`, with its total in
/// `server-timing` as [`crate::response::total_timing`] would have put it
/// there: after the first value (which stands for all, as that function
/// replaces them), or as the last header.
pub(crate) fn encode(
    out: &mut Vec<u8>,
    status: StatusCode,
    headers: &HeaderMap,
    body: &[u8],
    close: bool,
    timing: Timing,
) {
    out.clear();
    if status == StatusCode::OK {
        out.extend_from_slice(b"HTTP/1.1 200 OK\r\n");
    } else {
        out.extend_from_slice(b"HTTP/1.1 ");
        out.extend_from_slice(status.as_str().as_bytes());
        out.push(b' ');
        out.extend_from_slice(status.canonical_reason().unwrap_or("").as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    let mut said_close = false;
    let mut total = timing.total_micros;
    let mut timed = false;
    for (name, value) in headers {
        if name == CONTENT_LENGTH || name == DATE || name == http::header::TRANSFER_ENCODING {
            continue;
        }
        if let Some(micros) = total.filter(|_| name == SERVER_TIMING) {
            total = None;
            timed = true;
            out.extend_from_slice(b"server-timing: ");
            out.extend_from_slice(value.as_bytes());
            out.extend_from_slice(b", ");
            response::push_total(out, micros);
            out.extend_from_slice(b"\r\n");
            continue;
        }
        if timed && name == SERVER_TIMING {
            // `total_timing` keeps one value: the first, with the total.
            continue;
        }
        said_close |= name == CONNECTION && has_token(value.as_bytes(), b"close");
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    if let Some(micros) = total {
        out.extend_from_slice(b"server-timing: ");
        response::push_total(out, micros);
        out.extend_from_slice(b"\r\n");
    }
    if close && !said_close {
        out.extend_from_slice(b"connection: close\r\n");
    }
    // A `204` (the CORS preflight) or `1xx` answer has no body and must not
    // declare a length (RFC 9110, 8.6); hyper leaves both out too.
    let bodiless = status == StatusCode::NO_CONTENT || status.is_informational();
    if !bodiless {
        out.extend_from_slice(b"content-length: ");
        out.extend_from_slice(itoa::Buffer::new().format(body.len()).as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"date: ");
    date::push(out, timing.at);
    out.extend_from_slice(b"\r\n\r\n");
    if !bodiless {
        out.extend_from_slice(body);
    }
}

/// The offsets of a head's fields.
struct Fields([Field; MAX_HEADERS]);

impl Default for Fields {
    fn default() -> Self {
        Self([(0, 0, 0, 0); MAX_HEADERS])
    }
}

enum Parsed {
    /// In the given [`Head`].
    Head,
    Partial,
    /// Not for this loop: hyper takes the connection from here.
    Other,
}

/// Parses the head at the start of `buf` into `head`.
fn parse(buf: &[u8], head: &mut Head) -> Parsed {
    if buf.is_empty() {
        return Parsed::Partial;
    }
    let mut slots =
        [const { std::mem::MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut []);
    let len = match req.parse_with_uninit_headers(buf, &mut slots) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Parsed::Partial,
        Err(_) => return Parsed::Other,
    };
    if req.version != Some(1) {
        return Parsed::Other;
    }
    let (Some(method), Some(path)) = (req.method, req.path) else {
        return Parsed::Other;
    };
    let method = match method {
        "GET" => Method::GET,
        "POST" => Method::POST,
        "OPTIONS" => Method::OPTIONS,
        "PUT" => Method::PUT,
        "DELETE" => Method::DELETE,
        "PATCH" => Method::PATCH,
        _ => return Parsed::Other,
    };
    if len > MAX_HEAD {
        return Parsed::Other;
    }
    // Offsets into `buf`, which is shorter than `MAX_HEAD` up to the head's end.
    let at = |s: &[u8]| (s.as_ptr() as usize - buf.as_ptr() as usize) as u32;
    head.len = len;
    head.method = method;
    head.path = (at(path.as_bytes()) as usize, path.len());
    head.count = req.headers.len();
    head.close = false;
    let mut length = None;
    for (slot, h) in head.headers.0.iter_mut().zip(req.headers.iter()) {
        let name = h.name.as_bytes();
        *slot = (
            at(name),
            name.len() as u32,
            at(h.value),
            h.value.len() as u32,
        );
        if name.eq_ignore_ascii_case(b"content-length") {
            let Some(n) = content_length(h.value) else {
                return Parsed::Other;
            };
            if length.replace(n).is_some() {
                return Parsed::Other;
            }
        } else if name.eq_ignore_ascii_case(b"connection") {
            if has_token(h.value, b"upgrade") {
                return Parsed::Other;
            }
            head.close |= has_token(h.value, b"close");
        } else if name.eq_ignore_ascii_case(b"transfer-encoding")
            || name.eq_ignore_ascii_case(b"expect")
            || name.eq_ignore_ascii_case(b"upgrade")
        {
            return Parsed::Other;
        }
    }
    head.body = length.unwrap_or(0);
    Parsed::Head
}

/// A `Content-Length` value within the body cap: digits only, as hyper
/// reads it (no sign, no spaces inside, no list).
fn content_length(value: &[u8]) -> Option<usize> {
    let v = value.trim_ascii();
    if v.is_empty() || v.len() > 6 || !v.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let n = v.iter().fold(0usize, |n, d| n * 10 + usize::from(d - b'0'));
    (n <= crate::request::MAX_BODY).then_some(n)
}

/// The request of a parsed `head` over `data` (its head and body), as it
/// lies there; `None` for a target this loop does not take ([`target`]).
fn incoming<'a>(data: &'a [u8], head: &'a Head) -> Option<Incoming<'a, NoBody>> {
    let (path, query) = target(&data[head.path.0..head.path.0 + head.path.1])?;
    Some(Incoming {
        method: head.method.clone(),
        path,
        query,
        headers: Headers::raw(data, &head.headers.0[..head.count]),
        body: RequestBody::Read(&data[head.len..]),
    })
}

/// A request target taken here, split into path and query as `http::Uri`
/// splits it: a path (`/` first), the query after the first `?`, every
/// byte visible ASCII that `Uri` takes in both a path and a query (not
/// `"`, `#`, `<`, `>` or a backquote). Any other target (`*`, absolute, a
/// fragment, bytes outside ASCII) goes to hyper, which reads or refuses it
/// as before. `h1/tests.rs` checks the split against `Uri` for every byte
/// taken, in path and query.
fn target(t: &[u8]) -> Option<(&str, Option<&str>)> {
    let taken = |b: u8| (0x21..0x7f).contains(&b) && !matches!(b, b'"' | b'#' | b'<' | b'>' | b'`');
    if t.first() != Some(&b'/') {
        return None;
    }
    // One pass: every byte taken, and where the first `?` is.
    let mut question = None;
    for (i, &b) in t.iter().enumerate() {
        if !taken(b) {
            return None;
        }
        if b == b'?' && question.is_none() {
            question = Some(i);
        }
    }
    // Visible ASCII: text.
    let t = std::str::from_utf8(t).ok()?;
    Some(match question {
        Some(i) => (&t[..i], Some(&t[i + 1..])),
        None => (t, None),
    })
}

/// Bytes read before a handover, then the socket: how hyper is given a
/// connection this loop started.
pub(crate) struct Rewind {
    pre: Bytes,
    io: TcpStream,
}

impl Rewind {
    pub(crate) fn new(pre: Bytes, io: TcpStream) -> Self {
        Self { pre, io }
    }
}

impl AsyncRead for Rewind {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if !self.pre.is_empty() {
            let n = self.pre.len().min(buf.remaining());
            let pre = self.pre.split_to(n);
            buf.put_slice(&pre);
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl AsyncWrite for Rewind {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

/// The `Date` of an answer, formatted once a second per thread (as hyper
/// does) and valid until the monotonic instant its second ends: an answer
/// made within it takes the cached text without reading the wall clock
/// (its instant is the router's own clock read).
pub(crate) mod date {
    use std::cell::RefCell;
    use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

    struct Cached {
        /// The text is of the second that ends at this instant.
        until: Option<Instant>,
        text: [u8; 29],
    }

    thread_local! {
        static CACHED: RefCell<Cached> = const { RefCell::new(Cached { until: None, text: [0; 29] }) };
    }

    /// Appends the IMF-fixdate of the answer made at `at` (an instant
    /// already read, at most moments old).
    pub(crate) fn push(out: &mut Vec<u8>, at: Instant) {
        CACHED.with(|c| {
            let mut c = c.borrow_mut();
            if c.until.is_none_or(|until| at >= until) {
                let now = SystemTime::now();
                let into_second = now.duration_since(UNIX_EPOCH).map_or(Duration::ZERO, |d| {
                    Duration::from_nanos(d.subsec_nanos().into())
                });
                let text = httpdate::fmt_http_date(now);
                if text.len() != 29 {
                    c.until = None;
                    out.extend_from_slice(text.as_bytes());
                    return;
                }
                c.text.copy_from_slice(text.as_bytes());
                // `at` is at or before `now`: the cache ends no later than
                // the second does.
                c.until = Some(at + (Duration::from_secs(1) - into_second));
            }
            out.extend_from_slice(&c.text);
        });
    }
}
