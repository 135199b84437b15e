//! The simulator's clients: requests to random replicas, retries with the same
//! `(client_id, seq)` after a timeout, and the history they record.

use super::*;

impl Sim {
    pub(super) fn client_start(&mut self, client: usize) {
        let c = &mut self.clients[client];
        if c.pending.is_some() || c.done {
            return;
        }
        if c.issued == self.config.ops_per_client {
            c.done = true;
            return;
        }
        c.issued += 1;
        let client_id = c.client_id;
        let seq = c.issued as u64;
        let key = format!("k{}", self.rng.random_range(0..self.config.keys));
        let value = format!("c{client_id}s{seq}");
        let op = match self.rng.random_range(0..20) {
            0..=6 => Op::Put { key, value },
            7..=13 => Op::Get { key },
            14..=17 => {
                let known = self.written.get(&key).cloned().unwrap_or_default();
                let expected = if known.is_empty() || self.rng.random_bool(0.2) {
                    None
                } else {
                    // Mostly the latest value written, so that some CAS succeed.
                    let i = if self.rng.random_bool(0.7) {
                        known.len() - 1
                    } else {
                        self.rng.random_range(0..known.len())
                    };
                    Some(known[i].clone())
                };
                Op::Cas {
                    key,
                    expected,
                    new: value,
                }
            }
            _ => Op::Delete { key },
        };
        if let Op::Put { key, value }
        | Op::Cas {
            key, new: value, ..
        } = &op
        {
            self.written
                .entry(key.clone())
                .or_default()
                .push(value.clone());
        }
        let max_attempts = self.rng.random_range(2..=5);
        self.clients[client].pending = Some(Pending {
            seq,
            op,
            call: self.now,
            attempt: 0,
            max_attempts,
        });
        self.client_send(client);
    }

    pub(super) fn client_send(&mut self, client: usize) {
        let client_id = self.clients[client].client_id;
        let Some(p) = self.clients[client].pending.as_mut() else {
            return;
        };
        p.attempt += 1;
        let command = Command {
            client_id,
            seq: p.seq,
            op: p.op.clone(),
            session: None,
        };
        let (seq, attempt) = (p.seq, p.attempt);
        let node = self.rng.random_range(0..self.config.replicas);
        if !self.rng.random_bool(self.loss) {
            let delay = self.rng.random_range(1..=self.max_delay);
            self.schedule(
                delay,
                Event::ClientArrive {
                    node,
                    client,
                    command,
                },
            );
        }
        self.schedule(
            CLIENT_TIMEOUT_UNITS,
            Event::ClientTimeout {
                client,
                seq,
                attempt,
            },
        );
    }

    pub(super) fn client_arrive(
        &mut self,
        node: usize,
        client: usize,
        command: Command,
    ) -> Result<(), String> {
        let bug = self.config.bug;
        let n = &mut self.nodes[node];
        let Some(replica) = n.replica.as_mut() else {
            return Ok(());
        };
        if bug == Some(SimBug::StaleLeaderRead)
            && matches!(command.op, Op::Get { .. })
            && replica.status().role == Role::Leader
        {
            let result = n.store.read_local(&command.op, command.session.as_deref());
            self.reply_to_client(client, command.seq, result);
            return Ok(());
        }
        // Linearizable reads take the read-index path, without a log slot — but some
        // (`SimConfig::log_reads`) go through the log, as a read-only command the core still takes: both
        // paths must be linearizable together, and log reads make more slots for the
        // durability bugs to show in.
        let through_log =
            self.config.log_reads >= 1.0 || self.rng.random_bool(self.config.log_reads);
        if matches!(command.op, Op::Get { .. }) && !through_log {
            self.next_read += 1;
            let id = self.next_read;
            return match replica.read(id) {
                Ok(()) => {
                    n.reads.insert(id, (client, command.seq, command.op));
                    self.process_ready(node)
                }
                Err(error) => {
                    self.reply_to_client(client, command.seq, Err(error));
                    Ok(())
                }
            };
        }
        let key = (command.client_id, command.seq);
        match replica.propose(command) {
            Ok(()) => {
                n.waiting.insert(key, client);
                self.process_ready(node)
            }
            Err(error) => {
                self.reply_to_client(client, key.1, Err(error));
                Ok(())
            }
        }
    }

