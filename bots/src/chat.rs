//! `bots chat`: the seeds' chat bots.
//!
//! Each bot registers (`bot<i>-<run tag>`, with a random password of its own) and logs
//! in, the channels are created, and each bot joins its home channel and, by chance,
//! some others. Then, at its `--rate`, each bot acts: mostly
//! it posts on one of its channels, sometimes it sends a private message to another bot,
//! reads a channel's history or lists the users. Every action is printed, and so is every
//! message delivered live from the proxy (channels, and the bots' inboxes, whose notices
//! are opened with the recipient's login), so the whole path — broker, consensus, apply,
//! publish, proxy — shows on one screen.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use client::live::{Reader, format_message};
use client::{CallOptions, Connection, LiveFeed, Session};
use proto::client::Target;
use proto::{Consistency, Op, Reply};
use rand::rngs::StdRng;
use rand::seq::IndexedRandom;
use rand::{Rng, SeedableRng};
use tokio_util::sync::CancellationToken;

use crate::mix::Rate;

/// Most bots in one run.
pub const MAX_CHAT_BOTS: usize = 256;
/// Most channels in one run.
pub const MAX_CHAT_CHANNELS: usize = 64;
/// Names of the first channels; later ones are `channel-<n>`.
pub const CHANNEL_NAMES: [&str; 8] = [
    "general", "random", "paxos", "zeromq", "rust", "ops", "music", "news",
];

const WORDS: [&str; 24] = [
    "hello",
    "consensus",
    "ballot",
    "quorum",
    "leader",
    "slot",
    "decide",
    "promise",
    "accept",
    "replica",
    "log",
    "commit",
    "lamport",
    "berkeley",
    "bully",
    "proxy",
    "broker",
    "snapshot",
    "latency",
    "ping",
    "pong",
    "coffee",
    "deploy",
    "ok",
];

/// One chat run.
#[derive(Debug, Clone)]
pub struct ChatConfig {
    /// Broker frontend.
    pub broker: String,
    /// Proxy backend, for live deliveries.
    pub proxy: String,
    /// How many bots.
    pub bots: usize,
    /// Actions per second of each bot.
    pub rate: Rate,
    /// How many channels.
    pub channels: usize,
    /// How long; `None`: until shutdown.
    pub duration: Option<Duration>,
    /// Request deadlines.
    pub options: CallOptions,
}

/// Why a chat run could not run.
#[derive(Debug, thiserror::Error)]
pub enum ChatError {
    /// A setting is out of range.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// A socket could not be opened.
    #[error(transparent)]
    Transport(#[from] transport::TransportError),
    /// A bot could not log in or join its channels.
    #[error("setting up {bot}: {error}")]
    Setup {
        /// The bot.
        bot: String,
        /// What failed.
        error: client::CallError,
    },
}

/// What the bots did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ChatReport {
    /// Channel posts.
    pub posts: u64,
    /// Private messages.
    pub private_messages: u64,
    /// History reads and user listings.
    pub reads: u64,
    /// Failed requests.
    pub errors: u64,
    /// Messages delivered live from the proxy.
    pub delivered: u64,
}

impl std::fmt::Display for ChatReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "chat bots: {} posts, {} private messages, {} reads, {} errors, {} live deliveries",
            self.posts, self.private_messages, self.reads, self.errors, self.delivered
        )
    }
}

/// Where the bots print what they do (a line at a time).
pub type Say = Arc<dyn Fn(String) + Send + Sync>;

/// The name of channel `n`.
pub fn channel_name(n: usize) -> String {
    CHANNEL_NAMES
        .get(n)
        .map_or_else(|| format!("channel-{n}"), |name| (*name).to_owned())
}

fn sentence(rng: &mut StdRng, n: u64) -> String {
    let words: Vec<&str> = (0..rng.random_range(2..6))
        .filter_map(|_| WORDS.choose(rng).copied())
        .collect();
    format!("{} #{n}", words.join(" "))
}

#[derive(Default)]
struct Counters {
    posts: AtomicU64,
    private_messages: AtomicU64,
    reads: AtomicU64,
    errors: AtomicU64,
    delivered: AtomicU64,
}

struct Bot {
    name: String,
    session: Session,
    channels: Vec<String>,
}

async fn call(bot: &mut Bot, op: Op, options: &CallOptions) -> Result<Reply, client::CallError> {
    bot.session
        .call(op, Consistency::Linearizable, options)
        .await
        .map(|answer| answer.reply)
}

