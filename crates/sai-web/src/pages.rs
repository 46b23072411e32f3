//! Server-rendered HTML (maud). Pages are complete without JavaScript;
//! `app.js` keeps them live over the page's websocket by replacing the
//! fragments rendered here (elements with `data-live` ids).

use std::collections::BTreeMap;

use maud::{DOCTYPE, Markup, PreEscaped, html};

use crate::assets;
use crate::session::Session;
use crate::upstream::{Builder, BuilderPlatform, EventDetail, Task, TaskState, tasks_of};
use sai_core::api::{EventTests, TaskTests};
use sai_core::junit::TestOutcome;

/// What every page needs to know about the request.
pub struct PageCtx<'a> {
    /// The signed-in session, if any.
    pub session: Option<&'a Session>,
    /// Unix ms now (for ages).
    pub now_ms: i64,
}

/// The page frame: header with navigation and sign-in state.
pub fn layout(
    ctx: &PageCtx,
    title: &str,
    page: &str,
    data: &[(&str, &str)],
    body: Markup,
) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " - Sai" }
                link rel="stylesheet" href=(assets::url("sai.css"));
                link rel="icon" href=(assets::url("favicon.svg")) type="image/svg+xml";
                script type="module" src=(assets::url("app.js")) {}
            }
            body data-page=(page) data-attrs=(data.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join("&")) {
                header.top {
                    a.brand href="/" { "Sai" }
                    nav {
                        a href="/" { "Overview" }
                        a href="/builders" { "Builders" }
                    }
                    div #conn.conn hidden { "reconnecting…" }
                    div.who {
                        @if let Some(s) = ctx.session {
                            span #user { "signed in as " b { (s.user) } }
                            " "
                            span.expiry title="session expiry" { "until " time #expiry datetime=(s.expires) { (s.expires) } }
                            form.inline method="post" action="/signout" {
                                input type="hidden" name="csrf" value=(s.csrf);
                                button #signout type="submit" { "Sign out" }
                            }
                        } @else {
                            a #signin href={ "/signin?next=" (sai_core::percent::encode(&format!("/{}", page_path(page, data)), b"/-_.")) } { "Sign in" }
                        }
                    }
                }
                main { (body) }
            }
        }
    }
}

fn page_path(page: &str, data: &[(&str, &str)]) -> String {
    let get = |k: &str| {
        data.iter()
            .find(|(n, _)| *n == k)
            .map(|(_, v)| *v)
            .unwrap_or("")
    };
    match page {
        "event" => format!("e/{}", get("event")),
        "task" => format!("t/{}", get("task")),
        "builders" => "builders".into(),
        _ => String::new(),
    }
}

/// "3 min ago" for a unix ms time. Empty when `now_ms` is 0: live
/// fragments leave ages to the browser so they do not change every second.
pub fn age(now_ms: i64, then_ms: i64) -> String {
    if now_ms == 0 {
        return String::new();
    }
    let s = ((now_ms - then_ms) / 1000).max(0);
    match s {
        0..=59 => format!("{s}s ago"),
        60..=3599 => format!("{} min ago", s / 60),
        3600..=86_399 => format!("{} h ago", s / 3600),
        _ => format!("{} days ago", s / 86_400),
    }
}

/// "1m 05s" for a duration in ms.
pub fn duration(ms: i64) -> String {
    let s = (ms / 1000).max(0);
    if s >= 3600 {
        format!("{}h {:02}m", s / 3600, (s / 60) % 60)
    } else if s >= 60 {
        format!("{}m {:02}s", s / 60, s % 60)
    } else {
        format!("{}.{}s", s, (ms % 1000) / 100)
    }
}

/// Human size.
pub fn size(bytes: i64) -> String {
    let b = bytes as f64;
    if b >= 1e9 {
        format!("{:.1} GB", b / 1e9)
    } else if b >= 1e6 {
        format!("{:.1} MB", b / 1e6)
    } else if b >= 1e3 {
        format!("{:.1} kB", b / 1e3)
    } else {
        format!("{bytes} B")
    }
}

