//! The OpenAPI 3.1 document served at `/api/openapi.json`. Its schemas are
//! generated from the response types in [`sai_core::api`], the ones the
//! handlers serialise, so the two cannot drift apart.

use sai_core::api;
use schemars::generate::SchemaSettings;
use serde_json::{Map, Value, json};

/// The component schemas, generated from the API types.
pub fn schemas() -> Map<String, Value> {
    let mut settings = SchemaSettings::draft2020_12();
    settings.definitions_path = "/components/schemas".into();
    let mut generator = settings.into_generator();
    generator.subschema_for::<api::Error>();
    generator.subschema_for::<api::Project>();
    generator.subschema_for::<api::Event>();
    generator.subschema_for::<api::Task>();
    generator.subschema_for::<api::Artifact>();
    generator.subschema_for::<api::Log>();
    generator.subschema_for::<api::Builder>();
    generator.subschema_for::<api::Deleted>();
    generator.subschema_for::<api::HookReply>();
    generator.subschema_for::<api::TaskTests>();
    generator.subschema_for::<api::EventTests>();
    generator.subschema_for::<api::TestHistory>();
    generator.take_definitions(true)
}

fn id_param(name: &str, len: usize) -> Value {
    json!({"name": name, "in": "path", "required": true,
           "schema": {"type": "string", "pattern": format!("^[0-9A-F]{{{len}}}$")}})
}

fn resp(desc: &str, schema: Value) -> Value {
    json!({"description": desc, "content": {"application/json": {"schema": schema}}})
}

fn r(name: &str) -> Value {
    json!({"$ref": format!("#/components/schemas/{name}")})
}

fn errors() -> Value {
    json!({
        "401": resp("missing or invalid user token", r("Error")),
        "404": resp("not found", r("Error")),
    })
}

