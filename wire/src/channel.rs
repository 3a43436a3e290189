//! gRPC channels to members, and what a failed call says about its request.

use std::time::Duration;

use tonic::transport::{Channel, Endpoint};

/// Builds a lazily connecting gRPC channel to `address` (`host:port`).
pub fn channel(address: &str, timeout: Duration) -> Result<Channel, tonic::transport::Error> {
    Ok(Endpoint::from_shared(format!("http://{address}"))?
        .connect_timeout(Duration::from_millis(500))
        .timeout(timeout)
        .tcp_nodelay(true)
        .http2_keep_alive_interval(Duration::from_secs(5))
        .keep_alive_while_idle(true)
        .connect_lazy())
}

/// Like [`channel`], but for long-lived streams: no per-call timeout (it would cut the
/// stream), and HTTP/2 pings find a peer that vanished without closing the connection.
pub fn stream_channel(address: &str) -> Result<Channel, tonic::transport::Error> {
    Ok(Endpoint::from_shared(format!("http://{address}"))?
        .connect_timeout(Duration::from_millis(500))
        .tcp_nodelay(true)
        .http2_keep_alive_interval(Duration::from_secs(2))
        .keep_alive_timeout(Duration::from_secs(3))
        .keep_alive_while_idle(true)
        .connect_lazy())
}

/// True when a call failed before the request could have reached the server (connection
/// refused or not established): only then may a non-idempotent request be sent elsewhere.
pub fn never_sent(status: &tonic::Status) -> bool {
    if status.code() != tonic::Code::Unavailable {
        return false;
    }
    let mut text = status.message().to_string();
    let mut source: Option<&dyn std::error::Error> = std::error::Error::source(status);
    while let Some(e) = source {
        text.push_str(&e.to_string());
        source = e.source();
    }
    text.contains("connect") || text.contains("refused")
}
