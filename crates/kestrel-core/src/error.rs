//! The one error type of the engine. Every failure a user can cause (bad model, bad input, an op we
//! do not support) becomes an [`Error`] with a message that names what was wrong; nothing panics.

use std::fmt;

/// Errors raised while loading, preparing or running a model.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The model file itself is malformed (bad protobuf, inconsistent tensor sizes, ...).
    #[error("invalid model: {0}")]
    InvalidModel(String),
    /// An op or attribute value Kestrel does not implement; names the node, op type and opset.
    #[error("unsupported: node '{node}' (op {op_type}, opset {opset}): {msg}")]
    Unsupported {
        node: String,
        op_type: String,
        opset: i64,
        msg: String,
    },
    /// A node failed shape inference or evaluation; `source` says why.
    #[error("node '{node}' (op {op_type}): {msg}")]
    Node {
        node: String,
        op_type: String,
        msg: String,
    },
    /// A caller-supplied input is missing or has the wrong shape or dtype.
    #[error("input '{name}': {msg}")]
    Input { name: String, msg: String },
    /// Generic invalid argument or shape error raised inside an op; wrapped in [`Error::Node`] by
    /// the graph-level code that knows the node.
    #[error("{0}")]
    Invalid(String),
    /// A size read from a file or computed from shapes exceeds the allowed budget.
    #[error("size limit: {0}")]
    TooLarge(String),
    /// The accelerator failed: device lost, out of device memory, or an error the driver
    /// reported. The backend cannot be used until a new session is made; `Backend::Auto`
    /// sessions continue on the CPU.
    #[error("GPU fault: {0}")]
    Device(String),
    /// File-system error with the path that caused it.
    #[error("{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

/// Result alias used throughout Kestrel.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// Shorthand for [`Error::Invalid`].
    pub fn invalid(msg: impl fmt::Display) -> Self {
        Error::Invalid(msg.to_string())
    }

    /// Attaches node context to an op-level error (errors that already carry context are kept).
    pub fn at_node(self, node: &str, op_type: &str) -> Self {
        match self {
            Error::Invalid(msg) | Error::TooLarge(msg) => Error::Node {
                node: node.to_string(),
                op_type: op_type.to_string(),
                msg,
            },
            other => other,
        }
    }
}

/// Returns `Err(Error::Invalid(..))` from the enclosing function when the condition is false.
#[macro_export]
macro_rules! ensure {
    ($cond:expr, $($fmt:tt)+) => {
        if !$cond {
            return Err($crate::Error::Invalid(format!($($fmt)+)));
        }
    };
}

/// Returns `Err(Error::Invalid(..))` from the enclosing function.
#[macro_export]
macro_rules! bail {
    ($($fmt:tt)+) => {
        return Err($crate::Error::Invalid(format!($($fmt)+)))
    };
}