/// Logs in, creates every channel (idempotent) and joins some.
async fn set_up(
    bot: &mut Bot,
    index: usize,
    config: &ChatConfig,
    rng: &mut StdRng,
    say: &Say,
) -> Result<(), ChatError> {
    let setup = |error, bot: &Bot| ChatError::Setup {
        bot: bot.name.clone(),
        error,
    };
    let password = proto::client::new_credential();
    let name = bot.name.clone();
    bot.session
        .login(&name, &password, &config.options)
        .await
        .map_err(|e| setup(e, bot))?;
    for n in 0..config.channels {
        let channel = channel_name(n);
        call(bot, Op::CreateChannel { channel }, &config.options)
            .await
            .map_err(|e| setup(e, bot))?;
    }
    let home = index % config.channels;
    for n in 0..config.channels {
        if n == home || rng.random_bool(0.4) {
            let channel = channel_name(n);
            let op = Op::Subscribe {
                user: bot.name.clone(),
                channel: channel.clone(),
            };
            call(bot, op, &config.options)
                .await
                .map_err(|e| setup(e, bot))?;
            bot.channels.push(channel);
        }
    }
    let joined: Vec<String> = bot.channels.iter().map(|c| format!("#{c}")).collect();
    say(format!(
        "{} logged in and joined {}",
        bot.name,
        joined.join(", ")
    ));
    Ok(())
}

/// One action of a bot.
async fn act(
    bot: &mut Bot,
    peers: &[String],
    n: u64,
    rng: &mut StdRng,
    config: &ChatConfig,
    counters: &Counters,
    say: &Say,
) {
    let roll = rng.random_range(0..100);
    let others: Vec<&String> = peers.iter().filter(|p| **p != bot.name).collect();
    let result = if roll < 60 || (roll < 85 && others.is_empty()) {
        let Some(channel) = bot.channels.choose(rng).cloned() else {
            return;
        };
        let text = sentence(rng, n);
        let op = Op::Publish {
            user: bot.name.clone(),
            channel: channel.clone(),
            text: text.clone(),
        };
        call(bot, op, &config.options).await.map(|reply| {
            counters.posts.fetch_add(1, Ordering::Relaxed);
            let id = match reply {
                Reply::Posted { id } => format!(" (message #{id})"),
                _ => String::new(),
            };
            format!("{} -> #{channel}: {text:?}{id}", bot.name)
        })
    } else if roll < 85 {
        let Some(to) = others.choose(rng).map(|p| (*p).clone()) else {
            return;
        };
        let text = sentence(rng, n);
        let op = Op::PrivateMessage {
            from: bot.name.clone(),
            to: to.clone(),
            text: text.clone(),
        };
        call(bot, op, &config.options).await.map(|_| {
            counters.private_messages.fetch_add(1, Ordering::Relaxed);
            format!("{} -> @{to}: {text:?}", bot.name)
        })
    } else if roll < 95 {
        let Some(channel) = bot.channels.choose(rng).cloned() else {
            return;
        };
        let op = Op::History {
            target: Target::Channel(channel.clone()),
            since: 0,
        };
        call(bot, op, &config.options).await.map(|reply| {
            counters.reads.fetch_add(1, Ordering::Relaxed);
            let count = match reply {
                Reply::Messages(messages) => messages.len(),
                _ => 0,
            };
            format!("{} reads #{channel}: {count} messages", bot.name)
        })
    } else {
        call(bot, Op::ListUsers, &config.options)
            .await
            .map(|reply| {
                counters.reads.fetch_add(1, Ordering::Relaxed);
                let count = match reply {
                    Reply::Users(users) => users.len(),
                    _ => 0,
                };
                format!("{} lists the users: {count}", bot.name)
            })
    };
    match result {
        Ok(line) => say(line),
        Err(error) => {
            counters.errors.fetch_add(1, Ordering::Relaxed);
            say(format!("{} failed: {error}", bot.name));
        }
    }
}

async fn bot_task(
    mut bot: Bot,
    peers: Arc<Vec<String>>,
    config: Arc<ChatConfig>,
    counters: Arc<Counters>,
    say: Say,
    stop: CancellationToken,
) {
    let mut rng = StdRng::from_rng(&mut rand::rng());
    let mut ticker = tokio::time::interval(config.rate.interval(1));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut n = 0;
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = ticker.tick() => {}
        }
        n += 1;
        act(&mut bot, &peers, n, &mut rng, &config, &counters, &say).await;
    }
}

