//! [`RawConn`]: one HTTP/1.1 keep-alive connection that the load loop
//! drives in its own task. The request is written from the plan into a
//! reused buffer ([`Plan::write_request`]), the answer's head is parsed
//! with `httparse` (the parser hyper uses) and its body read and dropped.
//!
//! Why not hyper's client here: `hyper::client::conn::http1` runs each
//! connection as two tasks, the caller and the connection's driver, which
//! hand every request and answer across a channel and wake each other for
//! both. On the one CPU the generator is pinned to, that made it slower
//! than wrk at driving the strict hello-world, and a generator that limits
//! the baseline's rate but not the slower route's reads every ratio too
//! close to 1 (BENCHMARKS.md, "A load loop as fast as wrk"). `probe` and
//! `fetch` (one request each, before a run) keep hyper's client.
//!
//! Checked against hyper in the tests below: a hyper server reads the same
//! request from both clients, and both get the same status and body back
//! for `content-length`, chunked, empty, closing and large answers.

use std::io;
use std::net::SocketAddr;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

use crate::plan::Plan;

/// Largest answer head accepted (status line and headers).
const MAX_HEAD: usize = 64 * 1024;
/// Most headers in an answer head.
const MAX_HEADERS: usize = 64;

/// What came back for one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Answer {
    /// The status code.
    pub status: u16,
    /// Whether the connection may carry the next request (HTTP/1.1 without
    /// `connection: close`, and a body whose end was framed).
    pub keep_alive: bool,
}

/// How an answer's body ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    None,
    Length(u64),
    Chunked,
    UntilClose,
}

/// One open connection; see the module docs.
pub struct RawConn {
    stream: TcpStream,
    /// The request being sent.
    out: Vec<u8>,
    /// Bytes read: `buf[pos..filled]` are not consumed yet.
    buf: Vec<u8>,
    pos: usize,
    filled: usize,
}

fn invalid(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what.to_owned())
}

impl RawConn {
    /// Opens a connection to `addr`, with `TCP_NODELAY` as hyper's client
    /// connections in this crate had it.
    pub async fn connect(addr: SocketAddr) -> io::Result<Self> {
        let stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        Ok(Self {
            stream,
            out: Vec::with_capacity(1024),
            buf: vec![0; 16 * 1024],
            pos: 0,
            filled: 0,
        })
    }

    /// Sends the plan's `n`th request (entry `i`) and reads the whole
    /// answer; its body is appended to `body` when one is given.
    pub async fn send(
        &mut self,
        plan: &Plan,
        i: usize,
        n: u64,
        body: Option<&mut Vec<u8>>,
    ) -> io::Result<Answer> {
        let mut out = std::mem::take(&mut self.out);
        plan.write_request(i, n, &mut out);
        let head_only = plan.entries[i].method == http::Method::HEAD;
        let written = self.stream.write_all(&out).await;
        self.out = out;
        written?;
        self.read_answer(head_only, body).await
    }

    async fn read_answer(
        &mut self,
        head_only: bool,
        mut body: Option<&mut Vec<u8>>,
    ) -> io::Result<Answer> {
        loop {
            let (status, framing, keep_alive) = self.read_head(head_only).await?;
            // An interim answer (100 Continue, 103 Early Hints) precedes
            // the real one.
            if (100..200).contains(&status) && status != 101 {
                continue;
            }
            match framing {
                Framing::None => {}
                Framing::Length(n) => self.read_exact_body(n, body.as_deref_mut()).await?,
                Framing::Chunked => self.read_chunked(body.as_deref_mut()).await?,
                Framing::UntilClose => {
                    self.read_to_close(body.as_deref_mut()).await?;
                    return Ok(Answer {
                        status,
                        keep_alive: false,
                    });
                }
            }
            return Ok(Answer { status, keep_alive });
        }
    }

    /// Reads more bytes after `filled`; compacts or grows the buffer when
    /// it is full. `Ok(false)` at the end of the stream.
    async fn fill(&mut self) -> io::Result<bool> {
        if self.pos == self.filled {
            (self.pos, self.filled) = (0, 0);
        }
        if self.filled == self.buf.len() {
            if self.pos > 0 {
                self.buf.copy_within(self.pos..self.filled, 0);
                (self.filled, self.pos) = (self.filled - self.pos, 0);
            } else {
                self.buf.resize(self.buf.len() * 2, 0);
            }
        }
        let n = self.stream.read(&mut self.buf[self.filled..]).await?;
        self.filled += n;
        Ok(n > 0)
    }

