//! The client configuration: which cluster, as whom, and where its monitors are.
//!
//! ```toml
//! fsid = "6f1c...-..."
//! entity = "client.admin"
//! keyring = "."            # holds ca.crt, client.admin.crt, client.admin.key
//!
//! [[mon]]
//! name = "a"
//! addr = "127.0.0.1:6789"
//! ```
//!
//! `osd_transport = "quic"` makes OSD traffic use QUIC instead of TCP (both with mutual TLS;
//! OSDs listen on both, at the same port).
//!
//! Found, in order: the `--conf` path, `$CAIRN_CONF`, `./cairn-data/client.toml` (what
//! `cairn dev up` writes), `~/.config/cairn/client.toml`. A relative `keyring` is relative
//! to the file.

use std::path::{Path, PathBuf};

use crate::identity::Credentials;
use proto::EntityName;
use serde::{Deserialize, Serialize};
use thiserror::Error;

pub const ENV_CONF: &str = "CAIRN_CONF";
pub const DEV_CONF: &str = "cairn-data/client.toml";
/// Upper bound on the monitors a configuration lists.
pub const MONITORS_MAX: usize = 64;

#[derive(Debug, Error)]
pub enum ConfigError {
    #[error(
        "no client configuration: give --conf, set {ENV_CONF}, or run `cairn dev up` (tried {tried})"
    )]
    NotFound { tried: String },
    #[error("{path}: {reason}")]
    Invalid { path: String, reason: String },
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MonAddr {
    pub name: String,
    pub addr: String,
}

/// The transport to OSDs. TCP by default: it costs a fraction of QUIC's CPU per byte and
/// per request (bench/RESULTS.md), and the OSDs' data path is where that counts.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OsdTransport {
    #[default]
    Tcp,
    Quic,
}

impl OsdTransport {
    fn is_default(&self) -> bool {
        *self == OsdTransport::default()
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientConfig {
    pub fsid: String,
    pub entity: String,
    /// Directory of the CA certificate and this entity's certificate and key.
    pub keyring: String,
    #[serde(rename = "mon")]
    pub mons: Vec<MonAddr>,
    /// How this client (or OSD) reaches OSDs.
    #[serde(default, skip_serializing_if = "OsdTransport::is_default")]
    pub osd_transport: OsdTransport,
    /// Where this configuration was read from (not stored).
    #[serde(skip)]
    pub path: Option<PathBuf>,
}

impl ClientConfig {
    /// The configuration at `explicit`, or the first one found in the usual places.
    pub fn find(explicit: Option<&Path>) -> Result<ClientConfig, ConfigError> {
        let mut candidates: Vec<PathBuf> = Vec::new();
        match explicit {
            Some(path) => candidates.push(path.to_owned()),
            None => {
                if let Ok(path) = std::env::var(ENV_CONF) {
                    candidates.push(path.into());
                }
                candidates.push(DEV_CONF.into());
                if let Ok(home) = std::env::var("HOME") {
                    candidates.push(Path::new(&home).join(".config/cairn/client.toml"));
                }
            }
        }
        for path in &candidates {
            if path.exists() || explicit.is_some() {
                return ClientConfig::load(path);
            }
        }
        let tried: Vec<String> = candidates.iter().map(|p| p.display().to_string()).collect();
        Err(ConfigError::NotFound { tried: tried.join(", ") })
    }

    pub fn load(path: &Path) -> Result<ClientConfig, ConfigError> {
        let invalid =
            |reason: String| ConfigError::Invalid { path: path.display().to_string(), reason };
        let text = std::fs::read_to_string(path).map_err(|e| invalid(e.to_string()))?;
        let mut config: ClientConfig = toml::from_str(&text).map_err(|e| invalid(e.to_string()))?;
        config.validate().map_err(invalid)?;
        config.path = Some(path.to_owned());
        Ok(config)
    }

    pub fn save(&self, path: &Path) -> Result<(), ConfigError> {
        let invalid =
            |reason: String| ConfigError::Invalid { path: path.display().to_string(), reason };
        let text = toml::to_string(self).map_err(|e| invalid(e.to_string()))?;
        std::fs::write(path, text).map_err(|e| invalid(e.to_string()))
    }

    pub fn validate(&self) -> Result<(), String> {
        self.entity_name()?;
        if self.mons.is_empty() || self.mons.len() > MONITORS_MAX {
            return Err(format!("list 1 to {MONITORS_MAX} monitors ([[mon]] name, addr)"));
        }
        for mon in &self.mons {
            EntityName::mon(&mon.name)?;
            mon.addr
                .parse::<std::net::SocketAddr>()
                .map_err(|_| format!("mon.{}: '{}' is not ip:port", mon.name, mon.addr))?;
        }
        Ok(())
    }

    pub fn entity_name(&self) -> Result<EntityName, String> {
        self.entity.parse()
    }

    /// The keyring directory, resolved against the configuration's own directory.
    pub fn keyring_dir(&self) -> PathBuf {
        let keyring = Path::new(&self.keyring);
        match (&self.path, keyring.is_relative()) {
            (Some(path), true) => path.parent().unwrap_or(Path::new(".")).join(keyring),
            _ => keyring.to_owned(),
        }
    }

    pub fn credentials(&self) -> Result<Credentials, String> {
        let entity = self.entity_name()?;
        Credentials::load(&self.keyring_dir(), &entity).map_err(|e| e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> ClientConfig {
        ClientConfig {
            fsid: "x".into(),
            entity: "client.admin".into(),
            keyring: "keys".into(),
            mons: vec![MonAddr { name: "a".into(), addr: "127.0.0.1:6789".into() }],
            osd_transport: OsdTransport::Quic,
            path: None,
        }
    }

    #[test]
    fn configs_round_trip_and_resolve_the_keyring() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("client.toml");
        config().save(&path).unwrap();
        let loaded = ClientConfig::load(&path).unwrap();
        assert_eq!(loaded.keyring_dir(), dir.path().join("keys"));
        assert_eq!(ClientConfig { path: None, ..loaded }, config());
    }

    #[test]
    fn bad_configs_say_what_is_wrong() {
        let mut bad = config();
        bad.mons[0].addr = "nowhere".into();
        assert!(bad.validate().unwrap_err().contains("not ip:port"));
        bad.mons.clear();
        assert!(bad.validate().unwrap_err().contains("list 1 to"));
        let missing = ClientConfig::find(Some(Path::new("/nonexistent/client.toml"))).unwrap_err();
        assert!(missing.to_string().contains("/nonexistent/client.toml"));
    }

    #[test]
    fn the_osd_transport_is_tcp_unless_the_config_says_quic() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("client.toml");
        let base = "fsid = \"x\"\nentity = \"client.admin\"\nkeyring = \".\"\n\n[[mon]]\nname = \"a\"\naddr = \"127.0.0.1:6789\"\n";
        std::fs::write(&path, base).unwrap();
        assert_eq!(ClientConfig::load(&path).unwrap().osd_transport, OsdTransport::Tcp);
        std::fs::write(&path, format!("osd_transport = \"quic\"\n{base}")).unwrap();
        assert_eq!(ClientConfig::load(&path).unwrap().osd_transport, OsdTransport::Quic);
        std::fs::write(&path, format!("osd_transport = \"udp\"\n{base}")).unwrap();
        let bad = ClientConfig::load(&path).unwrap_err().to_string();
        assert!(bad.contains("unknown variant `udp`"), "{bad}");
    }
}
