//! Chat logins: the node checks or hashes the password, then proposes what the store
//! applies (docs/architecture.md, "Chat users").
//!
//! ```text
//!   login{user, password} + credential
//!     ─▶ Logins::start ── locked? too many wrong passwords ─▶ unauthenticated, at once
//!          │  the store's applied state: a hash to check, or a name to register
//!          ▼
//!     Argon2id on a blocking thread (≤ MAX_LOGINS_IN_FLIGHT at a time)
//!          ▼
//!     Logins::finish ─▶ OpenSession / Register{hash}  (proposed like any command)
//!                  └──▶ wrong password: unauthenticated, counted against user and client
//! ```
//!
//! The password never leaves this node: the log holds the salted PHC string of a new
//! password, or only the name of a user whose password was checked here, and the
//! session key (SHA-256) of the credential the client drew. Hashing happens here,
//! before the proposal, so that applying stays deterministic.
//!
//! Wrong passwords are bounded per user and per client session: after
//! [`MAX_WRONG_PASSWORDS`] within [`FAILURE_WINDOW`], further logins of that user, or
//! from that session, are refused without hashing until the window ends. The counts are
//! this node's own (a cluster of n nodes allows n times as many), kept for at most
//! [`MAX_TRACKED_FAILURES`] users and as many sessions, the oldest forgotten first.
//! Argon2 is memory-hard (19 MiB per hash), so at most [`MAX_LOGINS_IN_FLIGHT`] run at
//! once; a login beyond that is answered `overloaded`.

use std::collections::HashMap;
use std::hash::Hash;
use std::time::{Duration, Instant};

use argon2::Argon2;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use proto::client::{Command, Op, Request};
use proto::{Error, ErrorCode};
use store::Password;
use tokio::sync::mpsc;

use crate::metrics::{LoginLabels, Metrics};
use crate::pending::Route;

/// Wrong passwords allowed per user, and per client session, within [`FAILURE_WINDOW`].
pub const MAX_WRONG_PASSWORDS: u32 = 5;
/// How long wrong passwords count; a locked user or session may try again after it.
pub const FAILURE_WINDOW: Duration = Duration::from_secs(60);
/// Most users (and, apart, client sessions) whose wrong passwords are remembered.
pub const MAX_TRACKED_FAILURES: usize = 4096;
/// Most Argon2 computations running at once (each takes 19 MiB and tens of ms of CPU).
pub const MAX_LOGINS_IN_FLIGHT: usize = 2;

/// A login whose password was checked or hashed on a blocking thread.
#[derive(Debug)]
pub(crate) struct Checked {
    route: Route,
    request: Request,
    user: String,
    outcome: Outcome,
}

#[derive(Debug)]
enum Outcome {
    /// The password matches the stored hash.
    Verified,
    /// A new password, hashed with a fresh salt (PHC string).
    Hashed(String),
    /// The password does not match.
    WrongPassword,
    /// The stored hash could not be read, or hashing failed.
    Failed(String),
}

/// A refusal to send back along `route`.
#[derive(Debug)]
pub(crate) struct Refusal {
    pub(crate) route: Route,
    pub(crate) seq: u64,
    pub(crate) error: Error,
}

/// Wrong passwords of one user or one client session.
#[derive(Debug, Clone, Copy)]
struct Strikes {
    count: u32,
    since: Instant,
}

/// Wrong passwords by user or by session, bounded.
#[derive(Debug)]
struct Failures<K> {
    by: HashMap<K, Strikes>,
}

impl<K: Hash + Eq + Clone> Failures<K> {
    fn new() -> Self {
        Failures { by: HashMap::new() }
    }

    /// How long `key` stays locked, if it is.
    fn locked(&self, key: &K, now: Instant) -> Option<Duration> {
        let strikes = self.by.get(key)?;
        let ends = strikes.since + FAILURE_WINDOW;
        (strikes.count >= MAX_WRONG_PASSWORDS && ends > now).then(|| ends - now)
    }

