//! The JSON contract does not drift: `sensorctl analyze -o json` on every fixture, under two
//! trust configurations, gives the lines recorded in `tests/fixtures/golden/` byte for byte,
//! followed only by fields added since (new fields go at the end of the object).
//!
//! The recorded lines were written by the version that introduced this test, before the event
//! became a typed structure; they are the contract's reference and are not rewritten when a
//! field is added. `UPDATE_GOLDEN=1 cargo test -p sensor-tests --test golden` rewrites them,
//! for a change that alters existing fields on purpose (and says so in the README).

use std::{path::Path, process::Command};

use sensor_tests::{bin, workspace_root};

/// (name, flags): the fixtures' root as the public Web PKI, then as this host's own store.
const TRUST: [(&str, [&str; 4]); 2] = [
    (
        "public",
        [
            "--public-roots",
            "fixture-root.pem",
            "--host-roots",
            "bigchain-root.pem",
        ],
    ),
    (
        "host",
        [
            "--public-roots",
            "bigchain-root.pem",
            "--host-roots",
            "fixture-root.pem",
        ],
    ),
];

fn captures(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .expect("tests/fixtures")
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.ends_with(".pcap") || n.ends_with(".pcapng"))
        .collect();
    names.sort();
    names
}

#[test]
fn analyze_json_is_byte_for_byte_the_recorded_contract() {
    let fixtures = workspace_root().join("tests/fixtures");
    let golden = fixtures.join("golden");
    let update = std::env::var_os("UPDATE_GOLDEN").is_some();
    if update {
        std::fs::create_dir_all(&golden).unwrap();
    }
    let mut compared = 0;
    for capture in captures(&fixtures) {
        for (trust, flags) in TRUST {
            // Relative paths: the explanation names the public store as it was given.
            let out = Command::new(bin("sensorctl"))
                .current_dir(&fixtures)
                .args(["analyze", "-o", "json", &capture])
                .args(flags)
                .output()
                .expect("running sensorctl");
            assert!(
                out.status.success(),
                "{capture}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            let path = golden.join(format!("{capture}.{trust}.jsonl"));
            if update {
                std::fs::write(&path, &out.stdout).unwrap();
                continue;
            }
            let want = std::fs::read_to_string(&path)
                .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            let got = String::from_utf8_lossy(&out.stdout);
            for (i, (w, g)) in want.lines().zip(got.lines()).enumerate() {
                let recorded = w.strip_suffix('}').unwrap_or(w);
                let same = g == w
                    || g.strip_prefix(recorded)
                        .is_some_and(|added| added.starts_with(",\"") && added.ends_with('}'));
                assert!(
                    same,
                    "{capture} ({trust}), line {}: the recorded fields changed\nrecorded: {w}\n\
                     now:      {g}",
                    i + 1
                );
            }
            assert_eq!(
                got.lines().count(),
                want.lines().count(),
                "{capture} ({trust}): number of events"
            );
            compared += want.lines().count();
        }
    }
    assert!(update || compared >= 40, "only {compared} events compared");
}
