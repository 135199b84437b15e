//! Chat users prove who they are, on a live cluster: a login registers a name with a
//! password, a session credential is what a request speaks with, and nobody can post,
//! send private messages or read an inbox as someone else. Wrong passwords are bounded
//! per user and per session, over-long names and passwords are refused by their limits,
//! and the proxies carry only a notice of a private message, never its text.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a panic in a test is a failed test

use std::time::{Duration, Instant};

use e2e::{Client, Cluster, ClusterOptions, Session, runtime};
use proto::client::Target;
use proto::live::LiveMessage;
use proto::{Consistency, ErrorCode, Op, Reply, Response};
use transport::{Kind, Mode, Options, Socket};

fn code(response: &Response) -> Option<ErrorCode> {
    response.result.as_ref().err().map(|e| e.code)
}

async fn call(session: &mut Session, op: Op, deadline: Instant) -> Response {
    session
        .call(op, Consistency::Linearizable, deadline)
        .await
        .unwrap()
}

fn publish(user: &str, text: &str) -> Op {
    Op::Publish {
        user: user.into(),
        channel: "general".into(),
        text: text.into(),
    }
}

fn dm(from: &str, to: &str, text: &str) -> Op {
    Op::PrivateMessage {
        from: from.into(),
        to: to.into(),
        text: text.into(),
    }
}

fn inbox(user: &str) -> Op {
    Op::History {
        target: Target::User(user.into()),
        since: 0,
    }
}

