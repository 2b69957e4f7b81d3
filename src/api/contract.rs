//! The exact contract `/openapi.json` states: every bound, pattern and enum the
//! handlers enforce, written into the generated document from the very constants the
//! handlers check against, so that the two cannot drift; the answers every route can
//! give; and the security the running server asks for (none with authentication off).
//!
//! A request that breaks the document gets 400. A request the document allows but
//! that breaks a rule it can only state in words (between fields, against stored
//! state such as a proc's declared args, against the operator's settings) gets 422,
//! and each operation that can answer 422 says why.

use std::sync::OnceLock;

use serde_json::{Map, Value, json};

use crate::config::AuthMode;
use crate::error::ApiError;
use crate::model::patterns;

/// An inclusive range an integer parameter must be in.
#[derive(Debug, Clone, Copy)]
pub struct Range {
    pub min: i64,
    pub max: i64,
}

impl Range {
    /// `value` (or `default` when absent), or 400 naming `field` and the range.
    pub fn check(self, field: &str, value: Option<i64>, default: i64) -> Result<i64, ApiError> {
        let value = value.unwrap_or(default);
        if (self.min..=self.max).contains(&value) {
            return Ok(value);
        }
        Err(ApiError::bad_request(if self.max == i64::MAX {
            format!("{field} must be {} or more, not {value}", self.min)
        } else {
            format!(
                "{field} must be between {} and {}, not {value}",
                self.min, self.max
            )
        }))
    }

    fn schema(self) -> Value {
        json!({"type": "integer", "format": "int64", "minimum": self.min, "maximum": self.max})
    }
}

/// A page of the history or the audit log.
pub const PAGE_LIMIT: Range = Range { min: 1, max: 500 };
/// Rows to skip in the history.
pub const OFFSET: Range = Range {
    min: 0,
    max: i64::MAX,
};
/// An audit event id.
pub const EVENT_ID: Range = Range {
    min: 1,
    max: i64::MAX,
};
/// A line number to read after (lines are numbered from 1; 0 is before the first).
pub const LINE_NUMBER: Range = Range {
    min: 0,
    max: i64::MAX,
};
/// Lines in one page of a stored log.
pub const LOG_PAGE: Range = Range {
    min: 1,
    max: 100_000,
};
/// Fire times one preview shows.
pub const PREVIEW_COUNT: Range = Range { min: 1, max: 50 };

/// The longest value of one arg, in characters.
pub const MAX_ARG_CHARS: usize = 32 * 1024;
/// The longest secret value, in characters.
pub const MAX_SECRET_CHARS: usize = 64 * 1024;
/// The most secrets one request may set.
pub const MAX_SECRETS: usize = 200;
/// The most procs one registration may carry.
pub const MAX_PROCS_PER_REQUEST: usize = 500;

/// The document this server serves: generated from the handlers, then made exact.
pub fn document(auth: AuthMode) -> &'static Value {
    static ON: OnceLock<Value> = OnceLock::new();
    static OFF: OnceLock<Value> = OnceLock::new();
    let cell = match auth {
        AuthMode::On => &ON,
        AuthMode::Off => &OFF,
    };
    cell.get_or_init(|| {
        use utoipa::OpenApi as _;
        let mut doc = serde_json::to_value(super::docs::ApiDoc::openapi())
            .expect("the generated document serializes");
        tighten(&mut doc, auth);
        doc
    })
}

fn tighten(doc: &mut Value, auth: AuthMode) {
    names(doc);
    queries(doc);
    bodies(doc);
    responses(doc, auth);
    links(doc);
}

