//! Socket options and OS calls that std and mio do not offer. The only module that may use
//! `libc`, `socket2` or `unsafe` (`.ci/layers.py` checks it).
//!
//! # Contract (Linux; the only platform sockloop supports today)
//! | function | provides | errors |
//! |---|---|---|
//! | [`tcp_listener`] | a bound, listening, non-blocking TCP socket with `SO_REUSEADDR` and, when asked, `SO_REUSEPORT` (IPv6: v6-only) | the `bind`/`listen` error, naming the address |
//! | [`udp_socket`] | a bound, non-blocking UDP socket (`SO_REUSEPORT` when asked) | the `bind` error, naming the address |
//! | [`unix_listener`], [`unix_datagram`] | a bound, non-blocking Unix socket at a path and its [`SocketFile`] (removed again when a later step fails) | the `bind`/`listen` error, naming the path |
//! | [`SocketFile`] | removes, when dropped, the socket file this process created, only while the path still names that file (device and inode) | — (a failed removal is logged) |
//! | [`clear_stale_socket`] | removes a socket file nobody listens on; a live one is `AddrInUse`; any other file is left alone and is an error | as said |
//! | [`set_socket_owner`] | `chmod`/`chown` of the socket file (group by name or id) | the OS error; an unknown group is `NotFound` |
//! | [`peer_cred`] | `SO_PEERCRED` of a Unix stream socket | `None` when the call fails |
//! | [`UnixConnect`] | a non-blocking Unix `connect`, so a full backlog is `WouldBlock` | the OS error |
//! | [`signal`] | SIGINT/SIGTERM as a flag and a channel | — |
//! | [`OnceBox`] | a value boxed and set at most once, in one pointer; `get` and `get_or_init` from any thread through `&self` (racing initializers: one value wins, the others are dropped); dropping it frees the value | — |
//!
//! Every `unsafe` block here states why it is sound next to it; every function is safe to
//! call from any thread.

mod once_box;
pub mod signal;

pub(crate) use once_box::OnceBox;

use std::ffi::CString;
use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use socket2::{Domain, Protocol, SockAddr, Socket, Type};

use crate::base::PeerCred;

/// An I/O error that names the operation and the address ("bind 127.0.0.1:7000: …").
pub(crate) fn named(e: io::Error, op: &str, what: impl std::fmt::Display) -> io::Error {
    io::Error::new(e.kind(), format!("{op} {what}: {e}"))
}

/// A non-blocking TCP listener with SO_REUSEADDR, and SO_REUSEPORT when asked for (so each
/// poller, or another process, can bind the same port). Errors name the address.
pub(crate) fn tcp_listener(
    addr: SocketAddr,
    backlog: i32,
    reuse_port: bool,
) -> io::Result<std::net::TcpListener> {
    let s = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    s.set_reuse_address(true)?;
    s.set_reuse_port(reuse_port)?;
    if addr.is_ipv6() {
        s.set_only_v6(true)?;
    }
    s.set_nonblocking(true)?;
    s.bind(&addr.into()).map_err(|e| named(e, "bind", addr))?;
    s.listen(backlog).map_err(|e| named(e, "listen", addr))?;
    Ok(s.into())
}

/// A non-blocking UDP socket with a large receive buffer, and SO_REUSEPORT when asked for
/// (one per poller). Errors name the address.
pub(crate) fn udp_socket(addr: SocketAddr, reuse_port: bool) -> io::Result<std::net::UdpSocket> {
    let s = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    s.set_reuse_address(true)?;
    s.set_reuse_port(reuse_port)?;
    if addr.is_ipv6() {
        s.set_only_v6(true)?;
    }
    let _ = s.set_recv_buffer_size(4 << 20);
    s.set_nonblocking(true)?;
    s.bind(&addr.into()).map_err(|e| named(e, "bind", addr))?;
    Ok(s.into())
}

