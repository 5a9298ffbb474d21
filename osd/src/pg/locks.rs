//! Advisory locks on objects, as Ceph's `cls_lock` keeps them: named, exclusive or
//! shared (shared holders agree on a tag), each holder a client with a cookie, with an
//! optional expiry. A lock lives in a reserved xattr of its object (`\0lock.NAME`), so it
//! is replicated, recovered, backfilled and scrubbed with the object, and each lock op is
//! a change of that xattr decided once by the primary: `Locks` takes the object's xattrs
//! and the time, and answers with the new value or a refusal. Holders whose expiry has
//! passed are dropped where they are met. Clients can neither set nor read reserved
//! xattrs, so only these ops change a lock.

use std::collections::BTreeMap;

use proto::error::{ErrorCode, RemoteError};
use proto::osd::{LOCK_FIELD_MAX, LOCK_HOLDERS_MAX, LockInfo, LockKind, Locker, RepOp};

/// The xattr that holds lock `NAME`: this prefix, then the name.
pub const LOCK_XATTR_PREFIX: &str = "\0lock.";

/// Who asks, and when (the primary's wall clock, ms since the Unix epoch).
#[derive(Clone, Copy, Debug)]
pub struct Caller<'a> {
    pub client: &'a str,
    pub addr: &'a str,
    pub now_ms: i64,
}

/// What a request asks of a lock.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LockChange<'a> {
    Take {
        kind: LockKind,
        cookie: &'a str,
        tag: &'a str,
        description: &'a str,
        duration_ms: Option<u64>,
        renew: bool,
    },
    Release {
        cookie: &'a str,
    },
    Break {
        locker: &'a str,
        cookie: &'a str,
    },
}

/// The locks of one object during a request: as its xattrs had them, then as the lock ops
/// before left them.
pub struct Locks<'a> {
    xattrs: Option<&'a BTreeMap<String, Vec<u8>>>,
    /// An op before removed the object, and its locks with it.
    removed: bool,
    changed: BTreeMap<String, Option<LockInfo>>,
}

fn locked(why: String) -> RemoteError {
    RemoteError::new(ErrorCode::Locked, why)
}

/// Names, cookies and tags are at most `LOCK_FIELD_MAX` bytes (descriptions four times
/// that); a lock has a name.
pub fn check_fields(name: &str, fields: &[&str], description: &str) -> Result<(), RemoteError> {
    let invalid = |why: String| Err(RemoteError::new(ErrorCode::Invalid, why));
    if name.is_empty() {
        return invalid("a lock needs a name".into());
    }
    if name.len() > LOCK_FIELD_MAX || fields.iter().any(|f| f.len() > LOCK_FIELD_MAX) {
        return invalid(format!("lock names, cookies and tags are at most {LOCK_FIELD_MAX} bytes"));
    }
    if description.len() > 4 * LOCK_FIELD_MAX {
        return invalid(format!("a lock's description is at most {} bytes", 4 * LOCK_FIELD_MAX));
    }
    Ok(())
}

