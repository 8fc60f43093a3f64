//! Authorization by policy, in the format of gRPC's SDK authorization (gRFC A43): deny rules,
//! then allow rules, over method paths, request headers and the principals of the verified
//! client certificate; enforced by a server interceptor before the handler runs.
//!
//! ```json
//! {"name": "satellite",
//!  "deny_rules": [{"name": "no-intruder", "source": {"principals": ["CN=intruder"]}}],
//!  "allow_rules": [{"name": "readers",
//!                   "source": {"principals": ["spiffe://satellite/reader*"]},
//!                   "request": {"paths": ["/satellite.Satellite/*"],
//!                               "headers": [{"key": "token", "values": ["abc"]}]}}]}
//! ```
//!
//! A43's rules, as followed here:
//! - A call that matches any deny rule is denied; otherwise one that matches any allow rule is
//!   allowed; otherwise it is denied. Denials answer `PERMISSION_DENIED`.
//! - A rule matches when its `source` and its `request` match; an absent part (or an empty
//!   list) matches everything.
//! - Principals are matched against the client certificate's URI SANs, then DNS SANs, then
//!   its subject ("CN=satellite-client"). Without TLS no principal matches; over TLS without a
//!   client certificate only the principal `""` does.
//! - Every value (principal, path, header value) is exact, `prefix*`, `*suffix`, or `*`
//!   (present and not empty). A header's several values are matched as one, joined by `,`.
//! - Header rules may not name pseudo-headers, `grpc-` headers, `host` or connection headers:
//!   such a policy is refused.

use std::{
    fmt,
    path::{Path, PathBuf},
    sync::{Arc, OnceLock, RwLock},
};

use serde::Deserialize;

use crate::grpc::{
    error::Error,
    intercept::{BoxFuture, CallHead, ServerInterceptor},
    metadata::{is_reserved, Metadata},
    reload::Reload,
    request::Peer,
    status::Status,
};

/// A parsed, checked authorization policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthzPolicy {
    name: String,
    deny: Vec<Rule>,
    allow: Vec<Rule>,
}

/// The outcome of evaluating a policy for one call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision<'a> {
    /// The policy's name.
    pub policy: &'a str,
    /// Whether the call may go on.
    pub allowed: bool,
    /// The rule that decided: the deny or allow rule that matched; `None` when no rule
    /// matched (and the call is denied).
    pub rule: Option<&'a str>,
}

impl AuthzPolicy {
    /// Parses a policy from its JSON text.
    ///
    /// # Errors
    /// A configuration error saying what is wrong and where (line and column for JSON).
    pub fn from_json(text: &str) -> Result<Self, Error> {
        let raw: RawPolicy = serde_json::from_str(text)
            .map_err(|e| Error::config("not a valid authorization policy").with(e))?;
        raw.check()
    }

    /// Reads and parses a policy file.
    ///
    /// # Errors
    /// An I/O or configuration error naming the file.
    pub fn from_file(path: &Path) -> Result<Self, Error> {
        let text = read_bounded(path)?;
        Self::from_json(&text)
            .map_err(|e| Error::config(format!("authorization policy {}", path.display())).with(e))
    }

    /// The policy's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Decides a call from its method path, request metadata and peer.
    pub fn evaluate(&self, method: &str, metadata: &Metadata, peer: &Peer) -> Decision<'_> {
        let matching = |rules| first_match(rules, method, metadata, peer);
        let decision = |allowed, rule| Decision {
            policy: &self.name,
            allowed,
            rule,
        };
        if let Some(rule) = matching(&self.deny) {
            return decision(false, Some(rule));
        }
        match matching(&self.allow) {
            Some(rule) => decision(true, Some(rule)),
            None => decision(false, None),
        }
    }
}

/// The name of the first rule in `rules` that matches the call.
fn first_match<'r>(
    rules: &'r [Rule],
    method: &str,
    metadata: &Metadata,
    peer: &Peer,
) -> Option<&'r str> {
    rules
        .iter()
        .find(|rule| rule.matches(method, metadata, peer))
        .map(|rule| rule.name.as_str())
}

