//! Rules 1 and 2 (identity): the chain the pool is judged against (network, genesis, clock),
//! resolved from the config, the known networks and the nodes' own answers; and who may be a
//! candidate for the best head at all (answered, on that chain, not from the future).

use std::collections::BTreeMap;

use super::context::Context;
use super::exclusion::Exclusion;
use super::rules::{ChainConfig, SelectRules, KNOWN_NETWORKS};
use crate::probe::rpc::{Head, Identity};
use crate::probe::Observation;

/// The chain the pool is judged against, resolved from the config, the known networks and
/// the nodes' own answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Expected {
    pub network: Option<String>,
    pub genesis: Option<String>,
    pub genesis_timestamp: Option<u64>,
    pub block_delay: u64,
    /// Set when the pool splits evenly between networks and none is configured.
    pub tie: Option<String>,
}

/// The most common value, or `Err` with the tied values when several share the top count.
pub(super) fn majority<'a>(
    values: impl Iterator<Item = &'a str>,
) -> Option<Result<String, Vec<String>>> {
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    for v in values {
        *counts.entry(v).or_default() += 1;
    }
    let top = *counts.values().max()?;
    let winners: Vec<String> = counts
        .iter()
        .filter(|(_, c)| **c == top)
        .map(|(v, _)| v.to_string())
        .collect();
    Some(if winners.len() == 1 {
        Ok(winners[0].clone())
    } else {
        Err(winners)
    })
}

pub(super) fn expected_chain(chain: &ChainConfig, observations: &[Observation]) -> Expected {
    let ids: Vec<&Identity> = observations
        .iter()
        .filter_map(|o| o.identity.as_ref())
        .collect();
    let (network, mut tie) = match &chain.network {
        Some(n) => (Some(n.clone()), None),
        None => match majority(ids.iter().filter_map(|i| i.network.as_deref())) {
            None => (None, None),
            Some(Ok(n)) => (Some(n), None),
            Some(Err(tied)) => (
                None,
                Some(format!(
                    "the pool splits evenly between networks {}; set [chain] network",
                    tied.join(" and ")
                )),
            ),
        },
    };
    let known = network
        .as_deref()
        .and_then(|n| KNOWN_NETWORKS.iter().find(|k| k.name == n));
    // Nodes without a network name (gateways lacking StateNetworkName) are judged by their
    // genesis alone, so they count with every network here.
    let on_network: Vec<&&Identity> = ids
        .iter()
        .filter(|i| i.network.is_none() || i.network.as_deref() == network.as_deref())
        .collect();
    let genesis_majority = majority(on_network.iter().map(|i| i.genesis.as_str()));
    let genesis = chain
        .genesis
        .clone()
        .or_else(|| known.map(|k| k.genesis.to_string()))
        .or_else(|| genesis_majority.clone().and_then(|m| m.ok()));
    if let (None, None, Some(Err(tied))) = (&genesis, &tie, &genesis_majority) {
        // No network name to go by and an even split of genesis blocks: two chains.
        tie = Some(format!(
            "the pool splits evenly between genesis blocks {}; set [chain] genesis",
            tied.join(" and ")
        ));
    }
    // A chain chain-co knows, recognised by its genesis when no node names it.
    let known = known.or_else(|| {
        genesis
            .as_deref()
            .and_then(|g| KNOWN_NETWORKS.iter().find(|k| k.genesis == g))
    });
    let network = network.or_else(|| known.map(|k| k.name.to_string()));
    let genesis_timestamp = chain
        .genesis_timestamp
        .or_else(|| known.map(|k| k.genesis_timestamp))
        .or_else(|| {
            on_network
                .iter()
                .find(|i| Some(&i.genesis) == genesis.as_ref())
                .map(|i| i.genesis_timestamp)
        });
    let block_delay = chain
        .block_delay
        .map(|d| d.as_secs())
        .or_else(|| known.map(|k| k.block_delay))
        .or_else(|| on_network.iter().find_map(|i| i.block_delay))
        .unwrap_or(30)
        .max(1);
    Expected {
        network,
        genesis,
        genesis_timestamp,
        block_delay,
        tie,
    }
}

/// Why a node that answered cannot be a candidate for the best head, if it cannot.
fn ineligible(
    o: &Observation,
    h: &Head,
    exp: &Expected,
    rules: &SelectRules,
    now: u64,
) -> Option<Exclusion> {
    if let Some(tie) = &exp.tie {
        return Some(Exclusion::Tie(tie.clone()));
    }
    let Some(id) = &o.identity else {
        return Some(Exclusion::IdentityUnknown);
    };
    if let (Some(net), Some(own)) = (&exp.network, &id.network) {
        if own != net {
            return Some(Exclusion::OtherNetwork {
                network: own.clone(),
                pool: net.clone(),
            });
        }
    }
    if let Some(g) = &exp.genesis {
        if &id.genesis != g {
            return Some(Exclusion::OtherGenesis {
                genesis: id.genesis.clone(),
                pool: g.clone(),
            });
        }
    }
    let skew = rules.max_clock_skew.as_secs();
    if h.timestamp > now + skew {
        return Some(Exclusion::FutureHead {
            height: h.height,
            ahead: h.timestamp - now,
            max_skew: skew,
        });
    }
    None
}

/// Rules 1 and 2: who may be a candidate for the best head (answered, on the pool's chain,
/// not from the future).
pub(super) fn screen_identity(cx: &mut Context) {
    for (o, w) in cx.observations.iter().zip(cx.work.iter_mut()) {
        w.bad = match &o.result {
            Err(e) => Some(Exclusion::Probe(e.clone())),
            Ok(h) => ineligible(o, h, &cx.exp, cx.rules, cx.now_s),
        };
    }
}