/// OpenAPI links from what creates a thing to what reads, changes or removes it, so
/// that a client generator (and a stateful fuzzer) knows where a name or id goes.
fn links(doc: &mut Value) {
    let path_parameter = |operation: &str, parameter: &str, from: &str| {
        (
            operation.to_owned(),
            json!({"operationId": operation, "parameters": {parameter: from}}),
        )
    };
    let proc = "$response.body#/name";
    let execution = "$response.body#/name";
    let schedule = "$response.body#/id";
    let execution_links = || {
        vec![
            path_parameter("get_api_v1_executions_name", "name", execution),
            path_parameter("get_api_v1_executions_name_logs", "name", execution),
            path_parameter(
                "get_api_v1_executions_name_notifications",
                "name",
                execution,
            ),
            path_parameter("post_api_v1_executions_name_cancel", "name", execution),
            path_parameter("get_jobs_execute_name_status", "name", execution),
            path_parameter("get_jobs_logs", "job_name", execution),
        ]
    };
    // (path, method, status, the links of that answer by name)
    type Answer<'a> = (&'a str, &'a str, &'a str, Vec<(String, Value)>);
    let table: Vec<Answer> = vec![
        (
            "/jobs/metadata",
            "post",
            "201",
            vec![
                path_parameter("get_jobs_metadata_name", "name", proc),
                path_parameter("delete_jobs_metadata_name", "name", proc),
                path_parameter("get_jobs_secrets_name", "name", proc),
                (
                    "post_jobs_execute".to_owned(),
                    json!({"operationId": "post_jobs_execute", "requestBody": {"name": proc}}),
                ),
            ],
        ),
        ("/jobs/execute", "post", "201", execution_links()),
        ("/jobs/schedule/{id}/run", "post", "201", execution_links()),
        (
            "/jobs/schedule",
            "post",
            "201",
            [
                "get_jobs_schedule_id",
                "delete_jobs_schedule_id",
                "post_jobs_schedule_id_enable",
                "post_jobs_schedule_id_disable",
                "get_jobs_schedule_id_executions",
                "post_jobs_schedule_id_run",
                "post_jobs_schedule_id_backfill",
            ]
            .into_iter()
            .map(|operation| path_parameter(operation, "id", schedule))
            .collect(),
        ),
    ];
    for (path, method, status, links) in table {
        let response = &mut doc["paths"][path][method]["responses"][status];
        assert!(response.is_object(), "{method} {path} answers {status}");
        response["links"] = Value::Object(links.into_iter().collect());
    }
}

/// The schema of parameter `name` of `method path`.
fn parameter<'a>(doc: &'a mut Value, method: &str, path: &str, name: &str) -> &'a mut Value {
    let parameters = doc["paths"][path][method]["parameters"]
        .as_array_mut()
        .unwrap_or_else(|| panic!("{method} {path} has parameters"));
    let parameter = parameters
        .iter_mut()
        .find(|p| p["name"] == name)
        .unwrap_or_else(|| panic!("{method} {path} has a parameter {name}"));
    &mut parameter["schema"]
}

/// Every operation, as (path, method, operation).
fn operations(doc: &mut Value) -> impl Iterator<Item = (String, String, &mut Value)> {
    doc["paths"]
        .as_object_mut()
        .expect("paths")
        .iter_mut()
        .flat_map(|(path, item)| {
            let path = path.clone();
            item.as_object_mut()
                .expect("a path item")
                .iter_mut()
                .map(move |(method, operation)| (path.clone(), method.clone(), operation))
        })
}

fn string(pattern: &str, min: usize, max: Option<usize>) -> Value {
    let mut schema = json!({"type": "string", "pattern": pattern, "minLength": min});
    if let Some(max) = max {
        schema["maxLength"] = json!(max);
    }
    schema
}

fn proc_name() -> Value {
    string(
        patterns::PROC_NAME,
        1,
        Some(crate::model::ids::PROC_NAME_MAX),
    )
}

fn execution_name() -> Value {
    string(patterns::EXECUTION_NAME, 1, Some(63))
}

fn env_name() -> Value {
    string(patterns::ENV_NAME, 1, Some(128))
}

/// The path parameters: proc names, execution names and schedule ids.
fn names(doc: &mut Value) {
    for (path, _, operation) in operations(doc) {
        let Some(parameters) = operation
            .get_mut("parameters")
            .and_then(Value::as_array_mut)
        else {
            continue;
        };
        for parameter in parameters.iter_mut().filter(|p| p["in"] == "path") {
            let keep = parameter["schema"].clone();
            parameter["schema"] = match parameter["name"].as_str() {
                Some("id") => string(patterns::SCHEDULE_ID, 36, Some(36)),
                Some("name") if path.contains("/execut") => execution_name(),
                Some("name") => proc_name(),
                _ => keep,
            };
        }
    }
    let components = &mut doc["components"]["schemas"];
    components["ProcName"] = merge(&components["ProcName"], proc_name());
    components["EnvName"] = merge(&components["EnvName"], env_name());
}