/// The branch or tag of a ref.
pub fn short_ref(r: &str) -> &str {
    r.strip_prefix("refs/heads/")
        .or_else(|| r.strip_prefix("refs/tags/"))
        .unwrap_or(r)
}

/// "530/548 passed, 3 failed, 15 running".
pub fn summary(states: &BTreeMap<TaskState, usize>, total: usize) -> String {
    let n = |s: TaskState| states.get(&s).copied().unwrap_or(0);
    let passed = n(TaskState::Success);
    if total > 0 && passed == total {
        return format!("All {total} passed");
    }
    let mut parts = vec![format!("{passed}/{total} passed")];
    for (state, label) in [
        (TaskState::Failed, "failed"),
        (TaskState::Running, "running"),
        (TaskState::Waiting, "waiting"),
        (TaskState::Cancelled, "cancelled"),
    ] {
        if n(state) > 0 {
            parts.push(format!("{} {label}", n(state)));
        }
    }
    parts.join(", ")
}

fn finished(states: &BTreeMap<TaskState, usize>) -> usize {
    TaskState::TERMINAL
        .iter()
        .map(|s| states.get(s).copied().unwrap_or(0))
        .sum()
}

/// Tasks of a platform offer running now (connected builders only).
fn busy(p: &BuilderPlatform) -> usize {
    p.running.as_ref().map_or(0, Vec::len)
}

/// One event's line on the overview and at the top of the event page.
pub fn event_card(now_ms: i64, d: &EventDetail) -> Markup {
    let e = d;
    let total = tasks_of(d).len().max(e.task_count as usize);
    let none = BTreeMap::new();
    let states = d.task_states.as_ref().unwrap_or(&none);
    html! {
        div.event id={ "ev-" (e.id) } data-state=(e.state) {
            span class={ "badge s-" (e.state) } { (e.state) }
            " "
            a.ref href={ "/e/" (e.id) } { (e.project) " " (short_ref(&e.git_ref)) }
            " "
            @if e.sec { span.lock title="private event" { "private" } " " }
            code.hash { (e.hash.get(..8).unwrap_or(&e.hash)) }
            " "
            time.age datetime=(e.created) { (age(now_ms, e.created)) }
            " "
            span.summary { (summary(states, total)) }
            " "
            progress max=(total.max(1)) value=(finished(states)) {}
        }
    }
}

/// The overview's live part: projects with their latest events.
pub fn overview_events(now_ms: i64, projects: &[(String, Vec<EventDetail>)]) -> Markup {
    html! {
        div #events data-live="events" {
            @if projects.is_empty() {
                p.empty { "No events yet. Push to a repository whose hook points at sai-server." }
            }
            @for (name, events) in projects {
                section.project {
                    h2 { (name) " "
                        img.badge-img src={ "/status/" (name) ".svg" } alt={ "status of " (name) };
                    }
                    @if events.is_empty() { p.empty { "no visible events" } }
                    @for d in events { (event_card(now_ms, d)) }
                }
            }
        }
    }
}

/// The builders summary on the overview.
pub fn builders_summary(builders: &[Builder]) -> Markup {
    let online = builders.iter().filter(|b| b.online).count();
    let (mut busy, mut slots) = (0usize, 0usize);
    for b in builders.iter().filter(|b| b.online) {
        for p in &b.platforms {
            busy += self::busy(p);
            slots += p.instances as usize;
        }
    }
    html! {
        div #builders-summary data-live="builders-summary" {
            a href="/builders" { (online) " builders online, " (builders.len() - online) " offline" }
            " · " (busy) " of " (slots) " instances busy"
        }
    }
}

/// The overview page.
pub fn overview(
    ctx: &PageCtx,
    projects: &[(String, Vec<EventDetail>)],
    builders: &[Builder],
) -> Markup {
    layout(
        ctx,
        "Overview",
        "overview",
        &[],
        html! {
            h1 { "Overview" }
            (builders_summary(builders))
            (overview_events(ctx.now_ms, projects))
        },
    )
}

