//! The table tests of `select`: one row per situation, the expected primary, backups and
//! reasons.

use std::time::{Duration, SystemTime};

use super::hysteresis::Flip;
use super::*;
use crate::probe::rpc::Implementation;
use crate::probe::rpc::{Head, Identity, RpcError};

fn rules() -> SelectRules {
    SelectRules::basic(2, 2, 3)
}

const GENESIS_TS: u64 = 1_000;

fn head(height: u64, weight: u128) -> Head {
    // Nodes at one height share a tipset unless the table gives it another weight: two
    // weights at one height are two tipsets.
    let key = if weight == u128::from(height) * 10 {
        format!("bafy{height}")
    } else {
        format!("bafy{height}w{weight}")
    };
    Head {
        height,
        weight,
        key: vec![key],
        timestamp: GENESIS_TS + height * 30,
        blocks: 1,
        proof: Default::default(),
        parents: Vec::new(),
    }
}

fn ident(implementation: Implementation) -> Identity {
    Identity {
        implementation,
        version: "1.28.1+mainnet+git.1".into(),
        network: Some("testnet".into()),
        genesis: "bafyGenesis".into(),
        genesis_timestamp: GENESIS_TS,
        block_delay: Some(30),
    }
}

/// "Now" for a round: just after the highest head of the round was made.
fn now_for(obs: &[Observation]) -> SystemTime {
    let top = obs
        .iter()
        .filter_map(|o| o.result.as_ref().ok())
        .map(|h| h.height)
        .max()
        .unwrap_or(0);
    SystemTime::UNIX_EPOCH + Duration::from_secs(GENESIS_TS + top * 30 + 5)
}

/// What a node answers in one round, written compactly in the tables below.
#[derive(Clone, Copy)]
enum A {
    /// Height; the weight grows with the height.
    H(u64),
    /// Height and explicit weight.
    HW(u64, u128),
    Timeout,
    Refused,
}

fn observe(names: &[&str], answers: &[A]) -> Vec<Observation> {
    names
        .iter()
        .zip(answers)
        .map(|(n, a)| {
            let mut o = Observation::new(
                n,
                match *a {
                    A::H(h) => Ok(head(h, u128::from(h) * 10)),
                    A::HW(h, w) => Ok(head(h, w)),
                    A::Timeout => Err(RpcError::Timeout(Duration::from_secs(3))),
                    A::Refused => Err(RpcError::Connect("Connection refused".into())),
                },
            );
            o.identity = Some(ident(Implementation::Lotus));
            o
        })
        .collect()
}

/// Runs rounds; returns every decision.
fn run(rules: &SelectRules, names: &[&str], rounds: &[Vec<A>]) -> Vec<Decision> {
    let rounds: Vec<Vec<Observation>> = rounds.iter().map(|a| observe(names, a)).collect();
    run_obs(rules, &ChainConfig::default(), &rounds)
}

fn run_obs(rules: &SelectRules, chain: &ChainConfig, rounds: &[Vec<Observation>]) -> Vec<Decision> {
    let mut state = SelectState::default();
    rounds
        .iter()
        .map(|obs| {
            let (d, next) = select(
                rules,
                chain,
                &Overrides::default(),
                &state,
                obs,
                now_for(obs),
                Trigger::Probe,
            );
            state = next;
            d
        })
        .collect()
}

fn up(h: u64) -> Vec<A> {
    vec![A::H(h), A::H(h), A::H(h)]
}

struct Row {
    what: &'static str,
    rounds: Vec<Vec<A>>,
    primary: Option<&'static str>,
    backups: &'static [&'static str],
    /// (node, words its reason must contain)
    reasons: &'static [(&'static str, &'static str)],
}

#[test]
fn table() {
    use A::*;
    let abc = ["a", "b", "c"];
    let rows = vec![
        Row {
            what: "nobody is used before rise good probes",
            rounds: vec![up(100)],
            primary: None,
            backups: &[],
            reasons: &[("a", "rising: 1 of 2"), ("c", "rising: 1 of 2")],
        },
        Row {
            what: "after rise, the first in config order wins a tie",
            rounds: vec![up(100), up(101)],
            primary: Some("a"),
            backups: &["b", "c"],
            reasons: &[("a", "healthy")],
        },
        Row {
            what: "the heaviest head wins, not config order",
            rounds: vec![vec![H(100), H(101), H(101)]; 2],
            primary: Some("b"),
            backups: &["c", "a"],
            reasons: &[],
        },
        Row {
            what: "a head only one node reports does not outrank a shared one (on time)",
            rounds: vec![vec![H(100), H(101), H(100)]; 2],
            primary: Some("a"),
            backups: &["c", "b"],
            reasons: &[("b", "healthy")],
        },
        Row {
            what: "a heavier claim at the pool's own height evicts nobody and wins nothing",
            rounds: vec![vec![H(100), HW(100, 1001), H(100)]; 3],
            primary: Some("a"),
            backups: &["c", "b"],
            reasons: &[("a", "healthy"), ("c", "healthy")],
        },
        Row {
            what: "weight beats height",
            rounds: vec![vec![HW(100, 5000), HW(101, 900), HW(100, 1000)]; 2],
            primary: Some("a"),
            backups: &["c", "b"],
            reasons: &[],
        },
        Row {
            what: "equal weight: greater height wins",
            rounds: vec![vec![HW(100, 1000), HW(101, 1000), HW(101, 1000)]; 2],
            primary: Some("b"),
            backups: &["c", "a"],
            reasons: &[],
        },
        Row {
            what: "sticky: a primary one block behind stays",
            rounds: vec![
                up(100),
                up(101),
                vec![H(102), H(103), H(103)],
                vec![H(103), H(104), H(104)],
            ],
            primary: Some("a"),
            backups: &["b", "c"],
            reasons: &[("a", "healthy")],
        },
        Row {
            what: "a lagging node is bad, with the lag in words",
            rounds: vec![vec![H(100), H(107), H(107)]; 2],
            primary: Some("b"),
            backups: &["c"],
            reasons: &[("a", "lagging 7 epochs (max 2)")],
        },
        Row {
            what: "lag of exactly max_lag is healthy; backups ranked by head",
            rounds: vec![vec![H(105), H(107), H(107)]; 2],
            primary: Some("b"),
            backups: &["c", "a"],
            reasons: &[("a", "healthy")],
        },
        Row {
            what: "one bad probe does not drop the primary (fall = 3)",
            rounds: vec![up(100), up(101), vec![Timeout, H(102), H(102)]],
            primary: Some("a"),
            backups: &["b", "c"],
            reasons: &[(
                "a",
                "timeout after 3s; still in, dropped after 2 more bad probes",
            )],
        },
        Row {
            what: "fall bad probes drop the primary; the best backup takes over",
            rounds: vec![
                up(100),
                up(101),
                vec![Refused, H(102), H(103)],
                vec![Refused, H(103), H(104)],
                vec![Refused, H(104), H(105)],
            ],
            primary: Some("c"),
            backups: &["b"],
            reasons: &[("a", "cannot connect: Connection refused")],
        },
        Row {
            what: "a recovered node rises back as backup; the primary does not flip back",
            rounds: vec![
                up(100),
                up(101),
                vec![Refused, H(102), H(102)],
                vec![Refused, H(103), H(103)],
                vec![Refused, H(104), H(104)],
                vec![H(105), H(105), H(105)],
                vec![H(106), H(106), H(106)],
            ],
            primary: Some("b"),
            backups: &["a", "c"],
            reasons: &[],
        },
        Row {
            what: "half-way back: one good probe is not enough",
            rounds: vec![
                up(100),
                up(101),
                vec![Refused, H(102), H(102)],
                vec![Refused, H(103), H(103)],
                vec![Refused, H(104), H(104)],
                vec![H(105), H(105), H(105)],
            ],
            primary: Some("b"),
            backups: &["c"],
            reasons: &[("a", "rising: 1 of 2")],
        },
        Row {
            what: "all down: no primary (fail static), every reason given",
            rounds: vec![
                up(100),
                up(101),
                vec![Timeout, Refused, Timeout],
                vec![Timeout, Refused, Timeout],
                vec![Timeout, Refused, Timeout],
            ],
            primary: None,
            backups: &[],
            reasons: &[("a", "timeout after 3s"), ("b", "Connection refused")],
        },
        Row {
            what: "a flapping node never comes up",
            rounds: vec![
                vec![H(100), H(100), Timeout],
                vec![H(101), H(101), H(101)],
                vec![H(102), H(102), Timeout],
                vec![H(103), H(103), H(103)],
                vec![H(104), H(104), Timeout],
            ],
            primary: Some("a"),
            backups: &["b"],
            reasons: &[("c", "timeout")],
        },
        Row {
            what: "a flapping primary is never dropped while fall is not reached",
            rounds: vec![
                up(100),
                up(101),
                vec![Timeout, H(102), H(102)],
                vec![H(103), H(103), H(103)],
                vec![Timeout, H(104), H(104)],
                vec![Timeout, H(105), H(105)],
            ],
            primary: Some("a"),
            backups: &["b", "c"],
            reasons: &[],
        },
    ];
    for row in rows {
        let decisions = run(&rules(), &abc, &row.rounds);
        let d = decisions.last().expect("at least one round");
        assert_eq!(d.primary.as_deref(), row.primary, "{}: {d:#?}", row.what);
        assert_eq!(d.backups, row.backups, "{}", row.what);
        for (node, words) in row.reasons {
            let v = d.verdict(node).expect("node");
            assert!(
                v.reason.contains(words),
                "{}: {node}: {:?} lacks {words:?}",
                row.what,
                v.reason
            );
        }
        for v in &d.nodes {
            let in_upstream =
                d.primary.as_deref() == Some(v.name.as_str()) || d.backups.contains(&v.name);
            assert_eq!(
                v.healthy, in_upstream,
                "{}: {} healthy but not used",
                row.what, v.name
            );
        }
    }
}

