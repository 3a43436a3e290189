//! The ensemble identity: which ensemble this node's log belongs to.
//!
//! Every node keeps an ensemble id in its SQLite meta, sends it with every peer call (gRPC
//! metadata, [`ENSEMBLE_HEADER`]) and refuses a call that names another ensemble. A
//! restored ensemble gets a new id, so its members and those of the ensemble its backup came
//! from never talk, even under the same member names and addresses.
//!
//! Where the id comes from, at start ([`establish`]):
//! - the log has one (a node that ran before, or was restored from a backup): that one;
//! - else, a node of a new ensemble's initial configuration derives it from the
//!   `--ensemble-token` and the sorted ids of the initial voters, so that those nodes agree
//!   without talking (etcd's cluster id from `--initial-cluster-token`). A log written before
//!   ensemble ids existed gets it on its first start. A node whose log is still empty holds
//!   it only provisionally: it names no ensemble on its calls and takes the id of the first
//!   peer that names another (so a member that lost its data can rejoin a restored ensemble,
//!   whose id is not derived), until it persists its first entry or snapshot — then the id
//!   is recorded and final;
//! - else (started with `--join`, or a pod outside the initial configuration) it has none
//!   yet: it takes the id of the first peer call that names one (its leader's, once it is
//!   added).
//!
//! [`IdentityStore`] writes an id that became final into the log before the batch that made
//! it so. A peer call without the header comes from a node that has no final id yet (or from
//! an older build) and is taken: such a node holds no entry of any ensemble.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use guessgame_core::{Membership, Persistent, StorageOp};
use guessgame_wire::backup::{derive_ensemble_id, DEFAULT_ENSEMBLE_TOKEN};
pub use guessgame_wire::backup::{ENSEMBLE_HEADER, NODE_HEADER};

use crate::storage::{LogStore, SqliteLog, StorageError};

/// This node's ensemble id, shared by the peer service (checks and learns), the transport
/// (sends) and the store (records a learned id).
#[derive(Clone, Default)]
pub struct Identity {
    inner: Arc<Mutex<State>>,
}

#[derive(Default)]
struct State {
    id: Option<String>,
    /// `id` is derived but not final: this node's log holds nothing yet.
    provisional: bool,
    /// Final, not yet written to the log.
    unsaved: bool,
    /// (peer, its ensemble) pairs already refused: each is logged once.
    refused: HashSet<(String, String)>,
}

/// What to do with a peer call.
#[derive(Debug, PartialEq, Eq)]
pub enum Admission {
    /// Same ensemble, or a sender that does not know its ensemble yet.
    Accept,
    /// This node had no id: it takes the sender's.
    Learned(String),
    /// Another ensemble: refuse, with this message. `first` is true the first time this
    /// peer is refused for this ensemble (log it then only).
    Refuse { message: String, first: bool },
}

impl Identity {
    pub fn known(id: impl Into<String>) -> Identity {
        let identity = Identity::default();
        identity.lock().id = Some(id.into());
        identity
    }

    /// No id yet: the first peer call that names one sets it.
    pub fn unknown() -> Identity {
        Identity::default()
    }

