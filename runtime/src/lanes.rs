//! Two lanes for guest execution, so a tenant that burns CPU cannot take
//! the node away from tenants that don't.
//!
//! Every request's instance starts in the **foreground** lane: the node's
//! own tokio workers, at normal OS priority. Fuel and epoch yields make a
//! running guest return to the executor every ~100 µs; at each return the
//! node adds up the CPU time the request used (see [`Spent`]: time the
//! thread spent preempted by someone else is not the request's). A
//! request that passes its CPU budget there (10 ms by default, ten times a Python handler doing
//! real work) is moved, mid-flight, to the **background** lane: a second
//! tokio runtime whose threads run at the lowest OS priority (on Linux the
//! `SCHED_IDLE` policy, elsewhere nice 19). Its
//! app is then *demoted* for a while: its next requests start in the
//! background lane directly. Requests that end in a limit kill (fuel,
//! memory, deadline) or a trap demote their app the same way, because an
//! app failing at a high rate is as expensive as one that spins.
//!
//! The OS scheduler does the rest. When the node has CPU to spare, the
//! background lane gets all of it and a heavy app runs at full speed; when
//! the foreground is busy, a `SCHED_IDLE` thread gets about 0.3% of a core
//! against each busy normal one (nice 19: 1.5%), and a waking foreground
//! thread preempts it at once, so well-behaved tenants keep their
//! throughput and their latency. Nothing is refused or killed by the lanes
//! themselves: limits still do that.
//!
//! Moving a running request is safe because an instance's future is
//! `Send` (wasmtime runs the guest on its own fiber stack, which any thread
//! may resume) and the I/O and timers it holds keep working from another
//! runtime's thread.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll, ready};
use std::time::{Duration, Instant};

use prometheus::IntCounter;
use serde::Deserialize;
use tokio::task::JoinHandle;

/// Lane settings (`[lanes]` in the node's TOML).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LaneConfig {
    /// Move CPU-heavy and failing apps to the background lane at all.
    /// Default: true.
    pub enabled: bool,
    /// On-CPU time one request may spend in the foreground lane before it
    /// moves to the background, in milliseconds. Default: 10.
    pub cpu_budget_ms: u64,
    /// How long a demoted app's requests start in the background lane, in
    /// milliseconds; every new demotion restarts it. Default: 10 000.
    pub demotion_ms: u64,
    /// Background worker threads; 0 means one per core. Default: 0.
    pub background_threads: usize,
    /// OS nice value of the background threads, 0 (no lower than the
    /// foreground) to 19 (the lowest). Default: 19.
    pub background_nice: i32,
    /// Also put the background threads under Linux's `SCHED_IDLE` policy,
    /// below every nice value: they run only on CPU time nothing else
    /// wants. Default: true. Ignored on other systems.
    pub background_idle: bool,
    /// Limit kills and traps within `throttle_window_ms` that make an app
    /// answer 503 `app_throttled` without instantiating for a while (see
    /// [`crate::breaker`]); 0 turns this off. Default: 20.
    pub throttle_after_kills: u32,
    /// …when they are at least this percentage of the app's requests
    /// finished in that window. Default: 50.
    pub throttle_kill_percent: u32,
    /// The window kills are counted over, in milliseconds. Default: 10 000.
    pub throttle_window_ms: u64,
    /// The first throttling period, in milliseconds; it doubles each time
    /// the app trips again right after. Default: 1 000.
    pub throttle_ms: u64,
    /// The longest throttling period, in milliseconds. Default: 60 000.
    pub throttle_max_ms: u64,
}

impl Default for LaneConfig {
    fn default() -> Self {
        LaneConfig {
            enabled: true,
            cpu_budget_ms: 10,
            demotion_ms: 10_000,
            background_threads: 0,
            background_nice: 19,
            background_idle: true,
            throttle_after_kills: 20,
            throttle_kill_percent: 50,
            throttle_window_ms: 10_000,
            throttle_ms: 1_000,
            throttle_max_ms: 60_000,
        }
    }
}

