//! The browser client, `sockloop.js`, served by hub servers at fixed paths.
//!
//! One source file (`src/hub/assets/sockloop.js`, embedded) is a classic script that ends
//! by assigning `globalThis.sockloop`; the ES module variant is the same text with that one
//! last line replaced by `export` statements, made once at first use. So
//! `<script src="/sockloop.js">` gives `window.sockloop`, and
//! `import { connect } from "/sockloop.mjs"` gives the same functions without a global.
//! [`Hub::server_config`](super::Hub::server_config) installs the paths in front of the
//! server's own HTTP hook; [`respond`] answers them from any other hook.

use std::sync::OnceLock;

use crate::proto::http::{Request, Response};

/// Path of the classic script (`window.sockloop`).
pub const SCRIPT_PATH: &str = "/sockloop.js";
/// Path of the ES module variant (`export { connect, … }`).
pub const MODULE_PATH: &str = "/sockloop.mjs";

/// The source: a classic script.
const SOURCE: &str = include_str!("assets/sockloop.js");
/// Its last line, which the module variant replaces.
const GLOBAL_LINE: &str =
    "globalThis.sockloop = sockloop; // sockloop:classic (the ES module variant exports instead)\n";
const EXPORTS: &str =
    "export const { connect, Client, backoffCap, backoffDelay, DEFAULTS } = sockloop;\n\
                       export default sockloop;\n";

/// The classic script's text.
pub fn script() -> &'static str {
    SOURCE
}

/// The ES module's text: the script with its global assignment replaced by exports.
pub fn module() -> &'static str {
    static MODULE: OnceLock<String> = OnceLock::new();
    MODULE.get_or_init(|| match SOURCE.strip_suffix(GLOBAL_LINE) {
        Some(body) => format!("{body}{EXPORTS}"),
        // Not reached: a unit test holds the source to its last line.
        None => format!("{SOURCE}{EXPORTS}"),
    })
}

/// A strong validator for `text`: FNV-1a 64 of the bytes, quoted.
fn etag(text: &str) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in text.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("\"{h:016x}\"")
}

fn tags() -> &'static (String, String) {
    static TAGS: OnceLock<(String, String)> = OnceLock::new();
    TAGS.get_or_init(|| (etag(script()), etag(module())))
}

/// The answer to a `GET` or `HEAD` of [`SCRIPT_PATH`] or [`MODULE_PATH`], `None` for any
/// other request: `text/javascript; charset=utf-8`, `Cache-Control: public, max-age=300`
/// (browsers revalidate after five minutes), an `ETag` (a matching `If-None-Match` gets
/// 304 without a body), `X-Content-Type-Options: nosniff`.
///
/// # Examples
/// ```
/// use sockloop::hub::browser;
/// use sockloop::http::Response;
/// // A hook of one's own that serves the client too (Hub::server_config does this).
/// let hook = |req: &sockloop::http::Request| {
///     browser::respond(req).unwrap_or_else(Response::not_found)
/// };
/// # let _ = hook;
/// assert!(browser::module().contains("export default sockloop;"));
/// ```
pub fn respond(req: &Request) -> Option<Response> {
    let (text, tag) = match req.path() {
        SCRIPT_PATH => (script(), &tags().0),
        MODULE_PATH => (module(), &tags().1),
        _ => return None,
    };
    let head = match req.method() {
        "GET" => false,
        "HEAD" => true,
        _ => return None,
    };
    let fresh = req
        .header("if-none-match")
        .is_some_and(|v| v.split(',').any(|t| t.trim() == tag || t.trim() == "*"));
    let r = Response::new(if fresh { 304 } else { 200 })
        .header("Content-Type", "text/javascript; charset=utf-8")
        .header("Cache-Control", "public, max-age=300")
        .header("ETag", tag.as_str())
        .header("X-Content-Type-Options", "nosniff");
    Some(match fresh || head {
        true => r,
        false => r.body(text),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn get(method: &str, path: &str, headers: &[(&str, &str)]) -> Request {
        Request::from_parts(method, path, headers)
    }

    #[test]
    fn the_module_is_the_script_with_exports_instead_of_the_global() {
        assert!(SOURCE.ends_with(GLOBAL_LINE));
        assert_eq!(SOURCE.matches(GLOBAL_LINE.trim_end()).count(), 1);
        assert!(!module().contains("globalThis.sockloop ="));
        assert!(module().ends_with("export default sockloop;\n"));
        assert!(module().starts_with(&SOURCE[..SOURCE.len() - GLOBAL_LINE.len()]));
    }

    #[test]
    fn both_paths_answer_with_javascript_and_a_validator() {
        for (path, text) in [(SCRIPT_PATH, script()), (MODULE_PATH, module())] {
            let r = respond(&get("GET", path, &[])).expect("served");
            assert_eq!(r.status(), 200);
            assert_eq!(r.body_bytes(), text.as_bytes());
            let h = |n: &str| {
                r.headers()
                    .iter()
                    .find(|(k, _)| k.eq_ignore_ascii_case(n))
                    .map(|(_, v)| v.clone())
            };
            assert_eq!(
                h("content-type").as_deref(),
                Some("text/javascript; charset=utf-8")
            );
            assert_eq!(h("cache-control").as_deref(), Some("public, max-age=300"));
            let tag = h("etag").expect("an etag");
            let again = respond(&get("GET", path, &[("If-None-Match", &tag)])).expect("served");
            assert_eq!(again.status(), 304);
            assert!(again.body_bytes().is_empty());
            let head = respond(&get("HEAD", path, &[])).expect("served");
            assert_eq!(head.status(), 200);
            assert!(head.body_bytes().is_empty());
        }
        assert_ne!(tags().0, tags().1);
        assert!(respond(&get("GET", "/other.js", &[])).is_none());
        assert!(respond(&get("POST", SCRIPT_PATH, &[])).is_none());
    }
}
