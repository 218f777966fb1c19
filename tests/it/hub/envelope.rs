//! Envelopes, errors, routing and middleware.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Deserialize;
use serde_json::{json, Value};
use sockloop::client::ws::Message;
use sockloop::hub::{mw, Ctx, ErrorCode, Handler, HubError, Next, RateLimit, Route, Scope};

use super::*;

fn error_code(v: &Value) -> &str {
    assert_eq!(v["event"], "error", "{v}");
    v["data"]["code"].as_str().unwrap()
}

#[derive(Deserialize)]
struct Point {
    #[allow(dead_code)]
    x: i32,
}

#[test]
fn malformed_envelopes_get_errors_and_the_connection_keeps_serving() {
    let rt = rt();
    let hub = base()
        .middleware(mw::recover())
        .on("point", |ctx: &mut Ctx| {
            let _: Point = ctx.data()?;
            ctx.ack("ok")
        })
        .on("boom", |_: &mut Ctx| panic!("handler bug"))
        .build();
    let s = serve(&rt, &hub);
    let (mut c, _) = connect(&s, "");
    let deep = format!(r#"{{"event":"echo","data":{}}}"#, "[".repeat(10_000));
    let huge = format!(r#"{{"event":"echo","data":"{}"}}"#, "x".repeat(1 << 20));
    let cases: Vec<(String, &str)> = vec![
        ("not json".into(), "bad_envelope"),
        (r#"{"data":1}"#.into(), "bad_envelope"),
        (r#"{"event":["a"]}"#.into(), "bad_envelope"),
        (r#"{"event":"echo","id":"seven"}"#.into(), "bad_envelope"),
        (r#"{"event":"echo","data":1e400}"#.into(), "bad_envelope"),
        // Only an object is an envelope: serde would read a derived struct from an array.
        (r#"["whoami",null,5]"#.into(), "bad_envelope"),
        (r#"["echo",{"x":1}]"#.into(), "bad_envelope"),
        (r#""echo""#.into(), "bad_envelope"),
        ("42".into(), "bad_envelope"),
        (deep, "bad_envelope"),
        (huge, "too_large"),
    ];
    for (text, code) in &cases {
        c.send_text(text).unwrap();
        let v = recv_json(&mut c);
        assert_eq!(error_code(&v), *code, "for {:.40}", text);
        assert!(v.get("ref").is_none());
    }
    let v = request(&mut c, &json!({"event": "nope", "id": 5}));
    assert_eq!(
        (error_code(&v), v["ref"].as_u64()),
        ("unknown_event", Some(5))
    );
    let v = request(
        &mut c,
        &json!({"event": "point", "data": {"x": "no"}, "id": 6}),
    );
    assert_eq!(error_code(&v), "bad_data");
    let v = request(
        &mut c,
        &json!({"event": "point", "data": {"x": 1e300}, "id": 7}),
    );
    assert_eq!(error_code(&v), "bad_data");
    let v = request(&mut c, &json!({"event": "boom", "id": 8}));
    assert_eq!(error_code(&v), "internal");
    // Huge integers without arbitrary precision arrive as floats.
    c.send_text(r#"{"event":"echo","data":100000000000000000000000000000,"id":9}"#)
        .unwrap();
    let v = recv_json(&mut c);
    assert_eq!(
        (v["event"].as_str(), v["ref"].as_u64()),
        (Some("echo"), Some(9))
    );
    assert_eq!(v["data"].as_f64(), Some(1e29));
    // The same connection still serves.
    let v = request(
        &mut c,
        &json!({"event": "point", "data": {"x": 1}, "id": 10}),
    );
    assert_eq!(
        (v["event"].as_str(), v["data"].as_str()),
        (Some("ack"), Some("ok"))
    );
    assert!(hub.stats().errors >= 11);
}

#[test]
fn routes_by_exact_version_wildcard_and_catch_all() {
    let rt = rt();
    let named = |name: &'static str| move |ctx: &mut Ctx| ctx.reply(name);
    let hub = base()
        .on("v:x", named("exact"))
        .route("v:x", Route::new(named("v2")).version("2"))
        .on("v:*", named("prefix"))
        .on("v:deep:*", named("longer"))
        .on("*", named("any"))
        .build();
    let s = serve(&rt, &hub);
    let (mut c, _) = connect(&s, "");
    let cases = [
        (json!({"event": "v:x", "version": "2"}), "v2"),
        (json!({"event": "v:x", "version": "3"}), "exact"),
        (json!({"event": "v:x"}), "exact"),
        (json!({"event": "v:y", "version": "2"}), "prefix"),
        (json!({"event": "v:deep:z"}), "longer"),
        (json!({"event": "other"}), "any"),
    ];
    for (i, (mut env, want)) in cases.into_iter().enumerate() {
        env["id"] = json!(i);
        let v = request(&mut c, &env);
        assert_eq!(v["data"], want, "{env}");
    }
}

#[test]
fn middleware_runs_in_order_and_short_circuits() {
    let rt = rt();
    let log = Arc::new(Mutex::new(Vec::<String>::new()));
    let layer = |name: &'static str, log: Arc<Mutex<Vec<String>>>| {
        move |ctx: &mut Ctx, next: Next<'_>| {
            let ev = ctx.event().to_owned();
            log.lock().unwrap().push(format!("{name}> {ev}"));
            let r = next.run(ctx);
            log.lock().unwrap().push(format!("<{name} {ev}"));
            r
        }
    };
    let (trace_tx, trace_rx) = crossbeam_channel::unbounded();
    let l2 = log.clone();
    let hub = base()
        .middleware(layer("a", log.clone()))
        .middleware(mw::trace(move |ev, _elapsed| {
            let _ = trace_tx.send(ev.to_owned());
        }))
        .route(
            "guarded",
            Route::new(move |ctx: &mut Ctx| {
                l2.lock().unwrap().push("handler guarded".into());
                ctx.ack("in")
            })
            .middleware(layer("b", log.clone()))
            .middleware(mw::validate(|env| match env.data.is_object() {
                true => Ok(()),
                false => Err(HubError::bad_data("data must be an object")),
            })),
        )
        .route(
            "private",
            Route::new(|ctx: &mut Ctx| ctx.ack("secret")).middleware(mw::auth_required()),
        )
        .build();
    let s = serve(&rt, &hub);
    let (mut c, _) = connect(&s, "");
    log.lock().unwrap().clear();
    // The answer leaves before the outer layers finish: a second round trip on the same
    // connection (handled strictly after) settles the log.
    let settled = |c: &mut sockloop::client::ws::WsClient, id: u64| {
        request(c, &json!({"event": "echo", "id": id}));
        let got = std::mem::take(&mut *log.lock().unwrap());
        let guarded = got.iter().filter(|e| e.ends_with(" guarded"));
        guarded
            .map(|e| e.split(' ').next().unwrap().to_owned())
            .collect::<Vec<_>>()
    };
    let v = request(&mut c, &json!({"event": "guarded", "data": {}, "id": 1}));
    assert_eq!(v["data"], "in");
    let want = ["a>", "b>", "handler", "<b", "<a"];
    assert_eq!(settled(&mut c, 100), want);
    let v = request(&mut c, &json!({"event": "guarded", "data": 3, "id": 2}));
    assert_eq!(v["data"]["code"], "bad_data");
    let want = ["a>", "b>", "<b", "<a"];
    assert_eq!(settled(&mut c, 101), want, "the handler did not run");
    let v = request(&mut c, &json!({"event": "private", "id": 3}));
    assert_eq!(v["data"]["code"], ErrorCode::Unauthorized.as_str());
    let (mut ann, _) = connect(&s, "user=ann");
    let v = request(&mut ann, &json!({"event": "private", "id": 4}));
    assert_eq!(v["data"], "secret");
    let traced: Vec<String> = trace_rx.try_iter().collect();
    for ev in ["whoami", "guarded", "private"] {
        assert!(traced.iter().any(|t| t == ev), "{ev} in {traced:?}");
    }
}

#[test]
fn rate_limits_per_connection_and_per_user() {
    let rt = rt();
    let hour = Duration::from_secs(3600);
    let hub = base()
        .route(
            "conn",
            Route::new(|ctx: &mut Ctx| ctx.ack("ok"))
                .middleware(mw::rate_limit(RateLimit::per_conn(3, hour))),
        )
        .route(
            "user",
            Route::new(|ctx: &mut Ctx| ctx.ack("ok"))
                .middleware(mw::rate_limit(RateLimit::per_user(3, hour))),
        )
        .build();
    // A route's types are exported where users look: `sockloop::hub::{Scope, Handler, …}`.
    let by_user = RateLimit {
        scope: Scope::User,
        burst: 3,
        per: hour,
    };
    assert_eq!(by_user, RateLimit::per_user(3, hour));
    fn a_handler(_: &impl Handler) {}
    a_handler(&|ctx: &mut Ctx| ctx.ack("ok"));
    let s = serve(&rt, &hub);
    let (mut a, _) = connect(&s, "user=ann");
    let (mut b, _) = connect(&s, "user=ann");
    let call = |c: &mut sockloop::client::ws::WsClient, ev: &str, id: u64| {
        let v = request(c, &json!({"event": ev, "id": id}));
        v["event"] == "ack"
    };
    let conn: Vec<bool> = (0..4).map(|i| call(&mut a, "conn", i)).collect();
    assert_eq!(conn, [true, true, true, false]);
    assert!(
        call(&mut b, "conn", 10),
        "another connection has its own bucket"
    );
    let user = [
        call(&mut a, "user", 20),
        call(&mut b, "user", 21),
        call(&mut a, "user", 22),
        call(&mut b, "user", 23),
    ];
    assert_eq!(
        user,
        [true, true, true, false],
        "one bucket for both devices"
    );
    let v = request(&mut a, &json!({"event": "user", "id": 24}));
    assert_eq!(v["data"]["code"], "rate_limited");
    let v = request(&mut a, &json!({"event": "echo", "data": 1, "id": 25}));
    assert_eq!(v["data"], 1, "other routes still serve");
}

#[test]
fn binary_frames_reach_the_binary_handler_untouched() {
    let rt = rt();
    let hub = base()
        .on_binary(|_, ws, data| {
            let mut back = data.to_vec();
            back.reverse();
            let _ = ws.send_binary(&back);
        })
        .build();
    let s = serve(&rt, &hub);
    let (mut c, _) = connect(&s, "");
    c.send_binary(&[0, 159, 146, 150, 255]).unwrap();
    loop {
        match c.recv_timeout(WAIT).unwrap().unwrap() {
            Message::Binary(b) => {
                assert_eq!(b, [255, 150, 146, 159, 0]);
                break;
            }
            Message::Ping(_) => continue,
            other => panic!("{other:?}"),
        }
    }
}

/// Envelopes that cannot be read count against the global rate limit like events do: a
/// flood of garbage gets `bad_envelope` for the burst, then `rate_limited`, and spends the
/// same bucket real events use. Identity checks do not hide the `bad_envelope`.
#[test]
fn invalid_envelopes_count_against_the_rate_limit() {
    let rt = rt();
    let hour = Duration::from_secs(3600);
    let hub = base()
        .middleware(mw::rate_limit(RateLimit::per_conn(4, hour)))
        .middleware(mw::auth_required())
        .route("ping", Route::new(|ctx: &mut Ctx| ctx.ack("pong")))
        .build();
    let s = serve(&rt, &hub);
    let mut c = dial(&s, "");
    let codes: Vec<String> = ["not json", "[1,2]", "{}"]
        .iter()
        .map(|garbage| {
            c.send_text(garbage).unwrap();
            let v = recv_json(&mut c);
            assert_eq!(v["event"], "error", "{v}");
            v["data"]["code"].as_str().unwrap().to_owned()
        })
        .collect();
    assert_eq!(codes, ["bad_envelope", "bad_envelope", "bad_envelope"]);
    // One token left: a real event spends it (refused for identity, but counted)…
    let v = request(&mut c, &json!({"event": "ping", "id": 1}));
    assert_eq!(v["data"]["code"], "unauthorized", "{v}");
    // …and the garbage after it is refused by the limit.
    c.send_text("still not json").unwrap();
    let v = recv_json(&mut c);
    assert_eq!(v["data"]["code"], "rate_limited", "{v}");
}
