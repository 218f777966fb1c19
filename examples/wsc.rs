//! `wsc`: a `wscat`-like line client for testing servers from a shell, on sockloop's own
//! blocking clients. Each line read from stdin is sent (a text message over WebSocket, the
//! line and `\n` over a byte stream, one datagram over UDP); everything received is printed.
//!
//! ```text
//! cargo run --example wsc -- ws://127.0.0.1:9001/
//! cargo run --example wsc -- --header 'Authorization: Bearer t' ws://127.0.0.1:9000/ws
//! cargo run --example wsc -- --ca ca.pem wss://localhost:9443/
//! cargo run --example wsc -- --insecure wss://127.0.0.1:9443/
//! printf 'hello\n' | cargo run --example wsc -- tcp://127.0.0.1:7000
//! printf 'hi\n' | cargo run --example wsc -- unix:///tmp/echo.sock
//! printf 'hi\n' | cargo run --example wsc -- udp://127.0.0.1:7000
//! printf 'hi\n' | cargo run --example wsc -- --insecure tls://127.0.0.1:7443
//! ```
//!
//! WebSocket messages print as `< text` (binary ones as `< [binary: N bytes]`, the close as
//! `closed: CODE reason`); byte streams print what arrives, as it arrives. At the end of
//! stdin, `wsc` keeps printing until the server closes or stays quiet for `--wait`
//! milliseconds (default 1000), then closes cleanly. Exit status: 0, or 1 with the error
//! (which names the address: `connect 127.0.0.1:9001: Connection refused`).

use std::io::{BufRead, Write};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, TryRecvError};
use sockloop::client::ws::{Message, WsClient, WsClientOptions};
use sockloop::client::{ClientOptions, TcpClient, TlsClient, UdpClient, UnixClient};
use sockloop::ws::CloseCode;

/// How long one wait for server output lasts before stdin is looked at again.
const TICK: Duration = Duration::from_millis(20);

/// The command line.
#[derive(Debug, Clone, Default)]
pub struct Args {
    /// `ws://`, `wss://`, `tcp://`, `tls://`, `unix://` or `udp://`.
    pub url: String,
    /// `--header 'Name: value'` (WebSocket only), repeatable.
    pub headers: Vec<(String, String)>,
    /// `--ca FILE`: PEM roots to trust for wss:// and tls://.
    pub ca: Option<String>,
    /// `--insecure`: accept any server certificate (testing only).
    pub insecure: bool,
    /// `--wait MS`: quiet time after the end of stdin before closing.
    pub wait: Duration,
}

/// Parses the arguments after the program name.
///
/// # Errors
///
/// A usage message.
pub fn parse_args(args: impl IntoIterator<Item = String>) -> Result<Args, String> {
    let mut a = Args {
        wait: Duration::from_millis(1000),
        ..Args::default()
    };
    let mut it = args.into_iter();
    while let Some(arg) = it.next() {
        let mut val = || it.next().ok_or(format!("{arg} needs a value"));
        match arg.as_str() {
            "-H" | "--header" => {
                let h = val()?;
                let (name, value) = h
                    .split_once(':')
                    .ok_or(format!("--header {h:?}: expected 'Name: value'"))?;
                a.headers
                    .push((name.trim().to_owned(), value.trim().to_owned()));
            }
            "--ca" => a.ca = Some(val()?),
            "-k" | "--insecure" => a.insecure = true,
            "-w" | "--wait" => {
                let ms = val()?.parse().map_err(|_| "--wait takes milliseconds")?;
                a.wait = Duration::from_millis(ms);
            }
            "-h" | "--help" => return Err(String::new()),
            url if !url.starts_with('-') && a.url.is_empty() => a.url = url.to_owned(),
            other => return Err(format!("unexpected argument {other}")),
        }
    }
    if a.url.is_empty() {
        return Err("a URL is required".into());
    }
    Ok(a)
}

const USAGE: &str = "usage: wsc [--header 'Name: value']... [--ca FILE | --insecure] \
                     [--wait MS] ws://…|wss://…|tcp://HOST:PORT|tls://HOST:PORT|unix:///PATH|udp://HOST:PORT";

/// What one wait for output saw.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Output {
    Printed,
    Nothing,
    Closed,
}

/// One connection, whatever the transport: send a line, wait a little for output.
trait Line {
    /// Sends one line read from stdin (without its newline).
    fn send_line(&mut self, line: &str) -> sockloop::Result<()>;
    /// Waits up to `t` for output and prints it.
    fn print_some(&mut self, out: &mut dyn Write, t: Duration) -> sockloop::Result<Output>;
    /// Closes cleanly.
    fn finish(&mut self) -> sockloop::Result<()>;
}

