//! What a handler sees: the connection, its identity, the envelope, typed data, reply
//! helpers and the hub.

use serde::de::DeserializeOwned;
use serde::Serialize;

use super::delivery::Peer;
use super::envelope::{encode, Envelope};
use super::error::HubError;
use super::Hub;
use crate::{ConnId, Identity, SendStatus, WsConn};

/// The context of one inbound envelope, handed to middleware and the handler.
pub struct Ctx {
    hub: Hub,
    from: Peer,
    env: Envelope,
}

impl std::fmt::Debug for Ctx {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ctx")
            .field("conn", &self.from.id)
            .field("event", &self.env.event)
            .finish()
    }
}

impl Ctx {
    pub(crate) fn new(hub: Hub, from: Peer, env: Envelope) -> Self {
        Ctx { hub, from, env }
    }

    /// The hub: rooms, delivery, presence, operations.
    pub fn hub(&self) -> &Hub {
        &self.hub
    }

    /// The connection the envelope came from. For a session (see
    /// [`HubBuilder::sessions`](super::HubBuilder::sessions)) this is the connection
    /// carrying it now, whose [`id`](WsConn::id) may differ from
    /// [`conn_id`](Self::conn_id) after a resume; send through the hub, not through it.
    pub fn conn(&self) -> &WsConn {
        &self.from.ws
    }

    /// The connection's hub id (for a session: the id it started with, the same across
    /// reconnects).
    pub fn conn_id(&self) -> ConnId {
        self.from.id
    }

    /// The identity the authenticator gave the connection.
    pub fn identity(&self) -> Option<&Identity> {
        self.from.ws.identity()
    }

    /// The user id, when the connection has an identity.
    pub fn user(&self) -> Option<&str> {
        self.identity().map(|i| i.user.as_str())
    }

    /// The envelope.
    pub fn envelope(&self) -> &Envelope {
        &self.env
    }

    /// The event name.
    pub fn event(&self) -> &str {
        &self.env.event
    }

    /// The envelope's id, when the peer asked for an acknowledgement.
    pub fn id(&self) -> Option<u64> {
        self.env.id
    }

    /// The envelope's data as a `T`.
    ///
    /// # Errors
    /// `bad_data` when the data does not have the shape of `T`.
    pub fn data<T: DeserializeOwned>(&self) -> Result<T, HubError> {
        T::deserialize(&self.env.data).map_err(|e| HubError::bad_data(e.to_string()))
    }

    /// A metadata value of this connection.
    pub fn meta(&self, key: &str) -> Option<serde_json::Value> {
        self.hub.meta(self.conn_id(), key)
    }

    /// Sets a metadata value of this connection.
    pub fn set_meta(&self, key: impl Into<String>, value: impl Into<serde_json::Value>) {
        self.hub.set_meta(self.conn_id(), key, value);
    }

    /// Acknowledges the envelope with `data` (`{"event":"ack","ref":id,"data":…}`); does
    /// nothing when the envelope had no id.
    ///
    /// # Errors
    /// `internal` when `data` cannot be serialized.
    pub fn ack<T: Serialize + ?Sized>(&self, data: &T) -> Result<(), HubError> {
        match self.env.id {
            Some(id) => self.send("ack", data, Some(id)).map(drop),
            None => Ok(()),
        }
    }

    /// Answers on the same event name, with `ref` set when the envelope had an id.
    ///
    /// # Errors
    /// `internal` when `data` cannot be serialized.
    pub fn reply<T: Serialize + ?Sized>(&self, data: &T) -> Result<(), HubError> {
        self.send(&self.env.event, data, self.env.id).map(drop)
    }

    /// Sends an event to this connection only.
    ///
    /// # Errors
    /// `internal` when `data` cannot be serialized.
    pub fn emit<T: Serialize + ?Sized>(
        &self,
        event: &str,
        data: &T,
    ) -> Result<SendStatus, HubError> {
        self.send(event, data, None)
    }

    /// Joins this connection to `room` (see [`Hub::join`]).
    ///
    /// # Errors
    /// As [`Hub::join`].
    pub fn join(&self, room: &str) -> Result<(), HubError> {
        self.hub.join(self.conn_id(), room)
    }

    /// Removes this connection from `room` (see [`Hub::leave`]).
    ///
    /// # Errors
    /// As [`Hub::leave`].
    pub fn leave(&self, room: &str) -> Result<(), HubError> {
        self.hub.leave(self.conn_id(), room)
    }

    fn send<T: Serialize + ?Sized>(
        &self,
        event: &str,
        data: &T,
        reference: Option<u64>,
    ) -> Result<SendStatus, HubError> {
        let text = encode(event, data, None, reference)?;
        Ok(self.hub.send_one(&self.from, &text))
    }
}