/// `base` with `extra`'s keys laid over it.
fn merge(base: &Value, extra: Value) -> Value {
    let mut merged = base.as_object().cloned().unwrap_or_default();
    if let Value::Object(extra) = extra {
        merged.extend(extra);
    }
    Value::Object(merged)
}

fn date_time() -> Value {
    json!({"type": "string", "format": "date-time"})
}

/// Time zones: the IANA names chrono-tz knows, and "" for UTC.
fn time_zone(nullable: bool) -> Value {
    let mut zones: Vec<Value> = vec![json!("")];
    zones.extend(chrono_tz::TZ_VARIANTS.iter().map(|z| json!(z.name())));
    if nullable {
        zones.push(Value::Null);
    }
    json!({
        "type": if nullable { json!(["string", "null"]) } else { json!("string") },
        "enum": zones,
        "description": "An IANA time zone such as Europe/Paris; empty or absent: UTC."
    })
}

/// A cron expression: `format: cron` (the grammar is in the description; no regular
/// expression states it whole).
fn cron() -> Value {
    json!({
        "type": "string",
        "format": "cron",
        "minLength": 1,
        "maxLength": crate::model::schedule::MAX_CRON_CHARS,
        "description": "Six fields with seconds first (robfig/cron v1), or five; `@yearly`, `@monthly`, `@weekly`, `@daily`, `@hourly` or `@every 1h30m` (at least 1s). Fields take numbers, `*`, ranges `a-b`, steps `/n`, lists `a,b`, month and day names."
    })
}

fn statuses() -> Vec<Value> {
    crate::model::Status::ALL
        .iter()
        .map(|s| json!(s.as_str()))
        .collect()
}

/// The query parameters.
fn queries(doc: &mut Value) {
    let set = |doc: &mut Value, method: &str, path: &str, name: &str, schema: Value| {
        let slot = parameter(doc, method, path, name);
        *slot = merge(slot, schema);
    };
    let executions = "/api/v1/executions";
    set(doc, "get", executions, "limit", PAGE_LIMIT.schema());
    set(doc, "get", executions, "offset", OFFSET.schema());
    set(doc, "get", executions, "since", date_time());
    set(doc, "get", executions, "until", date_time());
    set(
        doc,
        "get",
        executions,
        "status",
        json!({"type": "string", "enum": statuses()}),
    );
    let audit = "/api/v1/audit";
    set(doc, "get", audit, "limit", PAGE_LIMIT.schema());
    set(doc, "get", audit, "before", EVENT_ID.schema());
    set(doc, "get", audit, "since", date_time());
    set(doc, "get", audit, "until", date_time());
    set(
        doc,
        "get",
        audit,
        "kind",
        json!({"type": "string", "enum": crate::store::audit::KINDS}),
    );
    let logs = "/api/v1/executions/{name}/logs";
    set(doc, "get", logs, "since_seq", LINE_NUMBER.schema());
    set(doc, "get", logs, "limit", LOG_PAGE.schema());
    set(doc, "get", "/jobs/logs", "job_name", execution_name());
    set(doc, "get", "/jobs/logs", "after", LINE_NUMBER.schema());
    let preview = "/api/v1/schedules/preview";
    set(doc, "get", preview, "time", cron());
    set(doc, "get", preview, "time_zone", time_zone(false));
    set(doc, "get", preview, "count", PREVIEW_COUNT.schema());
    for p in doc["paths"][preview]["get"]["parameters"]
        .as_array_mut()
        .expect("the preview's parameters")
    {
        if p["name"] == "time" {
            p["required"] = json!(true);
        }
    }
    let stats = "/api/v1/stats";
    set(doc, "get", stats, "since", date_time());
    set(doc, "get", stats, "until", date_time());
    set(
        doc,
        "get",
        stats,
        "bucket",
        json!({"type": "string", "enum": ["hour", "day"]}),
    );
}

/// A property of a component schema, to lay `schema` over.
fn property(doc: &mut Value, component: &str, field: &str, schema: Value) {
    let slot = &mut doc["components"]["schemas"][component]["properties"][field];
    assert!(!slot.is_null(), "{component}.{field} is in the document");
    *slot = merge(slot, schema);
}

