//! The fake's memory: the objects, the resourceVersion counter, the event history
//! watches replay from, the open watches, the pods' logs, the scripts and the
//! request counts. All of it sits behind one mutex, never held across an await.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Mutex, MutexGuard, PoisonError};

use actix_web::web::Bytes;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use tokio::sync::{mpsc, watch};

use super::objects;
use super::watch::Filter;
use super::{Requests, Script};

/// How many events are kept for watches to resume from.
const HISTORY: usize = 10_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(super) enum Kind {
    Job,
    Pod,
    Secret,
}

impl Kind {
    pub(super) fn plural(self) -> &'static str {
        match self {
            Kind::Job => "jobs",
            Kind::Pod => "pods",
            Kind::Secret => "secrets",
        }
    }

    pub(super) fn group(self) -> &'static str {
        match self {
            Kind::Job => "batch",
            Kind::Pod | Kind::Secret => "",
        }
    }

    pub(super) fn api_version(self) -> &'static str {
        match self {
            Kind::Job => "batch/v1",
            Kind::Pod | Kind::Secret => "v1",
        }
    }

    pub(super) fn kind(self) -> &'static str {
        match self {
            Kind::Job => "Job",
            Kind::Pod => "Pod",
            Kind::Secret => "Secret",
        }
    }

    /// The resource as error messages name it: `jobs.batch`, `pods`.
    pub(super) fn qualified(self) -> String {
        match self.group() {
            "" => self.plural().into(),
            group => format!("{}.{group}", self.plural()),
        }
    }
}

type Key = (Kind, String, String);

struct Stored {
    object: Value,
    /// The resourceVersion that created it, to order objects by age.
    created: u64,
}

/// One change, as a watch sends it.
struct Event {
    rv: u64,
    kind: Kind,
    object: Value,
    line: Bytes,
}

/// What an open watch receives.
pub(super) enum WatchMsg {
    Line(Bytes),
    /// End the connection abruptly.
    Drop,
}

struct Subscriber {
    kind: Kind,
    namespace: Option<String>,
    filter: Filter,
    tx: mpsc::UnboundedSender<WatchMsg>,
}

impl Subscriber {
    fn wants(&self, kind: Kind, object: &Value) -> bool {
        kind == self.kind
            && self
                .namespace
                .as_deref()
                .is_none_or(|ns| object["metadata"]["namespace"] == ns)
            && self.filter.matches(object)
    }
}

/// What a pod's first container printed, each line with its RFC 3339 time.
pub(super) struct PodLog {
    pub lines: Vec<(String, String)>,
    /// The container terminated: a follower stops once it has everything.
    pub finished: bool,
    pub changed: watch::Sender<()>,
}

#[derive(Default)]
pub(super) struct Shared(Mutex<State>);

impl Shared {
    pub(super) fn lock(&self) -> MutexGuard<'_, State> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[derive(Default)]
pub(super) struct State {
    rv: u64,
    objects: BTreeMap<Key, Stored>,
    history: VecDeque<Event>,
    /// Watches from an older resourceVersion than this get 410 Gone.
    oldest: u64,
    subscribers: Vec<Subscriber>,
    pub logs: HashMap<(String, String), PodLog>,
    pub scripts_by_job: HashMap<String, Script>,
    pub scripts_by_image: HashMap<String, Script>,
    pub requests: Requests,
    /// Set by [`super::FakeKube::release_held`]: held containers end.
    pub released: watch::Sender<bool>,
}

impl State {
    pub(super) fn resource_version(&self) -> u64 {
        self.rv
    }

    pub(super) fn get(&self, kind: Kind, namespace: &str, name: &str) -> Option<&Value> {
        let key = (kind, namespace.to_owned(), name.to_owned());
        self.objects.get(&key).map(|stored| &stored.object)
    }

    pub(super) fn get_as<T: DeserializeOwned>(
        &self,
        kind: Kind,
        namespace: &str,
        name: &str,
    ) -> Option<T> {
        self.get(kind, namespace, name).map(read)
    }

    /// The objects of `kind` in `namespace` (every namespace for `None`), ordered by
    /// namespace and name as the API server lists them.
    pub(super) fn list(&self, kind: Kind, namespace: Option<&str>) -> Vec<&Value> {
        self.objects
            .iter()
            .filter(|((k, ns, _), _)| *k == kind && namespace.is_none_or(|n| n == ns))
            .map(|(_, stored)| &stored.object)
            .collect()
    }

    pub(super) fn all_as<T: DeserializeOwned>(&self, kind: Kind) -> Vec<T> {
        self.list(kind, None).into_iter().map(read).collect()
    }

    /// Every object of `kind` with the resourceVersion that created it.
    pub(super) fn all_created<T: DeserializeOwned>(&self, kind: Kind) -> Vec<(u64, T)> {
        self.objects
            .iter()
            .filter(|((k, _, _), _)| *k == kind)
            .map(|(_, stored)| (stored.created, read(&stored.object)))
            .collect()
    }

