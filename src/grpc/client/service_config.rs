//! The service config of gRFC A6 and `service_config.md`, from JSON: the balancer, per-method
//! timeouts, `waitForReady` and retry policies, retry throttling, and the health service.
//!
//! Every field is checked when the channel is made; an error names the field by its JSON path
//! (`methodConfig[0].retryPolicy.maxAttempts`).

use std::{collections::HashMap, sync::Arc, time::Duration};

use serde_json::{Map, Value};

use crate::grpc::{error::Error, status::Code};

/// A load-balancing policy.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum LbPolicy {
    /// One connection, to the first address that answers; the gRPC default.
    #[default]
    PickFirst,
    /// A connection to every address, calls spread over the READY ones in turn.
    RoundRobin,
}

impl LbPolicy {
    /// The policy with this service-config name (`pick_first`, `round_robin`).
    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "pick_first" => Some(Self::PickFirst),
            "round_robin" => Some(Self::RoundRobin),
            _ => None,
        }
    }
}

/// A parsed and checked service config.
///
/// # Examples
///
/// ```
/// use satellite::grpc::ServiceConfig;
///
/// let config = ServiceConfig::from_json(r#"{
///   "loadBalancingConfig": [{"round_robin": {}}],
///   "methodConfig": [{
///     "name": [{"service": "satellite.Satellite", "method": "GetImage"}],
///     "timeout": "1.5s",
///     "retryPolicy": {"maxAttempts": 4, "initialBackoff": "0.1s", "maxBackoff": "1s",
///                     "backoffMultiplier": 2, "retryableStatusCodes": ["UNAVAILABLE"]}
///   }]
/// }"#)?;
/// assert!(ServiceConfig::from_json(r#"{"methodConfig": [{"timeout": "soon"}]}"#)
///     .unwrap_err()
///     .to_string()
///     .contains("methodConfig[0].timeout"));
/// # Ok::<(), satellite::grpc::Error>(())
/// ```
#[derive(Clone, Debug, Default)]
pub struct ServiceConfig {
    pub(crate) lb_policy: Option<LbPolicy>,
    pub(crate) health_service: Option<String>,
    pub(crate) throttling: Option<(f64, f64)>,
    /// By `/service/method`, then `/service/`, then `""` for the default.
    methods: HashMap<String, Arc<MethodConfig>>,
}

/// What the service config says about one method.
#[derive(Clone, Debug, Default)]
pub(crate) struct MethodConfig {
    pub(crate) timeout: Option<Duration>,
    pub(crate) wait_for_ready: Option<bool>,
    pub(crate) retry: Option<RetryPolicy>,
}

/// A retry policy (gRFC A6).
#[derive(Clone, Debug)]
pub(crate) struct RetryPolicy {
    pub(crate) max_attempts: u32,
    pub(crate) initial_backoff: Duration,
    pub(crate) max_backoff: Duration,
    pub(crate) multiplier: f64,
    pub(crate) retryable: Vec<Code>,
}

/// A6 caps attempts at 5 whatever the config asks; larger values are lowered, not refused.
const MAX_ATTEMPTS_CAP: u32 = 5;

impl ServiceConfig {
    /// Parses and checks a service config in its JSON form.
    ///
    /// # Errors
    /// A configuration error naming the first field that is missing, of the wrong type, or out
    /// of range.
    pub fn from_json(json: &str) -> Result<Self, Error> {
        let root: Value = serde_json::from_str(json)
            .map_err(|e| Error::config(format!("service config is not valid JSON: {e}")))?;
        let root = object(&root, "service config")?;
        let mut config = Self::default();
        if let Some(list) = root.get("loadBalancingConfig") {
            config.lb_policy = Some(lb_config(list)?);
        } else if let Some(name) = root.get("loadBalancingPolicy") {
            let name = string(name, "loadBalancingPolicy")?;
            let policy = LbPolicy::from_name(&name.to_ascii_lowercase()).ok_or_else(|| {
                field_error("loadBalancingPolicy", "must be pick_first or round_robin")
            })?;
            config.lb_policy = Some(policy);
        }
        if let Some(methods) = root.get("methodConfig") {
            let methods = array(methods, "methodConfig")?;
            for (i, entry) in methods.iter().enumerate() {
                let at = format!("methodConfig[{i}]");
                let (names, method) = method_config(entry, &at)?;
                let method = Arc::new(method);
                for name in names {
                    // service_config.md: a name given twice is an error.
                    if config
                        .methods
                        .insert(name.clone(), method.clone())
                        .is_some()
                    {
                        return Err(field_error(&at, &format!("name {name:?} appears twice")));
                    }
                }
            }
        }
        if let Some(t) = root.get("retryThrottling") {
            let t = object(t, "retryThrottling")?;
            let max = number(t.get("maxTokens"), "retryThrottling.maxTokens")?;
            let ratio = number(t.get("tokenRatio"), "retryThrottling.tokenRatio")?;
            if !(max > 0.0 && max <= 1000.0) {
                return Err(field_error(
                    "retryThrottling.maxTokens",
                    "must be in (0, 1000]",
                ));
            }
            if ratio <= 0.0 {
                return Err(field_error(
                    "retryThrottling.tokenRatio",
                    "must be greater than 0",
                ));
            }
            // A6: tokenRatio is kept to three decimal places.
            config.throttling = Some((max, (ratio * 1000.0).trunc() / 1000.0));
        }
        if let Some(h) = root.get("healthCheckConfig") {
            let h = object(h, "healthCheckConfig")?;
            if let Some(name) = h.get("serviceName") {
                config.health_service = Some(string(name, "healthCheckConfig.serviceName")?);
            }
        }
        Ok(config)
    }

