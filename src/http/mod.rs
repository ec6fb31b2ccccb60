//! HTTP plumbing every domain shares: the body and path extractors, the
//! response schemas of errors, the Host/Origin guard, the edge middleware
//! (request ids, headers, logging) and the connection-level server. It knows
//! no domain: the application's state and router are in [`crate::app`].

pub mod conditional;
pub mod edge;
pub mod extract;
pub mod guard;
pub mod openapi;
pub mod outbound;
pub mod server;