impl Line for WsClient {
    fn send_line(&mut self, line: &str) -> sockloop::Result<()> {
        self.send_text(line)
    }

    fn print_some(&mut self, out: &mut dyn Write, t: Duration) -> sockloop::Result<Output> {
        let msg = match self.recv_timeout(t) {
            Ok(m) => m,
            Err(sockloop::Error::Closed) => return Ok(Output::Closed),
            Err(e) => return Err(e),
        };
        let line = match msg {
            None | Some(Message::Ping(_) | Message::Pong(_)) => return Ok(Output::Nothing),
            Some(Message::Text(t)) => format!("< {t}"),
            Some(Message::Binary(b)) => format!("< [binary: {} bytes]", b.len()),
            Some(Message::Close(code, reason)) => {
                writeln!(out, "closed: {} {reason}", u16::from(code))?;
                return Ok(Output::Closed);
            }
        };
        writeln!(out, "{line}")?;
        Ok(Output::Printed)
    }

    fn finish(&mut self) -> sockloop::Result<()> {
        match self.close(CloseCode::NORMAL, "") {
            Err(sockloop::Error::Closed) => Ok(()),
            other => other,
        }
    }
}

/// A byte-stream client (TCP, TLS, Unix): lines go out with `\n`, bytes print as they come.
struct Stream<S>(S);

macro_rules! stream_line {
    ($client:ty) => {
        impl Line for Stream<$client> {
            fn send_line(&mut self, line: &str) -> sockloop::Result<()> {
                self.0.write_all(format!("{line}\n").as_bytes())?;
                Ok(())
            }

            fn print_some(&mut self, out: &mut dyn Write, t: Duration) -> sockloop::Result<Output> {
                match self
                    .0
                    .exchange(b"", sockloop::client::ReplyEnd::FirstRead, t)
                {
                    Ok(bytes) => {
                        out.write_all(&bytes)?;
                        out.flush()?;
                        Ok(Output::Printed)
                    }
                    Err(sockloop::Error::Timeout) => Ok(Output::Nothing),
                    Err(sockloop::Error::Closed) => Ok(Output::Closed),
                    Err(e) => Err(e),
                }
            }

            fn finish(&mut self) -> sockloop::Result<()> {
                self.0.close()
            }
        }
    };
}

stream_line!(TcpClient);
stream_line!(TlsClient);
stream_line!(UnixClient);

/// UDP: a line is a datagram; each datagram received prints on its own line.
struct Datagrams(UdpClient);

impl Line for Datagrams {
    fn send_line(&mut self, line: &str) -> sockloop::Result<()> {
        self.0.send(line.as_bytes()).map(drop)
    }

    fn print_some(&mut self, out: &mut dyn Write, t: Duration) -> sockloop::Result<Output> {
        self.0.set_read_timeout(Some(t))?;
        let mut buf = vec![0u8; 64 << 10];
        match self.0.recv(&mut buf) {
            Ok(n) => {
                out.write_all(&buf[..n])?;
                writeln!(out)?;
                Ok(Output::Printed)
            }
            Err(sockloop::Error::Timeout) => Ok(Output::Nothing),
            Err(e) => Err(e),
        }
    }

    fn finish(&mut self) -> sockloop::Result<()> {
        Ok(())
    }
}

/// The TLS client configuration `--ca` or `--insecure` asks for.
fn tls_config(a: &Args) -> Result<Arc<rustls::ClientConfig>, String> {
    if a.insecure {
        return Ok(insecure::config());
    }
    let ca =
        a.ca.as_ref()
            .ok_or("wss:// and tls:// need --ca FILE or --insecure")?;
    let pem = sockloop::tls::read_pem_file(ca.as_ref()).map_err(|e| e.to_string())?;
    sockloop::tls::client_config_from_pem(&pem).map_err(|e| e.to_string())
}

