//! The allocations on disk: `<state-dir>/ipam/allocations.journal`, one JSON
//! record per line, appended and synced before an ADD or DEL is answered.
//!
//! Appending is one write and one fdatasync per batch of requests, so
//! concurrent ADDs share a sync. On start the journal is replayed; a torn
//! last line (a crash mid-write) is skipped with a warning and cut off, so
//! the next record starts a line of its own. When the journal
//! has grown well past what is live it is rewritten (temp file + rename):
//! the live allocations and each range's cursor.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{self, BufRead, BufReader, Write};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};
use tracing::warn;

use super::alloc::{Allocation, Attachment};

pub const FILE_NAME: &str = "allocations.journal";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "lowercase")]
pub enum Record {
    Add {
        ip: Ipv4Addr,
        container_id: String,
        ifname: String,
        pool: String,
        block: Ipv4Net,
        #[serde(default)]
        network: String,
        #[serde(default)]
        pod_namespace: String,
        #[serde(default)]
        pod_name: String,
        #[serde(default)]
        netns: String,
        #[serde(default)]
        at: i64,
    },
    Del {
        ip: Ipv4Addr,
    },
    Cursor {
        block: Ipv4Net,
        ip: Ipv4Addr,
    },
}

impl Record {
    pub fn add(a: &Allocation) -> Record {
        Record::Add {
            ip: a.address,
            container_id: a.attachment.container_id.clone(),
            ifname: a.attachment.ifname.clone(),
            pool: a.pool.clone(),
            block: a.block,
            network: a.network.clone(),
            pod_namespace: a.pod_namespace.clone(),
            pod_name: a.pod_name.clone(),
            netns: a.netns.clone(),
            at: a.allocated_at_unix,
        }
    }
}

/// What a replay found.
#[derive(Debug, Default)]
pub struct Replayed {
    pub allocations: BTreeMap<Ipv4Addr, Allocation>,
    pub cursors: BTreeMap<Ipv4Net, Ipv4Addr>,
    pub lines: usize,
    /// Bytes up to and including the last newline: what is kept.
    pub whole: u64,
}

#[derive(Debug, thiserror::Error)]
#[error("{}: {source}", path.display())]
pub struct JournalError {
    pub path: PathBuf,
    pub source: io::Error,
}

pub struct Journal {
    path: PathBuf,
    file: File,
    lines: usize,
}

impl Journal {
    /// Opens (creating `dir` and the file if needed) and replays.
    pub fn open(dir: &Path) -> Result<(Journal, Replayed), JournalError> {
        let path = dir.join(FILE_NAME);
        let e = |source| JournalError {
            path: path.clone(),
            source,
        };
        std::fs::create_dir_all(dir).map_err(|source| JournalError {
            path: dir.to_path_buf(),
            source,
        })?;
        let replayed = match File::open(&path) {
            Ok(f) => replay(BufReader::new(f), &path).map_err(e)?,
            Err(err) if err.kind() == io::ErrorKind::NotFound => Replayed::default(),
            Err(err) => return Err(e(err)),
        };
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(e)?;
        // A torn last line would swallow the next record appended to it.
        if file.metadata().map_err(e)?.len() > replayed.whole {
            warn!(file = %path.display(), keep_bytes = replayed.whole, "cutting off a torn last journal line");
            file.set_len(replayed.whole).map_err(e)?;
            file.sync_data().map_err(e)?;
        }
        let lines = replayed.lines;
        Ok((Journal { path, file, lines }, replayed))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends `records` and syncs them to disk.
    pub fn append(&mut self, records: &[Record]) -> Result<(), JournalError> {
        if records.is_empty() {
            return Ok(());
        }
        let mut buf = Vec::with_capacity(records.len() * 200);
        for r in records {
            serde_json::to_writer(&mut buf, r).expect("records serialize");
            buf.push(b'\n');
        }
        let e = |source| JournalError {
            path: self.path.clone(),
            source,
        };
        self.file.write_all(&buf).map_err(e)?;
        self.file.sync_data().map_err(e)?;
        self.lines += records.len();
        Ok(())
    }

    /// Whether the journal holds many more lines than `live` records would.
    pub fn wants_compaction(&self, live: usize) -> bool {
        self.lines > 2 * live + 1024
    }

    /// Rewrites the journal as `live` allocations plus `cursors`.
    pub fn compact<'a>(
        &mut self,
        live: impl Iterator<Item = &'a Allocation>,
        cursors: &BTreeMap<Ipv4Net, Ipv4Addr>,
    ) -> Result<(), JournalError> {
        let tmp = self.path.with_extension("journal.tmp");
        let e = |p: &Path| {
            let p = p.to_path_buf();
            move |source| JournalError { path: p, source }
        };
        let mut buf = Vec::new();
        let mut n = 0;
        for r in live.map(Record::add).chain(
            cursors
                .iter()
                .map(|(b, ip)| Record::Cursor { block: *b, ip: *ip }),
        ) {
            serde_json::to_writer(&mut buf, &r).expect("records serialize");
            buf.push(b'\n');
            n += 1;
        }
        {
            let mut f = File::create(&tmp).map_err(e(&tmp))?;
            f.write_all(&buf).map_err(e(&tmp))?;
            f.sync_all().map_err(e(&tmp))?;
        }
        std::fs::rename(&tmp, &self.path).map_err(e(&self.path))?;
        if let Some(dir) = self.path.parent() {
            if let Ok(d) = File::open(dir) {
                let _ = d.sync_all();
            }
        }
        self.file = OpenOptions::new()
            .append(true)
            .open(&self.path)
            .map_err(e(&self.path))?;
        self.lines = n;
        Ok(())
    }
}

