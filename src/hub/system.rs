//! Optional built-in room events (`room:join`, `room:leave`, `room:typing`, `room:invite`,
//! `room:kick`), added by [`HubBuilder::room_events`](super::HubBuilder::room_events).

use std::time::Duration;

use serde::Deserialize;
use serde_json::json;

use super::builder::HubBuilder;
use super::ctx::Ctx;
use super::error::{ErrorCode, HubError};
use super::state::Role;

#[derive(Deserialize)]
struct RoomArg {
    room: String,
    #[serde(default = "yes")]
    typing: bool,
}

fn yes() -> bool {
    true
}

#[derive(Deserialize)]
struct UserArg {
    room: String,
    user: String,
    /// For `room:kick`: also refuse the user's joins for this long.
    #[serde(default)]
    ban_secs: Option<u64>,
}

fn join(ctx: &mut Ctx) -> Result<(), HubError> {
    let a: RoomArg = ctx.data()?;
    ctx.join(&a.room)?;
    let users = ctx.hub().room_users(&a.room);
    ctx.ack(&json!({"room": a.room, "users": users}))
}

fn leave(ctx: &mut Ctx) -> Result<(), HubError> {
    let a: RoomArg = ctx.data()?;
    ctx.leave(&a.room)?;
    ctx.ack(&json!({"room": a.room}))
}

fn typing(ctx: &mut Ctx) -> Result<(), HubError> {
    let a: RoomArg = ctx.data()?;
    match a.typing {
        true => ctx.hub().typing(ctx.conn_id(), &a.room)?,
        false => ctx.hub().stop_typing(ctx.conn_id(), &a.room)?,
    }
    ctx.ack(&json!({"room": a.room}))
}

/// Checks that the caller has at least a moderator role in `room`.
fn moderator(ctx: &Ctx, room: &str) -> Result<(), HubError> {
    let user = ctx
        .user()
        .ok_or_else(|| HubError::new(ErrorCode::Unauthorized, "this event needs an identity"))?;
    ctx.hub().require_role(room, user, Role::Moderator)
}

fn invite(ctx: &mut Ctx) -> Result<(), HubError> {
    let a: UserArg = ctx.data()?;
    moderator(ctx, &a.room)?;
    ctx.hub().invite(&a.room, &a.user)?;
    ctx.ack(&json!({"room": a.room, "user": a.user}))
}

fn kick(ctx: &mut Ctx) -> Result<(), HubError> {
    let a: UserArg = ctx.data()?;
    moderator(ctx, &a.room)?;
    let n = match a.ban_secs {
        Some(s) => ctx.hub().ban(&a.room, &a.user, Duration::from_secs(s))?,
        None => ctx.hub().kick(&a.room, &a.user)?,
    };
    ctx.ack(&json!({"room": a.room, "user": a.user, "connections": n}))
}

impl HubBuilder {
    /// Adds the built-in room events, all answering with an ack when asked (see
    /// `docs/PROTOCOL.md`): `room:join` and `room:leave` (`{"room"}`), `room:typing`
    /// (`{"room", "typing": bool}`), and for owners and moderators `room:invite`
    /// (`{"room", "user"}`) and `room:kick` (`{"room", "user", "ban_secs"?}`: with
    /// `ban_secs`, a [ban](super::Hub::ban)). Whoever creates a room by joining it owns it.
    pub fn room_events(self) -> Self {
        self.on("room:join", join)
            .on("room:leave", leave)
            .on("room:typing", typing)
            .on("room:invite", invite)
            .on("room:kick", kick)
    }
}
