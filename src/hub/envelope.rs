//! The JSON envelope: parsing with limits (size, nesting depth) and encoding (sans-IO).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::error::{ErrorCode, HubError};

/// One message of the hub protocol (see `docs/PROTOCOL.md`). Only a JSON object is an
/// envelope: deserializing an array (`["chat:say", {…}, 5]`) fails, though serde would
/// accept one for a derived struct.
#[derive(Debug, Clone, PartialEq, Default, Serialize)]
pub struct Envelope {
    /// The event name, e.g. `chat:send`.
    pub event: String,
    /// The payload: any JSON (`null` when absent).
    #[serde(default, skip_serializing_if = "Value::is_null")]
    pub data: Value,
    /// Present when the sender asks for an acknowledgement.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<u64>,
    /// On replies (`ack`, `error`): the `id` of the envelope answered.
    #[serde(default, rename = "ref", skip_serializing_if = "Option::is_none")]
    pub reference: Option<u64>,
    /// Optional topic (free for applications).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub topic: Option<String>,
    /// Optional namespace (free for applications).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// Optional version of the event; selects a versioned route.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// Optional string headers (trace ids, client versions…).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, String>,
}

/// The envelope's fields as serde derives them (which accepts arrays too); read only
/// through [`Envelope`]'s object-only `Deserialize`.
#[derive(Deserialize)]
struct Wire {
    event: String,
    #[serde(default)]
    data: Value,
    #[serde(default)]
    id: Option<u64>,
    #[serde(default, rename = "ref")]
    reference: Option<u64>,
    #[serde(default)]
    topic: Option<String>,
    #[serde(default)]
    namespace: Option<String>,
    #[serde(default)]
    version: Option<String>,
    #[serde(default)]
    headers: BTreeMap<String, String>,
}

impl From<Wire> for Envelope {
    fn from(w: Wire) -> Self {
        Envelope {
            event: w.event,
            data: w.data,
            id: w.id,
            reference: w.reference,
            topic: w.topic,
            namespace: w.namespace,
            version: w.version,
            headers: w.headers,
        }
    }
}

impl<'de> Deserialize<'de> for Envelope {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct ObjectOnly;
        impl<'de> serde::de::Visitor<'de> for ObjectOnly {
            type Value = Envelope;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("an envelope object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, map: A) -> Result<Envelope, A::Error> {
                let d = serde::de::value::MapAccessDeserializer::new(map);
                Wire::deserialize(d).map(Envelope::from)
            }
        }
        d.deserialize_map(ObjectOnly)
    }
}

/// Limits applied to every inbound envelope before and while parsing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EnvelopeLimits {
    /// Largest envelope in bytes (default 64 KiB); larger ones get `too_large`.
    pub max_size: usize,
    /// Deepest nesting of arrays and objects, the envelope itself counting 1 (default 32);
    /// deeper ones get `bad_envelope` before any parsing.
    pub max_depth: usize,
    /// Longest event name in bytes (default 128).
    pub max_event_len: usize,
}

impl Default for EnvelopeLimits {
    fn default() -> Self {
        EnvelopeLimits {
            max_size: 64 << 10,
            max_depth: 32,
            max_event_len: 128,
        }
    }
}

/// A refused envelope: the error to send back, with the `id` when it could be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    /// The envelope's `id`, when the text was JSON with a numeric id.
    pub reference: Option<u64>,
    /// What was wrong.
    pub error: HubError,
}

fn refuse(reference: Option<u64>, code: ErrorCode, message: impl Into<String>) -> Refused {
    Refused {
        reference,
        error: HubError::new(code, message),
    }
}

