//! The relay's error type: failures of the relay as a whole (opening its store, serving its
//! listener). Problems with one client's input are never errors here; they are answered on
//! that client's connection.

use std::path::PathBuf;

/// Errors of [`crate::Relay::open`] and [`crate::Relay::serve`].
#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    /// The data directory could not be created.
    #[error("cannot create the relay data directory {path}")]
    CreateDir {
        /// The directory.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The LMDB store could not be opened.
    #[error("cannot open the LMDB event store in {path}")]
    OpenStore {
        /// The LMDB directory.
        path: PathBuf,
        /// Why.
        #[source]
        source: nostr_database::DatabaseError,
    },
    /// The listener has no local address (it is not bound).
    #[error("the listener has no local address")]
    ListenerAddress(#[source] std::io::Error),
    /// The HTTP server stopped with an I/O error.
    #[error("the relay's HTTP server failed on {addr}")]
    Serve {
        /// The address it was serving.
        addr: std::net::SocketAddr,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}