/// Flap damping: a node that was dropped serves as a backup at once but becomes primary
/// only after its hold-down, which doubles with each drop in the hour.
#[test]
fn a_dropped_node_is_held_down_before_it_can_be_primary_again() {
    use A::*;
    let rules = SelectRules::basic(2, 1, 1);
    let names = ["a", "b", "c"];
    let rounds: Vec<(u64, Vec<A>)> = vec![
        (10, vec![H(10), H(10), H(10)]),
        (11, vec![Timeout, H(11), H(11)]),
        (12, vec![H(12), H(12), H(12)]),
        (13, vec![H(13), Timeout, H(13)]),
        (15, vec![H(15), H(15), H(15)]),
        (16, vec![Timeout, H(16), H(16)]),
        (17, vec![H(17), H(17), H(17)]),
        // More than an hour after both drops: they no longer count.
        (138, vec![Timeout, H(138), H(138)]),
        (139, vec![H(139), H(139), H(139)]),
    ];
    let mut state = SelectState::default();
    let d: Vec<Decision> = rounds
        .iter()
        .map(|(clock, answers)| {
            let (d, next) = select(
                &rules,
                &ChainConfig::default(),
                &Overrides::default(),
                &state,
                &observe(&names, answers),
                at_height(*clock),
                Trigger::Probe,
            );
            state = next;
            d
        })
        .collect();
    let held = |d: &Decision, n: &str| d.verdict(n).and_then(|v| v.held_for);
    assert_eq!(d[0].primary.as_deref(), Some("a"));
    assert_eq!(held(&d[0], "a"), None, "a first rise is not held");
    assert_eq!(d[1].primary.as_deref(), Some("b"));
    // Back up: a backup at once, held for two block delays.
    assert!(d[2].backups.contains(&"a".to_string()));
    assert_eq!(held(&d[2], "a"), Some(Duration::from_secs(60)));
    assert!(
        reason(&d[2], "a").contains("held down for 1m more after 1 drop"),
        "{}",
        reason(&d[2], "a")
    );
    // The primary fails while a is held: c, although a ranks first.
    assert_eq!(d[3].primary.as_deref(), Some("c"));
    assert_eq!(held(&d[3], "a"), Some(Duration::from_secs(30)));
    assert_eq!(held(&d[4], "a"), None, "the hold has passed");
    assert_eq!(d[4].primary.as_deref(), Some("c"), "the primary stays");
    // A second drop within the hour doubles the hold.
    assert_eq!(held(&d[6], "a"), Some(Duration::from_secs(120)));
    assert_eq!(held(&d[8], "a"), Some(Duration::from_secs(60)));
}

#[test]
fn a_held_node_is_still_used_when_it_is_the_only_one_up() {
    use A::*;
    let rules = SelectRules::basic(2, 1, 1);
    let d = run(
        &rules,
        &["a", "b"],
        &[
            vec![H(10), H(10)],
            vec![Timeout, H(11)],
            vec![H(12), H(12)],
            vec![H(12), Timeout],
        ],
    );
    assert!(d[3].verdict("a").and_then(|v| v.held_for).is_some());
    assert_eq!(
        d[3].primary.as_deref(),
        Some("a"),
        "better held than nothing"
    );
}

#[test]
fn a_zero_hold_down_turns_damping_off() {
    use A::*;
    let mut rules = SelectRules::basic(2, 1, 1);
    rules.hold_down = Some(Duration::ZERO);
    let d = run(
        &rules,
        &["a", "b"],
        &[vec![H(10), H(10)], vec![Timeout, H(11)], vec![H(12), H(12)]],
    );
    assert_eq!(d[2].verdict("a").and_then(|v| v.held_for), None);
}

/// A hot reload can lower `fall` below the bad probes a node that is still up has already
/// had. Between probe rounds (a pushed head) counters do not advance, so the node is still
/// up with more bad probes than `fall`: no underflow in the reason, and the next probe
/// drops it.
#[test]
fn a_smaller_fall_after_a_reload_does_not_underflow() {
    use A::*;
    let names = ["a", "b"];
    let mut state = SelectState::default();
    let mut step = |rules: &SelectRules, answers: &[A], trigger: Trigger| {
        let obs = observe(&names, answers);
        let (d, next) = select(
            rules,
            &ChainConfig::default(),
            &Overrides::default(),
            &state,
            &obs,
            now_for(&obs),
            trigger,
        );
        state = next;
        d
    };
    let five = SelectRules::basic(2, 1, 5);
    step(&five, &[H(10), H(10)], Trigger::Probe);
    for _ in 0..3 {
        step(&five, &[Timeout, H(10)], Trigger::Probe);
    }
    // `fall` drops to 2 while a is up with 3 bad probes.
    let two = SelectRules::basic(2, 1, 2);
    let d = step(&two, &[Timeout, H(10)], Trigger::Push);
    assert!(d.verdict("a").is_some_and(|v| v.healthy));
    assert!(
        reason(&d, "a").contains("dropped after 1 more bad probe;")
            || reason(&d, "a").ends_with("dropped after 1 more bad probe"),
        "{}",
        reason(&d, "a")
    );
    let d = step(&two, &[Timeout, H(10)], Trigger::Probe);
    assert!(!d.verdict("a").is_some_and(|v| v.healthy));
}