    async fn fill_or_eof(&mut self, what: &str) -> io::Result<()> {
        if self.fill().await? {
            Ok(())
        } else {
            Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                what.to_owned(),
            ))
        }
    }

    /// The status, the body's framing and whether the connection stays
    /// open, once the whole head is in.
    async fn read_head(&mut self, head_only: bool) -> io::Result<(u16, Framing, bool)> {
        loop {
            let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
            let mut res = httparse::Response::new(&mut headers);
            match res.parse(&self.buf[self.pos..self.filled]) {
                Ok(httparse::Status::Complete(len)) => {
                    let status = res.code.ok_or_else(|| invalid("no status code"))?;
                    let mut keep_alive = res.version == Some(1);
                    // `coded`: a transfer-encoding was given; `chunked`:
                    // chunked is its last coding.
                    let (mut length, mut coded, mut chunked) = (None, false, false);
                    for h in res.headers.iter() {
                        let v = std::str::from_utf8(h.value)
                            .map_err(|_| invalid("a framing header is not text"))?;
                        if h.name.eq_ignore_ascii_case("content-length") {
                            let n: u64 = v
                                .trim()
                                .parse()
                                .map_err(|_| invalid("content-length is not a number"))?;
                            if length.is_some_and(|l| l != n) {
                                return Err(invalid("two different content-lengths"));
                            }
                            length = Some(n);
                        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
                            coded = true;
                            chunked = v
                                .rsplit(',')
                                .next()
                                .is_some_and(|c| c.trim().eq_ignore_ascii_case("chunked"));
                        } else if h.name.eq_ignore_ascii_case("connection") {
                            for token in v.split(',').map(str::trim) {
                                if token.eq_ignore_ascii_case("close") {
                                    keep_alive = false;
                                } else if token.eq_ignore_ascii_case("keep-alive") {
                                    keep_alive = true;
                                }
                            }
                        }
                    }
                    self.pos += len;
                    // RFC 9112 §6.3: no body after HEAD, 1xx, 204 and 304;
                    // a transfer-encoding wins over a length (chunked last:
                    // chunks; otherwise to the close); neither: to the close.
                    let framing = if head_only || status < 200 || status == 204 || status == 304 {
                        Framing::None
                    } else if chunked {
                        Framing::Chunked
                    } else if coded {
                        Framing::UntilClose
                    } else if let Some(n) = length {
                        Framing::Length(n)
                    } else {
                        Framing::UntilClose
                    };
                    return Ok((status, framing, keep_alive));
                }
                Ok(httparse::Status::Partial) => {
                    if self.filled - self.pos >= MAX_HEAD {
                        return Err(invalid("the answer's head is too large"));
                    }
                    self.fill_or_eof("the connection closed before an answer")
                        .await?;
                }
                Err(e) => return Err(invalid(&format!("a malformed answer head: {e}"))),
            }
        }
    }

    /// Consumes `n` body bytes.
    async fn read_exact_body(
        &mut self,
        mut n: u64,
        mut body: Option<&mut Vec<u8>>,
    ) -> io::Result<()> {
        while n > 0 {
            if self.pos == self.filled {
                self.fill_or_eof("the connection closed inside a body")
                    .await?;
            }
            let take = (self.filled - self.pos).min(usize::try_from(n).unwrap_or(usize::MAX));
            if let Some(b) = body.as_deref_mut() {
                b.extend_from_slice(&self.buf[self.pos..self.pos + take]);
            }
            self.pos += take;
            n -= take as u64;
        }
        Ok(())
    }

    /// The next line (without its CRLF), consumed.
    async fn read_line(&mut self) -> io::Result<String> {
        loop {
            if let Some(at) = self.buf[self.pos..self.filled]
                .windows(2)
                .position(|w| w == b"\r\n")
            {
                let line = String::from_utf8_lossy(&self.buf[self.pos..self.pos + at]).into_owned();
                self.pos += at + 2;
                return Ok(line);
            }
            if self.filled - self.pos >= MAX_HEAD {
                return Err(invalid("a chunk line is too long"));
            }
            self.fill_or_eof("the connection closed inside a chunked body")
                .await?;
        }
    }

    /// Consumes a chunked body and its trailers.
    async fn read_chunked(&mut self, mut body: Option<&mut Vec<u8>>) -> io::Result<()> {
        loop {
            let line = self.read_line().await?;
            let size = line.split(';').next().unwrap_or("").trim();
            let size =
                u64::from_str_radix(size, 16).map_err(|_| invalid("a chunk size is not hex"))?;
            if size == 0 {
                // Trailers, up to the empty line.
                while !self.read_line().await?.is_empty() {}
                return Ok(());
            }
            self.read_exact_body(size, body.as_deref_mut()).await?;
            if !self.read_line().await?.is_empty() {
                return Err(invalid("a chunk does not end with CRLF"));
            }
        }
    }

    /// Consumes everything up to the end of the stream.
    async fn read_to_close(&mut self, mut body: Option<&mut Vec<u8>>) -> io::Result<()> {
        loop {
            if let Some(b) = body.as_deref_mut() {
                b.extend_from_slice(&self.buf[self.pos..self.filled]);
            }
            self.pos = self.filled;
            if !self.fill().await? {
                return Ok(());
            }
        }
    }
}

#[cfg(test)]
mod tests;
