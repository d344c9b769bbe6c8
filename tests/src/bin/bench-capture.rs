//! bench-capture: a large capture for `cargo xtask bench analyze`.
//!
//! It records two real handshakes on loopback with tcpdump (openssl s_server and s_client): TLS
//! 1.2 with a 3-certificate RSA chain, and TLS 1.3. Then it writes a pcap of `--handshakes`
//! connections, alternating the two, each copied from its template with its own client address
//! and port and later timestamps. The bytes of every TLS record are the real ones.

use std::{
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::Duration,
};

use anyhow::{Context as _, bail};
use clap::Parser;
use pcap_parser::{PcapBlockOwned, PcapError, create_reader};
use sensor_tests::{
    capture::Capture,
    free_port,
    pki::{self, Key},
    require_root, wait_listening,
};

#[derive(Parser)]
struct Args {
    /// Handshakes in the output.
    #[arg(long, default_value_t = 100_000)]
    handshakes: u32,
    /// Output pcap.
    #[arg(long)]
    out: PathBuf,
}

/// One packet of a template: when (relative), and the Ethernet frame.
struct Frame {
    ts_us: u64,
    data: Vec<u8>,
}

fn read_pcap(path: &Path) -> anyhow::Result<Vec<Frame>> {
    let file = std::fs::File::open(path)?;
    let mut reader = create_reader(1 << 20, file).map_err(|e| anyhow::anyhow!("{e:?}"))?;
    let mut frames = Vec::new();
    let mut t0 = None;
    loop {
        match reader.next() {
            Ok((off, block)) => {
                if let PcapBlockOwned::Legacy(b) = block {
                    let ts = u64::from(b.ts_sec) * 1_000_000 + u64::from(b.ts_usec);
                    let t0 = *t0.get_or_insert(ts);
                    frames.push(Frame {
                        ts_us: ts - t0,
                        data: b.data.to_vec(),
                    });
                }
                reader.consume(off);
            }
            Err(PcapError::Eof) => break,
            Err(PcapError::Incomplete(_)) => {
                reader.refill().map_err(|e| anyhow::anyhow!("{e:?}"))?
            }
            Err(e) => bail!("{e:?}"),
        }
    }
    Ok(frames)
}

/// Record one handshake with s_client `flags` against a server with `chain`.
fn record(
    dir: &Path,
    name: &str,
    leaf: &pki::Issued,
    chain: &Path,
    flags: &[&str],
) -> anyhow::Result<Vec<Frame>> {
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let _srv = sensor_tests::spawn_s_server(
        Command::new("openssl"),
        &listen,
        &leaf.cert,
        &leaf.key,
        Some(chain),
        &[],
    );
    wait_listening(&listen, Duration::from_secs(10));
    let path = dir.join(format!("{name}.pcap"));
    let cap = Capture::tcpdump("lo", &path, &format!("tcp port {port}"), &[]);
    let mut client = Command::new("openssl")
        .args([
            "s_client",
            "-connect",
            &format!("127.0.0.1:{port}"),
            "-servername",
            "bench.test",
        ])
        .args(flags)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?;
    if let Some(mut stdin) = client.stdin.take() {
        use std::io::Write as _;
        stdin.write_all(b"GET / HTTP/1.0\r\n\r\n")?;
    }
    let status = client.wait()?;
    let _ = cap.stop();
    if !status.success() {
        bail!("s_client {flags:?} failed");
    }
    let frames = read_pcap(&path)?;
    // The connect check of wait_listening is in the capture too: keep the last connection only.
    let last_syn = frames
        .iter()
        .rposition(|f| f.data.len() > 47 && f.data[47] & 0x12 == 0x02)
        .context("no SYN in the template")?;
    let t0 = frames[last_syn].ts_us;
    Ok(frames
        .into_iter()
        .skip(last_syn)
        .map(|f| Frame {
            ts_us: f.ts_us - t0,
            data: f.data,
        })
        .collect())
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    require_root();
    let dir = tempfile::tempdir()?;
    let d = dir.path();
    let root = pki::root(d, "Bench Root", Key::Rsa(2048));
    let inter = pki::issue(d, &root, "Bench Intermediate", Key::Rsa(2048), true, &[]);
    let leaf = pki::issue(
        d,
        &inter,
        "bench.test",
        Key::Rsa(2048),
        false,
        &["bench.test"],
    );
    let chain = pki::bundle(d, "chain.pem", &[&inter, &root]);
    let templates = [
        record(d, "tls12", &leaf, &chain, &["-tls1_2"])?,
        record(d, "tls13", &leaf, &chain, &["-tls1_3"])?,
    ];

    let mut out = Vec::with_capacity(args.handshakes as usize * 8 * 1024);
    out.extend_from_slice(&0xa1b2c3d4u32.to_le_bytes());
    out.extend_from_slice(&2u16.to_le_bytes());
    out.extend_from_slice(&4u16.to_le_bytes());
    out.extend_from_slice(&[0; 8]);
    out.extend_from_slice(&262144u32.to_le_bytes());
    out.extend_from_slice(&1u32.to_le_bytes()); // Ethernet
    // Connections start now, inside their certificates' validity (issued moments ago), as in
    // a real capture. (A fixed date in the past made every chain "not yet valid", which the
    // verdict cache rightly refuses to keep: the benchmark measured a capture no host makes.)
    let base_us = u64::try_from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)?
            .as_micros(),
    )?;
    // Each connection starts after the one before has ended, so that timestamps only grow.
    let spacing = templates
        .iter()
        .map(|t| t.last().map_or(0, |f| f.ts_us))
        .max()
        .unwrap_or(0)
        + 100;
    for i in 0..args.handshakes {
        let t = &templates[i as usize % 2];
        // Client 10.(i/28000 + 1).x.y with an ephemeral port, as Linux picks them (ports below
        // that range have dissectors in tshark that would claim some of the flows); the
        // server stays 127.0.0.1 and its port.
        let client_ip = [
            10,
            (i / 28_000) as u8 + 1,
            ((i % 28_000) / 250) as u8,
            (i % 250) as u8 + 1,
        ];
        let client_port = (32_768 + i % 28_000) as u16;
        let template_client_port = u16::from_be_bytes([t[0].data[34], t[0].data[35]]);
        let start = base_us + u64::from(i) * spacing;
        for f in t {
            let mut frame = f.data.clone();
            if frame.len() < 54 || frame[12..14] != [0x08, 0x00] {
                continue;
            }
            let sport = u16::from_be_bytes([frame[34], frame[35]]);
            if sport == template_client_port {
                frame[26..30].copy_from_slice(&client_ip);
                frame[34..36].copy_from_slice(&client_port.to_be_bytes());
            } else {
                frame[30..34].copy_from_slice(&client_ip);
                frame[36..38].copy_from_slice(&client_port.to_be_bytes());
            }
            let ts = start + f.ts_us;
            out.extend_from_slice(&((ts / 1_000_000) as u32).to_le_bytes());
            out.extend_from_slice(&((ts % 1_000_000) as u32).to_le_bytes());
            out.extend_from_slice(&(frame.len() as u32).to_le_bytes());
            out.extend_from_slice(&(frame.len() as u32).to_le_bytes());
            out.extend_from_slice(&frame);
        }
    }
    std::fs::write(&args.out, &out).with_context(|| format!("writing {}", args.out.display()))?;
    eprintln!(
        "bench-capture: {} handshakes, {} MB, templates of {} and {} packets",
        args.handshakes,
        out.len() >> 20,
        templates[0].len(),
        templates[1].len()
    );
    Ok(())
}
