//! One test (or more) per scheduling rule, on the pure state machine with a
//! fake clock: the time is whatever each call is given.

use super::*;
use sai_core::protocol::{CLOSE_REPLACED, PlatformCapacity, ServerMessage, TaskResult};
use sai_core::saifile::TaskSpec;
use sai_core::task::{EventId, EventState, RunRecord};

/// The fake event database handle: the event's number.
type Db = u32;

const LINUX: &str = "linux-debian-12/x86_64-amd/gcc";
const ESP32: &str = "freertos/esp32/xtensa-esp32";

struct Fixture {
    s: Sched<Db>,
    seq: i64,
    /// The last event added, as the store would hand it back.
    built: Option<(Event, Vec<Task>)>,
}

fn offer(name: &str, instances: u32) -> PlatformOffer {
    PlatformOffer {
        name: name.into(),
        instances,
    }
}

/// The hello of builder `name` (no peer address) offering `platforms`.
fn hello(name: &str, software: &str, platforms: Vec<PlatformOffer>) -> Hello {
    Hello {
        name: name.into(),
        peer: None,
        software: software.into(),
        platforms,
    }
}

fn task_bytes(i: usize) -> [u8; 16] {
    let mut b = [0u8; 16];
    b[..8].copy_from_slice(&(i as u64 + 1).to_be_bytes());
    b
}

fn ev_id(n: u8) -> EventId {
    EventId::from_bytes([n; 16])
}

impl Fixture {
    fn new(max_infra: u32) -> Fixture {
        Fixture {
            s: Sched::new(max_infra),
            seq: 0,
            built: None,
        }
    }

    /// A new event with tasks `(platform, priority)`, as the store hands
    /// it to the scheduler.
    fn build(&mut self, now: i64, tasks: &[(&str, bool)]) -> (Event, Vec<Task>) {
        self.seq += 1;
        let id = ev_id(self.seq as u8);
        let tasks: Vec<Task> = tasks
            .iter()
            .enumerate()
            .map(|(i, (p, prio))| Task {
                id: id.task(task_bytes(i)),
                idx: i as i64,
                spec: TaskSpec {
                    configuration: format!("c{i}"),
                    platform: p.to_string(),
                    steps: vec!["true".into()],
                    artifacts: vec![],
                    packages: vec![],
                    test_reports: vec![],
                },
                priority: *prio,
                created: now,
                last_updated: now,
                run: RunRecord::new(),
            })
            .collect();
        let event = Event {
            id,
            project: "demo".into(),
            git_ref: "refs/heads/main".into(),
            hash: "abcdef0".into(),
            fetch_url: "https://x".into(),
            source_ip: None,
            created: now,
            last_updated: now,
            state: EventState::Waiting,
            sec: false,
            task_count: tasks.len() as i64,
            seq: self.seq,
            rebuild_of: None,
        };
        (event, tasks)
    }

    /// Add an event with tasks `(platform, priority)`, ready at `ready_at`.
    fn event(&mut self, now: i64, tasks: &[(&str, bool)], ready_at: i64) -> Vec<TaskId> {
        let (event, tasks) = self.build(now, tasks);
        let ids = tasks.iter().map(|t| t.id.clone()).collect();
        self.built = Some((event.clone(), tasks.clone()));
        self.s
            .add_event(now, event, self.seq as u32, tasks, ready_at, false);
        ids
    }

    /// An event of two linux tasks, both offered at time 0 to connection 1
    /// (two linux instances).
    fn both_offered_to_conn_1(&mut self) -> Vec<TaskId> {
        let t = self.event(0, &[(LINUX, false), (LINUX, false)], 0);
        self.hello(0, 1, &[(LINUX, 2)]);
        assert_eq!(self.offers(1).len(), 2);
        t
    }

    fn hello(&mut self, now: i64, conn: ConnId, offers: &[(&str, u32)]) {
        let platforms = offers.iter().map(|(n, i)| offer(n, *i)).collect();
        self.s
            .builder_hello(now, conn, hello(&format!("b{conn}"), "test", platforms));
    }

    /// Builder `conn` (one linux slot) says hello at `now`, is offered
    /// `task` and accepts it.
    fn running_on(&mut self, now: i64, conn: ConnId, task: &TaskId) {
        self.hello(now, conn, &[(LINUX, 1)]);
        self.offers(conn);
        assert!(self.s.accept(conn, task));
    }

    /// Task ids offered to `conn` by the effects so far (and drain them).
    fn offers(&mut self, conn: ConnId) -> Vec<String> {
        self.s
            .take_effects()
            .into_iter()
            .filter_map(|e| match e {
                Effect::Send {
                    conn: c,
                    msg: ServerMessage::Offer { task },
                } if c == conn => Some(task.task_id),
                _ => None,
            })
            .collect()
    }

