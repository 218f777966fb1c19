//! HTTP/1.1 request heads and bodies, parsed with httparse and bounded by [`HttpLimits`].

use std::net::SocketAddr;

use super::chunked::{decode_chunked, Chunked};

/// Most headers a request may carry; more is answered with 431.
const MAX_HEADERS: usize = 64;

/// Size limits applied while parsing a request.
///
/// # Examples
///
/// ```
/// let limits = sockloop::http::HttpLimits::default().max_head(4 << 10).max_body(64 << 10);
/// assert_eq!(limits.max_head, 4096);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HttpLimits {
    /// Largest request line plus headers, in bytes; more is answered with 431.
    /// Default: 8 KiB (`8 << 10`).
    pub max_head: usize,
    /// Largest body (Content-Length or the sum of the chunks), in bytes; more is answered
    /// with 413. Default: 1 MiB (`1 << 20`).
    pub max_body: usize,
}

impl Default for HttpLimits {
    fn default() -> Self {
        HttpLimits {
            max_head: 8 << 10,
            max_body: 1 << 20,
        }
    }
}

impl HttpLimits {
    /// Sets [`max_head`](Self::max_head).
    pub fn max_head(mut self, bytes: usize) -> Self {
        self.max_head = bytes;
        self
    }

    /// Sets [`max_body`](Self::max_body).
    pub fn max_body(mut self, bytes: usize) -> Self {
        self.max_body = bytes;
        self
    }
}

/// A parsed HTTP/1.1 request: what the HTTP hook and the WebSocket authenticator see.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Request {
    /// The method, the target and every header name and value, one after another: the
    /// fields below are spans of it (one allocation for the whole head, not two per header).
    text: String,
    method: Span,
    path: Span,
    query: Span,
    /// Percent-decoded query parameters (no allocation without a query).
    params: Vec<(String, String)>,
    version: u8,
    headers: Vec<(Span, Span)>,
    body: Vec<u8>,
    peer: Option<SocketAddr>,
}

/// A byte range of [`Request::text`] (a head is at most a few KiB: 32 bits is plenty).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Span(u32, u32);

impl Request {
    fn span(&self, s: Span) -> &str {
        &self.text[s.0 as usize..s.1 as usize]
    }

    /// Appends `part` to the text and returns its span.
    fn push(&mut self, part: &str) -> Span {
        let start = self.text.len();
        self.text.push_str(part);
        Span(start as u32, self.text.len() as u32)
    }
}

impl Request {
    /// The method, as sent (`GET`, `POST`, ...).
    pub fn method(&self) -> &str {
        self.span(self.method)
    }

    /// The path without the query string, as sent (not percent-decoded), e.g. `/chat`.
    pub fn path(&self) -> &str {
        self.span(self.path)
    }

    /// The raw query string after `?`, without the `?`; empty when there is none.
    pub fn query(&self) -> &str {
        self.span(self.query)
    }

    /// The first query parameter called `name`, percent-decoded (`+` means a space).
    pub fn query_param(&self, name: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// The HTTP minor version: 1 for HTTP/1.1, 0 for HTTP/1.0.
    pub fn version(&self) -> u8 {
        self.version
    }

    /// The first header called `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        let text = self.text.as_bytes();
        let named = |(k, _): &&(Span, Span)| {
            let k = &text[k.0 as usize..k.1 as usize];
            k.eq_ignore_ascii_case(name.as_bytes())
        };
        self.headers.iter().find(named).map(|&(_, v)| self.span(v))
    }

