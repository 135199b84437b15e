//! The node's sockets, opened (or bound) before [`crate::run`], so that tests can pick
//! their ports.

use proto::topic;
use transport::{Kind, Mode, Options, Socket};

use crate::config::Config;
use crate::error::NodeError;

/// The node's sockets.
#[derive(Debug)]
pub struct Sockets {
    /// One PUB per proxy (its XSUB frontend), in `--proxy-frontend` order: the node
    /// publishes through one at a time ([`crate::peers`]).
    pub publishers: Vec<Socket>,
    /// One SUB connected to every proxy's XPUB backend, subscribed to this node's topics.
    pub subscriber: Socket,
    /// One DEALER per broker backend (identity = node name), in `--broker` order.
    pub brokers: Vec<Socket>,
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
        // known (`topic::from_rank`): a node's own never come back. Its own proxy probes
        // do: they tell it whether the proxy it publishes through still forwards.
        for prefix in [
            topic::REPL,
            topic::ELECTION,
            topic::CLOCK,
            topic::MEMBERSHIP,
        ] {
            sub_options = sub_options.subscribe(prefix);
        }
        sub_options = sub_options
            .subscribe(topic::to(&name))
            .subscribe(topic::probe(&name));
        let mut publishers = Vec::new();
        for endpoint in transport::endpoints(&config.proxy_frontend) {
            publishers
                .push(Socket::open(Kind::Pub, Mode::Connect, endpoint, Options::default()).await?);
        }
        let subscriber =
            Socket::open(Kind::Sub, Mode::Connect, &config.proxy_backend, sub_options).await?;
        let mut brokers = Vec::new();
        for endpoint in transport::endpoints(&config.broker) {
            // No identity: the broker's ROUTER names the connection, and routes to it once
            // it answered a challenge (a name anyone could claim would be taken over).
            let options = Options::default();
            brokers.push(Socket::open(Kind::Dealer, Mode::Connect, endpoint, options).await?);
        }
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
            publishers,
            subscriber,
            brokers,
            reference,
            status,
        })
    }
}
