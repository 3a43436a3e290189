//! Quorum counting. Every quorum is counted among the voters of one configuration (the one in
//! use); a learner or a stranger is never counted, and this node counts only if it votes.

use crate::types::{Membership, NodeId};

/// How many of `ids` (plus `me`, when `include_me`) are voters of `config`.
pub(super) fn voters_among<'a>(
    config: &Membership,
    me: &NodeId,
    ids: impl Iterator<Item = &'a NodeId>,
    include_me: bool,
) -> usize {
    ids.filter(|m| *m != me && config.is_voter(m)).count()
        + usize::from(include_me && config.is_voter(me))
}

/// The quorum-th highest of the voters' `values` (this node's own is `mine`, counted only if
/// it votes): the highest value a majority has reached. `None` when fewer voters than a
/// quorum report.
pub(super) fn quorum_value<'a, T: Ord + Copy>(
    config: &Membership,
    me: &NodeId,
    values: impl Iterator<Item = (&'a NodeId, T)>,
    mine: T,
) -> Option<T> {
    let mut values: Vec<T> = values
        .filter(|(m, _)| *m != me && config.is_voter(m))
        .map(|(_, v)| v)
        .collect();
    if config.is_voter(me) {
        values.push(mine);
    }
    values.sort_unstable_by(|a, b| b.cmp(a));
    values.get(config.quorum() - 1).copied()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::Member;

    fn config(voters: &[&str], learners: &[&str]) -> Membership {
        let m = |id: &&str| Member {
            id: id.to_string(),
            address: String::new(),
        };
        let mut c = Membership::of_voters(voters.iter().map(m).collect());
        c.learners = learners.iter().map(m).collect();
        c
    }

    #[test]
    fn the_quorum_value_is_what_a_majority_of_voters_reached() {
        let c = config(&["a", "b", "c", "d", "e"], &["l"]);
        let me = "a".to_string();
        let acks = [("b", 5), ("c", 3), ("d", 1), ("l", 9)];
        let acks = acks
            .iter()
            .map(|(m, v)| (m.to_string(), *v))
            .collect::<Vec<_>>();
        // a=7, b=5, c=3 is a majority of five at 3 or more; the learner's 9 does not count.
        let v = quorum_value(&c, &me, acks.iter().map(|(m, v)| (m, *v)), 7);
        assert_eq!(v, Some(3));
    }

    #[test]
    fn a_node_that_is_not_a_voter_does_not_count_itself() {
        let c = config(&["a", "b", "c"], &["l"]);
        let me = "l".to_string();
        let acks = [("a".to_string(), 4)];
        assert_eq!(
            quorum_value(&c, &me, acks.iter().map(|(m, v)| (m, *v)), 9),
            None
        );
        let heard = ["a".to_string(), "b".to_string(), "x".to_string()];
        assert_eq!(voters_among(&c, &me, heard.iter(), true), 2);
        let me = "a".to_string();
        assert_eq!(voters_among(&c, &me, heard.iter(), true), 2);
        assert_eq!(voters_among(&c, &me, heard[1..].iter(), true), 2);
    }
}
