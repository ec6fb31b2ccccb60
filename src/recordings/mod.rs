//! Recordings: the model, its store (all SQL for the table) and its HTTP handlers.

pub mod api;
pub mod model;
pub mod reads;
pub mod review;
pub mod seed;
pub mod store;

pub use model::{NewRecording, Recording, RecordingStatus};
pub use reads::{ReadError, Reads};
pub use store::{ListQuery, Page, RecordingStore, StoreError};
