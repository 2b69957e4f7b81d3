//! The Ticker keeps every enabled schedule's next fire time in memory, ordered, with one
//! timer armed for the earliest. At a due time it claims the fire in the database —
//! exactly one replica's claim succeeds — and only then asks the Dispatcher to run it.
//! A backfill ([`backfill`]) claims past fires under the same key, so a fire runs once
//! whether the Ticker or a backfill, on whichever replica, asks first.
//! A schedule's `concurrency_policy` decides what a fire does while its previous run
//! (running or queued) is not final: Allow starts beside it, Forbid skips the fire,
//! Replace cancels it through the Dispatcher (as `POST .../cancel` does), waits until
//! it is final (at most [`REPLACE_WAIT`]; past that the fire is skipped, so runs of a
//! Replace schedule never overlap), then starts the new run. A backfill applies no
//! policy: it asks for its runs explicitly.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use chrono::{DateTime, NaiveDateTime, Utc};
use chrono_tz::Tz;

use super::dispatcher::{Cancel, DispatchError, Dispatcher, Execute};
use crate::model::schedule::parse_time_zone;
use crate::model::{ConcurrencyPolicy, CronSpec, ProcName};
use crate::store::{Execution, ProcStore, Schedule, ScheduleStore, Stores};

/// How long a Replace fire waits for the previous run to end before it skips.
pub const REPLACE_WAIT: Duration = Duration::from_secs(30);

/// The user of a scheduled run whose schedule names none (as the original).
pub const SCHEDULE_USER: &str = "worker@proctor";

/// Picks up a schedule created, changed or deleted on this replica, at once.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Reload {
    pub id: String,
}

/// Stops firing (at shutdown): claims not made here are left to the other replicas.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Pause;

/// The next fire of each schedule this Ticker holds (for the API).
#[derive(Message)]
#[rtype(result = "HashMap<String, DateTime<Utc>>")]
pub struct NextFires;

struct Entry {
    schedule: Schedule,
    /// Shared by every schedule with the same cron text (a parsed cron holds a few KB,
    /// most of them its years; many schedules share a handful of expressions).
    spec: Arc<CronSpec>,
    zone: Tz,
    next: DateTime<Utc>,
}

pub struct Ticker {
    schedules: ScheduleStore,
    procs: ProcStore,
    dispatcher: Addr<Dispatcher>,
    sync_interval: Duration,
    misfire_grace: Duration,
    entries: HashMap<String, Entry>,
    /// The parsed crons held, by their text.
    specs: HashMap<String, Arc<CronSpec>>,
    due: BTreeSet<(DateTime<Utc>, String)>,
    timer: Option<SpawnHandle>,
    paused: bool,
    /// The store's [`ScheduleStore::fingerprint`] when the manifest was last compared.
    fingerprint: Option<(i64, Option<NaiveDateTime>)>,
    /// Syncs since the manifest was last compared.
    since_full: u32,
    /// Fires of a Forbid or Replace schedule in progress here, one at a time each.
    in_turn: FireTurns,
}

/// Every this many syncs the manifest is compared whatever the fingerprint says (a
/// replica whose clock lags could write an update older than the latest one).
const FULL_SYNC_EVERY: u32 = 6;

impl Ticker {
    pub fn new(
        schedules: ScheduleStore,
        procs: ProcStore,
        dispatcher: Addr<Dispatcher>,
        sync_interval: Duration,
        misfire_grace: Duration,
    ) -> Self {
        Self {
            schedules,
            procs,
            dispatcher,
            sync_interval,
            misfire_grace,
            entries: HashMap::new(),
            specs: HashMap::new(),
            due: BTreeSet::new(),
            timer: None,
            paused: false,
            fingerprint: None,
            since_full: 0,
            in_turn: FireTurns::default(),
        }
    }

    fn anchor(schedule: &Schedule) -> DateTime<Utc> {
        schedule.created_at.and_utc()
    }