    /// The effects so far (drained) and the last run record persisted.
    fn last_persisted(&mut self) -> (Vec<Effect<Db>>, RunRecord) {
        let fx = self.s.take_effects();
        let run = fx
            .iter()
            .rev()
            .find_map(|e| match e {
                Effect::Persist { run, .. } => Some(run.clone()),
                _ => None,
            })
            .expect("a run record was persisted");
        (fx, run)
    }

    fn run(&self, t: &TaskId) -> RunRecord {
        self.s.run_of(t).expect("task in memory").clone()
    }
}

#[test]
fn older_events_first_then_priority_then_saifile_order() {
    let mut f = Fixture::new(3);
    let a = f.event(0, &[(LINUX, false), (LINUX, false)], 0);
    let b = f.event(0, &[(LINUX, false), (LINUX, true), (LINUX, false)], 0);
    f.hello(0, 1, &[(LINUX, 1)]);
    let mut order = Vec::new();
    for _ in 0..5 {
        let o = f.offers(1);
        assert_eq!(o.len(), 1, "one slot, one offer");
        order.push(o[0].clone());
        assert!(f.s.accept(1, &o[0]));
        assert!(f.s.finished(1, 1, &o[0], &TaskResult::Success));
    }
    let want: Vec<String> = [&a[0], &a[1], &b[1], &b[0], &b[2]]
        .iter()
        .map(|t| t.to_string())
        .collect();
    assert_eq!(order, want);
}

#[test]
fn a_task_runs_wholly_on_one_slot_of_a_matching_offer() {
    let mut f = Fixture::new(3);
    let t = f.event(0, &[("linux", false), (ESP32, false)], 0);
    f.hello(0, 1, &[(LINUX, 2)]);
    // Only the linux task matches; it is offered once, to one slot.
    assert_eq!(f.offers(1), vec![t[0].to_string()]);
    let r = f.run(&t[0]);
    assert_eq!(r.state, TaskState::Running);
    assert_eq!(r.builder.as_deref(), Some("b1"));
    assert_eq!(r.instance.as_deref(), Some(LINUX));
    // Steps are reported against that slot only; another connection cannot.
    assert!(f.s.accept(1, &t[0]));
    assert!(!f.s.step_started(2, &t[0], 0));
    assert!(f.s.step_started(1, &t[0], 0));
    assert_eq!(f.run(&t[0]).build_step, 1);
    assert_eq!(f.run(&t[1]).state, TaskState::Waiting);
}

#[test]
fn a_declined_task_is_not_offered_again_until_a_task_ends_or_capacity_is_free() {
    let mut f = Fixture::new(3);
    let t = f.event(0, &[(LINUX, false), (LINUX, false)], 0);
    f.hello(0, 1, &[(LINUX, 1)]);
    assert_eq!(f.offers(1), vec![t[0].to_string()]);
    assert!(f.s.reject(1, 1, &t[0], "disk full"));
    let r = f.run(&t[0]);
    assert_eq!(r.state, TaskState::Waiting);
    assert_eq!(r.attempt, 0, "a decline is not an attempt");
    assert!(r.reason.unwrap().contains("disk full"));
    // The next task is offered instead, never the declined one.
    assert_eq!(f.offers(1), vec![t[1].to_string()]);
    assert!(f.s.reject(2, 1, &t[1], "busy"));
    assert!(f.offers(1).is_empty());
    // Free capacity on that platform lifts the declines.
    f.s.capacity(
        3,
        1,
        &[PlatformCapacity {
            name: LINUX.into(),
            free: 1,
        }],
    );
    assert_eq!(f.offers(1), vec![t[0].to_string()]);
}

#[test]
fn a_task_end_lifts_the_connections_declines() {
    let mut f = Fixture::new(3);
    let t = f.both_offered_to_conn_1();
    assert!(f.s.reject(1, 1, &t[1], "no"));
    assert!(f.offers(1).is_empty(), "declined: not offered again");
    assert!(f.s.accept(1, &t[0]));
    assert!(f.s.finished(2, 1, &t[0], &TaskResult::Success));
    assert_eq!(f.offers(1), vec![t[1].to_string()]);
}

