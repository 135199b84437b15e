//! The `client` command line: its flags, the one-shot commands and their exit codes.
//!
//! `main` parses [`Cli`] and calls [`run`]; tests do the same in-process with their
//! own output buffer. Exit codes ([`Exit`]): 0 ok, 1 error, 2 not found, 3 CAS mismatch,
//! 4 unauthenticated (a wrong password, a missing, stale or someone else's credential).
//!
//! Chat commands that act as a user (`subscribe`, `publish`, `dm`, `history @user`,
//! `watch @user`) log in first with `--password` / `CHAT_PASSWORD` (asked on the
//! terminal when absent), or use the credential of an earlier `client login`
//! (`--credential` / `CHAT_CREDENTIAL`).
//! Results go to stdout (text, or one JSON document with `-o json`); in text mode errors
//! go to stderr, in JSON mode they are a JSON document on stdout too
//! (`{"ok": false, "error": "<code>", "message": "..."}`) so that scripts read one stream.

use std::io::Write;

use clap::{Parser, Subcommand, ValueEnum};
use proto::client::{ChatMessage, Target};
use proto::{Consistency, Op, Reply};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use crate::args::{ChatAuth, Endpoints, Timeouts};
use crate::exit::Exit;
use crate::live::{LiveFeed, Reader, format_message, parse_target};
use crate::login::{LoginError, acting_user, log_in};
use crate::session::{Answer, CallError, Connection};
use crate::{menu, status, table};

/// Default status addresses of the nodes (node N serves HTTP on port 7000 + N).
pub const DEFAULT_NODES: &str = "127.0.0.1:7001,127.0.0.1:7002,127.0.0.1:7003";

/// Output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, ValueEnum)]
pub enum Output {
    /// For people.
    #[default]
    Text,
    /// One JSON document (for `watch`: one per line).
    Json,
}

