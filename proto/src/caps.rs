//! Capabilities: what an identity may do, written the way Ceph writes them.
//!
//! `mon "allow r"` may read the cluster state, `"allow rw"` may also change it, `"allow *"`
//! may also manage identities. `osd "allow rw pool=images, allow r pool=vms"` grants object
//! access per pool; without `pool=` a grant covers every pool. Daemon roles come from the
//! entity kind, not from caps: only `mon.*` take part in Raft, only `osd.N` may boot or
//! beacon as OSD N. The receiver of a request enforces them.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Access levels, each including the ones before it.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Access {
    #[default]
    None,
    Read,
    ReadWrite,
    /// Everything, including identity management on the monitors.
    All,
}

impl Access {
    fn parse(word: &str) -> Result<Access, String> {
        match word {
            "r" => Ok(Access::Read),
            "rw" => Ok(Access::ReadWrite),
            "*" | "rwx" => Ok(Access::All),
            other => Err(format!("'{other}' is not an access level (r, rw or *)")),
        }
    }

    fn word(self) -> &'static str {
        match self {
            Access::None => "",
            Access::Read => "r",
            Access::ReadWrite => "rw",
            Access::All => "*",
        }
    }
}

/// One `allow ...` clause of an OSD capability.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct OsdGrant {
    pub access: Access,
    /// `None`: every pool.
    pub pool: Option<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Caps {
    pub mon: Access,
    pub osd: Vec<OsdGrant>,
}

impl Caps {
    /// Everything: the admin identity.
    pub fn all() -> Caps {
        Caps { mon: Access::All, osd: vec![OsdGrant { access: Access::All, pool: None }] }
    }

    /// Parses the two Ceph-style strings, e.g. `("allow r", "allow rw pool=images")`.
    pub fn parse(mon: &str, osd: &str) -> Result<Caps, String> {
        let mon_grants = parse_grants(mon)?;
        if mon_grants.iter().any(|g| g.pool.is_some()) {
            return Err(format!("mon capability '{mon}': pools are for osd capabilities"));
        }
        let mon = mon_grants.iter().map(|g| g.access).max().unwrap_or(Access::None);
        Ok(Caps { mon, osd: parse_grants(osd)? })
    }

    pub fn allows_mon(&self, needed: Access) -> bool {
        self.mon >= needed
    }

    /// Whether object access `needed` to `pool` is granted.
    pub fn allows_pool(&self, pool: &str, needed: Access) -> bool {
        self.osd.iter().any(|g| g.access >= needed && g.pool.as_deref().is_none_or(|p| p == pool))
    }

    pub fn mon_text(&self) -> String {
        if self.mon == Access::None { String::new() } else { format!("allow {}", self.mon.word()) }
    }

    pub fn osd_text(&self) -> String {
        let grants: Vec<String> = self
            .osd
            .iter()
            .map(|g| match &g.pool {
                Some(pool) => format!("allow {} pool={pool}", g.access.word()),
                None => format!("allow {}", g.access.word()),
            })
            .collect();
        grants.join(", ")
    }
}

impl fmt::Display for Caps {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "mon \"{}\" osd \"{}\"", self.mon_text(), self.osd_text())
    }
}

/// `allow A [pool=P], allow A ...`; empty means no access.
fn parse_grants(text: &str) -> Result<Vec<OsdGrant>, String> {
    let mut grants = Vec::new();
    for clause in text.split(',').map(str::trim).filter(|c| !c.is_empty()) {
        let words: Vec<&str> = clause.split_whitespace().collect();
        let grant = match words.as_slice() {
            ["allow", access] => OsdGrant { access: Access::parse(access)?, pool: None },
            ["allow", access, pool] => {
                let pool = pool
                    .strip_prefix("pool=")
                    .filter(|p| !p.is_empty())
                    .ok_or_else(|| format!("'{pool}' in '{clause}' is not pool=NAME"))?;
                OsdGrant { access: Access::parse(access)?, pool: Some(pool.to_owned()) }
            }
            _ => return Err(format!("'{clause}' is not 'allow r|rw|* [pool=NAME]'")),
        };
        grants.push(grant);
    }
    Ok(grants)
}

impl FromStr for Access {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        Access::parse(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caps_parse_print_and_decide() {
        let caps = Caps::parse("allow r", "allow rw pool=images, allow r pool=vms").unwrap();
        assert_eq!(caps.mon, Access::Read);
        assert!(caps.allows_mon(Access::Read) && !caps.allows_mon(Access::ReadWrite));
        assert!(caps.allows_pool("images", Access::ReadWrite));
        assert!(
            caps.allows_pool("vms", Access::Read) && !caps.allows_pool("vms", Access::ReadWrite)
        );
        assert!(!caps.allows_pool("backups", Access::Read));
        assert_eq!(
            caps.to_string(),
            "mon \"allow r\" osd \"allow rw pool=images, allow r pool=vms\""
        );
        let again = Caps::parse(&caps.mon_text(), &caps.osd_text()).unwrap();
        assert_eq!(again, caps);
        let admin = Caps::all();
        assert!(admin.allows_mon(Access::All) && admin.allows_pool("anything", Access::All));
        assert_eq!(Caps::parse("", "").unwrap(), Caps::default());
    }

    #[test]
    fn bad_caps_name_the_clause() {
        for (mon, osd, want) in [
            ("allow x", "", "not an access level"),
            ("permit r", "", "is not 'allow"),
            ("allow r pool=a", "", "pools are for osd"),
            ("", "allow rw images", "not pool=NAME"),
            ("", "allow rw pool=", "not pool=NAME"),
        ] {
            let err = Caps::parse(mon, osd).unwrap_err();
            assert!(err.contains(want), "{mon:?} {osd:?}: {err}");
        }
    }
}
