//! CORS for the browser listener, over HTTP/1.1 and HTTP/2 alike: which origins may call,
//! the preflight answer, and the headers a cross-origin page may read.

use http::{header, HeaderMap, HeaderValue, StatusCode};

/// The site a browser listener serves: its files and the origins allowed to call it.
#[derive(Debug, Clone, Default)]
pub(crate) struct Site {
    pub(crate) files: Vec<super::browser::StaticFile>,
    pub(crate) allowed_origins: Vec<String>,
}

impl Site {
    /// The request's `origin`, when it is one allowed to call.
    pub(crate) fn allowed<'a>(&self, headers: &'a HeaderMap) -> Option<&'a HeaderValue> {
        headers
            .get(header::ORIGIN)
            .filter(|o| origin_allowed(&self.allowed_origins, o))
    }

    /// The file at `path`, if served.
    pub(crate) fn file(&self, path: &str) -> Option<&super::browser::StaticFile> {
        self.files.iter().find(|f| f.path == path)
    }
}

pub(crate) fn origin_allowed(allowed: &[String], origin: &HeaderValue) -> bool {
    allowed
        .iter()
        .any(|a| a == "*" || a.as_bytes() == origin.as_bytes())
}

/// What browsers may send and read cross-origin: the gRPC-Web and Connect headers.
const ALLOW_HEADERS: &str = "content-type, x-grpc-web, x-user-agent, grpc-timeout, \
    connect-protocol-version, connect-timeout-ms, connect-content-encoding, \
    connect-accept-encoding, content-encoding, accept-encoding, authorization";
const EXPOSE_HEADERS: &str = "grpc-status, grpc-message, grpc-status-details-bin, \
    content-encoding, connect-content-encoding";

pub(crate) fn preflight_head(headers: &HeaderMap, allowed: bool) -> http::Response<()> {
    let mut response = http::Response::new(());
    if !allowed {
        *response.status_mut() = StatusCode::FORBIDDEN;
        return response;
    }
    *response.status_mut() = StatusCode::NO_CONTENT;
    let out = response.headers_mut();
    out.insert(
        header::ACCESS_CONTROL_ALLOW_METHODS,
        HeaderValue::from_static("POST, GET"),
    );
    // The metadata a page sends is its own choice: allow what it asks for, plus ours.
    let asked = headers
        .get(header::ACCESS_CONTROL_REQUEST_HEADERS)
        .and_then(|v| v.to_str().ok())
        .map(|v| format!("{ALLOW_HEADERS}, {v}"))
        .and_then(|v| HeaderValue::from_str(&v).ok())
        .unwrap_or(HeaderValue::from_static(ALLOW_HEADERS));
    out.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, asked);
    out.insert(
        header::ACCESS_CONTROL_MAX_AGE,
        HeaderValue::from_static("7200"),
    );
    response
}

pub(crate) fn cors(headers: &mut HeaderMap, origin: &HeaderValue) {
    headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin.clone());
    headers.insert(header::VARY, HeaderValue::from_static("origin"));
    // Response metadata is readable too: every header this response carries.
    let mut expose = EXPOSE_HEADERS.to_owned();
    for name in headers.keys() {
        let name = name.as_str();
        if !expose.contains(name) && !name.starts_with("access-control-") {
            expose.push_str(", ");
            expose.push_str(name);
        }
    }
    if let Ok(value) = HeaderValue::from_str(&expose) {
        headers.insert(header::ACCESS_CONTROL_EXPOSE_HEADERS, value);
    }
}
