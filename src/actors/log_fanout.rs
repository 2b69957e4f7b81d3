//! LogFanout owns one upstream log stream per running execution: it numbers each line,
//! stores every line in `execution_logs` in batches, and forwards it to every
//! subscriber. A late subscriber reads the stored lines first, then subscribes from the
//! last one it has, so it sees every line once, in order. A subscriber that falls
//! too far behind is unsubscribed and told, and reads on from the store; the others
//! never wait for it. Storing runs beside delivery: subscribers get a line as soon
//! as it arrives, and the run's output slows only when the store falls
//! [`MAX_UNSTORED_LINES`] behind. Each write, once stored, is announced to the other
//! replicas ("lines up to seq N are stored"), whose sessions read them from the store.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use chrono::NaiveDateTime;

use crate::executor::{LogEvent, Origin};
use crate::model::{ExecutionName, Status};
use crate::store::{Announcement, Bus, LogStore, StoredLine};

/// How often buffered lines are written (and announced to the other replicas: this is
/// most of a live line's delay on a replica that does not follow the run).
const FLUSH_INTERVAL: Duration = Duration::from_millis(10);
/// Buffered lines that trigger a write before the next tick.
const FLUSH_LINES: usize = 5_000;
/// Stored lines kept in memory per execution so a subscriber catching up from the
/// store can join without a gap.
const RECENT_LINES: usize = 2_048;
/// Lines received and not yet stored beyond which the LogFanout waits for the store
/// before it takes more (a bound on memory whatever the runs print).
const MAX_UNSTORED_LINES: usize = 50_000;
/// Lines a live subscriber may lag behind before it is sent back to the store. They
/// are shared by every subscriber, so this bounds memory once, not per subscriber.
pub const SUBSCRIBER_BACKLOG_LINES: usize = 100_000;
/// How long after its final status an execution's output may still arrive.
const UPSTREAM_GRACE: Duration = Duration::from_secs(10);

/// One numbered line of output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogLine {
    pub seq: i64,
    pub text: String,
    pub at: NaiveDateTime,
    /// The pod and container timestamp it came from (Kubernetes runs).
    pub origin: Option<Origin>,
}

/// What a subscriber receives.
#[derive(Message, Debug, Clone)]
#[rtype(result = "()")]
pub enum ToSubscriber {
    /// Consecutive lines, in order.
    Lines(Arc<Vec<LogLine>>),
    /// Every line has been sent; the execution ended in `status`.
    Ended { status: Status },
    /// The subscriber fell more than [`SUBSCRIBER_BACKLOG_LINES`] behind and was
    /// unsubscribed: it reads on from the store (at its own pace), then subscribes again.
    FellBehind,
    /// proctord is shutting down; every line so far has been sent.
    ShuttingDown,
}

/// proctord is stopping: store every buffered line, send each subscriber what it is
/// owed, then tell it the server is going away.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Shutdown;

/// Starts tracking an execution's output (before its run is launched).
#[derive(Message)]
#[rtype(result = "()")]
pub struct Open {
    pub execution: ExecutionName,
    pub execution_id: String,
    /// The seq of its next line (1 for a new execution).
    pub next_seq: i64,
}

/// Output from the executor.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Incoming(pub LogEvent);

/// The run will produce no (more) output: its launch failed or it was never known to
/// the executor.
#[derive(Message)]
#[rtype(result = "()")]
pub struct UpstreamGone {
    pub execution: ExecutionName,
}

/// The execution reached a final status (sent by the Watcher once it is written).
#[derive(Message)]
#[rtype(result = "()")]
pub struct Finished {
    pub execution: ExecutionName,
    pub status: Status,
}

/// Another replica owns the execution now: drop its stream here (lines not yet stored
/// are the new owner's to read again); its subscribers read on from the store.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Forget {
    pub execution: ExecutionName,
}

/// Answers once every line of the execution is stored (its output ended, or never
/// started here): the Watcher asks before writing a final status, so a final status
/// always comes with the complete stored log.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Drain {
    pub execution: ExecutionName,
}

/// Subscribes to the lines after `after`.
#[derive(Message)]
#[rtype(result = "SubscribeReply")]
pub struct Subscribe {
    pub execution: ExecutionName,
    pub after: i64,
    pub subscriber: Recipient<ToSubscriber>,
}