/// Credentials of the peer of a Unix stream socket.
pub(crate) fn peer_cred(fd: RawFd) -> Option<PeerCred> {
    let mut cred = libc::ucred {
        pid: 0,
        uid: 0,
        gid: 0,
    };
    let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: `cred` and `len` are valid for writes of the sizes given.
    let rc = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            &mut cred as *mut libc::ucred as *mut libc::c_void,
            &mut len,
        )
    };
    (rc == 0).then_some(PeerCred {
        uid: cred.uid,
        gid: cred.gid,
        pid: cred.pid,
    })
}

/// Removes a stale socket file at `path`: only when it is a socket nobody listens on.
/// Errors with `AddrInUse` when a server answers there, and leaves other files alone.
pub(crate) fn clear_stale_socket(path: &Path, datagram: bool) -> io::Result<()> {
    use std::os::unix::fs::FileTypeExt;
    let meta = match std::fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    if !meta.file_type().is_socket() {
        return Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            format!("{} exists and is not a socket", path.display()),
        ));
    }
    let live = if datagram {
        let probe = std::os::unix::net::UnixDatagram::unbound()?;
        probe.connect(path).is_ok()
    } else {
        std::os::unix::net::UnixStream::connect(path).is_ok()
    };
    if live {
        return Err(io::Error::new(
            io::ErrorKind::AddrInUse,
            format!("a server is listening on {}", path.display()),
        ));
    }
    std::fs::remove_file(path)
}

/// Applies the file mode and group of a socket file.
pub(crate) fn set_socket_owner(
    path: &Path,
    mode: Option<u32>,
    group: Option<&str>,
) -> io::Result<()> {
    if let Some(mode) = mode {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))?;
    }
    if let Some(group) = group {
        let gid = group_id(group)?;
        std::os::unix::fs::chown(path, None, Some(gid))?;
    }
    Ok(())
}

/// Looks a group up by name (or takes a numeric id).
fn group_id(name: &str) -> io::Result<u32> {
    if let Ok(n) = name.parse::<u32>() {
        return Ok(n);
    }
    let cname = CString::new(name).map_err(|_| io::ErrorKind::InvalidInput)?;
    let mut grp: libc::group = unsafe { std::mem::zeroed() };
    let mut buf = vec![0 as libc::c_char; 16 << 10];
    let mut out: *mut libc::group = std::ptr::null_mut();
    // SAFETY: every pointer is valid for the sizes given; `out` is checked before use.
    let rc = unsafe {
        libc::getgrnam_r(
            cname.as_ptr(),
            &mut grp,
            buf.as_mut_ptr(),
            buf.len(),
            &mut out,
        )
    };
    if rc != 0 || out.is_null() {
        return Err(io::Error::new(
            io::ErrorKind::NotFound,
            format!("no such group: {name}"),
        ));
    }
    Ok(grp.gr_gid)
}

/// The raw fd of anything that has one.
pub(crate) fn fd_of<T: AsRawFd>(t: &T) -> RawFd {
    t.as_raw_fd()
}

/// A Unix stream listener with the given backlog, and the socket file it created (removed
/// again if listening fails). Errors name the operation and the path.
pub(crate) fn unix_listener(
    path: &Path,
    backlog: i32,
) -> io::Result<(std::os::unix::net::UnixListener, SocketFile)> {
    let s = Socket::new(Domain::UNIX, Type::STREAM, None)?;
    s.set_nonblocking(true)?;
    let file = bind_unix(&s, path)?;
    s.listen(backlog)
        .map_err(|e| named(e, "listen", path.display()))?;
    let l = std::os::unix::net::UnixListener::from(std::os::fd::OwnedFd::from(s));
    Ok((l, file))
}

/// A bound, non-blocking Unix datagram socket with a large receive buffer, and the socket
/// file it created. Errors name the path.
pub(crate) fn unix_datagram(
    path: &Path,
) -> io::Result<(std::os::unix::net::UnixDatagram, SocketFile)> {
    let s = Socket::new(Domain::UNIX, Type::DGRAM, None)?;
    let _ = s.set_recv_buffer_size(4 << 20);
    s.set_nonblocking(true)?;
    let file = bind_unix(&s, path)?;
    let d = std::os::unix::net::UnixDatagram::from(std::os::fd::OwnedFd::from(s));
    Ok((d, file))
}