#[test]
fn a_dead_builder_requeues_its_accepted_task_and_counts_an_infrastructure_failure() {
    let mut f = Fixture::new(3);
    let t = f.event(0, &[(LINUX, false)], 0);
    f.running_on(0, 1, &t[0]);
    f.s.builder_gone(5, 1, &GoneCause::Silent { ms: 30000 });
    let fx = f.s.take_effects();
    assert!(fx.contains(&Effect::Release { conn: 1 }), "{fx:?}");
    let r = f.run(&t[0]);
    assert_eq!(r.state, TaskState::Waiting);
    assert_eq!(r.infra_failures, 1);
    assert!(r.reason.unwrap().contains("went silent"));
    // The next builder gets it as attempt 2.
    f.hello(6, 2, &[(LINUX, 1)]);
    let fx = f.s.take_effects();
    let attempt = fx.iter().find_map(|e| match e {
        Effect::Send {
            conn: 2,
            msg: ServerMessage::Offer { task },
        } => Some(task.attempt),
        _ => None,
    });
    assert_eq!(attempt, Some(2));
}

#[test]
fn the_attempt_cap_fails_the_task_as_an_infrastructure_failure() {
    let mut f = Fixture::new(2);
    let t = f.event(0, &[(LINUX, false)], 0);
    for (n, conn) in [(1, 1), (2, 2)] {
        f.hello(n * 10, conn, &[(LINUX, 1)]);
        assert_eq!(f.offers(conn), vec![t[0].to_string()]);
        assert!(f.s.accept(conn, &t[0]));
        if n == 1 {
            f.s.builder_gone(n * 10 + 1, conn, &GoneCause::Disconnected);
        } else {
            assert!(f.s.finished(
                n * 10 + 1,
                conn,
                &t[0],
                &TaskResult::InfraError {
                    reason: "no disk".into()
                }
            ));
        }
    }
    let (fx, last) = f.last_persisted();
    assert_eq!(last.state, TaskState::Failed);
    assert_eq!(last.infra_failures, 2);
    assert_eq!(last.ended, Some(21));
    assert!(
        last.reason
            .unwrap()
            .contains("infrastructure failure, not a build failure"),
    );
    assert!(fx.contains(&Effect::EventState {
        event: t[0].event(),
        state: EventState::Failed
    }));
    assert!(
        !f.s.has_event(&t[0].event()),
        "terminal events leave memory"
    );
}

#[test]
fn a_hand_back_requeues_without_counting_an_attempt() {
    let mut f = Fixture::new(1);
    let t = f.event(0, &[(LINUX, false)], 0);
    f.hello(0, 1, &[(LINUX, 1)]);
    for n in 0..3 {
        f.offers(1);
        assert!(f.s.accept(1, &t[0]));
        assert_eq!(f.run(&t[0]).attempt, 1, "hand-back {n} counted an attempt");
        assert!(f.s.finished(
            n,
            1,
            &t[0],
            &TaskResult::HandedBack {
                reason: "shut down".into()
            }
        ));
        let r = f.run(&t[0]);
        assert_eq!(
            (r.state, r.attempt, r.infra_failures),
            (TaskState::Waiting, 0, 0)
        );
        assert!(r.reason.unwrap().contains("handed back"));
        // Not offered back to the connection that handed it back.
        assert!(f.offers(1).is_empty());
        f.s.capacity(
            n,
            1,
            &[PlatformCapacity {
                name: LINUX.into(),
                free: 1,
            }],
        );
    }
}

#[test]
fn waiting_detail_names_a_platform_no_builder_offers() {
    let mut f = Fixture::new(3);
    f.hello(0, 1, &[(LINUX, 1)]);
    let fleet = f.s.take_fleet().unwrap();
    assert_eq!(
        fleet.waiting_detail(ESP32).as_deref(),
        Some(format!("no builder offers {ESP32}").as_str())
    );
    assert_eq!(fleet.waiting_detail("linux"), None);
    assert!(
        f.s.take_fleet().is_none(),
        "unchanged fleet: no new snapshot"
    );
    f.s.builder_gone(1, 1, &GoneCause::Disconnected);
    let fleet = f.s.take_fleet().unwrap();
    assert!(fleet.waiting_detail("linux").is_some());
}

#[test]
fn waiting_detail_says_when_every_matching_instance_is_busy() {
    let mut f = Fixture::new(3);
    f.hello(0, 1, &[(LINUX, 2)]);
    f.event(0, &[(LINUX, false), (LINUX, false), (LINUX, false)], 0);
    assert_eq!(f.offers(1).len(), 2, "two instances, two offers");
    let fleet = f.s.take_fleet().unwrap();
    assert_eq!(
        fleet.waiting_detail("linux").as_deref(),
        Some("all 2 instances of linux busy")
    );
    // A second builder with one free instance: nothing to explain.
    f.hello(1, 2, &[(LINUX, 1)]);
    let fleet = f.s.take_fleet().unwrap();
    assert_eq!(f.offers(2).len(), 1);
    let fleet_busy = f.s.take_fleet().unwrap_or(fleet);
    assert_eq!(
        fleet_busy.waiting_detail(LINUX).as_deref(),
        Some(format!("all 3 instances of {LINUX} busy").as_str())
    );
    f.s.builder_gone(2, 1, &GoneCause::Disconnected);
    let fleet = f.s.take_fleet().unwrap();
    assert_eq!(
        fleet.waiting_detail(LINUX).as_deref(),
        Some(format!("the only instance of {LINUX} is busy").as_str()),
        "{:?}",
        fleet.builders
    );
}

