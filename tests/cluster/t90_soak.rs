//! Soak (issue 11): a seeded random schedule of faults under load. Kills, power
//! losses (one node, or every node at once), pauses, partitions (a node alone, the
//! leader alone, the leader and a follower away from three), one-way cuts and cut
//! links (the other nodes see both ends) come and go while the checker
//! (tests/support/checker.rs) runs. At the end whatever is still in force is undone,
//! the nodes must agree on one leader, the load must be acknowledged again, and the
//! checker's verdict must pass: every acknowledged message delivered, QoS 2 exactly
//! once, per-publisher order, sessions kept.
//!
//! The schedule comes from the seed alone, drawn before the run and printed in full,
//! seed first, so a seed replays its schedule: the faults, their order and their holds
//! are the same, only the cluster's timing differs. Faults name nodes by role (the
//! leader, the k-th follower), resolved when the fault starts. The generator keeps the
//! cluster able to recover: the nodes the faults in force may cut off from the rest
//! are a minority (both ends of a cut link count, since either may be the one left
//! out), except a whole-cluster power cut, which comes alone and is followed by
//! restarts, and a cut link alone in three nodes, which leaves a majority whichever
//! end loses. At most one network fault and one pause are in force at a time. Half
//! of the seeds snapshot every 5 to 20 entries, so that nodes catch up by installing
//! snapshots during the faults.
//!
//! Power losses need FUSE (tests/powerfs); without it they are scheduled as kills and
//! the schedule says so.
//!
//! The short form runs in `cargo test`: [`SHORT_SEEDS`], which pass today, a minute or
//! so each. The long form is opt-in:
//!
//! ```text
//! RAFTMQ_SOAK_RUNS=10 cargo test -p raftmq --test cluster -- t90 --ignored --nocapture
//! ```
//!
//! runs 10 seeds, starting from one taken from the clock, or from
//! `RAFTMQ_SOAK_SEED=<seed>` (the next runs take the following seeds; one run of a
//! printed seed replays it). `RAFTMQ_SOAK_STEPS=<n>` draws schedules of `n` steps
//! instead of 6 to 10 (a replay needs it too). Each run prints its verdict; the test
//! fails if any run failed, after all of them ran.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::time::Duration;

use tokio::time::Instant;

use crate::support::checker::{Checker, Load};
use crate::support::cluster::{Cluster, CLUSTER_TIMEOUT};

/// Seeds of the short form: each passes today, and together they cover every kind of
/// fault, five nodes and small snapshot intervals.
const SHORT_SEEDS: [u64; 3] = [31, 102, 27];
/// Acknowledgements that show the load flows, before the first fault and after the
/// final heal.
const PROGRESS: usize = 20;
/// Bound on the load being acknowledged again after the final heal.
const LIVENESS: Duration = CLUSTER_TIMEOUT;
/// What a run may take beyond its holds, per step (a restart, an election) and for
/// the start and the end (the checker settles for up to 45 s).
const STEP_BOUND: Duration = Duration::from_secs(45);
const START_AND_END_BOUND: Duration = Duration::from_secs(180);
/// Messages the offline subscriber's queue takes (see [`Load::offline_subscriber`]).
const OFFLINE_QUEUE: u32 = 900;
/// Where openraft logs a snapshot installed on a follower (at info).
const INSTALL_TARGET: &str = "openraft::engine::handler::following_handler";

/// A tiny deterministic generator (splitmix64): the schedule must depend on the seed
/// only, and needs nothing better.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in `0..n` (the modulo bias is nothing at these sizes).
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn one_in(&mut self, n: u64) -> bool {
        self.below(n) == 0
    }
}

/// A node named by its role when its fault starts: the leader, or the k-th (modulo
/// their number) of the followers no fault holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Who {
    Leader,
    Follower(usize),
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Fault {
    Kill(Who),
    PowerLoss(Who),
    /// Every node loses power at once.
    PowerCut,
    /// Every node is killed at once: a power cut where there is no FUSE.
    KillAll,
    /// SIGSTOP; the node's clients leave it.
    Pause(Who),
    /// These nodes are cut off from the others, both ways.
    Isolate(Vec<Who>),
    /// What the first sends to the second is lost; the other way works.
    OneWay(Who, Who),
    /// The link between the two is cut both ways; the other nodes see both.
    CutLink(Who, Who),
}

