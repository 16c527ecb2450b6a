//! The job journal: which requests this DVM accepted and which it finished, on disk.
//!
//! It is what makes "processed once" hold across restarts: a request is written here (and
//! fsynced) before the DVM acts on it, and marked finished once its result or error feedback
//! was published. On start, accepted-but-unfinished jobs are handed back for resumption, and
//! finished ones are never run again. The file is append-only JSON lines; a torn last line (a
//! crash mid-write) is ignored, because its job was not yet acknowledged to anyone.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};

use nostr_sdk::prelude::{Event, EventId, JsonUtil, Timestamp};
use serde::{Deserialize, Serialize};

#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    #[error("cannot open job journal {path}: {source}")]
    Open {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot write job journal {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// How a job ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    Success,
    Error,
    Cancelled,
}

#[derive(Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "lowercase")]
enum Entry {
    Accepted {
        id: EventId,
        at: u64,
        request: String,
    },
    Finished {
        id: EventId,
        at: u64,
        outcome: Outcome,
    },
}

#[derive(Debug, Clone)]
enum State {
    Running(Box<Event>),
    Finished { at: u64 },
}

/// The journal of one DVM.
pub struct Journal {
    path: PathBuf,
    file: File,
    jobs: HashMap<EventId, State>,
    /// Lines in the file, to decide when to compact it.
    lines: usize,
}

impl Journal {
    /// Opens (or creates) `path` and replays it.
    pub fn open(path: &Path) -> Result<Journal, JournalError> {
        let open_err = |source| JournalError::Open {
            path: path.to_path_buf(),
            source,
        };
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(open_err)?;
        }
        let mut jobs = HashMap::new();
        let mut lines = 0;
        if let Ok(existing) = File::open(path) {
            for line in BufReader::new(existing).lines() {
                let line = line.map_err(open_err)?;
                lines += 1;
                match serde_json::from_str::<Entry>(&line) {
                    Ok(Entry::Accepted { id, request, .. }) => {
                        if let Ok(event) = Event::from_json(&request) {
                            jobs.entry(id).or_insert(State::Running(Box::new(event)));
                        }
                    }
                    Ok(Entry::Finished { id, at, .. }) => {
                        jobs.insert(id, State::Finished { at });
                    }
                    Err(err) => {
                        tracing::warn!(path = %path.display(), "skipping torn journal line: {err}");
                    }
                }
            }
        }
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(open_err)?;
        Ok(Journal {
            path: path.to_path_buf(),
            file,
            jobs,
            lines,
        })
    }

    /// Whether this request was ever accepted (finished or not).
    pub fn knows(&self, id: &EventId) -> bool {
        self.jobs.contains_key(id)
    }

    /// The request of a job that was accepted and has not finished.
    pub fn running(&self, id: &EventId) -> Option<Event> {
        match self.jobs.get(id) {
            Some(State::Running(event)) => Some((**event).clone()),
            _ => None,
        }
    }

    /// Requests accepted but not finished, oldest first: to resume after a restart.
    pub fn unfinished(&self) -> Vec<Event> {
        let mut events: Vec<Event> = self
            .jobs
            .values()
            .filter_map(|state| match state {
                State::Running(event) => Some((**event).clone()),
                State::Finished { .. } => None,
            })
            .collect();
        events.sort_by_key(|e| e.created_at);
        events
    }

    /// Records that the DVM takes on `request`; durable when this returns.
    pub fn accept(&mut self, request: &Event) -> Result<(), JournalError> {
        self.append(&Entry::Accepted {
            id: request.id,
            at: Timestamp::now().as_secs(),
            request: request.as_json(),
        })?;
        self.jobs
            .insert(request.id, State::Running(Box::new(request.clone())));
        Ok(())
    }

    /// Records that the job for `id` ended; durable when this returns.
    pub fn finish(&mut self, id: EventId, outcome: Outcome) -> Result<(), JournalError> {
        let at = Timestamp::now().as_secs();
        self.append(&Entry::Finished { id, at, outcome })?;
        self.jobs.insert(id, State::Finished { at });
        Ok(())
    }

    /// Forgets finished jobs older than `keep_secs` (requests that old are refused anyway) and
    /// rewrites the file when it has grown well past what it needs to hold.
    pub fn compact(&mut self, keep_secs: u64) -> Result<(), JournalError> {
        let cutoff = Timestamp::now().as_secs().saturating_sub(keep_secs);
        self.jobs
            .retain(|_, state| !matches!(state, State::Finished { at } if *at < cutoff));
        // Rewriting costs a full pass: only worth it once it saves a good number of lines.
        if self.lines < 1024 || self.lines < self.jobs.len() + 512 {
            return Ok(());
        }
        let write_err = |source| JournalError::Write {
            path: self.path.clone(),
            source,
        };
        let tmp = self.path.with_extension("compact");
        let mut out = File::create(&tmp).map_err(write_err)?;
        let mut lines = 0;
        for (id, state) in &self.jobs {
            let entry = match state {
                State::Running(event) => Entry::Accepted {
                    id: *id,
                    at: event.created_at.as_secs(),
                    request: event.as_json(),
                },
                State::Finished { at } => Entry::Finished {
                    id: *id,
                    at: *at,
                    outcome: Outcome::Success,
                },
            };
            writeln!(
                out,
                "{}",
                serde_json::to_string(&entry).expect("entry serialises")
            )
            .map_err(write_err)?;
            lines += 1;
        }
        out.sync_all().map_err(write_err)?;
        std::fs::rename(&tmp, &self.path).map_err(write_err)?;
        self.file = OpenOptions::new()
            .append(true)
            .open(&self.path)
            .map_err(write_err)?;
        self.lines = lines;
        Ok(())
    }

    fn append(&mut self, entry: &Entry) -> Result<(), JournalError> {
        let mut line = serde_json::to_string(entry).expect("entry serialises");
        line.push('\n');
        self.file
            .write_all(line.as_bytes())
            .and_then(|()| self.file.sync_data())
            .map_err(|source| JournalError::Write {
                path: self.path.clone(),
                source,
            })?;
        self.lines += 1;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use nostr_sdk::prelude::{EventBuilder, Keys};

    use super::*;

    fn request(n: u32) -> Event {
        EventBuilder::text_note(format!("job {n}"))
            .sign_with_keys(&Keys::generate())
            .unwrap()
    }

    #[test]
    fn survives_reopen_and_resumes_only_unfinished() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("jobs.jsonl");
        let (a, b) = (request(1), request(2));
        {
            let mut journal = Journal::open(&path).unwrap();
            journal.accept(&a).unwrap();
            journal.accept(&b).unwrap();
            journal.finish(a.id, Outcome::Success).unwrap();
        }
        let journal = Journal::open(&path).unwrap();
        assert!(journal.knows(&a.id) && journal.knows(&b.id));
        assert_eq!(
            journal
                .unfinished()
                .iter()
                .map(|e| e.id)
                .collect::<Vec<_>>(),
            vec![b.id]
        );
    }

    #[test]
    fn a_torn_last_line_is_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("jobs.jsonl");
        let a = request(1);
        {
            let mut journal = Journal::open(&path).unwrap();
            journal.accept(&a).unwrap();
        }
        let mut file = OpenOptions::new().append(true).open(&path).unwrap();
        file.write_all(b"{\"op\":\"accep").unwrap();
        let journal = Journal::open(&path).unwrap();
        assert_eq!(journal.unfinished().len(), 1);
    }

    #[test]
    fn compaction_keeps_what_matters() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("jobs.jsonl");
        let mut journal = Journal::open(&path).unwrap();
        let running = request(0);
        journal.accept(&running).unwrap();
        let mut finished = Vec::new();
        for n in 1..=600 {
            let r = request(n);
            journal.accept(&r).unwrap();
            journal.finish(r.id, Outcome::Success).unwrap();
            finished.push(r.id);
        }
        journal.compact(3600).unwrap();
        drop(journal);
        let lines = std::fs::read_to_string(&path).unwrap().lines().count();
        assert_eq!(lines, 601, "one line per job after compaction");
        let journal = Journal::open(&path).unwrap();
        assert!(finished.iter().all(|id| journal.knows(id)));
        assert_eq!(journal.unfinished()[0].id, running.id);
    }
}