impl LaneConfig {
    /// Every problem with these settings.
    pub fn problems(&self) -> Vec<String> {
        let mut out = Vec::new();
        if self.cpu_budget_ms == 0 {
            out.push("lanes.cpu_budget_ms must be greater than 0".into());
        }
        if !(0..=19).contains(&self.background_nice) {
            out.push("lanes.background_nice must be between 0 and 19".into());
        }
        if self.throttle_after_kills > 0 {
            if !(1..=100).contains(&self.throttle_kill_percent) {
                out.push("lanes.throttle_kill_percent must be between 1 and 100".into());
            }
            for (name, ms) in [
                ("throttle_window_ms", self.throttle_window_ms),
                ("throttle_ms", self.throttle_ms),
            ] {
                if ms == 0 {
                    out.push(format!("lanes.{name} must be greater than 0"));
                }
            }
            if self.throttle_max_ms < self.throttle_ms {
                out.push("lanes.throttle_max_ms must be at least lanes.throttle_ms".into());
            }
        }
        out
    }

    /// The circuit breaker each app gets, if throttling is on.
    pub fn breaker(&self) -> Option<crate::breaker::BreakerConfig> {
        (self.throttle_after_kills > 0).then(|| crate::breaker::BreakerConfig {
            window: Duration::from_millis(self.throttle_window_ms),
            min_kills: self.throttle_after_kills,
            min_kill_percent: self.throttle_kill_percent,
            cooldown: Duration::from_millis(self.throttle_ms),
            max_cooldown: Duration::from_millis(self.throttle_max_ms),
        })
    }
}

/// Why an app was sent to the background lane.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Demotion {
    /// A request used up its foreground CPU budget.
    Cpu,
    /// A request ended in a limit kill or a trap.
    Limit,
}

impl Demotion {
    /// Every reason, in label order.
    pub const ALL: [Demotion; 2] = [Demotion::Cpu, Demotion::Limit];

    /// The metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Demotion::Cpu => "cpu",
            Demotion::Limit => "limit",
        }
    }
}

/// The node's two lanes. The background runtime is only started the first
/// time something is demoted.
pub struct Lanes {
    config: LaneConfig,
    background: OnceLock<tokio::runtime::Runtime>,
    /// What "now" is measured from in [`Standing`].
    epoch: Instant,
}

impl Lanes {
    /// Lanes with these settings.
    pub fn new(config: LaneConfig) -> Lanes {
        // (The breaker settings live here too: both react to an app's
        // kills, on the same clock.)
        Lanes {
            config,
            background: OnceLock::new(),
            epoch: Instant::now(),
        }
    }

    /// The circuit breaker each app gets, if throttling is on.
    pub fn breaker(&self) -> Option<crate::breaker::BreakerConfig> {
        self.config.breaker()
    }

    /// Milliseconds since the lanes were made (never 0, so 0 can mean
    /// "never demoted").
    pub(crate) fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64 + 1
    }

    /// Runs `work` for an app whose standing is `standing`: in the
    /// background if the app is demoted, else in the foreground under the
    /// CPU budget.
    pub fn spawn<F>(self: &Arc<Self>, standing: &Standing, work: F) -> JoinHandle<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        if !self.config.enabled {
            return tokio::spawn(work);
        }
        if standing.is_demoted(self.now_ms()) {
            standing.inner.background.inc();
            return self.background().spawn(work);
        }
        tokio::spawn(Budgeted {
            state: State::Foreground {
                work: Box::pin(work),
                spent: Spent::default(),
            },
            budget: Duration::from_millis(self.config.cpu_budget_ms),
            lanes: self.clone(),
            standing: standing.clone(),
        })
    }

    /// Demotes the app of `standing` for the configured time.
    pub fn demote(&self, standing: &Standing, why: Demotion) {
        if self.config.enabled {
            standing.demote(self.now_ms() + self.config.demotion_ms, why);
        }
    }

    fn background(&self) -> &tokio::runtime::Runtime {
        self.background.get_or_init(|| {
            let threads = match self.config.background_threads {
                0 => std::thread::available_parallelism().map_or(2, |n| n.get()),
                n => n,
            };
            let (nice, idle) = (self.config.background_nice, self.config.background_idle);
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(threads)
                .thread_name("outpost-background")
                .on_thread_start(move || lower_priority(nice, idle))
                .enable_all()
                .build()
                .expect("starting the background lane's threads")
        })
    }
}

