//! SNAP: a leader sends its snapshot, in pieces, to a follower whose log ends below the
//! leader's log start (a new member, a wiped one, one that was down for long); the follower
//! installs it and is then synced by DIFF from the snapshot's zxid on.
//!
//! One piece is in flight per follower: the next follows the `SnapshotAck` of the last (flow
//! control), and a piece whose ack does not come is sent again (`resend_stalled_syncs`).

use std::sync::Arc;

use super::events::{Output, StorageOp};
use super::state::{IncomingSnapshot, Role, SyncState};
use super::{send, Engine};
use crate::message::Message;
use crate::snapshot::Snapshot;
use crate::types::{NodeId, Zxid};

impl Engine {
    /// Leader: start sending our latest snapshot to `follower`, from its first byte.
    pub(super) fn start_snapshot(&mut self, follower: &NodeId, out: &mut Vec<Output>) {
        let Some(snapshot) = self.log.snapshot() else {
            // Cannot happen: a log that starts after ZERO was compacted into a snapshot.
            tracing::error!(node = %self.id, %follower, "follower needs a snapshot but there is none");
            return;
        };
        let (zxid, data) = (snapshot.zxid, Arc::new(snapshot.encode()));
        let now = self.now;
        let Role::Leading(l) = &mut self.role else {
            return;
        };
        tracing::info!(node = %self.id, %follower, %zxid, bytes = data.len(), "follower is behind our log: sending the snapshot");
        l.followers.entry(follower.clone()).or_default().sync = SyncState::Snapshot {
            zxid,
            data,
            acked: 0,
            sent: 0,
            at: now,
        };
        self.send_snapshot_piece(follower, out);
    }

    /// Leader: send the piece of the snapshot that follows what `follower` acknowledged.
    pub(super) fn send_snapshot_piece(&mut self, follower: &NodeId, out: &mut Vec<Output>) {
        let (now, chunk) = (self.now, self.snapshots.chunk_bytes.max(1));
        let Role::Leading(l) = &mut self.role else {
            return;
        };
        let epoch = l.epoch;
        let Some(p) = l.followers.get_mut(follower) else {
            return;
        };
        let SyncState::Snapshot {
            zxid,
            data,
            acked,
            sent,
            at,
        } = &mut p.sync
        else {
            return;
        };
        let from = (*acked as usize).min(data.len());
        let to = (from + chunk).min(data.len());
        *sent = from as u64;
        *at = now;
        let msg = Message::SnapshotChunk {
            epoch,
            zxid: *zxid,
            offset: from as u64,
            total: data.len() as u64,
            data: data[from..to].to_vec(),
        };
        send(out, follower, msg);
    }

    /// Leader: `from` holds the first `received` bytes of our snapshot at `zxid` (all of
    /// them: installed and on disk).
    pub(super) fn on_snapshot_ack(
        &mut self,
        from: NodeId,
        epoch: u64,
        zxid: Zxid,
        received: u64,
        out: &mut Vec<Output>,
    ) {
        let (now, patience) = (self.now, self.timing.election_timeout_ms / 2);
        let Role::Leading(l) = &mut self.role else {
            return;
        };
        if l.epoch != epoch {
            return;
        }
        let Some(p) = l.followers.get_mut(&from) else {
            return;
        };
        p.last_heard = now;
        let SyncState::Snapshot {
            zxid: sending,
            data,
            acked,
            sent,
            at,
        } = &mut p.sync
        else {
            return;
        };
        if *sending != zxid {
            return; // an answer about a transfer we have since restarted
        }
        if received >= data.len() as u64 {
            // Installed: its log is ours up to the snapshot. The DIFF follows (or a newer
            // snapshot, if we compacted past this one meanwhile).
            p.acked = p.acked.max(zxid);
            self.start_sync(&from, zxid, out);
        } else if received == *sent && now.saturating_sub(*at) < patience {
            // The piece at `received` is on its way already: this answer is a duplicate or
            // came late. Sending it again for every such answer let duplicated messages
            // multiply without end (simulation seed 751: 50,000 pieces in one millisecond);
            // a piece that is lost is sent again by `resend_stalled_syncs`.
        } else {
            *acked = received;
            self.send_snapshot_piece(&from, out);
        }
    }