/// Code reads the typed verdict; the words are checked once, here.
#[test]
fn verdicts_are_values_and_their_words_are_stable() {
    use A::*;
    let d = run(
        &rules(),
        &["a", "b", "c"],
        &[vec![H(10), H(10), H(10)], vec![H(13), H(10), Refused]],
    );
    let a = d[1].verdict("b").expect("b");
    assert_eq!(a.exclusion, Some(Exclusion::Lagging { epochs: 3, max: 2 }));
    assert_eq!(a.lag, Some(3), "a lagging node still shows its lag");
    assert!(
        a.reason.starts_with("lagging 3 epochs (max 2)"),
        "{}",
        a.reason
    );
    let c = d[1].verdict("c").expect("c");
    assert!(matches!(
        c.exclusion,
        Some(Exclusion::Probe(RpcError::Connect(_)))
    ));
    assert_eq!(d[1].verdict("a").and_then(|v| v.exclusion.clone()), None);
    for (e, words) in [
        (
            Exclusion::Stale {
                age: 200,
                stale_after: 150,
            },
            "stale: head is 3m 20s old (stale after 2m 30s)",
        ),
        (
            Exclusion::Behind {
                for_: Duration::from_millis(1500),
                grace: Duration::from_secs(1),
            },
            "behind the best head for 1s 500ms (lag_grace 1s)",
        ),
        (
            Exclusion::LighterFork {
                since: 7,
                epochs: 3,
                weight: 5,
                best: 9,
            },
            "on a lighter fork since height 7 (3 epochs; weight 5 < 9)",
        ),
    ] {
        assert_eq!(e.to_string(), words);
    }
}

/// The steps one by one, on a context built as `select` builds it.
mod steps {
    use super::super::choose::{apply_operator_marks, choose_backups, choose_primary};
    use super::super::heads::{find_best_head, remember_history};
    use super::super::hysteresis::apply_hysteresis;
    use super::super::identity::screen_identity;
    use super::super::lag::judge_nodes;
    use super::*;
    use crate::decide::overrides::Overrides;

    fn context<'a>(
        rules: &'a SelectRules,
        overrides: &'a Overrides,
        prev: &'a SelectState,
        obs: &'a [Observation],
    ) -> Context<'a> {
        Context::new(
            rules,
            &ChainConfig::default(),
            overrides,
            prev,
            obs,
            now_for(obs),
            Trigger::Probe,
        )
    }

    #[test]
    fn the_best_head_is_heaviest_then_highest_then_first_listed() {
        let rules = rules();
        let (o, p) = (Overrides::default(), SelectState::default());
        for (answers, best) in [
            (vec![A::H(10), A::H(10), A::H(10)], 10),
            (vec![A::HW(10, 50), A::HW(9, 90), A::HW(10, 60)], 9),
            (vec![A::HW(10, 90), A::HW(11, 90), A::Timeout], 11),
        ] {
            let obs = observe(&["a", "b", "c"], &answers);
            let mut cx = context(&rules, &o, &p, &obs);
            screen_identity(&mut cx);
            trust::confirm_heads(&mut cx);
            find_best_head(&mut cx);
            assert_eq!(cx.best.map(|b| b.height), Some(best));
        }
    }

    #[test]
    fn judging_marks_lag_and_keeps_eligible_nodes_clean() {
        let rules = rules();
        let (o, p) = (Overrides::default(), SelectState::default());
        let obs = observe(&["a", "b"], &[A::H(20), A::H(16)]);
        let mut cx = context(&rules, &o, &p, &obs);
        screen_identity(&mut cx);
        trust::confirm_heads(&mut cx);
        find_best_head(&mut cx);
        remember_history(&mut cx);
        judge_nodes(&mut cx);
        assert_eq!(cx.work[0].bad, None);
        assert_eq!(
            cx.work[1].bad,
            Some(Exclusion::Lagging { epochs: 4, max: 2 })
        );
        let lag: Vec<Option<u64>> = cx.work.iter().map(|w| w.lag).collect();
        assert_eq!(lag, vec![Some(0), Some(4)]);
    }

    #[test]
    fn backups_lead_with_another_implementation() {
        let rules = SelectRules::basic(2, 1, 1);
        let (o, p) = (Overrides::default(), SelectState::default());
        let mut obs = observe(&["a", "b", "c"], &[A::H(10), A::H(10), A::H(10)]);
        obs[2].identity.as_mut().expect("id").implementation = Implementation::Forest;
        let mut cx = context(&rules, &o, &p, &obs);
        screen_identity(&mut cx);
        trust::confirm_heads(&mut cx);
        find_best_head(&mut cx);
        remember_history(&mut cx);
        judge_nodes(&mut cx);
        apply_hysteresis(&mut cx);
        apply_operator_marks(&mut cx);
        choose_primary(&mut cx);
        choose_backups(&mut cx);
        assert_eq!(cx.primary, Some(0));
        assert_eq!(cx.backups, vec![2, 1]);
    }
}

#[test]
fn one_node_pool() {
    let d = run(&rules(), &["solo"], &[vec![A::H(5)], vec![A::H(6)]]);
    assert_eq!(d[1].primary.as_deref(), Some("solo"));
    assert!(d[1].backups.is_empty());
}

/// The rise/fall state machine alone: (probes, rise, fall, flips expected).
#[test]
fn a_track_flips_only_at_its_thresholds() {
    use Flip::{Down, Up};
    let rows: &[(&str, u32, u32, &[Option<Flip>])] = &[
        ("ggbgg", 2, 3, &[None, Some(Up), None, None, None]),
        ("gbbb", 1, 3, &[Some(Up), None, None, Some(Down)]),
        (
            "ggbgbbb",
            2,
            2,
            &[None, Some(Up), None, None, None, Some(Down), None],
        ),
        ("bbbg", 1, 1, &[None, None, None, Some(Up)]),
        ("gF", 1, 5, &[Some(Up), Some(Down)]),
    ];
    for (probes, rise, fall, want) in rows {
        let mut t = Track::default();
        let got: Vec<Option<Flip>> = probes
            .chars()
            .map(|c| t.observe(c == 'g', c == 'F', *rise, *fall))
            .collect();
        assert_eq!(&got, want, "{probes} rise {rise} fall {fall}");
    }
    let mut t = Track::default();
    assert_eq!(t.force_down(), None, "already down");
    t.observe(true, false, 1, 1);
    assert_eq!(t.force_down(), Some(Flip::Down));
}

#[test]
fn rise_and_fall_of_one_are_immediate() {
    let rules = SelectRules::basic(0, 1, 1);
    let d = run(
        &rules,
        &["a", "b"],
        &[vec![A::H(5), A::H(5)], vec![A::Timeout, A::H(6)]],
    );
    assert_eq!(d[0].primary.as_deref(), Some("a"));
    assert_eq!(d[1].primary.as_deref(), Some("b"));
}

