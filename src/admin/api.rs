//! The JSON API under `/api/v1/` and the health probes. Lists are paged
//! (`page` from 1, `limit` from 1 to 1000, 100 unless given) and answer
//! `{"data": [...], "meta": {"page", "limit", "count"}}`; errors answer
//! `{"error": "..."}` with a status that says what went wrong: 400 for a
//! bad parameter, 404 for what does not exist, 503 for what cannot be
//! done now.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use base64::Engine;
use serde::Serialize;
use serde_json::{json, Value};

use super::{AdminState, ReloadRequest};
use crate::protocol::{TopicFilter, TopicName};
use crate::router::message::Message;
use crate::session::handshake::decide::BRIDGE_ID_PREFIX;

/// How long a connected session has to answer a question about itself.
const REPORT_WAIT: Duration = Duration::from_secs(2);
/// How long a reload may take before the API stops waiting for it.
const RELOAD_WAIT: Duration = Duration::from_secs(60);
/// The largest page.
pub const MAX_LIMIT: usize = 1000;
/// The page size when none is asked for.
pub const DEFAULT_LIMIT: usize = 100;

type Shared = State<Arc<AdminState>>;
type Params = Query<HashMap<String, String>>;

/// An error answer.
pub fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, Json(json!({ "error": message.into() }))).into_response()
}

fn not_found(what: &str) -> Response {
    error(StatusCode::NOT_FOUND, format!("no such {what}"))
}

fn bad_request(message: impl Into<String>) -> Response {
    error(StatusCode::BAD_REQUEST, message)
}

/// A bad parameter, as a helper finds it (small, unlike a response).
#[derive(Debug)]
struct BadParameter(String);

impl IntoResponse for BadParameter {
    fn into_response(self) -> Response {
        bad_request(self.0)
    }
}

/// The page asked for: (page from 1, limit).
fn page_of(params: &HashMap<String, String>) -> Result<(usize, usize), BadParameter> {
    let number = |key: &str, default: usize, max: usize| match params.get(key) {
        None => Ok(default),
        Some(text) => match text.parse::<usize>() {
            Ok(value) if (1..=max).contains(&value) => Ok(value),
            _ => Err(BadParameter(format!(
                "`{key}` must be a whole number from 1 to {max}, not {text:?}"
            ))),
        },
    };
    Ok((
        number("page", 1, usize::MAX)?,
        number("limit", DEFAULT_LIMIT, MAX_LIMIT)?,
    ))
}

/// One page of `items`.
fn paged<T: Serialize>(items: Vec<T>, (page, limit): (usize, usize)) -> Response {
    let count = items.len();
    let start = first_of((page, limit));
    let data: Vec<T> = items.into_iter().skip(start).take(limit).collect();
    page_answer(data, (page, limit), count)
}

/// The index of the first item of a page.
fn first_of((page, limit): (usize, usize)) -> usize {
    (page - 1).saturating_mul(limit)
}

/// A page taken at the source: `data`, of `count` items in all.
fn page_answer<T: Serialize>(
    data: Vec<T>,
    (page, limit): (usize, usize),
    count: usize,
) -> Response {
    Json(json!({
        "data": data,
        "meta": { "page": page, "limit": limit, "count": count },
    }))
    .into_response()
}

/// Refuses parameters the endpoint does not know (a typo would
/// otherwise silently list everything).
fn known(params: &HashMap<String, String>, allowed: &[&str]) -> Result<(), BadParameter> {
    match params.keys().find(|key| !allowed.contains(&key.as_str())) {
        Some(key) => Err(BadParameter(format!(
            "unknown parameter `{key}` (this endpoint takes: {})",
            allowed.join(", ")
        ))),
        None => Ok(()),
    }
}

fn unix(at: SystemTime) -> u64 {
    at.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_secs())
}

macro_rules! try_response {
    ($result:expr) => {
        match $result {
            Ok(value) => value,
            Err(error) => return error.into_response(),
        }
    };
}