    fn strike(&mut self, key: &K, now: Instant) {
        if let Some(strikes) = self.by.get_mut(key) {
            if now.duration_since(strikes.since) >= FAILURE_WINDOW {
                *strikes = Strikes {
                    count: 1,
                    since: now,
                };
            } else {
                strikes.count = strikes.count.saturating_add(1);
            }
            return;
        }
        if self.by.len() >= MAX_TRACKED_FAILURES {
            self.by
                .retain(|_, s| now.duration_since(s.since) < FAILURE_WINDOW);
        }
        if self.by.len() >= MAX_TRACKED_FAILURES {
            let oldest = self
                .by
                .iter()
                .min_by_key(|(_, s)| s.since)
                .map(|(k, _)| k.clone());
            if let Some(oldest) = oldest {
                self.by.remove(&oldest);
            }
        }
        self.by.insert(
            key.clone(),
            Strikes {
                count: 1,
                since: now,
            },
        );
    }

    fn clear(&mut self, key: &K) {
        self.by.remove(key);
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.by.len()
    }
}

/// The logins in progress at this node and the wrong passwords it has seen.
#[derive(Debug)]
pub(crate) struct Logins {
    by_user: Failures<String>,
    by_client: Failures<u64>,
    in_flight: usize,
    done: mpsc::Sender<Checked>,
    metrics: Metrics,
}

/// Why a login cannot start; answered at once.
fn refuse(code: ErrorCode, message: impl Into<String>) -> Error {
    Error::new(code, message)
}

impl Logins {
    /// The room, and the receiver the loop waits on for checked logins.
    pub(crate) fn new(metrics: Metrics) -> (Logins, mpsc::Receiver<Checked>) {
        let (done, receiver) = mpsc::channel(MAX_LOGINS_IN_FLIGHT);
        let logins = Logins {
            by_user: Failures::new(),
            by_client: Failures::new(),
            in_flight: 0,
            done,
            metrics,
        };
        (logins, receiver)
    }

    fn count(&self, result: &'static str) {
        self.metrics
            .logins
            .get_or_create(&LoginLabels { result })
            .inc();
    }

    /// Takes a `login` request: refuses it at once, or starts checking (or hashing) its
    /// password against what `password` says the applied state holds.
    pub(crate) fn start<'s>(
        &mut self,
        route: Route,
        request: Request,
        password: impl FnOnce(&str) -> Password<'s>,
        now: Instant,
    ) -> Result<(), Refusal> {
        let seq = request.seq;
        let refused = |route, error| Err(Refusal { route, seq, error });
        let Op::Login {
            user,
            password: given,
        } = &request.op
        else {
            let error = refuse(ErrorCode::Internal, "not a login");
            return refused(route, error);
        };
        let user = user.clone();
        if given.is_empty() {
            let error = refuse(ErrorCode::BadRequest, "login needs a password");
            return refused(route, error);
        }
        if request.credential.is_none() {
            let error = refuse(
                ErrorCode::BadRequest,
                "login needs a credential: the random token the client drew for this session",
            );
            return refused(route, error);
        }
        let locked = self
            .by_user
            .locked(&user, now)
            .map(|left| (format!("user {user:?}"), left))
            .or_else(|| {
                self.by_client
                    .locked(&request.client_id, now)
                    .map(|left| ("this session".to_owned(), left))
            });
        if let Some((who, left)) = locked {
            self.count("locked");
            let error = refuse(
                ErrorCode::Unauthenticated,
                format!(
                    "too many wrong passwords for {who}: try again in {} s",
                    left.as_secs().max(1)
                ),
            );
            return refused(route, error);
        }
        if self.in_flight >= MAX_LOGINS_IN_FLIGHT {
            self.count("overloaded");
            let error = refuse(
                ErrorCode::Overloaded,
                format!("{MAX_LOGINS_IN_FLIGHT} logins are being checked here"),
            );
            return refused(route, error);
        }
        let stored = match password(&user) {
            Password::Hash(hash) => Some(hash.to_owned()),
            Password::Unset | Password::Unknown => None,
        };
        let given = given.clone();
        let done = self.done.clone();
        self.in_flight += 1;
        tokio::task::spawn_blocking(move || {
            let outcome = match stored {
                Some(stored) => verify(&given, &stored),
                None => hash(&given),
            };
            // The loop owns the receiver for as long as it runs; after it, no answer.
            let _ = done.blocking_send(Checked {
                route,
                request,
                user,
                outcome,
            });
        });
        Ok(())
    }

    /// A login came back from its blocking thread: the command to propose, or the
    /// refusal to send.
    pub(crate) fn finish(
        &mut self,
        checked: Checked,
        now: Instant,
    ) -> Result<(Route, Command), Refusal> {
        self.in_flight = self.in_flight.saturating_sub(1);
        let Checked {
            route,
            request,
            user,
            outcome,
        } = checked;
        let seq = request.seq;
        let op = match outcome {
            Outcome::Verified => {
                self.count("checked");
                self.by_user.clear(&user);
                self.by_client.clear(&request.client_id);
                Op::OpenSession { user }
            }
            Outcome::Hashed(password_hash) => {
                self.count("hashed");
                Op::Register {
                    user,
                    password_hash,
                }
            }
            Outcome::WrongPassword => {
                self.count("wrong_password");
                self.by_user.strike(&user, now);
                self.by_client.strike(&request.client_id, now);
                tracing::info!(%user, client_id = request.client_id, "wrong password");
                let error = refuse(
                    ErrorCode::Unauthenticated,
                    format!("wrong password for user {user:?}"),
                );
                return Err(Refusal { route, seq, error });
            }
            Outcome::Failed(reason) => {
                self.count("failed");
                tracing::error!(%user, %reason, "cannot check a password");
                let error = refuse(
                    ErrorCode::Internal,
                    format!("cannot check the password: {reason}"),
                );
                return Err(Refusal { route, seq, error });
            }
        };
        let login = Request { op, ..request };
        Ok((route, Command::from(&login)))
    }

    /// Users and sessions whose wrong passwords are remembered (for tests and status).
    #[cfg(test)]
    fn tracked(&self) -> (usize, usize) {
        (self.by_user.len(), self.by_client.len())
    }
}

