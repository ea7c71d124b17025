//! What carries MQTT bytes besides plain TCP: TLS and WebSocket. Pure I/O adapters that
//! know nothing of MQTT sessions; `server` accepts sockets and wraps them with these.

pub mod tls;
pub mod ws;

pub use tls::{Tls, TlsFiles};