/// Connects as the URL's scheme says.
fn connect(a: &Args) -> Result<Box<dyn Line>, String> {
    let err = |e: sockloop::Error| e.to_string();
    let (scheme, rest) = a.url.split_once("://").ok_or("the URL needs a scheme")?;
    let opts = ClientOptions::default().connect_timeout(Duration::from_secs(10));
    Ok(match scheme {
        "ws" | "wss" => {
            let mut o = WsClientOptions {
                headers: a.headers.clone(),
                ..WsClientOptions::default()
            };
            if scheme == "wss" {
                o = o.tls(tls_config(a)?);
            }
            Box::new(WsClient::connect(&a.url, o).map_err(err)?)
        }
        "tcp" => Box::new(Stream(TcpClient::connect(rest, opts).map_err(err)?)),
        "tls" => {
            let host = rest.rsplit_once(':').map_or(rest, |(h, _)| h);
            let host = host.trim_start_matches('[').trim_end_matches(']');
            let c = TlsClient::connect(rest, host, tls_config(a)?, opts).map_err(err)?;
            Box::new(Stream(c))
        }
        "unix" => Box::new(Stream(UnixClient::connect(rest, opts).map_err(err)?)),
        "udp" => Box::new(Datagrams(UdpClient::connect(rest, opts).map_err(err)?)),
        other => return Err(format!("unknown scheme {other}://")),
    })
}

/// Reads `input`'s lines on a thread of their own; the channel closes at its end.
fn lines(input: impl BufRead + Send + 'static) -> Receiver<String> {
    let (tx, rx) = crossbeam_channel::unbounded();
    std::thread::spawn(move || {
        for line in input.lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

/// Runs the client: sends `input`'s lines, prints what arrives on `out`, until the server
/// closes, or `--wait` of quiet after the end of `input`.
///
/// # Errors
///
/// The connection's error, as text (it names the address).
pub fn run(
    a: &Args,
    input: impl BufRead + Send + 'static,
    out: &mut dyn Write,
) -> Result<(), String> {
    let mut conn = connect(a)?;
    let err = |e: sockloop::Error| e.to_string();
    let input = lines(input);
    // Set at the end of input: close once nothing arrived until then.
    let mut quiet_until: Option<Instant> = None;
    loop {
        match input.try_recv() {
            Ok(line) => {
                conn.send_line(&line).map_err(err)?;
                continue;
            }
            Err(TryRecvError::Disconnected) if quiet_until.is_none() => {
                quiet_until = Some(Instant::now() + a.wait);
            }
            Err(_) => {}
        }
        if quiet_until.is_some_and(|t| Instant::now() >= t) {
            break;
        }
        match conn.print_some(out, TICK).map_err(err)? {
            Output::Closed => return Ok(()),
            Output::Printed if quiet_until.is_some() => {
                quiet_until = Some(Instant::now() + a.wait);
            }
            Output::Printed | Output::Nothing => {}
        }
    }
    conn.finish().map_err(err)
}

/// `--insecure`: a verifier that accepts any certificate but still checks the handshake
/// signatures (so the peer holds the key of the certificate it sent).
mod insecure {
    use std::sync::Arc;

    use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
    use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
    use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
    use rustls::{DigitallySignedStruct, SignatureScheme};

    #[derive(Debug)]
    struct AnyCert(Arc<CryptoProvider>);

    impl ServerCertVerifier for AnyCert {
        fn verify_server_cert(
            &self,
            _: &CertificateDer<'_>,
            _: &[CertificateDer<'_>],
            _: &ServerName<'_>,
            _: &[u8],
            _: UnixTime,
        ) -> Result<ServerCertVerified, rustls::Error> {
            Ok(ServerCertVerified::assertion())
        }

        fn verify_tls12_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            let algs = &self.0.signature_verification_algorithms;
            verify_tls12_signature(message, cert, dss, algs)
        }

        fn verify_tls13_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            let algs = &self.0.signature_verification_algorithms;
            verify_tls13_signature(message, cert, dss, algs)
        }

        fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
            self.0.signature_verification_algorithms.supported_schemes()
        }
    }

    /// A client configuration trusting every certificate.
    pub fn config() -> Arc<rustls::ClientConfig> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let cfg = rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .expect("ring supports the default versions")
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AnyCert(provider)))
            .with_no_client_auth();
        Arc::new(cfg)
    }
}

#[allow(dead_code)]
fn main() {
    let args = match parse_args(std::env::args().skip(1)) {
        Ok(a) => a,
        Err(msg) => {
            if !msg.is_empty() {
                eprintln!("wsc: {msg}");
            }
            eprintln!("{USAGE}");
            std::process::exit(2)
        }
    };
    let stdin = std::io::BufReader::new(std::io::stdin());
    if let Err(e) = run(&args, stdin, &mut std::io::stdout()) {
        eprintln!("wsc: {e}");
        std::process::exit(1)
    }
}