    /// The balancer the config names, if any.
    pub fn lb_policy(&self) -> Option<LbPolicy> {
        self.lb_policy
    }

    /// The config of the method at `path` (`/service/method`): its own, its service's, or the
    /// default.
    pub(crate) fn method(&self, path: &str) -> Option<&Arc<MethodConfig>> {
        if self.methods.is_empty() {
            return None;
        }
        let service = path.rfind('/').map_or(path, |i| &path[..=i]);
        self.methods
            .get(path)
            .or_else(|| self.methods.get(service))
            .or_else(|| self.methods.get(""))
    }
}

fn lb_config(list: &Value) -> Result<LbPolicy, Error> {
    let list = array(list, "loadBalancingConfig")?;
    // service_config.md: the first policy this client supports wins; unknown ones are skipped.
    for (i, entry) in list.iter().enumerate() {
        let entry = object(entry, &format!("loadBalancingConfig[{i}]"))?;
        if entry.len() != 1 {
            return Err(field_error(
                &format!("loadBalancingConfig[{i}]"),
                "must hold exactly one policy",
            ));
        }
        let (name, _) = entry.iter().next().expect("one entry");
        if let Some(policy) = LbPolicy::from_name(name) {
            return Ok(policy);
        }
    }
    Err(field_error(
        "loadBalancingConfig",
        "names no supported policy (pick_first, round_robin)",
    ))
}

fn method_config(entry: &Value, at: &str) -> Result<(Vec<String>, MethodConfig), Error> {
    let entry = object(entry, at)?;
    let mut names = Vec::new();
    if let Some(list) = entry.get("name") {
        for (j, name) in array(list, &format!("{at}.name"))?.iter().enumerate() {
            let here = format!("{at}.name[{j}]");
            let name = object(name, &here)?;
            let service = match name.get("service") {
                Some(s) => string(s, &format!("{here}.service"))?,
                None => String::new(),
            };
            let method = match name.get("method") {
                Some(m) => string(m, &format!("{here}.method"))?,
                None => String::new(),
            };
            names.push(match (service.is_empty(), method.is_empty()) {
                (true, true) => String::new(),
                (true, false) => {
                    return Err(field_error(&here, "a method needs its service"));
                }
                (false, true) => format!("/{service}/"),
                (false, false) => format!("/{service}/{method}"),
            });
        }
    }
    let mut config = MethodConfig::default();
    if let Some(t) = entry.get("timeout") {
        config.timeout = Some(duration(t, &format!("{at}.timeout"))?);
    }
    if let Some(w) = entry.get("waitForReady") {
        config.wait_for_ready = Some(
            w.as_bool()
                .ok_or_else(|| field_error(&format!("{at}.waitForReady"), "must be a boolean"))?,
        );
    }
    if let Some(policy) = entry.get("retryPolicy") {
        config.retry = Some(retry_policy(policy, &format!("{at}.retryPolicy"))?);
    }
    Ok((names, config))
}

