//! The JSON contract does not drift: `sensorctl analyze -o json` on every fixture, under two
//! trust configurations, gives the lines recorded in `tests/fixtures/golden/` byte for byte,
//! followed only by fields added since (new fields go at the end of an object: the event's, or
//! a nested one such as a certificate's). Values and the order of the recorded fields must
//! not change.
//!
//! The recorded lines were written by the version that introduced this test, before the event
//! became a typed structure; they are the contract's reference and are not rewritten when a
//! field is added. `UPDATE_GOLDEN=1 cargo test -p sensor-tests --test golden` rewrites them,
//! for a change that alters existing fields on purpose (and says so in the README).

use std::{path::Path, process::Command};

use sensor_tests::{bin, workspace_root};

/// A JSON value that keeps the order of object keys, as written.
#[derive(Debug, PartialEq)]
enum Json {
    Scalar(String),
    Array(Vec<Json>),
    Object(Vec<(String, Json)>),
}

impl<'de> serde::Deserialize<'de> for Json {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Json;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("JSON")
            }
            fn visit_bool<E>(self, v: bool) -> Result<Json, E> {
                Ok(Json::Scalar(v.to_string()))
            }
            fn visit_i64<E>(self, v: i64) -> Result<Json, E> {
                Ok(Json::Scalar(v.to_string()))
            }
            fn visit_u64<E>(self, v: u64) -> Result<Json, E> {
                Ok(Json::Scalar(v.to_string()))
            }
            fn visit_f64<E>(self, v: f64) -> Result<Json, E> {
                Ok(Json::Scalar(v.to_string()))
            }
            fn visit_str<E>(self, v: &str) -> Result<Json, E> {
                Ok(Json::Scalar(format!("{v:?}")))
            }
            fn visit_unit<E>(self) -> Result<Json, E> {
                Ok(Json::Scalar("null".into()))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut a: A) -> Result<Json, A::Error> {
                let mut out = Vec::new();
                while let Some(v) = a.next_element()? {
                    out.push(v);
                }
                Ok(Json::Array(out))
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, mut a: A) -> Result<Json, A::Error> {
                let mut out = Vec::new();
                while let Some(kv) = a.next_entry()? {
                    out.push(kv);
                }
                Ok(Json::Object(out))
            }
        }
        d.deserialize_any(V)
    }
}

fn ordered(line: &str) -> Json {
    serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"))
}

/// Whether `now` is `recorded` with fields added only at the ends of objects.
fn extends(recorded: &Json, now: &Json) -> bool {
    match (recorded, now) {
        (Json::Object(r), Json::Object(n)) => {
            r.len() <= n.len()
                && r.iter()
                    .zip(n)
                    .all(|((rk, rv), (nk, nv))| rk == nk && extends(rv, nv))
        }
        (Json::Array(r), Json::Array(n)) => {
            r.len() == n.len() && r.iter().zip(n).all(|(r, n)| extends(r, n))
        }
        (r, n) => r == n,
    }
}

#[test]
fn extending_allows_new_fields_at_the_ends_of_objects_only() {
    let r = ordered(r#"{"a":1,"c":[{"x":"1"}]}"#);
    assert!(extends(
        &r,
        &ordered(r#"{"a":1,"c":[{"x":"1","y":2}],"d":3}"#)
    ));
    assert!(
        !extends(&r, &ordered(r#"{"a":2,"c":[{"x":"1"}]}"#)),
        "a value"
    );
    assert!(
        !extends(&r, &ordered(r#"{"c":[{"x":"1"}],"a":1}"#)),
        "the order"
    );
    assert!(
        !extends(&r, &ordered(r#"{"a":1,"b":0,"c":[{"x":"1"}]}"#)),
        "in the middle"
    );
    assert!(
        !extends(&r, &ordered(r#"{"a":1,"c":[{"y":2,"x":"1"}]}"#)),
        "nested order"
    );
    assert!(!extends(&r, &ordered(r#"{"a":1,"c":[]}"#)), "an element");
    assert!(
        !extends(&r, &ordered(r#"{"a":"1","c":[{"x":"1"}]}"#)),
        "a type"
    );
}

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
                let same = g == w || extends(&ordered(w), &ordered(g));
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
