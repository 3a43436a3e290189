//! The error of a reconciliation.

/// Errors of a reconciliation.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("kube API error: {0}")]
    Kube(#[from] kube::Error),
    #[error("invalid GuessGame: {0}")]
    Invalid(String),
}

impl Error {
    /// A short label for the failures metric.
    pub fn metric_label(&self) -> String {
        match self {
            Error::Kube(kube::Error::Api(e)) => format!("api_{}", e.code),
            Error::Kube(_) => "kube".into(),
            Error::Invalid(_) => "invalid".into(),
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