#[test]
fn dispatch_grace_holds_a_new_event_until_its_time() {
    let mut f = Fixture::new(3);
    f.hello(0, 1, &[(LINUX, 1)]);
    let t = f.event(1000, &[(LINUX, false)], 4000);
    assert!(f.offers(1).is_empty(), "nothing during the grace");
    assert_eq!(f.s.next_wake(1000), Some(4000));
    f.s.tick(3999);
    assert!(f.offers(1).is_empty());
    f.s.tick(4000);
    assert_eq!(f.offers(1), vec![t[0].to_string()]);
    assert_eq!(f.s.next_wake(4000), None);
}

#[test]
fn builder_events_visit_only_matching_platforms() {
    // A large backlog nobody can run: builders coming and going do not
    // touch it, and what can run is still found at once.
    let mut f = Fixture::new(3);
    let backlog: Vec<(String, bool)> = (0..20_000)
        .map(|i| (format!("netbsd/arch{}/gcc", i % 40), false))
        .collect();
    let refs: Vec<(&str, bool)> = backlog.iter().map(|(p, b)| (p.as_str(), *b)).collect();
    f.event(0, &refs, 0);
    let runnable = f.event(0, &[(LINUX, false)], 0);
    assert_eq!(f.s.waiting.len(), 41, "indexed by platform");
    let start = std::time::Instant::now();
    for conn in 1..=1000 {
        f.hello(1, conn, &[(ESP32, 4)]);
    }
    for conn in 1..=1000 {
        f.s.builder_gone(2, conn, &GoneCause::Disconnected);
    }
    // Not a timing assertion (that is the bench's job), but a guard against
    // a rescan of 20,000 tasks per event: 2,000 such scans take minutes.
    assert!(start.elapsed() < std::time::Duration::from_secs(20));
    f.s.take_effects();
    f.hello(3, 2000, &[(LINUX, 1)]);
    assert_eq!(f.offers(2000), vec![runnable[0].to_string()]);
}

#[test]
fn a_departed_builder_is_released_and_its_unaccepted_offers_cost_nothing() {
    let mut f = Fixture::new(3);
    let t = f.both_offered_to_conn_1();
    assert!(f.s.accept(1, &t[0]));
    f.s.builder_gone(1, 1, &GoneCause::Disconnected);
    let fx = f.s.take_effects();
    assert!(fx.contains(&Effect::Release { conn: 1 }));
    assert!(matches!(f.s.lookup(1, &t[0]), Lookup::Unknown));
    assert_eq!(f.run(&t[0]).infra_failures, 1, "accepted: counted");
    let r = f.run(&t[1]);
    assert_eq!(r.state, TaskState::Waiting);
    assert_eq!(
        (r.attempt, r.infra_failures),
        (0, 0),
        "never accepted: free"
    );
    assert!(r.reason.unwrap().contains("before accepting"));
}

#[test]
fn an_unaccepted_offer_counts_when_the_builder_broke_the_protocol() {
    let mut f = Fixture::new(3);
    let t = f.event(0, &[(LINUX, false)], 0);
    f.hello(0, 1, &[(LINUX, 1)]);
    f.offers(1);
    f.s.builder_gone(1, 1, &GoneCause::Refused("credit exceeded".into()));
    assert_eq!(f.run(&t[0]).infra_failures, 1);
}

#[test]
fn restarting_builders_never_fail_a_waiting_task() {
    // Issue 11.1: five restarts while tasks wait; offers arrive while the
    // builder is closing, are never accepted, and cost nothing.
    let mut f = Fixture::new(3);
    let t = f.event(0, &[(LINUX, false), (LINUX, false)], 0);
    for conn in 1..=5 {
        f.hello(conn as i64, conn, &[(LINUX, 1)]);
        f.s.shutting_down(conn);
        f.s.builder_gone(conn as i64, conn, &GoneCause::Disconnected);
    }
    for id in &t {
        let r = f.run(id);
        assert_eq!(r.state, TaskState::Waiting);
        assert_eq!((r.attempt, r.infra_failures), (0, 0), "{r:?}");
    }
}

