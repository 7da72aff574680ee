//! `rawrxd proxy`, the transparent hot-patching reverse proxy, in the order a request travels
//! it:
//!
//! * [`server`] accepts connections (capped), serves HTTP/1.1 and h2c, drains on shutdown;
//! * [`route`] runs the [`crate::edge::guard`] checks first, then decides between rawrxd's own
//!   endpoints ([`admin`]: health, stats, metrics, the rules API, corrections search) and
//!   forwarding;
//! * [`upstream`] rewrites the request for the upstream and sends it over a pooled client;
//! * [`body`] wraps both bodies: the request body is size-limited, the response body is
//!   streamed through frame by frame (patched by [`crate::patch`] when rules apply) and closed
//!   with an in-band error if the upstream dies;
//! * [`detect`] runs `detect` rules on answers: holds an answer's start while a retry could
//!   still happen, sends the request again, or stops the answer (see [`crate::detect`]);
//! * [`error`] maps every request-path failure to one HTTP status;
//! * [`state`] is what every connection shares: config, upstream client, the live rule
//!   snapshot, counters, the audit sender, the rule manager's handle.
//!
//! May use: `live`, `detect`, `audit`, `patch`, `store`, `rules`, `config`, `edge`, `telemetry`.
//! Used by: `app` (and the integration tests). `admin` lives here, not beside it: it is served
//! by this router and speaks this module's state and errors.

pub mod admin;
pub mod body;
pub mod detect;
pub mod error;
pub mod route;
pub mod server;
pub mod state;
pub mod upstream;

pub use server::{run, Finished};
pub use state::ProxyState;
