//! Who a chat command speaks as: the user an op acts for ([`acting_user`]), and a login
//! for it from `--credential` or `--password` (asked on the terminal when absent).

use proto::Op;
use proto::client::Target;

use crate::args::{ChatAuth, ask_password};
use crate::session::{CallError, CallOptions, Session};

/// The user a chat op acts as, whose login it needs.
pub fn acting_user(op: &Op) -> Option<&str> {
    match op {
        Op::Subscribe { user, .. }
        | Op::Publish { user, .. }
        | Op::PrivateMessage { from: user, .. }
        | Op::History {
            target: Target::User(user),
            ..
        } => Some(user),
        _ => None,
    }
}

/// Why a chat command could not log in before it ran.
#[derive(Debug)]
pub enum LoginError {
    /// No password and no credential, and no terminal to ask one on.
    NoPassword(String),
    /// The login call failed (a wrong password included).
    Call(CallError),
}

/// Gives `session` a login as `user`: the `--credential` given, or a login with the
/// `--password` given (or asked on the terminal). `fresh`: always log in with a
/// password (the `login` command), never reuse a credential.
pub async fn log_in(
    auth: &ChatAuth,
    options: &CallOptions,
    session: &mut Session,
    user: &str,
    fresh: bool,
) -> Result<(), LoginError> {
    if !fresh && let Some(credential) = &auth.credential {
        session.use_credential(Some(credential.clone()));
        return Ok(());
    }
    let password = match auth.password.clone().or_else(|| ask_password(user)) {
        Some(password) => password,
        None => {
            return Err(LoginError::NoPassword(format!(
                "acting as {user} needs a login: give --password (or CHAT_PASSWORD), or \
                 the --credential (CHAT_CREDENTIAL) a `client login {user}` printed"
            )));
        }
    };
    session
        .login(user, password.as_str(), options)
        .await
        .map(|_| ())
        .map_err(LoginError::Call)
}
