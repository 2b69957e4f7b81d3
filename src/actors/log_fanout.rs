//! LogFanout owns one upstream log stream per running execution: it numbers each line,
//! stores every line in `execution_logs` in batches, and forwards it to every
//! subscriber. A late subscriber reads the stored lines first, then subscribes from the
//! last one it has, so it sees every line once, in order. A subscriber that falls
//! too far behind is dropped and told; the others never wait for it.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use chrono::NaiveDateTime;

use crate::executor::LogEvent;
use crate::model::{ExecutionName, Status};
use crate::store::{LogStore, StoredLine};

/// How often buffered lines are written.
const FLUSH_INTERVAL: Duration = Duration::from_millis(50);
/// Buffered lines that trigger a write before the next tick.
const FLUSH_LINES: usize = 5_000;
/// Stored lines kept in memory per execution so a subscriber catching up from the
/// store can join without a gap.
const RECENT_LINES: usize = 2_048;
/// Lines a subscriber may lag behind before it is dropped.
pub const SUBSCRIBER_BACKLOG_LINES: usize = 10_000;
/// How long after its final status an execution's output may still arrive.
const UPSTREAM_GRACE: Duration = Duration::from_secs(10);

/// One numbered line of output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogLine {
    pub seq: i64,
    pub text: String,
    pub at: NaiveDateTime,
}

/// What a subscriber receives.
#[derive(Message, Debug, Clone)]
#[rtype(result = "()")]
pub enum ToSubscriber {
    /// Consecutive lines, in order.
    Lines(Arc<Vec<LogLine>>),
    /// Every line has been sent; the execution ended in `status`.
    Ended { status: Status },
    /// The subscriber fell more than [`SUBSCRIBER_BACKLOG_LINES`] behind and was dropped.
    Overflowed,
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
    /// Subscribed: `lines` follow `after` directly; live lines come next.
    Live { id: u64, lines: Vec<LogLine> },
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

struct Subscriber {
    id: u64,
    recipient: Recipient<ToSubscriber>,
    backlog: VecDeque<Arc<Vec<LogLine>>>,
    backlog_lines: usize,
}

impl Subscriber {
    /// Delivers `batch` (after any backlog); false when the subscriber must be dropped.
    fn deliver(&mut self, batch: Option<Arc<Vec<LogLine>>>) -> bool {
        if let Some(batch) = batch {
            self.backlog_lines += batch.len();
            self.backlog.push_back(batch);
        }
        while let Some(next) = self.backlog.front() {
            match self.recipient.try_send(ToSubscriber::Lines(next.clone())) {
                Ok(()) => {
                    self.backlog_lines -= next.len();
                    self.backlog.pop_front();
                }
                Err(SendError::Full(_)) => break,
                Err(SendError::Closed(_)) => return false,
            }
        }
        if self.backlog_lines > SUBSCRIBER_BACKLOG_LINES {
            self.recipient.do_send(ToSubscriber::Overflowed);
            return false;
        }
        true
    }
}

struct Live {
    execution_id: String,
    next_seq: i64,
    /// Lines not yet stored, in order.
    unflushed: Vec<LogLine>,
    /// The last stored lines, for subscribers catching up.
    recent: VecDeque<LogLine>,
    subscribers: Vec<Subscriber>,
    upstream_ended: bool,
    status: Option<Status>,
    /// Who waits for the output to end and be stored.
    drains: Vec<tokio::sync::oneshot::Sender<()>>,
}

impl Live {
    /// The oldest seq still in memory.
    fn oldest_in_memory(&self) -> i64 {
        self.recent
            .front()
            .or(self.unflushed.first())
            .map_or(self.next_seq, |line| line.seq)
    }
}

pub struct LogFanout {
    logs: LogStore,
    live: HashMap<ExecutionName, Live>,
    next_subscriber: u64,
}

impl LogFanout {
    pub fn new(logs: LogStore) -> Self {
        Self {
            logs,
            live: HashMap::new(),
            next_subscriber: 1,
        }
    }

