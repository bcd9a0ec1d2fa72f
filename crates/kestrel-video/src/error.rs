//! Errors of frame sources: each names the source it came from.

/// A frame source error.
#[derive(Debug, thiserror::Error)]
pub enum VideoError {
    /// The source could not be opened (missing, not a video, unsupported codec, bad size).
    #[error("cannot open '{name}': {msg}")]
    Open { name: String, msg: String },
    /// The stream broke during decoding beyond what can be skipped.
    #[error("decoding '{name}' failed at frame {frame}: {msg}")]
    Decode {
        name: String,
        frame: u64,
        msg: String,
    },
    #[error("reading '{name}': {source}")]
    Io {
        name: String,
        #[source]
        source: std::io::Error,
    },
}

pub type Result<T> = std::result::Result<T, VideoError>;