/// Prints the committed messages the live notices announce until `stop`: read through
/// the cluster, an inbox's with its recipient's credential (`credentials`, by bot name).
async fn watch(
    mut feed: LiveFeed,
    mut reader: Session,
    credentials: HashMap<String, String>,
    options: CallOptions,
    counters: Arc<Counters>,
    say: Say,
    stop: CancellationToken,
) {
    let mut cursors = Reader::new();
    loop {
        let next = tokio::select! {
            () = stop.cancelled() => return,
            next = feed.next() => next,
        };
        match next {
            Some(Ok(notice)) => {
                let credential = match &notice.to {
                    Target::User(to) => credentials.get(to).cloned(),
                    Target::Channel(_) => None,
                };
                reader.use_credential(credential);
                match cursors.read(&mut reader, &notice, &options).await {
                    Ok(messages) => {
                        for message in messages {
                            counters.delivered.fetch_add(1, Ordering::Relaxed);
                            say(format!("  << {}", format_message(&message)));
                        }
                    }
                    Err(error) => tracing::warn!(%error, "cannot read a live message"),
                }
            }
            Some(Err(error)) => tracing::warn!(%error, "skipping a live message"),
            None => return,
        }
    }
}

/// Runs the chat bots until `config.duration` passes or `shutdown` is cancelled.
pub async fn run_chat(
    config: ChatConfig,
    say: Say,
    shutdown: CancellationToken,
) -> Result<ChatReport, ChatError> {
    if !(1..=MAX_CHAT_BOTS).contains(&config.bots) {
        return Err(ChatError::Config(format!(
            "--bots must be 1..={MAX_CHAT_BOTS}"
        )));
    }
    if !(1..=MAX_CHAT_CHANNELS).contains(&config.channels) {
        return Err(ChatError::Config(format!(
            "--channels must be 1..={MAX_CHAT_CHANNELS}"
        )));
    }
    let connection = Connection::open(&config.broker).await?;
    let feed = LiveFeed::open(&config.proxy).await?;
    let mut rng = StdRng::from_rng(&mut rand::rng());
    let run_tag: u16 = rng.random();
    let mut bots = Vec::with_capacity(config.bots);
    for index in 0..config.bots {
        let mut bot = Bot {
            name: format!("bot{}-{run_tag:04x}", index + 1),
            session: connection.session(),
            channels: Vec::new(),
        };
        set_up(&mut bot, index, &config, &mut rng, &say).await?;
        bots.push(bot);
    }
    // Follow every channel and inbox of the run; errors only cost live output.
    let mut followed = HashSet::new();
    for bot in &bots {
        followed.insert(Target::User(bot.name.clone()));
        for channel in &bot.channels {
            followed.insert(Target::Channel(channel.clone()));
        }
    }
    for target in &followed {
        if let Err(error) = feed.follow(target).await {
            say(format!("warning: no live messages for {target:?}: {error}"));
        }
    }
    let peers = Arc::new(bots.iter().map(|b| b.name.clone()).collect::<Vec<_>>());
    let config = Arc::new(config);
    let counters = Arc::new(Counters::default());
    let stop = shutdown.child_token();
    if let Some(duration) = config.duration {
        let stop = stop.clone();
        tokio::spawn(async move {
            tokio::select! {
                () = tokio::time::sleep(duration) => stop.cancel(),
                () = stop.cancelled() => {}
            }
        });
    }
    let credentials = bots
        .iter()
        .filter_map(|b| Some((b.name.clone(), b.session.credential()?.to_owned())))
        .collect();
    let watcher = tokio::spawn(watch(
        feed,
        connection.session(),
        credentials,
        config.options,
        counters.clone(),
        say.clone(),
        stop.clone(),
    ));
    let tasks: Vec<_> = bots
        .into_iter()
        .map(|bot| {
            tokio::spawn(bot_task(
                bot,
                peers.clone(),
                config.clone(),
                counters.clone(),
                say.clone(),
                stop.clone(),
            ))
        })
        .collect();
    for task in tasks {
        let _ = task.await;
    }
    stop.cancel();
    let _ = watcher.await;
    let load = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
    Ok(ChatReport {
        posts: load(&counters.posts),
        private_messages: load(&counters.private_messages),
        reads: load(&counters.reads),
        errors: load(&counters.errors),
        delivered: load(&counters.delivered),
    })
}
