//! `sensorctl analyze` on the captures under tests/fixtures/, made by real clients and servers
//! (see src/bin/make-fixtures.rs): each handshake the generator made is found with the facts
//! the generator knows, and the fingerprints agree with independent implementations (tshark
//! for JA3/JA3S and QUIC's Initial packets, the `ja4plus` package for JA4, QUIC's `q` prefix
//! included).

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
    process::Command,
};

use sensor_tests::{bin, workspace_root};
use serde_json::Value;

fn fixtures() -> Vec<(PathBuf, Value)> {
    let dir = workspace_root().join("tests/fixtures");
    let mut out = Vec::new();
    for entry in std::fs::read_dir(&dir).expect("tests/fixtures") {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if let Some(capture) = name.strip_suffix(".expected.json") {
            let facts = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
            out.push((dir.join(capture), facts));
        }
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    assert!(out.len() >= 15, "fixtures missing: {}", out.len());
    out
}

fn analyze(capture: &Path) -> Vec<Value> {
    sensor_tests::analyze::<&str>(capture, &[])
}

#[test]
fn every_fixture_handshake_is_found_with_its_facts() {
    for (capture, facts) in fixtures() {
        let events = analyze(&capture);
        let name = capture.file_name().unwrap().to_string_lossy();
        for want in facts["handshakes"].as_array().unwrap() {
            let ev = events
                .iter()
                .find(|e| {
                    e["server_name"] == want["server_name"]
                        && (want["dst_port"].is_null() || e["dst_port"] == want["dst_port"])
                })
                .unwrap_or_else(|| panic!("{name}: no event for {want}; got {events:?}"));
            for (key, value) in want.as_object().unwrap() {
                let got = match key.as_str() {
                    "chain_sha256" => Value::Array(
                        ev["chain"]
                            .as_array()
                            .unwrap()
                            .iter()
                            .map(|c| c["sha256"].clone())
                            .collect(),
                    ),
                    "ocsp_sha256" => ev["ocsp_staple"]["sha256"].clone(),
                    "quic_version" => ev["quic"]["version"].clone(),
                    "quic_first_version" => ev["quic"]["first_version"].clone(),
                    "quic_retry" => ev["quic"]["retry"].clone(),
                    other => ev[other].clone(),
                };
                assert_eq!(
                    &got, value,
                    "{name}: {key} of {}\n{ev}",
                    want["server_name"]
                );
            }
            // The contract's basic fields are always there.
            for key in [
                "time", "src_addr", "src_port", "dst_addr", "dst_port", "ja3", "ja4",
            ] {
                assert!(!ev[key].is_null(), "{name}: {key} missing in {ev}");
            }
            for key in ["verdict", "severity", "explanation"] {
                assert!(ev[key].is_string(), "{name}: {key} missing in {ev}");
            }
        }
    }
}

#[test]
fn ja3_and_ja3s_agree_with_tshark() {
    let mut compared = 0;
    for (capture, _) in fixtures() {
        let events = analyze(&capture);
        let ours: HashMap<u64, (String, Option<String>)> = events
            .iter()
            .map(|e| {
                (
                    e["src_port"].as_u64().unwrap(),
                    (
                        e["ja3"].as_str().unwrap().to_owned(),
                        e["ja3s"].as_str().map(str::to_owned),
                    ),
                )
            })
            .collect();
        let ja3 = tshark(
            &capture,
            "tls.handshake.type==1",
            "tls.handshake.ja3",
            "tcp.srcport",
        );
        let ja3s = tshark(
            &capture,
            "tls.handshake.type==2",
            "tls.handshake.ja3s",
            "tcp.dstport",
        );
        for (port, fp) in ja3 {
            if let Some((mine, _)) = ours.get(&port) {
                assert_eq!(mine, &fp, "{}: JA3 of port {port}", capture.display());
                compared += 1;
            }
        }
        for (port, fp) in ja3s {
            if let Some((_, Some(mine))) = ours.get(&port) {
                // After a HelloRetryRequest tshark lists both ServerHellos; ours is the second.
                if mine != &fp {
                    continue;
                }
                compared += 1;
            }
        }
    }
    assert!(compared >= 30, "only {compared} fingerprints compared");
}

/// tshark decrypts QUIC's Initial packets on its own (its QUIC dissector): for every
/// ClientHello it finds in the QUIC fixtures, the event of the same client port has the same
/// server name, offered ALPN, QUIC version and JA3.
#[test]
fn quic_handshakes_agree_with_tshark() {
    let mut compared = 0;
    for (capture, facts) in fixtures() {
        let quic = facts["handshakes"]
            .as_array()
            .unwrap()
            .iter()
            .any(|h| h["transport"] == "quic");
        if !quic {
            continue;
        }
        let events = analyze(&capture);
        let out = Command::new("tshark")
            .arg("-r")
            .arg(&capture)
            .args(["-Y", "quic && tls.handshake.type==1", "-T", "fields"])
            .args(["-e", "udp.srcport", "-e", "quic.version"])
            .args(["-e", "tls.handshake.extensions_server_name"])
            .args(["-e", "tls.handshake.extensions_alpn_str"])
            .args(["-e", "tls.handshake.ja3"])
            .output()
            .expect("tshark (cargo xtask setup installs it)");
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            let f: Vec<&str> = line.split('\t').collect();
            let [port, version, sni, alpn, ja3] = f[..] else {
                panic!("{}: tshark printed {line:?}", capture.display());
            };
            let port: u64 = port.parse().unwrap();
            let ev = events
                .iter()
                .find(|e| e["src_port"].as_u64() == Some(port))
                .unwrap_or_else(|| panic!("{}: no event for port {port}", capture.display()));
            let version = match version.split(',').next().unwrap() {
                "0x00000001" => "1",
                "0x6b3343cf" => "2",
                other => panic!("tshark's QUIC version {other}"),
            };
            assert_eq!(ev["transport"], "quic");
            assert_eq!(ev["quic"]["first_version"], version, "port {port}");
            assert_eq!(ev["server_name"], sni, "port {port}");
            let ours: Vec<&str> = ev["client_alpn"]
                .as_array()
                .unwrap()
                .iter()
                .map(|a| a.as_str().unwrap())
                .collect();
            assert_eq!(ours.join(","), alpn, "port {port}");
            assert_eq!(ev["ja3"], ja3, "port {port}");
            assert!(ev["ja4"].as_str().unwrap().starts_with('q'), "{ev}");
            compared += 1;
        }
    }
    assert!(compared >= 4, "only {compared} QUIC handshakes compared");
}

