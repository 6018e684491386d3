//! The export file: JSON Lines, one object per line, each with a `kind`. A header comes first,
//! then the memory, its sessions and events (grouped by actor and session, oldest first), its
//! records (each with its earlier versions and the records it superseded), and a trailer with
//! the counts, so that a truncated file is recognised instead of half-imported. Messages are
//! in the standard protobuf JSON mapping of memd.v1 (lowerCamelCase, RFC 3339 times), readable
//! without memd.

use anyhow::{Context, bail};
use memd_client::pb;
use memd_proto::json::{from_json, to_json};
use serde_json::{Value, json};
use std::io::BufRead;

/// The `format` of the header line.
pub const FORMAT: &str = "memd-export";
/// The file layout's version; an importer refuses a newer one.
pub const VERSION: u64 = 1;

/// How many of each kind a file holds (the trailer's contents).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Counts {
    pub sessions: u64,
    pub events: u64,
    pub records: u64,
}

/// One line of an export file.
#[derive(Debug, Clone, PartialEq)]
pub enum Line {
    Header {
        memory_id: String,
        memd_version: String,
    },
    Memory(Box<pb::Memory>),
    Session(pb::Session),
    Event(Box<pb::Event>),
    /// A live record and its history (earlier versions and superseded records, newest first).
    Record {
        record: Box<pb::MemoryRecord>,
        history: Vec<pb::MemoryRecord>,
    },
    End(Counts),
}

impl Line {
    /// The line as one JSON object.
    pub fn to_json(&self) -> Value {
        match self {
            Line::Header {
                memory_id,
                memd_version,
            } => json!({
                "kind": "header",
                "format": FORMAT,
                "version": VERSION,
                "memdVersion": memd_version,
                "memoryId": memory_id,
            }),
            Line::Memory(memory) => json!({"kind": "memory", "memory": to_json(memory.as_ref())}),
            Line::Session(session) => json!({"kind": "session", "session": to_json(session)}),
            Line::Event(event) => json!({"kind": "event", "event": to_json(event.as_ref())}),
            Line::Record { record, history } => json!({
                "kind": "record",
                "record": to_json(record.as_ref()),
                "history": history.iter().map(to_json).collect::<Vec<_>>(),
            }),
            Line::End(counts) => {
                let mut value = serde_json::to_value(counts).expect("plain counts");
                value["kind"] = json!("end");
                value
            }
        }
    }

    /// Reads one line back; errors say what is wrong with it.
    pub fn parse(text: &str) -> anyhow::Result<Line> {
        let mut value: Value = serde_json::from_str(text).context("not a JSON object")?;
        let kind = value["kind"].as_str().unwrap_or_default().to_owned();
        let mut take = |field: &str| -> anyhow::Result<Value> {
            match value.get_mut(field).map(Value::take) {
                Some(v) if !v.is_null() => Ok(v),
                _ => bail!("a {kind} line without \"{field}\""),
            }
        };
        Ok(match kind.as_str() {
            "header" => {
                if take("format")? != FORMAT {
                    bail!("not a memd export (format is not \"{FORMAT}\")");
                }
                let version = take("version")?.as_u64().unwrap_or(u64::MAX);
                if version > VERSION {
                    bail!(
                        "export format version {version} is newer than this memctl reads ({VERSION}); upgrade memctl"
                    );
                }
                Line::Header {
                    memory_id: string(take("memoryId")?)?,
                    memd_version: string(take("memdVersion")?)?,
                }
            }
            "memory" => Line::Memory(Box::new(from_json(take("memory")?)?)),
            "session" => Line::Session(from_json(take("session")?)?),
            "event" => Line::Event(Box::new(from_json(take("event")?)?)),
            "record" => {
                let record = Box::new(from_json(take("record")?)?);
                let history = match take("history")? {
                    Value::Array(items) => items
                        .into_iter()
                        .map(from_json)
                        .collect::<Result<Vec<_>, _>>()?,
                    _ => bail!("a record line whose \"history\" is not a list"),
                };
                Line::Record { record, history }
            }
            "end" => Line::End(serde_json::from_value(value).context("an end line")?),
            "" => bail!("a line without \"kind\""),
            other => bail!("unknown kind \"{other}\""),
        })
    }
}

