//! `GET /jobs/logs?job_name=NAME`: a websocket that sends one text frame per log line,
//! in order, then a normal close frame whose reason is the final status. The same
//! session also serves server-sent events ([`sse`]) for
//! `GET /api/v1/executions/{name}/logs` with `Accept: text/event-stream`: the session
//! is generic over its [`Transport`], the one place the two differ.
//!
//! The session reads the stored lines first, then subscribes to the LogFanout from the
//! last line it has, so a client joining at any moment gets every line once. Its
//! mailbox is small: a client that stops reading stops the session, and the LogFanout
//! keeps its place without slowing anyone else; once it is too far behind it is
//! unsubscribed, and the session reads on from the store when the client reads again.
//!
//! A run followed by another replica is read from the store each time that replica
//! announces stored lines (and its end) over the bus, within milliseconds; the store is
//! also read every few seconds in case an announcement was lost.

use std::time::Duration;

use actix::dev::{AsyncContextParts, ToEnvelope};
use actix::prelude::*;
use actix_web::{HttpRequest, HttpResponse, web};
use actix_web_actors::ws;
use serde::Deserialize;

use super::ApiState;
use super::auth::Caller;
use super::executions::find_visible;
use crate::actors::LogFanout;
use crate::actors::log_fanout::{Subscribe, SubscribeReply, ToSubscriber, Unsubscribe};
use crate::error::ApiError;
use crate::error::ClientErrors;
use crate::model::{ExecutionName, Status};
use crate::store::{Announcement, Bus, Execution, ExecutionStore, LogStore};

/// Lines read from the store per query while catching up.
const PAGE: i64 = 1_000;
/// Batches waiting in a session's mailbox before the LogFanout counts it as slow.
const MAILBOX: usize = 64;
/// How often a session with no live stream here looks for new lines in the store (an
/// execution streamed by another replica) when no bus carries announcements, and when
/// one does (only in case an announcement was lost).
const STORE_POLL: Duration = Duration::from_millis(500);
const STORE_POLL_WITH_BUS: Duration = Duration::from_secs(2);

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct LogsQuery {
    pub job_name: String,
    /// Start after this line number (lines are numbered from 1): a client that already
    /// holds the first N lines (read from `GET /api/v1/executions/{name}/logs`) asks for
    /// the rest with `after=N`, without a gap or a repeat.
    pub after: Option<i64>,
}

/// Upgrades to the log websocket after the same checks as any read of the execution.
/// Without `Upgrade: websocket` it answers as `GET /api/v1/executions/{name}/logs`
/// does: server-sent events for `Accept: text/event-stream`, the stored lines as text
/// otherwise.
#[utoipa::path(
    get,
    path = "/jobs/logs",
    tag = "executions",
    params(LogsQuery),
    responses(
        (status = 101, description = "websocket: one text frame per line, then a close frame whose reason is the final status"),
        (status = 200, description = "not a websocket: the stored lines as text, or server-sent events (`Accept: text/event-stream`) until the run ends", content(
            (String = "text/plain"),
            (String = "text/event-stream")
        )),
        (status = 204, description = "server-sent events resumed after the end (`Last-Event-ID`): nothing more"),
        ClientErrors,
        (status = 410, description = "retention removed the run's lines (the record is kept)", body = crate::error::ErrorBody)
    ),
    security(("email" = [], "token" = []))
)]
pub async fn stream(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<ApiState>,
    caller: Caller,
    query: web::Query<LogsQuery>,
) -> Result<HttpResponse, ApiError> {
    let after = super::contract::LINE_NUMBER.check("after", query.after, 0)?;
    let execution = find_visible(&state, &caller, query.job_name.trim()).await?;
    super::executions::lines_kept(&execution)?;
    // Not a websocket: the same run followed as server-sent events when asked for, or
    // its stored lines as text (what `curl` shows), rather than a refusal.
    let upgrade = req
        .headers()
        .get(actix_web::http::header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("websocket"));
    if !upgrade {
        if wants_events(&req) {
            return super::executions::follow_events(&req, &state, execution, after).await;
        }
        return Ok(super::executions::download(&state, execution, after, false));
    }
    let session = LogSession::<Ws>::new(&state, execution, after)?;
    ws::start(session, &req, payload)
        .map_err(|e| ApiError::bad_request(format!("this URL speaks websocket only: {e}")))
}