impl Drop for Lanes {
    fn drop(&mut self) {
        // Dropping a runtime blocks until its threads stop, which tokio
        // forbids from inside another runtime (where a node is often
        // dropped, in tests). Its tasks are cancelled either way.
        if let Some(rt) = self.background.take() {
            rt.shutdown_background();
        }
    }
}

/// Lowers the calling thread's priority: its nice value, and on Linux
/// (if `idle`) the `SCHED_IDLE` policy. On Linux both belong to the
/// thread, not the process, so this leaves the foreground alone.
fn lower_priority(nice: i32, idle: bool) {
    #[cfg(unix)]
    if let Err(e) = rustix::process::setpriority_process(None, nice) {
        tracing::warn!(error = %e, nice, "cannot lower the background lane's priority");
    }
    #[cfg(target_os = "linux")]
    if idle && let Err(e) = sched_idle() {
        tracing::warn!(error = %e, "cannot put the background lane under SCHED_IDLE; nice only");
    }
    #[cfg(not(unix))]
    let _ = (nice, idle);
}

/// Puts the calling thread under `SCHED_IDLE`.
#[cfg(target_os = "linux")]
fn sched_idle() -> std::io::Result<()> {
    let param = libc::sched_param { sched_priority: 0 };
    // SAFETY: sched_setscheduler(2) with pid 0 changes only the calling
    // thread's policy, and only reads `param`, a valid local for the call.
    #[allow(unsafe_code)]
    let rc = unsafe { libc::sched_setscheduler(0, libc::SCHED_IDLE, &param) };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// One app's place in the lanes: demoted until when, and its counters.
/// Clones share one standing.
#[derive(Clone)]
pub struct Standing {
    inner: Arc<StandingInner>,
}

struct StandingInner {
    /// [`Lanes::now_ms`] until which the app is demoted; 0: never was.
    demoted_until_ms: AtomicU64,
    demotions: [IntCounter; 2],
    background: IntCounter,
}

impl Standing {
    /// A standing that has never been demoted. `demotions` are counted by
    /// [`Demotion::ALL`] order; `background` counts requests that ran
    /// (wholly or partly) in the background lane.
    pub fn new(demotions: [IntCounter; 2], background: IntCounter) -> Standing {
        Standing {
            inner: Arc::new(StandingInner {
                demoted_until_ms: AtomicU64::new(0),
                demotions,
                background,
            }),
        }
    }

    fn is_demoted(&self, now_ms: u64) -> bool {
        self.inner.demoted_until_ms.load(Ordering::Relaxed) > now_ms
    }

    fn demote(&self, until_ms: u64, why: Demotion) {
        self.inner
            .demoted_until_ms
            .fetch_max(until_ms, Ordering::Relaxed);
        self.inner.demotions[why as usize].inc();
    }
}

type BoxedWork<T> = Pin<Box<dyn Future<Output = T> + Send>>;

/// A foreground request that keeps count of the time it holds the thread
/// and moves itself to the background lane once past its budget.
struct Budgeted<T> {
    state: State<T>,
    budget: Duration,
    lanes: Arc<Lanes>,
    standing: Standing,
}

enum State<T> {
    Foreground {
        work: BoxedWork<T>,
        spent: Spent,
    },
    Moved(JoinHandle<T>),
    /// Only between the two states above, inside one `poll`.
    Moving,
}

/// What a foreground request is charged against its CPU budget.
///
/// Wall time is cheap to read (~20 ns) but also counts the time the thread
/// was preempted: on a core shared with a neighbour's threads (or a load
/// generator's), a light request can lose milliseconds it never used, and
/// demoting it for them would punish the victim of a noisy neighbour. The
/// thread's own CPU clock is exact but costs a system call (~200 ns) per
/// read. So polls are charged wall time until half the budget, which a
/// light request never reaches, and the thread's CPU time from then on: a
/// request is demoted only after at least half its budget of real CPU.
#[derive(Debug, Default)]
struct Spent {
    /// Wall time of the polls before the CPU clock was used.
    wall: Duration,
    /// CPU time of the polls after.
    cpu: Duration,
}

impl Spent {
    /// Runs one poll, charging it.
    fn measure<R>(&mut self, budget: Duration, poll: impl FnOnce() -> R) -> R {
        let exact = self.wall >= budget / 2;
        let cpu_before = if exact { thread_cpu_time() } else { None };
        let started = Instant::now();
        let out = poll();
        match (cpu_before, cpu_before.and_then(|_| thread_cpu_time())) {
            (Some(before), Some(after)) => self.cpu += after.saturating_sub(before),
            _ => self.wall += started.elapsed(),
        }
        out
    }

    /// What counts against `budget` so far.
    fn charged(&self, budget: Duration) -> Duration {
        self.wall.min(budget / 2) + self.cpu
    }
}

/// The calling thread's CPU time, where the OS keeps one.
fn thread_cpu_time() -> Option<Duration> {
    #[cfg(unix)]
    {
        let t = rustix::time::clock_gettime(rustix::time::ClockId::ThreadCPUTime);
        Some(Duration::new(t.tv_sec as u64, t.tv_nsec as u32))
    }
    #[cfg(not(unix))]
    None
}

/// A request cancelled while in the background lane (its client went
/// away) must not run on there: the moved task goes with its handle.
impl<T> Drop for Budgeted<T> {
    fn drop(&mut self) {
        if let State::Moved(handle) = &self.state {
            handle.abort();
        }
    }
}

impl<T: Send + 'static> Future for Budgeted<T> {
    type Output = T;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<T> {
        let this = &mut *self;
        if let State::Foreground { work, spent } = &mut this.state {
            let poll = spent.measure(this.budget, || work.as_mut().poll(cx));
            if poll.is_ready() || spent.charged(this.budget) < this.budget {
                return poll;
            }
            let State::Foreground { work, .. } = std::mem::replace(&mut this.state, State::Moving)
            else {
                unreachable!("matched just above");
            };
            this.lanes.demote(&this.standing, Demotion::Cpu);
            this.standing.inner.background.inc();
            this.state = State::Moved(this.lanes.background().spawn(work));
        }
        let State::Moved(handle) = &mut this.state else {
            unreachable!("a Budgeted future is never polled while moving");
        };
        match ready!(Pin::new(handle).poll(cx)) {
            Ok(out) => Poll::Ready(out),
            // Keep the outcome the same as if the work had stayed here: a
            // panic stays a panic for whoever awaits this task.
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            Err(_) => panic!("the background lane shut down under a running request"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn standing() -> Standing {
        let c = || IntCounter::new("c", "c").unwrap();
        Standing::new([c(), c()], c())
    }

    /// A future that holds its thread for `hold` per poll, `polls` times:
    /// spinning on the CPU, or blocked off it (as a preempted thread is).
    struct Holder {
        hold: Duration,
        polls: u32,
        on_cpu: bool,
    }

    impl Future for Holder {
        type Output = String;
        fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<String> {
            if self.on_cpu {
                let until = Instant::now() + self.hold;
                while Instant::now() < until {
                    std::hint::spin_loop();
                }
            } else {
                std::thread::sleep(self.hold);
            }
            if self.polls == 0 {
                let name = std::thread::current().name().unwrap_or("").to_string();
                return Poll::Ready(name);
            }
            self.polls -= 1;
            cx.waker().wake_by_ref();
            Poll::Pending
        }
    }

    fn spinner(spin_ms: u64, polls: u32) -> Holder {
        Holder {
            hold: Duration::from_millis(spin_ms),
            polls,
            on_cpu: true,
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn light_work_stays_in_the_foreground() {
        let lanes = Arc::new(Lanes::new(LaneConfig::default()));
        let s = standing();
        let thread = lanes.spawn(&s, spinner(0, 3)).await.unwrap();
        assert_ne!(thread, "outpost-background");
        assert_eq!(s.inner.background.get(), 0);
        assert!(!s.is_demoted(lanes.now_ms()));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn work_past_its_budget_finishes_in_the_background_and_demotes_its_app() {
        let lanes = Arc::new(Lanes::new(LaneConfig {
            cpu_budget_ms: 5,
            ..LaneConfig::default()
        }));
        let s = standing();
        // 2 ms per poll: past 5 ms on the third poll, with polls to spare.
        let thread = lanes.spawn(&s, spinner(2, 10)).await.unwrap();
        assert_eq!(thread, "outpost-background");
        assert_eq!(s.inner.demotions[Demotion::Cpu as usize].get(), 1);
        assert_eq!(s.inner.background.get(), 1);
        assert!(s.is_demoted(lanes.now_ms()));

        // The next request of the demoted app starts in the background,
        // even a light one.
        let thread = lanes.spawn(&s, spinner(0, 0)).await.unwrap();
        assert_eq!(thread, "outpost-background");
        assert_eq!(s.inner.background.get(), 2);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn time_off_the_cpu_does_not_count_against_the_budget() {
        let lanes = Arc::new(Lanes::new(LaneConfig {
            cpu_budget_ms: 5,
            ..LaneConfig::default()
        }));
        let s = standing();
        // 20 ms of wall time, four times the budget, and almost no CPU.
        let work = Holder {
            on_cpu: false,
            ..spinner(2, 10)
        };
        let thread = lanes.spawn(&s, work).await.unwrap();
        assert_ne!(thread, "outpost-background");
        assert_eq!(s.inner.demotions[Demotion::Cpu as usize].get(), 0);
        assert!(!s.is_demoted(lanes.now_ms()));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn a_demotion_expires() {
        let lanes = Arc::new(Lanes::new(LaneConfig {
            demotion_ms: 0,
            ..LaneConfig::default()
        }));
        let s = standing();
        lanes.demote(&s, Demotion::Limit);
        assert_eq!(s.inner.demotions[Demotion::Limit as usize].get(), 1);
        let thread = lanes.spawn(&s, spinner(0, 0)).await.unwrap();
        assert_ne!(thread, "outpost-background");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn disabled_lanes_keep_everything_in_the_foreground() {
        let lanes = Arc::new(Lanes::new(LaneConfig {
            enabled: false,
            cpu_budget_ms: 1,
            ..LaneConfig::default()
        }));
        let s = standing();
        lanes.demote(&s, Demotion::Limit);
        let thread = lanes.spawn(&s, spinner(2, 5)).await.unwrap();
        assert_ne!(thread, "outpost-background");
        assert_eq!(s.inner.background.get(), 0);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn a_panic_in_the_background_reaches_the_awaiting_task() {
        let lanes = Arc::new(Lanes::new(LaneConfig {
            cpu_budget_ms: 1,
            ..LaneConfig::default()
        }));
        let s = standing();
        let work = async {
            spinner(2, 3).await;
            tokio::task::yield_now().await;
            panic!("guest host code panicked");
        };
        let err = lanes.spawn(&s, work).await.unwrap_err();
        assert!(err.is_panic());
        assert_eq!(s.inner.background.get(), 1);
    }

    #[test]
    fn bad_settings_are_named() {
        let config = LaneConfig {
            cpu_budget_ms: 0,
            background_nice: 20,
            ..LaneConfig::default()
        };
        assert_eq!(
            config.problems(),
            [
                "lanes.cpu_budget_ms must be greater than 0",
                "lanes.background_nice must be between 0 and 19"
            ]
        );
    }

    #[test]
    fn background_threads_run_at_the_configured_priority() {
        let lanes = Arc::new(Lanes::new(LaneConfig::default()));
        let before = priority();
        let seen = lanes
            .background()
            .block_on(async { tokio::spawn(async { priority() }).await.unwrap() });
        // nice 19, and policy 5 (SCHED_IDLE) on Linux.
        assert_eq!(seen.0, 19);
        #[cfg(target_os = "linux")]
        assert_eq!(seen.1, 5);
        assert_eq!(priority(), before, "the calling thread is left alone");
    }

    /// The calling thread's (nice, policy), from /proc on Linux.
    fn priority() -> (i32, u32) {
        let nice = rustix::process::getpriority_process(None).unwrap();
        let policy = std::fs::read_to_string("/proc/thread-self/stat")
            .ok()
            .and_then(|stat| {
                // Fields after the command name, which ends at the last
                // ')'; the policy is field 41 of the whole line.
                let rest = &stat[stat.rfind(')')? + 2..];
                rest.split(' ').nth(41 - 3)?.parse().ok()
            })
            .unwrap_or(0);
        (nice, policy)
    }
}
