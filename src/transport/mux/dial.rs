//! The dialing end of a mux link: one task per session slot dials the peer, runs the session until
//! it ends, and redials with the shared [`Backoff`].

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::{spawn_session, Role, SessionSet};
use crate::transport::backoff::Backoff;
use crate::transport::connect::Connector;
use crate::transport::BoxIo;

/// A session that lived this long is redialled at once when it ends; a shorter one backs off like a
/// failed dial (a peer that accepts and drops at once is not hammered).
const HEALTHY_AFTER: Duration = Duration::from_secs(1);

/// Keeps one session of the link up until `stop`: its sessions join `sessions`, their inbound
/// streams go to `inbound`.
pub(crate) async fn run(
    connector: Connector,
    sessions: Arc<SessionSet>,
    inbound: mpsc::Sender<BoxIo>,
    mut backoff: Backoff,
    stop: CancellationToken,
) {
    loop {
        let dialed = tokio::select! {
            _ = stop.cancelled() => return,
            dialed = connector.connect() => dialed,
        };
        match dialed {
            Ok(io) => {
                info!(address = %connector.address(), "mux session up");
                let session = spawn_session(io, Role::Client, inbound.clone(), stop.clone());
                sessions.add(session.clone());
                let since = tokio::time::Instant::now();
                session.closed().await;
                if stop.is_cancelled() {
                    return;
                }
                warn!(address = %connector.address(), "mux session lost; redialling");
                if since.elapsed() >= HEALTHY_AFTER {
                    backoff.reset();
                    continue;
                }
            }
            Err(err) => warn!(error = %err, retry_in = ?backoff.current(), "mux dial failed"),
        }
        let delay = backoff.next_delay();
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(delay) => {}
        }
    }
}