/// Command-line client of a paxos-zmq cluster: key-value operations, chat, cluster
/// status. Without a command it opens the interactive chat menu.
#[derive(Debug, Parser)]
#[command(
    name = "client",
    version,
    after_help = "Exit codes: 0 ok, 1 error, 2 not found, 3 CAS mismatch, 4 unauthenticated.\n\
                  Examples:\n  client put greeting hello\n  client get greeting\n  \
                  client cas greeting hello bonjour\n  \
                  CHAT_PASSWORD=s3cret client publish alice general hi all\n  \
                  export CHAT_CREDENTIAL=$(client login alice -o json | jq -r .credential)\n  \
                  client watch general @alice\n  client status\n  client   (interactive chat menu)"
)]
pub struct Cli {
    /// Cluster addresses.
    #[command(flatten)]
    pub endpoints: Endpoints,
    /// Request deadlines.
    #[command(flatten)]
    pub timeouts: Timeouts,
    /// Who chat commands speak as.
    #[command(flatten)]
    pub auth: ChatAuth,
    /// Status addresses of the nodes (host:port, comma-separated) for `status` and
    /// `health`.
    #[arg(long, env = "NODES", value_delimiter = ',', default_value = DEFAULT_NODES,
          global = true)]
    pub nodes: Vec<String>,
    /// Output format.
    #[arg(short = 'o', long, env = "CLIENT_OUTPUT", value_enum, default_value_t = Output::Text,
          global = true)]
    pub output: Output,
    /// Logging.
    #[command(flatten)]
    pub log: service::LogArgs,
    /// What to do; none opens the interactive chat menu.
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// The one-shot commands.
#[derive(Debug, Clone, Subcommand)]
pub enum Command {
    /// Write a key.
    Put {
        /// The key.
        key: String,
        /// The value.
        value: String,
    },
    /// Read a key (exit 2 if absent).
    Get {
        /// The key.
        key: String,
        /// Answer from the receiving node's applied state at once (may be stale).
        #[arg(long)]
        local: bool,
    },
    /// Delete a key.
    #[command(alias = "delete")]
    Del {
        /// The key.
        key: String,
    },
    /// Compare-and-set: `cas KEY EXPECTED NEW`, or `cas KEY --absent NEW` (exit 3 on
    /// mismatch).
    Cas {
        /// The key.
        key: String,
        /// EXPECTED NEW, or NEW with --absent.
        #[arg(num_args = 1..=2, required = true, value_names = ["EXPECTED", "NEW"])]
        values: Vec<String>,
        /// Write only if the key is absent.
        #[arg(long)]
        absent: bool,
    },
    /// Log in (the first login of a name registers it with the password) and print the
    /// session's credential, for `CHAT_CREDENTIAL`.
    Login {
        /// User name.
        user: String,
    },
    /// List the users.
    Users,
    /// List the channels and their subscribers.
    Channels,
    /// Create a channel (idempotent).
    #[command(alias = "create-channel")]
    Create {
        /// Channel name.
        channel: String,
    },
    /// Subscribe a user to a channel (as that user: needs its login).
    Subscribe {
        /// User name.
        user: String,
        /// Channel name.
        channel: String,
    },
    /// Post on a channel (as the author: needs its login).
    Publish {
        /// Author.
        user: String,
        /// Channel name.
        channel: String,
        /// The message (words are joined with spaces; after `--` words may start with `-`).
        #[arg(required = true, num_args = 1..)]
        text: Vec<String>,
    },
    /// Send a private message (as the sender: needs its login).
    Dm {
        /// Sender.
        from: String,
        /// Recipient.
        to: String,
        /// The message (words are joined with spaces; after `--` words may start with `-`).
        #[arg(required = true, num_args = 1..)]
        text: Vec<String>,
    },
    /// Messages of a channel, or of a user with `@user` (needs that user's login).
    History {
        /// `channel` or `@user`.
        target: String,
        /// Only messages with an id greater than this.
        #[arg(long, default_value_t = 0)]
        since: u64,
    },
    /// Print live messages of channels and `@users` until Ctrl-C (`@user`: its private
    /// messages, read with its login).
    Watch {
        /// `channel` or `@user`, one or more.
        #[arg(required = true)]
        targets: Vec<String>,
    },
    /// The nodes' /status as a table (exit 1 if one does not answer).
    Status,
    /// A real write through consensus answered by each node, with its latency.
    Health,
}

/// Runs the command line: a one-shot command, or the interactive menu without one.
/// Results are written to `out`; `shutdown` stops `watch` and the menu.
pub async fn run(cli: Cli, shutdown: CancellationToken, out: &mut dyn Write) -> Exit {
    let Some(command) = cli.command.clone() else {
        return run_menu(&cli, shutdown).await;
    };
    let result = match command {
        Command::Status => run_status(&cli, out).await,
        Command::Health => run_health(&cli, out).await,
        Command::Watch { targets } => run_watch(&cli, &targets, shutdown, out).await,
        command => run_request(&cli, command, out).await,
    };
    result.unwrap_or_else(|error| {
        // stdout is gone (e.g. a closed pipe): nothing more to tell there.
        eprintln!("error: writing the output: {error}");
        Exit::Error
    })
}

async fn run_menu(cli: &Cli, shutdown: CancellationToken) -> Exit {
    let config = menu::MenuConfig {
        endpoints: cli.endpoints.clone(),
        options: cli.timeouts.call_options(),
    };
    let handle = tokio::runtime::Handle::current();
    let menu = tokio::task::spawn_blocking(move || menu::run(&config, &handle));
    tokio::select! {
        exit = menu => exit.unwrap_or(Exit::Error),
        // The menu thread blocks on the terminal; the process exits without it.
        () = shutdown.cancelled() => Exit::Ok,
    }
}