    /// `id` until a peer names another, or until the log holds something (see the module's
    /// text).
    pub fn provisional(id: impl Into<String>) -> Identity {
        let identity = Identity::known(id);
        identity.lock().provisional = true;
        identity
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The id, final or not.
    pub fn get(&self) -> Option<String> {
        self.lock().id.clone()
    }

    /// What this node's calls name: its id once it is final.
    pub fn header(&self) -> Option<String> {
        let state = self.lock();
        state.id.clone().filter(|_| !state.provisional)
    }

    /// Decides about a call from `peer` to `me` whose header names `theirs` (`None`: no
    /// header).
    pub fn admit(&self, me: &str, peer: &str, theirs: Option<&str>) -> Admission {
        let Some(theirs) = theirs else {
            return Admission::Accept;
        };
        let mut state = self.lock();
        match &state.id {
            Some(ours) if ours == theirs => {
                if state.provisional {
                    state.provisional = false;
                    state.unsaved = true;
                }
                Admission::Accept
            }
            None => {
                state.id = Some(theirs.to_string());
                state.unsaved = true;
                Admission::Learned(theirs.to_string())
            }
            Some(_) if state.provisional => {
                state.id = Some(theirs.to_string());
                state.provisional = false;
                state.unsaved = true;
                Admission::Learned(theirs.to_string())
            }
            Some(ours) => {
                let message = format!(
                    "{me} belongs to ensemble {ours} and {peer} to ensemble {theirs}: members of \
                     different ensembles (a restored ensemble and the one its backup came from) \
                     never talk; check the members' addresses and data directories"
                );
                let first = state.refused.insert((peer.to_string(), theirs.to_string()));
                Admission::Refuse { message, first }
            }
        }
    }

    /// The id that became final (learned, or made final by `ops`, which put data in the
    /// log) and still has to be written to the log (once).
    fn take_unsaved(&self, ops: &[StorageOp]) -> Option<String> {
        let mut state = self.lock();
        let holds_data = ops.iter().any(|op| {
            !matches!(
                op,
                StorageOp::SetAcceptedEpoch(_)
                    | StorageOp::SetCurrentEpoch(_)
                    | StorageOp::SetCommitted(_)
            )
        });
        if state.provisional && holds_data {
            state.provisional = false;
            state.unsaved = true;
        }
        if !state.unsaved {
            return None;
        }
        state.unsaved = false;
        state.id.clone()
    }
}

/// The ensemble id of a new ensemble whose initial voters are `bootstrap`'s.
pub fn derived_id(token: Option<&str>, bootstrap: &Membership) -> String {
    derive_ensemble_id(
        token.unwrap_or(DEFAULT_ENSEMBLE_TOKEN),
        bootstrap.voters.iter().map(|m| m.id.as_str()),
    )
}

/// The identity a starting node has (see the module's text): the log's, else derived from
/// `token` and the `bootstrap` voters (recorded, or provisional while the log — `persistent`
/// — is empty), else none yet (`bootstrap` is empty: the node joins).
pub fn establish(
    store: &mut SqliteLog,
    node_id: &str,
    persistent: &Persistent,
    bootstrap: &Membership,
    token: Option<&str>,
) -> Result<Identity, StorageError> {
    if let Some(id) = store.ensemble_id()? {
        tracing::info!(node = %node_id, ensemble = %id, "ensemble id from the log");
        return Ok(Identity::known(id));
    }
    if bootstrap.voters.is_empty() {
        tracing::info!(node = %node_id, "no ensemble id yet: taking the first one a peer names");
        return Ok(Identity::unknown());
    }
    let id = derived_id(token, bootstrap);
    if persistent.log.is_empty() && persistent.snapshot.is_none() {
        tracing::info!(node = %node_id, ensemble = %id, "ensemble id derived from the ensemble token and the initial voters; final once the log holds an entry");
        return Ok(Identity::provisional(id));
    }
    store.set_ensemble_id(&id)?;
    tracing::info!(node = %node_id, ensemble = %id, "ensemble id derived from the ensemble token and the initial voters");
    Ok(Identity::known(id))
}

/// The node's log, which also records an ensemble id learned from a peer: before the first
/// batch persisted after it was learned (so no entry from that ensemble is on disk without it).
pub struct IdentityStore {
    log: SqliteLog,
    identity: Identity,
}

impl IdentityStore {
    pub fn new(log: SqliteLog, identity: Identity) -> IdentityStore {
        IdentityStore { log, identity }
    }
}

impl LogStore for IdentityStore {
    fn load(&mut self) -> Result<Persistent, StorageError> {
        self.log.load()
    }