    /// Every header called `name` (case-insensitive), in the order sent.
    pub fn headers_all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        // Names are compared as bytes (no `str` slicing, with its boundary checks, for the
        // headers that do not match): the upgrade looks up a dozen headers this way.
        let text = self.text.as_bytes();
        self.headers
            .iter()
            .filter(move |(k, _)| {
                let k = &text[k.0 as usize..k.1 as usize];
                k.eq_ignore_ascii_case(name.as_bytes())
            })
            .map(|&(_, v)| self.span(v))
    }

    /// All headers as (name, value) pairs, in the order sent.
    pub fn headers(&self) -> impl ExactSizeIterator<Item = (&str, &str)> + '_ {
        self.headers
            .iter()
            .map(|&(k, v)| (self.span(k), self.span(v)))
    }

    /// The value of the cookie called `name` from the `Cookie` header(s), as sent.
    pub fn cookie(&self, name: &str) -> Option<&str> {
        self.headers_all("cookie")
            .flat_map(|h| h.split(';'))
            .filter_map(|pair| pair.trim().split_once('='))
            .find(|(k, _)| k.trim() == name)
            .map(|(_, v)| v.trim().trim_matches('"'))
    }

    /// The body (empty for most GET requests); chunked bodies arrive already de-chunked.
    pub fn body(&self) -> &[u8] {
        &self.body
    }

    /// The peer's address, when the transport has one (TCP); set by the reactor.
    pub fn peer_addr(&self) -> Option<SocketAddr> {
        self.peer
    }

    /// Records the peer's address (done by the reactor after parsing).
    #[allow(dead_code)] // called by the reactor
    pub(crate) fn set_peer(&mut self, peer: SocketAddr) {
        self.peer = Some(peer);
    }

    /// Builds a request by hand (tests and the long-polling fallback).
    #[allow(dead_code)]
    pub(crate) fn from_parts(method: &str, target: &str, headers: &[(&str, &str)]) -> Request {
        let mut req = Request {
            version: 1,
            headers: Vec::with_capacity(headers.len()),
            ..Request::default()
        };
        req.method = req.push(method);
        req.set_target(target);
        for (k, v) in headers {
            let pair = (req.push(k), req.push(v));
            req.headers.push(pair);
        }
        req
    }

    fn set_target(&mut self, target: &str) {
        let (path, query) = target.split_once('?').unwrap_or((target, ""));
        self.path = self.push(path);
        self.query = self.push(query);
        self.params = parse_query(query);
    }
}

/// What [`parse_request`] found in the bytes it was given.
#[derive(Debug)]
#[allow(dead_code)] // `status` is read by the reactor
pub(crate) enum ParseOutcome {
    /// The request is not complete yet: read more bytes and call again with all of them.
    Partial,
    /// A whole request; `consumed` bytes belong to it and the rest (pipelined bytes, or the
    /// first WebSocket frames) must be kept.
    Complete {
        /// The request.
        request: Request,
        /// How many bytes of the buffer the request used.
        consumed: usize,
    },
    /// The request is unacceptable: answer with this status and close.
    Error {
        /// 400 malformed, 413 body too big, 431 head too big or too many headers,
        /// 501 unsupported transfer coding.
        status: u16,
    },
}

/// How the body is delimited.
enum BodyKind {
    Length(usize),
    Chunked,
}

/// Parses one request from the start of `buf`.
///
/// Stateless and resumable: call again with the same bytes plus more after `Partial`.
pub(crate) fn parse_request(buf: &[u8], limits: &HttpLimits) -> ParseOutcome {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut parsed = httparse::Request::new(&mut headers);
    let head_len = match parsed.parse(buf) {
        Ok(httparse::Status::Complete(n)) if n > limits.max_head => return error(431),
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) if buf.len() > limits.max_head => return error(431),
        Ok(httparse::Status::Partial) => return ParseOutcome::Partial,
        Err(httparse::Error::TooManyHeaders) => return error(431),
        Err(_) => return error(400),
    };
    let kind = match body_kind(parsed.headers, limits) {
        Ok(kind) => kind,
        Err(status) => return error(status),
    };
    let (body, consumed) = match read_body(&buf[head_len..], kind, limits) {
        Ok(Some((body, used))) => (body, head_len + used),
        Ok(None) => return ParseOutcome::Partial,
        Err(status) => return error(status),
    };
    let request = build(&parsed, body);
    ParseOutcome::Complete { request, consumed }
}

fn error(status: u16) -> ParseOutcome {
    ParseOutcome::Error { status }
}

fn build(parsed: &httparse::Request<'_, '_>, body: Vec<u8>) -> Request {
    let method = parsed.method.unwrap_or("");
    let target = parsed.path.unwrap_or("/");
    let size = method.len()
        + target.len()
        + parsed
            .headers
            .iter()
            .map(|h| h.name.len() + h.value.len())
            .sum::<usize>();
    let mut req = Request {
        // A size class of its own (≥ 512 B, a power of two): a request head of ~250 B
        // freed between a connection's long-lived 256 B allocations fragmented the heap
        // by ~23 B per idle connection (bench `websocket`, idle: 506 B against 483 B).
        text: String::with_capacity(size.next_power_of_two().max(512)),
        version: parsed.version.unwrap_or(1),
        headers: Vec::with_capacity(parsed.headers.len()),
        body,
        ..Request::default()
    };
    req.method = req.push(method);
    req.set_target(target);
    for h in parsed.headers.iter() {
        let name = req.push(h.name);
        // Invalid UTF-8 is replaced (U+FFFD), which may make the value longer than sent.
        let value = match std::str::from_utf8(h.value) {
            // The fast check first; the replacing decoder only for invalid input.
            Ok(v) => std::borrow::Cow::Borrowed(v),
            Err(_) => String::from_utf8_lossy(h.value),
        };
        let value = req.push(value.trim());
        req.headers.push((name, value));
    }
    req
}

