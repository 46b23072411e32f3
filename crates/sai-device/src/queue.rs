//! Fair (FIFO) waiting for devices, made only of kernel-held `flock`s.
//!
//! Every waiter takes a ticket: under an exclusive `flock` on
//! `<state>/seq` it increments the counter stored there, writes its
//! requested device type into a new file, `flock`s it and renames it to
//! `<state>/queue/<seq, 20 digits>-<pid>`. It keeps that file locked for as
//! long as it waits, and deletes it once it holds a device.
//!
//! While waiting, a waiter may only try a free device if no *earlier* live
//! ticket asks for a type that device is compatible with. A ticket whose file
//! can be `flock`ed by someone else has no holder any more (its waiter died,
//! even by SIGKILL): it is ignored and removed. So a device goes to waiters
//! in arrival order, later waiters never overtake an earlier one for a device
//! it could use, and nothing survives a killed process: there is no state
//! that needs cleaning for the next waiter to proceed.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

/// A waiter's place in the queue. Dropping it leaves the queue.
#[derive(Debug)]
pub struct Ticket {
    seq: u64,
    path: PathBuf,
    queue_dir: PathBuf,
    file: Option<File>,
}

/// A live waiter ahead of us.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Waiter {
    /// Its ticket number.
    pub seq: u64,
    /// The device type it asked for.
    pub devtype: String,
}

fn io_ctx(what: &str, path: &Path, e: std::io::Error) -> std::io::Error {
    std::io::Error::new(e.kind(), format!("{what} {}: {e}", path.display()))
}

fn parse_name(name: &str) -> Option<u64> {
    let (seq, pid) = name.split_once('-')?;
    if seq.len() != 20 || !pid.chars().all(|c| c.is_ascii_digit()) || pid.is_empty() {
        return None;
    }
    seq.parse().ok()
}

impl Ticket {
    /// Join the queue kept in `state_dir` (created if missing) asking for
    /// `devtype`.
    pub fn take(state_dir: &Path, devtype: &str) -> std::io::Result<Ticket> {
        let queue_dir = state_dir.join("queue");
        std::fs::create_dir_all(&queue_dir)
            .map_err(|e| io_ctx("cannot create queue directory", &queue_dir, e))?;
        let seq_path = state_dir.join("seq");
        let mut counter = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&seq_path)
            .map_err(|e| io_ctx("cannot open", &seq_path, e))?;
        counter
            .lock()
            .map_err(|e| io_ctx("cannot lock", &seq_path, e))?;
        let mut text = String::new();
        counter.read_to_string(&mut text)?;
        let seq = text.trim().parse::<u64>().unwrap_or(0) + 1;
        counter.seek(SeekFrom::Start(0))?;
        counter.set_len(0)?;
        counter.write_all(format!("{seq}\n").as_bytes())?;

        let pid = std::process::id();
        let tmp = queue_dir.join(format!(".tmp-{pid}-{seq}"));
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&tmp)
            .map_err(|e| io_ctx("cannot create ticket", &tmp, e))?;
        file.try_lock()
            .map_err(|e| std::io::Error::other(format!("cannot lock new ticket: {e}")))?;
        file.write_all(devtype.as_bytes())?;
        let path = queue_dir.join(format!("{seq:020}-{pid}"));
        std::fs::rename(&tmp, &path).map_err(|e| io_ctx("cannot place ticket", &path, e))?;
        drop(counter);
        Ok(Ticket {
            seq,
            path,
            queue_dir,
            file: Some(file),
        })
    }

    /// This ticket's number.
    pub fn seq(&self) -> u64 {
        self.seq
    }

    /// Live waiters that arrived before this one. Tickets of dead waiters are
    /// removed on the way.
    pub fn waiters_ahead(&self) -> std::io::Result<Vec<Waiter>> {
        let mut ahead = Vec::new();
        for entry in std::fs::read_dir(&self.queue_dir)? {
            let entry = entry?;
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            if name.starts_with(".tmp-") {
                // A waiter killed between creating and placing its ticket.
                remove_if_stale(&entry.path());
                continue;
            }
            let Some(seq) = parse_name(name) else {
                continue;
            };
            if seq >= self.seq {
                continue;
            }
            let path = entry.path();
            let Ok(mut f) = File::open(&path) else {
                continue; // gone meanwhile
            };
            if f.try_lock_shared().is_ok() {
                // Nobody holds it: its waiter is gone.
                let _ = std::fs::remove_file(&path);
                continue;
            }
            let mut devtype = String::new();
            if f.read_to_string(&mut devtype).is_ok() {
                ahead.push(Waiter { seq, devtype });
            }
        }
        ahead.sort_by_key(|w| w.seq);
        Ok(ahead)
    }
}

fn remove_if_stale(path: &Path) {
    if let Ok(f) = File::open(path)
        && f.try_lock().is_ok()
    {
        let _ = std::fs::remove_file(path);
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        // Unlink while still holding the lock, so nobody sees an unlocked
        // ticket of ours.
        let _ = std::fs::remove_file(&self.path);
        self.file.take();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The device types the waiters ahead of `t` wait for, in queue order.
    fn types_ahead(t: &Ticket) -> Vec<String> {
        t.waiters_ahead()
            .unwrap()
            .into_iter()
            .map(|w| w.devtype)
            .collect()
    }

    #[test]
    fn tickets_are_ordered_and_stale_ones_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let a = Ticket::take(dir.path(), "x").unwrap();
        let b = Ticket::take(dir.path(), "y").unwrap();
        let c = Ticket::take(dir.path(), "z").unwrap();
        assert!(a.seq() < b.seq() && b.seq() < c.seq());
        assert!(a.waiters_ahead().unwrap().is_empty());
        assert_eq!(types_ahead(&c), ["x", "y"]);

        // A stale ticket (no lock holder) ahead of us is ignored and removed.
        let stale = dir.path().join("queue").join(format!("{:020}-1", 0));
        std::fs::write(&stale, "w").unwrap();
        let ahead = c.waiters_ahead().unwrap();
        assert_eq!(ahead.len(), 2);
        assert!(!stale.exists());

        drop(b);
        assert_eq!(types_ahead(&c), ["x"]);
        drop(a);
        assert!(c.waiters_ahead().unwrap().is_empty());
        let path = c.path.clone();
        drop(c);
        assert!(!path.exists());
    }

    #[test]
    fn names() {
        assert_eq!(parse_name("00000000000000000042-17"), Some(42));
        assert_eq!(parse_name("42-17"), None);
        assert_eq!(parse_name("00000000000000000042-"), None);
    }
}
