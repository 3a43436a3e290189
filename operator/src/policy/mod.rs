//! The operator's decisions, as plain functions of what it observed, one file per concern:
//! - [`members`]: the member list — each member's view from its pod and its node's answer,
//!   the pod problems (an image that cannot be pulled, a claim that cannot bind, …) and the
//!   notes of their Events;
//! - [`scale`]: the next scaling step and the `status.scaling` block, the valid sizes;
//! - [`restart`]: which member to restart, if any;
//! - [`conditions`]: the status conditions.

pub mod conditions;
pub mod members;
pub mod restart;
pub mod scale;
#[cfg(test)]
mod testing;

pub use conditions::{condition_values, is_true, to_conditions, ConditionValue, Observation};
pub use members::{pod_problem, problem_note, MemberView, UNSCHEDULABLE_GRACE};
pub use restart::{decide_restart, Restart};
pub use scale::{
    decide_scale, replicas_refusal, scaling_status, valid_size, ConfigMember, ScaleInput, ScaleStep,
};