#[derive(Debug, MessageResponse)]
pub enum SubscribeReply {
    /// Subscribed: the lines after `after` come as [`ToSubscriber::Lines`] (a batch
    /// may start earlier), as fast as the subscriber takes them.
    Live { id: u64 },
    /// The lines after `after` are in the store but no longer in memory: read more
    /// from the store, then subscribe again.
    CatchUp,
    /// This proctord is not streaming the execution: the store has everything there is.
    NotLive,
}

#[derive(Message)]
#[rtype(result = "()")]
pub struct Unsubscribe {
    pub execution: ExecutionName,
    pub id: u64,
}

/// The batches (in seq order) from the one holding `seq` on; the first may start
/// earlier.
fn batches_from(
    batches: &VecDeque<Arc<Vec<LogLine>>>,
    seq: i64,
) -> impl Iterator<Item = &Arc<Vec<LogLine>>> {
    let first = batches.partition_point(|b| b.last().is_some_and(|l| l.seq < seq));
    batches.range(first..)
}

/// A subscriber is a cursor into the execution's batches in memory.
struct Subscriber {
    id: u64,
    recipient: Recipient<ToSubscriber>,
    /// The seq of the next line it needs.
    next: i64,
}

impl Subscriber {
    /// Sends the batches from its cursor on until its mailbox is full; false when it
    /// must be dropped (gone, or more than [`SUBSCRIBER_BACKLOG_LINES`] behind).
    fn deliver(&mut self, batches: &VecDeque<Arc<Vec<LogLine>>>, head: i64) -> bool {
        for batch in batches_from(batches, self.next) {
            match self.recipient.try_send(ToSubscriber::Lines(batch.clone())) {
                Ok(()) => self.next = batch.last().map_or(self.next, |l| l.seq + 1),
                Err(SendError::Full(_)) => break,
                Err(SendError::Closed(_)) => return false,
            }
        }
        if head - self.next >= SUBSCRIBER_BACKLOG_LINES as i64 {
            self.recipient.do_send(ToSubscriber::FellBehind);
            return false;
        }
        true
    }

    /// Sends everything from its cursor on past the mailbox bound (bounded: it is
    /// within [`SUBSCRIBER_BACKLOG_LINES`]), then `last`.
    fn finish(self, batches: &VecDeque<Arc<Vec<LogLine>>>, last: ToSubscriber) {
        for batch in batches_from(batches, self.next) {
            self.recipient.do_send(ToSubscriber::Lines(batch.clone()));
        }
        self.recipient.do_send(last);
    }
}

struct Live {
    execution_id: String,
    next_seq: i64,
    /// Lines in memory in the batches they arrived in: every line not yet stored,
    /// every line a subscriber has still to get, and at least [`RECENT_LINES`] stored
    /// ones before them for subscribers catching up.
    batches: VecDeque<Arc<Vec<LogLine>>>,
    /// The last line handed to a write.
    sent_upto: i64,
    /// The last line known stored.
    stored_upto: i64,
    subscribers: Vec<Subscriber>,
    upstream_ended: bool,
    status: Option<Status>,
    /// Who waits for the output to end and be stored.
    drains: Vec<tokio::sync::oneshot::Sender<()>>,
}

impl Live {
    /// Sends each subscriber what it can take; drops those gone or too far behind.
    fn deliver(&mut self) {
        let head = self.next_seq;
        let batches = &self.batches;
        self.subscribers
            .retain_mut(|subscriber| subscriber.next >= head || subscriber.deliver(batches, head));
    }

    /// The oldest seq still in memory.
    fn oldest_in_memory(&self) -> i64 {
        self.batches
            .front()
            .and_then(|batch| batch.first())
            .map_or(self.next_seq, |line| line.seq)
    }

    /// Every line it will get is stored.
    fn complete(&self) -> bool {
        self.upstream_ended && self.stored_upto == self.next_seq - 1
    }
}

/// A write finished: the lines up to each seq are stored.
#[derive(Message)]
#[rtype(result = "()")]
struct Stored(Vec<(ExecutionName, i64)>);

pub struct LogFanout {
    logs: LogStore,
    bus: Bus,
    live: HashMap<ExecutionName, Live>,
    next_subscriber: u64,
    /// A write is in flight (one at a time, so lines are stored in order).
    writing: bool,
    /// Resolves when the write in flight has stored its lines.
    write_done: Option<tokio::sync::oneshot::Receiver<()>>,
    /// Lines received and not yet stored, over every execution.
    unstored: usize,
    /// Who waits for every line received so far to be stored (shutdown).
    idle_waiters: Vec<tokio::sync::oneshot::Sender<()>>,
    /// The flush timer, running only while some stream is open (an idle proctord
    /// does not wake up for it).
    ticking: Option<SpawnHandle>,
}

