//! Which web pages may open a session: the `Origin` a browser sends with a WebSocket upgrade,
//! an `EventSource` or a Socket.IO request, checked against `--allowed-origins`.
//!
//! Browsers apply no same-origin rule to WebSocket upgrades, so without this check any page a
//! visitor opens could read the feed with the visitor's network position (cross-site WebSocket
//! hijacking). An entry is `self` (the origin the request was addressed to: its `Host`, so the
//! server's own dashboard, whatever name it is reached by), `*` (any origin), or an origin
//! `scheme://host[:port]` whose port may be `*`. A request without `Origin` is not from a
//! browser page and is not judged here (tokens are what stop non-browser clients).
//! Invariant: [`OriginPolicy::allows`] is the one answer for every transport, and the Socket.IO
//! CORS headers name an origin only when it allows it.

/// The default: the server's own origin and local pages on any port, over http or https.
pub(crate) const DEFAULT: &str = "self,http://localhost:*,https://localhost:*,http://127.0.0.1:*,https://127.0.0.1:*,http://[::1]:*,https://[::1]:*";

/// Origins listed, at most (a list this long is a configuration mistake).
const MAX_ENTRIES: usize = 256;

/// One allowed origin.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Entry {
    /// The request's own origin (its `Host`).
    OwnOrigin,
    /// Every origin.
    Any,
    /// `scheme://host` with this port (`None`: any port).
    Origin { scheme: String, host: String, port: Option<String> },
}

/// The allow-list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct OriginPolicy {
    entries: Vec<Entry>,
}

impl OriginPolicy {
    /// The list in `--allowed-origins`, or why an entry cannot be used (naming it).
    pub(crate) fn parse(list: &str) -> Result<OriginPolicy, String> {
        let entries = list.split(',').map(str::trim).filter(|e| !e.is_empty()).map(parse_entry).collect::<Result<Vec<_>, _>>()?;
        if entries.is_empty() {
            return Err("no origin listed: list 'self', '*' or origins like https://app.example.com".into());
        }
        if entries.len() > MAX_ENTRIES {
            return Err(format!("{} origins listed; at most {MAX_ENTRIES}", entries.len()));
        }
        Ok(OriginPolicy { entries })
    }

    /// Whether a page of `origin` may open a session on a request addressed to `host` (the
    /// request's `Host`), over `https` or not. `None`: the request has no `Origin`.
    pub(crate) fn allows(&self, origin: Option<&str>, host: Option<&str>, https: bool) -> bool {
        let Some(origin) = origin else { return true };
        let parsed = split_origin(origin);
        self.entries.iter().any(|entry| match entry {
            Entry::Any => true,
            Entry::OwnOrigin => {
                let Some((scheme, host_port)) = origin.split_once("://") else { return false };
                // A plain listener also takes its host's https pages: behind a proxy that
                // terminates TLS, the dashboard is an https page and the request comes in as
                // plain HTTP with the same Host. An https listener refuses its host's http
                // pages (a page anyone on the path could have written).
                let scheme_ok = scheme.eq_ignore_ascii_case("https") || (!https && scheme.eq_ignore_ascii_case("http"));
                host.is_some_and(|host| scheme_ok && host_port.eq_ignore_ascii_case(host))
            }
            Entry::Origin { scheme, host, port } => parsed.as_ref().is_some_and(|(s, h, p)| {
                s.eq_ignore_ascii_case(scheme) && h.eq_ignore_ascii_case(host) && port.as_ref().is_none_or(|port| p.as_deref().unwrap_or(default_port(s)) == port)
            }),
        })
    }
}

fn default_port(scheme: &str) -> &'static str {
    if scheme.eq_ignore_ascii_case("https") { "443" } else { "80" }
}

/// `scheme://host[:port]` → its parts (an IPv6 host keeps its brackets); `None` for anything
/// else (`null`, a path, no scheme).
fn split_origin(origin: &str) -> Option<(String, String, Option<String>)> {
    let (scheme, rest) = origin.split_once("://")?;
    if scheme.is_empty() || rest.is_empty() || rest.contains(['/', '?', '#', '@', ' ']) {
        return None;
    }
    let (host, port) = match rest.rfind(':') {
        // An IPv6 literal's last ':' is inside its brackets.
        Some(i) if !rest[i..].contains(']') => (&rest[..i], Some(rest[i + 1..].to_string())),
        _ => (rest, None),
    };
    if host.is_empty() || port.as_deref() == Some("") {
        return None;
    }
    Some((scheme.to_ascii_lowercase(), host.to_ascii_lowercase(), port))
}