#[test]
fn chat_users_cannot_speak_or_read_as_one_another() {
    let rt = runtime();
    let cluster = Cluster::start(ClusterOptions::default());
    cluster.wait_for_leader(&cluster.ids());
    let client = rt.block_on(Client::connect(&cluster.endpoints.broker_frontend));
    rt.block_on(async {
        let deadline = Instant::now() + Duration::from_secs(90);
        let mut ann = client.session();
        let mut bob = client.session();
        let mut eve = client.session();
        // First logins register; the same call opens a session.
        assert_eq!(
            ann.login("ann", "ann-pw", deadline).await.unwrap().result,
            Ok(Reply::Done)
        );
        assert_eq!(
            bob.login("bob", "bob-pw", deadline).await.unwrap().result,
            Ok(Reply::Done)
        );
        assert_eq!(
            eve.login("eve", "eve-pw", deadline).await.unwrap().result,
            Ok(Reply::Done)
        );
        let create = Op::CreateChannel {
            channel: "general".into(),
        };
        assert_eq!(
            call(&mut ann, create, deadline).await.result,
            Ok(Reply::Done)
        );
        assert!(matches!(
            call(&mut ann, publish("ann", "hello"), deadline)
                .await
                .result,
            Ok(Reply::Posted { .. })
        ));

        // Eve, logged in as herself, cannot post, send or read as ann or bob.
        for op in [
            publish("ann", "forged"),
            dm("bob", "ann", "forged"),
            Op::Subscribe {
                user: "bob".into(),
                channel: "general".into(),
            },
            inbox("ann"),
        ] {
            let response = call(&mut eve, op.clone(), deadline).await;
            assert_eq!(
                code(&response),
                Some(ErrorCode::Unauthenticated),
                "{op:?}: {response:?}"
            );
        }
        // Nor can a session without a login, nor one with a credential no login opened.
        let mut nobody = client.session();
        let response = call(&mut nobody, publish("ann", "forged"), deadline).await;
        assert_eq!(code(&response), Some(ErrorCode::Unauthenticated));
        nobody.credential = Some(proto::client::new_credential());
        let response = call(&mut nobody, inbox("bob"), deadline).await;
        assert_eq!(code(&response), Some(ErrorCode::Unauthenticated));
        // Nor can a client send what only a node proposes.
        let internal = Op::OpenSession { user: "ann".into() };
        let response = call(&mut eve, internal, deadline).await;
        assert_eq!(code(&response), Some(ErrorCode::BadRequest), "{response:?}");

        // Ann's private message reaches bob, and only bob reads it.
        let feed = Socket::open(
            Kind::Sub,
            Mode::Connect,
            &cluster.endpoints.proxy_backend,
            Options::default().subscribe("user.bob"),
        )
        .await
        .unwrap();
        let (_keep, mut feed) = feed.split();
        let mut notice = None;
        for n in 0.. {
            let text = format!("for bob's eyes only {n}");
            let sent = call(&mut ann, dm("ann", "bob", &text), deadline).await;
            assert!(matches!(sent.result, Ok(Reply::Posted { .. })), "{sent:?}");
            if let Ok(Some(frames)) =
                tokio::time::timeout(Duration::from_millis(500), feed.recv()).await
            {
                notice = Some(frames);
                break;
            }
            assert!(Instant::now() < deadline, "no notice of a private message");
        }
        let frames = notice.unwrap();
        assert_eq!(frames[0], b"user.bob");
        let delivered = proto::decode::<LiveMessage>(&frames[1]).unwrap();
        assert!(delivered.is_notice(), "{delivered:?}");
        assert!(!String::from_utf8_lossy(&frames[1]).contains("eyes only"));
        let read = call(&mut bob, inbox("bob"), deadline).await;
        let Ok(Reply::Messages(messages)) = read.result else {
            panic!("{read:?}")
        };
        assert!(
            messages
                .iter()
                .any(|m| m.id == delivered.0.id && m.from == "ann")
        );
        assert!(
            messages
                .iter()
                .all(|m| m.text.starts_with("for bob's eyes only"))
        );

        // A second login with the right password opens another session for ann.
        let mut ann_again = client.session();
        let again = ann_again.login("ann", "ann-pw", deadline).await.unwrap();
        assert_eq!(again.result, Ok(Reply::Done));
        assert!(matches!(
            call(&mut ann_again, publish("ann", "me again"), deadline)
                .await
                .result,
            Ok(Reply::Posted { .. })
        ));

        // Over-long names and passwords are refused by their limits.
        let long_password = "p".repeat(proto::limits::MAX_PASSWORD_BYTES + 1);
        let response = eve.login("eve", &long_password, deadline).await.unwrap();
        assert_eq!(code(&response), Some(ErrorCode::TooLarge), "{response:?}");
        let long_name = "n".repeat(proto::limits::MAX_NAME_BYTES + 1);
        let response = eve.login(&long_name, "pw", deadline).await.unwrap();
        assert_eq!(code(&response), Some(ErrorCode::TooLarge), "{response:?}");

        // Wrong passwords: refused, then the session is locked out. Each node counts its
        // own, and the brokers spread the attempts over all of them.
        let mut guesser = client.session();
        let most = 5 * cluster.ids().len() + 1;
        let mut locked_after = None;
        for attempt in 1..=most {
            let response = guesser
                .login("ann", &format!("guess-{attempt}"), deadline)
                .await
                .unwrap();
            let error = response.result.as_ref().unwrap_err();
            assert_eq!(error.code, ErrorCode::Unauthenticated, "{error:?}");
            if error.message.contains("too many wrong passwords") {
                locked_after = Some(attempt);
                break;
            }
            assert!(error.message.contains("wrong password"), "{error:?}");
        }
        let locked_after = locked_after.expect("wrong passwords were never bounded");
        assert!(locked_after > 5, "locked after {locked_after} attempts");
        // Meanwhile ann's own sessions work, and the cluster still writes.
        assert!(matches!(
            call(&mut ann, publish("ann", "still here"), deadline)
                .await
                .result,
            Ok(Reply::Posted { .. })
        ));
        let put = Op::Put {
            key: "after-the-attack".into(),
            value: "v".into(),
        };
        assert_eq!(call(&mut eve, put, deadline).await.result, Ok(Reply::Done));
    });
    // Every replica applied the same; no password reached a WAL or store.json.
    cluster.wait_converged(&cluster.ids(), 1);
    for id in cluster.ids() {
        for file in files_under(&cluster.node_dir(id)) {
            let bytes = std::fs::read(&file).unwrap_or_default();
            let text = String::from_utf8_lossy(&bytes);
            assert!(
                !text.contains("ann-pw") && !text.contains("bob-pw"),
                "a password in clear in {}",
                file.display()
            );
        }
    }
}

fn files_under(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            files.extend(files_under(&path));
        } else {
            files.push(path);
        }
    }
    files
}