/// Args: env var names to values of at most [`MAX_ARG_CHARS`] without NUL.
fn args(nullable: bool) -> Value {
    json!({
        "type": if nullable { json!(["object", "null"]) } else { json!("object") },
        "propertyNames": env_name(),
        "additionalProperties": string(patterns::NO_NUL, 0, Some(MAX_ARG_CHARS)),
    })
}

fn url() -> Value {
    string(patterns::URL, 8, Some(crate::model::notify::MAX_URL_BYTES))
}

/// The request bodies.
fn bodies(doc: &mut Value) {
    use crate::model::proc::{
        MAX_ACTIVE_DEADLINE_SECONDS, MAX_CONCURRENT_RUNS, MAX_RETENTION_DAYS, MAX_TEXT,
    };
    let text = json!({"maxLength": MAX_TEXT});
    for field in ["description", "author", "contributors", "organization"] {
        property(doc, "ProcMetadata", field, text.clone());
    }
    property(
        doc,
        "ProcMetadata",
        "image_name",
        string(patterns::IMAGE_NAME, 1, Some(512)),
    );
    property(
        doc,
        "ProcMetadata",
        "authorized_groups",
        json!({"items": string(&patterns::GROUP_NAME, 1, Some(128))}),
    );
    property(
        doc,
        "ProcMetadata",
        "command",
        json!({"minItems": 1, "items": string(patterns::NO_NUL, 0, None)}),
    );
    property(
        doc,
        "ProcMetadata",
        "active_deadline_seconds",
        json!({"minimum": 1, "maximum": MAX_ACTIVE_DEADLINE_SECONDS}),
    );
    property(
        doc,
        "ProcMetadata",
        "max_concurrent_runs",
        json!({"minimum": 1, "maximum": MAX_CONCURRENT_RUNS}),
    );
    for field in ["execution_retention_days", "log_retention_days"] {
        property(
            doc,
            "ProcMetadata",
            field,
            json!({"minimum": 0, "maximum": MAX_RETENTION_DAYS}),
        );
    }
    // One proc, or an array of 1 to 500; the answer has the shape of the request.
    let one_or_many = json!({"oneOf": [
        {"$ref": "#/components/schemas/ProcMetadata"},
        {"type": "array", "items": {"$ref": "#/components/schemas/ProcMetadata"},
         "minItems": 1, "maxItems": MAX_PROCS_PER_REQUEST}
    ]});
    let register = &mut doc["paths"]["/jobs/metadata"]["post"];
    register["requestBody"]["content"]["application/json"]["schema"] = one_or_many.clone();
    for status in ["200", "201"] {
        register["responses"][status]["content"]["application/json"]["schema"] =
            one_or_many.clone();
    }

    property(doc, "ExecuteRequest", "name", proc_name());
    property(doc, "ExecuteRequest", "args", args(true));
    property(
        doc,
        "ExecuteRequest",
        "callback_url",
        merge(&url(), json!({"type": ["string", "null"]})),
    );
    property(
        doc,
        "ExecuteRequest",
        "notify",
        json!({"maxItems": crate::model::notify::MAX_TARGETS}),
    );
    property(doc, "NotifyTarget", "url", url());
    // A callback is the execute request's `callback_url`, never a notify target.
    property(
        doc,
        "NotifyTarget",
        "kind",
        json!({"type": "string", "enum": ["webhook", "slack"]}),
    );
    doc["components"]["schemas"]["NotifyTarget"]["additionalProperties"] = json!(false);

    property(doc, "ScheduleRequest", "name", proc_name());
    property(doc, "ScheduleRequest", "args", args(true));
    property(doc, "ScheduleRequest", "time", cron());
    property(
        doc,
        "ScheduleRequest",
        "notification_emails",
        json!({"pattern": patterns::email_list_pattern()}),
    );
    property(
        doc,
        "ScheduleRequest",
        "tags",
        json!({"pattern": patterns::nonempty_list_pattern(), "description": "Comma-separated; at least one."}),
    );
    property(
        doc,
        "ScheduleRequest",
        "group_name",
        json!({"pattern": patterns::not_blank_pattern()}),
    );
    property(doc, "ScheduleRequest", "time_zone", time_zone(true));
    property(
        doc,
        "ScheduleRequest",
        "concurrency_policy",
        json!({"enum": ["Allow", "Forbid", "Replace", null]}),
    );
    property(
        doc,
        "ScheduleRequest",
        "notify",
        json!({"maxItems": crate::model::notify::MAX_TARGETS}),
    );
    for field in ["time", "tags", "group_name"] {
        require(doc, "ScheduleRequest", field);
    }

    property(doc, "SecretsRequest", "job_name", proc_name());
    property(
        doc,
        "SecretsRequest",
        "secrets",
        json!({
            "minProperties": 1,
            "maxProperties": MAX_SECRETS,
            "propertyNames": env_name(),
            "additionalProperties": {"type": "string", "maxLength": MAX_SECRET_CHARS},
        }),
    );

    property(
        doc,
        "SignIn",
        "email",
        json!({"pattern": patterns::email_pattern()}),
    );

    property(doc, "BackfillRequest", "from", date_time());
    property(doc, "BackfillRequest", "to", date_time());
}

