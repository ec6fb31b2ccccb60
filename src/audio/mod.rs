//! Audio: recognising it ([`sniff`]), receiving it ([`receiving`], [`partial`]),
//! and keeping it ([`objects`]: on disk or in a bucket), all through
//! [`storage::AudioStore`].

pub mod decode;
pub mod objects;
pub mod partial;
pub mod receiving;
pub mod sniff;
pub mod storage;

use crate::files::FsError;

/// Why audio was not stored.
#[derive(Debug, thiserror::Error)]
pub enum AudioError {
    /// More bytes than allowed.
    #[error("the audio is larger than the limit of {limit} bytes")]
    TooLarge {
        /// The limit, in bytes.
        limit: u64,
    },
    /// The bytes are not a supported audio container.
    #[error(
        "the file is not a supported audio format (WebM/Matroska, Ogg, WAV, MP4/M4A, MP3 or FLAC)"
    )]
    NotAudio,
    /// No bytes at all.
    #[error("the audio file is empty")]
    Empty,
    /// The client's stream broke off.
    #[error("the upload was interrupted: {0}")]
    Interrupted(String),
    /// The server's disk failed.
    #[error(transparent)]
    Fs(#[from] FsError),
    /// The object store failed (unreachable, refused).
    #[error("audio store: {0}")]
    Remote(#[from] object_store::Error),
}

/// Why the audio store could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// The local directory.
    #[error(transparent)]
    Fs(#[from] FsError),
    /// `PWA_AUDIO_STORE` (its URL or the `AWS_*` settings).
    #[error("PWA_AUDIO_STORE: {0}")]
    Remote(#[from] object_store::Error),
}