    /// Holds `schedule` (replacing an older version), due after `after`.
    fn hold(&mut self, schedule: Schedule, after: DateTime<Utc>) {
        self.forget(&schedule.id);
        if !schedule.enabled {
            return;
        }
        let spec = match self.specs.get(&schedule.cron) {
            Some(spec) => Ok(spec.clone()),
            None => CronSpec::parse(&schedule.cron).map(|spec| {
                let spec = Arc::new(spec);
                self.specs.insert(schedule.cron.clone(), spec.clone());
                spec
            }),
        };
        let parsed = spec.and_then(|spec| Ok((spec, parse_time_zone(&schedule.time_zone)?)));
        let (spec, zone) = match parsed {
            Ok(parsed) => parsed,
            Err(e) => {
                tracing::error!(schedule = %schedule.id, error = %e, "a stored schedule cannot be evaluated; skipped");
                return;
            }
        };
        let Some(next) = spec.next_after(after, zone, Self::anchor(&schedule)) else {
            self.release(&schedule.cron, spec);
            return;
        };
        self.due.insert((next, schedule.id.clone()));
        self.entries.insert(
            schedule.id.clone(),
            Entry {
                schedule,
                spec,
                zone,
                next,
            },
        );
    }

    fn forget(&mut self, id: &str) {
        if let Some(entry) = self.entries.remove(id) {
            self.due.remove(&(entry.next, id.to_owned()));
            self.release(&entry.schedule.cron, entry.spec);
        }
    }

    /// Drops a held schedule's share of its parsed cron; the last one drops the cron.
    fn release(&mut self, cron: &str, spec: Arc<CronSpec>) {
        // Held by `specs` and by `spec` alone: no other schedule uses it.
        if Arc::strong_count(&spec) <= 2 {
            self.specs.remove(cron);
        }
    }

    /// Arms the one timer for the earliest due fire.
    fn arm(&mut self, ctx: &mut Context<Self>) {
        if let Some(timer) = self.timer.take() {
            ctx.cancel_future(timer);
        }
        if self.paused {
            self.entries.clear();
            self.specs.clear();
            self.due.clear();
            return;
        }
        if let Some((when, _)) = self.due.first() {
            let wait = (*when - Utc::now()).to_std().unwrap_or(Duration::ZERO);
            self.timer = Some(ctx.run_later(wait, |act, ctx| {
                act.timer = None;
                act.tick(ctx);
            }));
        }
    }

    /// Fires everything due, moves each schedule to its next time, re-arms.
    fn tick(&mut self, ctx: &mut Context<Self>) {
        let now = Utc::now();
        let mut firing = Vec::new();
        while let Some((when, id)) = self.due.first().cloned() {
            if when > now {
                break;
            }
            self.due.remove(&(when, id.clone()));
            let Some(entry) = self.entries.get_mut(&id) else {
                continue;
            };
            let late = (now - when).to_std().unwrap_or_default();
            // A fire later than the misfire grace (a stall, a suspended machine) is
            // skipped rather than run in a burst; a merely busy Ticker loses none.
            if late <= self.misfire_grace {
                firing.push((entry.schedule.clone(), when));
            } else {
                tracing::warn!(schedule = %id, fire_at = %when, ?late, "fire skipped: the Ticker was stalled");
            }
            let after = if late <= self.misfire_grace {
                when
            } else {
                now
            };
            let anchor = Self::anchor(&entry.schedule);
            match entry.spec.next_after(after, entry.zone, anchor) {
                Some(next) => {
                    entry.next = next;
                    self.due.insert((next, id));
                }
                None => {
                    if let Some(entry) = self.entries.remove(&id) {
                        self.release(&entry.schedule.cron, entry.spec);
                    }
                }
            }
        }
        if !firing.is_empty() {
            actix::spawn(fire(self.clone_parts(), firing));
        }
        self.arm(ctx);
    }

    fn clone_parts(&self) -> Parts {
        Parts {
            schedules: self.schedules.clone(),
            procs: self.procs.clone(),
            dispatcher: self.dispatcher.clone(),
            in_turn: self.in_turn.clone(),
        }
    }

