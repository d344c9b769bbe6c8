//! A real tonic client of sensord's API, over its Unix socket or TCP.

use std::path::Path;

use sensor_proto::v1::sensor_client::SensorClient;
use tonic::transport::Channel;

/// Connect to sensord's Unix socket.
pub async fn unix(path: &Path) -> SensorClient<Channel> {
    let channel = sensor_proto::unix::channel(path, None)
        .await
        .expect("connecting to sensord's socket");
    SensorClient::new(channel)
}

/// Reload, asking again while sensord says it reloaded less than a second ago (it allows
/// one a second).
pub async fn reload(
    api: &mut SensorClient<Channel>,
) -> Result<sensor_proto::v1::ReloadResponse, tonic::Status> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        match api.reload(sensor_proto::v1::ReloadRequest {}).await {
            Err(s)
                if s.code() == tonic::Code::ResourceExhausted
                    && std::time::Instant::now() < deadline =>
            {
                tokio::time::sleep(std::time::Duration::from_millis(200)).await;
            }
            other => return other.map(tonic::Response::into_inner),
        }
    }
}

/// A single-threaded runtime for a test.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime")
}
