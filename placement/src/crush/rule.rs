//! CRUSH rules: the step programs that say where a PG's copies go.
//!
//! A rule is `take` (a subtree, optionally one device class), one or more `choose` steps, then
//! `emit`; several such groups may follow each other. `choose firstn N type T` picks N distinct
//! items of type T in order (replicated pools); `indep` keeps each position stable when another
//! position's item fails (erasure-coded pools, where a shard's position is its identity).
//! `chooseleaf` picks N distinct items of type T and then one OSD under each.
//! N = 0 means "the pool's size", a negative N means "size minus |N|".

use serde::{Deserialize, Serialize};

use super::SHARDS_MAX;
use crate::ids::{BucketId, RuleId};

/// Upper bound on the steps of one rule.
pub const RULE_STEPS_MAX: usize = 32;
/// Upper bound on the retry budgets a rule may set: retries are bounded, never endless.
pub const CHOOSE_TRIES_MAX: u32 = 1000;

/// Which pools a rule serves.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RuleKind {
    /// Replicated pools: `firstn` steps.
    Replicated,
    /// Erasure-coded pools: `indep` steps.
    Erasure,
}

impl RuleKind {
    pub fn name(self) -> &'static str {
        match self {
            RuleKind::Replicated => "replicated",
            RuleKind::Erasure => "erasure",
        }
    }

    pub fn mode(self) -> ChooseMode {
        match self {
            RuleKind::Replicated => ChooseMode::Firstn,
            RuleKind::Erasure => ChooseMode::Indep,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ChooseMode {
    /// Pick in order; a failed item's successors shift up.
    Firstn,
    /// Pick per position; a failed item leaves its position to be refilled alone.
    Indep,
}

impl ChooseMode {
    pub fn name(self) -> &'static str {
        match self {
            ChooseMode::Firstn => "firstn",
            ChooseMode::Indep => "indep",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Step {
    /// Start from this bucket, seeing only OSDs of `class` when one is given.
    Take { bucket: BucketId, class: Option<String> },
    /// Pick `count` distinct items of bucket type `type_id` under each working item; with
    /// `leaf`, then pick one OSD under each of them.
    Choose { mode: ChooseMode, count: i32, type_id: u16, leaf: bool },
    /// Append the working items to the result.
    Emit,
    /// Descents tried for each position before it is given up (default: the map's tunable).
    SetChooseTries(u32),
    /// Descents tried for the leaf under each chosen item (default 1).
    SetChooseleafTries(u32),
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rule {
    pub id: RuleId,
    pub name: String,
    pub kind: RuleKind,
    pub steps: Vec<Step>,
}

/// A rule's shape in operator terms: "N copies on distinct `failure_domain`s under `root`".
/// Covers what almost every cluster needs; anything else is written as steps.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SimpleRule<'a> {
    pub kind: RuleKind,
    pub root: BucketId,
    pub failure_domain: u16,
    pub class: Option<&'a str>,
}

impl SimpleRule<'_> {
    /// The steps of the rule. Erasure rules get the larger retry budgets Ceph uses for them,
    /// because `indep` positions are refilled one at a time.
    pub fn steps(&self) -> Vec<Step> {
        let mut steps = Vec::new();
        if self.kind == RuleKind::Erasure {
            steps.push(Step::SetChooseleafTries(5));
            steps.push(Step::SetChooseTries(100));
        }
        steps.push(Step::Take { bucket: self.root, class: self.class.map(str::to_owned) });
        steps.push(Step::Choose {
            mode: self.kind.mode(),
            count: 0,
            type_id: self.failure_domain,
            leaf: self.failure_domain != 0,
        });
        steps.push(Step::Emit);
        steps
    }
}

/// Checks the shape of a rule's program: groups of take, choose..., emit; firstn for
/// replicated rules and indep for erasure rules; bounded retry budgets; every group ends at
/// OSDs. Name resolution (buckets, types, classes) is checked by the CRUSH map.
pub(crate) fn check_shape(rule: &Rule) -> Result<(), String> {
    if rule.steps.is_empty() {
        return Err("has no steps".into());
    }
    if rule.steps.len() > RULE_STEPS_MAX {
        return Err(format!("has {} steps; the limit is {RULE_STEPS_MAX}", rule.steps.len()));
    }
    // What the working set holds after the step so far: None before any take.
    let mut working: Option<WorkingSet> = None;
    let mut emitted = false;
    for (index, step) in rule.steps.iter().enumerate() {
        let at = |reason: &str| format!("step {} ({}): {reason}", index + 1, step_kind(step));
        match step {
            Step::SetChooseTries(n) | Step::SetChooseleafTries(n) => {
                if *n == 0 || *n > CHOOSE_TRIES_MAX {
                    return Err(at(&format!("tries must be in 1..={CHOOSE_TRIES_MAX}")));
                }
            }
            Step::Take { .. } => {
                if matches!(working, Some(WorkingSet::Buckets | WorkingSet::Osds)) {
                    return Err(at("the previous take has no emit"));
                }
                working = Some(WorkingSet::Buckets);
            }
            Step::Choose { mode, type_id, leaf, count } => {
                if count.unsigned_abs() as usize > SHARDS_MAX {
                    return Err(at(&format!("count {count} is beyond +/-{SHARDS_MAX}")));
                }
                match working {
                    Some(WorkingSet::Buckets) => {}
                    Some(WorkingSet::Osds) => return Err(at("OSDs are already chosen")),
                    None | Some(WorkingSet::Emitted) => return Err(at("no take before it")),
                }
                if *mode != rule.kind.mode() {
                    return Err(at(&format!(
                        "{} rules use {} steps",
                        rule.kind.name(),
                        rule.kind.mode().name()
                    )));
                }
                if *leaf || *type_id == 0 {
                    working = Some(WorkingSet::Osds);
                }
            }
            Step::Emit => {
                match working {
                    Some(WorkingSet::Osds) => {}
                    Some(WorkingSet::Buckets) => {
                        return Err(at("emits buckets; the last choose must reach OSDs"));
                    }
                    None | Some(WorkingSet::Emitted) => return Err(at("nothing to emit")),
                }
                working = Some(WorkingSet::Emitted);
                emitted = true;
            }
        }
    }
    if working != Some(WorkingSet::Emitted) || !emitted {
        return Err("does not end with emit".into());
    }
    Ok(())
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum WorkingSet {
    Buckets,
    Osds,
    Emitted,
}

fn step_kind(step: &Step) -> &'static str {
    match step {
        Step::Take { .. } => "take",
        Step::Choose { leaf: false, .. } => "choose",
        Step::Choose { leaf: true, .. } => "chooseleaf",
        Step::Emit => "emit",
        Step::SetChooseTries(_) => "set_choose_tries",
        Step::SetChooseleafTries(_) => "set_chooseleaf_tries",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(kind: RuleKind, steps: Vec<Step>) -> Rule {
        Rule { id: RuleId(0), name: "r".into(), kind, steps }
    }

    fn take() -> Step {
        Step::Take { bucket: BucketId(-1), class: None }
    }

    fn choose(mode: ChooseMode, type_id: u16, leaf: bool) -> Step {
        Step::Choose { mode, count: 0, type_id, leaf }
    }

    #[test]
    fn simple_rules_have_a_valid_shape() {
        for kind in [RuleKind::Replicated, RuleKind::Erasure] {
            for failure_domain in [0, 1, 3] {
                let simple = SimpleRule { kind, root: BucketId(-1), failure_domain, class: None };
                check_shape(&rule(kind, simple.steps())).unwrap();
            }
        }
    }

    #[test]
    fn bad_shapes_are_named() {
        use ChooseMode::*;
        let cases = [
            (vec![], "no steps"),
            (vec![take(), Step::Emit], "emits buckets"),
            (vec![take(), choose(Firstn, 1, true)], "does not end with emit"),
            (vec![choose(Firstn, 1, true), Step::Emit], "no take"),
            (vec![take(), choose(Indep, 1, true), Step::Emit], "use firstn"),
            (vec![take(), choose(Firstn, 0, false), choose(Firstn, 1, true), Step::Emit], "OSDs"),
            (vec![Step::SetChooseTries(0), take(), choose(Firstn, 1, true), Step::Emit], "tries"),
            (vec![take(), take(), choose(Firstn, 1, true), Step::Emit], "no emit"),
        ];
        for (steps, want) in cases {
            let err = check_shape(&rule(RuleKind::Replicated, steps.clone())).unwrap_err();
            assert!(err.contains(want), "{steps:?}: '{err}' does not mention '{want}'");
        }
    }

    #[test]
    fn multi_group_rules_are_allowed() {
        use ChooseMode::*;
        let steps = vec![
            take(),
            choose(Firstn, 1, true),
            Step::Emit,
            take(),
            choose(Firstn, 3, false),
            choose(Firstn, 1, true),
            Step::Emit,
        ];
        check_shape(&rule(RuleKind::Replicated, steps)).unwrap();
    }
}
