//! The opening handshake (RFC 6455 section 4): server acceptance and rejection, and the
//! client's request and response check.

use ring::digest;

use super::base64;
use super::deflate::{self, DeflateParams};
use super::{WsConfig, WsError};
use crate::proto::http::Request;
use crate::proto::http::{write_header, write_status_line};

/// The GUID of RFC 6455 section 1.3.
const GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// Largest handshake response head a client accepts.
const MAX_RESPONSE_HEAD: usize = 16 << 10;

/// What the server agreed to in a successful handshake.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Accepted {
    /// Negotiated compression, if any.
    pub deflate: Option<DeflateParams>,
    /// The chosen subprotocol, if any.
    pub protocol: Option<String>,
}

/// `Sec-WebSocket-Accept` for a key: base64(SHA-1(key + GUID)).
pub(crate) fn accept_key(key: &str) -> String {
    base64::encode(accept_digest(key).as_ref())
}

/// SHA-1(key + GUID), the bytes `Sec-WebSocket-Accept` encodes.
fn accept_digest(key: &str) -> digest::Digest {
    let mut ctx = digest::Context::new(&digest::SHA1_FOR_LEGACY_USE_ONLY);
    ctx.update(key.as_bytes());
    ctx.update(GUID.as_bytes());
    ctx.finish()
}

/// Whether a header (possibly repeated) lists `token` in its comma-separated value.
fn has_token(req: &Request, header: &str, token: &str) -> bool {
    let listed = |v: &str| {
        // The common case, a value of just the token, without splitting.
        v.eq_ignore_ascii_case(token) || v.split(',').any(|t| t.trim().eq_ignore_ascii_case(token))
    };
    req.headers_all(header).any(listed)
}

/// Whether the request asks for a WebSocket (`Upgrade: websocket`); anything else goes to
/// the plain HTTP hook.
pub(crate) fn is_upgrade(req: &Request) -> bool {
    has_token(req, "upgrade", "websocket")
}

/// Validates an upgrade request and appends the `101 Switching Protocols` response (with
/// `extra_headers`, e.g. cookies set by an authenticator) to `out`.
///
/// # Errors
///
/// [`WsError::Handshake`] with 400 (not GET, not HTTP/1.1, missing `Upgrade`/`Connection`,
/// bad `Sec-WebSocket-Key`) or 426 (`Sec-WebSocket-Version` not 13); answer it with
/// [`write_rejection`]. Nothing is written to `out` then.
pub(crate) fn accept(
    req: &Request,
    cfg: &WsConfig,
    extra_headers: &[(&str, &str)],
    out: &mut Vec<u8>,
) -> Result<Accepted, WsError> {
    let key = validate(req)?;
    let deflate = deflate::negotiate(req.headers_all("sec-websocket-extensions"), &cfg.deflate);
    let protocol = choose_protocol(req, &cfg.subprotocols);
    write_status_line(out, 101);
    write_header(out, "Upgrade", "websocket");
    write_header(out, "Connection", "Upgrade");
    // The accept key goes straight into the answer (base64 output needs no cleaning).
    out.extend_from_slice(b"Sec-WebSocket-Accept: ");
    base64::encode_to(accept_digest(key).as_ref(), out);
    out.extend_from_slice(b"\r\n");
    if let Some((_, value)) = &deflate {
        write_header(out, "Sec-WebSocket-Extensions", value);
    }
    if let Some(p) = &protocol {
        write_header(out, "Sec-WebSocket-Protocol", p);
    }
    for (k, v) in extra_headers {
        write_header(out, k, v);
    }
    out.extend_from_slice(b"\r\n");
    Ok(Accepted {
        deflate: deflate.map(|(p, _)| p),
        protocol,
    })
}