/// How a session ends.
pub enum End {
    /// The run reached its final status.
    Final(Status),
    /// Something failed; the reason says what.
    Failed(String),
    /// This replica is shutting down (the client may resume elsewhere).
    Away,
}

/// Where a log session's lines go: a websocket ([`Ws`]) or a server-sent event stream
/// ([`Sse`]).
pub trait Transport: Sized + Unpin + 'static {
    type Context: AsyncContext<LogSession<Self>>
        + AsyncContextParts<LogSession<Self>>
        + ToEnvelope<LogSession<Self>, ToSubscriber>
        + Unpin;
    /// Sends line `seq`.
    fn line(ctx: &mut Self::Context, seq: i64, text: &str);
    /// Sends how it ended and closes.
    fn end(ctx: &mut Self::Context, end: End);
    /// Anything the transport does once when the session starts.
    fn started(_ctx: &mut Self::Context) {}
}

/// The log websocket: a text frame per line, a close frame with the status.
pub struct Ws;

impl Transport for Ws {
    type Context = ws::WebsocketContext<LogSession<Ws>>;

    fn line(ctx: &mut Self::Context, _seq: i64, text: &str) {
        ctx.text(text);
    }

    fn end(ctx: &mut Self::Context, end: End) {
        let (code, reason) = match end {
            End::Final(status) => (ws::CloseCode::Normal, status.as_str().to_owned()),
            End::Failed(reason) => (ws::CloseCode::Error, reason),
            End::Away => (ws::CloseCode::Away, "server shutting down".to_owned()),
        };
        ctx.close(Some(ws::CloseReason {
            code,
            description: Some(reason),
        }));
    }
}

/// Server-sent events (`text/event-stream`): each line an event whose id is its seq;
/// at the end an event `status` whose data is the final status (or `error` with the
/// reason), then the stream ends. A replica shutting down just ends the stream, and the
/// client reconnects with `Last-Event-ID`.
pub struct Sse;

/// A comment line every so often, so proxies keep an idle stream open.
const SSE_KEEP_ALIVE: Duration = Duration::from_secs(15);

impl Transport for Sse {
    type Context = actix_web_actors::HttpContext<LogSession<Sse>>;

    fn line(ctx: &mut Self::Context, seq: i64, text: &str) {
        let mut event = format!("id: {seq}\n");
        sse_data(&mut event, text);
        ctx.write(web::Bytes::from(event));
    }

    fn end(ctx: &mut Self::Context, end: End) {
        let event = match end {
            End::Final(status) => Some(format!("event: status\ndata: {}\n\n", status.as_str())),
            End::Failed(reason) => {
                let mut event = "event: error\n".to_owned();
                sse_data(&mut event, &reason);
                Some(event)
            }
            End::Away => None,
        };
        if let Some(event) = event {
            ctx.write(web::Bytes::from(event));
        }
        ctx.write_eof();
    }

    fn started(ctx: &mut Self::Context) {
        // Reconnect after a second (a replica that went away is replaced quickly).
        ctx.write(web::Bytes::from_static(b"retry: 1000\n\n"));
        ctx.run_interval(SSE_KEEP_ALIVE, |_, ctx| {
            ctx.write(web::Bytes::from_static(b": keep-alive\n\n"));
        });
    }
}

/// Appends `text` as the `data` of an event and ends the event: one `data:` line per
/// line of `text` (a lone `\r` also ends a line in SSE, so it splits too).
fn sse_data(event: &mut String, text: &str) {
    for part in text.split(['\n', '\r']) {
        event.push_str("data: ");
        event.push_str(part);
        event.push('\n');
    }
    event.push('\n');
}

/// Whether the client asked for server-sent events.
pub fn wants_events(req: &HttpRequest) -> bool {
    req.headers()
        .get_all(actix_web::http::header::ACCEPT)
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.contains("text/event-stream"))
}

/// Follows `execution` as server-sent events from the line after `after`.
pub fn events(
    state: &ApiState,
    execution: Execution,
    after: i64,
) -> Result<HttpResponse, ApiError> {
    let session = LogSession::<Sse>::new(state, execution, after)?;
    Ok(HttpResponse::Ok()
        .content_type("text/event-stream")
        .insert_header(("Cache-Control", "no-cache"))
        .insert_header(("X-Accel-Buffering", "no"))
        // Compression would hold events back until a buffer fills.
        .insert_header(actix_web::http::header::ContentEncoding::Identity)
        .streaming(actix_web_actors::HttpContext::create(session)))
}