    /// Follower: a piece of our leader's snapshot. Pieces are taken in order only (a piece
    /// that does not follow what we hold is answered with how much we hold, so the leader
    /// resends from there); the last one installs the snapshot.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn on_snapshot_chunk(
        &mut self,
        from: NodeId,
        epoch: u64,
        zxid: Zxid,
        offset: u64,
        total: u64,
        data: Vec<u8>,
        out: &mut Vec<Output>,
    ) {
        if !self.take_sync_from(&from, epoch, out) {
            return;
        }
        let now = self.now;
        if self.log.snapshot().is_some_and(|s| s.zxid == zxid) && self.log.start() == zxid {
            // Installed already (our ack was lost): say so again.
            send(out, &from, snapshot_ack(epoch, zxid, total));
            return;
        }
        if self.log.committed() >= zxid || self.log.position_after(zxid).is_some() {
            // We hold that state already (a DIFF piece reached us after the leader gave up
            // on it): describe our log instead, so that the leader DIFFs from where we are.
            if let Role::Following(f) = &mut self.role {
                f.receiving = None;
            }
            self.request_sync(out);
            return;
        }
        let Role::Following(f) = &mut self.role else {
            return;
        };
        let incoming = match f.receiving.take() {
            Some(r) if r.zxid == zxid && r.data.len() as u64 == offset => Some(r),
            _ if offset == 0 => Some(IncomingSnapshot {
                zxid,
                total,
                data: Vec::with_capacity(total.min(64 << 20) as usize),
                at: now,
            }),
            other => {
                f.receiving = other;
                None
            }
        };
        let Some(mut incoming) = incoming else {
            let have = f
                .receiving
                .as_ref()
                .filter(|r| r.zxid == zxid)
                .map_or(0, |r| r.data.len() as u64);
            send(out, &from, snapshot_ack(epoch, zxid, have));
            return;
        };
        incoming.data.extend_from_slice(&data);
        incoming.at = now;
        let have = incoming.data.len() as u64;
        if have < incoming.total {
            f.receiving = Some(incoming);
            send(out, &from, snapshot_ack(epoch, zxid, have));
            return;
        }
        let snapshot = match Snapshot::decode(&incoming.data) {
            Ok(s) if s.zxid == zxid => s,
            Ok(s) => {
                tracing::error!(node = %self.id, leader = %from, expected = %zxid, found = %s.zxid, "snapshot from the leader is for another zxid; asking again");
                send(out, &from, snapshot_ack(epoch, zxid, 0));
                return;
            }
            Err(e) => {
                tracing::error!(node = %self.id, leader = %from, "snapshot from the leader is unreadable ({e}); asking again");
                send(out, &from, snapshot_ack(epoch, zxid, 0));
                return;
            }
        };
        self.install_snapshot(&from, epoch, snapshot, total, out);
    }

    /// Follower: replace our log with the leader's snapshot (every entry we hold is either
    /// in it or not in the leader's log), durably, then acknowledge it.
    fn install_snapshot(
        &mut self,
        from: &NodeId,
        epoch: u64,
        snapshot: Snapshot,
        total: u64,
        out: &mut Vec<Output>,
    ) {
        let zxid = snapshot.zxid;
        if self.log.committed() > zxid {
            // A correct leader's snapshot is at its commit point, which covers ours.
            tracing::error!(node = %self.id, %zxid, committed = %self.committed(), "snapshot is older than our commit point; refused");
            return;
        }
        self.log.install(&self.id, snapshot.clone());
        out.push(Output::Persist(StorageOp::SaveSnapshot {
            snapshot: snapshot.clone(),
            log_start: zxid,
        }));
        out.push(Output::Persist(StorageOp::TruncateAfter(zxid)));
        out.push(Output::Persist(StorageOp::SetCommitted(zxid)));
        out.push(Output::Restore(snapshot));
        // A leader syncing us counts us as a member.
        self.removed = false;
        let now = self.now;
        if let Role::Following(f) = &mut self.role {
            f.synced = true;
            f.last_contact = now;
        }
        send(out, from, snapshot_ack(epoch, zxid, total));
    }

    /// Follower: a snapshot is arriving and its last piece came recently: do not ask for a
    /// fresh sync (that would restart the transfer).
    pub(super) fn awaiting_snapshot(&self) -> bool {
        let patience = self.timing.election_timeout_ms / 2;
        matches!(&self.role, Role::Following(f)
            if f.receiving.as_ref().is_some_and(|r| self.now.saturating_sub(r.at) < patience))
    }
}

fn snapshot_ack(epoch: u64, zxid: Zxid, received: u64) -> Message {
    Message::SnapshotAck {
        epoch,
        zxid,
        received,
    }
}
