//! Plain HTTP/1.1: request parsing and responses for the upgrade and the HTTP hook (sans-IO).