impl Fault {
    /// How many nodes it may cut off from the majority.
    fn reach(&self, nodes: usize) -> usize {
        match self {
            Fault::PowerCut | Fault::KillAll => nodes,
            Fault::Isolate(who) => who.len(),
            Fault::OneWay(..) | Fault::CutLink(..) => 2,
            Fault::Kill(_) | Fault::PowerLoss(_) | Fault::Pause(_) => 1,
        }
    }

    fn is_network(&self) -> bool {
        matches!(
            self,
            Fault::Isolate(_) | Fault::OneWay(..) | Fault::CutLink(..)
        )
    }

    fn is_link(&self) -> bool {
        matches!(self, Fault::OneWay(..) | Fault::CutLink(..))
    }

    fn targets(&self) -> Vec<Who> {
        match self {
            Fault::Kill(w) | Fault::PowerLoss(w) | Fault::Pause(w) => vec![*w],
            Fault::Isolate(who) => who.clone(),
            Fault::OneWay(a, b) | Fault::CutLink(a, b) => vec![*a, *b],
            Fault::PowerCut | Fault::KillAll => Vec::new(),
        }
    }

    /// The same fault where power cannot be cut (no FUSE): a kill.
    fn without_power(self) -> Fault {
        match self {
            Fault::PowerLoss(w) => Fault::Kill(w),
            Fault::PowerCut => Fault::KillAll,
            other => other,
        }
    }

    fn undo_name(&self) -> &'static str {
        match self {
            Fault::Kill(_) | Fault::PowerLoss(_) => "restart",
            Fault::PowerCut | Fault::KillAll => "restart every node",
            Fault::Pause(_) => "resume",
            Fault::Isolate(_) | Fault::OneWay(..) | Fault::CutLink(..) => "heal",
        }
    }
}

impl fmt::Display for Who {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Who::Leader => write!(f, "the leader"),
            Who::Follower(k) => write!(f, "follower#{k}"),
        }
    }
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Fault::Kill(w) => write!(f, "kill {w}"),
            Fault::PowerLoss(w) => write!(f, "power loss of {w}"),
            Fault::PowerCut => write!(f, "power cut of every node"),
            Fault::KillAll => write!(f, "kill every node"),
            Fault::Pause(w) => write!(f, "pause {w}"),
            Fault::Isolate(who) => {
                let who: Vec<String> = who.iter().map(|w| w.to_string()).collect();
                write!(f, "isolate {}", who.join(" and "))
            }
            Fault::OneWay(a, b) => write!(f, "one-way cut: {a} -> {b} lost"),
            Fault::CutLink(a, b) => write!(f, "cut the link {a} - {b}"),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Action {
    Start(Fault),
    /// Undoes the fault started at this step (an index into the steps).
    Undo(usize),
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Step {
    action: Action,
    /// How long the run stays as this step leaves it.
    hold: Duration,
}

/// Everything a seed decides.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Schedule {
    seed: u64,
    nodes: usize,
    snapshot_logs: u64,
    /// The home node of an offline subscriber, if any.
    offline_subscriber: Option<u64>,
    /// Whether power losses are real (else they were turned into kills).
    powerfs: bool,
    /// Whether the number of steps was set (`RAFTMQ_SOAK_STEPS`) rather than drawn.
    steps_set: bool,
    steps: Vec<Step>,
}

