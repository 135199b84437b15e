//! Chat users and their sessions: registration with a password hash, logins that open a
//! session under the SHA-256 of a client's credential, and the check that a chat
//! command speaks for the user its session belongs to (the crate page, "Chat users and
//! their sessions").

use std::collections::BTreeMap;

use proto::client::Op;
use proto::{Error, ErrorCode, Reply};

use crate::config::MAX_CHAT_SESSIONS_PER_USER;
use crate::state::{ChatSession, User};
use crate::{Slot, Store, quote};

/// What the state holds about a user's password (for the node that checks a login).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Password<'a> {
    /// No such user: a login registers the name.
    Unknown,
    /// A user from before passwords: a login sets one.
    Unset,
    /// The PHC string of the password's hash, to verify a login against.
    Hash(&'a str),
}

impl Store {
    /// What the applied state holds about `user`'s password.
    pub fn password(&self, user: &str) -> Password<'_> {
        match self.state.users.0.get(user) {
            None => Password::Unknown,
            Some(User {
                password_hash: None,
                ..
            }) => Password::Unset,
            Some(User {
                password_hash: Some(hash),
                ..
            }) => Password::Hash(hash),
        }
    }

    /// `Register`: a new name, or a name from before passwords, gets this password hash
    /// and the command's session; a name that has a password is refused (another login
    /// registered it meanwhile). Checked before anything changes: a refusal leaves no
    /// trace.
    pub(crate) fn register(
        &mut self,
        slot: Slot,
        user: &str,
        password_hash: &str,
        session: Option<&str>,
        op: &Op,
    ) -> Result<Reply, Error> {
        let key = session.ok_or_else(|| no_credential(op))?;
        self.check_credential_free(key, user)?;
        match self.state.users.0.get_mut(user) {
            Some(User {
                password_hash: Some(_),
                ..
            }) => {
                return Err(Error::new(
                    ErrorCode::Unauthenticated,
                    format!(
                        "user {} got a password from another login meanwhile: log in again",
                        quote(user)
                    ),
                ));
            }
            Some(record) => {
                record.password_hash = Some(password_hash.to_owned());
                record.claimed_at = slot;
            }
            None => {
                self.room_for_a_user()?;
                let record = User {
                    password_hash: Some(password_hash.to_owned()),
                    claimed_at: 0,
                };
                self.state.users.0.insert(user.to_owned(), record);
            }
        }
        self.open_chat_session(key, user, slot)?;
        Ok(Reply::Done)
    }

    /// `OpenSession`: the node checked the password against this user's hash; open the
    /// command's session for them.
    pub(crate) fn open_session(
        &mut self,
        slot: Slot,
        user: &str,
        session: Option<&str>,
        op: &Op,
    ) -> Result<Reply, Error> {
        let key = session.ok_or_else(|| no_credential(op))?;
        if !matches!(self.password(user), Password::Hash(_)) {
            return Err(Error::new(
                ErrorCode::Unauthenticated,
                format!("user {} has no password to log in with", quote(user)),
            ));
        }
        self.open_chat_session(key, user, slot)?;
        Ok(Reply::Done)
    }

    /// Whether one more user may register ([`StoreConfig::max_users`]).
    pub(crate) fn room_for_a_user(&self) -> Result<(), Error> {
        if self.state.users.0.len() >= self.config.max_users {
            return Err(Error::new(
                ErrorCode::TooLarge,
                format!(
                    "the cluster holds its limit of {} users (--max-users)",
                    self.config.max_users
                ),
            ));
        }
        Ok(())
    }

    /// Refuses a credential that already opens another user's session.
    fn check_credential_free(&self, key: &str, user: &str) -> Result<(), Error> {
        match self.state.chat_sessions.get(key) {
            Some(open) if open.user != user => Err(Error::new(
                ErrorCode::Unauthenticated,
                "this credential already opens another user's session: draw a new one",
            )),
            _ => Ok(()),
        }
    }

    /// Opens the chat session `key` for `user`, evicting the session opened in the
    /// oldest slot when the table is full. A key already open for another user is
    /// refused (only someone who knows that user's credential could send it).
    fn open_chat_session(&mut self, key: &str, user: &str, slot: Slot) -> Result<(), Error> {
        self.check_credential_free(key, user)?;
        let sessions = &mut self.state.chat_sessions;
        let session = ChatSession {
            user: user.to_owned(),
            slot,
        };
        match sessions.insert(key.to_owned(), session) {
            Some(old) => {
                self.chat_session_order.remove(&(old.slot, key.to_owned()));
            }
            None => {
                // One user cannot push everyone else's sessions out by logging in again
                // and again: past MAX_CHAT_SESSIONS_PER_USER, its own oldest one goes.
                let own: Vec<(Slot, String)> = self
                    .chat_session_order
                    .iter()
                    .filter(|(_, k)| sessions.get(k).is_some_and(|s| s.user == user))
                    .take(MAX_CHAT_SESSIONS_PER_USER)
                    .cloned()
                    .collect();
                if own.len() >= MAX_CHAT_SESSIONS_PER_USER
                    && let Some(oldest) = own.into_iter().next()
                {
                    self.chat_session_order.remove(&oldest);
                    sessions.remove(&oldest.1);
                } else if sessions.len() > self.config.max_chat_sessions
                    && let Some((_, victim)) = self.chat_session_order.pop_first()
                {
                    sessions.remove(&victim);
                }
            }
        }
        self.chat_session_order.insert((slot, key.to_owned()));
        assert!(
            sessions.len() == self.chat_session_order.len()
                && sessions.len() <= self.config.max_chat_sessions,
            "chat sessions and their eviction order disagree",
        );
        Ok(())
    }
}

/// Checks that the command's chat session speaks for `user`.
pub(crate) fn authenticate(
    sessions: &BTreeMap<String, ChatSession>,
    session: Option<&str>,
    user: &str,
    op: &Op,
) -> Result<(), Error> {
    let key = session.ok_or_else(|| no_credential(op))?;
    match sessions.get(key) {
        Some(open) if open.user == user => Ok(()),
        Some(open) => Err(Error::new(
            ErrorCode::Unauthenticated,
            format!(
                "{} as {} refused: this credential is {}'s",
                op.name(),
                quote(user),
                quote(&open.user)
            ),
        )),
        None => Err(Error::new(
            ErrorCode::Unauthenticated,
            format!(
                "{} as {} refused: the credential opens no session (never logged in, or \
                 evicted by newer logins): log in again",
                op.name(),
                quote(user)
            ),
        )),
    }
}

fn no_credential(op: &Op) -> Error {
    Error::new(
        ErrorCode::Unauthenticated,
        format!(
            "{} needs a login: the request carries no credential",
            op.name()
        ),
    )
}
