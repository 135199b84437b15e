//! The node's sockets, opened (or bound) before [`crate::run`], so that tests can pick
//! their ports.

use proto::topic;
use transport::{Kind, Mode, Options, Socket};

use crate::config::Config;
use crate::error::NodeError;

/// The node's sockets.
#[derive(Debug)]
pub struct Sockets {
    /// PUB, connected to the proxy's XSUB frontend.
    pub publisher: Socket,
    /// SUB, connected to the proxy's XPUB backend, subscribed to this node's topics.
    pub subscriber: Socket,
    /// DEALER (identity = node name), connected to the broker backend.
    pub broker: Socket,
    /// DEALER, connected to the reference service.
    pub reference: Socket,
    /// The status port.
    pub status: tokio::net::TcpListener,
}

impl Sockets {
    /// Opens every socket at the addresses of `config`.
    pub async fn open(config: &Config) -> Result<Sockets, NodeError> {
        let name = config.name();
        let mut sub_options = Options::default();
        // The peers' Paxos broadcasts are subscribed to by [`crate::run`], once the rank is
        // known (`topic::from_rank`): a node's own never come back.
        for prefix in [
            topic::REPL,
            topic::ELECTION,
            topic::CLOCK,
            topic::MEMBERSHIP,
        ] {
            sub_options = sub_options.subscribe(prefix);
        }
        sub_options = sub_options.subscribe(topic::to(&name));
        let publisher = Socket::open(
            Kind::Pub,
            Mode::Connect,
            &config.proxy_frontend,
            Options::default(),
        )
        .await?;
        let subscriber =
            Socket::open(Kind::Sub, Mode::Connect, &config.proxy_backend, sub_options).await?;
        let broker = Socket::open(
            Kind::Dealer,
            Mode::Connect,
            &config.broker,
            Options::default().identity(name.clone()),
        )
        .await?;
        let reference = Socket::open(
            Kind::Dealer,
            Mode::Connect,
            &config.reference,
            Options::default(),
        )
        .await?;
        let addr = config.status_addr();
        let status = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|source| NodeError::Status { addr, source })?;
        Ok(Sockets {
            publisher,
            subscriber,
            broker,
            reference,
            status,
        })
    }
}