#[test]
fn a_link_that_is_shutting_down_gets_no_offers() {
    let mut f = Fixture::new(3);
    f.hello(0, 1, &[(LINUX, 1)]);
    f.s.shutting_down(1);
    f.event(1, &[(LINUX, false)], 1);
    f.s.tick(2);
    assert!(f.offers(1).is_empty());
    f.hello(3, 2, &[(LINUX, 1)]);
    assert_eq!(f.offers(2).len(), 1, "other links still get it");
}

#[test]
fn a_running_task_of_a_closing_link_comes_back_without_counting() {
    // Issue 11.2: the hand-back may not reach the server before the link
    // ends; a link that said it is shutting down is treated as handing back.
    let mut f = Fixture::new(3);
    let t = f.event(0, &[(LINUX, false)], 0);
    f.running_on(0, 1, &t[0]);
    f.s.shutting_down(1);
    f.s.builder_gone(1, 1, &GoneCause::Disconnected);
    let r = f.run(&t[0]);
    assert_eq!(r.state, TaskState::Waiting);
    assert_eq!((r.attempt, r.infra_failures), (0, 0));
    assert!(r.reason.unwrap().contains("shutting down"));
    // Same when the server itself closes the links on shutdown.
    f.running_on(2, 2, &t[0]);
    f.s.stop(1001, "bye");
    f.s.builder_gone(3, 2, &GoneCause::ServerShutdown);
    let r = f.run(&t[0]);
    assert_eq!((r.attempt, r.infra_failures), (0, 0));
    assert!(f.offers(2).is_empty(), "a stopping server offers nothing");
}

#[test]
fn operator_cancel_stops_the_builder_and_conflicts_when_over() {
    let mut f = Fixture::new(3);
    let t = f.event(0, &[(LINUX, false), (LINUX, false)], 0);
    f.running_on(0, 1, &t[0]);
    assert_eq!(f.s.cancel_task(5, &t[0], "ops"), Ok(()));
    let fx = f.s.take_effects();
    assert!(
        fx.iter().any(|e| matches!(e,
        Effect::Send { conn: 1, msg: ServerMessage::Cancel { task_id, .. } } if *task_id == *t[0]))
    );
    assert!(matches!(f.s.lookup(1, &t[0]), Lookup::Cancelled));
    // The freed slot takes the next task.
    assert!(fx.iter().any(|e| matches!(e,
        Effect::Send { conn: 1, msg: ServerMessage::Offer { task } } if task.task_id == *t[1])));
    assert!(f.s.accept(1, &t[1]));
    assert!(f.s.finished(6, 1, &t[1], &TaskResult::Success));
    assert!(!f.s.has_event(&t[0].event()));
    assert!(f.s.cancel_task(7, &t[0], "ops").is_err());
}

#[test]
fn rebuild_resets_the_run_record_and_offers_again() {
    let mut f = Fixture::new(3);
    let t = f.event(0, &[(LINUX, false)], 0);
    f.running_on(0, 1, &t[0]);
    let failed = TaskResult::Failed {
        exit_code: 2,
        step: 0,
    };
    assert!(f.s.finished(1, 1, &t[0], &failed));
    let (_, run) = f.last_persisted();
    assert_eq!(run.state, TaskState::Failed);
    assert_eq!(run.reason.as_deref(), Some("step 1 exited with 2"));
    assert!(!f.s.has_event(&t[0].event()));
    // The server loads the finished event again (keep) and resets it.
    let (event, mut tasks) = f.built.clone().unwrap();
    tasks[0].run = run;
    f.s.add_event(2, event, 1, tasks, 2, true);
    assert!(f.s.take_effects().is_empty(), "kept as it is until reset");
    let reset = f.s.reset_tasks(3, &t[0].event(), None, "ops");
    assert_eq!(reset, vec![t[0].clone()]);
    let r = f.run(&t[0]);
    assert_eq!((r.attempt, r.exit_code, r.failed_step), (0, None, None));
    assert_eq!(r.reason.as_deref(), Some("rebuild requested by ops"));
    assert_eq!(f.offers(1), vec![t[0].to_string()]);
}

#[test]
fn tasks_left_running_by_a_previous_server_are_requeued_on_load() {
    let mut f = Fixture::new(3);
    let (mut event, mut tasks) = f.build(0, &[(LINUX, false)]);
    event.state = EventState::Running;
    tasks[0].run.state = TaskState::Running;
    tasks[0].run.attempt = 1;
    let id = event.id.clone();
    f.s.add_event(0, event, 9, tasks.clone(), 0, false);
    let fx = f.s.take_effects();
    match &fx[0] {
        Effect::Persist { db, task, run } => {
            assert_eq!((*db, task), (9, &tasks[0].id));
            assert_eq!(run.state, TaskState::Waiting);
            assert_eq!(run.attempt, 1, "not counted again");
            assert!(run.reason.as_deref().unwrap().contains("server restarted"));
        }
        other => panic!("{other:?}"),
    }
    assert!(fx.contains(&Effect::EventState {
        event: id,
        state: EventState::Waiting
    }));
}

