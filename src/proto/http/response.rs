//! HTTP/1.1 responses built by handlers and serialised by the reactor.

/// An HTTP response: status, headers and body.
///
/// `Content-Length` is always written from the body; a `Content-Length` header set by hand is
/// ignored.
///
/// # Examples
///
/// ```
/// use sockloop::http::Response;
///
/// let page = Response::html("<h1>hi</h1>").header("Cache-Control", "no-store");
/// assert_eq!(page.status(), 200);
/// let missing = Response::not_found();
/// assert_eq!(missing.status(), 404);
/// let health = Response::json(200, &serde_json::json!({"ok": true}));
/// assert_eq!(health.body_bytes(), br#"{"ok":true}"#);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Response {
    /// An empty response with this status.
    pub fn new(status: u16) -> Self {
        Response {
            status,
            headers: Vec::new(),
            body: Vec::new(),
        }
    }

    /// Adds a header (chainable).
    pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// Sets the body (chainable).
    pub fn body(mut self, body: impl Into<Vec<u8>>) -> Self {
        self.body = body.into();
        self
    }

    /// A `text/plain; charset=utf-8` response.
    pub fn text(status: u16, text: impl Into<String>) -> Self {
        Response::new(status)
            .header("Content-Type", "text/plain; charset=utf-8")
            .body(text.into())
    }

    /// A 200 `text/html; charset=utf-8` response.
    pub fn html(html: impl Into<String>) -> Self {
        Response::new(200)
            .header("Content-Type", "text/html; charset=utf-8")
            .body(html.into())
    }

    /// An `application/json` response with `value` serialised compactly.
    pub fn json(status: u16, value: &serde_json::Value) -> Self {
        Response::new(status)
            .header("Content-Type", "application/json")
            .body(value.to_string())
    }

    /// The default answer to a request nobody handles: 404 with a short text body.
    pub fn not_found() -> Self {
        Response::text(404, "Not Found\n")
    }

    /// The status code.
    pub fn status(&self) -> u16 {
        self.status
    }

    /// The headers set so far (without `Content-Length`, which is computed).
    pub fn headers(&self) -> &[(String, String)] {
        &self.headers
    }

    /// The body.
    pub fn body_bytes(&self) -> &[u8] {
        &self.body
    }

    /// Appends the serialised response (status line, headers, Content-Length, body) to `out`.
    pub(crate) fn write_to(&self, out: &mut Vec<u8>) {
        self.write_head(out);
        out.extend_from_slice(&self.body);
    }

    /// Appends the status line and headers (with the body's Content-Length) but not the
    /// body: the answer to a HEAD request.
    pub(crate) fn write_head(&self, out: &mut Vec<u8>) {
        write_status_line(out, self.status);
        for (k, v) in &self.headers {
            if !k.eq_ignore_ascii_case("content-length") {
                write_header(out, k, v);
            }
        }
        write_header(out, "Content-Length", &self.body.len().to_string());
        out.extend_from_slice(b"\r\n");
    }
}

/// Appends `HTTP/1.1 <status> <reason>\r\n`.
pub(crate) fn write_status_line(out: &mut Vec<u8>, status: u16) {
    out.extend_from_slice(b"HTTP/1.1 ");
    // Three digits for every real status; no allocation (`to_string`) per response.
    match status {
        100..=999 => {
            let d = |n: u16| b'0' + (n % 10) as u8;
            out.extend_from_slice(&[d(status / 100), d(status / 10), d(status)]);
        }
        _ => out.extend_from_slice(status.to_string().as_bytes()),
    }
    out.push(b' ');
    out.extend_from_slice(reason_phrase(status).as_bytes());
    out.extend_from_slice(b"\r\n");
}

/// Appends `name: value\r\n`, dropping CR and LF from both (no header injection).
pub(crate) fn write_header(out: &mut Vec<u8>, name: &str, value: &str) {
    let clean = |b: &u8| *b != b'\r' && *b != b'\n';
    // Copied whole when clean (nearly always), byte by byte only to drop CR and LF.
    let put = |out: &mut Vec<u8>, s: &[u8]| match s.iter().all(clean) {
        true => out.extend_from_slice(s),
        false => out.extend(s.iter().filter(|b| clean(b))),
    };
    out.reserve(name.len() + value.len() + 4);
    put(out, name.as_bytes());
    out.extend_from_slice(b": ");
    put(out, value.as_bytes());
    out.extend_from_slice(b"\r\n");
}

/// The standard reason phrase for a status code ("Unknown" for unlisted codes).
pub(crate) fn reason_phrase(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        101 => "Switching Protocols",
        200 => "OK",
        201 => "Created",
        202 => "Accepted",
        204 => "No Content",
        301 => "Moved Permanently",
        302 => "Found",
        304 => "Not Modified",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        411 => "Length Required",
        413 => "Content Too Large",
        426 => "Upgrade Required",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        503 => "Service Unavailable",
        _ => "Unknown",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn written(r: &Response) -> String {
        let mut out = Vec::new();
        r.write_to(&mut out);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn serialises_with_length_and_reason() {
        let r = Response::text(200, "hi").header("X-A", "1");
        assert_eq!(
            written(&r),
            "HTTP/1.1 200 OK\r\nContent-Type: text/plain; charset=utf-8\r\nX-A: 1\r\nContent-Length: 2\r\n\r\nhi"
        );
    }

    #[test]
    fn content_length_is_always_computed() {
        let r = Response::new(204).header("content-length", "99");
        assert_eq!(
            written(&r),
            "HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\n"
        );
    }

    #[test]
    fn status_lines_of_every_width() {
        for (status, line) in [
            (101, "HTTP/1.1 101 Switching Protocols\r\n"),
            (426, "HTTP/1.1 426 Upgrade Required\r\n"),
            (799, "HTTP/1.1 799 Unknown\r\n"),
            (42, "HTTP/1.1 42 Unknown\r\n"),
            (1000, "HTTP/1.1 1000 Unknown\r\n"),
        ] {
            let mut out = Vec::new();
            write_status_line(&mut out, status);
            assert_eq!(String::from_utf8(out).unwrap(), line);
        }
    }

    #[test]
    fn header_injection_is_stripped() {
        let r = Response::new(200).header("X\r\n", "a\r\nSet-Cookie: x");
        assert!(written(&r).contains("X: aSet-Cookie: x\r\n"));
    }

    #[test]
    fn constructors() {
        assert_eq!(Response::not_found().status(), 404);
        assert_eq!(
            Response::html("x").headers()[0].1,
            "text/html; charset=utf-8"
        );
        let j = Response::json(201, &serde_json::json!([1]));
        assert_eq!(j.body_bytes(), b"[1]");
        assert_eq!(reason_phrase(426), "Upgrade Required");
        assert_eq!(reason_phrase(799), "Unknown");
    }
}