/// Nesting depth of the JSON text, stopping as soon as it passes `max`. Strings are
/// skipped (brackets inside them do not count). Linear, no allocation.
pub fn nesting_exceeds(text: &[u8], max: usize) -> bool {
    let (mut depth, mut in_str, mut esc) = (0usize, false, false);
    for &b in text {
        if in_str {
            match (esc, b) {
                (true, _) => esc = false,
                (false, b'\\') => esc = true,
                (false, b'"') => in_str = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_str = true,
            b'[' | b'{' => {
                depth += 1;
                if depth > max {
                    return true;
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    false
}

#[derive(Deserialize)]
struct IdOnly {
    #[serde(default)]
    id: Option<u64>,
}

/// Parses one text frame into an envelope, within `limits`.
///
/// # Errors
/// `too_large` past `max_size`; `bad_envelope` for text that is not JSON, nests deeper than
/// `max_depth`, holds an out-of-range number (`1e400`), or has a field of the wrong type;
/// the `id` is returned with the error when it could be read. Never panics.
///
/// # Examples
/// ```
/// use sockloop::hub::{parse_envelope, EnvelopeLimits};
/// let env = parse_envelope(r#"{"event":"chat:send","data":{"t":"hi"},"id":7}"#,
///                          &EnvelopeLimits::default()).unwrap();
/// assert_eq!((env.event.as_str(), env.id), ("chat:send", Some(7)));
/// assert!(parse_envelope("[[[[", &EnvelopeLimits::default()).is_err());
/// ```
pub fn parse_envelope(text: &str, limits: &EnvelopeLimits) -> Result<Envelope, Refused> {
    if text.len() > limits.max_size {
        let msg = format!("envelope of {} bytes > {}", text.len(), limits.max_size);
        return Err(refuse(None, ErrorCode::TooLarge, msg));
    }
    if nesting_exceeds(text.as_bytes(), limits.max_depth) {
        let msg = format!("nesting deeper than {}", limits.max_depth);
        return Err(refuse(None, ErrorCode::BadEnvelope, msg));
    }
    let env: Envelope = match serde_json::from_str(text) {
        Ok(e) => e,
        Err(e) => {
            // Only an object has an `id` (a derived struct would read one from an array).
            let object = text.trim_start().starts_with('{');
            let id = object.then(|| serde_json::from_str::<IdOnly>(text).ok());
            let id = id.flatten().and_then(|i| i.id);
            return Err(refuse(id, ErrorCode::BadEnvelope, e.to_string()));
        }
    };
    if env.event.is_empty() || env.event.len() > limits.max_event_len {
        let msg = format!("event name must be 1..={} bytes", limits.max_event_len);
        return Err(refuse(env.id, ErrorCode::BadEnvelope, msg));
    }
    Ok(env)
}

#[derive(Serialize)]
struct Out<'a, T: Serialize + ?Sized> {
    event: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    data: Option<&'a T>,
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<u64>,
    #[serde(rename = "ref", skip_serializing_if = "Option::is_none")]
    reference: Option<u64>,
}

/// Encodes an outbound envelope `{"event", "data", "id"?, "ref"?}`.
///
/// # Errors
/// `internal` when `data` cannot be serialized (a map with non-string keys, a failing
/// `Serialize` impl).
pub fn encode<T: Serialize + ?Sized>(
    event: &str,
    data: &T,
    id: Option<u64>,
    reference: Option<u64>,
) -> Result<String, HubError> {
    let out = Out {
        event,
        data: Some(data),
        id,
        reference,
    };
    serde_json::to_string(&out).map_err(|e| HubError::internal(format!("encoding failed: {e}")))
}

/// Encodes an `error` event for `error`, answering `reference` when known.
pub fn encode_error(error: &HubError, reference: Option<u64>) -> String {
    #[derive(Serialize)]
    struct Body<'a> {
        code: &'a str,
        message: &'a str,
    }
    let body = Body {
        code: error.code.as_str(),
        message: &error.message,
    };
    // A struct of two strings always serializes.
    encode("error", &body, None, reference).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(t: &str) -> Result<Envelope, Refused> {
        parse_envelope(t, &EnvelopeLimits::default())
    }

    #[test]
    fn full_envelope_round_trips() {
        let t = r#"{"event":"a","data":[1,{"b":2}],"id":3,"topic":"t","namespace":"n","version":"2","headers":{"h":"v"}}"#;
        let e = parse(t).unwrap();
        assert_eq!(e.version.as_deref(), Some("2"));
        assert_eq!(e.headers["h"], "v");
        let back: Envelope = serde_json::from_str(&serde_json::to_string(&e).unwrap()).unwrap();
        assert_eq!(back, e);
    }

    #[test]
    fn malformed_inputs_are_refused_with_codes() {
        let code = |t: &str| parse(t).unwrap_err().error.code;
        assert_eq!(code("not json"), ErrorCode::BadEnvelope);
        assert_eq!(code(r#"{"data":1}"#), ErrorCode::BadEnvelope);
        assert_eq!(code(r#"{"event":5}"#), ErrorCode::BadEnvelope);
        assert_eq!(code(r#"{"event":""}"#), ErrorCode::BadEnvelope);
        assert_eq!(
            code(r#"{"event":"a","data":1e400}"#),
            ErrorCode::BadEnvelope
        );
        assert_eq!(code(r#"{"event":"a","id":-1}"#), ErrorCode::BadEnvelope);
        assert_eq!(code(r#"["chat:say",{"t":1},5]"#), ErrorCode::BadEnvelope);
        assert_eq!(code(r#""chat:say""#), ErrorCode::BadEnvelope);
        assert_eq!(code("5"), ErrorCode::BadEnvelope);
        assert_eq!(code("null"), ErrorCode::BadEnvelope);
        assert_eq!(code(&"[".repeat(10_000)), ErrorCode::BadEnvelope);
        let big = format!(r#"{{"event":"a","data":"{}"}}"#, "x".repeat(1 << 20));
        assert_eq!(code(&big), ErrorCode::TooLarge);
    }

    #[test]
    fn the_id_comes_back_with_a_type_error() {
        let r = parse(r#"{"event":"a","id":9,"headers":[1]}"#).unwrap_err();
        assert_eq!(r.reference, Some(9));
        assert_eq!(parse("[9]").unwrap_err().reference, None);
        let r = parse(r#"["chat:say",{},5]"#).unwrap_err();
        assert!(
            r.error.message.contains("an envelope object"),
            "{}",
            r.error.message
        );
    }

    #[test]
    fn huge_integers_become_floats() {
        let e = parse(r#"{"event":"a","data":100000000000000000000000000000}"#).unwrap();
        assert!(e.data.is_f64());
    }

    #[test]
    fn depth_scan_ignores_brackets_in_strings() {
        assert!(!nesting_exceeds(br#"{"a":"[[[[[[\"[[[["}"#, 2));
        assert!(nesting_exceeds(br#"{"a":[[1]]}"#, 2));
        assert!(!nesting_exceeds(br#"{"a":[[1]]}"#, 3));
    }

    #[test]
    fn encoding_skips_absent_fields() {
        assert_eq!(
            encode("x", &1, None, Some(4)).unwrap(),
            r#"{"event":"x","data":1,"ref":4}"#
        );
        let e = encode_error(&HubError::not_found("no"), None);
        assert_eq!(
            e,
            r#"{"event":"error","data":{"code":"not_found","message":"no"}}"#
        );
    }
}
