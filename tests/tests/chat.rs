//! Live delivery: a committed chat message's notice is published once on
//! `chan.<channel>` (by the leader), not once per replica, and carries no text. Also: `consistency = local` reads are answered by one
//! replica at once and say which, and `node health` reports a live node.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a panic in a test is a failed test

use std::process::Command;
use std::time::{Duration, Instant};

use e2e::{Client, Cluster, ClusterOptions, bin_dir, runtime};
use proto::live::LiveMessage;
use proto::{Consistency, Op, Reply};
use transport::{Kind, Mode, Options, Socket};

#[test]
fn a_chat_message_is_published_once() {
    let rt = runtime();
    let cluster = Cluster::start(ClusterOptions::default());
    let ids = cluster.ids();
    cluster.wait_for_leader(&ids);
    let client = rt.block_on(Client::connect(&cluster.endpoints.broker_frontend));
    rt.block_on(async {
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut session = client.session();
        let login = session
            .login("ann", "ann's password", deadline)
            .await
            .unwrap();
        assert_eq!(login.result, Ok(Reply::Done));
        let credential = session.credential.clone();
        for op in [Op::CreateChannel {
            channel: "general".into(),
        }] {
            let response = session
                .call(op, Consistency::Linearizable, deadline)
                .await
                .unwrap();
            assert_eq!(response.result, Ok(Reply::Done));
        }
        let feed = Socket::open(
            Kind::Sub,
            Mode::Connect,
            &cluster.endpoints.proxy_backend,
            Options::default().subscribe("chan.general"),
        )
        .await
        .unwrap();
        let (_keep, mut feed) = feed.split();
        let publish = |text: String| {
            let op = Op::Publish {
                user: "ann".into(),
                channel: "general".into(),
                text,
            };
            let mut session = client.session();
            session.credential = credential.clone();
            async move {
                let response = session.call(op, Consistency::Linearizable, deadline).await;
                match response.unwrap().result {
                    Ok(Reply::Posted { id }) => id,
                    other => panic!("{other:?}"),
                }
            }
        };
        // The subscription travels to the publishers asynchronously: post until one
        // message comes through.
        let mut warm = 0;
        loop {
            warm += 1;
            publish(format!("warm-up {warm}")).await;
            if tokio::time::timeout(Duration::from_millis(500), feed.recv())
                .await
                .is_ok()
            {
                break;
            }
            assert!(Instant::now() < deadline, "no live delivery at all");
        }
        let a = publish("A".into()).await;
        let b = publish("B".into()).await;
        let mut seen_a = 0;
        loop {
            let frames = tokio::time::timeout_at(deadline.into(), feed.recv())
                .await
                .expect("B was never delivered")
                .unwrap();
            assert_eq!(frames.len(), 2);
            assert_eq!(frames[0], b"chan.general");
            let notice = proto::decode::<LiveMessage>(&frames[1]).unwrap();
            assert!(
                notice.is_notice(),
                "a message in clear on the proxy: {notice:?}"
            );
            if notice.0.id == a {
                seen_a += 1;
            }
            if notice.0.id == b {
                break;
            }
        }
        assert_eq!(seen_a, 1, "message A's notice delivered {seen_a} times");

        // A local read: answered at once by one replica, which names itself.
        let mut session = client.session();
        session.put("local-key", "v", deadline).await.unwrap();
        loop {
            let op = Op::Get {
                key: "local-key".into(),
            };
            let response = session
                .call(op, Consistency::Local, deadline)
                .await
                .unwrap();
            assert!(response.node.starts_with("node-"));
            if response.result == Ok(Reply::Value("v".into())) {
                break;
            }
            assert!(Instant::now() < deadline, "local reads never caught up");
        }
    });

    // `node health` for the docker healthcheck.
    let addr = cluster.status_addr(1).to_string();
    let health = || {
        Command::new(bin_dir().join("node"))
            .args(["health", "--status-addr", &addr])
            .status()
            .unwrap()
    };
    assert!(health().success());
    let mut cluster = cluster;
    cluster.kill("node-1");
    assert!(!health().success());
}