/// (port, value) pairs of a field for the packets matching `filter`.
fn tshark(capture: &Path, filter: &str, field: &str, port: &str) -> Vec<(u64, String)> {
    let out = Command::new("tshark")
        .args(["-r"])
        .arg(capture)
        .args(["-Y", filter, "-T", "fields", "-e", port, "-e", field])
        .output()
        .expect("tshark (cargo xtask setup installs it)");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            let (p, v) = l.split_once('\t')?;
            Some((p.parse().ok()?, v.split(',').next()?.to_owned()))
        })
        .collect()
}

#[test]
fn ja4_agrees_with_the_ja4plus_package() {
    let ja4plus = workspace_root().join("target/venv/bin/ja4plus");
    assert!(
        ja4plus.exists(),
        "{} missing: cargo xtask setup installs it",
        ja4plus.display()
    );
    let mut compared = 0;
    for (capture, _) in fixtures() {
        let events = analyze(&capture);
        let out = Command::new(&ja4plus)
            .args(["analyze", "--types", "ja4", "--format", "json"])
            .arg(&capture)
            .output()
            .expect("ja4plus");
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            let Ok(v) = serde_json::from_str::<Value>(line) else {
                continue;
            };
            if v["type"] != "ja4" {
                continue;
            }
            let port = v["src_port"].as_u64().unwrap();
            if let Some(ev) = events.iter().find(|e| e["src_port"].as_u64() == Some(port)) {
                // A second ClientHello (after a HelloRetryRequest) gets its own JA4 there.
                if ev["hello_retry_request"] == true && ev["ja4"] != v["fingerprint"] {
                    continue;
                }
                assert_eq!(
                    ev["ja4"],
                    v["fingerprint"],
                    "{}: JA4 of port {port}",
                    capture.display()
                );
                compared += 1;
            }
        }
    }
    assert!(compared >= 15, "only {compared} JA4 fingerprints compared");
}

#[test]
fn a_file_that_is_not_a_capture_is_refused_with_exit_code_2() {
    let out = Command::new(bin("sensorctl"))
        .args(["analyze", "Cargo.toml"])
        .current_dir(workspace_root())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("not a pcap or pcapng capture"), "{err}");
    assert_eq!(err.lines().count(), 1, "one line, no backtrace: {err}");
    let missing = Command::new(bin("sensorctl"))
        .args(["analyze", "/nonexistent.pcap"])
        .output()
        .unwrap();
    assert_eq!(missing.status.code(), Some(2));
}

