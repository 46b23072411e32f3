//! Artifacts (and test reports) a builder uploads: announced with their
//! size and sha256, streamed in frames into a `.part` file, checked, then
//! renamed into the task's artifact folder and recorded. Whatever does not
//! arrive whole is reported to the builder and remembered, so the task
//! ends as an infrastructure failure rather than a result with a hole.

use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;

use sha2::Digest;

use super::ConnState;
use crate::sched::Lookup;

/// An artifact being received: written to a `.part` file beside the
/// task's artifact folder and hashed as it arrives.
pub(super) struct Upload {
    task_id: String,
    test_report: bool,
    name: String,
    size: u64,
    sha256: String,
    written: u64,
    hasher: sha2::Sha256,
    file: std::fs::File,
    part: PathBuf,
    db: Arc<crate::store::EventDb>,
}

impl ConnState {
    /// An artifact of `task_id` did not arrive: tell the builder, and
    /// remember it for the task's end.
    pub(super) fn artifact_lost(&mut self, task_id: &str, message: String) {
        self.error(Some(task_id), message.clone());
        self.lost
            .entry(task_id.to_string())
            .or_default()
            .push(message);
    }

    /// The builder announces an upload: refused (and remembered as lost)
    /// when another of the task is open, or its name, size or digest is
    /// not acceptable; else a `.part` file is opened for it.
    pub(super) fn artifact_begin(
        &mut self,
        task_id: String,
        name: String,
        size: u64,
        sha256: String,
        test_report: bool,
    ) {
        let Lookup::Assigned(db, _) = self.lookup(&task_id) else {
            return self.not_yours(&task_id);
        };
        let shown = format!("{name:?}");
        if let Some(open) = self.uploads.get(&task_id) {
            let open = open.name.clone();
            self.abort_upload(&task_id, &format!("artifact {shown} began before it ended"));
            return self.artifact_lost(
                &task_id,
                format!("artifact {shown} discarded: artifact {open} of the task was still open"),
            );
        }
        if let Err(e) = sai_core::artifact_name::check(&name) {
            return self.artifact_lost(&task_id, format!("artifact refused: {e}"));
        }
        if size > self.server.settings.config.max_artifact_bytes {
            return self.artifact_lost(
                &task_id,
                format!(
                    "artifact {name} of {size} bytes exceeds the limit of {} bytes",
                    self.server.settings.config.max_artifact_bytes
                ),
            );
        }
        if sha256.len() != 64 || !sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
            return self.artifact_lost(
                &task_id,
                format!("artifact {name}: sha256 must be 64 hex characters"),
            );
        }
        // Beside the task's artifact tree, so it can collide with no name.
        let dir = db.artifact_dir(&task_id);
        let part = dir.with_extension("part");
        let file = std::fs::create_dir_all(&dir).and_then(|_| std::fs::File::create(&part));
        match file {
            Ok(file) => {
                self.uploads.insert(
                    task_id.clone(),
                    Upload {
                        task_id,
                        test_report,
                        name,
                        size,
                        sha256: sha256.to_ascii_lowercase(),
                        written: 0,
                        hasher: sha2::Sha256::new(),
                        file,
                        part,
                        db,
                    },
                );
            }
            Err(e) => self.artifact_lost(&task_id, format!("cannot store artifact {name}: {e}")),
        }
    }

    /// Discard the task's open upload, if any.
    pub(super) fn abort_upload(&mut self, task_id: &str, why: &str) {
        if let Some(u) = self.uploads.remove(task_id) {
            let _ = std::fs::remove_file(&u.part);
            self.artifact_lost(&u.task_id, format!("artifact {} discarded: {why}", u.name));
        }
    }

    /// Discard every open upload (the connection ended).
    pub(super) fn abort_all_uploads(&mut self, why: &str) {
        let open: Vec<String> = self.uploads.keys().cloned().collect();
        for task_id in open {
            self.abort_upload(&task_id, why);
        }
    }

    /// The upload is complete: check its size and digest, then move it
    /// into the task's artifact folder and record it (a test report is read).
    pub(super) async fn artifact_end(&mut self, task_id: &str) {
        let Some(u) = self.uploads.remove(task_id) else {
            if matches!(self.lookup(task_id), Lookup::Assigned(..)) {
                // Its begin was refused (and reported) already.
                return self.error(
                    Some(task_id),
                    "no artifact upload open for this task".into(),
                );
            }
            return self.not_yours(task_id);
        };
        let digest = hex::encode(u.hasher.finalize());
        if u.written != u.size || digest != u.sha256 {
            let _ = std::fs::remove_file(&u.part);
            return self.artifact_lost(
                task_id,
                format!(
                    "artifact {} discarded: got {} bytes sha256 {digest}, announced {} bytes sha256 {}",
                    u.name, u.written, u.size, u.sha256
                ),
            );
        }
        // The name was checked (relative, no `.`/`..`), so this stays in
        // the task's artifact folder.
        let fin = u.db.artifact_dir(task_id).join(&u.name);
        let res = u
            .file
            .sync_all()
            .and_then(|_| match fin.parent() {
                Some(p) => std::fs::create_dir_all(p),
                None => Ok(()),
            })
            .and_then(|_| std::fs::rename(&u.part, &fin))
            .map_err(|e| e.to_string())
            .and_then(|_| {
                u.db.add_artifact(task_id, &u.name, u.size, &u.sha256)
                    .map_err(|e| e.to_string())
            });
        if let Err(e) = res {
            let _ = std::fs::remove_file(&u.part);
            self.artifact_lost(task_id, format!("storing artifact {}: {e}", u.name));
        } else if u.test_report {
            crate::test_reports::ingest(&self.server, &u.db, task_id, &u.name, fin).await;
        }
    }

    /// Bytes of the task's open upload; past its announced size or on a
    /// write error the upload is discarded.
    pub(super) fn artifact_bytes(&mut self, task_id: &str, payload: &[u8]) {
        let Some(u) = self.uploads.get_mut(task_id) else {
            // The begin was refused and reported: nothing to add.
            return;
        };
        u.written += payload.len() as u64;
        u.hasher.update(payload);
        if u.written > u.size {
            self.abort_upload(task_id, "more bytes than announced");
        } else if let Err(e) = u.file.write_all(payload) {
            self.abort_upload(task_id, &format!("write failed: {e}"));
        }
    }
}
