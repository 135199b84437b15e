//! Live delivery of committed chat messages, from the proxy's XPUB backend.
//!
//! The node that commits a chat message publishes a **notice** of it as
//! `[topic, body(LiveMessage)]` on `chan.<channel>` or `user.<recipient>`
//! ([`proto::live`]): the target and the message id, never the author or the text. The
//! proxies' subscriber ports take anyone, and so does their publisher port, so a
//! delivery proves nothing: it is a doorbell. A [`LiveFeed`] is a SUB socket that
//! follows some topics and yields their notices; a [`Reader`] answers each with a
//! `history` read through the cluster since the last message it showed for that target
//! (with the recipient's login for `@user`), so what is shown is what the cluster
//! committed. A forged notice costs a read and shows nothing; a copy through the other
//! proxy of a pair, or a notice of an id already read, shows nothing either.
//!
//! SUB filters by prefix only (`chan.a` lets `chan.ab` through), so the feed compares
//! the whole topic frame with the ones it follows, and the notice's target with its
//! topic. Pub/sub is best effort: a notice lost on the way delays its message until the
//! next notice for that target; the replicated history is the record.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use proto::DecodeError;
use proto::client::{ChatMessage, Target};
use proto::live::{LiveMessage, topic_of};
use transport::{Kind, Mode, Options, Receiver, Sender, Socket, TransportError};

/// Most topics one feed follows: each one is a subscription the proxy keeps for us.
pub const MAX_FOLLOWED_TOPICS: usize = 1024;

/// Reads `#channel`, `channel` or `@user` as a [`Target`].
pub fn parse_target(text: &str) -> Target {
    if let Some(user) = text.strip_prefix('@') {
        Target::User(user.to_owned())
    } else {
        Target::Channel(text.strip_prefix('#').unwrap_or(text).to_owned())
    }
}