fn string(value: Value) -> anyhow::Result<String> {
    match value {
        Value::String(s) => Ok(s),
        other => bail!("expected a string, found {other}"),
    }
}

/// Reads a whole file through `each`, checking its shape: a header, then the memory, then
/// sessions, events and records, then a trailer whose counts match. Errors name the line.
pub fn read(
    input: impl BufRead,
    mut each: impl FnMut(Line) -> anyhow::Result<()>,
) -> anyhow::Result<Counts> {
    let mut seen = Counts::default();
    let mut ended = None;
    for (index, text) in input.lines().enumerate() {
        let number = index + 1;
        let text = text.with_context(|| format!("reading line {number}"))?;
        if text.trim().is_empty() {
            continue;
        }
        let line = Line::parse(&text).with_context(|| format!("line {number}"))?;
        let expected = match (number, &line, ended) {
            (_, _, Some(_)) => Some("nothing after the end line"),
            (1, Line::Header { .. }, _) => None,
            (1, _, _) => Some("a header first"),
            (2, Line::Memory(_), _) => None,
            (2, _, _) => Some("the memory second"),
            (_, Line::Header { .. } | Line::Memory(_), _) => Some("one header and one memory"),
            _ => None,
        };
        if let Some(expected) = expected {
            bail!("line {number}: an export file has {expected}");
        }
        match &line {
            Line::Session(_) => seen.sessions += 1,
            Line::Event(_) => seen.events += 1,
            Line::Record { .. } => seen.records += 1,
            Line::End(counts) => ended = Some(*counts),
            _ => {}
        }
        each(line).with_context(|| format!("line {number}"))?;
    }
    match ended {
        None => bail!("the file ends without its end line: it is truncated or not a memd export"),
        Some(counts) if counts != seen => {
            bail!("the end line counts {counts:?} but the file holds {seen:?}: the file is damaged")
        }
        Some(counts) => Ok(counts),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(lines: &[Line]) -> String {
        lines
            .iter()
            .map(|l| l.to_json().to_string() + "\n")
            .collect()
    }

    fn sample() -> Vec<Line> {
        vec![
            Line::Header {
                memory_id: "m-1".into(),
                memd_version: "0.1.0".into(),
            },
            Line::Memory(Box::new(pb::Memory {
                memory_id: "m-1".into(),
                name: "m".into(),
                ..Default::default()
            })),
            Line::Event(Box::new(pb::Event {
                event_id: "e1".into(),
                actor_id: "alice".into(),
                ..Default::default()
            })),
            Line::Record {
                record: Box::new(pb::MemoryRecord {
                    memory_record_id: "r1".into(),
                    text: "likes tea".into(),
                    version: 2,
                    ..Default::default()
                }),
                history: vec![pb::MemoryRecord {
                    memory_record_id: "r1".into(),
                    text: "likes coffee".into(),
                    version: 1,
                    ..Default::default()
                }],
            },
            Line::End(Counts {
                sessions: 0,
                events: 1,
                records: 1,
            }),
        ]
    }

    #[test]
    fn a_file_reads_back_line_for_line() {
        let lines = sample();
        let mut back = vec![];
        let counts = read(file(&lines).as_bytes(), |l| {
            back.push(l);
            Ok(())
        })
        .unwrap();
        assert_eq!(back, lines);
        assert_eq!(counts.events, 1);
    }

    #[test]
    fn truncated_reordered_or_miscounted_files_are_refused() {
        let lines = sample();
        let refuse = |text: String, why: &str| {
            let err = read(text.as_bytes(), |_| Ok(())).unwrap_err();
            assert!(format!("{err:#}").contains(why), "{err:#}");
        };
        refuse(file(&lines[..4]), "truncated");
        refuse(file(&lines[1..]), "a header first");
        let mut miscounted = lines.clone();
        miscounted[4] = Line::End(Counts::default());
        refuse(file(&miscounted), "damaged");
        refuse(file(&lines).replace("\"likes tea\"", "likes tea"), "line 4");
        refuse(
            file(&lines).replace("\"memd-export\"", "\"other\""),
            "not a memd export",
        );
    }
}
