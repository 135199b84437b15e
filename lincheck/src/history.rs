//! The history format: one JSON [`Operation`] per line.

use std::io::{BufRead, Write};

use serde::de::Deserializer;
use serde::ser::{SerializeMap, Serializer};
use serde::{Deserialize, Serialize};
use thiserror::Error;

/// Longest accepted history line: a value is at most 64 KiB, so a line is far shorter;
/// anything longer is not a history.
pub const MAX_LINE_BYTES: usize = 1024 * 1024;

/// What an operation does to its key's register.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OpKind {
    /// Set the value.
    Put,
    /// Read the value.
    Get,
    /// Compare-and-set.
    Cas,
    /// Clear the value.
    Delete,
}

/// How an operation ended, as far as the client knows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    /// It took effect, once, between call and return, with the recorded output.
    Ok,
    /// It certainly took no effect.
    Fail,
    /// It may have taken effect at any instant after its call, or never.
    Unknown,
}

/// The observed result of an operation.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Output {
    /// What a `get` returned: the value, or `null` when the key was absent.
    Value(Option<String>),
    /// Whether a `cas` took effect.
    Bool(bool),
}

/// One operation of a history.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Operation {
    /// The client (process) that issued it.
    pub client: u64,
    /// What it does.
    pub op: OpKind,
    /// The key.
    pub key: String,
    /// The value written by `put`, or the new value of `cas`.
    #[serde(default)]
    pub value: Option<String>,
    /// The value `cas` expects (`None`: the key must be absent).
    #[serde(default)]
    pub expected: Option<String>,
    /// The observed result: `get` and `cas` with outcome `ok`; absent otherwise. For a
    /// `get`, a JSON `null` is `Some(Output::Value(None))` (the key was absent).
    #[serde(default, deserialize_with = "present_output")]
    pub output: Option<Output>,
    /// How it ended.
    pub outcome: Outcome,
    /// When it was called (nanoseconds of a clock shared by all clients).
    pub call: u64,
    /// When it returned; absent when the outcome is `unknown`.
    #[serde(rename = "return", default)]
    pub return_: Option<u64>,
}

/// A present `output` field is `Some`, even when it is `null` (a get of an absent key);
/// only a missing field is `None`.
fn present_output<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<Output>, D::Error> {
    Output::deserialize(deserializer).map(Some)
}

/// Written in the documented field order; `value`, `output` and `return` only when
/// present, `expected` always for a `cas` (`null` = must be absent) and never otherwise.
impl Serialize for Operation {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(None)?;
        map.serialize_entry("client", &self.client)?;
        map.serialize_entry("op", &self.op)?;
        map.serialize_entry("key", &self.key)?;
        if let Some(value) = &self.value {
            map.serialize_entry("value", value)?;
        }
        if self.op == OpKind::Cas || self.expected.is_some() {
            map.serialize_entry("expected", &self.expected)?;
        }
        if let Some(output) = &self.output {
            map.serialize_entry("output", output)?;
        }
        map.serialize_entry("outcome", &self.outcome)?;
        map.serialize_entry("call", &self.call)?;
        if let Some(return_) = &self.return_ {
            map.serialize_entry("return", return_)?;
        }
        map.end()
    }
}

impl Operation {
    /// Checks the fields that the outcome and kind require: an `ok` operation has a
    /// `return` not before its `call`; an `ok` `get` has a value output and an `ok` `cas`
    /// a boolean one; `put` and `cas` have a `value`.
    pub fn validate(&self) -> Result<(), String> {
        if matches!(self.op, OpKind::Put | OpKind::Cas) && self.value.is_none() {
            return Err(format!("a {} needs a value", self.op_name()));
        }
        if self.outcome == Outcome::Ok {
            match self.return_ {
                None => return Err("an ok operation needs a return time".to_owned()),
                Some(return_) if return_ < self.call => {
                    return Err(format!(
                        "returns at {return_}, before its call at {}",
                        self.call
                    ));
                }
                Some(_) => {}
            }
            match (self.op, &self.output) {
                (OpKind::Get, Some(Output::Value(_))) | (OpKind::Cas, Some(Output::Bool(_))) => {}
                (OpKind::Get, _) => return Err("an ok get needs a value or null output".to_owned()),
                (OpKind::Cas, _) => return Err("an ok cas needs a true or false output".to_owned()),
                (OpKind::Put | OpKind::Delete, _) => {}
            }
        }
        Ok(())
    }

    /// `"put"`, `"get"`, `"cas"` or `"delete"`.
    pub fn op_name(&self) -> &'static str {
        match self.op {
            OpKind::Put => "put",
            OpKind::Get => "get",
            OpKind::Cas => "cas",
            OpKind::Delete => "delete",
        }
    }
}

/// A history that cannot be read.
#[derive(Debug, Error)]
pub enum ParseError {
    /// A line is not a valid operation.
    #[error("history line {line}: {message}")]
    Line {
        /// 1-based line number.
        line: usize,
        /// What is wrong with it.
        message: String,
    },
    /// Reading failed.
    #[error("reading the history: {0}")]
    Io(#[from] std::io::Error),
}

/// Reads a history: one JSON operation per line; blank lines are skipped. Every operation
/// is checked with [`Operation::validate`]. The error names the first bad line.
pub fn parse_history(mut reader: impl BufRead) -> Result<Vec<Operation>, ParseError> {
    let mut operations = Vec::new();
    let mut buffer = Vec::new();
    let mut line = 0;
    loop {
        line += 1;
        buffer.clear();
        let limit = (MAX_LINE_BYTES + 1) as u64;
        let read = std::io::Read::take(&mut reader, limit).read_until(b'\n', &mut buffer)?;
        if read == 0 {
            return Ok(operations);
        }
        if buffer.len() > MAX_LINE_BYTES {
            return Err(ParseError::Line {
                line,
                message: format!("longer than {MAX_LINE_BYTES} bytes"),
            });
        }
        if buffer.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let operation: Operation =
            serde_json::from_slice(&buffer).map_err(|error| ParseError::Line {
                line,
                message: error.to_string(),
            })?;
        operation
            .validate()
            .map_err(|message| ParseError::Line { line, message })?;
        operations.push(operation);
    }
}

/// Writes one operation as one JSON line.
pub fn write_operation(w: &mut impl Write, op: &Operation) -> std::io::Result<()> {
    serde_json::to_writer(&mut *w, op)?;
    w.write_all(b"\n")
}
