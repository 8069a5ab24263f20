//! Every route of the admin listener, in one table: the router is built
//! from it, and a test holds the OpenAPI document (`openapi.json`, served
//! at `/api/v1/openapi.json`) to it, so that no route goes undescribed.

use std::sync::Arc;

use axum::extract::DefaultBodyLimit;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post, MethodRouter};
use axum::Router;

use super::{api, auth, AdminState};

/// The OpenAPI document.
pub const OPENAPI: &str = include_str!("openapi.json");
const INDEX: &str = include_str!("dashboard/index.html");
const SCRIPT: &str = include_str!("dashboard/dashboard.js");
const STYLE: &str = include_str!("dashboard/dashboard.css");

type Route = (&'static str, &'static str, MethodRouter<Arc<AdminState>>);

/// (method, path, handler) of every route.
pub fn table() -> Vec<Route> {
    vec![
        (
            "GET",
            "/",
            get(|| async { page(INDEX, "text/html; charset=utf-8") }),
        ),
        (
            "GET",
            "/dashboard.js",
            get(|| async { page(SCRIPT, "text/javascript; charset=utf-8") }),
        ),
        (
            "GET",
            "/dashboard.css",
            get(|| async { page(STYLE, "text/css; charset=utf-8") }),
        ),
        ("GET", "/healthz", get(api::healthz)),
        ("GET", "/readyz", get(api::readyz)),
        ("GET", "/metrics", get(metrics)),
        (
            "GET",
            "/api/v1/openapi.json",
            get(|| async { page(OPENAPI, "application/json") }),
        ),
        ("GET", "/api/v1/version", get(api::version)),
        ("GET", "/api/v1/stats", get(api::stats)),
        ("GET", "/api/v1/clients", get(api::clients)),
        ("GET", "/api/v1/clients/{id}", get(api::client)),
        ("DELETE", "/api/v1/clients/{id}", delete(api::kick)),
        ("GET", "/api/v1/sessions", get(api::sessions)),
        ("GET", "/api/v1/sessions/{id}", get(api::session)),
        (
            "DELETE",
            "/api/v1/sessions/{id}",
            delete(api::delete_session),
        ),
        ("GET", "/api/v1/subscriptions", get(api::subscriptions)),
        ("GET", "/api/v1/retained", get(api::retained)),
        ("GET", "/api/v1/retained/{*topic}", get(api::retained_one)),
        (
            "DELETE",
            "/api/v1/retained/{*topic}",
            delete(api::delete_retained),
        ),
        ("GET", "/api/v1/bridges", get(api::bridges)),
        ("GET", "/api/v1/bridges/{name}", get(api::bridge)),
        (
            "POST",
            "/api/v1/bridges/{name}/reconnect",
            post(api::reconnect_bridge),
        ),
        ("POST", "/api/v1/reload", post(api::reload)),
    ]
}

fn page(body: &'static str, content_type: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response()
}

async fn metrics(axum::extract::State(state): axum::extract::State<Arc<AdminState>>) -> Response {
    let text = super::prometheus::scrape(&state.context.core);
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, super::prometheus::CONTENT_TYPE)],
        text,
    )
        .into_response()
}

/// The router of [`table`], behind the authentication check, with request
/// bodies bounded by `max_request_bytes`.
pub fn router(state: Arc<AdminState>, max_request_bytes: usize) -> Router {
    let mut router: Router<Arc<AdminState>> = Router::new();
    // Routes of one path share one MethodRouter.
    let mut by_path: Vec<(&'static str, MethodRouter<Arc<AdminState>>)> = Vec::new();
    for (_, path, handler) in table() {
        match by_path.iter_mut().find(|(known, _)| *known == path) {
            Some((_, existing)) => *existing = std::mem::take(existing).merge(handler),
            None => by_path.push((path, handler)),
        }
    }
    for (path, handler) in by_path {
        router = router.route(path, handler);
    }
    router
        .fallback(api::fallback)
        .layer(axum::middleware::from_fn_with_state(
            Arc::clone(&state),
            auth::check,
        ))
        .layer(DefaultBodyLimit::max(max_request_bytes))
        .with_state(state)
}

#[cfg(test)]
mod tests {
    use super::*;

    // The OpenAPI document describes every route, with its method, and
    // nothing that is not one.
    #[test]
    fn the_openapi_document_describes_every_route() {
        let document: serde_json::Value = serde_json::from_str(OPENAPI).expect("openapi.json");
        let paths = document["paths"].as_object().expect("paths");
        let mut described = Vec::new();
        for (path, operations) in paths {
            for method in operations.as_object().expect("operations").keys() {
                described.push((method.to_uppercase(), path.clone()));
            }
        }
        let mut routes: Vec<(String, String)> = table()
            .into_iter()
            .map(|(method, path, _)| (method.to_owned(), path.replace("{*", "{")))
            .collect();
        routes.sort();
        described.sort();
        assert_eq!(routes, described);
        assert_eq!(document["openapi"], "3.0.3");
    }
}
