//! Linearizability of a recorded history against a model of fleet's keyed state: the
//! Wing–Gong–Lowe search with Lowe's memoisation (as porcupine does it), partitioned per key.
//!
//! An operation whose outcome is unknown (a timeout, a dropped connection) returns "at
//! infinity" and matches any outcome: it may have taken effect at any point after it was
//! invoked, or never.

use std::collections::{BTreeMap, HashSet};

/// What a client asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Input {
    /// Register a cluster under the key, carrying `value` (a label).
    Register { value: u64 },
    /// Remove the cluster.
    Remove,
    /// Read the cluster: its value, or none.
    Get,
    /// Publish a release of the workload under the key.
    Publish { revision: u64 },
    /// Read the workload's newest release.
    Latest,
}

/// What the client got back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    Ok,
    AlreadyExists,
    NotFound,
    Value(Option<u64>),
    /// Timed out or lost: it may or may not have happened.
    Unknown,
}

/// One completed (or indeterminate) client operation.
#[derive(Debug, Clone)]
pub struct Operation {
    pub id: u64,
    pub client: u64,
    pub key: String,
    pub input: Input,
    pub output: Output,
    /// Nanoseconds since the run started.
    pub invoked_ns: u64,
    /// `None` when the outcome is unknown.
    pub returned_ns: Option<u64>,
}

/// The model's state of one key: a cluster's value or a workload's newest revision.
type ModelState = Option<u64>;

/// The model step: the state after `input` answered with `output`, or `None` if the model
/// could not have answered that.
fn step(state: ModelState, input: &Input, output: &Output) -> Option<ModelState> {
    let unknown = *output == Output::Unknown;
    match input {
        Input::Register { value } => match state {
            None if unknown || *output == Output::Ok => Some(Some(*value)),
            Some(_) if unknown || *output == Output::AlreadyExists => Some(state),
            _ => None,
        },
        Input::Remove => match state {
            Some(_) if unknown || *output == Output::Ok => Some(None),
            None if unknown || *output == Output::NotFound => Some(None),
            _ => None,
        },
        Input::Publish { revision } => {
            (unknown || *output == Output::Ok).then_some(Some(*revision))
        }
        Input::Get | Input::Latest => (unknown || *output == Output::Value(state)).then_some(state),
    }
}

/// The verdict on one key's history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Linearizable,
    /// No order explains the history; the operations of the longest prefix the search could
    /// explain are given for the report.
    Violation {
        key: String,
        explained: usize,
        operations: usize,
    },
    /// The search gave up after its step budget.
    Inconclusive {
        key: String,
    },
}

#[derive(Clone, Copy)]
struct Entry {
    op: usize,
    is_call: bool,
    prev: usize,
    next: usize,
}

/// Checks one key's operations (all on the same key). `budget` bounds the search steps.
pub fn check_key(key: &str, ops: &[&Operation], budget: u64) -> Verdict {
    let n = ops.len();
    if n == 0 {
        return Verdict::Linearizable;
    }
    // Events in time order; a call sorts before a return at the same instant, so operations
    // that touch are taken as concurrent (the lenient, sound choice).
    let mut events: Vec<(u64, bool, usize)> = Vec::with_capacity(2 * n);
    for (i, op) in ops.iter().enumerate() {
        events.push((op.invoked_ns, true, i));
        events.push((op.returned_ns.unwrap_or(u64::MAX), false, i));
    }
    events.sort_by_key(|(t, is_call, i)| (*t, !*is_call, *i));
    // A doubly linked list with a sentinel head at index 0.
    let mut list: Vec<Entry> = Vec::with_capacity(2 * n + 1);
    list.push(Entry {
        op: usize::MAX,
        is_call: false,
        prev: 0,
        next: 1,
    });
    let mut call_at = vec![0; n];
    let mut return_at = vec![0; n];
    for (k, (_, is_call, op)) in events.iter().enumerate() {
        let index = k + 1;
        list.push(Entry {
            op: *op,
            is_call: *is_call,
            prev: index - 1,
            next: if k + 1 < events.len() { index + 1 } else { 0 },
        });
        if *is_call {
            call_at[*op] = index;
        } else {
            return_at[*op] = index;
        }
    }
    let words = n.div_ceil(64);
    let mut linearized = vec![0u64; words];
    let mut cache: HashSet<(Vec<u64>, ModelState)> = HashSet::new();
    let mut stack: Vec<(usize, ModelState)> = Vec::new();
    let mut state: ModelState = None;
    let mut entry = list[0].next;
    let mut steps = 0u64;
    let mut most = 0;
    while list[0].next != 0 {
        steps += 1;
        if steps > budget {
            return Verdict::Inconclusive { key: key.into() };
        }
        let e = list[entry];
        if e.is_call {
            let op = ops[e.op];
            if let Some(next_state) = step(state, &op.input, &op.output) {
                let mut bits = linearized.clone();
                bits[e.op / 64] |= 1 << (e.op % 64);
                if cache.insert((bits.clone(), next_state)) {
                    stack.push((e.op, state));
                    state = next_state;
                    linearized = bits;
                    lift(&mut list, call_at[e.op], return_at[e.op]);
                    most = most.max(stack.len());
                    entry = list[0].next;
                    continue;
                }
            }
            entry = e.next;
        } else {
            // An operation returned before any order could place it: undo the last choice.
            let Some((op, before)) = stack.pop() else {
                return Verdict::Violation {
                    key: key.into(),
                    explained: most,
                    operations: n,
                };
            };
            state = before;
            linearized[op / 64] &= !(1 << (op % 64));
            unlift(&mut list, call_at[op], return_at[op]);
            entry = list[call_at[op]].next;
        }
    }
    Verdict::Linearizable
}

