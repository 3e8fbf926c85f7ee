//! Requests to a running Driftwarden that become ledger records:
//! exemptions granted or revoked, enforcement resumed.
//!
//! The correlator owns the ledger's chain, so the API hands it each request
//! with a reply channel and answers with the record written. With no
//! Driftwarden running, the command line writes the record itself.

use model::{Control, RecordBody};
use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;

/// A request that becomes a ledger record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "request", rename_all = "snake_case")]
pub enum Request {
    /// Record this exemption.
    Exempt(model::Exemption),
    /// End an exemption early.
    Revoke(model::Revocation),
    /// Resume enforcement.
    Resume {
        /// Who asked and why.
        reason: String,
    },
}

impl Request {
    /// The ledger record the request becomes.
    pub fn record(&self) -> RecordBody {
        match self {
            Request::Exempt(exemption) => RecordBody::Exemption(exemption.clone()),
            Request::Revoke(revocation) => RecordBody::Revocation(revocation.clone()),
            Request::Resume { reason } => RecordBody::Control(Control::Resumed {
                reason: reason.clone(),
            }),
        }
    }
}

/// A request on its way to the correlator, and where its record's
/// sequence number goes once written.
#[derive(Debug)]
pub struct Submitted {
    /// The request.
    pub request: Request,
    /// The record's sequence number, or why nothing was recorded.
    pub reply: oneshot::Sender<anyhow::Result<u64>>,
}
