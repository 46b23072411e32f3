//! Duration estimates and expected finish times for the API: [`crate::eta`]
//! fed with the store's duration history, the scheduler's open work and the
//! connected builders' instances.

use std::collections::HashMap;

use sai_core::platform::tuple_matches;
use sai_core::task::{Task, TaskState};

use crate::error::Error;
use crate::eta::{self, OpenTask};
use crate::state::Server;
use crate::store::durations::DurationKey;
use crate::store::now_ms;

/// Estimates of one request, each (project, configuration, platform) read
/// once.
pub struct Estimator<'a> {
    server: &'a Server,
    cache: HashMap<(String, String, String), Option<i64>>,
}

impl<'a> Estimator<'a> {
    /// An estimator reading `server`'s history.
    pub fn new(server: &'a Server) -> Self {
        Estimator {
            server,
            cache: HashMap::new(),
        }
    }

    /// The expected duration of a run of `configuration` on `platform`.
    pub fn duration(
        &mut self,
        project: &str,
        configuration: &str,
        platform: &str,
    ) -> Result<Option<i64>, Error> {
        let k = (
            project.to_string(),
            configuration.to_string(),
            platform.to_string(),
        );
        if let Some(v) = self.cache.get(&k) {
            return Ok(*v);
        }
        let key = DurationKey {
            project,
            configuration,
            platform,
        };
        let v = eta::median(&self.server.store.recent_durations(key, eta::HISTORY)?);
        self.cache.insert(k, v);
        Ok(v)
    }

    /// A waiting or running task's estimate; `None` for ended tasks.
    pub fn task(&mut self, project: &str, t: &Task) -> Result<Option<i64>, Error> {
        if !matches!(t.run.state, TaskState::Waiting | TaskState::Running) {
            return Ok(None);
        }
        self.duration(project, &t.spec.configuration, &t.spec.platform)
    }

    /// When the open event `event_id` is expected to finish.
    pub fn event_finish(&mut self, event_id: &str) -> Result<Option<i64>, Error> {
        let work = self.server.sched().open_work(event_id);
        let mut open = Vec::with_capacity(work.len());
        for w in work {
            open.push(OpenTask {
                estimate_ms: self.duration(&w.project, &w.configuration, &w.platform)?,
                platform: w.platform,
                started: w.started,
                own: w.own,
            });
        }
        let fleet = self.server.fleet();
        let instances = |platform: &str| -> u32 {
            fleet
                .builders
                .iter()
                .flat_map(|b| &b.platforms)
                .filter(|p| tuple_matches(platform, &p.name))
                .map(|p| p.instances)
                .sum()
        };
        Ok(eta::expected_finish(now_ms(), &open, instances))
    }
}
