//! Proctor runs *procs* — automation scripts packaged as container images — on demand
//! and on a schedule, with live logs, an audit trail and mail notifications.
//!
//! A request enters at [`api`] (parse, authorize, one action, map the reply), which
//! works through the [`store`] (the only place diesel and Redis appear) over the pure
//! domain in [`model`]. [`app`] wires them into an actix-web server from the
//! [`config`] settings; [`error`] is the API's error contract; [`telemetry`] sets up
//! logging and Sentry. [`cli`] is the `proctor` client, which speaks to proctord over
//! HTTP only.

/// The actors: Dispatcher, Watcher, LogFanout, under one supervision tree.
pub mod actors;
/// The HTTP edge: one route table and a handler per action.
pub mod api;
/// `Application::build(settings)`: stores, then the HTTP server.
pub mod app;
/// `proctor`, the command-line client: its commands, configuration and REST/websocket client.
pub mod cli;
/// Settings from `config/*.toml` and `PROCTOR_*` variables.
pub mod config;
/// The API's error kinds, their status codes and JSON body.
pub mod error;
/// Where runs happen: the Executor trait, the local and Kubernetes executors.
pub mod executor;
/// Validated names and proc metadata: no IO.
pub mod model;
/// Pools, migrations and one store per kind of record.
pub mod store;
/// Tracing, Sentry, and blocking work inside a span.
pub mod telemetry;
/// The web console served at `/`.
pub mod web;
