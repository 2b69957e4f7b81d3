//! The integration tests: a real proctord over real HTTP, on SQLite and on
//! PostgreSQL + Redis (see `helpers::backends`).

mod admin;
mod audit;
mod auth;
mod backfill;
mod cli;
mod cluster;
mod console;
mod contract;
mod events;
mod executions;
mod fake_kube;
mod health;
mod helpers;
mod hostile;
mod kubernetes;
mod lifecycle;
mod logs;
mod notify;
mod observability;
mod orphans;
mod procs;
mod queue;
mod replica;
mod retention;
mod schedules;
mod secrets;
mod stats;
mod tls;
mod web;