    fn persist(&mut self, ops: &[StorageOp]) -> Result<(), StorageError> {
        if let Some(id) = self.identity.take_unsaved(ops) {
            self.log.set_ensemble_id(&id)?;
            tracing::info!(ensemble = %id, "ensemble id recorded");
        }
        self.log.persist(ops)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use guessgame_core::Member;

    #[test]
    fn calls_from_another_ensemble_are_refused_and_logged_once_per_peer() {
        let me = Identity::known("aaaa");
        assert_eq!(me.admit("me", "node2", Some("aaaa")), Admission::Accept);
        assert_eq!(me.admit("me", "node2", None), Admission::Accept);
        let refuse = |peer, theirs| match me.admit("me", peer, Some(theirs)) {
            Admission::Refuse { message, first } => (message, first),
            other => panic!("{other:?}"),
        };
        let (message, first) = refuse("node2", "bbbb");
        assert!(first);
        assert!(
            message.starts_with("me belongs to ensemble aaaa and node2 to ensemble bbbb: "),
            "{message}"
        );
        assert!(!refuse("node2", "bbbb").1, "logged once per peer");
        assert!(refuse("node3", "bbbb").1, "another peer is logged");
        assert!(refuse("node2", "cccc").1, "another ensemble is logged");
        assert_eq!(me.get().as_deref(), Some("aaaa"));
        assert_eq!(me.header().as_deref(), Some("aaaa"));
        assert_eq!(me.take_unsaved(&[StorageOp::Append(vec![])]), None);
    }

    #[test]
    fn a_node_without_an_id_takes_the_first_one_named_and_keeps_it() {
        let me = Identity::unknown();
        assert_eq!(me.admit("me", "node1", None), Admission::Accept);
        assert_eq!(me.get(), None);
        assert_eq!(
            me.admit("me", "node1", Some("aaaa")),
            Admission::Learned("aaaa".into())
        );
        assert!(matches!(
            me.admit("me", "node9", Some("bbbb")),
            Admission::Refuse { .. }
        ));
        assert_eq!(me.take_unsaved(&[]).as_deref(), Some("aaaa"));
        assert_eq!(me.take_unsaved(&[]), None, "recorded once");
    }

    #[test]
    fn a_provisional_id_names_nothing_and_yields_once_until_the_log_holds_data() {
        // Another ensemble's peer names its id: taken, and final.
        let me = Identity::provisional("derived");
        assert_eq!(me.get().as_deref(), Some("derived"));
        assert_eq!(me.header(), None);
        assert_eq!(me.admit("me", "p", None), Admission::Accept);
        assert_eq!(me.take_unsaved(&[StorageOp::SetAcceptedEpoch(3)]), None);
        assert_eq!(
            me.admit("me", "p", Some("restored")),
            Admission::Learned("restored".into())
        );
        assert!(matches!(
            me.admit("me", "q", Some("derived")),
            Admission::Refuse { .. }
        ));
        assert_eq!(me.header().as_deref(), Some("restored"));
        assert_eq!(me.take_unsaved(&[]).as_deref(), Some("restored"));
        // The log gets an entry first: the derived id is final.
        let me = Identity::provisional("derived");
        assert_eq!(
            me.take_unsaved(&[StorageOp::Append(vec![])]).as_deref(),
            Some("derived")
        );
        assert_eq!(me.header().as_deref(), Some("derived"));
        assert!(matches!(
            me.admit("me", "p", Some("other")),
            Admission::Refuse { .. }
        ));
        // A peer of the same ensemble makes it final too.
        let me = Identity::provisional("derived");
        assert_eq!(me.admit("me", "p", Some("derived")), Admission::Accept);
        assert_eq!(me.take_unsaved(&[]).as_deref(), Some("derived"));
    }

    #[test]
    fn new_ensembles_derive_their_id_and_a_joiner_waits_for_one() {
        let dir = tempfile::tempdir().unwrap();
        let voters = |ids: &[&str]| {
            Membership::of_voters(
                ids.iter()
                    .map(|id| Member {
                        id: id.to_string(),
                        address: format!("{id}:7100"),
                    })
                    .collect(),
            )
        };
        let b = voters(&["n3", "n1", "n2"]);
        let empty = Persistent::default();
        let entry = guessgame_core::Entry {
            zxid: guessgame_core::Zxid::new(1, 0),
            op: guessgame_core::Op::NewLeader {
                leader: "n1".into(),
            },
        };
        let held = Persistent {
            log: vec![entry.clone()],
            ..Persistent::default()
        };
        // A log that holds entries (from before ensemble ids): derived and recorded at once.
        let mut log = SqliteLog::open(dir.path(), "n1").unwrap();
        let identity = establish(&mut log, "n1", &held, &b, None).unwrap();
        let id = identity.header().unwrap();
        assert_eq!(id, derive_ensemble_id("guessgame", ["n1", "n2", "n3"]));
        assert_eq!(log.ensemble_id().unwrap().as_deref(), Some(id.as_str()));
        // Later starts use the log's, whatever the configuration says now.
        let other = voters(&["n1"]);
        assert_eq!(
            establish(&mut log, "n1", &empty, &other, Some("x"))
                .unwrap()
                .header(),
            Some(id.clone())
        );
        drop(log);
        // A new log: the same id, provisional, recorded with the first entry.
        let mut log = SqliteLog::open(dir.path(), "n3").unwrap();
        let identity = establish(&mut log, "n3", &empty, &b, None).unwrap();
        assert_eq!(
            (identity.get(), identity.header()),
            (Some(id.clone()), None)
        );
        assert_eq!(log.ensemble_id().unwrap(), None);
        let mut store = IdentityStore::new(log, identity.clone());
        store.persist(&[StorageOp::SetAcceptedEpoch(1)]).unwrap();
        assert_eq!(identity.header(), None);
        store.persist(&[StorageOp::Append(vec![entry])]).unwrap();
        assert_eq!(identity.header(), Some(id.clone()));
        drop(store);
        let log = SqliteLog::open(dir.path(), "n3").unwrap();
        assert_eq!(log.ensemble_id().unwrap(), Some(id.clone()));
        drop(log);
        // Another token, another ensemble.
        let mut log = SqliteLog::open(dir.path(), "n2").unwrap();
        let other = establish(&mut log, "n2", &empty, &b, Some("prod"))
            .unwrap()
            .get();
        assert_ne!(other, Some(id));
        drop(log);
        // A joiner learns it, and the next batch records it.
        let mut log = SqliteLog::open(dir.path(), "n4").unwrap();
        let identity = establish(&mut log, "n4", &empty, &Membership::default(), None).unwrap();
        assert_eq!(identity.get(), None);
        let mut store = IdentityStore::new(log, identity.clone());
        assert_eq!(
            identity.admit("me", "n1", Some("cafe")),
            Admission::Learned("cafe".into())
        );
        store.persist(&[StorageOp::SetAcceptedEpoch(2)]).unwrap();
        drop(store);
        let log = SqliteLog::open(dir.path(), "n4").unwrap();
        assert_eq!(log.ensemble_id().unwrap().as_deref(), Some("cafe"));
    }
}