/// The document.
pub fn document() -> Value {
    let ev = id_param("id", 32);
    let task = id_param("id", 64);
    let auth = json!([{"bearer": []}]);
    let with_errors = |mut ok: Value| {
        if let (Some(o), Some(e)) = (ok.as_object_mut(), errors().as_object()) {
            for (k, v) in e {
                o.insert(k.clone(), v.clone());
            }
        }
        ok
    };
    json!({
      "openapi": "3.1.0",
      "info": {"title": "sai-server operations API", "version": env!("CARGO_PKG_VERSION"),
               "description": "JSON API of sai-server. Privileged operations need `Authorization: Bearer <user token>` minted by `sai-server token user`. States: waiting, running, success, failed, cancelled; events also running-with-failures. Errors are `{\"error\", \"detail\"?}`."},
      "components": {
        "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "PASETO v4.public"}},
        "schemas": schemas(),
      },
      "paths": {
        "/update-hook": {"post": {
            "summary": "Git hook notification (also /sai/update-hook)",
            "description": "multipart/form-data with one JSON file part, or application/json. Authorization: sai sha256=<hex HMAC of the file bytes>.",
            "responses": {
                "200": resp("accepted, duplicate or ignored", r("HookReply")),
                "400": resp("bad notification", r("Error")), "401": resp("missing or malformed signature", r("Error")),
                "403": resp("signature mismatch", r("Error")), "404": resp("unknown project", r("Error")),
                "409": resp("replayed notification", r("Error")),
                "413": resp("body or saifile too large", r("Error")),
                "422": resp("saifile does not parse or expand (detail is file:line:col: message), or expands beyond the server's limits (the message gives the numbers)", r("Error"))}}},
        "/api/openapi.json": {"get": {"summary": "This document", "responses": {"200": {"description": "OpenAPI"}}}},
        "/api/projects": {"get": {"summary": "Projects", "responses": {
            "200": resp("projects", json!({"type": "array", "items": r("Project")}))}}},
        "/api/projects/{project}/events": {"get": {"summary": "Events of a project, newest first",
            "parameters": [{"name": "project", "in": "path", "required": true, "schema": {"type": "string"}},
                           {"name": "limit", "in": "query", "schema": {"type": "integer", "default": 50, "minimum": 1},
                            "description": "page size, at most the server's limits.max_page"},
                           {"name": "cursor", "in": "query", "schema": {"type": "integer"},
                            "description": "the x-sai-next-cursor header of the previous page"}],
            "responses": with_errors(json!({"200": {"description": "events (without tasks), one page",
                "headers": {"x-sai-next-cursor": {"description": "cursor of the next page (absent on a short page)", "schema": {"type": "integer"}}},
                "content": {"application/json": {"schema": {"type": "array", "items": r("Event")}}}}}))}},
        "/api/events/{id}": {
            "get": {"summary": "An event with one page of its tasks (next_cursor for the next page) and the count of each state",
                    "parameters": [ev.clone(),
                        {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1},
                         "description": "tasks per page; default and maximum the server's limits.max_page"},
                        {"name": "cursor", "in": "query", "schema": {"type": "string"},
                         "description": "next_cursor of the previous page"}],
                    "responses": with_errors(json!({"200": resp("event", r("Event"))}))},
            "delete": {"summary": "Delete an event (cancels its running tasks)", "security": auth.clone(),
                       "parameters": [ev.clone()],
                       "responses": with_errors(json!({"200": resp("deleted", r("Deleted"))}))}},
        "/api/events/{id}/rebuild": {"post": {"summary": "Reset every task of an event to waiting",
            "security": auth.clone(), "parameters": [ev.clone()],
            "responses": with_errors(json!({"200": resp("event", r("Event"))}))}},
        "/api/events/{id}/again": {"post": {"summary": "Build the event's commit again as a new event (its `rebuild_of` names this one)",
            "security": auth.clone(), "parameters": [ev],
            "responses": with_errors(json!({"200": resp("the new event", r("Event"))}))}},
        "/api/tasks/{id}": {"get": {"summary": "A task with its steps and artifacts", "parameters": [task.clone()],
            "responses": with_errors(json!({"200": resp("task", r("Task"))}))}},
        "/api/tasks/{id}/log": {"get": {"summary": "Log records from a byte offset or the start of a line, with the line number of the first byte and the log's line count (from per-block counts: the cost does not grow with the log)",
            "parameters": [task.clone(),
                {"name": "offset", "in": "query", "schema": {"type": "integer", "default": 0}},
                {"name": "line", "in": "query", "description": "start at this 0-based line instead of `offset`", "schema": {"type": "integer"}},
                {"name": "max", "in": "query", "schema": {"type": "integer", "default": 1048576}},
                {"name": "format", "in": "query", "schema": {"type": "string", "enum": ["json", "raw"]}}],
            "responses": with_errors(json!({"200": resp("log", r("Log"))}))}},
        "/api/tasks/{id}/log/raw": {"get": {"summary": "The log's bytes, streamed; one HTTP byte range (`Range: bytes=a-b`, `bytes=-n` for the tail) answers 206; `X-Sai-Log-Complete` says `complete` when the bytes reach the end of a finished task's log, else `growing`",
            "parameters": [task.clone(), {"name": "Range", "in": "header", "schema": {"type": "string"}}],
            "responses": with_errors(json!({
                "200": {"description": "the whole log", "content": {"application/octet-stream": {}}},
                "206": {"description": "the range asked for", "content": {"application/octet-stream": {}}},
                "416": {"description": "range starts past the end"}}))}},
        "/api/tasks/{id}/artifacts/{path}": {"get": {"summary": "Download an artifact by its relative path (e.g. `out/result.txt`); `Content-Disposition` names the file, `X-Sai-Sha256` and `ETag` carry its sha256",
            "parameters": [task.clone(), {"name": "path", "in": "path", "required": true, "schema": {"type": "string"}}],
            "responses": with_errors(json!({"200": {"description": "bytes",
                "headers": {"X-Sai-Sha256": {"description": "lowercase hex sha256 of the bytes", "schema": {"type": "string"}}},
                "content": {"application/octet-stream": {}}}}))}},
        "/api/tasks/{id}/rebuild": {"post": {"summary": "Reset a task to waiting (logs and artifacts cleared)",
            "security": auth.clone(), "parameters": [task.clone()],
            "responses": with_errors(json!({"200": resp("task", r("Task"))}))}},
        "/api/tasks/{id}/cancel": {"post": {"summary": "Cancel a waiting or running task",
            "security": auth, "parameters": [task],
            "responses": with_errors(json!({"200": resp("task", r("Task")), "409": resp("already finished", r("Error"))}))}},
        "/api/tasks/{id}/tests": {"get": {"summary": "The task's test cases from its JUnit XML reports, failed first, and the reports (refused ones say why)",
            "parameters": [task.clone()],
            "responses": with_errors(json!({"200": resp("test results", r("TaskTests"))}))}},
        "/api/events/{id}/tests": {"get": {"summary": "Tests that failed in any task of the event, with the platforms they failed on",
            "parameters": [id_param("id", 32)],
            "responses": with_errors(json!({"200": resp("failed tests", r("EventTests"))}))}},
        "/api/projects/{project}/tests": {"get": {"summary": "Recent runs of one test across events; flaky when a commit both failed and passed it",
            "parameters": [{"name": "project", "in": "path", "required": true, "schema": {"type": "string"}},
                           {"name": "suite", "in": "query", "required": true, "schema": {"type": "string"}},
                           {"name": "name", "in": "query", "required": true, "schema": {"type": "string"}},
                           {"name": "limit", "in": "query", "schema": {"type": "integer", "default": 50}}],
            "responses": with_errors(json!({"200": resp("history", r("TestHistory")), "400": resp("suite or name missing", r("Error"))}))}},
        "/api/builders": {"get": {"summary": "Builders, connected first", "responses": {
            "200": resp("builders", json!({"type": "array", "items": r("Builder")}))}}},
        "/builder": {"get": {"summary": "Builder websocket (also /sai/builder); see docs/protocol.md",
            "security": [{"bearer": []}],
            "responses": {"101": {"description": "upgraded"}, "401": resp("missing, invalid or revoked builder token", r("Error"))}}}
      }
    })
}