/// The op a request command sends, and how reads are served.
fn op_of(command: Command) -> Result<(Op, Consistency), String> {
    let linearizable = Consistency::Linearizable;
    Ok(match command {
        Command::Put { key, value } => (Op::Put { key, value }, linearizable),
        Command::Get { key, local } => (
            Op::Get { key },
            if local {
                Consistency::Local
            } else {
                linearizable
            },
        ),
        Command::Del { key } => (Op::Delete { key }, linearizable),
        Command::Cas {
            key,
            mut values,
            absent,
        } => {
            let (expected, new) = match (absent, values.len()) {
                (true, 1) => (None, values.remove(0)),
                (false, 2) => {
                    let new = values.remove(1);
                    (Some(values.remove(0)), new)
                }
                (true, _) => return Err("cas KEY --absent NEW takes one value".into()),
                (false, _) => return Err("cas KEY EXPECTED NEW takes two values".into()),
            };
            (Op::Cas { key, expected, new }, linearizable)
        }
        Command::Login { user } => (
            Op::Login {
                user,
                password: String::new(),
            },
            linearizable,
        ),
        Command::Users => (Op::ListUsers, linearizable),
        Command::Channels => (Op::ListChannels, linearizable),
        Command::Create { channel } => (Op::CreateChannel { channel }, linearizable),
        Command::Subscribe { user, channel } => (Op::Subscribe { user, channel }, linearizable),
        Command::Publish {
            user,
            channel,
            text,
        } => (
            Op::Publish {
                user,
                channel,
                text: text.join(" "),
            },
            linearizable,
        ),
        Command::Dm { from, to, text } => (
            Op::PrivateMessage {
                from,
                to,
                text: text.join(" "),
            },
            linearizable,
        ),
        Command::History { target, since } => (
            Op::History {
                target: parse_target(&target),
                since,
            },
            linearizable,
        ),
        Command::Watch { .. } | Command::Status | Command::Health => {
            return Err("not a request command".into());
        }
    })
}

fn fail(output: Output, out: &mut dyn Write, code: &str, message: &str) -> std::io::Result<()> {
    match output {
        Output::Text => {
            eprintln!("error: {message}");
            Ok(())
        }
        Output::Json => writeln!(
            out,
            "{}",
            json!({"ok": false, "error": code, "message": message})
        ),
    }
}

async fn run_request(cli: &Cli, command: Command, out: &mut dyn Write) -> std::io::Result<Exit> {
    let output = cli.output;
    let (op, consistency) = match op_of(command) {
        Ok(request) => request,
        Err(message) => {
            fail(output, out, "bad_request", &message)?;
            return Ok(Exit::Error);
        }
    };
    let connection = match Connection::open(&cli.endpoints.broker).await {
        Ok(connection) => connection,
        Err(error) => {
            fail(output, out, "connect", &error.to_string())?;
            return Ok(Exit::Error);
        }
    };
    let mut session = connection.session();
    let options = cli.timeouts.call_options();
    if let Op::Login { user, .. } = &op {
        return match log_in(&cli.auth, &options, &mut session, user, true).await {
            Ok(()) => {
                let credential = session.credential().unwrap_or_default();
                match output {
                    Output::Json => writeln!(
                        out,
                        "{}",
                        json!({"ok": true, "user": user, "credential": credential})
                    )?,
                    Output::Text => {
                        writeln!(out, "logged in as {user}")?;
                        writeln!(out, "export CHAT_CREDENTIAL={credential}")?;
                    }
                }
                Ok(Exit::Ok)
            }
            Err(error) => report_error(output, out, &error),
        };
    }
    if let Some(user) = acting_user(&op)
        && let Err(error) = log_in(&cli.auth, &options, &mut session, user, false).await
    {
        return report_error(output, out, &error);
    }
    match session.call(op.clone(), consistency, &options).await {
        Ok(answer) => print_answer(output, out, &op, consistency, &answer),
        Err(error) => report_error(output, out, &error),
    }
}