fn parse_entry(text: &str) -> Result<Entry, String> {
    match text {
        "self" => return Ok(Entry::OwnOrigin),
        "*" => return Ok(Entry::Any),
        _ => {}
    }
    let bad = |why: &str| format!("'{}' {why}: list 'self', '*' or origins like https://app.example.com, http://localhost:*", crate::api_error::excerpt(text, 64));
    let (scheme, host, port) = split_origin(text).ok_or_else(|| bad("is not an origin (scheme://host[:port], no path)"))?;
    if scheme != "http" && scheme != "https" {
        return Err(bad("does not use http or https"));
    }
    let port = match port.as_deref() {
        None => Some(default_port(&scheme).to_string()),
        Some("*") => None,
        Some(digits) if digits.parse::<u16>().is_ok() => Some(digits.to_string()),
        Some(_) => return Err(bad("has a port that is neither a number nor '*'")),
    };
    Ok(Entry::Origin { scheme, host, port })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_allows_the_own_origin_and_local_pages_only() {
        let policy = OriginPolicy::parse(DEFAULT).unwrap();
        assert!(policy.allows(None, Some("feed.example.com"), false), "no Origin: not a browser page");
        assert!(policy.allows(Some("http://feed.example.com"), Some("feed.example.com"), false), "the dashboard it serves");
        assert!(policy.allows(Some("https://feed.example.com:8443"), Some("feed.example.com:8443"), true));
        assert!(!policy.allows(Some("http://feed.example.com:8443"), Some("feed.example.com:8443"), true), "an https listener refuses its host's http pages");
        assert!(policy.allows(Some("https://feed.example.com"), Some("feed.example.com"), false), "behind a TLS-terminating proxy the page is https, the request plain");
        assert!(!policy.allows(Some("https://feed.example.com:8443"), Some("feed.example.com"), false), "the port is part of the origin");
        assert!(policy.allows(Some("http://localhost:3000"), Some("127.0.0.1:8080"), false));
        assert!(policy.allows(Some("http://127.0.0.1:5173"), Some("127.0.0.1:8080"), false));
        assert!(policy.allows(Some("https://[::1]:1"), Some("127.0.0.1:8080"), false));
        assert!(!policy.allows(Some("https://evil.example"), Some("127.0.0.1:8080"), false));
        assert!(!policy.allows(Some("http://localhost.evil.example:8080"), Some("127.0.0.1:8080"), false));
        assert!(!policy.allows(Some("null"), Some("127.0.0.1:8080"), false));
        assert!(!policy.allows(Some("http://evil.example"), None, false), "no Host: no own origin");
    }

    #[test]
    fn listed_origins_match_scheme_host_and_port() {
        let policy = OriginPolicy::parse("https://app.example.com, http://dev.example.com:*").unwrap();
        assert!(policy.allows(Some("https://app.example.com"), Some("x"), true));
        assert!(policy.allows(Some("https://APP.example.com:443"), Some("x"), true), "default port and case");
        assert!(!policy.allows(Some("https://app.example.com:8443"), Some("x"), true));
        assert!(!policy.allows(Some("http://app.example.com"), Some("x"), true));
        assert!(policy.allows(Some("http://dev.example.com:9000"), Some("x"), true));
        assert!(!policy.allows(Some("http://app.example.com"), Some("app.example.com"), false), "'self' is not listed");
        assert!(OriginPolicy::parse("*").unwrap().allows(Some("null"), None, false));
    }

    #[test]
    fn bad_entries_are_refused_naming_them() {
        for bad in ["ftp://x", "https://x/path", "x", "https://x:port", "https://"] {
            let error = OriginPolicy::parse(bad).unwrap_err();
            assert!(error.contains(bad), "{bad}: {error}");
        }
        assert!(OriginPolicy::parse(" , ").unwrap_err().contains("no origin"));
    }
}
