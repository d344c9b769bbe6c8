//! A gRPC channel over a Unix socket: sensord's API socket, or a container runtime's CRI
//! socket. The channel connects again by itself when a connection drops.

use std::path::Path;

use hyper_util::rt::TokioIo;
use tonic::transport::{Channel, Endpoint, Uri};

/// Connect to the gRPC server at `socket`; `timeout`, when given, bounds the connection and
/// every call.
pub async fn channel(
    socket: &Path,
    timeout: Option<std::time::Duration>,
) -> Result<Channel, tonic::transport::Error> {
    let socket = socket.to_path_buf();
    // The authority is not used: every connection goes to the socket.
    let mut endpoint = Endpoint::from_static("http://unix.socket");
    if let Some(t) = timeout {
        endpoint = endpoint.connect_timeout(t).timeout(t);
    }
    endpoint
        .connect_with_connector(tower::service_fn(move |_: Uri| {
            let socket = socket.clone();
            async move {
                let stream = tokio::net::UnixStream::connect(socket).await?;
                Ok::<_, std::io::Error>(TokioIo::new(stream))
            }
        }))
        .await
}