fn report_error(
    output: Output,
    out: &mut dyn Write,
    error: &dyn ReportedError,
) -> std::io::Result<Exit> {
    let (exit, kind, message) = error.reported();
    let message = match exit {
        Exit::NotFound => format!("not found: {message}"),
        Exit::CasMismatch => format!("cas mismatch: {message}"),
        Exit::Unauthenticated => format!("unauthenticated: {message}"),
        Exit::Ok | Exit::Error => message,
    };
    fail(output, out, kind, &message)?;
    Ok(exit)
}

/// An error as the command line reports it: exit status, code, message.
trait ReportedError {
    fn reported(&self) -> (Exit, &'static str, String);
}

impl ReportedError for CallError {
    fn reported(&self) -> (Exit, &'static str, String) {
        let message = match self {
            CallError::Rejected { error, .. } => error.message.clone(),
            other => other.to_string(),
        };
        (Exit::of_error(self), self.kind(), message)
    }
}

impl ReportedError for LoginError {
    fn reported(&self) -> (Exit, &'static str, String) {
        match self {
            LoginError::NoPassword(message) => {
                (Exit::Unauthenticated, "unauthenticated", message.clone())
            }
            LoginError::Call(error) => error.reported(),
        }
    }
}

fn message_json(message: &ChatMessage) -> Value {
    serde_json::to_value(message).unwrap_or(Value::Null)
}

fn print_answer(
    output: Output,
    out: &mut dyn Write,
    op: &Op,
    consistency: Consistency,
    answer: &Answer,
) -> std::io::Result<Exit> {
    let meta = json!({"ok": true, "node": answer.node, "applied_slot": answer.applied_slot});
    let mut doc = meta;
    let text = match (&answer.reply, op) {
        (Reply::Value(value), Op::Get { key }) => {
            doc["key"] = json!(key);
            doc["value"] = json!(value);
            doc["consistency"] = json!(match consistency {
                Consistency::Linearizable => "linearizable",
                Consistency::Local => "local",
            });
            value.clone()
        }
        (Reply::Users(users), _) => {
            doc["users"] = json!(users);
            users.iter().map(|u| format!("{u}\n")).collect::<String>()
        }
        (Reply::Channels(channels), _) => {
            doc["channels"] = json!(
                channels
                    .iter()
                    .map(|c| json!({"name": c.name, "subscribers": c.subscribers}))
                    .collect::<Vec<_>>()
            );
            let rows: Vec<Vec<String>> = channels
                .iter()
                .map(|c| vec![c.name.clone(), c.subscribers.join(", ")])
                .collect();
            table::render(&["CHANNEL", "SUBSCRIBERS"], &rows)
        }
        (Reply::Messages(messages), _) => {
            doc["messages"] = Value::Array(messages.iter().map(message_json).collect());
            messages
                .iter()
                .map(|m| format!("#{:<5} {}\n", m.id, format_message(m)))
                .collect::<String>()
        }
        (Reply::Posted { id }, Op::PrivateMessage { to, .. }) => {
            doc["id"] = json!(id);
            format!("sent to @{to} as message #{id}")
        }
        (Reply::Posted { id }, _) => {
            doc["id"] = json!(id);
            format!("posted as message #{id}")
        }
        (Reply::Done, _) | (Reply::Value(_), _) => "OK".to_owned(),
    };
    match output {
        Output::Json => writeln!(out, "{doc}")?,
        Output::Text => {
            write!(out, "{text}")?;
            if !text.is_empty() && !text.ends_with('\n') {
                writeln!(out)?;
            }
        }
    }
    Ok(Exit::Ok)
}

async fn run_watch(
    cli: &Cli,
    targets: &[String],
    shutdown: CancellationToken,
    out: &mut dyn Write,
) -> std::io::Result<Exit> {
    let output = cli.output;
    let mut feed = match LiveFeed::open(&cli.endpoints.proxy).await {
        Ok(feed) => feed,
        Err(error) => {
            fail(output, out, "connect", &error.to_string())?;
            return Ok(Exit::Error);
        }
    };
    let targets: Vec<Target> = targets.iter().map(|t| parse_target(t)).collect();
    // The proxies carry notices: the messages are read through the cluster, a channel's
    // by anyone, each @user's with that user's login.
    let connection = match Connection::open(&cli.endpoints.broker).await {
        Ok(connection) => connection,
        Err(error) => {
            fail(output, out, "connect", &error.to_string())?;
            return Ok(Exit::Error);
        }
    };
    let options = cli.timeouts.call_options();
    let mut channels = connection.session();
    let mut inboxes = std::collections::HashMap::new();
    for target in &targets {
        if let Target::User(user) = target {
            let mut session = connection.session();
            if let Err(error) = log_in(&cli.auth, &options, &mut session, user, false).await {
                return report_error(output, out, &error);
            }
            inboxes.insert(user.clone(), session);
        }
    }
    let mut reader = Reader::new();
    for target in &targets {
        if let Err(error) = feed.follow(target).await {
            fail(output, out, "subscribe", &error.to_string())?;
            return Ok(Exit::Error);
        }
    }
    eprintln!(
        "watching {} on {} (Ctrl-C to stop)",
        targets
            .iter()
            .map(|t| match t {
                Target::Channel(name) => format!("#{name}"),
                Target::User(name) => format!("@{name}"),
            })
            .collect::<Vec<_>>()
            .join(", "),
        feed.endpoint()
    );
    loop {
        let next = tokio::select! {
            () = shutdown.cancelled() => return Ok(Exit::Ok),
            next = feed.next() => next,
        };
        match next {
            Some(Ok(notice)) => {
                let session = match &notice.to {
                    Target::User(user) => match inboxes.get_mut(user) {
                        Some(session) => session,
                        None => continue,
                    },
                    Target::Channel(_) => &mut channels,
                };
                let messages = match reader.read(session, &notice, &options).await {
                    Ok(messages) => messages,
                    Err(error) => {
                        eprintln!("warning: cannot read a live message: {error}");
                        continue;
                    }
                };
                for message in messages {
                    match output {
                        Output::Text => writeln!(out, "{}", format_message(&message))?,
                        Output::Json => writeln!(out, "{}", message_json(&message))?,
                    }
                }
                out.flush()?;
            }
            Some(Err(error)) => eprintln!("warning: skipping a live message: {error}"),
            None => {
                fail(output, out, "closed", "the subscription socket closed")?;
                return Ok(Exit::Error);
            }
        }
    }
}

async fn run_status(cli: &Cli, out: &mut dyn Write) -> std::io::Result<Exit> {
    let statuses = status::fetch_all(&cli.nodes, status::STATUS_TIMEOUT).await;
    match cli.output {
        Output::Text => write!(out, "{}", status::status_table(&statuses))?,
        Output::Json => writeln!(out, "{}", status::status_json(&statuses))?,
    }
    Ok(if statuses.iter().all(|s| s.result.is_ok()) {
        Exit::Ok
    } else {
        Exit::Error
    })
}

async fn run_health(cli: &Cli, out: &mut dyn Write) -> std::io::Result<Exit> {
    let connection = match Connection::open(&cli.endpoints.broker).await {
        Ok(connection) => connection,
        Err(error) => {
            fail(cli.output, out, "connect", &error.to_string())?;
            return Ok(Exit::Error);
        }
    };
    let report = status::health(&connection, cli.nodes.len(), &cli.timeouts.call_options()).await;
    match cli.output {
        Output::Text => write!(out, "{}", report.table())?,
        Output::Json => writeln!(out, "{}", report.json())?,
    }
    Ok(if report.healthy() {
        Exit::Ok
    } else {
        Exit::Error
    })
}

#[cfg(test)]
mod tests;