    /// Brings what is held in line with the database. At start (`catch_up`) every
    /// enabled schedule is loaded. After that, a sync asks for the cheap fingerprint and
    /// stops there when nothing changed; when something did (and every
    /// [`FULL_SYNC_EVERY`]th sync regardless), it reads the manifest of ids and update
    /// times, forgets what is gone and loads only the schedules that are new or changed.
    fn sync(&mut self, ctx: &mut Context<Self>, catch_up: bool) {
        if catch_up {
            return self.load_all(ctx);
        }
        let schedules = self.schedules.clone();
        let known = if self.since_full + 1 >= FULL_SYNC_EVERY {
            None
        } else {
            self.fingerprint
        };
        let look = async move {
            let print = schedules.fingerprint().await?;
            if Some(print) == known {
                return Ok((print, None));
            }
            Ok::<_, crate::store::StoreError>((print, Some(schedules.manifest().await?)))
        };
        ctx.spawn(look.into_actor(self).map(move |looked, act, ctx| {
            let (print, manifest) = match looked {
                Ok((_, None)) => {
                    act.since_full += 1;
                    return;
                }
                Ok((print, Some(manifest))) => (print, manifest),
                Err(e) => {
                    tracing::warn!(error = %e, "cannot check the schedules; keeping the ones held");
                    return;
                }
            };
            let listed: HashMap<&str, NaiveDateTime> =
                manifest.iter().map(|(id, at)| (id.as_str(), *at)).collect();
            let gone: Vec<String> = act
                .entries
                .keys()
                .filter(|id| !listed.contains_key(id.as_str()))
                .cloned()
                .collect();
            for id in gone {
                act.forget(&id);
            }
            let wanted: Vec<String> = manifest
                .into_iter()
                .filter(|(id, at)| act.entries.get(id).is_none_or(|e| e.schedule.updated_at != *at))
                .map(|(id, _)| id)
                .collect();
            act.fingerprint = Some(print);
            act.since_full = 0;
            if wanted.is_empty() {
                act.arm(ctx);
                return;
            }
            let schedules = act.schedules.clone();
            let load = async move { schedules.get_many(wanted).await };
            ctx.spawn(load.into_actor(act).map(|loaded, act, ctx| match loaded {
                Ok(loaded) => act.take(loaded, ctx, false),
                Err(e) => {
                    // Looked at again on the next sync.
                    act.fingerprint = None;
                    tracing::warn!(error = %e, "cannot load the changed schedules; keeping the ones held");
                }
            }));
        }));
    }

    /// Loads every enabled schedule (at start), running a recent missed fire of each.
    fn load_all(&mut self, ctx: &mut Context<Self>) {
        let schedules = self.schedules.clone();
        let load = async move {
            let print = schedules.fingerprint().await?;
            Ok::<_, crate::store::StoreError>((print, schedules.list(true).await?))
        };
        ctx.spawn(load.into_actor(self).map(move |loaded, act, ctx| {
            let (print, loaded) = match loaded {
                Ok(loaded) => loaded,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot load schedules; keeping the ones held");
                    return;
                }
            };
            act.fingerprint = Some(print);
            act.since_full = 0;
            let seen: BTreeSet<&str> = loaded.iter().map(|s| s.id.as_str()).collect();
            let gone: Vec<String> = act
                .entries
                .keys()
                .filter(|id| !seen.contains(id.as_str()))
                .cloned()
                .collect();
            for id in gone {
                act.forget(&id);
            }
            act.take(loaded, ctx, true);
        }));
    }

    /// Holds the schedules loaded (unless held at the same version already), re-arms.
    fn take(&mut self, loaded: Vec<Schedule>, ctx: &mut Context<Self>, catch_up: bool) {
        let now = Utc::now();
        for schedule in loaded {
            let unchanged = self
                .entries
                .get(&schedule.id)
                .is_some_and(|e| e.schedule.updated_at == schedule.updated_at);
            if unchanged {
                continue;
            }
            if catch_up {
                self.catch_up(&schedule, now, self.misfire_grace);
            }
            self.hold(schedule, now);
        }
        self.arm(ctx);
    }
    /// A fire missed while no replica ran: run the last one once if it is recent.
    fn catch_up(&self, schedule: &Schedule, now: DateTime<Utc>, grace: Duration) {
        let Ok(spec) = CronSpec::parse(&schedule.cron) else {
            return;
        };
        let Ok(zone) = parse_time_zone(&schedule.time_zone) else {
            return;
        };
        let anchor = Self::anchor(schedule);
        let Some(last) = spec.last_at_or_before(now, zone, anchor) else {
            return;
        };
        let age = (now - last).to_std().unwrap_or_default();
        if last > anchor && age <= grace {
            // The claim makes this a no-op when the fire did happen.
            actix::spawn(fire(self.clone_parts(), vec![(schedule.clone(), last)]));
        } else if last > anchor {
            tracing::info!(schedule = %schedule.id, fire_at = %last, "a missed fire is older than the misfire grace; not run");
        }
    }
}