/// Checks the RFC 6455 4.2.1 requirements; returns the key.
fn validate(req: &Request) -> Result<&str, WsError> {
    if req.method() != "GET" {
        return Err(WsError::handshake(400, "the upgrade must be a GET"));
    }
    if req.version() < 1 {
        return Err(WsError::handshake(400, "the upgrade needs HTTP/1.1"));
    }
    if !is_upgrade(req) {
        return Err(WsError::handshake(400, "missing Upgrade: websocket"));
    }
    if !has_token(req, "connection", "upgrade") {
        return Err(WsError::handshake(400, "missing Connection: Upgrade"));
    }
    if req.header("host").is_none_or(|h| h.trim().is_empty()) {
        return Err(WsError::handshake(400, "missing Host"));
    }
    if req.header("sec-websocket-version").map(str::trim) != Some("13") {
        return Err(WsError::handshake(426, "unsupported Sec-WebSocket-Version"));
    }
    if req.headers_all("sec-websocket-key").count() > 1 {
        return Err(WsError::handshake(400, "more than one Sec-WebSocket-Key"));
    }
    let key = req
        .header("sec-websocket-key")
        .map(str::trim)
        .ok_or(WsError::handshake(400, "missing Sec-WebSocket-Key"))?;
    match base64::decoded_len(key) {
        Some(16) => Ok(key),
        _ => Err(WsError::handshake(400, "invalid Sec-WebSocket-Key")),
    }
}

/// The first of the server's protocols that the client offered.
fn choose_protocol(req: &Request, supported: &[String]) -> Option<String> {
    let offered: Vec<&str> = req
        .headers_all("sec-websocket-protocol")
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .collect();
    supported
        .iter()
        .find(|p| offered.contains(&p.as_str()))
        .cloned()
}

/// Appends a rejection response for a failed handshake: a short text body, `Connection:
/// close`, and `Sec-WebSocket-Version: 13` on 426.
#[allow(dead_code)] // called by the reactor
pub(crate) fn write_rejection(status: u16, reason: &str, out: &mut Vec<u8>) {
    write_status_line(out, status);
    if status == 426 {
        write_header(out, "Sec-WebSocket-Version", "13");
    }
    write_header(out, "Content-Type", "text/plain; charset=utf-8");
    write_header(out, "Connection", "close");
    let body = format!(
        "{} {}: {}\n",
        status,
        crate::proto::http::reason_phrase(status),
        reason
    );
    write_header(out, "Content-Length", &body.len().to_string());
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(body.as_bytes());
}

/// A client handshake in progress: the key sent and what was offered.
#[derive(Debug, Clone)]
pub(crate) struct ClientHandshake {
    key: String,
    offered_deflate: bool,
    protocols: Vec<String>,
}

/// What the client learned from the server's 101.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ClientAccepted {
    /// Negotiated compression, if any.
    pub deflate: Option<DeflateParams>,
    /// The subprotocol the server chose, if any.
    pub protocol: Option<String>,
    /// Bytes of the buffer used by the response head (later bytes are frames).
    pub consumed: usize,
}

impl ClientHandshake {
    /// Appends the upgrade request for `host` (with `:port` when not the default) and
    /// `target` (path and query). `nonce` is 16 random bytes; `cfg.subprotocols` are
    /// offered, and deflate when enabled in `cfg.deflate`.
    pub(crate) fn request(
        host: &str,
        target: &str,
        extra_headers: &[(String, String)],
        cfg: &WsConfig,
        nonce: [u8; 16],
        out: &mut Vec<u8>,
    ) -> ClientHandshake {
        let key = base64::encode(&nonce);
        out.extend_from_slice(format!("GET {target} HTTP/1.1\r\n").as_bytes());
        write_header(out, "Host", host);
        write_header(out, "Upgrade", "websocket");
        write_header(out, "Connection", "Upgrade");
        write_header(out, "Sec-WebSocket-Key", &key);
        write_header(out, "Sec-WebSocket-Version", "13");
        let offered_deflate = cfg.deflate.enabled();
        if offered_deflate {
            write_header(
                out,
                "Sec-WebSocket-Extensions",
                &deflate::client_offer(&cfg.deflate),
            );
        }
        if !cfg.subprotocols.is_empty() {
            write_header(out, "Sec-WebSocket-Protocol", &cfg.subprotocols.join(", "));
        }
        for (k, v) in extra_headers {
            write_header(out, k, v);
        }
        out.extend_from_slice(b"\r\n");
        ClientHandshake {
            key,
            offered_deflate,
            protocols: cfg.subprotocols.clone(),
        }
    }

