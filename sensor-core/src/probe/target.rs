//! `HOST[:PORT]` targets and `http://HOST:PORT` proxies. Pure.

use std::{fmt, net::IpAddr, str::FromStr};

/// A server to check: a name or an address, and a port (443 by default).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    pub host: String,
    pub port: u16,
}

/// A bad target or proxy.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{input:?}: {reason}")]
pub struct TargetError {
    pub input: String,
    pub reason: &'static str,
}

impl Target {
    /// The host when it is a name, not an address.
    pub fn name(&self) -> Option<&str> {
        self.ip().is_none().then_some(self.host.as_str())
    }

    pub fn ip(&self) -> Option<IpAddr> {
        self.host.parse().ok()
    }

    /// `host:port`, with brackets around an IPv6 address, as CONNECT wants it.
    pub fn authority(&self) -> String {
        match self.ip() {
            Some(IpAddr::V6(v6)) => format!("[{v6}]:{}", self.port),
            _ => format!("{}:{}", self.host, self.port),
        }
    }

    /// Parse `HOST`, `HOST:PORT`, `IPv6`, `[IPv6]` or `[IPv6]:PORT`, with `default_port`.
    pub fn parse_with_port(input: &str, default_port: u16) -> Result<Self, TargetError> {
        let err = |reason| TargetError {
            input: input.to_owned(),
            reason,
        };
        let s = input.trim();
        if s.is_empty() {
            return Err(err("empty"));
        }
        if s.contains("://") {
            return Err(err("give a host, not a URL (e.g. example.com:443)"));
        }
        let (host, port) = if let Some(rest) = s.strip_prefix('[') {
            let (h, after) = rest.split_once(']').ok_or_else(|| err("unclosed '['"))?;
            let port = match after {
                "" => None,
                p => Some(
                    p.strip_prefix(':')
                        .ok_or_else(|| err("expected :PORT after ']'"))?,
                ),
            };
            (h, port)
        } else if s.parse::<IpAddr>().is_ok() {
            (s, None)
        } else {
            match s.rsplit_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (s, None),
            }
        };
        let port = match port {
            Some(p) => p
                .parse::<u16>()
                .ok()
                .filter(|p| *p != 0)
                .ok_or_else(|| err("bad port"))?,
            None => default_port,
        };
        if host.is_empty() {
            return Err(err("no host"));
        }
        if host.starts_with('[') || host.contains(['/', ' ', '@']) {
            return Err(err("bad host"));
        }
        Ok(Self {
            host: host.trim_end_matches('.').to_ascii_lowercase(),
            port,
        })
    }
}

impl FromStr for Target {
    type Err = TargetError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse_with_port(s, 443)
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.authority())
    }
}

/// An HTTP proxy that tunnels with CONNECT.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Proxy {
    pub host: String,
    pub port: u16,
}

impl FromStr for Proxy {
    type Err = TargetError;
    /// `http://host:port`, `host:port` (port 3128 by default, as squid's).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bare = s.trim().trim_end_matches('/');
        let bare = match bare.split_once("://") {
            Some(("http", rest)) => rest,
            Some(_) => {
                return Err(TargetError {
                    input: s.to_owned(),
                    reason: "only http:// proxies (CONNECT) are supported",
                });
            }
            None => bare,
        };
        if bare.contains('@') {
            return Err(TargetError {
                input: s.to_owned(),
                reason: "proxy credentials are not supported",
            });
        }
        let t = Target::parse_with_port(bare, 3128)?;
        Ok(Self {
            host: t.host,
            port: t.port,
        })
    }
}

impl fmt::Display for Proxy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}",
            Target {
                host: self.host.clone(),
                port: self.port
            }
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets() {
        let t: Target = "Example.COM.".parse().unwrap();
        assert_eq!((t.host.as_str(), t.port), ("example.com", 443));
        assert_eq!(t.name(), Some("example.com"));
        let t: Target = "example.com:8443".parse().unwrap();
        assert_eq!(t.port, 8443);
        let t: Target = "127.0.0.1:4433".parse().unwrap();
        assert_eq!(t.ip(), Some("127.0.0.1".parse().unwrap()));
        assert_eq!(t.name(), None);
        let t: Target = "::1".parse().unwrap();
        assert_eq!((t.host.as_str(), t.port), ("::1", 443));
        let t: Target = "[::1]:8443".parse().unwrap();
        assert_eq!(t.authority(), "[::1]:8443");
        for bad in [
            "",
            "https://example.com",
            "example.com:0",
            "example.com:x",
            "[::1",
            ":443",
            "a b",
        ] {
            assert!(bad.parse::<Target>().is_err(), "{bad}");
        }
    }

    #[test]
    fn proxies() {
        let p: Proxy = "http://proxy.corp:8080/".parse().unwrap();
        assert_eq!((p.host.as_str(), p.port), ("proxy.corp", 8080));
        let p: Proxy = "10.0.0.1".parse().unwrap();
        assert_eq!(p.port, 3128);
        assert!("socks5://x:1080".parse::<Proxy>().is_err());
        assert!("http://user:pw@x:1".parse::<Proxy>().is_err());
    }
}