/// An event loaded at start-up whose one task a previous server left
/// `running` on builder `b1`, with a restart grace of 10 s.
fn left_running(f: &mut Fixture) -> TaskId {
    f.s = Sched::new(3).with_restart_grace(10_000);
    let (mut event, mut tasks) = f.build(0, &[(LINUX, false)]);
    event.state = EventState::Running;
    tasks[0].run.state = TaskState::Running;
    tasks[0].run.attempt = 1;
    tasks[0].run.builder = Some("b1".into());
    let id = tasks[0].id.clone();
    f.s.add_event(1_000, event, 9, tasks, 0, false);
    assert!(
        !f.s.take_effects()
            .iter()
            .any(|e| matches!(e, Effect::Persist { .. })),
        "kept running, not requeued"
    );
    id
}

#[test]
fn a_task_left_running_is_claimed_back_by_its_builder_within_the_grace() {
    let mut f = Fixture::new(3);
    let t = left_running(&mut f);
    assert_eq!(
        f.s.next_wake(1_000),
        Some(11_000),
        "wakes at the grace's end"
    );
    // Another builder cannot take it; nor is it offered to anyone.
    f.hello(2_000, 2, &[(LINUX, 1)]);
    assert!(f.offers(2).is_empty());
    let e = f.s.claim(2_000, 2, &t, LINUX).unwrap_err();
    assert!(e.contains("not held for builder b2"), "{e}");
    // Its own builder claims it before being offered anything.
    let joined = f.s.join(3_000, 1, hello("b1", "t", vec![offer(LINUX, 1)]));
    f.s.claim(3_000, 1, &t, LINUX).unwrap();
    f.s.joined(3_000, 1, joined);
    assert!(
        f.offers(1).is_empty(),
        "its only slot is the claimed task's"
    );
    // The grace passing changes nothing now; its result counts once.
    f.s.tick(20_000);
    assert_eq!(f.run(&t).state, TaskState::Running);
    assert!(f.s.finished(21_000, 1, &t, &TaskResult::Success));
    let (_, run) = f.last_persisted();
    assert_eq!((run.state, run.attempt), (TaskState::Success, 1));
}

#[test]
fn a_task_left_running_and_not_claimed_in_time_is_requeued_without_counting() {
    let mut f = Fixture::new(3);
    let t = left_running(&mut f);
    f.s.tick(10_999);
    assert_eq!(f.run(&t).state, TaskState::Running);
    f.s.tick(11_000);
    let (_, run) = f.last_persisted();
    assert_eq!(run.state, TaskState::Waiting);
    assert_eq!((run.attempt, run.infra_failures), (1, 0));
    assert!(
        run.reason
            .as_deref()
            .unwrap()
            .contains("did not claim it back within 10 s"),
        "{run:?}"
    );
    // Too late now: the claim is refused.
    f.hello(12_000, 1, &[(LINUX, 1)]);
    assert_eq!(f.offers(1), vec![t.to_string()], "offered afresh");
    let e = f.s.claim(12_000, 1, &t, LINUX).unwrap_err();
    assert!(e.contains("not held"), "{e}");
}

#[test]
fn a_cancelled_task_left_running_cannot_be_claimed() {
    let mut f = Fixture::new(3);
    let t = left_running(&mut f);
    f.s.cancel_task(2_000, &t, "ops").unwrap();
    f.hello(3_000, 1, &[(LINUX, 1)]);
    let e = f.s.claim(3_000, 1, &t, LINUX).unwrap_err();
    assert!(e.contains("not running on this server"), "{e}");
}

#[test]
fn a_server_shutdown_leaves_accepted_tasks_running_for_their_claim() {
    let mut f = Fixture::new(3);
    f.s = Sched::new(3).with_restart_grace(10_000);
    f.hello(0, 1, &[(LINUX, 1)]);
    let t = f.event(0, &[(LINUX, false)], 0);
    f.s.tick(0);
    assert!(f.s.accept(1, t[0].as_ref()));
    f.s.take_effects();
    f.s.stop(1001, "sai-server is shutting down");
    f.s.builder_gone(1, 1, &GoneCause::ServerShutdown);
    assert!(
        !f.s.take_effects()
            .iter()
            .any(|e| matches!(e, Effect::Persist { .. })),
        "nothing persisted: the store keeps it running"
    );
}