#[test]
fn switches_are_reported_with_the_reason() {
    let d = run(
        &rules(),
        &["a", "b"],
        &[
            vec![A::H(1), A::H(1)],
            vec![A::H(2), A::H(2)],
            vec![A::Refused, A::H(3)],
            vec![A::Refused, A::H(4)],
            vec![A::Refused, A::H(5)],
        ],
    );
    assert_eq!(d[0].switch, None, "no primary before and none now");
    let first = d[1].switch.as_ref().expect("first primary");
    assert_eq!(
        (first.from.as_deref(), first.to.as_deref()),
        (None, Some("a"))
    );
    assert!(d[2].switch.is_none() && d[3].switch.is_none());
    let moved = d[4].switch.as_ref().expect("moved");
    assert_eq!(
        (moved.from.as_deref(), moved.to.as_deref()),
        (Some("a"), Some("b"))
    );
    assert!(
        moved.why.contains("a went down: cannot connect"),
        "{}",
        moved.why
    );
}

#[test]
fn after_everything_failed_the_old_primary_is_remembered() {
    let d = run(
        &SelectRules::basic(2, 1, 1),
        &["a", "b"],
        &[
            vec![A::H(1), A::H(1)],
            vec![A::Timeout, A::Timeout],
            vec![A::H(2), A::H(2)],
        ],
    );
    assert_eq!(d[1].primary, None);
    assert!(d[1]
        .switch
        .as_ref()
        .expect("lost")
        .why
        .contains("no healthy node left"));
    assert_eq!(d[2].primary.as_deref(), Some("a"));
    assert_eq!(d[2].switch, None, "a is what nginx still has: no switch");
}

#[test]
fn head_age_comes_from_now_not_the_clock() {
    let d = run(&rules(), &["a"], &[vec![A::H(10)]]);
    // now = head timestamp + 5 s (see now_for).
    assert_eq!(d[0].nodes[0].head_age, Some(Duration::from_secs(5)));
    assert_eq!(d[0].expected_height, Some(10));
}

// ---- chain-aware rules ----

fn node(name: &str, h: u64) -> Observation {
    let mut o = Observation::new(name, Ok(head(h, u128::from(h) * 10)));
    o.identity = Some(ident(Implementation::Lotus));
    o
}

fn on(mut o: Observation, f: impl FnOnce(&mut Observation)) -> Observation {
    f(&mut o);
    o
}

fn at_height(h: u64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(GENESIS_TS + h * 30 + 5)
}

/// One pool decided round after round with one memory, each round at its own time and
/// trigger.
struct Rounds {
    rules: SelectRules,
    state: SelectState,
}

impl Rounds {
    fn new(rules: SelectRules) -> Rounds {
        Rounds {
            rules,
            state: SelectState::default(),
        }
    }

    fn go(&mut self, obs: Vec<Observation>, now: SystemTime, trigger: Trigger) -> Decision {
        let (d, next) = select(
            &self.rules,
            &ChainConfig::default(),
            &Overrides::default(),
            &self.state,
            &obs,
            now,
            trigger,
        );
        self.state = next;
        d
    }
}

/// Runs rounds at explicit clock heights.
fn run_at(
    rules: &SelectRules,
    chain: &ChainConfig,
    rounds: &[(u64, Vec<Observation>)],
) -> Vec<Decision> {
    let mut state = SelectState::default();
    rounds
        .iter()
        .map(|(clock, obs)| {
            let (d, next) = select(
                rules,
                chain,
                &Overrides::default(),
                &state,
                obs,
                at_height(*clock),
                Trigger::Probe,
            );
            state = next;
            d
        })
        .collect()
}

fn reason<'a>(d: &'a Decision, n: &str) -> &'a str {
    &d.verdict(n).expect("node").reason
}

fn says(ready: bool) -> impl FnOnce(&mut Observation) {
    move |o: &mut Observation| {
        o.own_word = Some(crate::probe::health::OwnWord {
            readiness: Some(if ready {
                crate::probe::health::Readiness::Ready
            } else {
                crate::probe::health::Readiness::NotReady {
                    status: 503,
                    failing: vec!["epoch outdated".into()],
                }
            }),
            node_status: None,
        })
    }
}

#[test]
fn a_daemon_that_says_it_is_ready_wins_a_tie_and_one_that_says_not_is_still_used() {
    let round = |a_ready: bool| {
        vec![
            on(node("a", 100), says(a_ready)),
            on(node("b", 100), says(true)),
            node("c", 100),
        ]
    };
    // Equal heads: "b says ready" ranks before "c says nothing" before "a says not".
    let d = run_at(
        &rules(),
        &ChainConfig::default(),
        &[(100, round(false)), (100, round(false))],
    );
    let last = d.last().expect("decisions");
    assert_eq!(last.primary.as_deref(), Some("b"));
    assert_eq!(last.backups, vec!["c".to_string(), "a".to_string()]);
    assert!(last.nodes.iter().all(|v| v.healthy), "none excluded");
    // A heavier head outranks the daemon's own word: it never holds the chain back.
    let heavier = vec![
        on(node("a", 101), says(false)),
        on(node("b", 100), says(true)),
    ];
    let d = run_at(
        &rules(),
        &ChainConfig::default(),
        &[(101, heavier.clone()), (101, heavier)],
    );
    assert_eq!(d.last().expect("decisions").primary.as_deref(), Some("a"));
}

#[test]
fn a_node_that_lacks_the_providers_messages_loses_a_tie_and_nothing_more() {
    let behind = |n: u64| move |o: &mut Observation| o.messages_behind = Some(n);
    let dead = |n: &str| Observation::new(n, Err(RpcError::Connect("refused".into())));
    struct Row {
        what: &'static str,
        rounds: Vec<Vec<Observation>>,
        primary: &'static str,
        backups: Vec<&'static str>,
    }
    let rows = vec![
        Row {
            what: "equal heads: the node holding every message is promoted",
            rounds: vec![
                vec![on(node("a", 100), behind(2)), node("b", 100)],
                vec![on(node("a", 100), behind(2)), node("b", 100)],
            ],
            primary: "b",
            backups: vec!["a"],
        },
        Row {
            what: "not compared yet counts as not behind: config order decides",
            rounds: vec![
                vec![node("a", 100), on(node("b", 100), behind(0))],
                vec![node("a", 100), on(node("b", 100), behind(0))],
            ],
            primary: "a",
            backups: vec!["b"],
        },
        Row {
            what: "a heavier head still wins: messages never hold the chain back",
            rounds: vec![
                vec![on(node("a", 101), behind(5)), node("b", 100)],
                vec![on(node("a", 101), behind(5)), node("b", 100)],
            ],
            primary: "a",
            backups: vec!["b"],
        },
        Row {
            what: "the primary dies: the backup that holds its messages takes over",
            rounds: vec![
                vec![node("a", 100), node("b", 100), node("c", 100)],
                vec![node("a", 100), node("b", 100), node("c", 100)],
                vec![
                    dead("a"),
                    on(node("b", 101), behind(1)),
                    on(node("c", 101), behind(0)),
                ],
                vec![
                    dead("a"),
                    on(node("b", 101), behind(1)),
                    on(node("c", 101), behind(0)),
                ],
                vec![
                    dead("a"),
                    on(node("b", 101), behind(1)),
                    on(node("c", 101), behind(0)),
                ],
            ],
            primary: "c",
            backups: vec!["b"],
        },
        Row {
            what: "the sticky primary stays even when a backup holds more",
            rounds: vec![
                vec![node("a", 100), node("b", 100)],
                vec![node("a", 100), node("b", 100)],
                vec![on(node("a", 101), behind(3)), node("b", 101)],
            ],
            primary: "a",
            backups: vec!["b"],
        },
    ];
    for row in rows {
        let rounds: Vec<(u64, Vec<Observation>)> = row
            .rounds
            .into_iter()
            .map(|obs| {
                let top = obs
                    .iter()
                    .filter_map(|o| o.result.as_ref().ok().map(|h| h.height))
                    .max()
                    .unwrap_or(0);
                (top, obs)
            })
            .collect();
        let d = run_at(&rules(), &ChainConfig::default(), &rounds);
        let last = d.last().expect("decisions");
        assert_eq!(
            last.primary.as_deref(),
            Some(row.primary),
            "{}: {:#?}",
            row.what,
            last.nodes
        );
        assert_eq!(last.backups, row.backups, "{}", row.what);
    }
}

