//! The task offers of the tests that run whole tasks (`run_task`) from a
//! real origin repository.
use std::path::Path;

use sai_core::protocol::TaskOffer;

const EVENT: &str = "0123456789ABCDEF0123456789ABCDEF";

/// Task `n` of [`EVENT`]: `steps` at commit `hash` of `origin` (branch
/// `main`, configuration `default`), on `platform`, with no artifacts.
pub fn offer_on(platform: &str, n: u32, origin: &Path, hash: &str, steps: &[&str]) -> TaskOffer {
    TaskOffer {
        task_id: format!("{EVENT}{n:032X}"),
        event_id: EVENT.into(),
        project: "demo".into(),
        fetch_url: origin.to_str().unwrap().into(),
        git_ref: "refs/heads/main".into(),
        hash: hash.into(),
        configuration: "default".into(),
        platform: platform.into(),
        offer_platform: platform.into(),
        steps: steps.iter().map(|s| s.to_string()).collect(),
        artifacts: vec![],
        packages: vec![],
        attempt: 1,
        test_reports: vec![],
    }
}
