//! Deterministic, in-memory simulation of the protocol core.
//!
//! Every node is an [`Engine`](guessgame_core::Engine) plus a
//! [`MemoryStore`](node::MemoryStore) (its durable image). One seeded
//! xorshift generator decides everything else: message delay (so reordering), loss,
//! duplication, partitions (including a leader stuck in a minority), crashes (also in the
//! middle of carrying out a batch), process pauses, and client traffic. Virtual time moves
//! in 5 ms steps; engines only learn about it through `Event::Tick`, each incarnation with
//! its own clock starting at 0 (as `runtime.rs` does with `Instant::now()`).
//!
//! Outputs are carried out like the real runtime does: the batch's `Persist` ops go to the
//! store first (atomically), then sends, applies and replies in order. A crash keeps the
//! store and drops the engine; messages already on the wire may still arrive.
//!
//! Invariants are checked after every step of every node (see
//! [`Sim::check_node`](sim::Sim::check_node)):
//! 1. at most one node ever leads a given epoch;
//! 2. and 3. every node's committed log is a prefix of one global committed sequence, which
//!    only ever grows (nothing committed is lost or reordered, across crashes too);
//! 4. equal `applied` zxid ⇒ equal game state; `Apply` outputs come in zxid order and
//!    rebuild exactly `engine.game()`;
//! 5. an `Ok` write/guess reply names an entry that is committed (checked when the reply is
//!    produced and again at the end), and an `Ok` read index is never older than any write
//!    or read that completed before the read was issued (linearizability).
//!
//! 6. the global committed sequence obeys the game rules (a guess only for the open round
//!    and once per client, every result the closest guess, rounds closed before the next).
//! 7. membership: consecutive committed configurations differ by at most one voter, and an
//!    `Ok` membership change names a committed configuration entry equal to its answer.
//!
//! Nodes past `initial` start outside the configuration (as `guessgame-node --join` does)
//! and only take part once a membership change adds them.
//!
//! The engine's durable image must also always match its in-memory state (nothing changes
//! without a `Persist`), a refused request writes nothing, every request to a node that
//! stays up is answered, and the engine never logs an error (its own invariant alarms).
//!
//! Replay: every failure message names its seed. `SIM_SEED=<n>` runs only that seed (in
//! every randomized test), `SIM_SEEDS=<count>` sets how many seeds the campaign runs
//! (default 300; `SIM_SEED_START` is the first, `SIM_THREADS` the parallelism),
//! `SIM_TRACE=1` prints every event, e.g.
//! `SIM_SEED=17 SIM_TRACE=1 cargo test -p guessgame-core --test simulation campaign -- --nocapture`.
//!
//! Files (one test target, `--test simulation`; tests are named `<file>::<test>`, and a
//! filter matches any part of that, so `... --test simulation campaign` still selects both
//! campaigns):
//! - the harness:
//!   - `rng.rs`: the seeded generator, `SIM_SEED` and the seed lists;
//!   - `sim.rs`: [`Sim`](sim::Sim) itself, timing constants, stepping virtual time,
//!     delivering events and carrying out outputs, views (leader, convergence), the
//!     engine-error counter and run statistics;
//!   - `node.rs`: nodes, their durable images and lifecycle (start, crash, restart, pause,
//!     clock freeze and drift);
//!   - `network.rs`: faults, packets in flight, partitions, cut links, sending;
//!   - `clients.rs`: requests and the checks made on each reply as it arrives;
//!   - `checks.rs`: the invariants above, the game rules, and the final heal-and-check;
//!   - `chaos.rs`: random faults, traffic and membership changes step by step;
//! - the tests:
//!   - `campaign.rs`: the randomized campaigns (`campaign`, `membership_campaign`);
//!   - `scenarios.rs`: deterministic protocol scenarios, and the harness checking itself;
//!   - `regressions.rs`: one scenario per engine bug the campaign found;
//!   - `membership.rs`: growing and shrinking the ensemble, learners, removed nodes;
//!   - `handover.rs`: a stopping leader handing over, early elections on connection loss;
//!   - `forwarding.rs`: moves sent to followers, forwarded to the leader in the protocol;
//!   - `snapshots.rs`: snapshots sent in pieces, compaction, restarts from a snapshot;
//!   - `bridge.rs`: non-transitive partitions (a leader cut from all followers but one),
//!     nodes that see only a minority, failed candidates and healthy leaders.

mod chaos;
mod checks;
mod clients;
mod network;
mod node;
mod rng;
mod sim;

mod bridge;
mod campaign;
mod forwarding;
mod handover;
mod membership;
mod regressions;
mod scenarios;
mod snapshots;