/// Columns (platforms) and rows (configurations) of an event, in saifile order.
pub fn matrix_axes(tasks: &[Task]) -> (Vec<String>, Vec<String>) {
    let mut platforms: Vec<String> = Vec::new();
    let mut configs: Vec<String> = Vec::new();
    for t in tasks {
        if !platforms.contains(&t.platform) {
            platforms.push(t.platform.clone());
        }
        if !configs.contains(&t.configuration) {
            configs.push(t.configuration.clone());
        }
    }
    (platforms, configs)
}

/// The tooltip of a matrix cell.
pub fn cell_title(t: &Task) -> String {
    let mut s = format!("{} on {}: {}", t.configuration, t.platform, t.state);
    if let Some(d) = &t.detail {
        s.push_str(&format!(" ({d})"));
    }
    s
}

/// The task matrix, configurations x platforms.
pub fn matrix(tasks: &[Task]) -> Markup {
    let (platforms, configs) = matrix_axes(tasks);
    let mut at: BTreeMap<(&str, &str), Vec<&Task>> = BTreeMap::new();
    for t in tasks {
        at.entry((t.configuration.as_str(), t.platform.as_str()))
            .or_default()
            .push(t);
    }
    html! {
        div.matrix-wrap {
            table #matrix.matrix data-tasks=(tasks.len()) {
                thead { tr {
                    th.corner { "configuration \\ platform" }
                    @for p in &platforms { th.plat { span { (p) } } }
                } }
                tbody {
                    @for c in &configs {
                        tr {
                            th.conf { (c) }
                            @for p in &platforms {
                                td {
                                    @if let Some(ts) = at.get(&(c.as_str(), p.as_str())) {
                                        @for t in ts {
                                            a class={ "cell s-" (t.state) } id={ "c-" (t.id) } href={ "/t/" (t.id) } title=(cell_title(t)) data-state=(t.state) { (glyph(t.state)) }
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

/// A one-character sign for a state (colour is not the only cue).
pub fn glyph(state: TaskState) -> &'static str {
    match state {
        TaskState::Success => "✓",
        TaskState::Failed => "✗",
        TaskState::Running => "▶",
        TaskState::Cancelled => "–",
        TaskState::Waiting => "·",
    }
}

/// Form for a privileged action (only rendered for signed-in users).
fn action(session: &Session, path: &str, label: &str, id: &str, confirm_class: &str) -> Markup {
    html! {
        form.inline method="post" action=(path) {
            input type="hidden" name="csrf" value=(session.csrf);
            button id=(id) class=(confirm_class) type="submit" { (label) }
        }
    }
}

/// The tests that failed anywhere in an event, with their platforms.
pub fn event_tests(t: &EventTests) -> Markup {
    html! {
        @if !t.failed.is_empty() {
            section #failed-tests {
                h2 { "Failed tests (" (t.failed.len()) ")" }
                table.tests {
                    thead { tr { th { "test" } th { "platforms" } th { "message" } } }
                    tbody { @for f in &t.failed {
                        tr.test {
                            td { span.suite { (f.suite) } " " b.name { (f.name) }
                                @if f.flaky { " " span.badge.flaky title="also passed at this commit" { "flaky" } } }
                            td.platforms { @for p in &f.platforms { code { (p) } " " } }
                            td { @if let Some(m) = f.failures.first().and_then(|x| x.message.as_deref()) { pre.msg { (m) } } }
                        }
                    } }
                }
            }
        }
    }
}

/// A task's test results: failed tests with their messages first, then a
/// count of the rest, and refused reports with their reason.
pub fn task_tests(t: &TaskTests) -> Markup {
    let failed: Vec<_> = t.cases.iter().filter(|c| c.result.is_failure()).collect();
    let count = |r: TestOutcome| t.counts.get(&r).copied().unwrap_or(0);
    html! {
        @if !t.reports.is_empty() {
            section #tests {
                h2 { "Tests" }
                p #test-counts { (count(TestOutcome::Pass)) " passed, " (failed.len()) " failed, " (count(TestOutcome::Skip)) " skipped" }
                @for r in t.reports.iter().filter(|r| r.refused.is_some()) {
                    p.refused { "report " code { (r.name) } " refused: " (r.refused.as_deref().unwrap_or("")) }
                }
                @if !failed.is_empty() {
                    table.tests {
                        thead { tr { th { "test" } th { "result" } th { "message" } } }
                        tbody { @for c in &failed {
                            tr.test.failed {
                                td { span.suite { (c.suite) } " " b.name { (c.name) } }
                                td { (c.result.as_str()) }
                                td { @if let Some(m) = &c.message { pre.msg { (m) } } }
                            }
                        } }
                    }
                }
            }
        }
    }
}

/// The event page.
pub fn event(ctx: &PageCtx, d: &EventDetail, tests: Option<&EventTests>) -> Markup {
    let e = d;
    layout(
        ctx,
        &format!("{} {}", e.project, short_ref(&e.git_ref)),
        "event",
        &[("event", &e.id)],
        html! {
            h1 { (e.project) " " (short_ref(&e.git_ref)) " " code { (e.hash.get(..12).unwrap_or(&e.hash)) } }
            div #event-card data-live="event-card" { (event_card(ctx.now_ms, d)) }
            @if let Some(f) = d.expected_finish {
                p #expected-finish { "expected to finish " time.at datetime=(f) { "in " (duration((f - ctx.now_ms).max(0))) } }
            }
            @if let Some(s) = ctx.session {
                div.actions {
                    (action(s, &format!("/e/{}/rebuild", e.id), "Rebuild all", "rebuild-event", ""))
                    (action(s, &format!("/e/{}/delete", e.id), "Delete event", "delete-event", "danger"))
                }
            }
            @if (tasks_of(d).len() as i64) < d.task_count {
                p #matrix-partial {
                    "showing " (tasks_of(d).len()) " of " (d.task_count) " tasks (sai-web shows at most "
                    (crate::upstream::MAX_EVENT_TASKS) " of one event; sai-server's API lists every task, page by page)"
                }
            }
            (matrix(tasks_of(d)))
            @if let Some(t) = tests { (event_tests(t)) }
        },
    )
}

/// Why a waiting task waits, from the server's detail and the builders.
pub fn waiting_reason(t: &Task, builders: &[Builder]) -> Option<String> {
    if t.state != TaskState::Waiting {
        return None;
    }
    if t.infra_failures > 0 {
        return Some(format!(
            "attempt {} after {} infrastructure failure{}",
            t.attempt + 1,
            t.infra_failures,
            if t.infra_failures == 1 { "" } else { "s" }
        ));
    }
    if let Some(d) = &t.detail {
        return Some(d.clone());
    }
    let offers: Vec<_> = builders
        .iter()
        .filter(|b| b.online)
        .flat_map(|b| b.platforms.iter())
        .filter(|p| sai_core::platform::tuple_matches(&t.platform, &p.name))
        .collect();
    if offers.is_empty() {
        return Some(format!("no builder offers {}", t.platform));
    }
    let slots: u32 = offers.iter().map(|p| p.instances).sum();
    let busy: usize = offers.iter().map(|p| busy(p)).sum();
    if busy as u32 >= slots {
        return Some(format!("all {slots} instances of {} busy", t.platform));
    }
    Some("about to be offered to a builder".into())
}

/// The task page's live header: state, builder, timings, steps, artifacts.
pub fn task_info(now_ms: i64, t: &Task, builders: &[Builder]) -> Markup {
    // `i` counts from 0; the server's `failed_step` from 1, as the log does.
    let step_state = |i: i64| -> &'static str {
        if t.failed_step == Some(i + 1) {
            "failed"
        } else if i < t.build_step - 1 || (i == t.build_step - 1 && t.state.is_terminal()) {
            if t.state == TaskState::Success || t.failed_step.is_some_and(|f| i + 1 < f) {
                "success"
            } else {
                "done"
            }
        } else if i == t.build_step - 1 && t.state == TaskState::Running {
            "running"
        } else {
            "pending"
        }
    };
    html! {
        div #task-info data-live="task-info" data-state=(t.state) {
            dl.facts {
                dt { "state" } dd { span #task-state class={ "badge s-" (t.state) } { (t.state) }
                    @if let Some(r) = waiting_reason(t, builders) { " " span #waiting.why { (r) } }
                    @if let Some(r) = &t.reason { " " span.why { (r) } }
                    @if let Some(c) = t.exit_code { " " span.why { "exit code " (c) } }
                }
                dt { "builder" } dd { (t.builder.as_deref().unwrap_or("-")) }
                dt { "attempt" } dd { (t.attempt) @if t.infra_failures > 0 { " (" (t.infra_failures) " infrastructure failures)" } }
                dt { "created" } dd { time.age datetime=(t.created) { (age(now_ms, t.created)) } }
                @if let Some(e) = t.estimate_ms.filter(|_| !t.state.is_terminal()) {
                    dt { "estimate" } dd #estimate { "about " (duration(e)) }
                }
                @if let Some(s) = t.started {
                    dt { "started" } dd { time.age datetime=(s) { (age(now_ms, s)) } }
                    dt { "duration" } dd #duration {
                        @if let Some(e) = t.ended { (duration(e - s)) }
                        @else { time.elapsed datetime=(s) { @if now_ms > 0 { (duration(now_ms - s)) } } }
                    }
                }
            }
            h2 { "Steps" }
            ol.steps {
                @for (i, s) in t.steps.as_deref().unwrap_or_default().iter().enumerate() {
                    li class={ "step st-" (step_state(i as i64)) } {
                        code { (s) }
                        @if let Some(st) = t.step_times.iter().flatten().rev().find(|st| st.step == i as i64 + 1) {
                            " " span.step-time title={ "exit code " (st.exit_code) } { (duration(st.duration_ms)) }
                        }
                    }
                }
            }
            @if let Some(artifacts) = t.artifacts.as_ref().filter(|a| !a.is_empty()) {
                h2 { "Artifacts" }
                table.artifacts {
                    thead { tr { th { "name" } th { "size" } th { "sha256" } } }
                    tbody { @for a in artifacts {
                        tr {
                            td { a href={ "/t/" (t.id) "/artifacts/" (a.name) } download=(sai_core::artifact_name::file_name(&a.name)) { (a.name) } }
                            td { (size(a.size)) }
                            td { code { (a.sha256) } }
                        }
                    } }
                }
            }
        }
    }
}

/// The task page with its log viewer.
pub fn task(ctx: &PageCtx, t: &Task, builders: &[Builder], tests: Option<&TaskTests>) -> Markup {
    layout(
        ctx,
        &format!("{} {}", t.configuration, t.platform),
        "task",
        &[("task", &t.id), ("event", &t.event_id)],
        html! {
            h1 { a href={ "/e/" (t.event_id) } { "event" } " / " (t.configuration) " on " (t.platform) }
            @if let Some(s) = ctx.session {
                div.actions {
                    (action(s, &format!("/t/{}/rebuild", t.id), "Rebuild", "rebuild-task", ""))
                    (action(s, &format!("/t/{}/cancel", t.id), "Cancel", "cancel-task", "danger"))
                }
            }
            (task_info(ctx.now_ms, t, builders))
            @if let Some(tt) = tests { (task_tests(tt)) }
            h2 { "Log" }
            div.logbar {
                label { input #follow type="checkbox" checked; " follow" }
                button #first-error type="button" { "first error" }
                input #search type="search" placeholder="search log";
                button #search-next type="button" { "find" }
                a #raw href={ "/t/" (t.id) "/log.txt" } { "raw" }
                span #log-status {}
            }
            div #log.log tabindex="0" data-task=(t.id) data-epoch=(t.started.unwrap_or(t.created)) {
                div #log-spacer.spacer {}
                div #log-rows.rows {}
            }
            noscript { p { "The log viewer needs JavaScript; " a href={ "/t/" (t.id) "/log.txt" } { "download the raw log" } "." } }
        },
    )
}

/// The builders page's live table.
pub fn builders_table(now_ms: i64, builders: &[Builder]) -> Markup {
    html! {
        div #builders data-live="builders" {
            @if builders.is_empty() { p.empty { "No builder has connected yet." } }
            table.builders {
                thead { tr { th { "builder" } th { "state" } th { "platforms (busy/instances)" } th { "running" } th { "load" } th { "since" } } }
                tbody {
                    @for b in builders {
                        tr class={ @if b.online { "online" } @else { "offline" } } {
                            td { (b.name) br; small { (b.software) " " (b.peer.as_deref().unwrap_or("")) } }
                            td { @if b.online { "online" } @else { "offline" } }
                            td { ul { @for p in &b.platforms {
                                li { (p.name) " " (busy(p)) "/" (p.instances)
                                    " (" (p.instances as usize - busy(p).min(p.instances as usize)) " free)" }
                            } } }
                            td { @for p in &b.platforms { @for r in p.running.iter().flatten() {
                                a href={ "/t/" (r) } { code { (r.get(32..40).unwrap_or(r)) } } " "
                            } } }
                            td.load { (builder_load(b.load.as_ref())) }
                            td { time.age datetime=(b.since) { (age(now_ms, b.since)) } }
                        }
                    }
                }
            }
        }
    }
}

/// A builder's load cell: load average per CPUs, memory and disk free,
/// flagged when the disk is below the floor.
fn builder_load(load: Option<&sai_core::api::BuilderLoad>) -> Markup {
    let Some(load) = load else {
        return html! { "-" };
    };
    let (l, below) = (&load.report, load.below_disk_floor);
    let gib = |b: u64| format!("{:.1} GiB", b as f64 / (1u64 << 30) as f64);
    html! {
        @if let Some(c) = l.load_avg_1m_centi {
            "load " (format!("{:.2}", f64::from(c) / 100.0))
            @if let Some(n) = l.cpus { " / " (n) " CPUs" }
            br;
        }
        @if let (Some(a), Some(t)) = (l.mem_available_bytes, l.mem_total_bytes) {
            "mem " (gib(a)) " free of " (gib(t)) br;
        }
        @if let Some(d) = l.disk_free_bytes {
            span class={ @if below { "disk-low" } @else { "disk" } } {
                "disk " (gib(d)) " free"
                @if below { " (below floor " (gib(l.disk_floor_bytes)) ": no work)" }
            }
        }
    }
}

/// The builders page.
pub fn builders(ctx: &PageCtx, builders: &[Builder]) -> Markup {
    layout(
        ctx,
        "Builders",
        "builders",
        &[],
        html! { h1 { "Builders" } (builders_table(ctx.now_ms, builders)) },
    )
}

/// The sign-in form.
pub fn signin(ctx: &PageCtx, pre_csrf: &str, next: &str, error: Option<&str>) -> Markup {
    layout(
        ctx,
        "Sign in",
        "signin",
        &[],
        html! {
            h1 { "Sign in" }
            @if let Some(e) = error { p #signin-error.error { (e) } }
            form.signin method="post" action="/signin" {
                input type="hidden" name="csrf" value=(pre_csrf);
                input type="hidden" name="next" value=(next);
                label { "user " input #name name="name" autocomplete="username" required; }
                label { "password " input #password name="password" type="password" autocomplete="current-password" required; }
                button #signin-submit type="submit" { "Sign in" }
            }
        },
    )
}

/// A plain message page (errors, not found).
pub fn message(ctx: &PageCtx, title: &str, text: &str) -> Markup {
    layout(
        ctx,
        title,
        "message",
        &[],
        html! { h1 { (title) } p { (text) } },
    )
}

/// Used by callers that assemble fragments by hand.
pub fn raw(s: &str) -> Markup {
    PreEscaped(s.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summaries_read_like_the_issue_asks() {
        let mut m = BTreeMap::new();
        m.insert(TaskState::Success, 530);
        m.insert(TaskState::Failed, 3);
        m.insert(TaskState::Running, 15);
        assert_eq!(summary(&m, 548), "530/548 passed, 3 failed, 15 running");
        let all: BTreeMap<TaskState, usize> = [(TaskState::Success, 4)].into();
        assert_eq!(summary(&all, 4), "All 4 passed");
    }

    #[test]
    fn the_failed_step_is_the_one_the_server_numbers_from_one() {
        let mut t = task_fixture();
        t.state = TaskState::Failed;
        t.steps = Some(vec!["echo a".into(), "exit 3".into(), "echo c".into()]);
        t.build_step = 2;
        t.failed_step = Some(2);
        t.step_times = Some(vec![
            sai_core::api::StepTime {
                step: 1,
                exit_code: 0,
                started: 1000,
                ended: 3500,
                duration_ms: 2500,
            },
            sai_core::api::StepTime {
                step: 2,
                exit_code: 3,
                started: 3500,
                ended: 3600,
                duration_ms: 100,
            },
        ]);
        let html = task_info(0, &t, &[]).into_string();
        assert!(
            html.contains(
                "<code>echo a</code> <span class=\"step-time\" title=\"exit code 0\">2.5s</span>"
            ),
            "{html}"
        );
        assert!(html.contains(">0.1s</span>"), "{html}");
        let classes: Vec<&str> = html
            .match_indices("class=\"step st-")
            .map(|(at, m)| html[at + m.len()..].split('"').next().unwrap())
            .collect();
        assert_eq!(classes, ["success", "failed", "pending"], "{html}");
    }

    #[test]
    fn an_event_cut_short_says_how_many_tasks_it_shows() {
        let tasks = vec![task_fixture(), task_fixture()];
        let mut d = crate::test_fixtures::event(
            "refs/heads/main",
            crate::upstream::EventState::Running,
            false,
        );
        d.task_count = 2;
        d.tasks = Some(tasks);
        let ctx = PageCtx {
            session: None,
            now_ms: 0,
        };
        assert!(
            !event(&ctx, &d, None)
                .into_string()
                .contains("matrix-partial")
        );
        d.task_count = 30_000;
        let html = event(&ctx, &d, None).into_string();
        assert!(html.contains("showing 2 of 30000 tasks"), "{html}");
    }

    #[test]
    fn untrusted_text_is_escaped() {
        let mut t = task_fixture();
        t.configuration = "<script>x</script>".into();
        let html = matrix(&[t]).into_string();
        assert!(!html.contains("<script>x"));
        assert!(html.contains("&lt;script&gt;"));
    }

    fn task_fixture() -> Task {
        serde_json::from_value(serde_json::json!({
            "id": "A".repeat(64), "event_id": "A".repeat(32),
            "configuration": "<script>x</script>", "platform": "linux",
            "state": "waiting", "attempt": 0, "infra_failures": 0, "build_step": 0,
            "step_count": 0, "priority": false, "created": 0, "last_updated": 0
        }))
        .unwrap()
    }

    #[test]
    fn builders_table_shows_load_and_a_low_disk() {
        let b: Builder = serde_json::from_value(serde_json::json!({
            "name": "host1", "online": true, "software": "sai-builder 0.1.0",
            "platforms": [{"name": "linux", "instances": 2, "running": []}],
            "since": 0,
            "load": {"reported": 1, "load_avg_1m_centi": 150, "cpus": 4,
                     "mem_total_bytes": 8589934592u64, "mem_available_bytes": 4294967296u64,
                     "disk_free_bytes": 536870912, "disk_floor_bytes": 2147483648u64,
                     "below_disk_floor": true, "running_tasks": 0}
        }))
        .unwrap();
        let html = builders_table(0, &[b]).into_string();
        assert!(html.contains("load 1.50 / 4 CPUs"), "{html}");
        assert!(html.contains("mem 4.0 GiB free of 8.0 GiB"), "{html}");
        assert!(
            html.contains(
                r#"<span class="disk-low">disk 0.5 GiB free (below floor 2.0 GiB: no work)</span>"#
            ),
            "{html}"
        );
    }
}
