//! Entity names: who a daemon or client is (`mon.a`, `osd.3`, `client.admin`).
//!
//! An entity's name is its identity everywhere: in its certificate, in the monitors'
//! registry of identities and capabilities, in logs. In a certificate it is carried as a
//! DNS name with the `.cairn` suffix (`osd.3.cairn`), so standard certificate validation
//! checks that a server is the entity the client meant to reach.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// The suffix that turns an entity name into the DNS name of its certificate.
pub const CERT_NAME_SUFFIX: &str = ".cairn";
/// Upper bound on the id part of a name (`admin` in `client.admin`).
pub const ENTITY_ID_BYTES_MAX: usize = 64;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EntityKind {
    /// A monitor.
    Mon,
    /// An object storage daemon.
    Osd,
    /// Anything else that talks to the cluster: the CLI, gateways, services.
    Client,
}

impl EntityKind {
    pub fn name(self) -> &'static str {
        match self {
            EntityKind::Mon => "mon",
            EntityKind::Osd => "osd",
            EntityKind::Client => "client",
        }
    }
}

/// `kind.id`, e.g. `mon.a`, `osd.3`, `client.glance`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct EntityName {
    kind: EntityKind,
    id: String,
}

impl EntityName {
    pub fn new(kind: EntityKind, id: &str) -> Result<EntityName, String> {
        let ok_char =
            |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_';
        if id.is_empty() || id.len() > ENTITY_ID_BYTES_MAX || !id.chars().all(ok_char) {
            return Err(format!(
                "'{}.{id}' is not an entity name: the id after '{}.' must be 1 to \
                 {ENTITY_ID_BYTES_MAX} of a-z, 0-9, '-' and '_'",
                kind.name(),
                kind.name()
            ));
        }
        // One spelling per OSD: `osd.07` would be a second identity for osd.7.
        if kind == EntityKind::Osd && !id.parse::<u32>().is_ok_and(|n| n.to_string() == id) {
            return Err(format!(
                "'osd.{id}' is not an OSD name: OSD ids are numbers, without leading zeros"
            ));
        }
        Ok(EntityName { kind, id: id.to_owned() })
    }

    pub fn mon(id: &str) -> Result<EntityName, String> {
        EntityName::new(EntityKind::Mon, id)
    }

    pub fn osd(id: u32) -> EntityName {
        EntityName { kind: EntityKind::Osd, id: id.to_string() }
    }

    pub fn client(id: &str) -> Result<EntityName, String> {
        EntityName::new(EntityKind::Client, id)
    }

    pub fn kind(&self) -> EntityKind {
        self.kind
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    /// The OSD number of an `osd.N` entity.
    pub fn osd_id(&self) -> Option<u32> {
        (self.kind == EntityKind::Osd).then(|| self.id.parse().ok()).flatten()
    }

    /// The DNS name its certificate carries.
    pub fn cert_name(&self) -> String {
        format!("{self}{CERT_NAME_SUFFIX}")
    }

    /// The entity a certificate's DNS name stands for.
    pub fn from_cert_name(dns: &str) -> Result<EntityName, String> {
        let name = dns
            .strip_suffix(CERT_NAME_SUFFIX)
            .ok_or_else(|| format!("certificate name '{dns}' is not a cairn entity"))?;
        name.parse()
    }
}

impl fmt::Display for EntityName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.kind.name(), self.id)
    }
}

impl FromStr for EntityName {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let (kind, id) = s
            .split_once('.')
            .ok_or_else(|| format!("'{s}' is not an entity name (mon.ID, osd.N or client.ID)"))?;
        let kind = match kind {
            "mon" => EntityKind::Mon,
            "osd" => EntityKind::Osd,
            "client" => EntityKind::Client,
            other => return Err(format!("'{other}' is not an entity kind (mon, osd or client)")),
        };
        EntityName::new(kind, id)
    }
}

impl TryFrom<String> for EntityName {
    type Error = String;

    fn try_from(s: String) -> Result<Self, String> {
        s.parse()
    }
}

impl From<EntityName> for String {
    fn from(name: EntityName) -> String {
        name.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_parse_and_print() {
        for text in ["mon.a", "osd.3", "client.admin", "client.glance-api", "mon.mon_1"] {
            let name: EntityName = text.parse().unwrap();
            assert_eq!(name.to_string(), text);
            assert_eq!(EntityName::from_cert_name(&name.cert_name()).unwrap(), name);
        }
        assert_eq!("osd.12".parse::<EntityName>().unwrap().osd_id(), Some(12));
    }

    #[test]
    fn bad_names_are_refused_with_a_reason() {
        for (text, want) in [
            ("admin", "not an entity name"),
            ("user.x", "not an entity kind"),
            ("osd.x", "OSD ids are numbers"),
            ("osd.07", "without leading zeros"),
            ("osd.-1", "OSD ids are numbers"),
            ("client.", "must be 1 to"),
            ("client.Admin", "a-z"),
            ("mon.a.b", "a-z"),
        ] {
            let err = text.parse::<EntityName>().unwrap_err();
            assert!(err.contains(want), "{text}: {err}");
        }
        assert!(EntityName::from_cert_name("mon.a.example.com").is_err());
        let long = format!("client.{}", "x".repeat(ENTITY_ID_BYTES_MAX + 1));
        assert!(long.parse::<EntityName>().is_err());
    }
}