/// `GET /healthz`: the process and its runtime answer.
pub async fn healthz(State(state): Shared) -> Response {
    Json(json!({
        "status": "ok",
        "uptime_seconds": state.started.elapsed().as_secs(),
    }))
    .into_response()
}

/// `GET /readyz`: every configured listener bound, the store loaded, not
/// shutting down; 503 otherwise.
pub async fn readyz(State(state): Shared) -> Response {
    let core = &state.context.core;
    let unbound = core.metrics.listeners_unbound.get();
    let shutting_down = core.tasks.token().is_cancelled();
    let store = if core.store.is_some() {
        "loaded"
    } else {
        "off"
    };
    let ready = unbound == 0 && !shutting_down;
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let body = json!({
        "ready": ready,
        "checks": {
            "listeners_unbound": unbound,
            "store": store,
            "shutting_down": shutting_down,
        },
    });
    (status, Json(body)).into_response()
}

/// `GET /api/v1/version`.
pub async fn version(State(state): Shared) -> Response {
    Json(json!({
        "name": "petrel",
        "version": env!("CARGO_PKG_VERSION"),
        "started_at": unix(state.started_at),
        "uptime_seconds": state.started.elapsed().as_secs(),
    }))
    .into_response()
}

/// `GET /api/v1/stats`: the figures the dashboard charts, in one read.
pub async fn stats(State(state): Shared) -> Response {
    let core = &state.context.core;
    let m = &core.metrics;
    let bridges: Vec<Value> = m
        .bridges
        .all()
        .iter()
        .map(|bridge| json!({ "name": bridge.name, "up": bridge.is_up() }))
        .collect();
    Json(json!({
        "uptime_seconds": state.started.elapsed().as_secs(),
        "connections": m.connections_open.get(),
        "clients_connected": m.clients_connected.get(),
        "sessions_offline": m.clients_disconnected.get(),
        "messages_received": m.received.messages(),
        "messages_sent": m.sent.messages(),
        "messages_dropped": m.messages_dropped.get() + m.messages_too_large.get()
            + m.messages_expired.get(),
        "subscriptions": core.router.subscription_count(),
        "retained_messages": core.router.retained_count(),
        "store_commits": m.store_commits.get(),
        "store_failures": m.store_failures.get(),
        "bridges": bridges,
    }))
    .into_response()
}

/// A connected client, as the clients list shows it.
#[derive(Debug, Serialize)]
struct ClientItem {
    client_id: Arc<str>,
    #[serde(flatten)]
    info: crate::session::manager::ClientInfo,
}

fn is_bridge(client_id: &str) -> bool {
    client_id.starts_with(BRIDGE_ID_PREFIX)
}

/// The sessions (not the bridges') whose client id starts with the
/// `id_prefix` parameter.
fn summaries(
    state: &AdminState,
    params: &HashMap<String, String>,
) -> Vec<crate::session::manager::SessionSummary> {
    let prefix = params.get("id_prefix").map_or("", String::as_str);
    state
        .context
        .core
        .sessions
        .summaries(|id| id.starts_with(prefix) && !is_bridge(id))
}

/// `GET /api/v1/clients`: connected clients, by client id; `id_prefix`,
/// `user` (exact) and `address` (a prefix of `ip:port`) filter them.
pub async fn clients(State(state): Shared, Query(params): Params) -> Response {
    try_response!(known(
        &params,
        &["page", "limit", "id_prefix", "user", "address"]
    ));
    let page = try_response!(page_of(&params));
    let items: Vec<ClientItem> = summaries(&state, &params)
        .into_iter()
        .filter_map(|summary| {
            let info = summary.client?;
            let user = params.get("user");
            if user.is_some_and(|user| info.username.as_deref() != Some(user.as_str())) {
                return None;
            }
            let address = params.get("address");
            if address.is_some_and(|address| !info.peer.to_string().starts_with(address.as_str())) {
                return None;
            }
            Some(ClientItem {
                client_id: summary.client_id,
                info,
            })
        })
        .collect();
    paged(items, page)
}