/// Binds `s` to `path`; the file the bind created.
fn bind_unix(s: &Socket, path: &Path) -> io::Result<SocketFile> {
    let addr = SockAddr::unix(path).map_err(|e| named(e, "bind", path.display()))?;
    s.bind(&addr)
        .map_err(|e| named(e, "bind", path.display()))?;
    SocketFile::created(path)
}

/// A socket file this process created by binding. Dropping it removes the file, but only
/// while the path still names that very file (same device and inode): a file another
/// process put at the path since is never touched.
#[derive(Debug)]
pub(crate) struct SocketFile {
    path: std::path::PathBuf,
    dev: u64,
    ino: u64,
    kept: bool,
}

impl SocketFile {
    /// The file a bind just created at `path`.
    fn created(path: &Path) -> io::Result<SocketFile> {
        use std::os::unix::fs::MetadataExt;
        let m = std::fs::symlink_metadata(path).map_err(|e| named(e, "stat", path.display()))?;
        Ok(SocketFile {
            path: path.to_path_buf(),
            dev: m.dev(),
            ino: m.ino(),
            kept: false,
        })
    }

    /// Whether the path still names the file this process created.
    pub(crate) fn is_ours(&self) -> bool {
        use std::os::unix::fs::MetadataExt;
        std::fs::symlink_metadata(&self.path)
            .is_ok_and(|m| m.dev() == self.dev && m.ino() == self.ino)
    }

    /// Leaves the file in place for good (the owner asked to keep it).
    pub(crate) fn keep(mut self) {
        self.kept = true;
    }
}

impl Drop for SocketFile {
    fn drop(&mut self) {
        if !self.kept && self.is_ours() {
            if let Err(e) = std::fs::remove_file(&self.path) {
                log::warn!("remove {}: {e}", self.path.display());
            }
        }
    }
}

/// A Unix stream socket connecting in non-blocking mode, so that a listener with a full
/// backlog answers `WouldBlock` at once instead of making `connect` wait.
pub(crate) struct UnixConnect {
    sock: Socket,
    addr: SockAddr,
}

impl UnixConnect {
    pub(crate) fn new(path: &Path) -> io::Result<Self> {
        let addr = SockAddr::unix(path)?;
        let sock = Socket::new(Domain::UNIX, Type::STREAM, None)?;
        sock.set_nonblocking(true)?;
        Ok(UnixConnect { sock, addr })
    }

    /// One connection attempt (`WouldBlock`: the backlog is full, try again).
    pub(crate) fn attempt(&self) -> io::Result<()> {
        self.sock.connect(&self.addr)
    }

    /// The connected socket, blocking again.
    pub(crate) fn finish(self) -> io::Result<std::os::unix::net::UnixStream> {
        self.sock.set_nonblocking(false)?;
        Ok(self.sock.into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_socket_file_goes_with_its_guard_unless_kept() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.sock");
        let (l, file) = unix_listener(&path, 8).unwrap();
        assert!(file.is_ours());
        drop(file);
        assert!(!path.exists());
        drop(l);
        let (_d, file) = unix_datagram(&path).unwrap();
        file.keep();
        assert!(path.exists(), "kept");
    }

    #[test]
    fn a_file_put_at_the_path_by_someone_else_is_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.sock");
        let (_l, file) = unix_listener(&path, 8).unwrap();
        std::fs::remove_file(&path).unwrap();
        let _other = std::os::unix::net::UnixListener::bind(&path).unwrap();
        assert!(!file.is_ours());
        drop(file);
        assert!(path.exists(), "another owner's socket stays");
    }

    #[test]
    fn binding_a_path_in_use_names_it_and_creates_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.sock");
        let (_l, _file) = unix_listener(&path, 8).unwrap();
        let err = unix_listener(&path, 8).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::AddrInUse);
        assert!(err
            .to_string()
            .contains(&format!("bind {}", path.display())));
        assert!(path.exists(), "the first listener's file is untouched");
    }
}