#[derive(Clone)]
struct Parts {
    schedules: ScheduleStore,
    procs: ProcStore,
    dispatcher: Addr<Dispatcher>,
    in_turn: FireTurns,
}

/// Makes the due fires of one schedule look at its previous run and start theirs one
/// at a time. Fires of successive instants are separate tasks: on a busy machine the
/// fire of :02 could look for unfinished runs before the fire of :00 had written its
/// run, and both would start, overlapping under Forbid or Replace. A schedule's entry
/// lives only while one of its fires holds or waits for its turn.
#[derive(Clone, Default)]
struct FireTurns(std::sync::Arc<std::sync::Mutex<HashMap<String, TurnLock>>>);

type TurnLock = std::sync::Arc<tokio::sync::Mutex<()>>;

/// A schedule's turn, held until dropped.
struct Turn {
    turns: FireTurns,
    id: String,
    guard: Option<tokio::sync::OwnedMutexGuard<()>>,
}

impl FireTurns {
    /// Waits until no other fire of schedule `id` is looking or starting here.
    async fn take(&self, id: &str) -> Turn {
        let lock = {
            let mut turns = self.0.lock().unwrap_or_else(|e| e.into_inner());
            turns.entry(id.to_owned()).or_default().clone()
        };
        Turn {
            turns: self.clone(),
            id: id.to_owned(),
            guard: Some(lock.lock_owned().await),
        }
    }

    #[cfg(test)]
    fn held(&self) -> usize {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).len()
    }
}

impl Drop for Turn {
    fn drop(&mut self) {
        drop(self.guard.take());
        let mut turns = self.turns.0.lock().unwrap_or_else(|e| e.into_inner());
        // Only the map holds it: no fire of this schedule waits.
        if turns
            .get(&self.id)
            .is_some_and(|lock| std::sync::Arc::strong_count(lock) == 1)
        {
            turns.remove(&self.id);
        }
    }
}

/// How long a claim or an outcome that meets a database blip is retried.
const RETRY_FOR: std::time::Duration = std::time::Duration::from_secs(30);

/// Runs `attempt` until it succeeds, fails for good, or [`RETRY_FOR`] has passed while
/// it met database blips (a restart, a dropped connection), backing off in between.
async fn retrying<T, F, Fut>(what: &str, mut attempt: F) -> Result<T, crate::store::StoreError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, crate::store::StoreError>>,
{
    let started = std::time::Instant::now();
    let mut wait = std::time::Duration::from_millis(50);
    loop {
        match attempt().await {
            Err(e) if e.is_transient() && started.elapsed() < RETRY_FOR => {
                tracing::warn!(error = %e, "{what} met a database blip; retrying");
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(std::time::Duration::from_secs(2));
            }
            other => return other,
        }
    }
}

/// Why a fire is run: its time came (the Ticker), or someone asked for a past one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Occasion {
    Due,
    Backfill,
}

/// What became of one fire of a backfill.
#[derive(Debug, Clone)]
pub enum FireReport {
    /// Claimed earlier (by a Ticker or another backfill, on any replica): not run again.
    AlreadyClaimed,
    /// Claimed here; the outcome recorded for it and the execution it started, if any.
    Claimed {
        outcome: String,
        execution: Option<Box<Execution>>,
    },
}

