//! Name resolution: the addresses behind a target, and the target syntax of gRPC's
//! `naming.md` (`dns:///host:port`, `ipv4:`, `ipv6:`, `unix:`, or plain `host:port`).

use std::{
    fmt,
    net::{IpAddr, SocketAddr},
    path::PathBuf,
    sync::Arc,
};

use crate::grpc::{error::Error, intercept::BoxFuture};

/// One address a channel can connect to.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Address {
    /// A TCP address.
    Tcp(SocketAddr),
    /// A Unix domain socket.
    Unix(PathBuf),
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Tcp(addr) => write!(f, "{addr}"),
            Self::Unix(path) => write!(f, "unix:{}", path.display()),
        }
    }
}

/// Turns a target into addresses. The channel asks again when a connection fails or a server
/// sends GOAWAY, never more often than [`Endpoint::min_resolve_interval`]; tests can script
/// one.
///
/// [`Endpoint::min_resolve_interval`]: crate::grpc::Endpoint::min_resolve_interval
///
/// # Examples
///
/// ```
/// use satellite::grpc::{Address, BoxFuture, Resolver};
///
/// #[derive(Debug)]
/// struct Two;
///
/// impl Resolver for Two {
///     fn resolve(&self) -> BoxFuture<'_, std::io::Result<Vec<Address>>> {
///         Box::pin(async {
///             Ok(vec![
///                 Address::Tcp("127.0.0.1:50051".parse().unwrap()),
///                 Address::Tcp("127.0.0.2:50051".parse().unwrap()),
///             ])
///         })
///     }
/// }
/// ```
pub trait Resolver: fmt::Debug + Send + Sync + 'static {
    /// The addresses now, in order of preference (`pick_first` tries them in this order).
    fn resolve(&self) -> BoxFuture<'_, std::io::Result<Vec<Address>>>;
}

/// A fixed list: `ipv4:`, `ipv6:` and `unix:` targets.
#[derive(Debug)]
pub(crate) struct Fixed(pub(crate) Vec<Address>);

impl Resolver for Fixed {
    fn resolve(&self) -> BoxFuture<'_, std::io::Result<Vec<Address>>> {
        Box::pin(async { Ok(self.0.clone()) })
    }
}

/// Every A and AAAA address of a host name, by the system resolver.
#[derive(Debug)]
pub(crate) struct Dns {
    pub(crate) host: String,
    pub(crate) port: u16,
}

impl Resolver for Dns {
    fn resolve(&self) -> BoxFuture<'_, std::io::Result<Vec<Address>>> {
        Box::pin(async {
            let mut found = Vec::new();
            for addr in tokio::net::lookup_host((self.host.as_str(), self.port)).await? {
                let addr = Address::Tcp(addr);
                // getaddrinfo lists an address once per socket type on some systems.
                if !found.contains(&addr) {
                    found.push(addr);
                }
            }
            Ok(found)
        })
    }
}

/// A parsed target: how to find its addresses, and the name the calls carry.
#[derive(Debug, Clone)]
pub(crate) struct Target {
    pub(crate) resolver: Arc<dyn Resolver>,
    /// `:authority` of every call, and the default TLS server name's source.
    pub(crate) authority: String,
}

/// The port when a target gives none, as in gRPC's `naming.md`.
const DEFAULT_PORT: u16 = 443;

impl Target {
    /// Parses `dns:[//authority/]host[:port]`, `ipv4:a[:port][,...]`, `ipv6:[a][:port][,...]`,
    /// `unix:path`, `unix:///abs-path`, or plain `host:port` (resolved as `dns:///host:port`).
    pub(crate) fn parse(target: &str) -> Result<Self, Error> {
        let bad = |why: &str| Error::config(format!("invalid target {target:?}: {why}"));
        if let Some(rest) = target.strip_prefix("dns:") {
            let name = match rest.strip_prefix("//") {
                Some(rest) => match rest.split_once('/') {
                    Some(("", name)) => name,
                    Some(_) => return Err(bad("a DNS server authority is not supported")),
                    None => return Err(bad("expected dns:///host:port")),
                },
                None => rest,
            };
            let (host, port) = host_port(name).ok_or_else(|| bad("expected host:port"))?;
            return Ok(Self::dns(host, port));
        }
        if let Some(list) = target.strip_prefix("ipv4:") {
            return Self::list(target, list, false);
        }
        if let Some(list) = target.strip_prefix("ipv6:") {
            return Self::list(target, list, true);
        }
        if let Some(path) = target.strip_prefix("unix:") {
            // unix:///abs and unix:/abs are both absolute; unix:rel is relative.
            let path = path.strip_prefix("//").unwrap_or(path);
            if path.is_empty() {
                return Err(bad("no socket path"));
            }
            return Ok(Self {
                resolver: Arc::new(Fixed(vec![Address::Unix(PathBuf::from(path))])),
                authority: "localhost".into(),
            });
        }
        let (host, port) = host_port(target)
            .filter(|_| !target.contains('/'))
            .ok_or_else(|| bad("expected host:port or a scheme (dns:, ipv4:, ipv6:, unix:)"))?;
        Ok(Self::dns(host, port))
    }