#[test]
fn a_node_on_another_network_is_excluded_whatever_its_height() {
    let round = vec![
        node("a", 100),
        node("b", 100),
        on(node("c", 500), |o| {
            o.identity.as_mut().expect("id").network = Some("calibrationnet".into())
        }),
    ];
    let d = run_at(
        &rules(),
        &ChainConfig::default(),
        &[(100, round.clone()), (100, round)],
    );
    assert_eq!(d[1].primary.as_deref(), Some("a"));
    assert_eq!(d[1].network.as_deref(), Some("testnet"));
    assert!(
        reason(&d[1], "c").contains("on network \"calibrationnet\", the pool is on \"testnet\"")
    );
}

#[test]
fn an_even_network_split_is_refused_unless_configured() {
    let calib = |o: &mut Observation| {
        o.identity.as_mut().expect("id").network = Some("calibrationnet".into())
    };
    let round = vec![node("a", 100), on(node("b", 100), calib)];
    let d = run_obs(
        &rules(),
        &ChainConfig::default(),
        &[round.clone(), round.clone()],
    );
    assert_eq!(d[1].primary, None);
    assert!(d[1].warnings[0]
        .text
        .contains("splits evenly between networks calibrationnet and testnet"));
    let chain = ChainConfig {
        network: Some("calibrationnet".into()),
        genesis: Some("bafyGenesis".into()),
        ..ChainConfig::default()
    };
    let d = run_obs(&rules(), &chain, &[round.clone(), round]);
    assert_eq!(d[1].primary.as_deref(), Some("b"));
}

#[test]
fn a_known_network_brings_its_genesis() {
    // The nodes say "mainnet" but carry another genesis: they are not on mainnet.
    let round = vec![on(node("a", 100), |o| {
        o.identity.as_mut().expect("id").network = Some("mainnet".into())
    })];
    let d = run_obs(&rules(), &ChainConfig::default(), &[round]);
    assert!(reason(&d[0], "a")
        .contains("genesis bafyGenesis differs from the pool's bafy2bzacecnamqgq"));
}

#[test]
fn a_node_without_identity_is_not_used() {
    let round = vec![node("a", 100), on(node("b", 100), |o| o.identity = None)];
    let d = run_obs(&rules(), &ChainConfig::default(), &[round.clone(), round]);
    assert_eq!(d[1].backups, Vec::<String>::new());
    assert!(reason(&d[1], "b").starts_with("identity unknown"));
}

#[test]
fn a_head_from_the_future_is_excluded() {
    let round = vec![node("a", 100), node("b", 100), node("c", 104)];
    let d = run_at(
        &rules(),
        &ChainConfig::default(),
        &[(100, round.clone()), (100, round)],
    );
    assert_eq!(d[1].primary.as_deref(), Some("a"));
    assert!(
        reason(&d[1], "c").contains("head from the future: height 104 is 1m 55s ahead"),
        "{}",
        reason(&d[1], "c")
    );
}

#[test]
fn a_lone_leader_needs_a_plausible_weight() {
    // b and c are stuck at 100; a is at 120 with a normal weight: believed.
    let plausible = vec![node("a", 120), node("b", 100), node("c", 100)];
    let d = run_at(
        &rules(),
        &ChainConfig::default(),
        &[(120, plausible.clone()), (120, plausible)],
    );
    assert_eq!(d[1].primary.as_deref(), Some("a"));
    // a claims 120 with a weight a chain cannot gain in 20 epochs: not believed.
    let absurd = vec![
        on(node("a", 120), |o| o.result = Ok(head(120, 1_000_000))),
        node("b", 100),
        node("c", 100),
    ];
    let d = run_at(
        &rules(),
        &ChainConfig::default(),
        &[(120, absurd.clone()), (120, absurd)],
    );
    assert!(reason(&d[1], "a").contains("uncorroborated head: 20 epochs above every other node"));
    assert_ne!(d[1].primary.as_deref(), Some("a"));
}

#[test]
fn stale_heads_are_bad_and_a_stale_pool_fails_static_loudly() {
    let rules = SelectRules {
        stale_after: Some(Duration::from_secs(150)),
        ..SelectRules::basic(2, 1, 1)
    };
    let round = vec![node("a", 100), node("b", 100)];
    // Clock at 103: heads 95 s old, fine. Clock at 110: 305 s old, stale.
    let d = run_at(
        &rules,
        &ChainConfig::default(),
        &[(103, round.clone()), (110, round)],
    );
    assert_eq!(d[0].primary.as_deref(), Some("a"));
    assert_eq!(
        d[1].primary, None,
        "every node stale: no primary, the last upstream stays"
    );
    assert!(
        reason(&d[1], "a").contains("stale: head is 5m 5s old (stale after 2m 30s)"),
        "{}",
        reason(&d[1], "a")
    );
    assert!(d[1]
        .warnings
        .iter()
        .any(|w| w.text.contains("pool is stale") && w.text.contains("the chain is at 110")));
    assert_eq!(d[1].expected_height, Some(110));
}

#[test]
fn null_rounds_do_not_look_like_a_stall() {
    // Height jumps 100 → 103 (two null rounds); heads stay within stale_after.
    let d = run_at(
        &rules(),
        &ChainConfig::default(),
        &[
            (100, vec![node("a", 100), node("b", 100)]),
            (102, vec![node("a", 100), node("b", 100)]),
            (103, vec![node("a", 103), node("b", 103)]),
        ],
    );
    assert_eq!(d[2].primary.as_deref(), Some("a"));
    assert!(d[2].warnings.is_empty(), "{:?}", d[2].warnings);
}

#[test]
fn a_node_on_a_lighter_fork_is_dropped_once_the_fork_is_deeper_than_max_lag() {
    let fork = |h: u64| {
        on(node("c", h), move |o| {
            o.result = Ok(Head {
                key: vec![format!("fork{h}")],
                ..head(h, u128::from(h) * 10 - 5)
            })
        })
    };
    let rounds: Vec<(u64, Vec<Observation>)> = (100..=106)
        .map(|h| {
            (
                h,
                vec![
                    node("a", h),
                    node("b", h),
                    if h < 102 { node("c", h) } else { fork(h) },
                ],
            )
        })
        .collect();
    let d = run_at(
        &SelectRules::basic(2, 1, 1),
        &ChainConfig::default(),
        &rounds,
    );
    assert_eq!(
        d[3].backups,
        vec!["b", "c"],
        "one epoch on a fork is normal"
    );
    assert!(
        reason(&d[6], "c").contains("on a lighter fork since height 102"),
        "{}",
        reason(&d[6], "c")
    );
    assert_eq!(d[6].backups, vec!["b"]);
}