fn retry_policy(policy: &Value, at: &str) -> Result<RetryPolicy, Error> {
    let policy = object(policy, at)?;
    let field = |name: &str| format!("{at}.{name}");
    let attempts = number(policy.get("maxAttempts"), &field("maxAttempts"))?;
    if attempts.fract() != 0.0 || attempts < 2.0 {
        return Err(field_error(
            &field("maxAttempts"),
            "must be an integer of at least 2",
        ));
    }
    let required = |name: &str| {
        policy
            .get(name)
            .ok_or_else(|| field_error(&field(name), "is required"))
    };
    let initial_backoff = duration(required("initialBackoff")?, &field("initialBackoff"))?;
    let max_backoff = duration(required("maxBackoff")?, &field("maxBackoff"))?;
    for (value, name) in [
        (initial_backoff, "initialBackoff"),
        (max_backoff, "maxBackoff"),
    ] {
        if value.is_zero() {
            return Err(field_error(&field(name), "must be greater than 0"));
        }
    }
    let multiplier = number(policy.get("backoffMultiplier"), &field("backoffMultiplier"))?;
    if multiplier <= 0.0 {
        return Err(field_error(
            &field("backoffMultiplier"),
            "must be greater than 0",
        ));
    }
    let codes_at = field("retryableStatusCodes");
    let codes = array(required("retryableStatusCodes")?, &codes_at)?;
    if codes.is_empty() {
        return Err(field_error(&codes_at, "must name at least one code"));
    }
    let mut retryable = Vec::new();
    for (k, code) in codes.iter().enumerate() {
        let here = format!("{codes_at}[{k}]");
        let code = match code {
            Value::String(name) => Code::from_name(&name.to_ascii_uppercase()),
            Value::Number(n) => n
                .as_i64()
                .filter(|n| (0..=16).contains(n))
                .map(|n| Code::from_i32(n as i32)),
            _ => None,
        }
        .ok_or_else(|| field_error(&here, "is not a status code name or number"))?;
        if code == Code::Ok {
            return Err(field_error(&here, "OK cannot be retried"));
        }
        retryable.push(code);
    }
    Ok(RetryPolicy {
        max_attempts: (attempts as u32).min(MAX_ATTEMPTS_CAP),
        initial_backoff,
        max_backoff,
        multiplier,
        retryable,
    })
}

fn field_error(at: &str, why: &str) -> Error {
    Error::config(format!("service config field {at} {why}"))
}

fn object<'a>(v: &'a Value, at: &str) -> Result<&'a Map<String, Value>, Error> {
    v.as_object()
        .ok_or_else(|| field_error(at, "must be a JSON object"))
}

fn array<'a>(v: &'a Value, at: &str) -> Result<&'a Vec<Value>, Error> {
    v.as_array()
        .ok_or_else(|| field_error(at, "must be a JSON array"))
}

fn string(v: &Value, at: &str) -> Result<String, Error> {
    v.as_str()
        .map(str::to_owned)
        .ok_or_else(|| field_error(at, "must be a string"))
}

fn number(v: Option<&Value>, at: &str) -> Result<f64, Error> {
    let v = v.ok_or_else(|| field_error(at, "is required"))?;
    v.as_f64()
        .filter(|n| n.is_finite())
        .ok_or_else(|| field_error(at, "must be a number"))
}