/// `GET /api/v1/clients/{id}`: a connected client, with what its session
/// holds.
pub async fn client(State(state): Shared, Path(id): Path<String>) -> Response {
    if is_bridge(&id) {
        return not_found("client");
    }
    let sessions = &state.context.core.sessions;
    match sessions.inspect(&id, REPORT_WAIT).await {
        Some(summary) if summary.connected => Json(summary).into_response(),
        _ => not_found("connected client"),
    }
}

/// `DELETE /api/v1/clients/{id}`: closes its connection (MQTT 5:
/// DISCONNECT 0x98 Administrative action); a persistent session stays.
pub async fn kick(State(state): Shared, Path(id): Path<String>) -> Response {
    if is_bridge(&id) || !state.context.core.sessions.kick(&id, false) {
        return not_found("connected client");
    }
    tracing::info!(client_id = %id, "admin: client disconnected");
    StatusCode::NO_CONTENT.into_response()
}

/// `GET /api/v1/sessions`: every session, connected or not (`connected`
/// = `true` / `false` filters, and `id_prefix`).
pub async fn sessions(State(state): Shared, Query(params): Params) -> Response {
    try_response!(known(&params, &["page", "limit", "id_prefix", "connected"]));
    let page = try_response!(page_of(&params));
    let connected = match params.get("connected").map(String::as_str) {
        None => None,
        Some("true") => Some(true),
        Some("false") => Some(false),
        Some(other) => {
            return bad_request(format!("`connected` must be true or false, not {other:?}"))
        }
    };
    let items: Vec<_> = summaries(&state, &params)
        .into_iter()
        .filter(|summary| connected.is_none_or(|wanted| summary.connected == wanted))
        .collect();
    paged(items, page)
}

/// `GET /api/v1/sessions/{id}`.
pub async fn session(State(state): Shared, Path(id): Path<String>) -> Response {
    if is_bridge(&id) {
        return not_found("session");
    }
    match state.context.core.sessions.inspect(&id, REPORT_WAIT).await {
        Some(summary) => Json(summary).into_response(),
        None => not_found("session"),
    }
}

/// `DELETE /api/v1/sessions/{id}`: a parked session is removed at once
/// (204); a connected one is closed and ends with its connection (202).
pub async fn delete_session(State(state): Shared, Path(id): Path<String>) -> Response {
    if is_bridge(&id) {
        return not_found("session");
    }
    let core = &state.context.core;
    if core.sessions.kick(&id, true) {
        tracing::info!(client_id = %id, "admin: session deleted (its client is disconnected)");
        return StatusCode::ACCEPTED.into_response();
    }
    match core.sessions.take_one_parked(&id) {
        Some((client_id, parked)) => {
            parked.discard(core, &client_id);
            tracing::info!(client_id = %id, "admin: session deleted");
            StatusCode::NO_CONTENT.into_response()
        }
        None => not_found("session"),
    }
}

/// `GET /api/v1/subscriptions`: with `client`, that session's; with
/// `topic`, the subscriptions a message on it would reach; with neither,
/// all of them.
pub async fn subscriptions(State(state): Shared, Query(params): Params) -> Response {
    try_response!(known(&params, &["page", "limit", "client", "topic"]));
    let page = try_response!(page_of(&params));
    let core = &state.context.core;
    match (params.get("client"), params.get("topic")) {
        (Some(_), Some(_)) => bad_request("give `client` or `topic`, not both"),
        (Some(client), None) => match core.sessions.inspect(client, REPORT_WAIT).await {
            Some(summary) => match summary.report {
                Some(report) => paged(report.subscriptions, page),
                None => error(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "the session did not answer in time; try again",
                ),
            },
            None => not_found("session"),
        },
        (None, Some(topic)) => match TopicName::new(topic.as_str()) {
            Ok(topic) => paged(core.router.matching(topic.as_str()), page),
            Err(error) => bad_request(format!("`topic`: {error}")),
        },
        (None, None) => {
            // Taken a page at a time: the walk holds the router's lock.
            let data = core.router.subscriptions(first_of(page), page.1);
            page_answer(data, page, core.router.subscription_count())
        }
    }
}

