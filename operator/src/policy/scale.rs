//! Scaling: the next step towards `spec.replicas` voters ([`decide_scale`], from the
//! ensemble's committed configuration), its `status.scaling` block, and which sizes the
//! operator runs ([`valid_size`], [`replicas_refusal`]).

use crate::crd::ScalingStatus;

/// A member of the ensemble's committed configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigMember {
    pub id: String,
    /// The StatefulSet ordinal, when the id is `<statefulset>-<ordinal>` (else a member the
    /// operator did not add, which it leaves alone).
    pub ordinal: Option<usize>,
    pub voter: bool,
}

impl ConfigMember {
    /// The member `id` of the StatefulSet `statefulset`.
    pub fn new(id: &str, statefulset: &str, voter: bool) -> ConfigMember {
        let ordinal = guessgame_wire::config::split_pod_name(id)
            .filter(|(prefix, _)| *prefix == statefulset)
            .map(|(_, n)| n);
        ConfigMember {
            id: id.into(),
            ordinal,
            voter,
        }
    }
}

/// Everything the next scaling step depends on.
#[derive(Clone, Debug)]
pub struct ScaleInput<'a> {
    /// `spec.replicas`: the voters wanted, `<sts>-0 .. <sts>-<desired-1>`.
    pub desired: usize,
    /// The StatefulSet's replicas now.
    pub statefulset: usize,
    /// The ensemble's committed configuration, as its leader knows it.
    pub committed: &'a [ConfigMember],
    /// Ordinals whose node answers the operator (its pod is up).
    pub answering: &'a [usize],
}

/// The next step of a scaling.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ScaleStep {
    /// The committed configuration is `<sts>-0 .. <sts>-<desired-1>`, all voters, and the
    /// StatefulSet has exactly their pods.
    Steady,
    /// Set the StatefulSet's replicas: one more pod for the next member, or one pod less
    /// after its member was removed (never below the highest member's ordinal + 1).
    Resize { replicas: usize },
    /// The pod of the next member is not up yet.
    WaitForPod { ordinal: usize },
    /// Add this member (a learner first, a voter once caught up; a learner already in the
    /// configuration, from an interrupted add, is promoted the same way).
    Add { ordinal: usize },
    /// Remove this member from the configuration (its pod stays until the next step).
    Remove { ordinal: usize },
}

/// The next step towards `desired` voters, from the committed configuration, so that an
/// interrupted operator resumes where the ensemble is, whatever it had done itself:
/// 1. the StatefulSet never has fewer pods than the highest member's ordinal + 1 (a member
///    without a pod would be a lost voter): grow it back first;
/// 2. pods above both the members and `desired` go (removed members, a reverted growth);
/// 3. members with an ordinal ≥ `desired` are removed, learners first, then the highest
///    ordinal (as long as a member below `desired` remains, so the last voter never goes);
/// 4. a learner below `desired` (an interrupted add) is promoted;
/// 5. the lowest missing ordinal below `desired` is added: its pod first (StatefulSet +1),
///    then, once the node answers, the member.
pub fn decide_scale(input: &ScaleInput) -> ScaleStep {
    let ordinals = || input.committed.iter().filter_map(|m| m.ordinal);
    let floor = ordinals().max().map_or(0, |o| o + 1);
    let (desired, sts) = (input.desired, input.statefulset);
    if sts < floor {
        return ScaleStep::Resize { replicas: floor };
    }
    if sts > floor.max(desired) {
        return ScaleStep::Resize {
            replicas: floor.max(desired),
        };
    }
    let stays = |m: &ConfigMember| m.ordinal.is_some_and(|o| o < desired) || m.ordinal.is_none();
    if input.committed.iter().any(|m| stays(m) && m.voter) {
        let leaving = input
            .committed
            .iter()
            .filter_map(|m| m.ordinal.filter(|o| *o >= desired).map(|o| (m.voter, o)))
            .min_by_key(|(voter, o)| (*voter, std::cmp::Reverse(*o)));
        if let Some((_, ordinal)) = leaving {
            return ScaleStep::Remove { ordinal };
        }
    }
    if let Some(ordinal) = input
        .committed
        .iter()
        .filter(|m| !m.voter)
        .filter_map(|m| m.ordinal.filter(|o| *o < desired))
        .min()
    {
        return ScaleStep::Add { ordinal };
    }
    if let Some(ordinal) = (0..desired).find(|o| !ordinals().any(|m| m == *o)) {
        return if sts <= ordinal {
            ScaleStep::Resize {
                replicas: ordinal + 1,
            }
        } else if !input.answering.contains(&ordinal) {
            ScaleStep::WaitForPod { ordinal }
        } else {
            ScaleStep::Add { ordinal }
        };
    }
    ScaleStep::Steady
}

