//! Process signals. SIGTERM and SIGINT stop the proxy: the first starts the drain, a second during
//! the drain ends the process at once. SIGHUP, SIGUSR1 and SIGUSR2 are logged and change nothing:
//! their default action would kill the process mid-call, and a configuration reload does not
//! exist. Handlers are installed before anything binds, so none of these kills a starting proxy.

use std::fmt;

use tracing::{info, warn};

/// A signal that stops the proxy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    Terminate,
    Interrupt,
}

impl fmt::Display for Stop {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Stop::Terminate => "SIGTERM",
            Stop::Interrupt => "SIGINT",
        })
    }
}

/// The process's signal handlers, from [`Signals::install`] until dropped.
pub struct Signals {
    #[cfg(unix)]
    unix: UnixSignals,
}

#[cfg(unix)]
struct UnixSignals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
    hup: tokio::signal::unix::Signal,
    usr1: tokio::signal::unix::Signal,
    usr2: tokio::signal::unix::Signal,
}

impl Signals {
    /// Installs the handlers; needs a Tokio runtime.
    pub fn install() -> std::io::Result<Signals> {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{signal, SignalKind};
            Ok(Signals {
                unix: UnixSignals {
                    term: signal(SignalKind::terminate())?,
                    int: signal(SignalKind::interrupt())?,
                    hup: signal(SignalKind::hangup())?,
                    usr1: signal(SignalKind::user_defined1())?,
                    usr2: signal(SignalKind::user_defined2())?,
                },
            })
        }
        #[cfg(not(unix))]
        {
            Ok(Signals {})
        }
    }

    /// Resolves at the next SIGTERM or SIGINT, logging (and otherwise ignoring) SIGHUP, SIGUSR1 and
    /// SIGUSR2 meanwhile. Signals that arrived since the last call count (Tokio keeps them).
    pub async fn stop(&mut self) -> Stop {
        #[cfg(unix)]
        {
            let s = &mut self.unix;
            loop {
                // A handler whose stream has ended (the runtime is shutting down) is left out.
                tokio::select! {
                    Some(()) = s.term.recv() => return Stop::Terminate,
                    Some(()) = s.int.recv() => return Stop::Interrupt,
                    Some(()) = s.hup.recv() => warn!(
                        "SIGHUP received: configuration reload is not supported; nothing changed \
                         (restart the process to apply a new configuration)"
                    ),
                    Some(()) = s.usr1.recv() => info!("SIGUSR1 received: ignored (no use is defined)"),
                    Some(()) = s.usr2.recv() => info!("SIGUSR2 received: ignored (no use is defined)"),
                    else => std::future::pending::<()>().await,
                }
            }
        }
        #[cfg(not(unix))]
        {
            if tokio::signal::ctrl_c().await.is_err() {
                std::future::pending::<()>().await;
            }
            Stop::Interrupt
        }
    }
}