#[test]
fn a_node_without_peers_or_catching_up_is_not_promoted() {
    let no_peers = |o: &mut Observation| o.peers = Some(0);
    let syncing = |o: &mut Observation| o.syncing_to = Some(500);
    let up = vec![
        node("a", 100),
        on(node("b", 100), no_peers),
        on(node("c", 100), syncing),
        node("d", 100),
    ];
    let a_dies = vec![
        on(node("a", 101), |o| {
            o.result = Err(RpcError::Connect("refused".into()))
        }),
        on(node("b", 101), no_peers),
        on(node("c", 101), syncing),
        node("d", 101),
    ];
    let d = run_at(
        &SelectRules::basic(2, 1, 1),
        &ChainConfig::default(),
        &[(100, up), (101, a_dies)],
    );
    assert_eq!(d[0].primary.as_deref(), Some("a"));
    assert_eq!(
        d[1].primary.as_deref(),
        Some("d"),
        "b and c are up but not promoted"
    );
    assert!(d[1].backups.contains(&"b".to_string()));
    assert!(reason(&d[1], "b").contains("not promoted to primary: 0 peers (min 1)"));
    assert!(reason(&d[1], "c").contains("catching up to height 500"));
}

#[test]
fn the_first_backup_runs_another_implementation() {
    let forest = |o: &mut Observation| {
        o.identity.as_mut().expect("id").implementation = Implementation::Forest
    };
    let round = vec![node("a", 100), node("b", 100), on(node("c", 100), forest)];
    let d = run_obs(&rules(), &ChainConfig::default(), &[round.clone(), round]);
    assert_eq!(d[1].primary.as_deref(), Some("a"));
    assert_eq!(d[1].backups, vec!["c", "b"]);
    assert_eq!(
        d[1].verdict("c").expect("c").implementation.as_deref(),
        Some("forest")
    );
}

#[test]
fn an_implementation_split_is_reported_after_a_few_epochs() {
    let forest_fork = |h: u64| {
        on(node("f", h), move |o| {
            o.identity.as_mut().expect("id").implementation = Implementation::Forest;
            o.result = Ok(Head {
                key: vec![format!("forestfork{h}")],
                ..head(h, u128::from(h) * 10 - 5)
            });
        })
    };
    let rounds: Vec<(u64, Vec<Observation>)> = (100..=105)
        .map(|h| (h, vec![node("a", h), node("b", h), forest_fork(h)]))
        .collect();
    let d = run_at(
        &SelectRules::basic(2, 1, 1),
        &ChainConfig::default(),
        &rounds,
    );
    assert!(d[2].warnings.is_empty(), "too early: {:?}", d[2].warnings);
    let w = d[5]
        .warnings
        .iter()
        .find(|w| w.text.contains("implementation split"))
        .expect("reported");
    assert!(
        w.text.contains("lotus nodes on bafy105")
            && w.text.contains("forest nodes on forestfork105"),
        "{w}"
    );
    assert_eq!(d[5].primary.as_deref(), Some("a"), "the heavier chain wins");
}

#[test]
fn drain_and_prefer() {
    use crate::decide::overrides::{Mark, Preferred};
    let round = vec![node("a", 100), node("b", 100), node("c", 100)];
    let mut state = SelectState::default();
    let mut go = |o: &Overrides| {
        let (d, next) = select(
            &SelectRules::basic(2, 1, 1),
            &ChainConfig::default(),
            o,
            &state,
            &round,
            now_for(&round),
            Trigger::Probe,
        );
        state = next;
        d
    };
    let none = Overrides::default();
    assert_eq!(go(&none).primary.as_deref(), Some("a"));
    let mark = Mark {
        by: "alice".into(),
        at: "2026-11-25T10:00:00Z".into(),
        grace: None,
    };
    let mut drain_a = Overrides::default();
    drain_a.drained.insert("a".into(), mark.clone());
    let d = go(&drain_a);
    assert_eq!(d.primary.as_deref(), Some("b"));
    assert_eq!(d.backups, vec!["c"]);
    assert_eq!(reason(&d, "a"), "drained by alice at 2026-11-25T10:00:00Z");
    assert_eq!(
        d.switch.as_ref().expect("moved").why,
        "a was drained by the operator"
    );
    let prefer_c = Overrides {
        preferred: Some(Preferred {
            node: "c".into(),
            mark: mark.clone(),
        }),
        ..drain_a.clone()
    };
    let d = go(&prefer_c);
    assert_eq!(d.primary.as_deref(), Some("c"));
    assert_eq!(
        d.switch.as_ref().expect("moved").why,
        "preferred by the operator"
    );
    // Undrained and unpreferred: a comes back as backup, c stays (sticky).
    let d = go(&none);
    assert_eq!(d.primary.as_deref(), Some("c"));
    assert_eq!(d.backups, vec!["a", "b"]);
    // Draining every node keeps them: never an empty upstream.
    let mut all = Overrides::default();
    for n in ["a", "b", "c"] {
        all.drained.insert(n.into(), mark.clone());
    }
    let d = go(&all);
    assert_eq!(d.primary.as_deref(), Some("c"));
    assert!(reason(&d, "a").contains("but kept: no other healthy node"));
}

#[test]
fn behind_for_longer_than_lag_grace_drops_a_node_at_once() {
    let rules = SelectRules {
        lag_grace: Some(Duration::from_secs(12)),
        ..SelectRules::basic(2, 1, 3)
    };
    let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(GENESIS_TS + 101 * 30 + 1);
    let at = |s: u64| t0 + Duration::from_secs(s);
    let mut pool = Rounds::new(rules.clone());
    let mut go = |obs, now, trigger| pool.go(obs, now, trigger);
    // All at 100; then b and c get 101 at t0+1; a stays at 100.
    let d = go(
        vec![node("a", 100), node("b", 100), node("c", 100)],
        t0,
        Trigger::Probe,
    );
    assert_eq!(d.primary.as_deref(), Some("a"));
    let round = vec![node("a", 100), node("b", 101), node("c", 101)];
    let d = go(round.clone(), at(1), Trigger::Push);
    assert_eq!(d.primary.as_deref(), Some("a"), "behind for 0 s");
    let d = go(round.clone(), at(10), Trigger::Push);
    assert_eq!(
        d.primary.as_deref(),
        Some("a"),
        "behind 9 s < 12 s: normal propagation jitter"
    );
    assert_eq!(
        d.verdict("a").expect("a").behind,
        Some(Duration::from_secs(9))
    );
    let d = go(round.clone(), at(14), Trigger::Push);
    assert_eq!(
        d.primary.as_deref(),
        Some("b"),
        "behind 13 s: dropped at once, not after fall = 3"
    );
    assert!(
        reason(&d, "a").contains("behind the best head for 13s (lag_grace 12s)"),
        "{}",
        reason(&d, "a")
    );
    // A head known only from a poll at t0+5 counts as behind only up to then.
    let mut pool2 = Rounds::new(rules);
    let mut go2 = |obs, now| pool2.go(obs, now, Trigger::Probe);
    go2(vec![node("a", 100), node("b", 100)], t0);
    let polled = on(node("a", 100), |o| o.observed_at = Some(at(5)));
    let d = go2(vec![polled, node("b", 101)], at(30));
    // The heavier head was first seen (t0+30) after a's head was last known (t0+5): whether
    // a is behind is not known yet, so it is not counted.
    assert_eq!(d.verdict("a").expect("a").behind, None);
    assert!(d.verdict("a").expect("a").healthy);
}

