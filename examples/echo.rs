//! Echo server over any sockloop transport.
//!
//! ```text
//! cargo run --release --example echo -- --transport tcp --addr 127.0.0.1:7000
//! cargo run --release --example echo -- --transport unix --addr /tmp/echo.sock
//! cargo run --release --example echo -- --transport tls   # prints a self-signed CA to trust
//! cargo run --release --example echo -- --transport ws    # ws://127.0.0.1:9001
//! ```
//! SIGINT / SIGTERM drain gracefully (5 s deadline).

use std::time::Duration;

use sockloop::handler::{on_data, on_datagram};
use sockloop::{
    on_message, Addr, Conn, DatagramSender, Dispatch, Listen, Runtime, ServerConfig, WsConn,
    WsMessage, WsServerConfig,
};

struct Args {
    transport: String,
    addr: Option<String>,
    cert: Option<String>,
    key: Option<String>,
    pollers: Option<usize>,
}

fn parse_args() -> Args {
    let mut a = Args {
        transport: "tcp".into(),
        addr: None,
        cert: None,
        key: None,
        pollers: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut val = || {
            it.next()
                .unwrap_or_else(|| usage(&format!("{flag} needs a value")))
        };
        match flag.as_str() {
            "--transport" => a.transport = val(),
            "--addr" => a.addr = Some(val()),
            "--cert" => a.cert = Some(val()),
            "--key" => a.key = Some(val()),
            "--pollers" => {
                a.pollers = Some(val().parse().unwrap_or_else(|_| usage("bad --pollers")))
            }
            "-h" | "--help" => usage(""),
            other => usage(&format!("unknown flag {other}")),
        }
    }
    a
}

fn usage(msg: &str) -> ! {
    if !msg.is_empty() {
        eprintln!("echo: {msg}");
    }
    eprintln!(
        "usage: echo [--transport tcp|tls|udp|unix|unixgram|ws|wss] [--addr HOST:PORT|PATH] \
         [--cert PEM --key PEM] [--pollers N]"
    );
    std::process::exit(2)
}

fn tls_config(a: &Args) -> sockloop::tls::TlsServerConfig {
    match (&a.cert, &a.key) {
        (Some(c), Some(k)) => sockloop::tls::TlsServerConfig::from_pem_files(c, k)
            .unwrap_or_else(|e| usage(&format!("tls: {e}"))),
        _ => {
            let ck =
                rcgen::generate_simple_self_signed(vec!["localhost".into(), "127.0.0.1".into()])
                    .expect("self-signed certificate");
            let cert = ck.cert.pem();
            println!("self-signed certificate (trust it as the CA):\n{cert}");
            sockloop::tls::TlsServerConfig::from_pem(
                cert.as_bytes(),
                ck.key_pair.serialize_pem().as_bytes(),
            )
            .expect("tls config")
        }
    }
}

fn main() -> sockloop::Result<()> {
    sockloop::signal::block_termination();
    let args = parse_args();
    let mut b = Runtime::builder();
    if let Some(n) = args.pollers {
        b = b.pollers(n);
    }
    let rt = b.build()?;
    // A message must fit the outbound queue whole (a larger one is refused as TooLarge):
    // 32 MiB holds the WebSocket limit's 16 MiB messages (Autobahn's 9.x cases echo them).
    let cfg = ServerConfig::new()
        .dispatch(Dispatch::Inline)
        .max_queued_bytes(32 << 20);
    let default_inet = "127.0.0.1:7000".to_string();
    let default_path = "/tmp/sockloop-echo.sock".to_string();
    let default_ws = "127.0.0.1:9001".to_string();
    let websocket = matches!(args.transport.as_str(), "ws" | "wss");
    let listen = match args.transport.as_str() {
        "tcp" => Listen::tcp(args.addr.clone().unwrap_or(default_inet)),
        "tls" => Listen::tls(args.addr.clone().unwrap_or(default_inet), tls_config(&args)),
        "udp" => Listen::udp(args.addr.clone().unwrap_or(default_inet)),
        "unix" => Listen::unix(args.addr.clone().unwrap_or(default_path)),
        "unixgram" => Listen::unix_datagram(args.addr.clone().unwrap_or(default_path)),
        "ws" => Listen::tcp(args.addr.clone().unwrap_or(default_ws)),
        "wss" => Listen::tls(args.addr.clone().unwrap_or(default_ws), tls_config(&args)),
        other => usage(&format!("unknown transport {other}")),
    };
    let datagram = listen.transport().is_datagram();
    let server = rt.serve(listen).config(cfg);
    let server = if websocket {
        server.websocket(
            WsServerConfig::new(),
            on_message(|ws: &WsConn, m: WsMessage<'_>| {
                let _ = match m {
                    WsMessage::Text(t) => ws.send_text(t),
                    WsMessage::Binary(b) => ws.send_binary(b),
                };
            }),
        )?
    } else if datagram {
        server.datagram(on_datagram(|tx: &DatagramSender, peer: &Addr, d: &[u8]| {
            let _ = tx.send_to(d, peer);
        }))?
    } else {
        server.stream(on_data(|c: &Conn, d: &[u8]| {
            let _ = c.send(d);
        }))?
    };
    println!(
        "echo ({}) listening on {}",
        args.transport,
        server.local_addr()
    );
    let sig = sockloop::signal::wait_termination();
    println!("signal {sig}: draining");
    let clean = server.shutdown(Duration::from_secs(5));
    rt.shutdown(Duration::from_secs(1));
    println!("stopped (clean: {clean})");
    Ok(())
}
