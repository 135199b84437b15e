//! Unit tests of `cli.rs`.

use std::time::Duration;

use super::*;

fn parse(args: &[&str]) -> Cli {
    Cli::try_parse_from(std::iter::once("client").chain(args.iter().copied())).unwrap()
}

#[test]
fn cas_forms() {
    let op = |args: &[&str]| op_of(parse(args).command.unwrap()).map(|(op, _)| op);
    assert_eq!(
        op(&["cas", "k", "old", "new"]).unwrap(),
        Op::Cas {
            key: "k".into(),
            expected: Some("old".into()),
            new: "new".into()
        }
    );
    assert_eq!(
        op(&["cas", "k", "--absent", "new"]).unwrap(),
        Op::Cas {
            key: "k".into(),
            expected: None,
            new: "new".into()
        }
    );
    assert!(op(&["cas", "k", "new"]).is_err());
    assert!(op(&["cas", "k", "a", "b", "--absent"]).is_err());
}

#[test]
fn flags_anywhere_and_text_joined() {
    let cli = parse(&[
        "publish", "alice", "general", "hello", "world", "-o", "json",
    ]);
    assert_eq!(cli.output, Output::Json);
    let (op, _) = op_of(cli.command.unwrap()).unwrap();
    assert!(matches!(op, Op::Publish { text, .. } if text == "hello world"));
    let cli = parse(&["publish", "alice", "general", "--", "-1", "point"]);
    let (op, _) = op_of(cli.command.unwrap()).unwrap();
    assert!(matches!(op, Op::Publish { text, .. } if text == "-1 point"));
    let cli = parse(&[
        "-o",
        "json",
        "--broker",
        "tcp://h:1",
        "dm",
        "a",
        "b",
        "hi",
        "there",
    ]);
    assert_eq!(cli.output, Output::Json);
    assert_eq!(cli.endpoints.broker, "tcp://h:1");
    let (op, _) = op_of(cli.command.unwrap()).unwrap();
    assert_eq!(
        op,
        Op::PrivateMessage {
            from: "a".into(),
            to: "b".into(),
            text: "hi there".into()
        }
    );
    let cli = parse(&["get", "k", "--local", "--timeout", "2s"]);
    assert_eq!(cli.timeouts.timeout, Duration::from_secs(2));
    let (_, consistency) = op_of(cli.command.unwrap()).unwrap();
    assert_eq!(consistency, Consistency::Local);
    let cli = parse(&["history", "@bob", "--since", "4"]);
    let (op, _) = op_of(cli.command.unwrap()).unwrap();
    assert_eq!(
        op,
        Op::History {
            target: Target::User("bob".into()),
            since: 4
        }
    );
    assert!(parse(&[]).command.is_none());
}
