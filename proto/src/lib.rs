//! The sensor's gRPC API, package `sensor.v1`.
#![allow(clippy::all, clippy::pedantic)]

pub mod authority;

pub mod v1 {
    tonic::include_proto!("sensor.v1");

    /// The encoded file descriptor set, for server reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("sensor_descriptor");
}