/// A retained message, as the list shows it.
#[derive(Debug, Serialize)]
struct RetainedItem {
    topic: String,
    qos: u8,
    payload_bytes: usize,
    /// Seconds of its Message Expiry Interval left, if it has one.
    expires_in: Option<u32>,
}

impl RetainedItem {
    fn of(message: &Message) -> RetainedItem {
        RetainedItem {
            topic: message.topic.as_str().to_owned(),
            qos: message.qos as u8,
            payload_bytes: message.payload.len(),
            expires_in: message
                .remaining_expiry(std::time::Instant::now())
                .ok()
                .flatten(),
        }
    }
}

/// `GET /api/v1/retained`: retained messages whose topic `filter`
/// (default `#`) matches, in topic order.
pub async fn retained(State(state): Shared, Query(params): Params) -> Response {
    try_response!(known(&params, &["page", "limit", "filter"]));
    let page = try_response!(page_of(&params));
    let filter = params.get("filter").map_or("#", String::as_str);
    let filter = match TopicFilter::new(filter) {
        Ok(filter) => filter,
        Err(error) => return bad_request(format!("`filter`: {error}")),
    };
    // Up to the page's end only: the scan holds the retained store's
    // lock, which routing shares. The count needs the whole scan, done in
    // bounded batches that let go of the lock in between.
    let router = &state.context.core.router;
    let start = first_of(page);
    let data: Vec<RetainedItem> = router
        .retained_after(filter.as_str(), None, start.saturating_add(page.1))
        .iter()
        .skip(start)
        .map(|message| RetainedItem::of(message))
        .collect();
    let mut count = 0;
    let mut after: Option<String> = None;
    loop {
        let batch = router.retained_after(filter.as_str(), after.as_deref(), COUNT_BATCH);
        count += batch.len();
        match batch.last() {
            Some(last) if batch.len() == COUNT_BATCH => {
                after = Some(last.topic.as_str().to_owned());
                tokio::task::yield_now().await;
            }
            _ => break,
        }
    }
    page_answer(data, page, count)
}

/// Retained messages counted per hold of the retained store's lock.
const COUNT_BATCH: usize = 1000;

fn topic_of(topic: &str) -> Result<TopicName, BadParameter> {
    TopicName::new(topic).map_err(|error| BadParameter(format!("topic: {error}")))
}

/// `GET /api/v1/retained/{topic}`: one message with its payload (as text
/// when it is UTF-8, and in base64) and properties.
pub async fn retained_one(State(state): Shared, Path(topic): Path<String>) -> Response {
    let topic = try_response!(topic_of(&topic));
    let Some(message) = state.context.core.router.retained_of(topic.as_str()) else {
        return not_found("retained message");
    };
    let properties = &message.properties;
    let user_properties: Vec<Value> = properties
        .user_properties
        .iter()
        .map(|(key, value)| json!([key, value]))
        .collect();
    Json(json!({
        "topic": message.topic.as_str(),
        "qos": message.qos as u8,
        "payload": std::str::from_utf8(&message.payload).ok(),
        "payload_base64": base64::engine::general_purpose::STANDARD.encode(&message.payload),
        "payload_bytes": message.payload.len(),
        "expires_in": message.remaining_expiry(std::time::Instant::now()).ok().flatten(),
        "content_type": properties.content_type,
        "payload_format_indicator": properties.payload_format_indicator,
        "response_topic": properties.response_topic.as_ref().map(|t| t.as_str()),
        "user_properties": user_properties,
    }))
    .into_response()
}