    /// Writes every buffered line, retrying until the store takes them; the actor
    /// handles nothing else meanwhile, which slows the runs' output instead of
    /// growing memory.
    fn flush(&mut self, ctx: &mut Context<Self>) {
        let rows: Vec<StoredLine> = self
            .live
            .values()
            .flat_map(|live| {
                live.unflushed.iter().map(|line| StoredLine {
                    execution_id: live.execution_id.clone(),
                    seq: line.seq,
                    line: line.text.clone(),
                    logged_at: line.at,
                })
            })
            .collect();
        if rows.is_empty() {
            return;
        }
        let logs = self.logs.clone();
        let write = async move {
            let mut delay = Duration::from_millis(100);
            loop {
                match logs.append(rows.clone()).await {
                    Ok(()) => return,
                    Err(e) => {
                        tracing::error!(error = %e, lines = rows.len(), "cannot store log lines; retrying");
                        tokio::time::sleep(delay).await;
                        delay = (delay * 2).min(Duration::from_secs(5));
                    }
                }
            }
        };
        ctx.wait(write.into_actor(self).map(|(), act, _| {
            for live in act.live.values_mut() {
                live.recent.extend(live.unflushed.drain(..));
                let excess = live.recent.len().saturating_sub(RECENT_LINES);
                live.recent.drain(..excess);
            }
        }));
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
        self.flush(ctx);
        let execution_name = execution.clone();
        ctx.wait(fut::ready(()).map(move |(), act: &mut Self, _| {
            if let Some(live) = act.live.get_mut(&execution_name) {
                for drain in live.drains.drain(..) {
                    let _ = drain.send(());
                }
            }
        }));
        self.close_if_done(execution, ctx);
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

    /// Closes the execution's stream once its output has ended and its status is known.
    fn close_if_done(&mut self, execution: &ExecutionName, ctx: &mut Context<Self>) {
        let Some(live) = self.live.get(execution) else {
            return;
        };
        if !(live.upstream_ended && live.status.is_some()) {
            return;
        }
        self.flush(ctx);
        let execution = execution.clone();
        ctx.wait(fut::ready(()).map(move |(), act: &mut Self, _| {
            let Some(live) = act.live.remove(&execution) else {
                return;
            };
            let status = live.status.expect("checked above");
            for mut subscriber in live.subscribers {
                // The last lines and the end go past the mailbox bound: a subscriber
                // still here is within its backlog, so this is bounded too.
                for batch in subscriber.backlog.drain(..) {
                    subscriber.recipient.do_send(ToSubscriber::Lines(batch));
                }
                subscriber.recipient.do_send(ToSubscriber::Ended { status });
            }
        }));
    }
}

impl Actor for LogFanout {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.run_interval(FLUSH_INTERVAL, |act, ctx| {
            act.flush(ctx);
            // Retry subscribers whose mailboxes were full.
            for live in act.live.values_mut() {
                live.subscribers
                    .retain_mut(|s| s.backlog.is_empty() || s.deliver(None));
            }
        });
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

    fn handle(&mut self, msg: Open, _: &mut Context<Self>) {
        self.live.entry(msg.execution).or_insert_with(|| Live {
            execution_id: msg.execution_id,
            next_seq: msg.next_seq,
            unflushed: Vec::new(),
            recent: VecDeque::new(),
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
                for (text, at) in lines {
                    batch.push(LogLine {
                        seq: live.next_seq,
                        text,
                        at,
                    });
                    live.next_seq += 1;
                }
                live.unflushed.extend(batch.iter().cloned());
                let batch = Arc::new(batch);
                live.subscribers
                    .retain_mut(|subscriber| subscriber.deliver(Some(batch.clone())));
                let buffered: usize = self.live.values().map(|l| l.unflushed.len()).sum();
                if buffered >= FLUSH_LINES {
                    self.flush(ctx);
                }
            }
            LogEvent::Ended { execution } => self.upstream_ended(&execution, ctx),
        }
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
        self.close_if_done(&msg.execution, ctx);
    }
}

/// Flushes, then closes every subscriber with [`ToSubscriber::ShuttingDown`].
impl Handler<Shutdown> for LogFanout {
    type Result = ResponseFuture<()>;

    fn handle(&mut self, _: Shutdown, ctx: &mut Context<Self>) -> Self::Result {
        let (done, closed) = tokio::sync::oneshot::channel();
        self.flush(ctx);
        ctx.wait(fut::ready(()).map(move |(), act: &mut Self, _| {
            for live in act.live.values_mut() {
                for subscriber in live.subscribers.drain(..) {
                    for batch in subscriber.backlog {
                        subscriber.recipient.do_send(ToSubscriber::Lines(batch));
                    }
                    subscriber.recipient.do_send(ToSubscriber::ShuttingDown);
                }
            }
            let _ = done.send(());
        }));
        Box::pin(async move {
            let _ = closed.await;
        })
    }
}

/// Answers once the execution's output has ended and is stored.
impl Handler<Drain> for LogFanout {
    type Result = ResponseFuture<()>;

    fn handle(&mut self, msg: Drain, ctx: &mut Context<Self>) -> Self::Result {
        let (done, stored) = tokio::sync::oneshot::channel();
        match self.live.get_mut(&msg.execution) {
            None => return Box::pin(async {}),
            Some(live) if live.upstream_ended => {
                // Anything still buffered is written by the wait below first.
                self.flush(ctx);
                ctx.wait(fut::ready(()).map(move |(), _, _| {
                    let _ = done.send(());
                }));
            }
            Some(live) => {
                live.drains.push(done);
                self.end_upstream_later(msg.execution, ctx);
            }
        }
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
        let lines: Vec<LogLine> = live
            .recent
            .iter()
            .chain(live.unflushed.iter())
            .filter(|line| line.seq > msg.after)
            .cloned()
            .collect();
        let id = self.next_subscriber;
        self.next_subscriber += 1;
        live.subscribers.push(Subscriber {
            id,
            recipient: msg.subscriber,
            backlog: VecDeque::new(),
            backlog_lines: 0,
        });
        SubscribeReply::Live { id, lines }
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