/// A protobuf JSON duration: decimal seconds with an `s` suffix (`"1.5s"`, `"0.100s"`).
fn duration(v: &Value, at: &str) -> Result<Duration, Error> {
    let bad = || field_error(at, "must be a duration such as \"1.5s\"");
    let text = v.as_str().ok_or_else(bad)?;
    let secs = text.strip_suffix('s').ok_or_else(bad)?;
    if secs.is_empty() || secs.starts_with(['-', '+']) || !secs.bytes().any(|b| b.is_ascii_digit())
    {
        return Err(bad());
    }
    let secs: f64 = secs.parse().map_err(|_| bad())?;
    Duration::try_from_secs_f64(secs).map_err(|_| bad())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn error_of(json: &str) -> String {
        ServiceConfig::from_json(json).unwrap_err().to_string()
    }

    #[test]
    fn reads_the_protocol_notes_example() {
        let config = ServiceConfig::from_json(
            r#"{"loadBalancingConfig": [{"weighted_target": {}}, {"round_robin": {}}],
             "methodConfig": [{"name": [{"service": "satellite.Satellite", "method": "GetImage"}],
               "timeout": "1.5s", "waitForReady": true,
               "retryPolicy": {"maxAttempts": 9, "initialBackoff": "0.1s", "maxBackoff": "1s",
                               "backoffMultiplier": 2, "retryableStatusCodes": ["UNAVAILABLE", 10]}},
               {"name": [{"service": "satellite.Satellite"}], "timeout": "3s"},
               {"name": [{}], "timeout": "7s"}],
             "retryThrottling": {"maxTokens": 10, "tokenRatio": 0.1234},
             "healthCheckConfig": {"serviceName": "satellite.Satellite"}}"#,
        )
        .unwrap();
        assert_eq!(config.lb_policy, Some(LbPolicy::RoundRobin));
        assert_eq!(
            config.health_service.as_deref(),
            Some("satellite.Satellite")
        );
        assert_eq!(config.throttling, Some((10.0, 0.123)));
        let m = config.method("/satellite.Satellite/GetImage").unwrap();
        assert_eq!(m.timeout, Some(Duration::from_millis(1500)));
        assert_eq!(m.wait_for_ready, Some(true));
        let retry = m.retry.as_ref().unwrap();
        assert_eq!(retry.max_attempts, 5, "capped");
        assert_eq!(retry.retryable, [Code::Unavailable, Code::Aborted]);
        let service = config.method("/satellite.Satellite/GetImages").unwrap();
        assert_eq!(service.timeout, Some(Duration::from_secs(3)));
        let other = config.method("/other.Service/X").unwrap();
        assert_eq!(other.timeout, Some(Duration::from_secs(7)));
    }

    #[test]
    fn names_the_bad_field() {
        let retry = |policy: &str| {
            format!(
                r#"{{"methodConfig": [{{"name": [{{"service": "s"}}], "retryPolicy": {policy}}}]}}"#
            )
        };
        for (json, field) in [
            ("[1]", "service config must be a JSON object"),
            ("{", "not valid JSON"),
            (
                r#"{"loadBalancingConfig": [{"grpclb": {}}]}"#,
                "loadBalancingConfig names no",
            ),
            (
                r#"{"loadBalancingPolicy": "random"}"#,
                "loadBalancingPolicy",
            ),
            (
                r#"{"methodConfig": {}}"#,
                "methodConfig must be a JSON array",
            ),
            (
                r#"{"methodConfig": [{"timeout": "-1s"}]}"#,
                "methodConfig[0].timeout",
            ),
            (
                r#"{"methodConfig": [{"timeout": 5}]}"#,
                "methodConfig[0].timeout",
            ),
            (
                r#"{"methodConfig": [{"waitForReady": "yes"}]}"#,
                "methodConfig[0].waitForReady",
            ),
            (
                r#"{"methodConfig": [{"name": [{"method": "M"}]}]}"#,
                "methodConfig[0].name[0] a method needs its service",
            ),
            (
                r#"{"methodConfig": [{"name": [{"service": "s"}]}, {"name": [{"service": "s"}]}]}"#,
                "methodConfig[1] name \"/s/\" appears twice",
            ),
            (
                &retry(r#"{"maxAttempts": 1}"#),
                "retryPolicy.maxAttempts must be an integer",
            ),
            (
                &retry(r#"{"maxAttempts": 2}"#),
                "retryPolicy.initialBackoff is required",
            ),
            (
                &retry(r#"{"maxAttempts": 2, "initialBackoff": "0s", "maxBackoff": "1s"}"#),
                "retryPolicy.initialBackoff must be greater than 0",
            ),
            (
                &retry(r#"{"maxAttempts": 2, "initialBackoff": "1s", "maxBackoff": "1s"}"#),
                "retryPolicy.backoffMultiplier is required",
            ),
            (
                &retry(
                    r#"{"maxAttempts": 2, "initialBackoff": "1s", "maxBackoff": "1s",
                       "backoffMultiplier": 2, "retryableStatusCodes": ["NOPE"]}"#,
                ),
                "retryPolicy.retryableStatusCodes[0] is not a status code",
            ),
            (
                &retry(
                    r#"{"maxAttempts": 2, "initialBackoff": "1s", "maxBackoff": "1s",
                       "backoffMultiplier": 2, "retryableStatusCodes": []}"#,
                ),
                "retryPolicy.retryableStatusCodes must name at least one",
            ),
            (
                r#"{"retryThrottling": {"maxTokens": 0, "tokenRatio": 1}}"#,
                "retryThrottling.maxTokens",
            ),
            (
                r#"{"retryThrottling": {"maxTokens": 5}}"#,
                "retryThrottling.tokenRatio is required",
            ),
            (
                r#"{"healthCheckConfig": {"serviceName": 1}}"#,
                "healthCheckConfig.serviceName",
            ),
        ] {
            let e = error_of(json);
            assert!(e.contains(field), "{json}: {e}");
        }
    }
}