fn load(free: u64, floor: u64) -> BuilderLoad {
    BuilderLoad {
        load_avg_1m_centi: Some(50),
        cpus: Some(4),
        mem_total_bytes: Some(8 << 30),
        mem_available_bytes: Some(4 << 30),
        disk_free_bytes: Some(free),
        disk_floor_bytes: floor,
        running_tasks: 0,
    }
}

#[test]
fn a_builder_below_its_disk_floor_gets_no_offers_and_waiting_tasks_say_why() {
    const GIB: u64 = 1 << 30;
    let mut f = Fixture::new(3);
    f.hello(0, 1, &[(LINUX, 2)]);
    // Below its own floor before any work exists.
    f.s.builder_load(1, 1, load(GIB / 2, 2 * GIB));
    let t = f.event(2, &[(LINUX, false)], 2);
    f.s.tick(3);
    assert!(f.offers(1).is_empty(), "no offer below the disk floor");
    assert_eq!(f.run(&t[0]).state, TaskState::Waiting);
    let fleet = f.s.take_fleet().unwrap();
    let b = &fleet.builders[0];
    let l = b.load.as_ref().expect("load published");
    assert_eq!(
        (
            l.reported,
            l.report.disk_free_bytes,
            l.report.disk_floor_bytes,
            l.below_disk_floor
        ),
        (1, Some(GIB / 2), 2 * GIB, true)
    );
    assert_eq!(l.report.load_avg_1m_centi, Some(50));
    assert_eq!(
        fleet.waiting_detail(LINUX).as_deref(),
        Some(
            format!(
                "every builder offering {LINUX} is low on disk: b1 has 512 MiB free in its job directory, below its floor of 2.0 GiB"
            )
            .as_str()
        )
    );
    // Another builder with room takes the task; the detail goes away.
    f.hello(4, 2, &[(LINUX, 1)]);
    assert_eq!(f.offers(2), vec![t[0].to_string()]);
    let fleet = f.s.take_fleet().unwrap();
    assert_eq!(fleet.waiting_detail(LINUX), None);
    // A report above the floor makes the first builder eligible at once.
    let u = f.event(5, &[(LINUX, false)], 5);
    f.s.tick(6);
    assert!(f.offers(1).is_empty());
    f.s.builder_load(7, 1, load(3 * GIB, 2 * GIB));
    assert_eq!(f.offers(1), vec![u[0].to_string()]);
}

#[test]
fn the_server_disk_floor_applies_when_larger_than_the_builders() {
    const GIB: u64 = 1 << 30;
    let mut f = Fixture::new(3);
    f.s = Sched::new(3).with_disk_floor(10 * GIB);
    f.hello(0, 1, &[(LINUX, 1)]);
    f.s.builder_load(0, 1, load(5 * GIB, GIB));
    let t = f.event(1, &[(LINUX, false)], 1);
    f.s.tick(1);
    assert!(f.offers(1).is_empty());
    let fleet = f.s.take_fleet().unwrap();
    let detail = fleet.waiting_detail(LINUX).unwrap();
    assert!(detail.contains("below its floor of 10 GiB"), "{detail}");
    // A builder that reports no disk figure is not held back.
    f.hello(2, 2, &[(LINUX, 1)]);
    assert_eq!(f.offers(2), vec![t[0].to_string()]);
}

#[test]
fn queue_stats_count_waiting_tasks_per_platform_with_the_oldest() {
    let mut f = Fixture::new(3);
    assert_eq!(f.s.take_queue(), Some(QueueStats::default()));
    assert_eq!(f.s.take_queue(), None, "unchanged: no new snapshot");
    f.event(100, &[(LINUX, false), (ESP32, false)], 100);
    f.event(200, &[(LINUX, false)], 200);
    let q = f.s.take_queue().unwrap();
    assert_eq!(q.waiting[LINUX], (2, 100));
    assert_eq!(q.waiting[ESP32], (1, 100));
    assert_eq!(q.tasks[&TaskState::Waiting], 3);
    assert_eq!(q.events, 2);
    f.hello(300, 1, &[(LINUX, 1)]);
    let q = f.s.take_queue().unwrap();
    assert_eq!(q.waiting[LINUX], (1, 200));
    assert_eq!(q.tasks[&TaskState::Running], 1);
}