/// Why the feed could not do something.
#[derive(Debug, thiserror::Error)]
pub enum LiveError {
    /// The SUB socket failed or closed.
    #[error(transparent)]
    Transport(#[from] TransportError),
    /// Following one more topic would pass [`MAX_FOLLOWED_TOPICS`].
    #[error("already following {max} topics")]
    TooManyTopics {
        /// The limit.
        max: usize,
    },
    /// A delivery did not decode (counted and skipped by callers).
    #[error("bad live message: {0}")]
    Decode(#[from] DecodeError),
}

type Topics = Arc<Mutex<BTreeSet<Vec<u8>>>>;

fn lock(topics: &Topics) -> MutexGuard<'_, BTreeSet<Vec<u8>>> {
    // The set is consistent even if a holder panicked: inserts are single operations.
    topics.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Adds topics to a [`LiveFeed`] from another task or thread.
#[derive(Debug, Clone)]
pub struct Follower {
    sender: Sender,
    topics: Topics,
}

impl Follower {
    /// Starts receiving the live messages of `target`. Following a topic twice is a
    /// no-op.
    pub async fn follow(&self, target: &Target) -> Result<(), LiveError> {
        let topic = topic_of(target).into_bytes();
        {
            let mut topics = lock(&self.topics);
            if topics.contains(&topic) {
                return Ok(());
            }
            if topics.len() >= MAX_FOLLOWED_TOPICS {
                return Err(LiveError::TooManyTopics {
                    max: MAX_FOLLOWED_TOPICS,
                });
            }
            topics.insert(topic.clone());
        }
        self.sender.subscribe(topic).await?;
        Ok(())
    }

    /// Whether `target` is followed.
    pub fn follows(&self, target: &Target) -> bool {
        lock(&self.topics).contains(topic_of(target).as_bytes())
    }
}

/// A SUB socket on the proxy backends that yields the notices of followed topics.
#[derive(Debug)]
pub struct LiveFeed {
    follower: Follower,
    receiver: Receiver,
    endpoint: String,
}

impl LiveFeed {
    /// Connects a SUB socket to the proxy backend `endpoint` (e.g. `tcp://127.0.0.1:5558`),
    /// or to every one of a list separated by commas (both proxies of a pair: a message
    /// comes through either, and is yielded once), following nothing yet.
    pub async fn open(endpoint: &str) -> Result<LiveFeed, TransportError> {
        let socket = Socket::open(Kind::Sub, Mode::Connect, endpoint, Options::default()).await?;
        let endpoint = socket.endpoint().to_owned();
        let (sender, receiver) = socket.split();
        Ok(LiveFeed {
            follower: Follower {
                sender,
                topics: Topics::default(),
            },
            receiver,
            endpoint,
        })
    }

    /// The proxy endpoint.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// A handle to follow more topics while this feed is being read elsewhere.
    pub fn follower(&self) -> Follower {
        self.follower.clone()
    }

    /// Starts receiving the live messages of `target`.
    pub async fn follow(&self, target: &Target) -> Result<(), LiveError> {
        self.follower.follow(target).await
    }

    /// The next notice of a followed topic (its target and id: read it with a
    /// [`Reader`]); `Some(Err)` for a delivery that does not decode (the caller logs it
    /// and reads on); `None` once the socket is closed.
    pub async fn next(&mut self) -> Option<Result<ChatMessage, LiveError>> {
        loop {
            let message = self.receiver.recv().await?;
            let (topic, body) = match proto::codec::split(&message, 1) {
                Ok((routing, body)) => (routing.first().map(Vec::as_slice), body),
                Err(error) => return Some(Err(error.into())),
            };
            // Only whole-topic matches: SUB's prefix filter lets longer names through.
            let followed = topic.is_some_and(|topic| lock(&self.follower.topics).contains(topic));
            if !followed {
                continue;
            }
            match proto::decode::<LiveMessage>(body) {
                // A notice whose target is not its topic's was not made by a node.
                Ok(live) if topic == Some(live.topic().as_bytes()) => return Some(Ok(live.0)),
                Ok(_) => continue,
                Err(error) => return Some(Err(error.into())),
            }
        }
    }
}

/// Most targets a [`Reader`] keeps a cursor for (as many as a feed may follow).
pub const MAX_READER_TARGETS: usize = MAX_FOLLOWED_TOPICS;

/// Turns notices into the messages the cluster committed: for each target, the id of the
/// last message shown, and a `history` read since it when a notice of a newer id comes.
#[derive(Debug, Default)]
pub struct Reader {
    cursors: HashMap<Target, u64>,
}

impl Reader {
    /// A reader that has shown nothing yet.
    pub fn new() -> Reader {
        Reader::default()
    }

    /// The committed messages a notice announces, oldest first: every message of its
    /// target after the last one this reader returned (from the notice's own id on, the
    /// first time). Empty for a notice of an id already read, a duplicate, or a forgery.
    /// `session` reads the history: for `@user` it must hold that user's login.
    pub async fn read(
        &mut self,
        session: &mut crate::Session,
        notice: &ChatMessage,
        options: &crate::CallOptions,
    ) -> Result<Vec<ChatMessage>, crate::CallError> {
        let since = match self.cursors.get(&notice.to) {
            Some(&cursor) if notice.id <= cursor => return Ok(Vec::new()),
            Some(&cursor) => cursor,
            None => notice.id.saturating_sub(1),
        };
        let op = proto::Op::History {
            target: notice.to.clone(),
            since,
        };
        let answer = session
            .call(op, proto::Consistency::Linearizable, options)
            .await?;
        let proto::Reply::Messages(messages) = answer.reply else {
            return Ok(Vec::new());
        };
        if let Some(last) = messages.last() {
            if self.cursors.len() >= MAX_READER_TARGETS && !self.cursors.contains_key(&notice.to) {
                self.cursors.clear();
            }
            self.cursors.insert(notice.to.clone(), last.id);
        }
        Ok(messages)
    }
}

/// One line for people: `[#general] alice: hello` or `[@bob] alice: hi`.
pub fn format_message(message: &ChatMessage) -> String {
    let place = match &message.to {
        Target::Channel(name) => format!("#{name}"),
        Target::User(name) => format!("@{name}"),
    };
    format!("[{place}] {}: {}", message.from, message.text)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(text: &str) -> ChatMessage {
        ChatMessage {
            id: 7,
            from: "alice".into(),
            to: Target::Channel("general".into()),
            text: text.into(),
            slot: 3,
            lamport: 9,
        }
    }

    #[test]
    fn targets_parse() {
        assert_eq!(parse_target("@bob"), Target::User("bob".into()));
        assert_eq!(parse_target("#general"), Target::Channel("general".into()));
        assert_eq!(parse_target("general"), Target::Channel("general".into()));
        assert_eq!(topic_of(&parse_target("@bob")), "user.bob");
        assert_eq!(format_message(&message("hey")), "[#general] alice: hey");
    }
}