/// Claims the fires due at one instant in one transaction; runs the ones this
/// replica won.
async fn fire(parts: Parts, fires: Vec<(Schedule, DateTime<Utc>)>) {
    let count = fires.len();
    if let Err(e) = claim_and_run(&parts, fires, Occasion::Due).await {
        tracing::error!(fires = count, error = %e, "cannot claim schedule fires");
        metrics::counter!(crate::telemetry::names::SCHEDULE_FIRES, "outcome" => "failed")
            .increment(count as u64);
    }
}

/// Runs the past fires `at` of `schedule` that never ran, in fire order: each is
/// claimed under the very key the Ticker claims, so a fire runs once whoever (Ticker or
/// backfill, on any replica) asks first. The schedule's concurrency policy is not
/// applied: a backfill asks for these runs explicitly.
pub async fn backfill(
    stores: &Stores,
    dispatcher: Addr<Dispatcher>,
    schedule: Schedule,
    at: Vec<DateTime<Utc>>,
) -> Result<Vec<FireReport>, crate::store::StoreError> {
    let parts = Parts {
        schedules: stores.schedules.clone(),
        procs: stores.procs.clone(),
        dispatcher,
        in_turn: FireTurns::default(),
    };
    let fires = at
        .into_iter()
        .map(|when| (schedule.clone(), when))
        .collect();
    claim_and_run(&parts, fires, Occasion::Backfill).await
}

/// Claims `fires` in one transaction, runs the ones won (at once when due, one after
/// another in fire order for a backfill), records their outcomes; answers what became
/// of each, in order.
async fn claim_and_run(
    parts: &Parts,
    fires: Vec<(Schedule, DateTime<Utc>)>,
    occasion: Occasion,
) -> Result<Vec<FireReport>, crate::store::StoreError> {
    let keys: Vec<(String, chrono::NaiveDateTime)> = fires
        .iter()
        .map(|(s, when)| (s.id.clone(), when.naive_utc()))
        .collect();
    let claim = || parts.schedules.claim(keys.clone());
    let claimed = retrying("claiming schedule fires", claim).await?;
    let mut won = Vec::new();
    for ((schedule, when), mine) in fires.into_iter().zip(claimed.iter().copied()) {
        if mine {
            won.push(run_fire(parts.clone(), schedule, when, occasion));
        } else {
            metrics::counter!(crate::telemetry::names::SCHEDULE_FIRES, "outcome" => "claimed_elsewhere")
                .increment(1);
            tracing::debug!(schedule = %schedule.id, %when, "fire claimed elsewhere");
        }
    }
    let ran: Vec<_> = match occasion {
        // The outcomes of one instant's fires are written together.
        Occasion::Due => {
            let ran = futures_util::future::join_all(won).await;
            record(parts, &ran).await;
            ran
        }
        // A long backfill writes as it goes, so what it started shows (and stays
        // recorded if this replica dies) before the last run starts.
        Occasion::Backfill => {
            let mut ran = Vec::with_capacity(won.len());
            let mut written = 0;
            for run in won {
                ran.push(run.await);
                if ran.len() - written == RECORD_EVERY {
                    record(parts, &ran[written..]).await;
                    written = ran.len();
                }
            }
            record(parts, &ran[written..]).await;
            ran
        }
    };
    let mut ran = ran.into_iter();
    Ok(claimed
        .into_iter()
        .map(|mine| match (mine, mine.then(|| ran.next()).flatten()) {
            (true, Some((record, execution))) => FireReport::Claimed {
                outcome: record
                    .map_or_else(|| "failed: the store is unavailable".to_owned(), |r| r.2),
                execution: execution.map(Box::new),
            },
            _ => FireReport::AlreadyClaimed,
        })
        .collect())
}

/// A fire's outcome to record: `(schedule id, fire_at, outcome, execution id)`.
type FireRecord = (String, NaiveDateTime, String, Option<String>);

/// How many outcomes of a backfill are written at once.
const RECORD_EVERY: usize = 50;