/// Called with every decision the interceptor makes (for metrics and audit logs).
pub type DecisionObserver = Arc<dyn Fn(&Decision<'_>) + Send + Sync>;

/// The policy in force, replaceable while the server runs, and the interceptor that enforces
/// it. Clones share the policy.
#[derive(Clone)]
pub struct Authz {
    inner: Arc<Inner>,
}

struct Inner {
    policy: RwLock<Arc<AuthzPolicy>>,
    /// The file the policy was read from, for reloads.
    path: Option<PathBuf>,
    observer: OnceLock<DecisionObserver>,
}

impl Authz {
    /// Enforces `policy`, which only [`Authz::replace`] changes.
    pub fn new(policy: AuthzPolicy) -> Self {
        Self::build(policy, None)
    }

    /// Enforces the policy in `path`; [`Reload::reload`] reads the file again.
    ///
    /// # Errors
    /// As [`AuthzPolicy::from_file`].
    pub fn from_file(path: &Path) -> Result<Self, Error> {
        let policy = AuthzPolicy::from_file(path)?;
        Ok(Self::build(policy, Some(path.to_path_buf())))
    }

    /// Calls `observer` with every decision, from now on; the first observer set stays.
    pub fn on_decision(self, observer: DecisionObserver) -> Self {
        let _ = self.inner.observer.set(observer);
        self
    }

    fn build(policy: AuthzPolicy, path: Option<PathBuf>) -> Self {
        Self {
            inner: Arc::new(Inner {
                policy: RwLock::new(Arc::new(policy)),
                path,
                observer: OnceLock::new(),
            }),
        }
    }

    /// The policy in force.
    pub fn policy(&self) -> Arc<AuthzPolicy> {
        self.inner
            .policy
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Puts `policy` in force for calls that start from now on.
    pub fn replace(&self, policy: AuthzPolicy) {
        *self
            .inner
            .policy
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Arc::new(policy);
    }

    /// The interceptor enforcing this policy; add it with
    /// [`Router::intercept`](crate::grpc::Router::intercept) first (after the metrics
    /// interceptor, if any, which only counts), so nothing else runs for a call it denies.
    pub fn interceptor(&self) -> AuthzInterceptor {
        AuthzInterceptor(self.clone())
    }
}

impl fmt::Debug for Authz {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Authz")
            .field("policy", &self.policy().name)
            .field("path", &self.inner.path)
            .finish_non_exhaustive()
    }
}

impl Reload for Authz {
    fn what(&self) -> &str {
        "authorization policy"
    }

    fn paths(&self) -> Vec<PathBuf> {
        self.inner.path.iter().cloned().collect()
    }

    fn reload(&self) -> Result<(), Error> {
        let Some(path) = &self.inner.path else {
            return Ok(());
        };
        self.replace(AuthzPolicy::from_file(path)?);
        Ok(())
    }
}

/// The server interceptor made by [`Authz::interceptor`].
#[derive(Debug, Clone)]
pub struct AuthzInterceptor(Authz);

impl ServerInterceptor for AuthzInterceptor {
    fn before<'a>(&'a self, head: &'a mut CallHead) -> BoxFuture<'a, Result<(), Status>> {
        let policy = self.0.policy();
        let decision = policy.evaluate(head.method(), &head.metadata, head.peer());
        if let Some(observer) = self.0.inner.observer.get() {
            observer(&decision);
        }
        let result = if decision.allowed {
            Ok(())
        } else {
            tracing::debug!(method = head.method(), rule = ?decision.rule, "authorization denied");
            // The rule set is named so an operator can find it; the peer learns nothing else.
            Err(Status::permission_denied(match decision.rule {
                Some(rule) => format!(
                    "denied by rule {rule:?} of authorization policy {:?}",
                    decision.policy
                ),
                None => format!(
                    "no allow rule of authorization policy {:?} matches",
                    decision.policy
                ),
            }))
        };
        Box::pin(std::future::ready(result))
    }
}

// ===== rules =====

#[derive(Debug, Clone, PartialEq, Eq)]
struct Rule {
    name: String,
    principals: Vec<Pattern>,
    paths: Vec<Pattern>,
    headers: Vec<(String, Vec<Pattern>)>,
}

impl Rule {
    fn matches(&self, method: &str, metadata: &Metadata, peer: &Peer) -> bool {
        let principal = self.principals.is_empty()
            || self.principals.iter().any(|p| principal_matches(p, peer));
        let path = self.paths.is_empty() || self.paths.iter().any(|p| p.matches(method));
        principal
            && path
            && self.headers.iter().all(|(key, values)| {
                let joined = metadata.get_all(key).join(",");
                values.iter().any(|v| v.matches(&joined))
            })
    }
}

/// A43: "A match is found if principal matches URI SANs or DNS SANs or Subject field from x509
/// client certificate"; without TLS, matching fails; without a certificate, only "" matches.
fn principal_matches(pattern: &Pattern, peer: &Peer) -> bool {
    if !peer.tls {
        return false;
    }
    let Some(subject) = &peer.subject else {
        return pattern.matches("");
    };
    peer.uri_sans
        .iter()
        .chain(&peer.dns_sans)
        .chain([subject])
        .any(|value| pattern.matches(value))
}

/// One A43 value matcher.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Pattern {
    Exact(String),
    Prefix(String),
    Suffix(String),
    /// `*`: present and not empty.
    Present,
}