/// The `status.scaling` block for a step (`None`: steady). `from` is kept from the scaling
/// under way, else the voters now.
pub fn scaling_status(
    step: &ScaleStep,
    previous: Option<&ScalingStatus>,
    voters: usize,
    desired: usize,
    pod: impl Fn(usize) -> String,
) -> Option<ScalingStatus> {
    let (step_text, message) = match step {
        ScaleStep::Steady => return None,
        ScaleStep::Resize { replicas } => (
            format!("statefulset {replicas}"),
            format!("setting the StatefulSet to {replicas} replicas"),
        ),
        ScaleStep::WaitForPod { ordinal } => (
            format!("wait {}", pod(*ordinal)),
            format!(
                "waiting for pod {} to start and answer before adding it",
                pod(*ordinal)
            ),
        ),
        ScaleStep::Add { ordinal } => (
            format!("add {}", pod(*ordinal)),
            format!(
                "adding {} (a learner until it has caught up, then a voter)",
                pod(*ordinal)
            ),
        ),
        ScaleStep::Remove { ordinal } => (
            format!("remove {}", pod(*ordinal)),
            format!("removing {} from the configuration", pod(*ordinal)),
        ),
    };
    Some(ScalingStatus {
        from: previous.map_or(voters as i32, |p| p.from),
        to: desired as i32,
        step: step_text,
        message: format!("{voters} of {desired} voters; {message}"),
    })
}

/// An ensemble size the operator runs: odd, 1 to 9.
pub fn valid_size(voters: i32) -> bool {
    usize::try_from(voters).is_ok_and(guessgame_core::rules::is_ensemble_size)
}

