//! The accepting end of a mux link: each TCP connection is handshaken (TLS, ALPN, allowed names)
//! on a task of its own, so a slow peer never holds up the accept loop, and becomes a server-role
//! session of the link's [`SessionSet`].

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::info;

use super::{spawn_session, Role, SessionSet};
use crate::telemetry::warn_limited;
use crate::transport::listen::Listener;
use crate::transport::BoxIo;

/// How long a peer may take over its TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Pause after a failed accept (out of file descriptors, say), so the loop does not spin.
const ACCEPT_RETRY: Duration = Duration::from_millis(50);

/// Accepts peer sessions on `listener` until `stop`; their inbound streams go to `inbound`.
pub(crate) async fn run(
    listener: Listener,
    sessions: Arc<SessionSet>,
    inbound: mpsc::Sender<BoxIo>,
    stop: CancellationToken,
) {
    let handshaker = listener.handshaker();
    loop {
        let (tcp, peer) = tokio::select! {
            _ = stop.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(err) => {
                    warn_limited!(error = %err, "mux accept failed");
                    tokio::time::sleep(ACCEPT_RETRY).await;
                    continue;
                }
            },
        };
        let (handshaker, sessions, inbound, stop) = (
            handshaker.clone(),
            Arc::clone(&sessions),
            inbound.clone(),
            stop.clone(),
        );
        tokio::spawn(async move {
            match handshaker.handshake(tcp, HANDSHAKE_TIMEOUT).await {
                Ok(io) => {
                    info!(%peer, "mux session accepted");
                    sessions.add(spawn_session(io, Role::Server, inbound, stop));
                }
                Err(err) => warn_limited!(%peer, error = %err, "mux peer refused"),
            }
        });
    }
}