impl LogFanout {
    pub fn new(logs: LogStore, bus: Bus) -> Self {
        Self {
            logs,
            bus,
            live: HashMap::new(),
            next_subscriber: 1,
            writing: false,
            write_done: None,
            unstored: 0,
            idle_waiters: Vec::new(),
            ticking: None,
        }
    }

    /// Starts the flush timer unless it runs; it stops itself once no stream is open
    /// and every line is stored.
    fn tick_while_live(&mut self, ctx: &mut Context<Self>) {
        if self.ticking.is_some() {
            return;
        }
        self.ticking = Some(ctx.run_interval(FLUSH_INTERVAL, |act, ctx| {
            act.flush(ctx);
            // Retry subscribers whose mailboxes were full.
            for live in act.live.values_mut() {
                live.deliver();
            }
            if act.live.is_empty()
                && !act.writing
                && act.unstored == 0
                && let Some(timer) = act.ticking.take()
            {
                ctx.cancel_future(timer);
            }
        }));
    }

    /// Hands every line not yet in a write to a new write, unless one is in flight
    /// (its end starts the next). The write runs on its own task, retrying until the
    /// store takes the lines: subscribers get lines while it runs.
    fn flush(&mut self, ctx: &mut Context<Self>) {
        if self.writing {
            return;
        }
        let mut rows = Vec::new();
        let mut upto = Vec::new();
        for (execution, live) in &mut self.live {
            let sent_upto = live.sent_upto;
            // Nothing new: skips the batch search (thousands of quiet runs in flight).
            if live.next_seq - 1 <= sent_upto {
                continue;
            }
            let pending = batches_from(&live.batches, sent_upto + 1)
                .flat_map(|batch| batch.iter())
                .filter(|line| line.seq > sent_upto);
            let before = rows.len();
            rows.extend(pending.map(|line| StoredLine {
                execution_id: live.execution_id.clone(),
                seq: line.seq,
                line: line.text.clone(),
                logged_at: line.at,
                pod: line.origin.as_ref().map(|o| o.pod.to_string()),
                emitted_ns: line.origin.as_ref().map(|o| o.emitted_ns),
            }));
            if rows.len() > before {
                live.sent_upto = live.next_seq - 1;
                upto.push((execution.clone(), live.sent_upto));
            }
        }
        if rows.is_empty() {
            return;
        }
        let (done, finished) = tokio::sync::oneshot::channel();
        self.writing = true;
        self.write_done = Some(finished);
        let logs = self.logs.clone();
        let me = ctx.address();
        actix::spawn(async move {
            let mut delay = Duration::from_millis(100);
            while let Err(e) = logs.append(rows.clone()).await {
                tracing::error!(error = %e, lines = rows.len(), "cannot store log lines; retrying");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(5));
            }
            let _ = done.send(());
            me.do_send(Stored(upto));
        });
    }

    /// More than [`MAX_UNSTORED_LINES`] wait for the store: handle nothing else until
    /// the write in flight ends. The executors' channel fills and the runs' output
    /// slows, instead of memory growing.
    fn hold_back_if_behind(&mut self, ctx: &mut Context<Self>) {
        if self.unstored < MAX_UNSTORED_LINES {
            return;
        }
        if let Some(finished) = self.write_done.take() {
            ctx.wait(
                async move {
                    let _ = finished.await;
                }
                .into_actor(self),
            );
        }
    }

    /// After a write, or when an execution's state changes: releases whoever waits
    /// for stored lines and closes the streams that are done.
    fn settle(&mut self, ctx: &mut Context<Self>) {
        let done: Vec<ExecutionName> = self
            .live
            .iter_mut()
            .filter(|(_, live)| live.complete())
            .map(|(execution, live)| {
                for drain in live.drains.drain(..) {
                    let _ = drain.send(());
                }
                execution.clone()
            })
            .collect();
        for execution in done {
            self.close_if_done(&execution);
        }
        if self.unstored == 0 && !self.writing {
            for waiter in self.idle_waiters.drain(..) {
                let _ = waiter.send(());
            }
        }
        let waiting = !self.idle_waiters.is_empty()
            || self
                .live
                .values()
                .any(|live| live.upstream_ended && !live.complete());
        if waiting || self.unstored >= FLUSH_LINES {
            self.flush(ctx);
        }
    }

    /// The output ended: store what is buffered, release the drains, close if the
    /// status is known.
    fn upstream_ended(&mut self, execution: &ExecutionName, ctx: &mut Context<Self>) {
        let Some(live) = self.live.get_mut(execution) else {
            return;
        };
        if live.upstream_ended {
            return;
        }
        live.upstream_ended = true;
        self.settle(ctx);
    }

    /// Output that has not ended [`UPSTREAM_GRACE`] from now is taken as ended.
    fn end_upstream_later(&mut self, execution: ExecutionName, ctx: &mut Context<Self>) {
        ctx.run_later(UPSTREAM_GRACE, move |act, ctx| {
            if act.live.get(&execution).is_some_and(|live| !live.upstream_ended) {
                tracing::warn!(%execution, "output did not end within {UPSTREAM_GRACE:?}; closing its stream");
                act.upstream_ended(&execution, ctx);
            }
        });
    }

    /// Closes the execution's stream once its output has ended and is stored, and its
    /// status is known.
    fn close_if_done(&mut self, execution: &ExecutionName) {
        let Some(live) = self.live.get(execution) else {
            return;
        };
        let Some(status) = live.status else {
            return;
        };
        if !live.complete() {
            return;
        }
        let live = self.live.remove(execution).expect("checked above");
        for subscriber in live.subscribers {
            subscriber.finish(&live.batches, ToSubscriber::Ended { status });
        }
    }
}