impl Schedule {
    /// The schedule of `seed`; `steps` overrides the drawn number of steps.
    fn generate(seed: u64, steps: Option<usize>, powerfs: bool) -> Schedule {
        let mut rng = Rng(seed);
        let nodes = if rng.one_in(4) { 5 } else { 3 };
        let snapshot_logs = if rng.one_in(2) {
            5 + rng.below(16)
        } else {
            100
        };
        let offline_subscriber = rng.one_in(3).then(|| 1 + rng.below(nodes as u64));
        let drawn = 6 + rng.below(5) as usize;
        let mut in_force: Vec<(usize, Fault)> = Vec::new();
        let mut out = Vec::new();
        for i in 0..steps.unwrap_or(drawn) {
            let start = in_force.is_empty() || rng.one_in(2);
            let fault = start
                .then(|| next_fault(&mut rng, nodes, &in_force))
                .flatten();
            let action = match fault {
                Some(fault) => {
                    in_force.push((i, fault.clone()));
                    Action::Start(fault)
                }
                None => {
                    let undone = in_force.remove(rng.below(in_force.len() as u64) as usize);
                    Action::Undo(undone.0)
                }
            };
            let hold = Duration::from_millis(1000 + 100 * rng.below(31));
            out.push(Step { action, hold });
        }
        // Turned afterwards, so that a seed draws the same schedule either way.
        if !powerfs {
            for step in &mut out {
                if let Action::Start(fault) = &mut step.action {
                    *fault = fault.clone().without_power();
                }
            }
        }
        Schedule {
            seed,
            nodes,
            snapshot_logs,
            offline_subscriber,
            powerfs,
            steps_set: steps.is_some(),
            steps: out,
        }
    }

    /// The checker's load: spread over the nodes, with the offline subscriber if the
    /// seed has one. Its queue caps the load, and publishers that stopped would fail
    /// the final liveness check: they are slowed down to last the whole run, on a
    /// generous estimate (the holds, 5 s a step for restarts and elections, and a
    /// minute; runs take about half that).
    fn load(&self, ids: &[u64]) -> Load {
        let load = Load::spread(ids);
        let Some(home) = self.offline_subscriber else {
            return load;
        };
        let mut load = load.offline_subscriber(home);
        let run = self.holds() + Duration::from_secs(5) * self.steps.len() as u32;
        let run = run + Duration::from_secs(60);
        load.pace = load
            .pace
            .max(run / (OFFLINE_QUEUE / load.publishers.len() as u32));
        load
    }

    /// The fault started at step `i`.
    fn fault(&self, i: usize) -> &Fault {
        match &self.steps[i].action {
            Action::Start(fault) => fault,
            Action::Undo(_) => panic!("step {} starts no fault", i + 1),
        }
    }

    fn holds(&self) -> Duration {
        self.steps.iter().map(|s| s.hold).sum()
    }

    /// A bound on the whole run: only a hang exceeds it.
    fn bound(&self) -> Duration {
        self.holds() + STEP_BOUND * self.steps.len() as u32 + START_AND_END_BOUND
    }

    /// The command that replays this run.
    fn replay(&self) -> String {
        let steps = match self.steps_set {
            true => format!(" RAFTMQ_SOAK_STEPS={}", self.steps.len()),
            false => String::new(),
        };
        format!(
            "RAFTMQ_SOAK_SEED={}{steps} cargo test -p raftmq --test cluster -- t90 --ignored --nocapture",
            self.seed
        )
    }
}

/// A fault that fits beside those in force, or `None`: a kind is drawn, then its
/// targets, and if it does not fit the caller undoes a fault instead. Every kind fits
/// when nothing is in force.
fn next_fault(rng: &mut Rng, nodes: usize, in_force: &[(usize, Fault)]) -> Option<Fault> {
    // At most `nodes - 1` followers are free.
    let follower = |rng: &mut Rng| Who::Follower(rng.below(nodes as u64 - 1) as usize);
    let who = |rng: &mut Rng| match rng.one_in(3) {
        true => Who::Leader,
        false => follower(rng),
    };
    let fault = match rng.below(13) {
        0..=1 => Fault::Kill(who(rng)),
        2..=3 => Fault::PowerLoss(who(rng)),
        4 => Fault::PowerCut,
        5..=6 => Fault::Pause(who(rng)),
        // The leader and a follower on the minority side of five.
        7 if nodes == 5 => Fault::Isolate(vec![Who::Leader, follower(rng)]),
        7..=8 => Fault::Isolate(vec![who(rng)]),
        9..=10 => match rng.one_in(2) {
            true => Fault::OneWay(Who::Leader, follower(rng)),
            false => Fault::OneWay(follower(rng), Who::Leader),
        },
        _ => Fault::CutLink(Who::Leader, follower(rng)),
    };
    let minority = (nodes - 1) / 2;
    let reached: usize = in_force.iter().map(|(_, f)| f.reach(nodes)).sum();
    let fits = match &fault {
        Fault::PowerCut | Fault::KillAll => in_force.is_empty(),
        // The proxies hold one set of cut links, and heal them all at once.
        f if f.is_network() && in_force.iter().any(|(_, g)| g.is_network()) => false,
        // The checker moves clients off one node only.
        Fault::Pause(_) if in_force.iter().any(|(_, g)| matches!(g, Fault::Pause(_))) => false,
        f => reached + f.reach(nodes) <= minority || (in_force.is_empty() && f.is_link()),
    };
    fits.then_some(fault)
}

