//! The handler model: traits with defaulted methods, and closure adapters.

use crate::base::{Addr, CloseReason};
use crate::server::handle::Conn;
use crate::Error;

/// Handles the events of one stream connection (TCP, TLS or Unix stream).
///
/// One instance per connection, created by a [`StreamFactory`]. Its methods run in order, on
/// the poller ([`Dispatch::Inline`](crate::Dispatch::Inline)) or on one handler thread
/// ([`Dispatch::Threads`](crate::Dispatch::Threads)). A panic closes only this connection
/// ([`CloseReason::HandlerPanic`]) and is logged and reported to the observer.
pub trait StreamHandler: Send + 'static {
    /// The connection is open (after the TLS handshake, for TLS).
    fn on_open(&mut self, conn: &Conn) {
        let _ = conn;
    }
    /// Bytes arrived. Stream boundaries are not message boundaries.
    fn on_data(&mut self, conn: &Conn, data: &[u8]) {
        let _ = (conn, data);
    }
    /// The outbound queue emptied after the socket had pushed back.
    fn on_drained(&mut self, conn: &Conn) {
        let _ = conn;
    }
    /// The connection closed; no more events follow.
    fn on_close(&mut self, conn: &Conn, reason: &CloseReason) {
        let _ = (conn, reason);
    }
    /// An error on this connection (the connection is closed after it, if it was fatal).
    fn on_error(&mut self, conn: &Conn, error: &Error) {
        let _ = (conn, error);
    }
}

/// Creates a [`StreamHandler`] for each new connection. Any `Fn(&Conn) -> H` is one.
pub trait StreamFactory: Send + Sync + 'static {
    /// A handler for this connection.
    fn create(&self, conn: &Conn) -> Box<dyn StreamHandler>;
}

impl<F, H> StreamFactory for F
where
    F: Fn(&Conn) -> H + Send + Sync + 'static,
    H: StreamHandler,
{
    fn create(&self, conn: &Conn) -> Box<dyn StreamHandler> {
        Box::new(self(conn))
    }
}

/// A stream handler that ignores every event (useful for servers that only send).
#[derive(Debug, Clone, Copy, Default)]
pub struct OnDataNoop;

impl StreamHandler for OnDataNoop {}

/// A stream handler made of one closure called for every data event.
#[derive(Clone)]
pub struct OnData<F>(F);

impl<F> StreamHandler for OnData<F>
where
    F: FnMut(&Conn, &[u8]) + Send + 'static,
{
    fn on_data(&mut self, conn: &Conn, data: &[u8]) {
        (self.0)(conn, data)
    }
}

/// A factory whose handlers call `f` for every data event (each connection gets a clone).
/// The factory is `Clone`, so one closure can serve several listeners.
///
/// # Examples
/// ```no_run
/// use sockloop::{Listen, Runtime};
/// let echo = sockloop::handler::on_data(|conn: &sockloop::Conn, data: &[u8]| {
///     let _ = conn.send(data);
/// });
/// let rt = Runtime::new()?;
/// let v4 = rt.serve(Listen::tcp("127.0.0.1:0")).stream(echo.clone())?;
/// let v6 = rt.serve(Listen::tcp("[::1]:0")).stream(echo)?;
/// # let _ = (v4, v6);
/// # Ok::<(), sockloop::Error>(())
/// ```
pub fn on_data<F>(f: F) -> impl StreamFactory + Clone
where
    F: FnMut(&Conn, &[u8]) + Clone + Send + Sync + 'static,
{
    move |_: &Conn| OnData(f.clone())
}

/// A cloneable handle for sending datagrams from one datagram server socket.
#[derive(Clone)]
pub struct DatagramSender {
    pub(crate) inner: std::sync::Arc<crate::server::datagram::DatagramShared>,
}

impl std::fmt::Debug for DatagramSender {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DatagramSender")
            .field("local", &self.inner.local)
            .finish()
    }
}

/// Handles datagrams arriving on one server socket (UDP or Unix datagram).
///
/// One instance per server socket (one per poller for UDP), created by a
/// [`DatagramFactory`]. A panic is caught, logged and reported; the socket keeps serving.
pub trait DatagramHandler: Send + 'static {
    /// A datagram arrived from `peer`; reply with `sender.send_to(bytes, peer)`.
    fn on_datagram(&mut self, sender: &DatagramSender, peer: &Addr, data: &[u8]);
    /// An error on the socket (for example a datagram larger than the configured maximum,
    /// which was dropped).
    fn on_error(&mut self, error: &Error) {
        let _ = error;
    }
}

/// Creates a [`DatagramHandler`] per server socket. Any `Fn() -> H` is one.
pub trait DatagramFactory: Send + Sync + 'static {
    /// A handler for one socket.
    fn create(&self) -> Box<dyn DatagramHandler>;
}

impl<F, H> DatagramFactory for F
where
    F: Fn() -> H + Send + Sync + 'static,
    H: DatagramHandler,
{
    fn create(&self) -> Box<dyn DatagramHandler> {
        Box::new(self())
    }
}

/// A datagram handler made of one closure.
#[derive(Clone)]
pub struct OnDatagram<F>(F);

impl<F> DatagramHandler for OnDatagram<F>
where
    F: FnMut(&DatagramSender, &Addr, &[u8]) + Send + 'static,
{
    fn on_datagram(&mut self, sender: &DatagramSender, peer: &Addr, data: &[u8]) {
        (self.0)(sender, peer, data)
    }
}

/// A datagram factory whose handlers call `f` for every datagram. The factory is `Clone`,
/// so one closure can serve several sockets.
///
/// # Examples
/// ```
/// use sockloop::handler::{on_datagram, DatagramSender};
/// let echo = on_datagram(|tx: &DatagramSender, peer: &sockloop::Addr, data: &[u8]| {
///     let _ = tx.send_to(data, peer);
/// });
/// # let _ = echo;
/// ```
pub fn on_datagram<F>(f: F) -> impl DatagramFactory + Clone
where
    F: FnMut(&DatagramSender, &Addr, &[u8]) + Clone + Send + Sync + 'static,
{
    move || OnDatagram(f.clone())
}