/// Writes the outcomes of fires run here, in one transaction.
async fn record(parts: &Parts, ran: &[(Option<FireRecord>, Option<Execution>)]) {
    let outcomes: Vec<FireRecord> = ran.iter().filter_map(|(r, _)| r.clone()).collect();
    if outcomes.is_empty() {
        return;
    }
    let count = outcomes.len();
    let write = || parts.schedules.record(outcomes.clone());
    if let Err(e) = retrying("recording the fires' outcomes", write).await {
        tracing::warn!(fires = count, error = %e, "cannot record the fires' outcomes");
    }
}

/// Runs a fire this replica claimed (unless Forbid says to skip a due one); answers
/// how it went, to be recorded, and the execution it started.
async fn run_fire(
    parts: Parts,
    schedule: Schedule,
    when: DateTime<Utc>,
    occasion: Occasion,
) -> (Option<FireRecord>, Option<Execution>) {
    let fire_at: NaiveDateTime = when.naive_utc();
    let id = schedule.id.as_str();
    let started = if occasion == Occasion::Backfill {
        "backfilled"
    } else {
        "dispatched"
    };
    let outcome = async {
        let policy: ConcurrencyPolicy = schedule.concurrency_policy.parse().unwrap_or_default();
        // Held until this fire's run is written (or the fire skipped).
        let _turn = match policy {
            ConcurrencyPolicy::Forbid | ConcurrencyPolicy::Replace if occasion == Occasion::Due => {
                Some(parts.in_turn.take(id).await)
            }
            _ => None,
        };
        if occasion == Occasion::Due
            && policy == ConcurrencyPolicy::Forbid
            && parts.schedules.has_unfinished_run(id).await?
        {
            return Ok(("skipped: the previous run is still going".to_owned(), None));
        }
        if occasion == Occasion::Due
            && policy == ConcurrencyPolicy::Replace
            && !replace(&parts, id).await?
        {
            return Ok((
                format!(
                    "skipped: Replace could not end the previous run within {}s",
                    REPLACE_WAIT.as_secs()
                ),
                None,
            ));
        }
        let proc = match ProcName::parse(&schedule.proc_name) {
            Ok(name) => parts.procs.get(&name).await?,
            Err(_) => None,
        };
        let Some(proc) = proc else {
            return Ok((
                format!("failed: proc {} no longer exists", schedule.proc_name),
                None,
            ));
        };
        let user = if schedule.user_email.is_empty() {
            SCHEDULE_USER.to_owned()
        } else {
            schedule.user_email.clone()
        };
        let execute = Execute {
            proc,
            args: schedule.args.clone(),
            user_email: user,
            callback_url: None,
            notify: schedule.notify.clone(),
            schedule_id: Some(schedule.id.clone()),
        };
        match parts.dispatcher.send(execute).await {
            Ok(Ok(execution)) => Ok((started.to_owned(), Some(execution))),
            Ok(Err(e)) => Ok((format!("failed: {e}"), None)),
            Err(e) => Ok((format!("failed: the dispatcher is unavailable: {e}"), None)),
        }
    };
    let result: Result<_, crate::store::StoreError> = outcome.await;
    let kind = match &result {
        Ok((outcome, _)) if outcome == started => started,
        Ok((outcome, _)) if outcome.starts_with("skipped") => "skipped",
        _ => "failed",
    };
    metrics::counter!(crate::telemetry::names::SCHEDULE_FIRES, "outcome" => kind).increment(1);
    match result {
        Ok((outcome, execution)) => {
            tracing::info!(schedule = id, %when, %outcome, "schedule fired");
            let record = (
                id.to_owned(),
                fire_at,
                outcome,
                execution.as_ref().map(|e| e.id.clone()),
            );
            (Some(record), execution)
        }
        Err(e) => {
            tracing::error!(schedule = id, %when, error = %e, "cannot fire a schedule");
            (None, None)
        }
    }
}