impl fmt::Display for Schedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "soak seed {}: {} nodes, a snapshot every {} entries, ",
            self.seed, self.nodes, self.snapshot_logs
        )?;
        match self.offline_subscriber {
            Some(home) => write!(f, "an offline subscriber on node {home}, ")?,
            None => write!(f, "no offline subscriber, ")?,
        }
        match self.powerfs {
            true => write!(f, "power losses on powerfs, ")?,
            false => write!(f, "power losses scheduled as kills (no FUSE), ")?,
        }
        writeln!(f, "{} steps:", self.steps.len())?;
        for (i, step) in self.steps.iter().enumerate() {
            write!(f, "  {:>2}. ", i + 1)?;
            match &step.action {
                Action::Start(fault) => write!(f, "{fault}")?,
                Action::Undo(s) => write!(f, "{} (step {})", self.fault(*s).undo_name(), s + 1)?,
            }
            writeln!(f, ", hold {:.1}s", step.hold.as_secs_f32())?;
        }
        write!(f, "  replay: {}", self.replay())
    }
}

/// The faults in force: per starting step, the fault and the nodes it hit.
type InForce = BTreeMap<usize, (Fault, Vec<u64>)>;

/// Runs `schedule` on `c` under the checker, then the final heal and the liveness
/// check; returns the checker's report line and the count of snapshot installs.
async fn run(schedule: &Schedule, c: &mut Cluster) -> String {
    let name = format!("soak {}", schedule.seed);
    let checker = Checker::start(c, &name, schedule.load(&c.ids())).await;
    checker.wait_acked(PROGRESS, CLUSTER_TIMEOUT).await;
    let began = Instant::now();
    let at = || format!("[{name} +{:.1}s]", began.elapsed().as_secs_f32());
    let mut in_force = InForce::new();
    for (i, step) in schedule.steps.iter().enumerate() {
        match &step.action {
            Action::Start(fault) => {
                let hit = start(c, &checker, fault, &in_force).await;
                println!("{} step {}: {fault}: nodes {hit:?}", at(), i + 1);
                in_force.insert(i, (fault.clone(), hit));
            }
            Action::Undo(s) => {
                let (fault, hit) = in_force.remove(s).expect("a fault in force");
                println!(
                    "{} step {}: {}: nodes {hit:?}",
                    at(),
                    i + 1,
                    fault.undo_name()
                );
                undo(c, &checker, &fault, &hit).await;
            }
        }
        // The hold is the schedule itself, not a wait for some condition.
        tokio::time::sleep(step.hold).await;
    }
    let left: Vec<usize> = in_force.keys().map(|s| s + 1).collect();
    println!("{} final heal: undoing steps {left:?}", at());
    for (fault, hit) in in_force.into_values() {
        undo(c, &checker, &fault, &hit).await;
    }
    let healed = Instant::now();
    let leader = c.wait_leader().await;
    let elected = healed.elapsed().as_secs_f32();
    checker.wait_acked(PROGRESS, LIVENESS).await;
    println!(
        "{} node {leader} leads {elected:.1}s after the final heal; load acknowledged again after {:.1}s",
        at(),
        healed.elapsed().as_secs_f32()
    );
    let report = checker.finish().await;
    let installs: usize = c.ids().iter().map(|&id| installs(&c.node(id).log())).sum();
    format!("{report}; snapshots installed: {installs}")
}

