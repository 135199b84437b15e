//! The node's sockets, opened (or bound) before [`crate::run`], so that tests can pick
//! their ports.

use proto::topic;
use transport::{Kind, Mode, Options, Receiver, Sender, Socket};

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

/// The halves of the sockets the node's rooms send on and its loop receives from. A
/// socket closes when both its halves are dropped, so each lives as long as the half in
/// use: a PUB socket receives nothing and its receiving half is dropped at once.
#[derive(Debug)]
pub(crate) struct Links {
    /// One sender per proxy frontend, with its endpoint.
    pub(crate) publishers: Vec<(String, Sender)>,
    /// The subscriber's sending half: it subscribes to the peers' topics once the rank
    /// is known.
    pub(crate) subscriptions: Sender,
    /// The subscriber's receiving half: every peer's broadcast arrives here.
    pub(crate) subscriber: Receiver,
    /// One sender per broker backend, in `--broker` order.
    pub(crate) broker_tx: Vec<Sender>,
    /// One receiver per broker backend, in the same order.
    pub(crate) broker_rx: Vec<Receiver>,
    /// To the reference service.
    pub(crate) reference_tx: Sender,
    /// From the reference service.
    pub(crate) reference_rx: Receiver,
}

impl Sockets {
    /// Splits every socket into its halves; the status port goes to the HTTP server.
    pub(crate) fn split(self) -> (Links, tokio::net::TcpListener) {
        let publishers = self
            .publishers
            .into_iter()
            .map(|socket| {
                let endpoint = socket.endpoint().to_owned();
                (endpoint, socket.split().0)
            })
            .collect();
        let (subscriptions, subscriber) = self.subscriber.split();
        let (broker_tx, broker_rx) = self.brokers.into_iter().map(Socket::split).unzip();
        let (reference_tx, reference_rx) = self.reference.split();
        let links = Links {
            publishers,
            subscriptions,
            subscriber,
            broker_tx,
            broker_rx,
            reference_tx,
            reference_rx,
        };
        (links, self.status)
    }
}