pub struct LogSession<T: Transport> {
    execution: ExecutionName,
    execution_id: String,
    /// The seq of the last line written to the client.
    last_seq: i64,
    subscription: Option<u64>,
    fanout: Addr<LogFanout>,
    logs: LogStore,
    executions: ExecutionStore,
    bus: Bus,
    /// Whether it hears the bus's announcements (once the run is followed elsewhere).
    listening: bool,
    /// The next look at the store.
    poll: Option<SpawnHandle>,
    transport: std::marker::PhantomData<T>,
}

/// What to do once the store has no more lines.
#[derive(Clone, Copy)]
enum Then {
    Subscribe,
    FinishOrPoll,
}

impl<T: Transport> LogSession<T> {
    /// A session for `execution` from the line after `after`.
    pub fn new(state: &ApiState, execution: Execution, after: i64) -> Result<Self, ApiError> {
        let name = ExecutionName::parse(&execution.name).map_err(ApiError::bad_request)?;
        Ok(Self {
            execution: name,
            execution_id: execution.id,
            last_seq: after,
            subscription: None,
            fanout: state.actors.fanout.clone(),
            logs: state.stores.logs.clone(),
            executions: state.stores.executions.clone(),
            bus: state.stores.bus.clone(),
            listening: false,
            poll: None,
            transport: std::marker::PhantomData,
        })
    }

    /// Writes stored lines after `last_seq`, a page at a time, then does `then`.
    fn catch_up(&mut self, then: Then, ctx: &mut T::Context) {
        let read = {
            let logs = self.logs.clone();
            let id = self.execution_id.clone();
            let after = self.last_seq;
            async move { logs.read(&id, after, PAGE).await }
        };
        ctx.wait(
            read.into_actor(self)
                .map(move |result, act, ctx| match result {
                    Ok(lines) => {
                        let full = lines.len() as i64 == PAGE;
                        for line in lines {
                            T::line(ctx, line.seq, &line.line);
                            act.last_seq = line.seq;
                        }
                        match (full, then) {
                            (true, _) => act.catch_up(then, ctx),
                            (false, Then::Subscribe) => act.subscribe(ctx),
                            (false, Then::FinishOrPoll) => act.finish_or_poll(ctx),
                        }
                    }
                    Err(e) => act.fail(&format!("cannot read the stored log: {e}"), ctx),
                }),
        );
    }

    fn subscribe(&mut self, ctx: &mut T::Context) {
        let request = self.fanout.send(Subscribe {
            execution: self.execution.clone(),
            after: self.last_seq,
            subscriber: ctx.address().recipient(),
        });
        ctx.wait(request.into_actor(self).map(|reply, act, ctx| match reply {
            Ok(SubscribeReply::Live { id }) => act.subscription = Some(id),
            Ok(SubscribeReply::CatchUp) => act.catch_up(Then::Subscribe, ctx),
            Ok(SubscribeReply::NotLive) => act.catch_up(Then::FinishOrPoll, ctx),
            Err(e) => act.fail(&format!("the log stream is unavailable: {e}"), ctx),
        }));
    }

    /// Not streamed here: close once the stored status is final, else look again soon.
    fn finish_or_poll(&mut self, ctx: &mut T::Context) {
        let executions = self.executions.clone();
        let name = self.execution.clone();
        let status = async move { executions.get(name.as_str()).await };
        ctx.wait(
            status
                .into_actor(self)
                .map(|result, act, ctx| match result {
                    Ok(Some(execution)) if execution.status.is_final() => {
                        act.end(execution.status, ctx);
                    }
                    Ok(Some(_)) => act.wait_for_more(ctx),
                    Ok(None) => act.fail("the execution no longer exists", ctx),
                    Err(e) => act.fail(&format!("cannot read the execution: {e}"), ctx),
                }),
        );
    }

    /// Listens for announcements of the execution (once) and looks at the store again
    /// later in any case.
    fn wait_for_more(&mut self, ctx: &mut T::Context) {
        if !self.listening {
            self.listening = true;
            let heard = futures_util::stream::unfold(self.bus.listen(), |mut heard| async move {
                use tokio::sync::broadcast::error::RecvError;
                match heard.recv().await {
                    Ok(announcement) => Some((Heard::Said(announcement), heard)),
                    Err(RecvError::Lagged(_)) => Some((Heard::Missed, heard)),
                    Err(RecvError::Closed) => None,
                }
            });
            ctx.add_stream(heard);
        }
        if let Some(poll) = self.poll.take() {
            ctx.cancel_future(poll);
        }
        let every = match self.bus.is_shared() {
            true => STORE_POLL_WITH_BUS,
            false => STORE_POLL,
        };
        self.poll = Some(ctx.run_later(every, |act, ctx| {
            act.poll = None;
            act.catch_up(Then::FinishOrPoll, ctx)
        }));
    }