/// Starts `fault` on the nodes its roles name among those no fault holds; returns
/// them (every node for a whole-cluster fault).
async fn start(c: &mut Cluster, checker: &Checker, fault: &Fault, in_force: &InForce) -> Vec<u64> {
    let held: BTreeSet<u64> = in_force
        .values()
        .flat_map(|(_, hit)| hit)
        .copied()
        .collect();
    let free: Vec<u64> = c
        .ids()
        .into_iter()
        .filter(|id| !held.contains(id))
        .collect();
    let targets = fault.targets();
    let hit: Vec<u64> = if targets.is_empty() {
        c.ids()
    } else {
        let leader = c.wait_leader_of(&free).await;
        let followers: Vec<u64> = free.iter().copied().filter(|&id| id != leader).collect();
        let node = |w: &Who| match w {
            Who::Leader => leader,
            Who::Follower(k) => followers[k % followers.len()],
        };
        targets.iter().map(node).collect()
    };
    match fault {
        Fault::Kill(_) | Fault::KillAll => hit.iter().for_each(|&id| c.kill(id)),
        Fault::PowerLoss(_) | Fault::PowerCut => c.power_loss(&hit),
        Fault::Pause(_) => {
            c.pause(hit[0]);
            checker.avoid(Some(c.node(hit[0]).mqtt));
        }
        Fault::Isolate(_) => {
            let rest: Vec<u64> = c.ids().into_iter().filter(|id| !hit.contains(id)).collect();
            c.partition(&[&hit, &rest]);
        }
        Fault::OneWay(..) => c.cut(&[(hit[0], hit[1])]),
        Fault::CutLink(..) => c.cut(&[(hit[0], hit[1]), (hit[1], hit[0])]),
    }
    hit
}

/// Undoes `fault`, which hit `hit`: restarts (waiting until ready), resumes, heals.
async fn undo(c: &mut Cluster, checker: &Checker, fault: &Fault, hit: &[u64]) {
    match fault {
        Fault::Kill(_) | Fault::PowerLoss(_) => c.restart(hit[0]).await,
        Fault::PowerCut | Fault::KillAll => {
            // All at once: none is ready before a majority is back.
            for &id in hit {
                c.relaunch(id);
            }
            for &id in hit {
                c.wait_answering(id).await;
            }
            c.wait_leader().await;
        }
        Fault::Pause(_) => {
            c.resume(hit[0]);
            c.wait_ready(hit[0]).await;
            checker.avoid(None);
        }
        Fault::Isolate(_) | Fault::OneWay(..) | Fault::CutLink(..) => c.heal(),
    }
}

/// One run: the schedule of `seed`, printed, then run within its bound. Panics on
/// any failure (the nodes' logs are then printed and their files kept).
async fn soak(seed: u64, steps: Option<usize>) -> String {
    // FUSE first: whether power losses are real is part of the schedule.
    let empty = Cluster::on_powerfs();
    let schedule = Schedule::generate(seed, steps, empty.is_some());
    println!("{schedule}");
    let empty = empty
        .unwrap_or_else(Cluster::empty)
        .with_env("RAFTMQ_SNAPSHOT_LOGS", schedule.snapshot_logs)
        .with_env("RUST_LOG", node_log_filter());
    let mut c = Cluster::start_with(schedule.nodes, empty).await;
    let bound = schedule.bound();
    match tokio::time::timeout(bound, run(&schedule, &mut c)).await {
        Ok(report) => report,
        // While `c` is still alive: its logs are printed.
        Err(_) => panic!("soak {seed}: not finished within {bound:?}"),
    }
}

/// The nodes' log filter: the broker's own (`--log-level`, which `RUST_LOG` replaces)
/// plus openraft's line on each snapshot a follower installs, to count them.
fn node_log_filter() -> String {
    let level = std::env::var("RAFTMQ_TEST_LOG").unwrap_or_else(|_| "debug".into());
    format!("{level},sled=warn,openraft=warn,{INSTALL_TARGET}=info")
}