fn lift(list: &mut [Entry], call: usize, ret: usize) {
    for i in [call, ret] {
        let (p, n) = (list[i].prev, list[i].next);
        list[p].next = n;
        list[n].prev = p;
    }
}

fn unlift(list: &mut [Entry], call: usize, ret: usize) {
    for i in [ret, call] {
        let (p, n) = (list[i].prev, list[i].next);
        list[p].next = i;
        list[n].prev = i;
    }
}

/// Checks every key of `history`; returns the verdicts that are not `Linearizable`.
pub fn check(history: &[Operation], budget_per_key: u64) -> Vec<Verdict> {
    let mut by_key: BTreeMap<&str, Vec<&Operation>> = BTreeMap::new();
    for op in history {
        by_key.entry(op.key.as_str()).or_default().push(op);
    }
    by_key
        .into_iter()
        .map(|(key, ops)| check_key(key, &ops, budget_per_key))
        .filter(|v| *v != Verdict::Linearizable)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn op(id: u64, input: Input, output: Output, at: (u64, Option<u64>)) -> Operation {
        Operation {
            id,
            client: id,
            key: "k".into(),
            input,
            output,
            invoked_ns: at.0,
            returned_ns: at.1,
        }
    }

    fn verdict(history: &[Operation]) -> Verdict {
        let ops: Vec<&Operation> = history.iter().collect();
        check_key("k", &ops, 1_000_000)
    }

    #[test]
    fn a_read_after_an_acknowledged_register_must_see_it() {
        let ok = [
            op(1, Input::Register { value: 7 }, Output::Ok, (0, Some(10))),
            op(2, Input::Get, Output::Value(Some(7)), (20, Some(30))),
        ];
        assert_eq!(verdict(&ok), Verdict::Linearizable);
        let stale = [
            op(1, Input::Register { value: 7 }, Output::Ok, (0, Some(10))),
            op(2, Input::Get, Output::Value(None), (20, Some(30))),
        ];
        assert!(matches!(verdict(&stale), Verdict::Violation { .. }));
    }

    #[test]
    fn concurrent_operations_may_take_either_order() {
        let history = [
            op(1, Input::Register { value: 7 }, Output::Ok, (0, Some(100))),
            op(2, Input::Get, Output::Value(None), (10, Some(20))),
            op(3, Input::Get, Output::Value(Some(7)), (30, Some(40))),
        ];
        assert_eq!(verdict(&history), Verdict::Linearizable);
        // ...but not both orders at once: once a read saw it, a later read must too.
        let flicker = [
            op(1, Input::Register { value: 7 }, Output::Ok, (0, Some(100))),
            op(2, Input::Get, Output::Value(Some(7)), (10, Some(20))),
            op(3, Input::Get, Output::Value(None), (30, Some(40))),
        ];
        assert!(matches!(verdict(&flicker), Verdict::Violation { .. }));
    }

    #[test]
    fn an_unknown_write_may_have_happened_late_or_never() {
        let never = [
            op(1, Input::Publish { revision: 1 }, Output::Ok, (0, Some(10))),
            op(
                2,
                Input::Publish { revision: 2 },
                Output::Unknown,
                (20, None),
            ),
            op(3, Input::Latest, Output::Value(Some(1)), (30, Some(40))),
        ];
        assert_eq!(verdict(&never), Verdict::Linearizable);
        let late = [
            op(1, Input::Publish { revision: 1 }, Output::Ok, (0, Some(10))),
            op(
                2,
                Input::Publish { revision: 2 },
                Output::Unknown,
                (20, None),
            ),
            op(3, Input::Latest, Output::Value(Some(1)), (30, Some(40))),
            op(4, Input::Latest, Output::Value(Some(2)), (50, Some(60))),
        ];
        assert_eq!(verdict(&late), Verdict::Linearizable);
        let before_invoked = [
            op(1, Input::Latest, Output::Value(Some(2)), (0, Some(10))),
            op(
                2,
                Input::Publish { revision: 2 },
                Output::Unknown,
                (20, None),
            ),
        ];
        assert!(matches!(
            verdict(&before_invoked),
            Verdict::Violation { .. }
        ));
    }

    #[test]
    fn a_lost_acknowledged_publish_is_a_violation() {
        let history = [
            op(1, Input::Publish { revision: 1 }, Output::Ok, (0, Some(10))),
            op(
                2,
                Input::Publish { revision: 2 },
                Output::Ok,
                (20, Some(30)),
            ),
            op(3, Input::Latest, Output::Value(Some(1)), (40, Some(50))),
        ];
        assert!(matches!(verdict(&history), Verdict::Violation { .. }));
    }

    #[test]
    fn register_remove_and_refusals_follow_the_model() {
        let history = [
            op(1, Input::Register { value: 1 }, Output::Ok, (0, Some(10))),
            op(
                2,
                Input::Register { value: 2 },
                Output::AlreadyExists,
                (20, Some(30)),
            ),
            op(3, Input::Remove, Output::Ok, (40, Some(50))),
            op(4, Input::Remove, Output::NotFound, (60, Some(70))),
            op(5, Input::Get, Output::Value(None), (80, Some(90))),
        ];
        assert_eq!(verdict(&history), Verdict::Linearizable);
        let refused_wrongly = [op(
            1,
            Input::Register { value: 1 },
            Output::AlreadyExists,
            (0, Some(10)),
        )];
        assert!(matches!(
            verdict(&refused_wrongly),
            Verdict::Violation { .. }
        ));
    }
}