/// Why `spec.replicas` cannot be applied, if it cannot: an ensemble has an odd number of
/// voters, 1 to 9 (the CRD's schema refuses other values; an older CRD may not).
pub fn replicas_refusal(requested: i32, replicas: i32) -> Option<String> {
    (!valid_size(requested)).then(|| {
        format!(
            "spec.replicas = {requested} is not applied: an ensemble has an odd number of \
             voters, 1 to 9; it stays at {replicas}"
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(members: &[(usize, bool)]) -> Vec<ConfigMember> {
        members
            .iter()
            .map(|(o, voter)| ConfigMember::new(&format!("gg-{o}"), "gg", *voter))
            .collect()
    }

    fn voters(n: usize) -> Vec<ConfigMember> {
        config(&(0..n).map(|o| (o, true)).collect::<Vec<_>>())
    }

    fn step(desired: usize, sts: usize, committed: &[ConfigMember], up: &[usize]) -> ScaleStep {
        decide_scale(&ScaleInput {
            desired,
            statefulset: sts,
            committed,
            answering: up,
        })
    }

    #[test]
    fn config_member_ordinals() {
        assert_eq!(ConfigMember::new("gg-3", "gg", true).ordinal, Some(3));
        assert_eq!(ConfigMember::new("gg-10", "gg", true).ordinal, Some(10));
        assert_eq!(ConfigMember::new("gg-0", "gg", true).ordinal, Some(0));
        for other in ["gg-03", "gg-", "gg3", "other-1", "gg-x", "ggg-1"] {
            assert_eq!(
                ConfigMember::new(other, "gg", true).ordinal,
                None,
                "{other}"
            );
        }
    }

    #[test]
    fn steady_when_the_configuration_and_the_statefulset_match() {
        for n in [1, 3, 5] {
            assert_eq!(
                step(n, n, &voters(n), &(0..n).collect::<Vec<_>>()),
                ScaleStep::Steady
            );
        }
    }

    #[test]
    fn scale_up_walks_one_member_at_a_time() {
        use ScaleStep::*;
        let all: Vec<usize> = (0..5).collect();
        // 3 -> 5: a pod, wait for it, add it; again.
        assert_eq!(step(5, 3, &voters(3), &all[..3]), Resize { replicas: 4 });
        assert_eq!(step(5, 4, &voters(3), &all[..3]), WaitForPod { ordinal: 3 });
        assert_eq!(step(5, 4, &voters(3), &all[..4]), Add { ordinal: 3 });
        assert_eq!(step(5, 4, &voters(4), &all[..4]), Resize { replicas: 5 });
        assert_eq!(step(5, 5, &voters(4), &all[..4]), WaitForPod { ordinal: 4 });
        assert_eq!(step(5, 5, &voters(4), &all), Add { ordinal: 4 });
        assert_eq!(step(5, 5, &voters(5), &all), Steady);
    }

    #[test]
    fn scale_down_removes_the_highest_ordinal_then_its_pod() {
        use ScaleStep::*;
        let all: Vec<usize> = (0..5).collect();
        assert_eq!(step(3, 5, &voters(5), &all), Remove { ordinal: 4 });
        assert_eq!(step(3, 5, &voters(4), &all), Resize { replicas: 4 });
        assert_eq!(step(3, 4, &voters(4), &all), Remove { ordinal: 3 });
        assert_eq!(step(3, 4, &voters(3), &all), Resize { replicas: 3 });
        assert_eq!(step(3, 3, &voters(3), &all), Steady);
        // Down to one.
        assert_eq!(step(1, 3, &voters(3), &all), Remove { ordinal: 2 });
        assert_eq!(step(1, 2, &voters(2), &all), Remove { ordinal: 1 });
        assert_eq!(step(1, 2, &voters(1), &all), Resize { replicas: 1 });
    }

    #[test]
    fn an_interrupted_operator_resumes_from_the_committed_configuration() {
        use ScaleStep::*;
        let all: Vec<usize> = (0..7).collect();
        // A half-done add: gg-3 is a learner. Still growing: promote it.
        let half = config(&[(0, true), (1, true), (2, true), (3, false)]);
        assert_eq!(step(5, 4, &half, &all), Add { ordinal: 3 });
        // ... even when its node does not answer the operator (the leader decides).
        assert_eq!(step(5, 4, &half, &all[..3]), Add { ordinal: 3 });
        // Reverted to 3 meanwhile: the learner goes first.
        assert_eq!(step(3, 4, &half, &all), Remove { ordinal: 3 });
        // A learner is removed before a higher voter.
        let mixed = config(&[(0, true), (1, true), (2, true), (3, true), (4, false)]);
        assert_eq!(step(3, 5, &mixed, &all), Remove { ordinal: 4 });
        let mixed = config(&[(0, true), (1, true), (2, true), (3, false), (4, true)]);
        assert_eq!(step(3, 5, &mixed, &all), Remove { ordinal: 3 });
        // A member above `desired` is removed before the StatefulSet shrinks, and the
        // StatefulSet is never below the highest member's ordinal + 1.
        assert_eq!(step(3, 5, &voters(5), &all), Remove { ordinal: 4 });
        assert_eq!(step(3, 3, &voters(5), &all), Resize { replicas: 5 });
        assert_eq!(step(5, 2, &voters(3), &all), Resize { replicas: 3 });
        // A pod left over from a reverted growth goes.
        assert_eq!(step(3, 4, &voters(3), &all), Resize { replicas: 3 });
        // A hole (gg-1 removed by hand) is filled before the next ordinal.
        let hole = config(&[(0, true), (2, true), (3, true)]);
        assert_eq!(step(5, 4, &hole, &all), Add { ordinal: 1 });
        assert_eq!(step(5, 4, &hole, &[0, 2, 3]), WaitForPod { ordinal: 1 });
    }

    #[test]
    fn the_last_voter_is_never_removed() {
        use ScaleStep::*;
        let all: Vec<usize> = (0..7).collect();
        // Only members above `desired` (an odd history): add below first.
        let high = config(&[(3, true), (4, true), (5, true)]);
        assert_eq!(step(3, 6, &high, &all), Add { ordinal: 0 });
        // Learners below `desired` do not count as staying voters.
        let high = config(&[(0, false), (3, true)]);
        assert_eq!(step(1, 4, &high, &all), Add { ordinal: 0 });
        // Members the operator did not add (not `<sts>-<n>`) are left alone, and count as
        // staying voters.
        let foreign = vec![
            ConfigMember::new("outsider", "gg", true),
            ConfigMember::new("gg-0", "gg", true),
            ConfigMember::new("gg-1", "gg", true),
            ConfigMember::new("gg-2", "gg", true),
        ];
        assert_eq!(step(3, 3, &foreign, &all), Steady);
        assert_eq!(step(1, 3, &foreign, &all), Remove { ordinal: 2 });
    }
}