#[test]
fn a_newer_connection_of_the_same_builder_replaces_the_older_without_counting() {
    let mut f = Fixture::new(3);
    let t = f.event(0, &[(LINUX, false), (LINUX, false)], 0);
    let say_hello = |f: &mut Fixture, now, conn| {
        f.s.builder_hello(now, conn, hello("host1", "test", vec![offer(LINUX, 2)]))
    };
    say_hello(&mut f, 0, 1);
    assert_eq!(f.offers(1).len(), 2);
    assert!(f.s.accept(1, &t[0]));
    assert_eq!(f.run(&t[0]).attempt, 1);
    // t[1] stays offered, not accepted. The same name connects again.
    say_hello(&mut f, 10, 2);
    let fx = f.s.take_effects();
    let close = fx.iter().position(|e| {
        matches!(e, Effect::Close { conn: 1, code, reason }
            if *code == CLOSE_REPLACED && reason.contains("newer connection"))
    });
    let release = fx.iter().position(|e| *e == Effect::Release { conn: 1 });
    assert!(
        close.is_some() && close < release,
        "close, then release the older: {fx:?}"
    );
    let offered: Vec<String> = fx
        .iter()
        .filter_map(|e| match e {
            Effect::Send {
                conn: 2,
                msg: ServerMessage::Offer { task },
            } => Some(task.task_id.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(offered.len(), 2, "both tasks go to the newer connection");
    for id in &t {
        let r = f.run(id);
        assert_eq!(r.state, TaskState::Running);
        assert_eq!(r.attempt, 0, "the replaced try does not count");
        assert_eq!(r.infra_failures, 0);
    }
    let fleet = f.s.take_fleet().unwrap();
    assert_eq!(fleet.builders.len(), 1, "one connection per builder name");
    // The older connection is gone: it can neither report nor end anything.
    assert!(!f.s.accept(1, &t[0]));
    f.s.builder_gone(20, 1, &GoneCause::Disconnected);
    assert_eq!(f.run(&t[0]).infra_failures, 0);
    assert_eq!(f.run(&t[0]).state, TaskState::Running);
}

#[test]
fn a_task_past_its_deadline_is_cancelled_there_and_counts_an_infrastructure_failure() {
    let mut f = Fixture::new(2);
    f.s.set_task_deadline(Some(60_000));
    let t = f.event(0, &[(LINUX, false)], 0);
    f.hello(1_000, 1, &[(LINUX, 1)]);
    f.hello(1_000, 2, &[(ESP32, 1)]);
    assert_eq!(f.offers(1), vec![t[0].to_string()]);
    assert!(f.s.accept(1, &t[0]));
    assert_eq!(f.s.next_wake(2_000), Some(61_000));
    f.s.tick(60_999);
    assert_eq!(f.run(&t[0]).state, TaskState::Running, "not yet");
    f.s.take_effects();

    f.s.tick(61_000);
    let fx = f.s.take_effects();
    assert!(
        fx.iter().any(|e| matches!(e,
            Effect::Send { conn: 1, msg: ServerMessage::Cancel { task_id, reason } }
                if *task_id == t[0].to_string() && reason.contains("deadline"))),
        "{fx:?}"
    );
    let r = f.run(&t[0]);
    assert_eq!(r.state, TaskState::Waiting);
    assert_eq!(r.infra_failures, 1);
    assert!(
        r.reason
            .as_deref()
            .unwrap()
            .contains("no result within the task deadline of 60 s"),
        "{r:?}"
    );
    // Not offered again to the silent connection; its late result is dropped.
    assert!(f.offers(1).is_empty());
    assert!(matches!(f.s.lookup(1, &t[0]), Lookup::Cancelled));
    assert!(!f.s.finished(61_500, 1, &t[0], &TaskResult::Success));

    // Another builder takes it; past the second deadline the task fails.
    f.hello(62_000, 3, &[(LINUX, 1)]);
    assert_eq!(f.offers(3), vec![t[0].to_string()]);
    assert!(f.s.accept(3, &t[0]));
    assert_eq!(f.s.next_wake(62_000), Some(122_000));
    f.s.tick(122_000);
    let (_, r) = f.last_persisted();
    assert_eq!(r.state, TaskState::Failed);
    assert!(r.reason.unwrap().contains("gave up after 2"));
}

#[test]
fn a_finished_task_leaves_no_deadline_behind() {
    let mut f = Fixture::new(3);
    f.s.set_task_deadline(Some(1_000));
    let t = f.event(0, &[(LINUX, false), (LINUX, false)], 0);
    f.hello(0, 1, &[(LINUX, 1)]);
    assert_eq!(f.offers(1), vec![t[0].to_string()]);
    assert!(f.s.accept(1, &t[0]));
    assert!(f.s.finished(500, 1, &t[0], &TaskResult::Success));
    assert_eq!(f.offers(1), vec![t[1].to_string()]);
    // The first task's old deadline passes: nothing happens to anyone.
    f.s.tick(1_000);
    let r = f.run(&t[1]);
    assert_eq!(r.state, TaskState::Running);
    assert_eq!(r.infra_failures, 0);
    assert_eq!(f.s.next_wake(1_000), Some(1_500));
}