    pub(super) fn reply_to_client(
        &mut self,
        client: usize,
        seq: u64,
        result: Result<Reply, Error>,
    ) {
        if self.rng.random_bool(self.loss) {
            return;
        }
        let delay = self.rng.random_range(1..=self.max_delay);
        self.schedule(
            delay,
            Event::ClientReply {
                client,
                seq,
                result,
            },
        );
    }

    pub(super) fn client_reply(
        &mut self,
        client: usize,
        seq: u64,
        result: Result<Reply, Error>,
    ) -> Result<(), String> {
        let c = &mut self.clients[client];
        if c.pending.as_ref().is_none_or(|p| p.seq != seq) {
            return Ok(());
        }
        if let Err(e) = &result
            && e.code.certainly_not_applied()
        {
            // Not an answer: the command never reached the log from there. The timeout
            // retries it.
            return Ok(());
        }
        let Some(p) = c.pending.take() else {
            return Ok(());
        };
        let client_id = c.client_id;
        let unexpected = |result: &Result<Reply, Error>| {
            format!(
                "client {client_id} seq {seq}: unexpected answer {result:?} to {:?}",
                p.op
            )
        };
        let (kind, key, value, expected, output) = match &p.op {
            Op::Put { key, value } => {
                if result.is_err() {
                    return Err(unexpected(&result));
                }
                (OpKind::Put, key, Some(value.clone()), None, None)
            }
            Op::Delete { key } => {
                if result.is_err() {
                    return Err(unexpected(&result));
                }
                (OpKind::Delete, key, None, None, None)
            }
            Op::Get { key } => {
                let output = match &result {
                    Ok(Reply::Value(v)) => Some(v.clone()),
                    Err(e) if e.code == ErrorCode::NotFound => None,
                    _ => return Err(unexpected(&result)),
                };
                (OpKind::Get, key, None, None, Some(Output::Value(output)))
            }
            Op::Cas { key, expected, new } => {
                let swapped = match &result {
                    Ok(_) => true,
                    Err(e) if e.code == ErrorCode::CasMismatch => false,
                    _ => return Err(unexpected(&result)),
                };
                (
                    OpKind::Cas,
                    key,
                    Some(new.clone()),
                    expected.clone(),
                    Some(Output::Bool(swapped)),
                )
            }
            _ => return Err(unexpected(&result)),
        };
        self.history.push(Operation {
            client: client_id,
            op: kind,
            key: key.clone(),
            value,
            expected,
            output,
            outcome: Outcome::Ok,
            call: p.call,
            return_: Some(self.now),
        });
        let think = self.rng.random_range(0..50);
        self.schedule(think, Event::ClientStart(client));
        Ok(())
    }

    pub(super) fn client_timeout(&mut self, client: usize, seq: u64, attempt: u32) {
        let healed = self.healed;
        let c = &mut self.clients[client];
        let Some(p) = c.pending.as_ref() else {
            return;
        };
        if p.seq != seq || p.attempt != attempt {
            return;
        }
        if !healed && p.attempt >= p.max_attempts {
            // Give up: the operation may or may not take effect, now or later.
            let Some(p) = c.pending.take() else {
                return;
            };
            let (kind, key, value, expected) = match p.op {
                Op::Put { key, value } => (OpKind::Put, key, Some(value), None),
                Op::Get { key } => (OpKind::Get, key, None, None),
                Op::Delete { key } => (OpKind::Delete, key, None, None),
                Op::Cas { key, expected, new } => (OpKind::Cas, key, Some(new), expected),
                _ => return,
            };
            self.history.push(Operation {
                client: c.client_id,
                op: kind,
                key,
                value,
                expected,
                output: None,
                outcome: Outcome::Unknown,
                call: p.call,
                return_: None,
            });
            self.schedule(0, Event::ClientStart(client));
            return;
        }
        self.client_send(client);
    }
}