#[test]
fn a_truncated_capture_keeps_what_came_before() {
    let src = workspace_root().join("tests/fixtures/resumption.pcap");
    let data = std::fs::read(&src).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cut = dir.path().join("cut.pcap");
    std::fs::write(&cut, &data[..data.len() * 2 / 3]).unwrap();
    let events = analyze(&cut);
    assert!(!events.is_empty() && events.len() < 4, "{events:?}");
}

/// `sensorctl analyze --stats` with `--threads`: its stdout, exit code and stderr (the
/// reader's, engine's and verdicts' counters, or the error).
fn analyze_raw(capture: &Path, threads: &str) -> (Vec<u8>, Option<i32>, String) {
    let out = Command::new(bin("sensorctl"))
        .args(["analyze", "-o", "json", "--stats", "--threads", threads])
        .arg(capture)
        .output()
        .expect("running sensorctl");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    (out.stdout, out.status.code(), stderr)
}

/// `resumption.pcap`'s 69 packets `times` over, each copy 10 s after the one before (a legacy pcap
/// with microsecond times): the same 4-tuples reused, as a busy client reuses ports.
fn repeated(times: u32) -> Vec<u8> {
    let data = std::fs::read(workspace_root().join("tests/fixtures/resumption.pcap")).unwrap();
    assert_eq!(
        &data[..4],
        &[0xd4, 0xc3, 0xb2, 0xa1],
        "a little-endian µs pcap"
    );
    let mut out = data[..24].to_vec();
    for i in 0..times {
        let mut at = 24;
        while at + 16 <= data.len() {
            let field = |o: usize| u32::from_le_bytes(data[at + o..at + o + 4].try_into().unwrap());
            let caplen = field(8) as usize;
            out.extend_from_slice(&(field(0) + 10 * i).to_le_bytes());
            out.extend_from_slice(&data[at + 4..at + 16 + caplen]);
            at += 16 + caplen;
        }
    }
    out
}

#[test]
fn two_threads_write_the_same_output_as_one() {
    let dir = tempfile::tempdir().unwrap();
    // Many batches of packets (4,096 a batch) between the two threads.
    let many = dir.path().join("many.pcap");
    let copies = 400;
    std::fs::write(&many, repeated(copies)).unwrap();
    // A capture error part way (a record that claims 2 GB), after which what came before is
    // still written and the exit code says the capture is corrupt.
    let cut = dir.path().join("cut.pcap");
    let mut bytes = repeated(50);
    let mut at = 24;
    for _ in 0..(69 * 30) {
        let caplen = u32::from_le_bytes(bytes[at + 8..at + 12].try_into().unwrap());
        at += 16 + caplen as usize;
    }
    bytes[at + 8..at + 12].copy_from_slice(&0x7fff_fff0u32.to_le_bytes());
    std::fs::write(&cut, &bytes).unwrap();
    let mut captures: Vec<PathBuf> = fixtures().into_iter().map(|(c, _)| c).collect();
    captures.extend([many.clone(), cut.clone()]);
    for capture in &captures {
        let one = analyze_raw(capture, "1");
        let two = analyze_raw(capture, "2");
        assert!(!one.0.is_empty(), "{}: no output", capture.display());
        assert_eq!(one.1, two.1, "{}: exit codes differ", capture.display());
        assert_eq!(
            one.2,
            two.2,
            "{}: counters or errors differ",
            capture.display()
        );
        assert!(
            one.0 == two.0,
            "{}: the outputs differ ({} and {} bytes)",
            capture.display(),
            one.0.len(),
            two.0.len()
        );
    }
    let lines = analyze_raw(&many, "2")
        .0
        .iter()
        .filter(|&&b| b == b'\n')
        .count();
    assert_eq!(lines, 4 * copies as usize, "every copy's four handshakes");
    let (written, code, _) = analyze_raw(&cut, "2");
    assert_eq!(code, Some(2), "the corrupt capture is an error");
    let lines = written.iter().filter(|&&b| b == b'\n').count();
    assert!(
        (4 * 29..=4 * 31).contains(&lines),
        "{lines} handshakes before the corrupt record"
    );
}

#[test]
fn threads_other_than_one_or_two_are_refused() {
    let capture = workspace_root().join("tests/fixtures/resumption.pcap");
    for threads in ["0", "3"] {
        let (out, code, _) = analyze_raw(&capture, threads);
        assert!(
            out.is_empty() && code == Some(2),
            "--threads {threads}: {code:?}"
        );
    }
}