/// Argon2id with the crate's defaults (m = 19 MiB, t = 2, p = 1: OWASP's advice).
fn argon2() -> Argon2<'static> {
    Argon2::default()
}

fn hash(password: &str) -> Outcome {
    let mut salt = [0u8; 16];
    rand::fill(&mut salt);
    let salt = match SaltString::encode_b64(&salt) {
        Ok(salt) => salt,
        Err(e) => return Outcome::Failed(e.to_string()),
    };
    match argon2().hash_password(password.as_bytes(), &salt) {
        Ok(hash) => Outcome::Hashed(hash.to_string()),
        Err(e) => Outcome::Failed(e.to_string()),
    }
}

fn verify(password: &str, stored: &str) -> Outcome {
    let parsed = match PasswordHash::new(stored) {
        Ok(parsed) => parsed,
        Err(e) => return Outcome::Failed(format!("the stored hash does not parse: {e}")),
    };
    match argon2().verify_password(password.as_bytes(), &parsed) {
        Ok(()) => Outcome::Verified,
        Err(argon2::password_hash::Error::Password) => Outcome::WrongPassword,
        Err(e) => Outcome::Failed(e.to_string()),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use proto::Consistency;

    fn route() -> Route {
        Route {
            broker: 0,
            frames: vec![b"client".to_vec()],
        }
    }

    fn login(client_id: u64, seq: u64, user: &str, password: &str) -> Request {
        Request {
            client_id,
            seq,
            op: Op::Login {
                user: user.into(),
                password: password.into(),
            },
            consistency: Consistency::Linearizable,
            credential: Some(proto::client::new_credential()),
        }
    }

    /// Starts a login against `stored` and waits for its outcome.
    async fn run(
        logins: &mut Logins,
        done: &mut mpsc::Receiver<Checked>,
        request: Request,
        stored: Password<'_>,
    ) -> Result<Command, Error> {
        let now = Instant::now();
        logins
            .start(route(), request, |_| stored, now)
            .map_err(|r| r.error)?;
        let checked = done.recv().await.unwrap();
        logins
            .finish(checked, now)
            .map(|(_, c)| c)
            .map_err(|r| r.error)
    }

    #[tokio::test]
    async fn a_new_user_is_registered_with_a_salted_hash_and_never_the_password() {
        let (mut logins, mut done) = Logins::new(Metrics::new());
        let request = login(1, 1, "ann", "correct horse");
        let key = proto::client::session_key(request.credential.as_deref().unwrap());
        let command = run(&mut logins, &mut done, request, Password::Unknown)
            .await
            .unwrap();
        let Op::Register {
            user,
            password_hash,
        } = &command.op
        else {
            panic!("{command:?}")
        };
        assert_eq!(user, "ann");
        assert!(password_hash.starts_with("$argon2id$"), "{password_hash}");
        assert_eq!(command.session.as_deref(), Some(key.as_str()));
        let encoded = rmp_serde::to_vec_named(&command).unwrap();
        let text = String::from_utf8_lossy(&encoded);
        assert!(
            !text.contains("correct horse"),
            "the password reached the log"
        );
        // Two registrations of one password differ: the salt is fresh.
        let again = run(
            &mut logins,
            &mut done,
            login(1, 2, "bob", "correct horse"),
            Password::Unknown,
        )
        .await
        .unwrap();
        assert_ne!(again.op, command.op);
        // And the hash checks the password.
        let ok = run(
            &mut logins,
            &mut done,
            login(2, 1, "ann", "correct horse"),
            Password::Hash(password_hash),
        )
        .await
        .unwrap();
        assert_eq!(ok.op, Op::OpenSession { user: "ann".into() });
    }

    #[tokio::test]
    async fn wrong_passwords_lock_the_user_and_the_session_for_a_while() {
        let (mut logins, mut done) = Logins::new(Metrics::new());
        let Outcome::Hashed(stored) = hash("right") else {
            panic!("hashing failed")
        };
        let stored = Password::Hash(&stored);
        for seq in 1..=u64::from(MAX_WRONG_PASSWORDS) {
            let error = run(
                &mut logins,
                &mut done,
                login(7, seq, "ann", "wrong"),
                stored,
            )
            .await
            .unwrap_err();
            assert_eq!(error.code, ErrorCode::Unauthenticated);
            assert!(error.message.contains("wrong password"), "{error}");
        }
        // Now even the right password is refused, at once, for ann from anywhere...
        let error = run(&mut logins, &mut done, login(8, 1, "ann", "right"), stored)
            .await
            .unwrap_err();
        assert!(
            error.message.contains("too many wrong passwords for user"),
            "{error}"
        );
        // ...and for session 7 whatever the user.
        let error = run(
            &mut logins,
            &mut done,
            login(7, 9, "bob", "x"),
            Password::Unknown,
        )
        .await
        .unwrap_err();
        assert!(error.message.contains("this session"), "{error}");
        // Another session logs in as another user.
        assert!(
            run(
                &mut logins,
                &mut done,
                login(9, 1, "bob", "x"),
                Password::Unknown
            )
            .await
            .is_ok()
        );
        // Once the window has passed, the right password works again.
        let later = Instant::now() + FAILURE_WINDOW;
        assert!(logins.by_user.locked(&"ann".to_owned(), later).is_none());
    }

    #[test]
    fn remembered_failures_are_bounded() {
        let mut failures = Failures::<u64>::new();
        let now = Instant::now();
        for key in 0..(MAX_TRACKED_FAILURES as u64 * 2) {
            failures.strike(&key, now + Duration::from_millis(key));
        }
        assert_eq!(failures.len(), MAX_TRACKED_FAILURES);
        // The oldest were forgotten, the newest kept.
        assert!(!failures.by.contains_key(&0));
        assert!(
            failures
                .by
                .contains_key(&(MAX_TRACKED_FAILURES as u64 * 2 - 1))
        );
    }

    #[tokio::test]
    async fn requests_without_password_or_credential_are_refused_before_hashing() {
        let (mut logins, _done) = Logins::new(Metrics::new());
        let now = Instant::now();
        let empty = login(1, 1, "ann", "");
        let error = logins
            .start(route(), empty, |_| Password::Unknown, now)
            .unwrap_err();
        assert_eq!(error.error.code, ErrorCode::BadRequest);
        let mut no_credential = login(1, 2, "ann", "pw");
        no_credential.credential = None;
        let error = logins
            .start(route(), no_credential, |_| Password::Unknown, now)
            .unwrap_err();
        assert!(
            error.error.message.contains("credential"),
            "{}",
            error.error
        );
        assert_eq!(logins.tracked(), (0, 0));
    }
}
