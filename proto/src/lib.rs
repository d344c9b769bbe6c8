//! The sensor's gRPC API, package `sensor.v1`; and the part of the Kubernetes Container
//! Runtime Interface it speaks as a client, package `runtime.v1` ([`cri`]).
#![allow(clippy::all, clippy::pedantic)]

pub mod authority;
pub mod unix;

pub mod v1 {
    tonic::include_proto!("sensor.v1");

    /// The encoded file descriptor set, for server reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("sensor_descriptor");
}

/// The Kubernetes Container Runtime Interface (`runtime.v1.RuntimeService`), the part the sensor
/// uses: proto/cri/runtime/v1/runtime.proto.
pub mod cri {
    tonic::include_proto!("runtime.v1");
}