    /// Whether `announcement` tells of something this session has not read yet.
    fn is_news(&self, announcement: &Announcement) -> bool {
        let mine = self.execution.as_str();
        match announcement {
            Announcement::Stored { upto } => upto
                .iter()
                .any(|(execution, seq)| execution == mine && *seq > self.last_seq),
            Announcement::Ended { execution, .. } => execution == mine,
            _ => false,
        }
    }

    fn write(&mut self, lines: &[crate::actors::log_fanout::LogLine], ctx: &mut T::Context) {
        for line in lines {
            if line.seq > self.last_seq {
                T::line(ctx, line.seq, line.text.as_str());
                self.last_seq = line.seq;
            }
        }
    }

    fn end(&mut self, status: Status, ctx: &mut T::Context) {
        self.close(End::Final(status), ctx);
    }

    fn fail(&mut self, reason: &str, ctx: &mut T::Context) {
        tracing::warn!(execution = %self.execution, reason, "closing a log stream");
        self.close(End::Failed(reason.to_owned()), ctx);
    }

    fn close(&mut self, end: End, ctx: &mut T::Context) {
        self.subscription = None;
        T::end(ctx, end);
        ctx.stop();
    }
}

impl<T: Transport> Actor for LogSession<T> {
    type Context = T::Context;

    fn started(&mut self, ctx: &mut Self::Context) {
        metrics::gauge!(crate::telemetry::names::WEBSOCKET_SUBSCRIBERS).increment(1.0);
        ctx.parts().set_mailbox_capacity(MAILBOX);
        T::started(ctx);
        self.catch_up(Then::Subscribe, ctx);
    }

    fn stopping(&mut self, _: &mut Self::Context) -> Running {
        if let Some(id) = self.subscription.take() {
            self.fanout.do_send(Unsubscribe {
                execution: self.execution.clone(),
                id,
            });
        }
        Running::Stop
    }

    fn stopped(&mut self, _: &mut Self::Context) {
        metrics::gauge!(crate::telemetry::names::WEBSOCKET_SUBSCRIBERS).decrement(1.0);
    }
}

/// Lines and the end of the stream from the LogFanout.
impl<T: Transport> Handler<ToSubscriber> for LogSession<T> {
    type Result = ();

    fn handle(&mut self, msg: ToSubscriber, ctx: &mut Self::Context) {
        match msg {
            ToSubscriber::Lines(lines) => self.write(&lines, ctx),
            ToSubscriber::Ended { status } => self.end(status, ctx),
            ToSubscriber::ShuttingDown => self.close(End::Away, ctx),
            ToSubscriber::FellBehind => {
                self.subscription = None;
                self.catch_up(Then::Subscribe, ctx);
            }
        }
    }
}

/// What the bus brought: an announcement, or word that some were missed.
enum Heard {
    Said(Announcement),
    Missed,
}

/// Announcements from the replica that follows the run: read the store now.
impl<T: Transport> StreamHandler<Heard> for LogSession<T>
where
    T::Context: AsyncContext<Self>,
{
    fn handle(&mut self, heard: Heard, ctx: &mut Self::Context) {
        let news = match &heard {
            Heard::Said(announcement) => self.is_news(announcement),
            Heard::Missed => true,
        };
        // A session following the run live here has nothing to read from the store.
        if news && self.subscription.is_none() && self.poll.is_some() {
            if let Some(poll) = self.poll.take() {
                ctx.cancel_future(poll);
            }
            self.catch_up(Then::FinishOrPoll, ctx);
        }
    }

    fn finished(&mut self, _: &mut Self::Context) {}
}

/// The client's frames: answers pings, stops on close; a log stream ignores the rest.
impl StreamHandler<Result<ws::Message, ws::ProtocolError>> for LogSession<Ws> {
    fn handle(&mut self, msg: Result<ws::Message, ws::ProtocolError>, ctx: &mut Self::Context) {
        match msg {
            Ok(ws::Message::Ping(bytes)) => ctx.pong(&bytes),
            Ok(ws::Message::Close(_)) | Err(_) => ctx.stop(),
            Ok(_) => {}
        }
    }
}