/// Snapshots installed, from a node's log (openraft also logs snapshots it turns down
/// as not newer than what it has).
fn installs(log: &str) -> usize {
    let offered = log.matches("install_full_snapshot: meta").count();
    offered - log.matches("No need to install snapshot").count()
}

/// Runs each seed on its own thread and runtime, so that a failing run (a panic) does
/// not stop the others; prints every verdict, then fails if any run failed.
fn run_seeds(seeds: &[u64], steps: Option<usize>) {
    let mut verdicts = Vec::new();
    for &seed in seeds {
        let outcome = std::thread::Builder::new()
            .name(format!("soak-{seed}"))
            .spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("runtime");
                runtime.block_on(soak(seed, steps))
            })
            .expect("spawn a soak thread")
            .join();
        let verdict = match outcome {
            Ok(verdict) => Ok(verdict),
            Err(panic) => Err(panic_message(panic.as_ref())),
        };
        verdicts.push((seed, verdict));
    }
    println!("soak verdicts:");
    for (seed, verdict) in &verdicts {
        match verdict {
            Ok(report) => println!("  seed {seed}: passed {report}"),
            Err(e) => println!("  seed {seed}: FAILED {}", e.lines().next().unwrap_or("")),
        }
    }
    let failed: Vec<u64> = verdicts
        .iter()
        .filter(|(_, v)| v.is_err())
        .map(|(seed, _)| *seed)
        .collect();
    assert!(failed.is_empty(), "soak seeds failed: {failed:?}");
}

/// What a panic said.
fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = panic.downcast_ref::<String>() {
        return s.clone();
    }
    panic
        .downcast_ref::<&str>()
        .unwrap_or(&"(no message)")
        .to_string()
}

/// `name` from the environment, parsed; panics on a value that does not parse.
fn env<T: std::str::FromStr>(name: &str) -> Option<T> {
    let value = std::env::var(name).ok()?;
    let parsed = value.trim().parse().ok();
    Some(parsed.unwrap_or_else(|| panic!("{name}={value}: not a number")))
}

/// The short form (see the module docs).
#[test]
fn short_soak() {
    run_seeds(&SHORT_SEEDS, None);
}

/// The long form (see the module docs).
#[test]
#[ignore]
fn long_soak() {
    let runs: u64 = env("RAFTMQ_SOAK_RUNS").unwrap_or(1);
    let first = env("RAFTMQ_SOAK_SEED").unwrap_or_else(|| {
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH);
        // Short enough to copy; any seed will do.
        now.expect("clock after 1970").as_nanos() as u64 % 1_000_000_000
    });
    let seeds: Vec<u64> = (0..runs).map(|i| first.wrapping_add(i)).collect();
    println!("soak: {runs} runs from seed {first}");
    run_seeds(&seeds, env("RAFTMQ_SOAK_STEPS"));
}

/// The schedule depends on the seed alone, and keeps the cluster able to recover.
#[test]
fn schedules_replay_and_keep_a_majority() {
    let mut kinds = std::collections::HashSet::new();
    for seed in 0..500 {
        let schedule = Schedule::generate(seed, None, true);
        assert_eq!(
            schedule,
            Schedule::generate(seed, None, true),
            "seed {seed}"
        );
        let minority = (schedule.nodes - 1) / 2;
        let mut in_force: BTreeMap<usize, &Fault> = BTreeMap::new();
        for (i, step) in schedule.steps.iter().enumerate() {
            match &step.action {
                Action::Start(fault) => {
                    kinds.insert(std::mem::discriminant(fault));
                    in_force.insert(i, fault);
                }
                Action::Undo(s) => assert!(in_force.remove(s).is_some(), "seed {seed}"),
            }
            let reached: usize = in_force.values().map(|f| f.reach(schedule.nodes)).sum();
            let alone = in_force.len() == 1;
            assert!(reached <= minority || alone, "seed {seed}: {schedule}");
        }
    }
    // Every kind but KillAll, which only stands in for a power cut.
    assert_eq!(kinds.len(), 7, "every kind of fault is drawn");
}
