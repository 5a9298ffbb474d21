//! Which client ops a primary runs now, pure: refused (not the primary, blocked, too many
//! waiting), waiting for the PG to serve, held behind their object, or run. An object is
//! busy while a change to it is in flight (one at a time), while a copy of it is missing
//! (recovered first), while backfill pushes it, and, for writes, while a scrub chunk
//! covers it or a copy into it reads its sources. Held ops run in order once it is not. The actor (`actor/client_ops.rs`)
//! describes the PG and the object, and carries out the answer.

/// Client ops a PG holds while it cannot serve them (peering, inactive).
pub const WAITING_OPS_MAX: usize = 1024;
/// Client ops held behind one busy object; more are refused as busy.
pub const HELD_PER_OBJECT_MAX: usize = 1024;

/// Whether the PG serves ops.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Serving {
    /// Active: ops run, or wait behind their object.
    Yes,
    /// Peering or activating: ops wait for it.
    Soon,
    /// It cannot go active (down, incomplete, peered): ops are refused with why.
    No,
}

/// The PG, as an op's admission sees it.
#[derive(Clone, Copy, Debug)]
pub struct Pg {
    pub primary: bool,
    pub serving: Serving,
    /// Ops already waiting for it to serve.
    pub waiting: usize,
}

/// An op's object, as its admission sees it.
#[derive(Clone, Copy, Debug, Default)]
pub struct Object {
    /// A change to it is being committed.
    pub in_flight: bool,
    /// A copy of it is missing somewhere.
    pub missing: bool,
    /// Its recovery is under way.
    pub recovering: bool,
    /// Backfill is pushing it.
    pub pushing: bool,
    /// A scrub chunk covers it.
    pub scrubbing: bool,
    /// A copy op into it is reading its sources: nothing is applied yet, so reads run.
    pub copying: bool,
    /// Ops held behind it already.
    pub held: usize,
}

/// What becomes of a client op.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Admit {
    /// This OSD is not the PG's primary (at its epoch): the client retries on a newer map.
    NotPrimary,
    /// The PG cannot serve: refused with why.
    Blocked,
    /// Waits for the PG to serve; replayed when it does.
    Wait,
    /// Refused as busy: too many ops wait for the PG already.
    TooManyWaiting,
    /// Refused as busy: too many ops are held behind the object already.
    TooManyHeld,
    /// Held behind its object; `recover`: start its recovery now, as the op waits for it.
    Hold {
        recover: bool,
    },
    Run,
}

/// Whether an op (`write`: one that changes the object) runs now.
pub fn admit(pg: &Pg, object: &Object, write: bool) -> Admit {
    if !pg.primary {
        return Admit::NotPrimary;
    }
    match pg.serving {
        Serving::Yes => {}
        // Too many waiting is told first: the PG is overloaded whatever holds it.
        _ if pg.waiting >= WAITING_OPS_MAX => return Admit::TooManyWaiting,
        Serving::No => return Admit::Blocked,
        Serving::Soon => return Admit::Wait,
    }
    // Ops held already go first, in order.
    let busy = !may_run(object) || object.held > 0 || (write && holds_writes(object));
    if !busy {
        Admit::Run
    } else if object.held >= HELD_PER_OBJECT_MAX {
        Admit::TooManyHeld
    } else {
        Admit::Hold { recover: object.missing && !object.recovering }
    }
}

/// Whether the ops held behind `object` may run now (reads wait for a scrub chunk or a
/// copy too: the queue keeps its order).
pub fn may_release(object: &Object) -> bool {
    may_run(object) && !holds_writes(object)
}

fn holds_writes(object: &Object) -> bool {
    object.scrubbing || object.copying
}

fn may_run(object: &Object) -> bool {
    !object.in_flight && !object.missing && !object.pushing
}

#[cfg(test)]
mod tests {
    use super::*;

    const ACTIVE: Pg = Pg { primary: true, serving: Serving::Yes, waiting: 0 };
    const IDLE: Object = Object {
        in_flight: false,
        missing: false,
        recovering: false,
        pushing: false,
        scrubbing: false,
        copying: false,
        held: 0,
    };

    #[test]
    fn a_pg_that_does_not_serve_refuses_or_queues() {
        let replica = Pg { primary: false, ..ACTIVE };
        assert_eq!(admit(&replica, &IDLE, true), Admit::NotPrimary);
        let peering = Pg { serving: Serving::Soon, ..ACTIVE };
        assert_eq!(admit(&peering, &IDLE, false), Admit::Wait);
        let full = Pg { waiting: WAITING_OPS_MAX, ..peering };
        assert_eq!(admit(&full, &IDLE, false), Admit::TooManyWaiting);
        let down = Pg { serving: Serving::No, ..ACTIVE };
        assert_eq!(admit(&down, &IDLE, false), Admit::Blocked);
    }

    #[test]
    fn a_busy_object_holds_its_ops_in_order_up_to_a_bound() {
        assert_eq!(admit(&ACTIVE, &IDLE, true), Admit::Run);
        let writing = Object { in_flight: true, ..IDLE };
        assert_eq!(admit(&ACTIVE, &writing, false), Admit::Hold { recover: false });
        let pushed = Object { pushing: true, ..IDLE };
        assert_eq!(admit(&ACTIVE, &pushed, true), Admit::Hold { recover: false });
        // A missing copy: the op starts its recovery unless it runs already.
        let missing = Object { missing: true, ..IDLE };
        assert_eq!(admit(&ACTIVE, &missing, false), Admit::Hold { recover: true });
        let recovering = Object { recovering: true, ..missing };
        assert_eq!(admit(&ACTIVE, &recovering, false), Admit::Hold { recover: false });
        // Once ops are held, later ones queue behind them even if the object is free.
        let queued = Object { held: 1, ..IDLE };
        assert_eq!(admit(&ACTIVE, &queued, false), Admit::Hold { recover: false });
        let crowded = Object { held: HELD_PER_OBJECT_MAX, ..writing };
        assert_eq!(admit(&ACTIVE, &crowded, false), Admit::TooManyHeld);
    }

    #[test]
    fn a_scrub_chunk_or_a_copy_holds_writes_and_its_queue_but_not_new_reads() {
        let scrubbed = Object { scrubbing: true, ..IDLE };
        assert_eq!(admit(&ACTIVE, &scrubbed, false), Admit::Run);
        assert_eq!(admit(&ACTIVE, &scrubbed, true), Admit::Hold { recover: false });
        assert!(!may_release(&scrubbed));
        assert!(may_release(&IDLE));
        assert!(!may_release(&Object { missing: true, ..IDLE }));
        // A copy reading its sources: the same, so that two objects copied from each
        // other at once do not wait for each other's reads.
        let copying = Object { copying: true, ..IDLE };
        assert_eq!(admit(&ACTIVE, &copying, false), Admit::Run);
        assert_eq!(admit(&ACTIVE, &copying, true), Admit::Hold { recover: false });
        assert!(!may_release(&copying));
    }
}
