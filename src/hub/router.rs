//! Route resolution by event name: exact and versioned names, wildcard prefixes, `*`
//! (sans-IO, generic over what a route holds).

use std::collections::HashMap;

/// Routes by event name. Precedence: exact name with the envelope's version > exact name
/// > longest wildcard prefix (`chat:*`) > `*`.
#[derive(Debug, Clone)]
pub(crate) struct Router<R> {
    exact: HashMap<String, R>,
    versioned: HashMap<(String, String), R>,
    /// `(prefix, route)`, longest prefix first.
    prefixes: Vec<(String, R)>,
    any: Option<R>,
}

impl<R> Default for Router<R> {
    fn default() -> Self {
        Router {
            exact: HashMap::new(),
            versioned: HashMap::new(),
            prefixes: Vec::new(),
            any: None,
        }
    }
}

impl<R> Router<R> {
    /// Adds a route; a later route for the same pattern replaces the earlier. A `version`
    /// applies to exact names only (a wildcard ignores it).
    pub(crate) fn insert(&mut self, pattern: &str, version: Option<&str>, route: R) {
        if pattern == "*" {
            self.any = Some(route);
        } else if let Some(prefix) = pattern.strip_suffix('*') {
            self.prefixes.retain(|(p, _)| p != prefix);
            self.prefixes.push((prefix.to_owned(), route));
            self.prefixes.sort_by_key(|p| std::cmp::Reverse(p.0.len()));
        } else if let Some(v) = version {
            self.versioned
                .insert((pattern.to_owned(), v.to_owned()), route);
        } else {
            self.exact.insert(pattern.to_owned(), route);
        }
    }

    /// The route for `event` at `version`, if any.
    pub(crate) fn resolve(&self, event: &str, version: Option<&str>) -> Option<&R> {
        if let Some(v) = version {
            // The lookup key is owned; versioned routes are rare, the allocation is small.
            if let Some(r) = self.versioned.get(&(event.to_owned(), v.to_owned())) {
                return Some(r);
            }
        }
        if let Some(r) = self.exact.get(event) {
            return Some(r);
        }
        self.prefixes
            .iter()
            .find(|(p, _)| event.starts_with(p.as_str()))
            .map(|(_, r)| r)
            .or(self.any.as_ref())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn router() -> Router<&'static str> {
        let mut r = Router::default();
        r.insert("*", None, "any");
        r.insert("chat:*", None, "chat");
        r.insert("chat:room:*", None, "room");
        r.insert("chat:send", None, "send");
        r.insert("chat:send", Some("2"), "send2");
        r
    }

    #[test]
    fn precedence() {
        let r = router();
        assert_eq!(r.resolve("chat:send", Some("2")), Some(&"send2"));
        assert_eq!(r.resolve("chat:send", Some("3")), Some(&"send"));
        assert_eq!(r.resolve("chat:send", None), Some(&"send"));
        assert_eq!(r.resolve("chat:room:x", None), Some(&"room"));
        assert_eq!(r.resolve("chat:other", Some("2")), Some(&"chat"));
        assert_eq!(r.resolve("else", None), Some(&"any"));
    }

    #[test]
    fn no_route_without_catch_all() {
        let mut r = Router::default();
        r.insert("a", None, 1);
        r.insert("b:*", None, 2);
        assert_eq!(r.resolve("c", None), None);
        assert_eq!(r.resolve("b", None), None);
        assert_eq!(r.resolve("b:", None), Some(&2));
        r.insert("b:*", None, 3);
        assert_eq!(r.resolve("b:x", None), Some(&3));
    }
}
