//! Audio: recognising it ([`sniff`]) and storing it ([`storage`]).

pub mod sniff;
pub mod storage;