/// The stall CI met: the stalled primary was asked a moment before the heavier head was
/// recorded, so that answer showed it behind for no time at all. Its lag_grace still ends
/// on time (the loop decides again then), and once it lags by epochs as well as past the
/// grace, a pushed head takes it down at once instead of waiting for `fall` probes.
#[test]
fn a_node_behind_is_decided_again_when_its_grace_ends_and_a_lagging_one_goes_at_once() {
    let rules = SelectRules {
        lag_grace: Some(Duration::from_secs(12)),
        ..SelectRules::basic(2, 1, 3)
    };
    let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(GENESIS_TS + 101 * 30 + 1);
    let at = |s: u64| t0 + Duration::from_secs(s);
    let mut pool = Rounds::new(rules);
    let mut go = |obs, now, trigger| pool.go(obs, now, trigger);
    let all_up = vec![node("a", 97), node("b", 97), node("c", 97)];
    assert_eq!(go(all_up, t0, Trigger::Probe).primary.as_deref(), Some("a"));
    let asked_just_before = on(node("a", 97), |o| {
        o.observed_at = Some(at(1) - Duration::from_millis(1))
    });
    let d = go(
        vec![asked_just_before, node("b", 101), node("c", 101)],
        at(1),
        Trigger::Push,
    );
    assert_eq!(
        d.verdict("a").expect("a").behind,
        None,
        "not shown behind yet"
    );
    assert_eq!(d.grace_ends.get("a"), Some(&at(13)), "{:?}", d.grace_ends);
    assert!(!d.grace_ends.contains_key("b") && !d.grace_ends.contains_key("c"));
    assert_eq!(d.primary.as_deref(), Some("a"));
    // Four epochs behind and 13 s past the first sighting of 98: down at once, on a push.
    let d = go(
        vec![node("a", 97), node("b", 101), node("c", 101)],
        at(14),
        Trigger::Push,
    );
    assert_eq!(d.primary.as_deref(), Some("b"), "{}", reason(&d, "a"));
    assert!(
        reason(&d, "a").starts_with("lagging 4 epochs"),
        "{}",
        reason(&d, "a")
    );
    assert!(d.grace_ends.is_empty(), "a is down: {:?}", d.grace_ends);
}

/// Heads by proof (`integrity`): what a node's head proves decides, not how many say it.
mod integrity {
    use super::*;
    use crate::proof::{BlockFault, FaultKind, HeadProof};

    /// A node whose head's headers verified.
    fn verified(name: &str, h: u64) -> Observation {
        on(node(name, h), |o| {
            o.result.as_mut().expect("head").proof = HeadProof::Verified;
        })
    }

    /// A node that reports `honest`'s tipset (its key) with `weight`: its header for the key
    /// no longer hashes to it.
    fn weight_liar(name: &str, honest: &Observation, weight: u128) -> Observation {
        let mut o = honest.clone();
        o.node = name.into();
        let h = o.result.as_mut().expect("head");
        h.weight = weight;
        h.proof = failed(&h.key[0], false);
        o
    }

    fn failed(cid: &str, known_good: bool) -> HeadProof {
        HeadProof::Failed(BlockFault {
            cid: cid.into(),
            miner: "f01000".into(),
            kind: FaultKind::Mismatch,
            known_good,
        })
    }

    fn forest(mut o: Observation) -> Observation {
        o.identity.as_mut().expect("id").implementation = Implementation::Forest;
        o
    }

    fn kinds(d: &Decision) -> Vec<&WarningKind> {
        d.warnings.iter().map(|w| &w.kind).collect()
    }

    #[test]
    fn a_pool_of_two_excludes_a_weight_liar_on_its_first_lie() {
        let rules = SelectRules::basic(2, 1, 3);
        let a = verified("a", 100);
        let b = weight_liar("b", &a, 1_000_000);
        let d = run_obs(&rules, &ChainConfig::default(), &[vec![a, b]]);
        assert_eq!(d[0].primary.as_deref(), Some("a"));
        let v = d[0].verdict("b").expect("b");
        assert!(!v.healthy);
        assert!(
            v.reason
                .starts_with("its header for bafy100… does not hash to that CID"),
            "{}",
            v.reason
        );
        assert_eq!(
            v.headers.as_deref().map(|h| h.starts_with("failed: ")),
            Some(true)
        );
        assert_eq!(
            d[0].verdict("a").and_then(|v| v.headers.clone()).as_deref(),
            Some("verified")
        );
        assert!(kinds(&d[0]).is_empty(), "{:?}", d[0].warnings);
    }

    #[test]
    fn a_liar_already_in_goes_at_once_not_after_fall() {
        let rules = SelectRules::basic(2, 1, 3);
        let a = verified("a", 100);
        let b = verified("b", 100);
        let d = run_obs(
            &rules,
            &ChainConfig::default(),
            &[
                vec![a.clone(), b],
                vec![a.clone(), weight_liar("b", &a, 1_000_000)],
            ],
        );
        assert!(d[0].verdict("b").expect("b").healthy);
        assert!(
            !d[1].verdict("b").expect("b").healthy,
            "out on its first lie"
        );
    }

    #[test]
    fn a_check_that_fails_on_every_node_is_ours_a_warning_never_an_exclusion() {
        let rules = SelectRules::basic(2, 1, 3);
        let failing = |n: &str| {
            on(node(n, 100), |o| {
                let h = o.result.as_mut().expect("head");
                h.proof = failed(&h.key[0].clone(), false);
            })
        };
        let d = run_obs(
            &rules,
            &ChainConfig::default(),
            &[vec![failing("a"), failing("b"), failing("c")]],
        );
        assert_eq!(d[0].primary.as_deref(), Some("a"));
        assert_eq!(d[0].backups, vec!["b", "c"]);
        assert_eq!(kinds(&d[0]), vec![&WarningKind::HeadersUnverifiable]);
        assert!(d[0].warnings[0]
            .text
            .starts_with("cannot verify headers from lotus"));
        for n in ["a", "b", "c"] {
            let v = d[0].verdict(n).expect("node");
            assert!(v.healthy, "{n}");
            assert!(
                v.headers
                    .as_deref()
                    .is_some_and(|h| h.starts_with("unverified: ")),
                "{n}: {:?}",
                v.headers
            );
        }
    }

    #[test]
    fn an_implementation_never_verified_is_not_excluded_for_a_failure() {
        let rules = SelectRules::basic(2, 1, 3);
        let a = verified("a", 100);
        let b = forest(weight_liar("b", &a, 1_000_000));
        let d = run_obs(&rules, &ChainConfig::default(), &[vec![a, b]]);
        assert!(d[0].verdict("b").expect("b").healthy);
        assert_eq!(kinds(&d[0])[0], &WarningKind::HeadersUnverifiable);
        assert!(d[0].warnings[0].text.contains("forest: its header"));
    }