    /// Stores `object` under a new resourceVersion and announces it: `ADDED` (with a
    /// uid and creationTimestamp) when new, `MODIFIED` otherwise. Returns what is stored.
    pub(super) fn put(&mut self, kind: Kind, object: &impl Serialize) -> Value {
        let mut object = serde_json::to_value(object).expect("objects serialize");
        let rv = self.next_rv();
        let namespace = object["metadata"]["namespace"].as_str().unwrap_or_default();
        let name = object["metadata"]["name"].as_str().unwrap_or_default();
        let key = (kind, namespace.to_owned(), name.to_owned());
        let metadata = object["metadata"]
            .as_object_mut()
            .expect("objects have metadata");
        metadata.insert("resourceVersion".into(), json!(rv.to_string()));
        let created = match self.objects.get(&key) {
            Some(stored) => stored.created,
            None => {
                metadata
                    .entry("uid")
                    .or_insert_with(|| json!(uuid::Uuid::new_v4().to_string()));
                metadata
                    .entry("creationTimestamp")
                    .or_insert_with(|| json!(objects::now()));
                rv
            }
        };
        let type_ = if created == rv { "ADDED" } else { "MODIFIED" };
        self.objects.insert(
            key,
            Stored {
                object: object.clone(),
                created,
            },
        );
        self.emit(type_, kind, &object);
        object
    }

    /// A typed read-modify-write; `None` when the object is gone.
    pub(super) fn update<T: Serialize + DeserializeOwned>(
        &mut self,
        kind: Kind,
        namespace: &str,
        name: &str,
        change: impl FnOnce(&mut T),
    ) -> Option<T> {
        let mut object: T = self.get_as(kind, namespace, name)?;
        change(&mut object);
        self.put(kind, &object);
        Some(object)
    }

    /// Removes an object, announcing `DELETED` under a new resourceVersion; a
    /// pod's log ends with it.
    pub(super) fn remove(&mut self, kind: Kind, namespace: &str, name: &str) -> Option<Value> {
        let key = (kind, namespace.to_owned(), name.to_owned());
        let mut object = self.objects.remove(&key)?.object;
        let rv = self.next_rv();
        object["metadata"]["resourceVersion"] = json!(rv.to_string());
        if kind == Kind::Pod {
            self.logs.remove(&(namespace.to_owned(), name.to_owned()));
        }
        self.emit("DELETED", kind, &object);
        Some(object)
    }

    fn next_rv(&mut self) -> u64 {
        self.rv += 1;
        self.rv
    }

    fn emit(&mut self, type_: &str, kind: Kind, object: &Value) {
        let line = watch_line(type_, object);
        self.subscribers.retain(|sub| {
            if sub.wants(kind, object) {
                self.requests.watch_events += 1;
                sub.tx.send(WatchMsg::Line(line.clone())).is_ok()
            } else {
                !sub.tx.is_closed()
            }
        });
        self.history.push_back(Event {
            rv: self.rv,
            kind,
            object: object.clone(),
            line,
        });
        while self.history.len() > HISTORY {
            if let Some(forgotten) = self.history.pop_front() {
                self.oldest = forgotten.rv;
            }
        }
    }

    /// Opens a watch of `kind`: the recorded events after resourceVersion `from`
    /// that match, and a receiver for those to come. `Err(oldest)` when `from` is
    /// older than the history kept.
    pub(super) fn subscribe(
        &mut self,
        kind: Kind,
        namespace: Option<String>,
        filter: Filter,
        from: u64,
    ) -> Result<(Vec<Bytes>, mpsc::UnboundedReceiver<WatchMsg>), u64> {
        if from < self.oldest {
            return Err(self.oldest);
        }
        let (tx, rx) = mpsc::unbounded_channel();
        let subscriber = Subscriber {
            kind,
            namespace,
            filter,
            tx,
        };
        let backlog = self
            .history
            .iter()
            .filter(|event| event.rv > from && subscriber.wants(event.kind, &event.object))
            .map(|event| event.line.clone())
            .collect();
        self.subscribers.push(subscriber);
        Ok((backlog, rx))
    }

    pub(super) fn drop_watches(&mut self) {
        for subscriber in self.subscribers.drain(..) {
            let _ = subscriber.tx.send(WatchMsg::Drop);
        }
    }

    /// Forgets the history, as if many writes elsewhere had pushed it out: the
    /// counter moves on, so every resourceVersion handed out so far is too old.
    pub(super) fn expire_history(&mut self) {
        self.history.clear();
        self.oldest = self.next_rv();
    }

    pub(super) fn open_watches(&self) -> usize {
        let open = |sub: &&Subscriber| !sub.tx.is_closed();
        self.subscribers.iter().filter(open).count()
    }

    /// Starts the (empty) log of a new pod.
    pub(super) fn open_log(&mut self, namespace: &str, pod: &str) {
        let log = PodLog {
            lines: Vec::new(),
            finished: false,
            changed: watch::channel(()).0,
        };
        self.logs
            .insert((namespace.to_owned(), pod.to_owned()), log);
    }

    /// The pod's container prints `line`.
    pub(super) fn print(&mut self, namespace: &str, pod: &str, line: &str) {
        if let Some(log) = self.logs.get_mut(&(namespace.to_owned(), pod.to_owned())) {
            log.lines.push((objects::now_precise(), line.to_owned()));
            log.changed.send_replace(());
        }
    }

    /// The pod's container terminated: followers of its log are done.
    pub(super) fn end_log(&mut self, namespace: &str, pod: &str) {
        if let Some(log) = self.logs.get_mut(&(namespace.to_owned(), pod.to_owned())) {
            log.finished = true;
            log.changed.send_replace(());
        }
    }
}

fn read<T: DeserializeOwned>(object: &Value) -> T {
    serde_json::from_value(object.clone()).expect("a stored object reads back")
}

/// `{"type": .., "object": ..}` and a newline, as a watch sends each event.
pub(super) fn watch_line(type_: &str, object: &Value) -> Bytes {
    let mut line =
        serde_json::to_vec(&json!({"type": type_, "object": object})).expect("events serialize");
    line.push(b'\n');
    Bytes::from(line)
}