fn require(doc: &mut Value, component: &str, field: &str) {
    let required = &mut doc["components"]["schemas"][component]["required"];
    if !required.is_array() {
        *required = json!([]);
    }
    let list = required.as_array_mut().expect("an array");
    if !list.iter().any(|f| f == field) {
        list.push(json!(field));
    }
}

/// Why an operation can answer 422, for those that can.
fn unprocessable(method: &str, path: &str) -> Option<&'static str> {
    Some(match (method, path) {
        ("post", "/jobs/metadata") => {
            "a rule between fields (a name declared twice, a blank program, logs kept longer than their run, a proc twice in one request) or the operator's pod allowlists"
        }
        ("post", "/jobs/execute") => "the args are not the ones the proc declares",
        ("post", "/jobs/schedule") => "the args are not the ones the proc declares",
        ("post", "/jobs/schedule/{id}/backfill") => {
            "`from` is not before `to`, or the range holds more fires than a backfill runs"
        }
        ("get", "/api/v1/stats") => {
            "`since` is not before `until`, or the range holds too many buckets"
        }
        _ => return None,
    })
}

fn error(description: &str) -> Value {
    json!({
        "description": description,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}}
    })
}

/// The answers each operation can give besides its own, and its security.
fn responses(doc: &mut Value, auth: AuthMode) {
    for (path, method, operation) in operations(doc) {
        let operation = operation.as_object_mut().expect("an operation");
        let secured = operation.contains_key("security");
        let api = path.starts_with("/jobs") || path.starts_with("/api/v1");
        let has_body = operation.contains_key("requestBody");
        let has_path_parameter = path.contains('{');
        let unsafe_method = method != "get";
        let responses: &mut Map<String, Value> = operation
            .get_mut("responses")
            .and_then(Value::as_object_mut)
            .expect("responses");
        let mut add = |status: &str, description: &str| {
            responses
                .entry(status.to_owned())
                .or_insert_with(|| error(description));
        };
        if api {
            add(
                "400",
                "the request breaks this document (a malformed parameter or body), or the `Client-Version` header names a client too old",
            );
            add(
                "503",
                "a dependency (the database, Redis) is down; try again shortly",
            );
        }
        if has_path_parameter {
            add("404", "no such thing");
        }
        if has_body {
            add("413", "the body is larger than the server takes");
            add(
                "415",
                "the body is not JSON (`Content-Type: application/json`)",
            );
        }
        if unsafe_method && api {
            add(
                "403",
                "refused: not allowed for this caller, or a cross-site request",
            );
        }
        if let Some(why) = unprocessable(&method, &path) {
            add("422", &format!("well-formed, but cannot be done: {why}"));
        }
        match auth {
            AuthMode::On if secured => {
                add("401", "missing, bad or expired credentials");
                add("403", "refused: not allowed for this caller");
                add(
                    "429",
                    "too many bad credentials from this address; `Retry-After` says when to try again",
                );
            }
            // Sign-ins count towards the brake on bad credentials.
            AuthMode::On if path == "/api/v1/session" && method == "post" => add(
                "429",
                "too many bad credentials from this address; `Retry-After` says when to try again",
            ),
            AuthMode::On => {}
            AuthMode::Off => {
                operation.remove("security");
                // No credentials are asked for, so none are refused.
                if let Some(responses) = operation
                    .get_mut("responses")
                    .and_then(Value::as_object_mut)
                {
                    responses.remove("401");
                    responses.remove("429");
                }
                if path == "/api/v1/session" && method == "post" {
                    let conflict = json!({
                        "description": "authentication is off on this server: there is nothing to sign in to",
                        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}}
                    });
                    operation
                        .get_mut("responses")
                        .and_then(Value::as_object_mut)
                        .expect("responses")
                        .insert("409".into(), conflict);
                }
            }
        }
    }
    if auth == AuthMode::Off
        && let Some(components) = doc["components"].as_object_mut()
    {
        components.remove("securitySchemes");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_check_and_name_their_bounds() {
        assert_eq!(PAGE_LIMIT.check("limit", None, 50).unwrap(), 50);
        assert_eq!(PAGE_LIMIT.check("limit", Some(500), 50).unwrap(), 500);
        let error = PAGE_LIMIT.check("limit", Some(0), 50).unwrap_err();
        assert_eq!(error.message, "limit must be between 1 and 500, not 0");
        let error = OFFSET.check("offset", Some(-1), 0).unwrap_err();
        assert_eq!(error.message, "offset must be 0 or more, not -1");
    }

    #[test]
    fn list_patterns_agree_with_the_handlers_splitting() {
        let emails = patterns::email_list_pattern();
        for ok in ["", "a@b.c", " a@b.c , d@e.f ", "a@b,,c@d", "x@y"] {
            assert!(patterns::matches(emails, ok), "{ok:?}");
        }
        for bad in [
            "a", "@b", "a@", "a@.b", "a@b.", "a b@c", "a@b@c", "a@b\u{1}",
        ] {
            assert!(!patterns::matches(emails, bad), "{bad:?}");
        }
        assert!(patterns::matches(patterns::nonempty_list_pattern(), " , x"));
        assert!(!patterns::matches(
            patterns::nonempty_list_pattern(),
            " , \u{3000}"
        ));
        assert!(patterns::matches(patterns::not_blank_pattern(), " g "));
        assert!(!patterns::matches(patterns::not_blank_pattern(), " \t"));
        assert!(patterns::matches(
            patterns::URL,
            "https://hooks.example.com/x"
        ));
        assert!(!patterns::matches(patterns::URL, "ftp://example.com"));
        assert!(!patterns::matches(patterns::URL, "https://@example.com"));
        assert!(!patterns::matches(patterns::URL, "https:///path"));
    }

    #[test]
    fn both_documents_are_made_exact_and_only_one_asks_for_credentials() {
        let on = document(AuthMode::On);
        let off = document(AuthMode::Off);
        let executions = &on["paths"]["/api/v1/executions"]["get"];
        assert!(executions["security"].is_array());
        assert!(executions["responses"]["401"].is_object());
        assert!(off["paths"]["/api/v1/executions"]["get"]["security"].is_null());
        assert!(off["components"]["securitySchemes"].is_null());
        assert!(off["paths"]["/api/v1/executions"]["get"]["responses"]["401"].is_null());
        let limit = executions["parameters"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == "limit")
            .unwrap();
        assert_eq!(limit["schema"]["minimum"], 1);
        assert_eq!(limit["schema"]["maximum"], 500);
    }

    #[test]
    fn every_link_leads_to_an_operation_and_its_parameters() {
        let doc = document(AuthMode::On);
        let mut operations = std::collections::HashMap::new();
        for item in doc["paths"].as_object().unwrap().values() {
            for operation in item.as_object().unwrap().values() {
                operations.insert(operation["operationId"].as_str().unwrap(), operation);
            }
        }
        let mut links = 0;
        for item in doc["paths"].as_object().unwrap().values() {
            for operation in item.as_object().unwrap().values() {
                for response in operation["responses"].as_object().unwrap().values() {
                    let Some(found) = response.get("links") else {
                        continue;
                    };
                    for link in found.as_object().unwrap().values() {
                        links += 1;
                        let target = operations[link["operationId"].as_str().unwrap()];
                        for parameter in link["parameters"].as_object().into_iter().flatten() {
                            assert!(
                                target["parameters"]
                                    .as_array()
                                    .unwrap()
                                    .iter()
                                    .any(|p| p["name"] == parameter.0.as_str()),
                                "{link}"
                            );
                        }
                    }
                }
            }
        }
        assert!(links >= 20, "{links} links");
    }
}