impl<'a> Locks<'a> {
    /// The locks of an object with these xattrs (`None`: it does not exist).
    pub fn new(xattrs: Option<&'a BTreeMap<String, Vec<u8>>>) -> Locks<'a> {
        Locks { xattrs, removed: false, changed: BTreeMap::new() }
    }

    /// Lock `name` as the object had it, its expired holders left out (`None`: no holder).
    pub fn before(&self, name: &str, now_ms: i64) -> Option<LockInfo> {
        let bytes = self.xattrs?.get(&format!("{LOCK_XATTR_PREFIX}{name}"))?;
        // A value that does not decode holds no lock: the next lock op replaces it.
        let info: LockInfo = postcard::from_bytes(bytes).ok()?;
        live(info, now_ms)
    }

    /// The names of the locks the object had, with a holder now.
    pub fn names(&self, now_ms: i64) -> Vec<String> {
        let Some(xattrs) = self.xattrs else { return Vec::new() };
        xattrs
            .keys()
            .filter_map(|k| k.strip_prefix(LOCK_XATTR_PREFIX))
            .filter(|name| self.before(name, now_ms).is_some())
            .map(str::to_owned)
            .collect()
    }

    /// Whether `caller` held `name` with `cookie` (of `kind`, with `tag`) as the request
    /// began: a guard for the ops after it.
    pub fn assert_held(
        &self,
        name: &str,
        caller: Caller<'_>,
        kind: LockKind,
        cookie: &str,
        tag: &str,
    ) -> Result<(), RemoteError> {
        let held = self.before(name, caller.now_ms).is_some_and(|info| {
            info.kind == kind
                && info.tag == tag
                && info.holders.iter().any(|h| h.client == caller.client && h.cookie == cookie)
        });
        match held {
            true => Ok(()),
            false => Err(locked(format!(
                "lock {name} is not held by {} with cookie '{cookie}'; nothing was changed",
                caller.client
            ))),
        }
    }

    /// Applies `change` to lock `name`; the `RepOp` that records the result.
    pub fn change(
        &mut self,
        name: &str,
        caller: Caller<'_>,
        change: &LockChange<'_>,
    ) -> Result<RepOp, RemoteError> {
        let now = caller.now_ms;
        let current = match self.changed.get(name) {
            Some(changed) => changed.clone().and_then(|info| live(info, now)),
            None if self.removed => None,
            None => self.before(name, now),
        };
        let next = next_state(name, current, caller, change)?;
        let xattr = format!("{LOCK_XATTR_PREFIX}{name}");
        let rep = match &next {
            Some(info) => RepOp::SetXattr {
                name: xattr,
                value: postcard::to_allocvec(info).expect("a lock encodes"),
            },
            None => RepOp::RemoveXattr { name: xattr },
        };
        self.changed.insert(name.to_owned(), next);
        Ok(rep)
    }

    /// An op removed the object: the lock ops after it find no lock (reads and guards
    /// still see the locks as the request began).
    pub fn remove_all(&mut self) {
        self.removed = true;
        self.changed.clear();
    }
}

/// The lock without its holders whose expiry has passed; `None` when none is left.
fn live(mut info: LockInfo, now_ms: i64) -> Option<LockInfo> {
    info.holders.retain(|h| h.expires_ms.is_none_or(|at| at > now_ms));
    (!info.holders.is_empty()).then_some(info)
}

/// The lock after `change`, from `current` (its live holders); `None`: no holder left.
fn next_state(
    name: &str,
    current: Option<LockInfo>,
    caller: Caller<'_>,
    change: &LockChange<'_>,
) -> Result<Option<LockInfo>, RemoteError> {
    let holds = |h: &Locker, client: &str, cookie: &str| h.client == client && h.cookie == cookie;
    match *change {
        LockChange::Take { kind, cookie, tag, description, duration_ms, renew } => {
            check_fields(name, &[cookie, tag], description)?;
            let expires_ms = duration_ms
                .map(|d| caller.now_ms.saturating_add(i64::try_from(d).unwrap_or(i64::MAX)));
            let me = Locker {
                client: caller.client.to_owned(),
                cookie: cookie.to_owned(),
                addr: caller.addr.to_owned(),
                description: description.to_owned(),
                expires_ms,
            };
            let Some(mut info) = current else {
                return Ok(Some(LockInfo { kind, tag: tag.to_owned(), holders: vec![me] }));
            };
            if let Some(mine) = info.holders.iter_mut().find(|h| holds(h, caller.client, cookie)) {
                if !renew || info.kind != kind || info.tag != tag {
                    return Err(RemoteError::new(
                        ErrorCode::AlreadyExists,
                        format!(
                            "{} already holds lock {name} with cookie '{cookie}'",
                            caller.client
                        ),
                    ));
                }
                // A renewal moves the expiry (and the address, if the client moved); the
                // description stays unless a new one is given.
                mine.expires_ms = me.expires_ms;
                mine.addr = me.addr;
                if !me.description.is_empty() {
                    mine.description = me.description;
                }
                return Ok(Some(info));
            }
            let holder = &info.holders[0];
            if info.kind == LockKind::Exclusive || kind == LockKind::Exclusive {
                return Err(locked(format!(
                    "lock {name} is held by {} (cookie '{}')",
                    holder.client, holder.cookie
                )));
            }
            if info.tag != tag {
                return Err(locked(format!(
                    "lock {name} is shared under tag '{}', not '{tag}'",
                    info.tag
                )));
            }
            if info.holders.len() >= LOCK_HOLDERS_MAX {
                return Err(locked(format!("lock {name} has {LOCK_HOLDERS_MAX} holders already")));
            }
            info.holders.push(me);
            Ok(Some(info))
        }
        LockChange::Release { cookie } => {
            remove_holder(name, current, caller.client, cookie, |client, cookie| {
                format!("{client} holds no lock {name} with cookie '{cookie}'")
            })
        }
        LockChange::Break { locker, cookie } => {
            remove_holder(name, current, locker, cookie, |client, cookie| {
                format!("lock {name} has no holder {client} with cookie '{cookie}'")
            })
        }
    }
}

fn remove_holder(
    name: &str,
    current: Option<LockInfo>,
    client: &str,
    cookie: &str,
    absent: impl Fn(&str, &str) -> String,
) -> Result<Option<LockInfo>, RemoteError> {
    check_fields(name, &[client, cookie], "")?;
    let mut info =
        current.ok_or_else(|| RemoteError::new(ErrorCode::NotFound, absent(client, cookie)))?;
    let before = info.holders.len();
    info.holders.retain(|h| !(h.client == client && h.cookie == cookie));
    if info.holders.len() == before {
        return Err(RemoteError::new(ErrorCode::NotFound, absent(client, cookie)));
    }
    Ok((!info.holders.is_empty()).then_some(info))
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALICE: Caller<'static> =
        Caller { client: "client.alice", addr: "10.0.0.1:5000", now_ms: 1_000 };
    const BOB: Caller<'static> =
        Caller { client: "client.bob", addr: "10.0.0.2:5000", now_ms: 1_000 };

    fn take<'a>(
        kind: LockKind,
        cookie: &'a str,
        tag: &'a str,
        duration_ms: Option<u64>,
    ) -> LockChange<'a> {
        LockChange::Take { kind, cookie, tag, description: "", duration_ms, renew: false }
    }

    /// The xattrs of an object after these RepOps.
    fn applied(reps: &[RepOp]) -> BTreeMap<String, Vec<u8>> {
        let mut xattrs = BTreeMap::new();
        for rep in reps {
            match rep {
                RepOp::SetXattr { name, value } => {
                    xattrs.insert(name.clone(), value.clone());
                }
                RepOp::RemoveXattr { name } => {
                    xattrs.remove(name);
                }
                other => panic!("a lock op made {other:?}"),
            }
        }
        xattrs
    }

    #[test]
    fn an_exclusive_lock_refuses_others_until_released_and_is_gone_with_its_last_holder() {
        let none = BTreeMap::new();
        let mut locks = Locks::new(Some(&none));
        let first = locks.change("l", ALICE, &take(LockKind::Exclusive, "c1", "", None)).unwrap();
        let xattrs = applied(&[first]);
        let locks = Locks::new(Some(&xattrs));
        let info = locks.before("l", 1_000).unwrap();
        assert_eq!(info.kind, LockKind::Exclusive);
        assert_eq!(info.holders.len(), 1);
        assert_eq!(
            (info.holders[0].client.as_str(), info.holders[0].addr.as_str()),
            ("client.alice", "10.0.0.1:5000")
        );
        assert_eq!(locks.names(1_000), ["l"]);

        let mut later = Locks::new(Some(&xattrs));
        let e = later.change("l", BOB, &take(LockKind::Exclusive, "c2", "", None)).unwrap_err();
        assert_eq!(e.code, ErrorCode::Locked);
        assert!(e.message.contains("held by client.alice (cookie 'c1')"), "{}", e.message);
        let e = later.change("l", BOB, &take(LockKind::Shared, "c2", "", None)).unwrap_err();
        assert_eq!(e.code, ErrorCode::Locked);
        // The same holder again is refused, unless it renews.
        let e = later.change("l", ALICE, &take(LockKind::Exclusive, "c1", "", None)).unwrap_err();
        assert_eq!(e.code, ErrorCode::AlreadyExists);
        // Releasing with another cookie is refused; with its own, the xattr goes.
        let e = later.change("l", ALICE, &LockChange::Release { cookie: "c2" }).unwrap_err();
        assert_eq!(e.code, ErrorCode::NotFound);
        let gone = later.change("l", ALICE, &LockChange::Release { cookie: "c1" }).unwrap();
        assert_eq!(gone, RepOp::RemoveXattr { name: "\0lock.l".into() });
        // Within the request, the release is seen: another client may take it now.
        later.change("l", BOB, &take(LockKind::Exclusive, "c2", "", None)).unwrap();
    }

    #[test]
    fn shared_holders_agree_on_a_tag_and_a_break_removes_one() {
        let mut xattrs = BTreeMap::new();
        let mut reps = Vec::new();
        let mut locks = Locks::new(Some(&xattrs));
        reps.push(locks.change("l", ALICE, &take(LockKind::Shared, "a", "t", None)).unwrap());
        reps.push(locks.change("l", BOB, &take(LockKind::Shared, "b", "t", None)).unwrap());
        let e = locks.change("l", BOB, &take(LockKind::Shared, "b2", "other", None)).unwrap_err();
        assert_eq!(e.code, ErrorCode::Locked);
        assert!(e.message.contains("shared under tag 't'"), "{}", e.message);
        let e = locks.change("l", BOB, &take(LockKind::Exclusive, "b3", "t", None)).unwrap_err();
        assert_eq!(e.code, ErrorCode::Locked);
        xattrs = applied(&reps);
        let info = Locks::new(Some(&xattrs)).before("l", 1_000).unwrap();
        let holders: Vec<&str> = info.holders.iter().map(|h| h.client.as_str()).collect();
        assert_eq!(holders, ["client.alice", "client.bob"]);

        let mut locks = Locks::new(Some(&xattrs));
        let e = locks
            .change("l", BOB, &LockChange::Break { locker: "client.alice", cookie: "x" })
            .unwrap_err();
        assert_eq!(e.code, ErrorCode::NotFound);
        let rep = locks
            .change("l", BOB, &LockChange::Break { locker: "client.alice", cookie: "a" })
            .unwrap();
        let info = Locks::new(Some(&applied(&[rep]))).before("l", 1_000).unwrap();
        assert_eq!(info.holders.len(), 1);
        assert_eq!(info.holders[0].client, "client.bob");
    }

    #[test]
    fn a_lock_expires_at_its_expiry_and_a_renewal_moves_it() {
        let none = BTreeMap::new();
        let rep = Locks::new(Some(&none))
            .change("l", ALICE, &take(LockKind::Exclusive, "c", "", Some(500)))
            .unwrap();
        let xattrs = applied(&[rep]);
        let locks = Locks::new(Some(&xattrs));
        assert_eq!(locks.before("l", 1_499).unwrap().holders[0].expires_ms, Some(1_500));
        assert!(locks.before("l", 1_500).is_none(), "expired at its expiry");
        assert!(locks.names(1_500).is_empty());

        // Renewed at 1,400 for another 500 ms: held until 1,900.
        let renew = LockChange::Take {
            kind: LockKind::Exclusive,
            cookie: "c",
            tag: "",
            description: "",
            duration_ms: Some(500),
            renew: true,
        };
        let at = Caller { now_ms: 1_400, ..ALICE };
        let rep = Locks::new(Some(&xattrs)).change("l", at, &renew).unwrap();
        let xattrs = applied(&[rep]);
        let bob_at = |now_ms| Caller { now_ms, ..BOB };
        let mut locks = Locks::new(Some(&xattrs));
        let e = locks
            .change("l", bob_at(1_899), &take(LockKind::Exclusive, "b", "", None))
            .unwrap_err();
        assert_eq!(e.code, ErrorCode::Locked);
        locks.change("l", bob_at(1_900), &take(LockKind::Exclusive, "b", "", None)).unwrap();
    }

    #[test]
    fn the_guard_checks_the_holder_kind_and_tag_and_bad_fields_are_refused() {
        let none = BTreeMap::new();
        let rep = Locks::new(Some(&none))
            .change("l", ALICE, &take(LockKind::Shared, "c", "t", None))
            .unwrap();
        let xattrs = applied(&[rep]);
        let locks = Locks::new(Some(&xattrs));
        locks.assert_held("l", ALICE, LockKind::Shared, "c", "t").unwrap();
        for (caller, kind, cookie, tag) in [
            (BOB, LockKind::Shared, "c", "t"),
            (ALICE, LockKind::Exclusive, "c", "t"),
            (ALICE, LockKind::Shared, "other", "t"),
            (ALICE, LockKind::Shared, "c", "u"),
        ] {
            let e = locks.assert_held("l", caller, kind, cookie, tag).unwrap_err();
            assert_eq!(e.code, ErrorCode::Locked, "{caller:?} {kind:?} {cookie} {tag}");
        }
        let mut locks = Locks::new(Some(&none));
        let long = "x".repeat(LOCK_FIELD_MAX + 1);
        for change in
            [take(LockKind::Exclusive, &long, "", None), take(LockKind::Shared, "c", &long, None)]
        {
            let e = locks.change("l", ALICE, &change).unwrap_err();
            assert_eq!(e.code, ErrorCode::Invalid);
        }
        let e = locks.change("", ALICE, &take(LockKind::Exclusive, "c", "", None)).unwrap_err();
        assert_eq!(e.code, ErrorCode::Invalid);
        // A value that does not decode holds no lock.
        let junk = BTreeMap::from([("\0lock.l".to_owned(), vec![0xff; 3])]);
        assert!(Locks::new(Some(&junk)).before("l", 0).is_none());
    }
}
