//! SPDY/3.1 (<https://www.chromium.org/spdy/spdy-protocol/spdy-protocol-draft3-1/>).

pub mod conn;
pub mod dictionary;
pub mod frame;
mod headers;