/// Decides how the body is framed (RFC 9112 6.1–6.3), refusing ambiguous framing.
fn body_kind(headers: &[httparse::Header<'_>], limits: &HttpLimits) -> Result<BodyKind, u16> {
    let mut length: Option<usize> = None;
    let mut chunked = false;
    for h in headers {
        if h.name.eq_ignore_ascii_case("content-length") {
            let n = parse_length(h.value).ok_or(400u16)?;
            if length.is_some_and(|old| old != n) {
                return Err(400);
            }
            length = Some(n);
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            chunked = transfer_is_chunked(h.value)?;
        }
    }
    match (chunked, length) {
        (true, Some(_)) => Err(400),
        (true, None) => Ok(BodyKind::Chunked),
        (false, Some(n)) if n > limits.max_body => Err(413),
        (false, n) => Ok(BodyKind::Length(n.unwrap_or(0))),
    }
}

/// A Content-Length value: ASCII digits only, no sign, no overflow.
fn parse_length(value: &[u8]) -> Option<usize> {
    let s = std::str::from_utf8(value).ok()?.trim();
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// Only `chunked` (alone, or last after identity) is supported; other codings get 501.
fn transfer_is_chunked(value: &[u8]) -> Result<bool, u16> {
    let s = std::str::from_utf8(value).map_err(|_| 400u16)?;
    let mut codings = s.split(',').map(str::trim).filter(|c| !c.is_empty());
    let last = codings.next_back().ok_or(400u16)?;
    if !last.eq_ignore_ascii_case("chunked") {
        return Err(501);
    }
    if codings.any(|c| !c.eq_ignore_ascii_case("identity")) {
        return Err(501);
    }
    Ok(true)
}

/// The body and the bytes it used, `None` when more bytes are needed.
fn read_body(
    rest: &[u8],
    kind: BodyKind,
    limits: &HttpLimits,
) -> Result<Option<(Vec<u8>, usize)>, u16> {
    match kind {
        BodyKind::Length(n) if rest.len() < n => Ok(None),
        BodyKind::Length(n) => Ok(Some((rest[..n].to_vec(), n))),
        BodyKind::Chunked => match decode_chunked(rest, limits)? {
            Chunked::Partial => Ok(None),
            Chunked::Complete { body, consumed } => Ok(Some((body, consumed))),
        },
    }
}

/// Splits `a=1&b=two+words` into decoded pairs; a key without `=` has an empty value.
fn parse_query(query: &str) -> Vec<(String, String)> {
    query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect()
}

/// Decodes `%XX` escapes and `+`; malformed escapes are kept as written, and invalid
/// UTF-8 is replaced (U+FFFD).
fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => match bytes.get(i + 1..i + 3).and_then(hex_pair) {
                Some(b) => {
                    out.push(b);
                    i += 2;
                }
                None => out.push(b'%'),
            },
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn hex_pair(pair: &[u8]) -> Option<u8> {
    let hi = (pair[0] as char).to_digit(16)?;
    let lo = (pair[1] as char).to_digit(16)?;
    Some((hi * 16 + lo) as u8)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> HttpLimits {
        HttpLimits::default()
    }

    fn complete(buf: &[u8]) -> (Request, usize) {
        match parse_request(buf, &limits()) {
            ParseOutcome::Complete { request, consumed } => (request, consumed),
            other => panic!("expected complete, got {other:?}"),
        }
    }

    fn status(buf: &[u8], limits: &HttpLimits) -> u16 {
        match parse_request(buf, limits) {
            ParseOutcome::Error { status } => status,
            other => panic!("expected error, got {other:?}"),
        }
    }

    const GET: &[u8] = b"GET /chat?room=a%20b&x=1+2&flag HTTP/1.1\r\nHost: h\r\nCookie: sid=abc; theme=\"dark\"\r\nX-Multi: 1\r\nx-multi: 2\r\n\r\n";

    #[test]
    fn parses_a_get_with_query_headers_and_cookies() {
        let (req, used) = complete(GET);
        assert_eq!(used, GET.len());
        assert_eq!(req.method(), "GET");
        assert_eq!(req.path(), "/chat");
        assert_eq!(req.query(), "room=a%20b&x=1+2&flag");
        assert_eq!(req.query_param("room"), Some("a b"));
        assert_eq!(req.query_param("x"), Some("1 2"));
        assert_eq!(req.query_param("flag"), Some(""));
        assert_eq!(req.query_param("nope"), None);
        assert_eq!(req.header("HOST"), Some("h"));
        assert_eq!(req.headers_all("x-multi").collect::<Vec<_>>(), ["1", "2"]);
        assert_eq!(req.cookie("sid"), Some("abc"));
        assert_eq!(req.cookie("theme"), Some("dark"));
        assert_eq!(req.cookie("none"), None);
        assert_eq!(req.version(), 1);
        assert!(req.body().is_empty());
        assert_eq!(req.headers().len(), 4);
        assert_eq!(req.peer_addr(), None);
    }

    #[test]
    fn every_prefix_is_partial() {
        for n in 0..GET.len() {
            assert!(matches!(
                parse_request(&GET[..n], &limits()),
                ParseOutcome::Partial
            ));
        }
    }

    #[test]
    fn pipelined_bytes_are_left_over() {
        let mut buf = GET.to_vec();
        buf.extend_from_slice(b"GET /two HTTP/1.1\r\n\r\n");
        let (_, used) = complete(&buf);
        assert_eq!(used, GET.len());
        let (second, used2) = complete(&buf[used..]);
        assert_eq!(second.path(), "/two");
        assert_eq!(used + used2, buf.len());
    }

    #[test]
    fn content_length_body() {
        let req = b"POST /p HTTP/1.1\r\nContent-Length: 5\r\n\r\nhelloEXTRA";
        let (r, used) = complete(req);
        assert_eq!(r.body(), b"hello");
        assert_eq!(used, req.len() - 5);
        let short = b"POST /p HTTP/1.1\r\nContent-Length: 5\r\n\r\nhel";
        assert!(matches!(
            parse_request(short, &limits()),
            ParseOutcome::Partial
        ));
    }

    #[test]
    fn limits_are_enforced() {
        let small = HttpLimits::default().max_head(32).max_body(4);
        assert_eq!(status(GET, &small), 431);
        let partial_big = vec![b'a'; 40];
        assert_eq!(status(&partial_big, &small), 431);
        let body = b"POST / HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello";
        assert_eq!(status(body, &HttpLimits::default().max_body(4)), 413);
        let mut many = b"GET / HTTP/1.1\r\n".to_vec();
        for i in 0..70 {
            many.extend_from_slice(format!("h{i}: v\r\n").as_bytes());
        }
        many.extend_from_slice(b"\r\n");
        assert_eq!(status(&many, &limits()), 431);
    }

    #[test]
    fn malformed_requests_get_400() {
        let l = limits();
        assert_eq!(status(b"GET / HTTP/1.1\r\nBad Header\r\n\r\n", &l), 400);
        assert_eq!(status(b"\x00\x01 / HTTP/1.1\r\n\r\n", &l), 400);
        let neg = b"POST / HTTP/1.1\r\nContent-Length: -1\r\n\r\n";
        assert_eq!(status(neg, &l), 400);
        let two = b"POST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n";
        assert_eq!(status(two, &l), 400);
        let both = b"POST / HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n";
        assert_eq!(status(both, &l), 400);
        let gzip = b"POST / HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n";
        assert_eq!(status(gzip, &l), 501);
        let same = b"POST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\nx";
        assert_eq!(complete(same).0.body(), b"x");
    }

    #[test]
    fn chunked_body_is_decoded() {
        let req = b"POST /c HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\nTrailer: x\r\n\r\nNEXT";
        let (r, used) = complete(req);
        assert_eq!(r.body(), b"hello world");
        assert_eq!(&req[used..], b"NEXT");
        for n in 0..req.len() - 4 {
            assert!(
                matches!(parse_request(&req[..n], &limits()), ParseOutcome::Partial),
                "prefix {n}"
            );
        }
    }

    #[test]
    fn set_peer_and_from_parts() {
        let mut r = Request::from_parts("GET", "/a?b=c", &[("Host", "x")]);
        r.set_peer("127.0.0.1:9".parse().unwrap());
        assert_eq!(r.peer_addr().unwrap().port(), 9);
        assert_eq!(r.query_param("b"), Some("c"));
        assert_eq!(r.header("host"), Some("x"));
    }

    #[test]
    fn percent_decoding_keeps_malformed_escapes() {
        assert_eq!(percent_decode("%zz%4"), "%zz%4");
        assert_eq!(percent_decode("%41%c3%a9"), "Aé");
        assert_eq!(percent_decode("%ff"), "\u{fffd}");
    }
}
