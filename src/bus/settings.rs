//! The bus's settings: in this process or shared through Redis, and this node's role. Declared
//! here once each (see [`crate::settings`]); `server` builds the bus and decides what to run
//! from them.

use crate::settings::{Invalid, settings};

settings! {
    /// Where quotes travel between feeds and sessions, and what this node runs.
    pub struct BusSettings, args BusArgs {
        /// `memory` (feeds and sessions in this process), `redis://HOST:PORT[/DB]` (one Redis),
        /// or `redis+cluster://HOST:PORT,HOST:PORT,...` (a Redis Cluster, DB 0).
        bus: String = "memory".to_string(), env "TICKERFEED_BUS";
        /// `all` (feeds and clients), `feed` (feeds only: publishes to the bus, serves /api,
        /// /metrics and /readyz) or `gateway` (clients only: takes quotes from the bus). `feed`
        /// and `gateway` need a Redis bus.
        role: String = "all".to_string(), env "TICKERFEED_ROLE";
        /// Prefix of every Redis key and channel (several deployments can share one Redis).
        bus_prefix: String = "tickerfeed".to_string(), env "TICKERFEED_BUS_PREFIX";
    }
    check = check_bus;
}

/// What `--bus` names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Backend {
    /// The in-process bus only.
    Memory,
    /// One Redis: its URL, as the `redis` crate takes it.
    Redis(String),
    /// A Redis Cluster: the seed nodes' URLs.
    Cluster(Vec<String>),
}

/// What this node runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Feeds and client sessions.
    All,
    /// Feeds only.
    Feed,
    /// Client sessions only.
    Gateway,
}

impl Role {
    /// Whether this node runs the configured feeds.
    pub fn runs_feeds(self) -> bool {
        self != Role::Gateway
    }

    /// Whether this node serves client sessions (`/ws`, `/sse`, `/socket.io/`).
    pub fn serves_clients(self) -> bool {
        self != Role::Feed
    }
}

impl BusSettings {
    /// The backend `bus` names (checked when the settings were resolved).
    pub fn backend(&self) -> Backend {
        parse_backend(&self.bus).expect("bus was checked when the settings were resolved")
    }

    /// The role `role` names (checked when the settings were resolved).
    pub fn role(&self) -> Role {
        parse_role(&self.role).expect("role was checked when the settings were resolved")
    }
}

fn check_bus(settings: &BusSettings) -> Result<(), Invalid> {
    let backend = parse_backend(&settings.bus)?;
    let role = parse_role(&settings.role)?;
    if backend == Backend::Memory && role != Role::All {
        return Err(Invalid::new("role", format!("'{}' needs a shared bus: give --bus redis://HOST:PORT or redis+cluster://HOST:PORT,...", settings.role)));
    }
    let prefix = &settings.bus_prefix;
    if prefix.is_empty() || prefix.len() > 64 || !prefix.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.')) {
        return Err(Invalid::new("bus_prefix", format!("'{prefix}' must be 1 to 64 letters, digits, '_', '-' or '.'")));
    }
    Ok(())
}

fn parse_role(text: &str) -> Result<Role, Invalid> {
    match text {
        "all" => Ok(Role::All),
        "feed" => Ok(Role::Feed),
        "gateway" => Ok(Role::Gateway),
        other => Err(Invalid::new("role", format!("'{other}' is not a role: all, feed or gateway"))),
    }
}

fn parse_backend(text: &str) -> Result<Backend, Invalid> {
    let bad = |why: &str| Invalid::new("bus", format!("'{text}' {why}: memory, redis://HOST:PORT[/DB] or redis+cluster://HOST:PORT,HOST:PORT"));
    if text == "memory" {
        return Ok(Backend::Memory);
    }
    if let Some(nodes) = text.strip_prefix("redis+cluster://") {
        let nodes: Vec<String> = nodes.split(',').map(str::trim).filter(|n| !n.is_empty()).map(|n| format!("redis://{n}")).collect();
        if nodes.is_empty() {
            return Err(bad("names no node"));
        }
        for node in &nodes {
            redis::IntoConnectionInfo::into_connection_info(node.as_str()).map_err(|e| bad(&format!("has a bad node {node} ({e})")))?;
        }
        return Ok(Backend::Cluster(nodes));
    }
    if text.starts_with("redis://") {
        redis::IntoConnectionInfo::into_connection_info(text).map_err(|e| bad(&format!("is not a Redis URL ({e})")))?;
        return Ok(Backend::Redis(text.to_string()));
    }
    Err(bad("is not a bus"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(bus: &str, role: &str) -> BusSettings {
        BusSettings { bus: bus.into(), role: role.into(), ..BusSettings::default() }
    }

    #[test]
    fn backends_and_roles_parse_and_refusals_name_the_key() {
        assert_eq!(BusSettings::default().backend(), Backend::Memory);
        assert_eq!(BusSettings::default().role(), Role::All);
        assert_eq!(parse_backend("redis://127.0.0.1:6379/2").unwrap(), Backend::Redis("redis://127.0.0.1:6379/2".into()));
        assert_eq!(
            parse_backend("redis+cluster://127.0.0.1:7000, 127.0.0.1:7001").unwrap(),
            Backend::Cluster(vec!["redis://127.0.0.1:7000".into(), "redis://127.0.0.1:7001".into()])
        );
        assert_eq!(parse_backend("kafka://x").unwrap_err().key, "bus");
        assert_eq!(parse_backend("redis+cluster://").unwrap_err().key, "bus");
        assert_eq!(check_bus(&settings("memory", "gateway")).unwrap_err().key, "role");
        assert_eq!(check_bus(&settings("redis://127.0.0.1:6379", "feeder")).unwrap_err().key, "role");
        assert!(check_bus(&settings("redis://127.0.0.1:6379", "gateway")).is_ok());
        let bad_prefix = BusSettings { bus_prefix: "a b".into(), ..BusSettings::default() };
        assert_eq!(check_bus(&bad_prefix).unwrap_err().key, "bus_prefix");
    }
}