impl Actor for LogFanout {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        self.tick_while_live(ctx);
    }
}

impl Supervised for LogFanout {
    fn restarting(&mut self, _: &mut Context<Self>) {
        tracing::warn!("LogFanout restarting");
        crate::telemetry::report("the LogFanout actor restarted", &[("actor", "LogFanout")]);
    }
}

/// Registers the execution so its lines are numbered from `next_seq`.
impl Handler<Open> for LogFanout {
    type Result = ();

    fn handle(&mut self, msg: Open, ctx: &mut Context<Self>) {
        self.tick_while_live(ctx);
        self.live.entry(msg.execution).or_insert_with(|| Live {
            execution_id: msg.execution_id,
            next_seq: msg.next_seq,
            batches: VecDeque::new(),
            sent_upto: msg.next_seq - 1,
            stored_upto: msg.next_seq - 1,
            subscribers: Vec::new(),
            upstream_ended: false,
            status: None,
            drains: Vec::new(),
        });
    }
}

/// Numbers, buffers and forwards lines; notes the end of a stream.
impl Handler<Incoming> for LogFanout {
    type Result = ();

    fn handle(&mut self, Incoming(event): Incoming, ctx: &mut Context<Self>) {
        match event {
            LogEvent::Lines { execution, lines } => {
                let Some(live) = self.live.get_mut(&execution) else {
                    tracing::warn!(%execution, lines = lines.len(), "output for an execution that is not open; dropped");
                    return;
                };
                metrics::counter!(crate::telemetry::names::LOG_LINES).increment(lines.len() as u64);
                let mut batch = Vec::with_capacity(lines.len());
                for line in lines {
                    batch.push(LogLine {
                        seq: live.next_seq,
                        text: line.text,
                        at: line.at,
                        origin: line.origin,
                    });
                    live.next_seq += 1;
                }
                self.unstored += batch.len();
                live.batches.push_back(Arc::new(batch));
                live.deliver();
                if self.unstored >= FLUSH_LINES {
                    self.flush(ctx);
                }
                self.hold_back_if_behind(ctx);
            }
            LogEvent::Ended { execution } => self.upstream_ended(&execution, ctx),
        }
    }
}

/// A write ended: moves each execution's stored mark and trims what memory keeps.
impl Handler<Stored> for LogFanout {
    type Result = ();

    fn handle(&mut self, Stored(upto): Stored, ctx: &mut Context<Self>) {
        self.writing = false;
        self.write_done = None;
        self.bus.publish(Announcement::Stored {
            upto: upto
                .iter()
                .map(|(execution, seq)| (execution.to_string(), *seq))
                .collect(),
        });
        for (execution, seq) in upto {
            let Some(live) = self.live.get_mut(&execution) else {
                continue;
            };
            self.unstored -= usize::try_from(seq - live.stored_upto).unwrap_or(0);
            live.stored_upto = seq;
            // Drops whole stored batches no subscriber needs while RECENT_LINES stored
            // lines stay after them.
            let needed = live
                .subscribers
                .iter()
                .map(|s| s.next)
                .min()
                .unwrap_or(i64::MAX);
            while let Some(last) = live.batches.front().and_then(|b| b.last()) {
                if last.seq > seq || seq - last.seq < RECENT_LINES as i64 || last.seq >= needed {
                    break;
                }
                live.batches.pop_front();
            }
        }
        self.settle(ctx);
    }
}

