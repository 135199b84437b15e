//! Reads: answering a read-only command from the applied state — a `local` read at once,
//! a linearizable one when the node releases it (ReadIndex) or applies its slot — and
//! cutting list and history replies to the reply budget.

use proto::client::{ChannelInfo, Op, Reply, Target};
use proto::limits::MAX_LIST_ITEMS;
use proto::{Error, ErrorCode};

use crate::state::State;
use crate::users::authenticate;
use crate::{ITEM_OVERHEAD_BYTES, MAX_REPLY_BYTES, Store, limit_error, no_channel, quote};

impl Store {
    /// Answers a read-only command from the applied state, at once, without going through
    /// the log (`consistency = local`: may be stale; so may the session, which a login
    /// not yet applied here does not open). A command that writes is refused with
    /// [`ErrorCode::BadRequest`].
    pub fn read_local(&self, op: &Op, session: Option<&str>) -> Result<Reply, Error> {
        self.read_checked(op, session)
    }

    pub(crate) fn read_checked(&self, op: &Op, session: Option<&str>) -> Result<Reply, Error> {
        op.validate().map_err(limit_error)?;
        self.read(op, session)
    }

    /// A read-only command on a valid op.
    pub(crate) fn read(&self, op: &Op, session: Option<&str>) -> Result<Reply, Error> {
        let state = &self.state;
        match op {
            Op::Get { key } => match state.keys.get(key) {
                Some(value) => Ok(Reply::Value(value.clone())),
                None => Err(Error::new(
                    ErrorCode::NotFound,
                    format!("no key {}", quote(key)),
                )),
            },
            Op::ListUsers => {
                let mut budget = ReplyBudget::new();
                let users = state
                    .users
                    .0
                    .keys()
                    .take_while(|user| budget.take(user.len()))
                    .cloned()
                    .collect();
                Ok(Reply::Users(users))
            }
            Op::ListChannels => Ok(Reply::Channels(list_channels(state))),
            Op::History { target, since } => {
                let messages = match target {
                    Target::Channel(name) => {
                        &state
                            .channels
                            .get(name)
                            .ok_or_else(|| no_channel(name))?
                            .messages
                    }
                    Target::User(user) => {
                        authenticate(&state.chat_sessions, session, user, op)?;
                        match state.inboxes.get(user) {
                            Some(inbox) => &inbox.messages,
                            None => return Ok(Reply::Messages(Vec::new())),
                        }
                    }
                };
                // A claimed name's inbox starts after its claim (see `User::claimed_at`).
                let claimed_at = match target {
                    Target::User(user) => state.users.0.get(user).map_or(0, |u| u.claimed_at),
                    Target::Channel(_) => 0,
                };
                // Ids increase strictly along the deque: find the first one above `since`,
                // and (slots increase with ids) the first one after the claim.
                let start = messages.partition_point(|m| m.id <= *since || m.slot <= claimed_at);
                let mut budget = ReplyBudget::new();
                let page = messages
                    .range(start..)
                    .take_while(|m| budget.take(m.from.len() + m.text.len() + target_len(&m.to)))
                    .cloned()
                    .collect();
                Ok(Reply::Messages(page))
            }
            Op::Noop => Ok(Reply::Done),
            Op::Put { .. }
            | Op::Delete { .. }
            | Op::Cas { .. }
            | Op::Login { .. }
            | Op::Register { .. }
            | Op::OpenSession { .. }
            | Op::CreateChannel { .. }
            | Op::Subscribe { .. }
            | Op::Publish { .. }
            | Op::PrivateMessage { .. } => Err(Error::new(
                ErrorCode::BadRequest,
                format!("{} changes the state and cannot be read locally", op.name()),
            )),
        }
    }
}

/// Counts items and bytes of a list reply against [`MAX_LIST_ITEMS`] and
/// [`MAX_REPLY_BYTES`].
struct ReplyBudget {
    items: usize,
    bytes: usize,
}

impl ReplyBudget {
    fn new() -> Self {
        ReplyBudget { items: 0, bytes: 0 }
    }

    /// Whether one more item of `string_bytes` fits; if so, it is counted.
    fn take(&mut self, string_bytes: usize) -> bool {
        let cost = string_bytes + ITEM_OVERHEAD_BYTES;
        if self.items >= MAX_LIST_ITEMS || self.bytes + cost > MAX_REPLY_BYTES {
            return false;
        }
        self.items += 1;
        self.bytes += cost;
        true
    }
}

/// Channels in name order with their subscribers, cut to the reply budget: a channel
/// whose subscriber list does not fit entirely is listed with the subscribers that fit,
/// and is the last one listed.
fn list_channels(state: &State) -> Vec<ChannelInfo> {
    let mut budget = ReplyBudget::new();
    let mut out = Vec::new();
    for (name, channel) in &state.channels {
        if !budget.take(name.len()) {
            break;
        }
        let mut subscribers_budget = ReplyBudget {
            items: 0,
            bytes: budget.bytes,
        };
        let subscribers: Vec<String> = channel
            .subscribers
            .iter()
            .take_while(|user| subscribers_budget.take(user.len()))
            .cloned()
            .collect();
        budget.bytes = subscribers_budget.bytes;
        let complete = subscribers.len() == channel.subscribers.len();
        out.push(ChannelInfo {
            name: name.clone(),
            subscribers,
        });
        if !complete {
            break;
        }
    }
    out
}

fn target_len(target: &Target) -> usize {
    match target {
        Target::Channel(name) | Target::User(name) => name.len(),
    }
}
