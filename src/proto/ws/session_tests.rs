//! Unit tests for the session: in memory, grouped by concern.

use super::*;
use crate::proto::ws::{DeflateConfig, DeflateMode};

/// An owned copy of an `Incoming`, for assertions.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Msg {
    Text(String),
    Binary(Vec<u8>),
    Ping(Vec<u8>),
    Pong(Vec<u8>),
    Close(u16, String),
}

fn own(m: Incoming<'_>) -> Msg {
    match m {
        Incoming::Text(t) => Msg::Text(t.to_owned()),
        Incoming::Binary(b) => Msg::Binary(b.to_vec()),
        Incoming::Ping(b) => Msg::Ping(b.to_vec()),
        Incoming::Pong(b) => Msg::Pong(b.to_vec()),
        Incoming::Close(c, r) => Msg::Close(c.as_u16(), r.to_owned()),
    }
}

/// A masked client frame with a fixed mask.
fn frame(b0: u8, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let fin = b0 & 0x80 != 0;
    let rsv1 = b0 & 0x40 != 0;
    let op = OpCode::from_u8(b0 & 0x0f).unwrap();
    write_frame_header(&mut out, fin, rsv1, op, payload.len(), Some([9, 8, 7, 6]));
    let start = out.len();
    out.extend_from_slice(payload);
    apply_mask(&mut out[start..], [9, 8, 7, 6], 0);
    out
}

fn cfg() -> WsConfig {
    WsConfig::default()
}

struct Harness {
    session: WsSession,
    scratch: Scratch,
    cfg: WsConfig,
}

impl Harness {
    fn server() -> Self {
        Harness::new(Role::Server, None, cfg())
    }

    fn new(role: Role, deflate: Option<DeflateParams>, cfg: WsConfig) -> Self {
        Harness {
            session: WsSession::new(role, deflate),
            scratch: Scratch::new(),
            cfg,
        }
    }

    /// Decodes `bytes`, returning the messages and the error, if any.
    fn feed(&mut self, bytes: &[u8]) -> (Vec<Msg>, Result<usize, WsError>) {
        let mut buf = bytes.to_vec();
        let mut msgs = Vec::new();
        let r = self
            .session
            .decode(&mut buf, &self.cfg, &mut self.scratch, |m| {
                msgs.push(own(m))
            });
        (msgs, r)
    }

    fn ok(&mut self, bytes: &[u8]) -> Vec<Msg> {
        let (msgs, r) = self.feed(bytes);
        assert_eq!(r, Ok(bytes.len()));
        msgs
    }

    fn err(&mut self, bytes: &[u8]) -> u16 {
        let (_, r) = self.feed(bytes);
        r.unwrap_err().close_code().unwrap().as_u16()
    }
}

fn concat(frames: &[Vec<u8>]) -> Vec<u8> {
    frames.concat()
}

mod unfragmented {
    use super::*;

    #[test]
    fn text_binary_ping_pong() {
        let mut h = Harness::server();
        let bytes = concat(&[
            frame(0x81, b"hi"),
            frame(0x82, &[0, 255]),
            frame(0x89, b"p"),
            frame(0x8a, b""),
        ]);
        assert_eq!(
            h.ok(&bytes),
            [
                Msg::Text("hi".into()),
                Msg::Binary(vec![0, 255]),
                Msg::Ping(b"p".to_vec()),
                Msg::Pong(vec![])
            ]
        );
    }

