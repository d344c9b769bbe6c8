//! Empty on purpose. The kernel programs are the `sensor` binary (src/main.rs), built for the BPF
//! target by sensord's build script. This library target only exists so that sensord can
//! name this crate as a build dependency, which makes cargo rebuild it when the programs change.
#![no_std]