    /// A target resolved by `resolver`, whose calls carry `authority`.
    pub(crate) fn custom(resolver: Arc<dyn Resolver>, authority: String) -> Self {
        Self {
            resolver,
            authority,
        }
    }

    fn dns(host: &str, port: u16) -> Self {
        let authority = match host.parse::<IpAddr>() {
            Ok(IpAddr::V6(ip)) => format!("[{ip}]:{port}"),
            _ => format!("{host}:{port}"),
        };
        let host = host.to_owned();
        Self {
            resolver: Arc::new(Dns { host, port }),
            authority,
        }
    }

    fn list(target: &str, list: &str, v6: bool) -> Result<Self, Error> {
        let mut addrs = Vec::new();
        for item in list.split(',') {
            let addr = parse_ip_port(item, v6).ok_or_else(|| {
                let family = if v6 { "IPv6" } else { "IPv4" };
                Error::config(format!(
                    "invalid target {target:?}: {item:?} is not an {family} address[:port]"
                ))
            })?;
            addrs.push(Address::Tcp(addr));
        }
        let authority = match addrs.first() {
            Some(Address::Tcp(a)) if v6 => format!("[{}]:{}", a.ip(), a.port()),
            Some(Address::Tcp(a)) => a.to_string(),
            _ => unreachable!("split yields at least one item, each parsed or refused"),
        };
        Ok(Self {
            resolver: Arc::new(Fixed(addrs)),
            authority,
        })
    }

    /// The host part of the authority, brackets removed: the default TLS server name.
    pub(crate) fn host(&self) -> &str {
        let host = self
            .authority
            .rsplit_once(':')
            .map_or(self.authority.as_str(), |(h, _)| h);
        host.trim_start_matches('[').trim_end_matches(']')
    }
}

/// `host:port`, `[v6]:port`, or `host` alone (the default port).
fn host_port(s: &str) -> Option<(&str, u16)> {
    if let Some(rest) = s.strip_prefix('[') {
        let (host, after) = rest.split_once(']')?;
        let port = match after.strip_prefix(':') {
            Some(p) => p.parse().ok()?,
            None if after.is_empty() => DEFAULT_PORT,
            None => return None,
        };
        return Some((host, port));
    }
    match s.rsplit_once(':') {
        // More than one colon without brackets: a bare IPv6 address, no port.
        Some((host, _)) if host.contains(':') => Some((s, DEFAULT_PORT)),
        Some((host, port)) if !host.is_empty() => Some((host, port.parse().ok()?)),
        Some(_) => None,
        None if !s.is_empty() => Some((s, DEFAULT_PORT)),
        None => None,
    }
}

fn parse_ip_port(item: &str, v6: bool) -> Option<SocketAddr> {
    let (host, port) = host_port(item)?;
    let ip: IpAddr = host.parse().ok()?;
    (ip.is_ipv6() == v6).then_some(SocketAddr::new(ip, port))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addrs(target: &str) -> Vec<Address> {
        let t = Target::parse(target).unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(t.resolver.resolve()).unwrap()
    }

    #[test]
    fn parses_every_scheme() {
        let tcp = |s: &str| Address::Tcp(s.parse().unwrap());
        assert_eq!(
            addrs("ipv4:127.0.0.1:1,127.0.0.2:2"),
            [tcp("127.0.0.1:1"), tcp("127.0.0.2:2")]
        );
        assert_eq!(addrs("ipv4:127.0.0.3"), [tcp("127.0.0.3:443")]);
        assert_eq!(
            addrs("ipv6:[::1]:7,[::1]"),
            [tcp("[::1]:7"), tcp("[::1]:443")]
        );
        assert_eq!(
            addrs("unix:///tmp/s.sock"),
            [Address::Unix("/tmp/s.sock".into())]
        );
        assert_eq!(addrs("unix:rel.sock"), [Address::Unix("rel.sock".into())]);
        assert_eq!(addrs("dns:///127.0.0.1:9"), [tcp("127.0.0.1:9")]);
        assert_eq!(addrs("dns:127.0.0.1:9"), [tcp("127.0.0.1:9")]);
        assert_eq!(addrs("127.0.0.1:9"), [tcp("127.0.0.1:9")]);
        assert_eq!(Target::parse("localhost:9").unwrap().host(), "localhost");
        assert_eq!(Target::parse("ipv6:[::1]:7").unwrap().host(), "::1");
        assert_eq!(Target::parse("unix:/x").unwrap().authority, "localhost");
    }

    #[test]
    fn refuses_bad_targets_naming_them() {
        for bad in [
            "ipv4:::1",
            "ipv6:127.0.0.1",
            "ipv4:",
            "ipv4:1.2.3.4:x",
            "dns://8.8.8.8/host:1",
            "unix:",
            "http://host:1",
            ":80",
        ] {
            let e = Target::parse(bad).unwrap_err().to_string();
            assert!(e.contains(bad), "{bad}: {e}");
        }
    }
}