    #[test]
    fn zero_copy_borrow_from_the_read_buffer() {
        let mut h = Harness::server();
        let mut buf = frame(0x82, b"abc");
        let ptr = buf[6..].as_ptr();
        match h
            .session
            .decode_next(&mut buf, &h.cfg, &mut h.scratch.rx)
            .unwrap()
        {
            Decoded::Frame {
                msg: Some(Incoming::Binary(b)),
                consumed: 9,
            } => assert_eq!(b.as_ptr(), ptr),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn partial_frames_are_left_at_every_cut() {
        let bytes = concat(&[frame(0x81, b"hello"), frame(0x82, &[7; 300])]);
        for cut in 0..bytes.len() {
            let mut h = Harness::server();
            let (first, r) = h.feed(&bytes[..cut]);
            let used = r.unwrap();
            let (second, r) = h.feed(&bytes[used..]);
            assert_eq!(r.unwrap(), bytes.len() - used);
            assert_eq!(first.len() + second.len(), 2, "cut {cut}");
        }
    }

    #[test]
    fn need_more_reports_the_frame_length() {
        let mut h = Harness::server();
        let bytes = frame(0x82, &[1; 200]);
        let mut head = bytes[..10].to_vec();
        let r = h.session.decode_next(&mut head, &h.cfg, &mut h.scratch.rx);
        assert_eq!(r, Ok(Decoded::NeedMore(208)));
        let mut one = [0x82];
        let r = h.session.decode_next(&mut one, &h.cfg, &mut h.scratch.rx);
        assert_eq!(r, Ok(Decoded::NeedMore(2)));
    }

    #[test]
    fn invalid_utf8_text_is_1007() {
        assert_eq!(Harness::server().err(&frame(0x81, b"\xce\xba\xff")), 1007);
    }

    #[test]
    fn unmasked_client_frame_is_1002() {
        assert_eq!(Harness::server().err(&[0x81, 0x00]), 1002);
        let mut client = Harness::new(Role::Client, None, cfg());
        assert_eq!(client.err(&frame(0x81, b"")), 1002);
        assert_eq!(client.ok(&[0x81, 0x01, b'a']), [Msg::Text("a".into())]);
    }

    #[test]
    fn rsv1_without_deflate_is_1002() {
        assert_eq!(Harness::server().err(&frame(0xc1, b"x")), 1002);
    }

    #[test]
    fn messages_before_an_error_are_delivered() {
        let mut h = Harness::server();
        let bytes = concat(&[frame(0x81, b"ok"), vec![0x83, 0x80, 0, 0, 0, 0]]);
        let (msgs, r) = h.feed(&bytes);
        assert_eq!(msgs, [Msg::Text("ok".into())]);
        assert!(r.is_err());
    }
}

mod fragmentation {
    use super::*;

    #[test]
    fn fragments_with_interleaved_control_frames() {
        let mut h = Harness::server();
        let bytes = concat(&[
            frame(0x01, b"hel"),
            frame(0x89, b"ping"),
            frame(0x00, b"lo "),
            frame(0x8a, b"pong"),
            frame(0x80, "wörld".as_bytes()),
        ]);
        assert_eq!(
            h.ok(&bytes),
            [
                Msg::Ping(b"ping".to_vec()),
                Msg::Pong(b"pong".to_vec()),
                Msg::Text("hello wörld".into())
            ]
        );
        assert!(!h.session.in_message());
    }

    #[test]
    fn binary_fragments_including_empty_ones() {
        let mut h = Harness::server();
        let bytes = concat(&[frame(0x02, b""), frame(0x00, &[1, 2]), frame(0x80, b"")]);
        assert_eq!(h.ok(&bytes), [Msg::Binary(vec![1, 2])]);
    }

    #[test]
    fn utf8_split_across_fragments() {
        let text = "κόσμε𝄞".as_bytes();
        for cut in 0..=text.len() {
            let mut h = Harness::server();
            let bytes = concat(&[frame(0x01, &text[..cut]), frame(0x80, &text[cut..])]);
            assert_eq!(h.ok(&bytes), [Msg::Text("κόσμε𝄞".into())], "cut {cut}");
        }
    }

    #[test]
    fn invalid_utf8_fails_fast_in_the_first_fragment() {
        let mut h = Harness::server();
        let (msgs, r) = h.feed(&frame(
            0x01,
            b"\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5\xed\xa0\x80",
        ));
        assert!(msgs.is_empty());
        assert_eq!(r.unwrap_err(), WsError::InvalidUtf8);
    }

    #[test]
    fn truncated_code_point_at_the_end_is_1007() {
        let mut h = Harness::server();
        let bytes = concat(&[frame(0x01, b"a"), frame(0x80, b"\xe2\x82")]);
        assert_eq!(h.err(&bytes), 1007);
    }

    #[test]
    fn continuation_without_start_is_1002() {
        assert_eq!(Harness::server().err(&frame(0x80, b"x")), 1002);
        assert_eq!(Harness::server().err(&frame(0x00, b"x")), 1002);
    }

    #[test]
    fn new_message_inside_a_fragmented_one_is_1002() {
        let bytes = concat(&[frame(0x01, b"a"), frame(0x81, b"b")]);
        assert_eq!(Harness::server().err(&bytes), 1002);
    }

    #[test]
    fn fragmented_control_frame_is_1002() {
        assert_eq!(Harness::server().err(&frame(0x09, b"")), 1002);
    }
}

mod limits {
    use super::*;

    #[test]
    fn oversized_frame_is_1009_from_its_header() {
        let mut h = Harness::new(Role::Server, None, cfg().max_frame_size(10));
        let bytes = frame(0x82, &[0; 11]);
        assert_eq!(h.err(&bytes[..8]), 1009);
    }

    #[test]
    fn oversized_message_over_fragments_is_1009() {
        let mut h = Harness::new(Role::Server, None, cfg().max_message_size(10));
        let bytes = concat(&[frame(0x02, &[0; 6]), frame(0x80, &[0; 5])]);
        assert_eq!(h.err(&bytes), 1009);
        let mut h = Harness::new(Role::Server, None, cfg().max_message_size(10));
        assert_eq!(
            h.ok(&concat(&[frame(0x02, &[0; 5]), frame(0x80, &[0; 5])]))
                .len(),
            1
        );
    }

    #[test]
    fn control_frame_over_125_is_1002() {
        let mut big = vec![0x89, 0xfe, 0, 126, 1, 2, 3, 4];
        big.extend_from_slice(&[0; 126]);
        assert_eq!(Harness::server().err(&big), 1002);
    }
}

mod close {
    use super::*;

    fn close_frame(body: &[u8]) -> Vec<u8> {
        frame(0x88, body)
    }

    #[test]
    fn close_with_code_and_reason() {
        let mut h = Harness::server();
        let mut body = 1000u16.to_be_bytes().to_vec();
        body.extend_from_slice("bye é".as_bytes());
        assert_eq!(
            h.ok(&close_frame(&body)),
            [Msg::Close(1000, "bye é".into())]
        );
        assert!(h.session.close_received());
    }

    #[test]
    fn empty_close_reports_1005() {
        assert_eq!(
            Harness::server().ok(&close_frame(b"")),
            [Msg::Close(1005, String::new())]
        );
        assert_eq!(close_reply(CloseCode::STATUS), None);
        assert_eq!(close_reply(CloseCode::AWAY), Some(CloseCode::AWAY));
    }

    #[test]
    fn one_byte_close_is_1002() {
        assert_eq!(Harness::server().err(&close_frame(&[3])), 1002);
    }

    #[test]
    fn every_close_code_is_validated() {
        for code in 0..=5000u16 {
            let mut h = Harness::server();
            let (msgs, r) = h.feed(&close_frame(&code.to_be_bytes()));
            if CloseCode::from(code).is_valid_received() {
                assert_eq!(msgs, [Msg::Close(code, String::new())]);
            } else {
                assert_eq!(
                    r.unwrap_err().close_code(),
                    Some(CloseCode::PROTOCOL),
                    "{code}"
                );
            }
        }
    }

    #[test]
    fn invalid_utf8_reason_is_1007() {
        assert_eq!(Harness::server().err(&close_frame(b"\x03\xe8\xff")), 1007);
    }

    #[test]
    fn frames_after_close_are_ignored() {
        let mut h = Harness::server();
        let bytes = concat(&[close_frame(b"\x03\xe8"), frame(0x81, b"late"), vec![0xff]]);
        assert_eq!(h.ok(&bytes), [Msg::Close(1000, String::new())]);
        assert_eq!(h.ok(b"garbage"), []);
    }

    #[test]
    fn close_is_sent_once_and_states_track() {
        let mut h = Harness::server();
        let mut out = Vec::new();
        assert!(h.session.encode_close(
            &mut out,
            Some(CloseCode::NORMAL),
            "done",
            &mut h.scratch.tx
        ));
        assert_eq!(out, b"\x88\x06\x03\xe8done");
        assert!(!h
            .session
            .encode_close(&mut out, Some(CloseCode::NORMAL), "", &mut h.scratch.tx));
        assert!(h.session.close_sent() && !h.session.is_closed());
        h.ok(&close_frame(b""));
        assert!(h.session.is_closed());
    }

    #[test]
    fn unsendable_codes_and_long_reasons() {
        let mut h = Harness::server();
        let mut out = Vec::new();
        h.session
            .encode_close(&mut out, Some(CloseCode::STATUS), "x", &mut h.scratch.tx);
        assert_eq!(out, [0x88, 0x00]);
        let mut h = Harness::server();
        let mut out = Vec::new();
        let reason = "é".repeat(100);
        h.session
            .encode_close(&mut out, Some(CloseCode::AWAY), &reason, &mut h.scratch.tx);
        assert_eq!(out[1], 124, "2 + 61 two-byte chars");
        assert!(std::str::from_utf8(&out[4..]).is_ok());
    }
}

mod encoding {
    use super::*;

    fn encode(
        role: Role,
        deflate: Option<DeflateParams>,
        cfg: &WsConfig,
        msgs: &[(OpCode, &[u8])],
    ) -> Vec<u8> {
        let mut s = WsSession::new(role, deflate);
        let mut scratch = Scratch::new();
        let mut out = Vec::new();
        for (op, p) in msgs {
            s.encode(&mut out, *op, p, cfg, &mut scratch.tx);
        }
        out
    }

    fn decode(role: Role, deflate: Option<DeflateParams>, cfg: WsConfig, bytes: &[u8]) -> Vec<Msg> {
        Harness::new(role, deflate, cfg).ok(bytes)
    }

    #[test]
    fn server_frames_are_unmasked_and_minimal() {
        let out = encode(Role::Server, None, &cfg(), &[(OpCode::Text, b"hi")]);
        assert_eq!(out, b"\x81\x02hi");
    }

    #[test]
    fn client_frames_are_masked_with_fresh_masks() {
        let out = encode(
            Role::Client,
            None,
            &cfg(),
            &[(OpCode::Text, b"hello"), (OpCode::Text, b"hello")],
        );
        assert_eq!(out.len(), 2 * 11);
        assert_eq!(out[1], 0x85);
        assert_ne!(out[2..6], out[13..17], "masks differ");
        assert_eq!(
            decode(Role::Server, None, cfg(), &out),
            [Msg::Text("hello".into()), Msg::Text("hello".into())]
        );
    }

    #[test]
    fn control_payloads_are_truncated_to_125() {
        let out = encode(Role::Server, None, &cfg(), &[(OpCode::Ping, &[1; 200])]);
        assert_eq!(out.len(), 127);
    }

    #[test]
    fn outgoing_fragmentation() {
        let c = cfg().send_fragment_size(Some(4));
        let out = encode(
            Role::Client,
            None,
            &c,
            &[(OpCode::Text, "0123456789".as_bytes())],
        );
        assert_eq!(out.len(), 3 * 6 + 10);
        assert_eq!(out[0], 0x01);
        assert_eq!(
            decode(Role::Server, None, cfg(), &out),
            [Msg::Text("0123456789".into())]
        );
    }

    fn shared_params() -> DeflateParams {
        DeflateParams {
            server_no_context_takeover: true,
            client_no_context_takeover: true,
            ..DeflateParams::default()
        }
    }

    fn payloads() -> Vec<Vec<u8>> {
        vec![
            b"short".to_vec(),
            "compress me please ".repeat(20).into_bytes(),
            (0..5000u32).map(|i| (i * 7 % 256) as u8).collect(),
            "again and again and again ".repeat(50).into_bytes(),
        ]
    }

    fn deflate_round_trip(params: DeflateParams, cfg: WsConfig) {
        let msgs: Vec<(OpCode, Vec<u8>)> = payloads()
            .into_iter()
            .map(|p| (OpCode::Binary, p))
            .collect();
        let refs: Vec<(OpCode, &[u8])> = msgs.iter().map(|(o, p)| (*o, p.as_slice())).collect();
        for (from, to) in [(Role::Client, Role::Server), (Role::Server, Role::Client)] {
            let wire = encode(from, Some(params), &cfg, &refs);
            let raw: usize = msgs.iter().map(|(_, p)| p.len()).sum();
            if cfg.send_fragment_size.is_none() {
                assert!(wire.len() < raw, "compressed: {} < {raw}", wire.len());
            }
            let got = decode(to, Some(params), cfg.clone(), &wire);
            let want: Vec<Msg> = msgs.iter().map(|(_, p)| Msg::Binary(p.clone())).collect();
            assert_eq!(got, want, "{from:?} -> {to:?}");
        }
    }

    #[test]
    fn deflate_round_trip_no_context_takeover() {
        deflate_round_trip(shared_params(), cfg());
    }

    #[test]
    fn deflate_round_trip_context_takeover() {
        let c = cfg().deflate(DeflateConfig::default().mode(DeflateMode::ContextTakeover));
        deflate_round_trip(DeflateParams::default(), c);
    }

    #[test]
    fn deflate_round_trip_small_windows_and_fragments() {
        let p = DeflateParams {
            server_max_window_bits: 8,
            client_max_window_bits: 9,
            ..DeflateParams::default()
        };
        deflate_round_trip(p, cfg().send_fragment_size(Some(7)));
    }

    #[test]
    fn context_takeover_shrinks_repeated_messages() {
        let c = cfg();
        let m = "the same message every time ".repeat(4).into_bytes();
        let mut s = WsSession::new(Role::Server, Some(DeflateParams::default()));
        let mut scratch = Scratch::new();
        let (mut a, mut b) = (Vec::new(), Vec::new());
        s.encode(&mut a, OpCode::Text, &m, &c, &mut scratch.tx);
        s.encode(&mut b, OpCode::Text, &m, &c, &mut scratch.tx);
        assert!(b.len() < a.len() / 2, "{} vs {}", b.len(), a.len());
    }

    #[test]
    fn small_messages_are_not_compressed() {
        let out = encode(
            Role::Server,
            Some(shared_params()),
            &cfg(),
            &[(OpCode::Text, b"tiny")],
        );
        assert_eq!(out, b"\x81\x04tiny");
        let big = "x".repeat(100);
        let out = encode(
            Role::Server,
            Some(shared_params()),
            &cfg(),
            &[(OpCode::Text, big.as_bytes())],
        );
        assert_eq!(out[0], 0xc1);
    }

    #[test]
    fn compressed_text_is_utf8_checked_after_inflating() {
        let bad = [b'a'; 100]
            .iter()
            .copied()
            .chain([0xff])
            .collect::<Vec<u8>>();
        let wire = encode(
            Role::Client,
            Some(shared_params()),
            &cfg(),
            &[(OpCode::Text, &bad)],
        );
        let mut h = Harness::new(Role::Server, Some(shared_params()), cfg());
        assert_eq!(h.err(&wire), 1007);
    }

    #[test]
    fn inflated_bomb_is_cut_at_max_message_size() {
        let zeros = vec![0u8; 4 << 20];
        let wire = encode(
            Role::Client,
            Some(shared_params()),
            &cfg(),
            &[(OpCode::Binary, &zeros)],
        );
        assert!(wire.len() < 64 << 10);
        let mut h = Harness::new(
            Role::Server,
            Some(shared_params()),
            cfg().max_message_size(1 << 20),
        );
        assert_eq!(h.err(&wire), 1009);
        assert!(h.scratch.rx.buf.capacity() <= (1 << 20) + (64 << 10));
    }

    #[test]
    fn garbage_compressed_payload_is_1007() {
        let mut h = Harness::new(Role::Server, Some(shared_params()), cfg());
        assert_eq!(h.err(&frame(0xc2, &[0xff; 10])), 1007);
    }

    #[test]
    fn rsv1_on_continuation_is_1002() {
        let mut h = Harness::new(Role::Server, Some(shared_params()), cfg());
        let bytes = concat(&[frame(0x41, b"a"), frame(0xc0, b"b")]);
        assert_eq!(h.err(&bytes), 1002);
    }

    #[test]
    fn shared_frames_and_choices() {
        let c = cfg();
        let mut scratch = Scratch::new();
        let payload = "broadcast ".repeat(30);
        let shared = encode_shared(OpCode::Text, payload.as_bytes(), true, &c, &mut scratch.tx);
        let deflated = shared.deflated.clone().unwrap();
        assert!(deflated.len() < shared.plain.len());
        let plain_msgs = decode(Role::Client, None, c.clone(), &shared.plain);
        assert_eq!(plain_msgs, [Msg::Text(payload.clone())]);
        let z = decode(Role::Client, Some(shared_params()), c.clone(), &deflated);
        assert_eq!(z, [Msg::Text(payload.clone())]);
        assert_eq!(
            WsSession::new(Role::Server, None).shared_choice(),
            SharedChoice::Plain
        );
        assert_eq!(
            WsSession::new(Role::Server, Some(shared_params())).shared_choice(),
            SharedChoice::Deflated
        );
        let small = DeflateParams {
            server_max_window_bits: 10,
            ..shared_params()
        };
        assert_eq!(
            WsSession::new(Role::Server, Some(small)).shared_choice(),
            SharedChoice::Plain
        );
        let ctx = DeflateParams::default();
        assert_eq!(
            WsSession::new(Role::Server, Some(ctx)).shared_choice(),
            SharedChoice::EncodeYourself
        );
        assert_eq!(
            WsSession::new(Role::Client, None).shared_choice(),
            SharedChoice::EncodeYourself
        );
        let short = encode_shared(OpCode::Text, b"x", true, &c, &mut scratch.tx);
        assert!(short.deflated.is_none());
    }
}

#[test]
fn an_idle_session_is_small() {
    assert!(
        std::mem::size_of::<WsSession>() <= 16,
        "{}",
        std::mem::size_of::<WsSession>()
    );
}

/// Not a timed test: prints the engine's echo rate for 32-byte messages.
/// `cargo test --release --lib ws::session::tests::echo_rate -- --ignored --nocapture`
#[test]
#[ignore]
fn echo_rate() {
    let cfg = cfg();
    let mut client = WsSession::new(Role::Client, None);
    let mut scratch = Scratch::new();
    let mut wire = Vec::new();
    for _ in 0..800 {
        client.encode(&mut wire, OpCode::Binary, &[7; 32], &cfg, &mut scratch.tx);
    }
    let mut server = WsSession::new(Role::Server, None);
    let mut buf = wire.clone();
    let mut out = Vec::with_capacity(64 << 10);
    let rounds = 5_000;
    let start = std::time::Instant::now();
    let mut total = 0usize;
    for _ in 0..rounds {
        buf.copy_from_slice(&wire);
        out.clear();
        let mut pos = 0;
        while let Ok(Decoded::Frame { msg, consumed }) =
            server.decode_next(&mut buf[pos..], &cfg, &mut scratch.rx)
        {
            pos += consumed;
            if let Some(Incoming::Binary(b)) = msg {
                server.encode(&mut out, OpCode::Binary, b, &cfg, &mut scratch.tx);
                total += 1;
            }
            if pos == buf.len() {
                break;
            }
        }
    }
    let secs = start.elapsed().as_secs_f64();
    println!(
        "echo_rate: {:.1} M msgs/s ({total} in {secs:.3}s)",
        total as f64 / secs / 1e6
    );
}

mod early_utf8 {
    use super::*;

    #[test]
    fn invalid_utf8_in_an_incomplete_text_frame_fails_before_the_frame_ends() {
        let mut payload = b"valid then ".to_vec();
        payload.extend_from_slice(&[0xff, 0xfe]);
        payload.extend_from_slice(b" and the rest of a long message");
        let f = frame(0x81, &payload);
        let cut = 2 + 4 + 13; // header, mask, 11 valid bytes and the two bad ones
        assert_eq!(Harness::server().err(&f[..cut]), 1007);
    }

    #[test]
    fn a_code_point_cut_by_the_read_is_not_an_error() {
        let f = frame(0x81, "ab€cd".as_bytes());
        let cut = 2 + 4 + 3; // "ab" and the first byte of "€"
        let (msgs, r) = Harness::server().feed(&f[..cut]);
        assert!(msgs.is_empty());
        assert_eq!(r, Ok(0));
    }

    #[test]
    fn an_incomplete_continuation_is_checked_with_the_message_so_far() {
        let mut h = Harness::server();
        // The first fragment ends inside "€"; the continuation's bad byte completes nothing.
        let first = frame(0x01, &"x€".as_bytes()[..2]);
        assert!(h.ok(&first).is_empty());
        let cont = frame(0x80, &[0x41, 0x82, 0x42, 0x43]);
        assert_eq!(h.err(&cont[..2 + 4 + 1]), 1007);
    }
}