impl Pattern {
    fn parse(text: &str) -> Self {
        if text == "*" {
            Self::Present
        } else if let Some(prefix) = text.strip_suffix('*') {
            Self::Prefix(prefix.to_owned())
        } else if let Some(suffix) = text.strip_prefix('*') {
            Self::Suffix(suffix.to_owned())
        } else {
            Self::Exact(text.to_owned())
        }
    }

    fn matches(&self, value: &str) -> bool {
        match self {
            Self::Exact(s) => value == s,
            Self::Prefix(s) => value.starts_with(s.as_str()),
            Self::Suffix(s) => value.ends_with(s.as_str()),
            Self::Present => !value.is_empty(),
        }
    }
}

// ===== the JSON form =====

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPolicy {
    name: String,
    #[serde(default)]
    deny_rules: Vec<RawRule>,
    allow_rules: Vec<RawRule>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRule {
    name: String,
    #[serde(default)]
    source: RawSource,
    #[serde(default)]
    request: RawRequest,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawSource {
    #[serde(default)]
    principals: Vec<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawRequest {
    #[serde(default)]
    paths: Vec<String>,
    #[serde(default)]
    headers: Vec<RawHeader>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHeader {
    key: String,
    values: Vec<String>,
}

impl RawPolicy {
    fn check(self) -> Result<AuthzPolicy, Error> {
        if self.name.is_empty() {
            return Err(Error::config("the policy's \"name\" is empty"));
        }
        let rules = |raw: Vec<RawRule>, kind: &str| -> Result<Vec<Rule>, Error> {
            raw.into_iter()
                .enumerate()
                .map(|(i, rule)| {
                    rule.check()
                        .map_err(|why| Error::config(format!("{kind}[{i}]: {why}")))
                })
                .collect()
        };
        Ok(AuthzPolicy {
            deny: rules(self.deny_rules, "deny_rules")?,
            allow: rules(self.allow_rules, "allow_rules")?,
            name: self.name,
        })
    }
}

impl RawRule {
    fn check(self) -> Result<Rule, String> {
        if self.name.is_empty() {
            return Err("the rule's \"name\" is empty".to_owned());
        }
        let patterns = |values: &[String]| values.iter().map(|v| Pattern::parse(v)).collect();
        let mut headers = Vec::with_capacity(self.request.headers.len());
        for header in self.request.headers {
            let key = header.key.to_ascii_lowercase();
            // A43: hop-by-hop headers, "host", pseudo-headers and "grpc-" headers are not
            // supported; the runtime keeps them (and te, content-type) out of metadata, so a
            // rule on one could never match.
            if key.is_empty()
                || is_reserved(&key)
                || key == "host"
                || http::HeaderName::from_bytes(key.as_bytes()).is_err()
            {
                return Err(format!(
                    "rule {:?}: header {:?} cannot be matched (pseudo, grpc-, host and \
                     connection headers are not allowed)",
                    self.name, header.key
                ));
            }
            if header.values.is_empty() {
                return Err(format!(
                    "rule {:?}: header {:?} has no values",
                    self.name, header.key
                ));
            }
            headers.push((key, patterns(&header.values)));
        }
        Ok(Rule {
            principals: patterns(&self.source.principals),
            paths: patterns(&self.request.paths),
            headers,
            name: self.name,
        })
    }
}

/// Largest policy file read: far above any hand-written policy, and a bound on what a wrong
/// path can make the server hold.
const MAX_POLICY_FILE: u64 = 1024 * 1024;

fn read_bounded(path: &Path) -> Result<String, Error> {
    use std::io::Read as _;
    let context = || format!("cannot read {}", path.display());
    let file = std::fs::File::open(path).map_err(|e| Error::io(context(), e))?;
    let mut text = String::new();
    file.take(MAX_POLICY_FILE + 1)
        .read_to_string(&mut text)
        .map_err(|e| Error::io(context(), e))?;
    if text.len() as u64 > MAX_POLICY_FILE {
        return Err(Error::config(format!(
            "{} is over the {MAX_POLICY_FILE}-byte limit for a policy",
            path.display()
        )));
    }
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    const POLICY: &str = r#"{
        "name": "satellite",
        "deny_rules": [{"name": "no-intruder", "source": {"principals": ["CN=intruder"]}}],
        "allow_rules": [
            {"name": "readers", "source": {"principals": ["spiffe://satellite/reader*"]},
             "request": {"paths": ["/satellite.Satellite/*"]}},
            {"name": "token", "request": {"paths": ["*/GetImage"],
             "headers": [{"key": "Token", "values": ["abc", "x*"]}]}},
            {"name": "anonymous-health", "source": {"principals": [""]},
             "request": {"paths": ["/grpc.health.v1.Health/Check"]}}
        ]}"#;

    fn peer(subject: Option<&str>, uris: &[&str]) -> Peer {
        Peer {
            tls: true,
            subject: subject.map(str::to_owned),
            uri_sans: uris.iter().map(|s| (*s).to_owned()).collect(),
            ..Peer::default()
        }
    }

    fn decide(
        policy: &AuthzPolicy,
        method: &str,
        md: &Metadata,
        peer: &Peer,
    ) -> (bool, Option<String>) {
        let d = policy.evaluate(method, md, peer);
        (d.allowed, d.rule.map(str::to_owned))
    }

    #[test]
    fn deny_wins_then_allow_then_default_deny() {
        let policy = AuthzPolicy::from_json(POLICY).unwrap();
        let none = Metadata::new();
        let reader = peer(Some("CN=r"), &["spiffe://satellite/reader-1"]);
        let get_images = "/satellite.Satellite/GetImages";
        assert_eq!(
            decide(&policy, get_images, &none, &reader),
            (true, Some("readers".into()))
        );
        // The intruder also holds a reader SAN: deny rules are evaluated first.
        let intruder = peer(Some("CN=intruder"), &["spiffe://satellite/reader-2"]);
        assert_eq!(
            decide(&policy, get_images, &none, &intruder),
            (false, Some("no-intruder".into()))
        );
        let other = peer(Some("CN=other"), &[]);
        assert_eq!(decide(&policy, get_images, &none, &other), (false, None));
    }

    #[test]
    fn headers_join_values_and_match_patterns() {
        let policy = AuthzPolicy::from_json(POLICY).unwrap();
        let other = peer(Some("CN=other"), &[]);
        let mut md = Metadata::new();
        md.append("token", "abc").unwrap();
        assert!(policy.evaluate("/a.B/GetImage", &md, &other).allowed);
        assert!(!policy.evaluate("/a.B/GetImages", &md, &other).allowed);
        // Two values match as "abc,def": neither "abc" exactly nor "x*".
        md.append("token", "def").unwrap();
        assert!(!policy.evaluate("/a.B/GetImage", &md, &other).allowed);
        let mut md = Metadata::new();
        md.append("token", "xyz").unwrap();
        assert!(policy.evaluate("/a.B/GetImage", &md, &other).allowed);
    }

    #[test]
    fn principals_need_tls_and_empty_matches_no_certificate() {
        let policy = AuthzPolicy::from_json(POLICY).unwrap();
        let none = Metadata::new();
        let health = "/grpc.health.v1.Health/Check";
        let anonymous = peer(None, &[]);
        assert!(policy.evaluate(health, &none, &anonymous).allowed);
        let plaintext = Peer::default();
        assert!(!policy.evaluate(health, &none, &plaintext).allowed);
        // A certificate holder is not "": its subject is not empty.
        assert!(
            !policy
                .evaluate(health, &none, &peer(Some("CN=x"), &[]))
                .allowed
        );
        let any = AuthzPolicy::from_json(
            r#"{"name": "p", "allow_rules": [{"name": "all", "source": {"principals": ["*"]}}]}"#,
        )
        .unwrap();
        assert!(
            any.evaluate(health, &none, &peer(Some("CN=x"), &[]))
                .allowed
        );
        assert!(!any.evaluate(health, &none, &anonymous).allowed);
        let dns = Peer {
            dns_sans: vec!["client.example".into()],
            ..peer(Some("CN=x"), &[])
        };
        let by_dns = AuthzPolicy::from_json(
            r#"{"name": "p", "allow_rules": [{"name": "d", "source": {"principals": ["*.example"]}}]}"#,
        )
        .unwrap();
        assert!(by_dns.evaluate(health, &none, &dns).allowed);
    }

    #[test]
    fn bad_policies_are_refused_with_a_reason() {
        let cases = [
            ("{", "valid"),
            (r#"{"name": "p"}"#, "allow_rules"),
            (
                r#"{"name": "p", "allow_rules": [], "alow_rules": []}"#,
                "alow_rules",
            ),
            (r#"{"name": "", "allow_rules": []}"#, "name"),
            (r#"{"name": "p", "allow_rules": [{"source": {}}]}"#, "name"),
            (
                r#"{"name": "p", "allow_rules": [{"name": "r", "request": {"headers": [{"key": ":path", "values": ["x"]}]}}]}"#,
                ":path",
            ),
            (
                r#"{"name": "p", "allow_rules": [{"name": "r", "request": {"headers": [{"key": "grpc-timeout", "values": ["1S"]}]}}]}"#,
                "grpc-timeout",
            ),
            (
                r#"{"name": "p", "deny_rules": [{"name": "r", "request": {"headers": [{"key": "Host", "values": ["x"]}]}}], "allow_rules": []}"#,
                "deny_rules[0]",
            ),
            (
                r#"{"name": "p", "allow_rules": [{"name": "r", "request": {"headers": [{"key": "a", "values": []}]}}]}"#,
                "no values",
            ),
            (
                r#"{"name": "p", "allow_rules": [{"name": "r", "source": {"principals": "x"}}]}"#,
                "sequence",
            ),
        ];
        for (text, needle) in cases {
            let err = AuthzPolicy::from_json(text).unwrap_err();
            let chain = crate::grpc::error::error_chain(&err);
            assert!(chain.contains(needle), "{text}: {chain}");
        }
    }

    #[test]
    fn a_policy_with_no_allow_rule_denies_everything() {
        let policy = AuthzPolicy::from_json(r#"{"name": "closed", "allow_rules": []}"#).unwrap();
        let d = policy.evaluate("/a.B/C", &Metadata::new(), &peer(Some("CN=x"), &[]));
        assert_eq!((d.allowed, d.rule, d.policy), (false, None, "closed"));
    }
}
