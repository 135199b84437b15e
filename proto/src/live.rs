//! Live chat on the proxy: what a node publishes when it commits a chat message, and what
//! the clients' feeds receive.
//!
//! A delivery is two frames, `[topic, body(LiveMessage)]`: the topic is the message's
//! channel or recipient ([`topic_of`]: `chan.<channel>` or `user.<recipient>`), the body
//! the [`ChatMessage`] itself. [`LiveMessage`] is that message with the codec's
//! validation; its encoding is the bare message's, so both sides only have to agree on
//! [`ChatMessage`].
//!
//! The proxies' ports take anyone without a key (clients are outside the cluster): a
//! stranger can read what they carry and publish on them. So no message is published
//! whole: a delivery is a **notice** — the target's topic, the message id, slot and
//! clock, no author, no text ([`LiveMessage::for_delivery`]) — and a client reads the
//! message itself through the cluster (`history`, with the recipient's login for a
//! private message). A forged notice can make a client read; it cannot make it show
//! anything the cluster did not commit.

use serde::{Deserialize, Serialize};

use crate::client::{ChatMessage, Target, check_len};
use crate::limits::{MAX_NAME_BYTES, MAX_TEXT_BYTES};
use crate::{LimitError, Wire, topic};

/// A chat message as it travels on the proxy: the body frame of a live delivery.
/// (`ChatMessage` is a reply type; this wrapper gives it [`Wire`]'s validation for the
/// pub/sub path, with the identical encoding.)
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct LiveMessage(pub ChatMessage);

impl LiveMessage {
    /// What is published for `message`: its notice, without its author and text.
    pub fn for_delivery(mut message: ChatMessage) -> LiveMessage {
        message.from.clear();
        message.text.clear();
        LiveMessage(message)
    }

    /// Whether this delivery is a notice (no author, no text), as nodes publish them.
    pub fn is_notice(&self) -> bool {
        self.0.from.is_empty() && self.0.text.is_empty()
    }

    /// The topic this message is published on.
    pub fn topic(&self) -> String {
        topic_of(&self.0.to)
    }
}

impl Wire for LiveMessage {
    /// Bounds every name and the text: a subscriber holds what it receives (the menu
    /// prints it, `watch` writes it out), so nothing longer than a stored message may
    /// come in.
    fn validate(&self) -> Result<(), LimitError> {
        let message = &self.0;
        check_len("from", &message.from, MAX_NAME_BYTES)?;
        match &message.to {
            Target::Channel(name) => check_len("to.channel", name, MAX_NAME_BYTES)?,
            Target::User(name) => check_len("to.user", name, MAX_NAME_BYTES)?,
        }
        check_len("text", &message.text, MAX_TEXT_BYTES)
    }
}

/// The proxy topic of a channel's or a user's live messages.
pub fn topic_of(target: &Target) -> String {
    match target {
        Target::Channel(name) => topic::channel(name),
        Target::User(name) => topic::user(name),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::DecodeError;
    use crate::codec::PROTOCOL_VERSION;

    fn message(to: Target, text: &str) -> ChatMessage {
        ChatMessage {
            id: 7,
            from: "alice".into(),
            to,
            text: text.into(),
            slot: 3,
            lamport: 9,
        }
    }

    fn general(text: &str) -> ChatMessage {
        message(Target::Channel("general".into()), text)
    }

    #[test]
    fn round_trip() {
        for to in [
            Target::Channel("general".into()),
            Target::User("bob".into()),
        ] {
            let live = LiveMessage(message(to, "hello"));
            let frame = crate::encode(&live).unwrap();
            assert_eq!(crate::decode::<LiveMessage>(&frame).unwrap(), live);
        }
    }

    #[test]
    fn a_message_is_delivered_as_a_notice_without_author_or_text() {
        let dm = LiveMessage::for_delivery(message(Target::User("bob".into()), "secret"));
        assert!(dm.is_notice());
        assert_eq!((dm.0.from.as_str(), dm.0.text.as_str()), ("", ""));
        assert_eq!((dm.0.id, dm.topic().as_str()), (7, "user.bob"));
        let frame = crate::encode(&dm).unwrap();
        assert!(!String::from_utf8_lossy(&frame).contains("secret"));
        let channel = LiveMessage::for_delivery(general("hello"));
        assert!(channel.is_notice());
        assert_eq!(
            (channel.0.id, channel.topic().as_str()),
            (7, "chan.general")
        );
        assert!(!LiveMessage(general("hello")).is_notice());
    }

    #[test]
    fn encoding_is_the_bare_chat_message() {
        let bare = general("hello");
        let mut frame = vec![PROTOCOL_VERSION];
        rmp_serde::encode::write_named(&mut frame, &bare).unwrap();
        // What a publisher encodes is the bare message in a body frame...
        assert_eq!(crate::encode(&LiveMessage(bare.clone())).unwrap(), frame);
        // ...and a body frame of the bare message decodes as a delivery.
        assert_eq!(crate::decode::<LiveMessage>(&frame).unwrap().0, bare);
    }

    #[test]
    fn each_over_long_field_is_refused() {
        let name = "n".repeat(MAX_NAME_BYTES + 1);
        let mut from = general("hi");
        from.from = name.clone();
        let cases = [
            ("from", from),
            ("to.channel", message(Target::Channel(name.clone()), "hi")),
            ("to.user", message(Target::User(name.clone()), "hi")),
            ("text", general(&"x".repeat(MAX_TEXT_BYTES + 1))),
        ];
        for (field, bad) in cases {
            let live = LiveMessage(bad);
            assert!(
                matches!(live.validate(), Err(LimitError::TooLong { field: f, .. }) if f == field),
                "{field}: {:?}",
                live.validate()
            );
            // The decoder of a subscriber refuses it too: the check is on the receiving path.
            let mut frame = vec![PROTOCOL_VERSION];
            rmp_serde::encode::write_named(&mut frame, &live.0).unwrap();
            assert!(matches!(
                crate::decode::<LiveMessage>(&frame),
                Err(DecodeError::Invalid(LimitError::TooLong { .. }))
            ));
        }
    }

    #[test]
    fn fields_at_their_limits_pass() {
        let name = "n".repeat(MAX_NAME_BYTES);
        let mut longest = message(Target::User(name.clone()), &"x".repeat(MAX_TEXT_BYTES));
        longest.from = name;
        assert_eq!(LiveMessage(longest).validate(), Ok(()));
    }

    #[test]
    fn topics() {
        assert_eq!(topic_of(&Target::Channel("general".into())), "chan.general");
        assert_eq!(topic_of(&Target::User("bob".into())), "user.bob");
        assert_eq!(LiveMessage(general("hi")).topic(), "chan.general");
    }
}
