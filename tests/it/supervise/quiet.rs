//! Quiet, bounded processes: `NodeConfig::quiet_panics` keeps a quiet node's process
//! panics off stderr (they reach the node's hook) while panics elsewhere are printed as
//! before — checked end to end in a child process of this test binary, whose stderr the
//! test reads; and an idle process's mailbox reserves nothing for its bound.

use std::process::Command;

use super::*;

const CHILD: &str = "SOCKLOOP_QUIET_CHILD";

/// A process that panics with `text` on its first message; waits for its exit reason.
fn panic_in(node: &Node, text: &'static str) -> ExitReason {
    let (tx, rx) = unbounded();
    node.set_hook(move |e: &SystemEvent| {
        if let SystemEvent::Exited { reason, .. } = e {
            let _ = tx.send(reason.clone());
        }
    });
    let p = node
        .spawn(from_fn(move |_: &mut Context<()>, ()| -> Handled {
            panic!("{text}")
        }))
        .unwrap();
    p.send(()).unwrap();
    rx.recv_timeout(WAIT).expect("the exit reaches the hook")
}

#[test]
fn quiet_child() {
    if std::env::var_os(CHILD).is_none() {
        return; // run by the test below, in its own process
    }
    let quiet = Node::with_config(NodeConfig::default().quiet_panics(true));
    let reason = panic_in(&quiet, "quiet-process-panic");
    eprintln!("hook saw: {reason}");
    let loud = Node::new();
    let _ = panic_in(&loud, "loud-process-panic");
    quiet.shutdown(WAIT);
    loud.shutdown(WAIT);
}

#[test]
fn quiet_panics_stay_off_stderr_and_reach_the_hook() {
    if std::env::var_os(CHILD).is_some() {
        return;
    }
    let out = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "supervise::quiet::quiet_child",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD, "1")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "child failed: {stderr}");
    assert!(
        stderr.contains("hook saw:") && stderr.contains("quiet-process-panic"),
        "the quiet panic reached the hook: {stderr}"
    );
    // Rust's default message: "thread '…' panicked at file:line:col:" then the payload.
    let lines: Vec<&str> = stderr.lines().collect();
    let printed = |text: &str| {
        lines
            .windows(2)
            .any(|w| w[0].contains("panicked at") && (w[0].contains(text) || w[1].contains(text)))
    };
    assert!(
        !printed("quiet-process-panic"),
        "a quiet panic was printed: {stderr}"
    );
    assert!(
        printed("loud-process-panic"),
        "other panics are still printed: {stderr}"
    );
}

#[test]
fn idle_mailboxes_reserve_nothing_for_their_bound() {
    let node = Node::new();
    let (tx, rx) = unbounded();
    let before = crate::alloc::allocated_bytes();
    let procs: Vec<ProcessRef<[u8; 256]>> = (0..50)
        .map(|_| {
            let tx = tx.clone();
            node.spawn(from_fn(
                move |_: &mut Context<[u8; 256]>, m: [u8; 256]| -> Handled {
                    let _ = tx.send(m[0]);
                    Ok(Control::Continue)
                },
            ))
            .unwrap()
        })
        .collect();
    let spent = crate::alloc::allocated_bytes() - before;
    // With the default bound of 4,096 messages, a mailbox reserved up front would take
    // 1 MiB per process; growing on demand, 50 idle processes take a few KiB each.
    assert!(
        spent < 50 * (32 << 10),
        "50 idle processes allocated {spent} bytes on the spawning thread"
    );
    for (i, p) in procs.iter().enumerate() {
        p.send([i as u8; 256]).unwrap();
    }
    let mut got: Vec<u8> = (0..50).map(|_| rx.recv_timeout(WAIT).unwrap()).collect();
    got.sort_unstable();
    assert_eq!(
        got,
        (0..50).collect::<Vec<u8>>(),
        "each still takes messages"
    );
    node.shutdown(WAIT);
}