/// Drops the stream; its subscribers go back to the store.
impl Handler<Forget> for LogFanout {
    type Result = ();

    fn handle(&mut self, msg: Forget, ctx: &mut Context<Self>) {
        let Some(live) = self.live.remove(&msg.execution) else {
            return;
        };
        // Including lines in a write in flight: when it ends it finds no stream.
        let unstored = usize::try_from(live.next_seq - 1 - live.stored_upto).unwrap_or(0);
        self.unstored = self.unstored.saturating_sub(unstored);
        for subscriber in live.subscribers {
            subscriber.recipient.do_send(ToSubscriber::FellBehind);
        }
        for drain in live.drains {
            let _ = drain.send(());
        }
        self.settle(ctx);
    }
}

/// Marks a stream that will get no more output.
impl Handler<UpstreamGone> for LogFanout {
    type Result = ();

    fn handle(&mut self, msg: UpstreamGone, ctx: &mut Context<Self>) {
        self.upstream_ended(&msg.execution, ctx);
    }
}

/// Records the final status; closes the stream now, or once the output ends (at most
/// [`UPSTREAM_GRACE`] later).
impl Handler<Finished> for LogFanout {
    type Result = ();

    fn handle(&mut self, msg: Finished, ctx: &mut Context<Self>) {
        let Some(live) = self.live.get_mut(&msg.execution) else {
            return;
        };
        live.status = Some(msg.status);
        if !live.upstream_ended {
            let execution = msg.execution.clone();
            self.end_upstream_later(execution, ctx);
        }
        self.close_if_done(&msg.execution);
    }
}

/// Stores every line, then closes every subscriber with [`ToSubscriber::ShuttingDown`].
impl Handler<Shutdown> for LogFanout {
    type Result = ResponseFuture<()>;

    fn handle(&mut self, _: Shutdown, ctx: &mut Context<Self>) -> Self::Result {
        let (done, stored) = tokio::sync::oneshot::channel();
        self.idle_waiters.push(done);
        self.settle(ctx);
        let me = ctx.address();
        Box::pin(async move {
            let _ = stored.await;
            let _ = me.send(CloseAll).await;
        })
    }
}

/// Sends each subscriber what it is owed, then tells it the server is going away.
#[derive(Message)]
#[rtype(result = "()")]
struct CloseAll;

impl Handler<CloseAll> for LogFanout {
    type Result = ();

    fn handle(&mut self, _: CloseAll, _: &mut Context<Self>) {
        for live in self.live.values_mut() {
            for subscriber in live.subscribers.drain(..) {
                subscriber.finish(&live.batches, ToSubscriber::ShuttingDown);
            }
        }
    }
}

/// Answers once the execution's output has ended and is stored.
impl Handler<Drain> for LogFanout {
    type Result = ResponseFuture<()>;

    fn handle(&mut self, msg: Drain, ctx: &mut Context<Self>) -> Self::Result {
        let (done, stored) = tokio::sync::oneshot::channel();
        let Some(live) = self.live.get_mut(&msg.execution) else {
            return Box::pin(async {});
        };
        live.drains.push(done);
        if !live.upstream_ended {
            self.end_upstream_later(msg.execution, ctx);
        }
        self.settle(ctx);
        Box::pin(async move {
            let _ = stored.await;
        })
    }
}

/// Subscribes when the subscriber has every line before the ones still in memory.
impl Handler<Subscribe> for LogFanout {
    type Result = SubscribeReply;

    fn handle(&mut self, msg: Subscribe, _: &mut Context<Self>) -> SubscribeReply {
        let Some(live) = self.live.get_mut(&msg.execution) else {
            return SubscribeReply::NotLive;
        };
        if msg.after + 1 < live.oldest_in_memory() {
            return SubscribeReply::CatchUp;
        }
        let id = self.next_subscriber;
        self.next_subscriber += 1;
        live.subscribers.push(Subscriber {
            id,
            recipient: msg.subscriber,
            next: msg.after + 1,
        });
        // Its first lines go to its mailbox now, to be read after this reply.
        live.deliver();
        SubscribeReply::Live { id }
    }
}

/// Forgets a subscriber that went away.
impl Handler<Unsubscribe> for LogFanout {
    type Result = ();

    fn handle(&mut self, msg: Unsubscribe, _: &mut Context<Self>) {
        if let Some(live) = self.live.get_mut(&msg.execution) {
            live.subscribers.retain(|s| s.id != msg.id);
        }
    }
}
