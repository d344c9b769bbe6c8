//! Rebuild the kernel programs when the bpf-linker binary changes; cargo cannot see it otherwise.
fn main() {
    match which::which("bpf-linker") {
        Ok(path) => println!("cargo::rerun-if-changed={}", path.display()),
        Err(_) => {
            eprintln!("error: bpf-linker is not installed. Run `cargo xtask setup`.");
            std::process::exit(1);
        }
    }
}