    /// Checks the server's response at the start of `buf`; `Ok(None)` means incomplete.
    ///
    /// # Errors
    ///
    /// [`WsError::Handshake`] with the server's status when it is not 101, or 101 when the
    /// 101 is invalid (wrong accept key, missing headers, extensions or protocols not
    /// offered).
    pub(crate) fn response(
        &self,
        buf: &[u8],
        cfg: &WsConfig,
    ) -> Result<Option<ClientAccepted>, WsError> {
        let mut headers = [httparse::EMPTY_HEADER; 64];
        let mut resp = httparse::Response::new(&mut headers);
        let consumed = match resp.parse(buf) {
            Ok(httparse::Status::Complete(n)) => n,
            Ok(httparse::Status::Partial) if buf.len() > MAX_RESPONSE_HEAD => {
                return Err(WsError::handshake(0, "handshake response too large"))
            }
            Ok(httparse::Status::Partial) => return Ok(None),
            Err(_) => return Err(WsError::handshake(0, "malformed handshake response")),
        };
        let status = resp.code.unwrap_or(0);
        if status != 101 {
            return refused(status, resp.headers, &buf[consumed..]);
        }
        let req = response_as_request(resp.headers);
        let accepted = self.check(&req, cfg)?;
        Ok(Some(ClientAccepted {
            consumed,
            ..accepted
        }))
    }

    fn check(&self, resp: &Request, cfg: &WsConfig) -> Result<ClientAccepted, WsError> {
        let bad = |reason| Err(WsError::handshake(101, reason));
        if !is_upgrade(resp) || !has_token(resp, "connection", "upgrade") {
            return bad("the 101 lacks Upgrade/Connection headers");
        }
        if resp.header("sec-websocket-accept") != Some(accept_key(&self.key).as_str()) {
            return bad("wrong Sec-WebSocket-Accept");
        }
        let deflate = match resp.header("sec-websocket-extensions") {
            None => None,
            Some(_) if !self.offered_deflate => return bad("extension not offered"),
            Some(v) => Some(deflate::client_accept(v, &cfg.deflate)?),
        };
        let protocol = resp.header("sec-websocket-protocol").map(str::to_owned);
        if protocol
            .as_ref()
            .is_some_and(|p| !self.protocols.contains(p))
        {
            return bad("subprotocol not offered");
        }
        Ok(ClientAccepted {
            deflate,
            protocol,
            consumed: 0,
        })
    }
}

/// Reuses the request type's case-insensitive header lookup for response headers.
fn response_as_request(headers: &[httparse::Header<'_>]) -> Request {
    let pairs: Vec<(&str, String)> = headers
        .iter()
        .map(|h| (h.name, String::from_utf8_lossy(h.value).trim().to_owned()))
        .collect();
    let refs: Vec<(&str, &str)> = pairs.iter().map(|(k, v)| (*k, v.as_str())).collect();
    Request::from_parts("", "/", &refs)
}

#[cfg(test)]
#[path = "handshake_tests.rs"]
mod tests;

/// Longest reason text kept from a refusal's body.
const MAX_REFUSAL_TEXT: usize = 512;

/// A non-101 answer: the status and the reason text in its body. `Ok(None)` while a short
/// body (up to [`MAX_REFUSAL_TEXT`]) is still arriving.
fn refused(
    status: u16,
    headers: &[httparse::Header<'_>],
    body: &[u8],
) -> Result<Option<ClientAccepted>, WsError> {
    let len = headers
        .iter()
        .find(|h| h.name.eq_ignore_ascii_case("content-length"))
        .and_then(|h| {
            std::str::from_utf8(h.value)
                .ok()?
                .trim()
                .parse::<usize>()
                .ok()
        })
        .unwrap_or(0);
    let want = len.min(MAX_REFUSAL_TEXT);
    if body.len() < want {
        return Ok(None);
    }
    let text = String::from_utf8_lossy(&body[..want]);
    Err(WsError::Refused {
        status,
        reason: text.trim().to_owned(),
    })
}
