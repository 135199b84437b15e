//! Live delivery of committed chat messages, from the proxy's XPUB backend.
//!
//! The node that commits a chat message publishes it as `[topic, body(LiveMessage)]` on
//! `chan.<channel>` or `user.<recipient>` ([`proto::live`]). A [`LiveFeed`] is a SUB
//! socket that follows some of those topics. SUB filters by prefix only (`chan.a` lets
//! `chan.ab` through), so the feed compares the whole topic frame with the ones it
//! follows before it trusts a message.
//!
//! Pub/sub is best effort: a message published before the subscription reached the
//! publisher, or while this subscriber was slow, is not delivered. The replicated
//! history (`Op::History`) is the record; the feed is the doorbell.

use std::collections::{BTreeSet, HashSet, VecDeque};
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

/// Most delivered messages remembered to drop their copies (one per proxy of a pair).
pub const MAX_RECENT_MESSAGES: usize = 1024;

/// The messages delivered lately, by channel or recipient and id (ids count per channel
/// and per user): a copy that comes through the other proxy of a pair is dropped.
#[derive(Debug, Default)]
struct Recent {
    order: VecDeque<(Target, u64)>,
    seen: HashSet<(Target, u64)>,
}

impl Recent {
    /// Whether `message` is new; remembers it.
    fn first_time(&mut self, message: &ChatMessage) -> bool {
        let key = (message.to.clone(), message.id);
        if !self.seen.insert(key.clone()) {
            return false;
        }
        self.order.push_back(key);
        if self.order.len() > MAX_RECENT_MESSAGES
            && let Some(old) = self.order.pop_front()
        {
            self.seen.remove(&old);
        }
        true
    }
}

/// A SUB socket on the proxy backends that yields the chat messages of followed topics,
/// each once.
#[derive(Debug)]
pub struct LiveFeed {
    follower: Follower,
    receiver: Receiver,
    endpoint: String,
    recent: Recent,
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
            recent: Recent::default(),
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

    /// The next message of a followed topic; `Some(Err)` for a delivery that does not
    /// decode (the caller logs it and reads on); `None` once the socket is closed.
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
                Ok(LiveMessage(message)) => {
                    if self.recent.first_time(&message) {
                        return Some(Ok(message));
                    }
                }
                Err(error) => return Some(Err(error.into())),
            }
        }
    }
}

/// Reads the private message a live notice announces ([`LiveMessage::is_notice`]): the
/// proxies carry only `user.<recipient>` and the id, so the text is fetched with the
/// recipient's login (`session` must speak for them). `Ok(None)` when it is no longer in
/// the inbox's history.
pub async fn open_notice(
    session: &mut crate::Session,
    notice: &ChatMessage,
    options: &crate::CallOptions,
) -> Result<Option<ChatMessage>, crate::CallError> {
    let op = proto::Op::History {
        target: notice.to.clone(),
        since: notice.id.saturating_sub(1),
    };
    let answer = session
        .call(op, proto::Consistency::Linearizable, options)
        .await?;
    Ok(match answer.reply {
        proto::Reply::Messages(messages) => messages.into_iter().find(|m| m.id == notice.id),
        _ => None,
    })
}

/// Whether a delivered message is a private message's notice, to open with
/// [`open_notice`].
pub fn is_notice(message: &ChatMessage) -> bool {
    LiveMessage(message.clone()).is_notice()
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
    fn a_copy_through_the_other_proxy_is_dropped() {
        let mut recent = Recent::default();
        assert!(recent.first_time(&message("hey")));
        assert!(!recent.first_time(&message("hey")));
        // The same id in another channel is another message.
        let mut other = message("hey");
        other.to = Target::Channel("random".into());
        assert!(recent.first_time(&other));
        // Bounded: the oldest are forgotten.
        for id in 100..100 + MAX_RECENT_MESSAGES as u64 {
            let mut m = message("x");
            m.id = id;
            recent.first_time(&m);
        }
        assert_eq!(recent.order.len(), MAX_RECENT_MESSAGES);
        assert_eq!(recent.seen.len(), MAX_RECENT_MESSAGES);
        assert!(recent.first_time(&message("hey")), "forgotten");
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
