//! Helpers shared by the benchmark programs (each bench mounts this with `mod common;`;
//! not every bench uses every helper).
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;

/// `key` from the environment, parsed, or `default`.
pub fn env_or<T: std::str::FromStr>(key: &str, default: T) -> T {
    std::env::var(key)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Runs per figure: `BENCH_RUNS`, or `default`.
pub fn runs(default: usize) -> usize {
    env_or("BENCH_RUNS", default)
}

/// Whether `name` is selected by `BENCH_ONLY` (a comma-separated list); `default` when
/// `BENCH_ONLY` is unset.
pub fn wanted(name: &str, default: bool) -> bool {
    std::env::var("BENCH_ONLY").map_or(default, |f| f.split(',').any(|x| x == name))
}

/// The median (the upper one for an even count).
pub fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// The wsbench binary: `WSBENCH`, or the shared tool's release build.
pub fn wsbench() -> Option<PathBuf> {
    let p = std::env::var_os("WSBENCH")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                .join("../shared/tools/wsbench/target/release/wsbench")
        });
    p.exists().then_some(p)
}

/// Pins the calling thread (and the threads it starts later) to one core.
pub fn pin_to(core: usize) {
    // SAFETY: a zeroed cpu_set_t is valid; CPU_SET writes within it.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(core, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
    }
}

/// The benches' server runtime: one poller and one handler thread, created on core 1 (its
/// threads inherit the placement); the caller stays pinned to core 1 until it moves itself.
pub fn server_runtime() -> sockloop::Runtime {
    pin_to(1);
    sockloop::Runtime::builder()
        .pollers(1)
        .handler_threads(1)
        .build()
        .expect("runtime")
}

/// A wsbench figure (`rate=123/s` → 123.0), 0 when absent.
pub fn field(kv: &[(String, String)], key: &str) -> f64 {
    kv.iter()
        .find(|(k, _)| k == key)
        .and_then(|(_, v)| v.trim_end_matches("/s").parse().ok())
        .unwrap_or(0.0)
}

/// Runs wsbench pinned to core 0; returns its figures and its stderr.
pub fn run_wsbench(bin: &Path, args: &[String]) -> (Vec<(String, String)>, String) {
    let out = Command::new("taskset")
        .args(["-c", "0"])
        .arg(bin)
        .args(args)
        .output()
        .expect("run wsbench under taskset");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    (parse_figures(&stdout), stderr)
}

/// wsbench's `key=value` pairs from its last output line.
pub fn parse_figures(stdout: &str) -> Vec<(String, String)> {
    let line = stdout.lines().last().unwrap_or("");
    line.split_whitespace()
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

/// The pairs back as `key=value …`.
pub fn fmt(kv: &[(String, String)]) -> String {
    kv.iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// The wsbench arguments of the echo figures: 100 connections, `depth` messages of 32 B in
/// flight each, 5 s, one client thread.
pub fn echo_args(addr: &str, depth: usize) -> Vec<String> {
    let d = depth.to_string();
    let list = [
        "echo",
        "--addr",
        addr,
        "--conns",
        "100",
        "--depth",
        &d,
        "--size",
        "32",
        "--secs",
        "5",
        "--threads",
        "1",
    ];
    list.iter().map(|s| s.to_string()).collect()
}

/// Resident memory of this process (`VmRSS`).
pub fn rss_bytes() -> u64 {
    let s = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    s.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

/// The WebSocket echo server of the echo figures, with handlers dispatched as `dispatch`.
pub fn ws_echo_server(rt: &sockloop::Runtime, dispatch: sockloop::Dispatch) -> sockloop::Server {
    use sockloop::{on_message, Listen, ServerConfig, WsConn, WsMessage, WsServerConfig};
    rt.serve(Listen::tcp("127.0.0.1:0"))
        .config(
            ServerConfig::new()
                .dispatch(dispatch)
                .max_connections(100_000),
        )
        .websocket(
            WsServerConfig::new(),
            on_message(|ws: &WsConn, m: WsMessage<'_>| {
                let _ = match m {
                    WsMessage::Text(t) => ws.send_text(t),
                    WsMessage::Binary(b) => ws.send_binary(b),
                };
            }),
        )
        .expect("echo server")
}

/// Waits (bounded, 20 s) until the previous run's connections are gone.
pub fn wait_closed(server: &sockloop::Server) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while server.open_connections() > 0 && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}

/// CPU time (user + system) this process (the in-process server) has used so far.
pub fn cpu_time() -> std::time::Duration {
    // SAFETY: getrusage fills the zeroed struct we own.
    let ru = unsafe {
        let mut ru: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_SELF, &mut ru);
        ru
    };
    let tv = |t: libc::timeval| std::time::Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(ru.ru_utime) + tv(ru.ru_stime)
}