fn replay(mut r: impl BufRead, path: &Path) -> io::Result<Replayed> {
    let mut out = Replayed::default();
    let mut by_attachment: std::collections::HashMap<Attachment, Ipv4Addr> =
        std::collections::HashMap::new();
    let mut line = Vec::new();
    let mut i = 0;
    loop {
        line.clear();
        if r.read_until(b'\n', &mut line)? == 0 {
            break;
        }
        i += 1;
        if line.last() != Some(&b'\n') {
            warn!(file = %path.display(), line = i, "skipping a torn last journal line (a crash mid-write)");
            break;
        }
        out.whole += line.len() as u64;
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        out.lines += 1;
        let rec: Record = match serde_json::from_slice(&line) {
            Ok(r) => r,
            Err(err) => {
                warn!(file = %path.display(), line = i, error = %err,
                    "skipping an unreadable journal line (torn by a crash?)");
                continue;
            }
        };
        match rec {
            Record::Add {
                ip,
                container_id,
                ifname,
                pool,
                block,
                network,
                pod_namespace,
                pod_name,
                netns,
                at,
            } => {
                let attachment = Attachment {
                    container_id,
                    ifname,
                };
                // One address per attachment: a newer record wins.
                if let Some(old) = by_attachment.insert(attachment.clone(), ip) {
                    out.allocations.remove(&old);
                }
                if let Some(displaced) = out.allocations.get(&ip) {
                    by_attachment.remove(&displaced.attachment);
                }
                out.cursors.insert(block, ip);
                out.allocations.insert(
                    ip,
                    Allocation {
                        attachment,
                        address: ip,
                        pool,
                        block,
                        network,
                        pod_namespace,
                        pod_name,
                        netns,
                        allocated_at_unix: at,
                    },
                );
            }
            Record::Del { ip } => {
                if let Some(a) = out.allocations.remove(&ip) {
                    by_attachment.remove(&a.attachment);
                }
            }
            Record::Cursor { block, ip } => {
                out.cursors.insert(block, ip);
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn allocation(ip: &str, c: &str) -> Allocation {
        Allocation {
            attachment: Attachment {
                container_id: c.into(),
                ifname: "eth0".into(),
            },
            address: ip.parse().unwrap(),
            pool: "default".into(),
            block: "10.50.18.0/24".parse().unwrap(),
            network: "kolach".into(),
            pod_namespace: "ns".into(),
            pod_name: "pod".into(),
            netns: "/run/netns/x".into(),
            allocated_at_unix: 1,
        }
    }

    fn tempdir(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("kolach-journal-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    #[test]
    fn survives_a_reopen_and_a_torn_line() {
        let dir = tempdir("reopen");
        {
            let (mut j, r) = Journal::open(&dir).unwrap();
            assert!(r.allocations.is_empty());
            j.append(&[
                Record::add(&allocation("10.50.18.2", "a")),
                Record::add(&allocation("10.50.18.3", "b")),
                Record::Del {
                    ip: "10.50.18.2".parse().unwrap(),
                },
            ])
            .unwrap();
        }
        // A crash in the middle of a write.
        let mut f = OpenOptions::new()
            .append(true)
            .open(dir.join(FILE_NAME))
            .unwrap();
        f.write_all(br#"{"op":"add","ip":"10.50.18.4","cont"#)
            .unwrap();
        drop(f);
        let (mut j, r) = Journal::open(&dir).unwrap();
        assert_eq!(r.allocations.len(), 1);
        assert_eq!(
            r.allocations.values().next().unwrap(),
            &allocation("10.50.18.3", "b")
        );
        // The cursor is where the last ADD left it, even though .2 is free.
        assert_eq!(
            r.cursors[&"10.50.18.0/24".parse::<Ipv4Net>().unwrap()].to_string(),
            "10.50.18.3"
        );
        // The torn bytes are cut off: a record appended after the crash
        // starts its own line and survives the next restart.
        j.append(&[Record::add(&allocation("10.50.18.5", "c"))])
            .unwrap();
        drop(j);
        let (_j, r) = Journal::open(&dir).unwrap();
        assert_eq!(r.allocations.len(), 2, "{:?}", r.allocations);
        assert_eq!(r.lines, 4);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn compaction_keeps_live_allocations_and_cursors() {
        let dir = tempdir("compact");
        let (mut j, _) = Journal::open(&dir).unwrap();
        for i in 2..200u8 {
            let a = allocation(&format!("10.50.18.{i}"), &format!("c{i}"));
            j.append(&[Record::add(&a), Record::Del { ip: a.address }])
                .unwrap();
        }
        let live = [allocation("10.50.18.7", "keep")];
        let block: Ipv4Net = "10.50.18.0/24".parse().unwrap();
        let cursors = BTreeMap::from([(block, "10.50.18.199".parse().unwrap())]);
        j.compact(live.iter(), &cursors).unwrap();
        j.append(&[Record::add(&allocation("10.50.18.200", "new"))])
            .unwrap();
        drop(j);
        let (j, r) = Journal::open(&dir).unwrap();
        assert_eq!(r.allocations.len(), 2);
        assert_eq!(r.cursors[&block].to_string(), "10.50.18.200");
        assert_eq!(r.lines, 3);
        assert!(!j.wants_compaction(2));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