/// `DELETE /api/v1/retained/{topic}`: removes it (from the store too);
/// nothing is delivered.
pub async fn delete_retained(State(state): Shared, Path(topic): Path<String>) -> Response {
    let topic = try_response!(topic_of(&topic));
    if state.context.core.router.remove_retained(&topic) {
        tracing::info!(%topic, "admin: retained message deleted");
        StatusCode::NO_CONTENT.into_response()
    } else {
        not_found("retained message")
    }
}

fn bridge_json(state: &AdminState, bridge: &crate::metrics::BridgeStats) -> Value {
    let core = &state.context.core;
    let last_error = bridge
        .last_error()
        .map(|(at, message)| json!({ "at": unix(at), "message": message }));
    json!({
        "name": bridge.name,
        "state": if bridge.is_up() { "up" } else { "down" },
        "address": bridge.address(),
        "last_error": last_error,
        "queued": core.sessions.queued(&format!("{BRIDGE_ID_PREFIX}{}", bridge.name)),
        "connects": bridge.connects.get(),
        "failures": bridge.failures.get(),
        "forwarded": bridge.forwarded.get(),
        "received": bridge.received.get(),
    })
}

/// `GET /api/v1/bridges`.
pub async fn bridges(State(state): Shared) -> Response {
    let all: Vec<Value> = state
        .context
        .core
        .metrics
        .bridges
        .all()
        .iter()
        .map(|bridge| bridge_json(&state, bridge))
        .collect();
    Json(json!({ "data": all })).into_response()
}

/// `GET /api/v1/bridges/{name}`.
pub async fn bridge(State(state): Shared, Path(name): Path<String>) -> Response {
    match state.context.core.metrics.bridges.get(&name) {
        Some(bridge) => Json(bridge_json(&state, &bridge)).into_response(),
        None => not_found("bridge"),
    }
}

/// `POST /api/v1/bridges/{name}/reconnect`: drops the link and connects
/// again at once (a bridge waiting to retry retries now).
pub async fn reconnect_bridge(State(state): Shared, Path(name): Path<String>) -> Response {
    let core = &state.context.core;
    let Some(bridge) = core.metrics.bridges.get(&name) else {
        return not_found("bridge");
    };
    // Up: its link is dropped (and made again at once); down: its wait
    // before the next attempt ends now.
    let id = format!("{BRIDGE_ID_PREFIX}{name}");
    if !(bridge.is_up() && core.sessions.kick(&id, false)) {
        bridge.reconnect.notify_one();
    }
    tracing::info!(bridge = %name, "admin: bridge reconnection asked");
    (StatusCode::ACCEPTED, Json(json!({ "reconnecting": name }))).into_response()
}

/// `POST /api/v1/reload`: what SIGHUP does; 200 with what changed, 422 if
/// the configuration is not valid (nothing changed), 503 if this broker
/// has no one to carry out reloads.
pub async fn reload(State(state): Shared) -> Response {
    if !state
        .reloads_served
        .load(std::sync::atomic::Ordering::Acquire)
    {
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            "this broker cannot reload from the API (it is not run by the petrel command)",
        );
    }
    let (done, outcome) = tokio::sync::oneshot::channel();
    if state.reloads.try_send(ReloadRequest { done }).is_err() {
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            "a reload is under way already, or this broker cannot reload",
        );
    }
    match tokio::time::timeout(RELOAD_WAIT, outcome).await {
        Ok(Ok(outcome)) if outcome.reloaded => Json(outcome).into_response(),
        Ok(Ok(outcome)) => (StatusCode::UNPROCESSABLE_ENTITY, Json(outcome)).into_response(),
        _ => error(
            StatusCode::SERVICE_UNAVAILABLE,
            "the reload did not finish in time; see the log",
        ),
    }
}

/// Anything else: 404, in JSON.
pub async fn fallback() -> Response {
    not_found("endpoint")
}