    #[test]
    fn every_node_of_one_implementation_failing_is_ours() {
        let rules = SelectRules::basic(2, 1, 3);
        let c = verified("c", 101);
        let first = vec![
            forest(verified("a", 100)),
            forest(verified("b", 100)),
            verified("c", 100),
        ];
        let then = vec![
            forest(weight_liar("a", &c, 1_010)),
            forest(weight_liar("b", &c, 1_010)),
            c.clone(),
        ];
        let d = run_obs(&rules, &ChainConfig::default(), &[first, then]);
        for n in ["a", "b"] {
            assert!(d[1].verdict(n).expect("node").healthy, "{n}");
        }
        assert!(kinds(&d[1]).contains(&&WarningKind::HeadersUnverifiable));
        // One Forest node alone failing on a block the others verify is its own fault.
        let then = vec![
            forest(weight_liar("a", &c, 1_010)),
            forest(on(c.clone(), |o| o.node = "b".into())),
            c,
        ];
        let first = vec![
            forest(verified("a", 100)),
            forest(verified("b", 100)),
            verified("c", 100),
        ];
        let d = run_obs(&rules, &ChainConfig::default(), &[first, then]);
        assert!(!d[1].verdict("a").expect("a").healthy);
    }

    #[test]
    fn a_head_dated_off_its_epoch_is_excluded_unless_no_head_keeps_the_clock() {
        let rules = SelectRules::basic(2, 1, 3);
        let late = |n: &str, s: u64| {
            on(verified(n, 100), |o| {
                o.result.as_mut().expect("head").timestamp += s
            })
        };
        let d = run_obs(
            &rules,
            &ChainConfig::default(),
            &[vec![verified("a", 100), late("b", 1), verified("c", 100)]],
        );
        assert!(
            reason(&d[0], "b").contains("is dated 4001, not genesis + height × block delay = 4000"),
            "{}",
            reason(&d[0], "b")
        );
        let d = run_obs(
            &rules,
            &ChainConfig::default(),
            &[vec![late("a", 7), late("b", 7)]],
        );
        assert!(d[0].verdict("a").expect("a").healthy);
        assert_eq!(kinds(&d[0]), vec![&WarningKind::HeadersUnverifiable]);
    }

    /// The failover the weight liar used to delay by 50 s: the primary stalls at 100, b
    /// moves on, and c reports b's tipsets with a weight just below a's. The primary goes
    /// when it would have gone without c.
    #[test]
    fn a_lone_weight_liar_never_delays_a_real_failover() {
        let rules = SelectRules {
            lag_grace: Some(Duration::from_secs(12)),
            ..SelectRules::basic(2, 1, 3)
        };
        let switch_at = |with_liar: bool| {
            let mut pool = Rounds::new(rules.clone());
            let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(GENESIS_TS + 100 * 30 + 1);
            let third = |b: &Observation| {
                if with_liar {
                    weight_liar("c", b, 999)
                } else {
                    Observation::new("c", Err(RpcError::Timeout(Duration::from_secs(3))))
                }
            };
            let first = vec![verified("a", 100), verified("b", 100), verified("c", 100)];
            pool.go(first, t0, Trigger::Probe);
            (1..200u64).find(|&s| {
                let height = 100 + (s + 1) / 30;
                let b = verified("b", height);
                let obs = vec![verified("a", 100), b.clone(), third(&b)];
                let d = pool.go(obs, t0 + Duration::from_secs(s), Trigger::Probe);
                d.primary.as_deref() == Some("b")
            })
        };
        let without = switch_at(false).expect("switches without the liar");
        assert_eq!(switch_at(true), Some(without), "the liar changes nothing");
    }
}

/// Heads dated ahead of their epoch, and forks that flip (issue #33, items 5 and 6).
mod clocks_and_forks {
    use super::*;

    /// A head `secs` into epoch `h` by the wall clock.
    fn at_epoch(h: u64, secs: f64) -> SystemTime {
        let start = SystemTime::UNIX_EPOCH + Duration::from_secs(GENESIS_TS + h * 30);
        if secs < 0.0 {
            start - Duration::from_secs_f64(-secs)
        } else {
            start + Duration::from_secs_f64(secs)
        }
    }

    /// One liar announces height 101 2.9 s before its epoch begins; the honest nodes get it
    /// 10.8 s into the epoch (late, within what the network allows). Nobody honest is dropped:
    /// the lag clock starts when the epoch does, not when the liar spoke.
    #[test]
    fn a_head_dated_ahead_of_its_epoch_starts_no_lag_clock_early() {
        let rules = SelectRules {
            lag_grace: Some(Duration::from_secs(12)),
            ..SelectRules::basic(2, 1, 3)
        };
        let mut pool = Rounds::new(rules);
        let honest = || vec![node("a", 100), node("b", 100)];
        let with = |mut obs: Vec<Observation>, c: Observation| {
            obs.push(c);
            obs
        };
        pool.go(
            with(honest(), node("c", 100)),
            at_epoch(100, 20.0),
            Trigger::Probe,
        );
        let mut t = -2.9;
        while t <= 10.8 {
            let d = pool.go(
                with(honest(), node("c", 101)),
                at_epoch(101, t),
                Trigger::Probe,
            );
            for n in ["a", "b"] {
                assert!(
                    d.verdict(n).is_some_and(|v| v.healthy),
                    "{n} dropped {t} s into the epoch: {}",
                    reason(&d, n)
                );
            }
            t += 0.5;
        }
    }

    /// The primary answers the pool's tipset and a fork of its own on alternate rounds. Its
    /// honest-looking answers no longer reset its fork time: it loses the primary.
    #[test]
    fn a_primary_that_flips_to_its_own_fork_every_other_round_loses_the_primary() {
        let rules = SelectRules::basic(2, 1, 2);
        let mut pool = Rounds::new(rules);
        let fork_head = |h: u64| {
            on(node("a", h), |o| {
                let head = o.result.as_mut().expect("head");
                head.key = vec![format!("bafyfork{h}")];
                head.parents = vec![format!("bafyfork{}", h - 1)];
                head.weight += 5;
            })
        };
        let mut lost_at = None;
        for round in 0..60u64 {
            let h = 100 + round / 4;
            let a = if round % 2 == 1 {
                fork_head(h)
            } else {
                node("a", h)
            };
            let d = pool.go(
                vec![a, node("b", h), node("c", h)],
                at_epoch(h, 5.0 + (round % 4) as f64),
                Trigger::Probe,
            );
            if round > 0 && d.primary.as_deref() != Some("a") {
                lost_at = Some(round);
                assert!(
                    reason(&d, "a").contains("on a fork no other node confirms"),
                    "{}",
                    reason(&d, "a")
                );
                break;
            }
        }
        let lost_at = lost_at.expect("the flipper kept the primary");
        assert!(lost_at <= 16, "lost after {lost_at} rounds");
    }

    /// A late block: another key at the pool's height on the pool's parents. Honest; never a
    /// fork, however often.
    #[test]
    fn late_blocks_on_the_pools_parents_never_count_as_a_fork() {
        let rules = SelectRules::basic(2, 1, 2);
        let mut pool = Rounds::new(rules);
        for round in 0..40u64 {
            let h = 100 + round / 2;
            let pool_head = |n: &str| {
                on(node(n, h), |o| {
                    o.result.as_mut().expect("head").parents = vec![format!("bafy{}", h - 1)];
                })
            };
            let late = on(pool_head("a"), |o| {
                o.result.as_mut().expect("head").key = vec![format!("bafy{h}late")];
            });
            let a = if round % 2 == 1 { late } else { pool_head("a") };
            let d = pool.go(
                vec![a, pool_head("b"), pool_head("c")],
                at_epoch(h, 5.0),
                Trigger::Probe,
            );
            assert!(
                d.verdict("a").is_some_and(|v| v.healthy),
                "round {round}: {}",
                reason(&d, "a")
            );
        }
    }
}
