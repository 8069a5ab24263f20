//! Who may use the admin listener. On a loopback address with no token
//! configured, everything is open to local users: the machine is the
//! trust boundary, as for the MQTT listener's loopback default. Otherwise
//! a request carries the bearer token (`Authorization: Bearer <token>`,
//! compared in constant time), or comes over TLS with a client
//! certificate the configured CA signed. `public_read = true` opens the
//! read-only endpoints (GET) without either; actions (POST, DELETE) never
//! are. The health probes and the dashboard's own files (which hold no
//! data: the page asks for the token) are always open.
//!
//! Open on loopback means open to local programs, not to every web page a
//! local browser shows: a request there must name a loopback host
//! (`Host: 127.0.0.1:9883`, `localhost`, `[::1]`), which a page on
//! another site that rebinds its DNS to 127.0.0.1 cannot, and an action
//! (POST, DELETE) must not come from another site's page (`Origin`,
//! `Sec-Fetch-Site`), which the browser says.

use axum::extract::{Request, State};
use axum::http::{header, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use subtle::ConstantTimeEq;

use super::{AdminState, Caller};
use crate::config::AdminConfig;

/// The rule in force.
#[derive(Debug, Clone)]
pub struct Policy {
    /// Everything open (loopback, no token, no client certificates).
    open: bool,
    /// The bearer token, if one is configured.
    token: Option<String>,
    /// Reads open without the token.
    public_read: bool,
    /// Client certificates authenticate (the CA is set and a certificate
    /// required).
    certificates: bool,
}

impl Policy {
    /// The rule for `config`, with the token read from its `token_file`.
    pub fn new(config: &AdminConfig, token: Option<String>) -> Policy {
        let loopback = config.bind.is_some_and(|bind| bind.ip().is_loopback());
        Policy {
            open: loopback && token.is_none() && !config.certificates_authenticate(),
            token,
            public_read: config.public_read,
            certificates: config.certificates_authenticate(),
        }
    }

    /// Whether everything is open (loopback, no token, no certificates).
    pub fn is_open(&self) -> bool {
        self.open
    }

    /// Whether a request for `path` with `method` from `caller`, carrying
    /// `authorization`, may go on.
    pub fn allows(
        &self,
        method: &Method,
        path: &str,
        caller: Option<&Caller>,
        authorization: Option<&[u8]>,
    ) -> bool {
        let certified = self.certificates && caller.is_some_and(|caller| caller.certificate);
        if self.open || always_open(path) || certified {
            return true;
        }
        if self.public_read && (method == Method::GET || method == Method::HEAD) {
            return true;
        }
        let (Some(token), Some(given)) = (&self.token, authorization) else {
            return false;
        };
        // The scheme's name is case-insensitive (RFC 9110, 11.1).
        let Some((scheme, given)) = given.split_at_checked(7) else {
            return false;
        };
        if !scheme.eq_ignore_ascii_case(b"bearer ") {
            return false;
        }
        bool::from(given.trim_ascii().ct_eq(token.as_bytes()))
    }
}

/// The paths that need no authentication: the probes, and the
/// dashboard's page and files.
fn always_open(path: &str) -> bool {
    matches!(
        path,
        "/healthz" | "/readyz" | "/" | "/dashboard.js" | "/dashboard.css"
    )
}

/// Whether `host` (a Host header's value) names this machine: an IP
/// address of loopback, or `localhost`, with or without a port.
fn loopback_host(host: &str) -> bool {
    let name = match host.strip_prefix('[') {
        Some(rest) => rest.split(']').next().unwrap_or(""),
        None => host.rsplit_once(':').map_or(host, |(name, _)| name),
    };
    name.eq_ignore_ascii_case("localhost")
        || name
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// In the open mode, whether a request could come from a web page of
/// another site: a Host that is not loopback (DNS rebinding), or an
/// action another site's page sent.
fn cross_site(request: &Request) -> bool {
    let header = |name: header::HeaderName| {
        request
            .headers()
            .get(name)
            .and_then(|value| value.to_str().ok())
    };
    if !header(header::HOST).is_some_and(loopback_host) {
        return true;
    }
    let action = request.method() != Method::GET && request.method() != Method::HEAD;
    let from_elsewhere = header(header::HeaderName::from_static("sec-fetch-site"))
        .is_some_and(|site| site != "same-origin" && site != "none")
        || header(header::ORIGIN).is_some_and(|origin| {
            let host = origin.split("://").nth(1).unwrap_or("");
            Some(host) != header(header::HOST)
        });
    action && from_elsewhere
}

/// The middleware: a request the policy refuses gets 401 with a JSON body
/// (403 for a cross-site request in the open mode).
pub async fn check(
    State(state): State<std::sync::Arc<AdminState>>,
    request: Request,
    next: Next,
) -> Response {
    if state.auth.is_open() && cross_site(&request) {
        tracing::info!(
            path = request.uri().path(),
            "admin: cross-site request refused"
        );
        return super::api::error(
            StatusCode::FORBIDDEN,
            "a request to the open admin listener must name a loopback host, and an action \
             must not come from another site",
        );
    }
    let caller = request.extensions().get::<Caller>().copied();
    let authorization = request
        .headers()
        .get(header::AUTHORIZATION)
        .map(|value| value.as_bytes().to_vec());
    if state.auth.allows(
        request.method(),
        request.uri().path(),
        caller.as_ref(),
        authorization.as_deref(),
    ) {
        return next.run(request).await;
    }
    if authorization.is_some() {
        tracing::info!(peer = ?caller.map(|c| c.peer), path = request.uri().path(), "admin: wrong token");
    }
    let mut response = super::api::error(
        StatusCode::UNAUTHORIZED,
        "this needs the admin token: Authorization: Bearer <token>",
    )
    .into_response();
    response.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        header::HeaderValue::from_static("Bearer"),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(bind: &str, public_read: bool) -> AdminConfig {
        AdminConfig {
            bind: Some(bind.parse().expect("address")),
            public_read,
            ..AdminConfig::default()
        }
    }

    const TOKEN: &str = "0123456789abcdef-token";

    #[test]
    fn loopback_without_a_token_is_open_and_with_one_is_not() {
        let open = Policy::new(&config("127.0.0.1:9883", false), None);
        assert!(open.allows(&Method::DELETE, "/api/v1/clients/x", None, None));
        let closed = Policy::new(&config("127.0.0.1:9883", false), Some(TOKEN.into()));
        assert!(!closed.allows(&Method::GET, "/metrics", None, None));
        let bearer = format!("Bearer {TOKEN}");
        assert!(closed.allows(&Method::GET, "/metrics", None, Some(bearer.as_bytes())));
        assert!(!closed.allows(&Method::GET, "/metrics", None, Some(b"Bearer wrong")));
        assert!(!closed.allows(&Method::GET, "/metrics", None, Some(TOKEN.as_bytes())));
        assert!(closed.allows(&Method::GET, "/readyz", None, None));
        let lower = format!("bearer {TOKEN}");
        assert!(closed.allows(&Method::GET, "/metrics", None, Some(lower.as_bytes())));
    }

    #[test]
    fn loopback_hosts_are_told_from_others() {
        for host in [
            "127.0.0.1:9883",
            "localhost",
            "LOCALHOST:80",
            "[::1]:9883",
            "127.0.0.7",
        ] {
            assert!(loopback_host(host), "{host}");
        }
        for host in [
            "evil.example:9883",
            "10.0.0.1",
            "[fe80::1]:9883",
            "",
            "localhost.evil",
        ] {
            assert!(!loopback_host(host), "{host}");
        }
    }

    #[test]
    fn public_read_opens_reads_never_actions() {
        let policy = Policy::new(&config("0.0.0.0:9883", true), Some(TOKEN.into()));
        assert!(policy.allows(&Method::GET, "/api/v1/clients", None, None));
        assert!(!policy.allows(&Method::DELETE, "/api/v1/clients/x", None, None));
        assert!(!policy.allows(&Method::POST, "/api/v1/reload", None, None));
    }
}