/// Cancels the schedule's unfinished runs and waits until none is left; answers
/// whether that happened within [`REPLACE_WAIT`].
async fn replace(parts: &Parts, id: &str) -> Result<bool, crate::store::StoreError> {
    let previous = parts.schedules.unfinished_runs(id).await?;
    if previous.is_empty() {
        return Ok(true);
    }
    let deadline = tokio::time::Instant::now() + REPLACE_WAIT;
    let by = format!("schedule {id} (Replace)");
    let cancels = previous.iter().filter_map(|name| {
        let execution = crate::model::ExecutionName::parse(name).ok()?;
        let cancel = parts.dispatcher.send(Cancel {
            execution: execution.clone(),
            by: by.clone(),
        });
        Some(async move {
            match tokio::time::timeout_at(deadline, cancel).await {
                Ok(Ok(Ok(_) | Err(DispatchError::AlreadyEnded { .. }))) => {
                    tracing::info!(%execution, "cancelled by a Replace fire")
                }
                Ok(Ok(Err(e))) => {
                    tracing::warn!(%execution, error = %e, "a Replace fire cannot cancel the previous run")
                }
                Ok(Err(e)) => {
                    tracing::warn!(%execution, error = %e, "the Dispatcher is unavailable")
                }
                Err(_) => tracing::warn!(%execution, "a Replace fire's cancel timed out"),
            }
        })
    });
    futures_util::future::join_all(cancels).await;
    while tokio::time::Instant::now() < deadline {
        if !parts.schedules.has_unfinished_run(id).await? {
            return Ok(true);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tracing::warn!(
        schedule = id,
        "the previous run did not end within the Replace wait; skipping the fire"
    );
    Ok(false)
}

impl Actor for Ticker {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        self.sync(ctx, true);
        ctx.run_interval(self.sync_interval, |act, ctx| act.sync(ctx, false));
    }
}

impl Supervised for Ticker {
    fn restarting(&mut self, _: &mut Context<Self>) {
        tracing::warn!("Ticker restarting");
        crate::telemetry::report("the Ticker actor restarted", &[("actor", "Ticker")]);
        self.entries.clear();
        self.specs.clear();
        self.due.clear();
        self.timer = None;
    }
}

/// Reloads one schedule from the database (or drops it when deleted or disabled).
impl Handler<Reload> for Ticker {
    type Result = ();

    fn handle(&mut self, msg: Reload, ctx: &mut Context<Self>) {
        let schedules = self.schedules.clone();
        let id = msg.id;
        let load = async move { (schedules.get(&id).await, id) };
        ctx.wait(load.into_actor(self).map(|(loaded, id), act, ctx| {
            match loaded {
                Ok(Some(schedule)) => act.hold(schedule, Utc::now()),
                Ok(None) => act.forget(&id),
                Err(e) => tracing::warn!(schedule = %id, error = %e, "cannot reload a schedule; the next sync will"),
            }
            act.arm(ctx);
        }));
    }
}

/// Drops every schedule and the timer; nothing fires here any more.
impl Handler<Pause> for Ticker {
    type Result = ();

    fn handle(&mut self, _: Pause, ctx: &mut Context<Self>) {
        if let Some(timer) = self.timer.take() {
            ctx.cancel_future(timer);
        }
        self.entries.clear();
        self.specs.clear();
        self.due.clear();
        self.paused = true;
    }
}

/// Answers the next fire times held.
impl Handler<NextFires> for Ticker {
    type Result = MessageResult<NextFires>;

    fn handle(&mut self, _: NextFires, _: &mut Context<Self>) -> Self::Result {
        MessageResult(
            self.entries
                .iter()
                .map(|(id, e)| (id.clone(), e.next))
                .collect(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_schedules_fires_take_turns_and_leave_nothing_behind() {
        let turns = FireTurns::default();
        let first = turns.take("a").await;
        // Another schedule is not held up.
        let other = turns.take("b").await;
        let order = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let second = {
            let (turns, order) = (turns.clone(), order.clone());
            tokio::spawn(async move {
                let _turn = turns.take("a").await;
                order.lock().unwrap().push("second");
            })
        };
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(order.lock().unwrap().is_empty(), "waited for the first");
        order.lock().unwrap().push("first done");
        drop(first);
        second.await.unwrap();
        assert_eq!(*order.lock().unwrap(), ["first done", "second"]);
        assert_eq!(turns.held(), 1, "only b's turn is left");
        drop(other);
        assert_eq!(turns.held(), 0);
    }
}
