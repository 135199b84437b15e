//! The flags the client's command line, its interactive menu and the `bots` share: where
//! the cluster is ([`Endpoints`]) and how long a request may take ([`Timeouts`]). Their
//! own module so that [`crate::cli`] and [`crate::menu`] both use them without importing
//! each other.

use std::time::Duration;

use clap::Args;

use crate::session::CallOptions;

/// Default broker frontends: the pair `./on.sh` starts (with `--fabric 1` only the
/// first answers, and the client uses it alone).
pub const DEFAULT_BROKER: &str = "tcp://127.0.0.1:5555,tcp://127.0.0.1:5565";
/// Default proxy backends (XPUB), where subscribers connect: the pair.
pub const DEFAULT_PROXY_BACKEND: &str = "tcp://127.0.0.1:5558,tcp://127.0.0.1:5568";

/// Where the cluster is.
#[derive(Debug, Clone, Args)]
pub struct Endpoints {
    /// Broker frontends (ROUTER), separated by commas: the client pings each, sends to
    /// those that answer, and fails over at once when one goes silent.
    #[arg(long, env = "BROKER", default_value = DEFAULT_BROKER, global = true)]
    pub broker: String,
    /// Proxy backends (XPUB), separated by commas, where live chat messages are
    /// published (each is shown once, whichever proxy brings it).
    #[arg(long, env = "PROXY_BACKEND", default_value = DEFAULT_PROXY_BACKEND, global = true)]
    pub proxy: String,
}

/// How long requests may take.
#[derive(Debug, Clone, Args)]
pub struct Timeouts {
    /// Overall deadline of one request, retries included (e.g. 10s, 500ms).
    #[arg(long, env = "CLIENT_TIMEOUT", default_value = "10s",
          value_parser = service::parse_duration, global = true)]
    pub timeout: Duration,
    /// Wait for one attempt's answer before sending the same request again.
    #[arg(long, env = "CLIENT_ATTEMPT_TIMEOUT", default_value = "1s",
          value_parser = service::parse_duration, global = true)]
    pub attempt_timeout: Duration,
}

impl Timeouts {
    /// As [`CallOptions`].
    pub fn call_options(&self) -> CallOptions {
        CallOptions {
            attempt_timeout: self.attempt_timeout,
            timeout: self.timeout,
        }
    }
}

/// Who the chat commands speak as: a password to log in with, or a credential a
/// `client login` printed.
#[derive(Debug, Clone, Default, Args)]
pub struct ChatAuth {
    /// The chat user's password (the first login of a name registers it). Asked on the
    /// terminal when absent; prefer the env twin to a flag, which `ps` shows.
    #[arg(long, env = "CHAT_PASSWORD", hide_env_values = true, global = true)]
    pub password: Option<String>,
    /// A credential printed by `client login`: chat commands speak for its user without
    /// a password.
    #[arg(long, env = "CHAT_CREDENTIAL", hide_env_values = true, global = true)]
    pub credential: Option<String>,
}

/// Reads a password from the terminal without echo; `None` when stdin is not a terminal
/// (a script must pass `--password` or `CHAT_PASSWORD`).
pub fn ask_password(user: &str) -> Option<String> {
    use std::io::IsTerminal;
    if !std::io::stdin().is_terminal() {
        return None;
    }
    rpassword::prompt_password(format!("password for {user}: ")).ok()
}
