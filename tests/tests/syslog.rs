//! The syslog export against a real rsyslog (Debian's, started by the test on loopback): RFC
//! 5424 over TLS (RFC 5425, rsyslog's OpenSSL driver, the receiver's certificate verified) with
//! the JSON contract, and over plain TCP with CEF. Two sensord runs with different machine ids
//! (a private mount namespace binds a machine id of its own over /etc/machine-id) send to one
//! rsyslog; the receiver stops and starts again in between, and so does sensord; every event
//! arrives exactly once, named with its host.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use sensor_tests::{
    Daemon, LocalServer, Proc, free_port,
    pki::{self, Issued, Key},
    unique_name, wait_listening,
};

/// One message as rsyslog parsed it.
#[derive(Debug)]
struct Received {
    pri: u32,
    hostname: String,
    app: String,
    procid: String,
    msgid: String,
    sd: String,
    msg: String,
}

/// rsyslogd in the foreground with a configuration of its own, writing what it parsed to
/// `out`, one tab-separated line per message.
struct Rsyslog {
    proc: Option<Proc>,
    dir: PathBuf,
    port: u16,
    tls: Option<(Issued, Issued)>,
}

impl Rsyslog {
    fn start(dir: &Path, port: u16, tls: Option<(Issued, Issued)>) -> Self {
        let mut r = Self {
            proc: None,
            dir: dir.to_path_buf(),
            port,
            tls,
        };
        r.restart();
        r
    }

    fn out(&self) -> PathBuf {
        self.dir.join("received.log")
    }

    fn restart(&mut self) {
        let work = self.dir.join("work");
        std::fs::create_dir_all(&work).unwrap();
        let driver = match &self.tls {
            Some((ca, server)) => format!(
                "global(DefaultNetstreamDriverCAFile=\"{}\" DefaultNetstreamDriverCertFile=\"{}\" \
                 DefaultNetstreamDriverKeyFile=\"{}\")\n\
                 module(load=\"imtcp\" StreamDriver.Name=\"ossl\" StreamDriver.Mode=\"1\" \
                 StreamDriver.AuthMode=\"anon\")\n",
                ca.cert.display(),
                server.cert.display(),
                server.key.display()
            ),
            None => "module(load=\"imtcp\")\n".to_owned(),
        };
        let conf = self.dir.join("rsyslog.conf");
        std::fs::write(
            &conf,
            format!(
                "global(workDirectory=\"{work}\" maxMessageSize=\"256k\")\n{driver}\
                 input(type=\"imtcp\" address=\"127.0.0.1\" port=\"{port}\")\n\
                 template(name=\"fields\" type=\"list\") {{\n\
                 property(name=\"pri\") constant(value=\"\\t\")\n\
                 property(name=\"hostname\") constant(value=\"\\t\")\n\
                 property(name=\"app-name\") constant(value=\"\\t\")\n\
                 property(name=\"procid\") constant(value=\"\\t\")\n\
                 property(name=\"msgid\") constant(value=\"\\t\")\n\
                 property(name=\"structured-data\") constant(value=\"\\t\")\n\
                 property(name=\"msg\" droplastlf=\"on\") constant(value=\"\\n\")\n}}\n\
                 action(type=\"omfile\" file=\"{out}\" template=\"fields\" flushOnTXEnd=\"on\" \
                 asyncWriting=\"off\")\n",
                work = work.display(),
                port = self.port,
                out = self.out().display(),
            ),
        )
        .unwrap();
        let check = Command::new("rsyslogd")
            .args(["-N1", "-f"])
            .arg(&conf)
            .output()
            .expect("rsyslogd (cargo xtask setup installs Debian's rsyslog)");
        assert!(
            check.status.success(),
            "rsyslog refuses its configuration: {}",
            String::from_utf8_lossy(&check.stderr)
        );
        self.proc = Some(Proc::spawn(
            "rsyslogd",
            Command::new("rsyslogd")
                .args(["-n", "-f"])
                .arg(&conf)
                .arg("-i")
                .arg(self.dir.join("rsyslogd.pid"))
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null()),
        ));
        wait_listening(&format!("127.0.0.1:{}", self.port), Duration::from_secs(20));
    }

    fn stop(&mut self) {
        if let Some(mut p) = self.proc.take() {
            assert!(p.stop().is_some(), "rsyslogd did not stop");
        }
    }

    fn received(&self) -> Vec<Received> {
        let text = std::fs::read_to_string(self.out()).unwrap_or_default();
        text.lines()
            .filter_map(|l| {
                let f: Vec<&str> = l.splitn(7, '\t').collect();
                let [pri, hostname, app, procid, msgid, sd, msg] = f[..] else {
                    return None;
                };
                Some(Received {
                    pri: pri.parse().ok()?,
                    hostname: hostname.into(),
                    app: app.into(),
                    procid: procid.into(),
                    msgid: msgid.into(),
                    sd: sd.into(),
                    msg: msg.trim_start_matches('\u{feff}').into(),
                })
            })
            .collect()
    }

    /// Wait until a message containing `needle` arrived.
    fn wait_for(&self, needle: &str) {
        let deadline = Instant::now() + Duration::from_secs(45);
        while Instant::now() < deadline {
            if self.received().iter().any(|r| r.msg.contains(needle)) {
                return;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        panic!(
            "{needle} never reached rsyslog; it has:\n{}",
            std::fs::read_to_string(self.out()).unwrap_or_default()
        );
    }
}

impl Drop for Rsyslog {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Wait until sensord's syslog cursor is at `seq` (the journal's number, which the message
/// carries as its sequenceId).
fn wait_settled(daemon: &Daemon, seq: u64) {
    let cursor = daemon.state_dir.path().join("cursors/syslog.cursor");
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        let at = std::fs::read_to_string(&cursor)
            .ok()
            .and_then(|t| t.trim().parse::<u64>().ok());
        if at.is_some_and(|at| at >= seq) {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("{}: never reached {seq}", cursor.display());
}

fn config(dir: &Path, name: &str, body: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, body).unwrap();
    path
}

const HOST_A: &str = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
const HOST_B: &str = "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";

#[test]
fn over_tls_every_event_arrives_once_with_its_host_across_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let ca = pki::root(dir.path(), "Syslog Test CA", Key::P256);
    let server = pki::issue(
        dir.path(),
        &ca,
        "syslog.test",
        Key::P256,
        false,
        &["syslog.test"],
    );
    let port = free_port();
    let mut rsyslog = Rsyslog::start(dir.path(), port, Some((ca.clone(), server)));
    let cfg = config(
        dir.path(),
        "sensord.toml",
        &format!(
            "[export.syslog]\naddress = \"127.0.0.1:{port}\"\ntls = true\nca = \"{}\"\n\
             server_name = \"syslog.test\"\nformat = \"json\"\n\
             [export.syslog.filter]\nsni = [\"syslog-*\"]\n\
             [host]\nlabels = {{ site = \"lab\" }}\n",
            ca.cert.display()
        ),
    );
    let tls = LocalServer::start();
    let mut names: BTreeMap<String, &str> = BTreeMap::new();
    let handshake = |host: &'static str, names: &mut BTreeMap<String, &str>| {
        let name = unique_name("syslog");
        tls.handshake(&name);
        names.insert(name.clone(), host);
        name
    };

    // Host A: one event, then the receiver goes away, two events while it is gone, and it
    // comes back: they arrive.
    let mut a = Daemon::start_as_host(HOST_A, dir.path(), &cfg);
    let first = handshake(HOST_A, &mut names);
    rsyslog.wait_for(&first);
    let first_msg = rsyslog
        .received()
        .into_iter()
        .find(|r| r.msg.contains(&first))
        .unwrap();
    assert_eq!(first_msg.app, "sensord", "{first_msg:?}");
    assert_eq!(first_msg.procid, a.proc.pid().to_string(), "{first_msg:?}");
    assert_eq!(first_msg.msgid, "untrusted", "{first_msg:?}");
    assert!(
        first_msg.sd.contains("[meta sequenceId=\""),
        "{first_msg:?}"
    );
    assert!(
        first_msg.sd.contains("[origin software=\"sensord\""),
        "{first_msg:?}"
    );
    let json: serde_json::Value = serde_json::from_str(&first_msg.msg).unwrap();
    assert_eq!(json["host"]["id"], HOST_A, "{json}");
    assert_eq!(json["host"]["labels"]["site"], "lab", "{json}");
    let severity = match json["severity"].as_str().unwrap() {
        "critical" => 2,
        "high" => 3,
        "medium" => 4,
        "low" => 5,
        _ => 6,
    };
    assert_eq!(first_msg.pri, 16 * 8 + severity, "local0: {first_msg:?}");
    assert_eq!(
        first_msg.hostname,
        json["host"]["name"].as_str().unwrap(),
        "{first_msg:?}"
    );

    // Delivery is at least once: an event written in the last moments before the receiver
    // went away is sent again. Once the exporter has settled it (its cursor moved past it), a
    // receiver's restart never repeats it.
    let seq: u64 = first_msg
        .sd
        .split("sequenceId=\"")
        .nth(1)
        .and_then(|t| t.split('"').next())
        .and_then(|n| n.parse().ok())
        .expect("a sequenceId");
    wait_settled(&a, seq);
    rsyslog.stop();
    let during = [handshake(HOST_A, &mut names), handshake(HOST_A, &mut names)];
    // Let the exporter notice and retry at least once.
    std::thread::sleep(Duration::from_secs(2));
    rsyslog.restart();
    for name in &during {
        rsyslog.wait_for(name);
    }

    // sensord stops and starts again with the same state: it resumes after what it sent.
    assert!(a.interrupt().is_some_and(|s| s.success()));
    let state_a = std::mem::replace(&mut a.state_dir, tempfile::tempdir().unwrap());
    drop(a);
    let mut a = Daemon::start_as_host_in(HOST_A, dir.path(), &cfg, state_a);
    let after_restart = handshake(HOST_A, &mut names);
    rsyslog.wait_for(&after_restart);
    assert!(a.interrupt().is_some_and(|s| s.success()));
    drop(a);

    // Host B, to the same receiver.
    let mut b = Daemon::start_as_host(HOST_B, dir.path(), &cfg);
    let from_b = handshake(HOST_B, &mut names);
    rsyslog.wait_for(&from_b);
    assert!(b.interrupt().is_some_and(|s| s.success()));

    // Exactly once each, each from its host.
    let received = rsyslog.received();
    for (name, host) in &names {
        let got: Vec<&Received> = received
            .iter()
            .filter(|r| r.msg.contains(name.as_str()))
            .collect();
        assert_eq!(got.len(), 1, "{name}: {got:#?}");
        let json: serde_json::Value = serde_json::from_str(&got[0].msg).unwrap();
        assert_eq!(json["host"]["id"], *host, "{name}: {json}");
        assert_eq!(json["server_name"], name.as_str());
    }
    assert_eq!(
        received.len(),
        names.len(),
        "only the filtered events: {received:#?}"
    );
}

#[test]
fn cef_over_tcp_is_what_a_siem_parses() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let rsyslog = Rsyslog::start(dir.path(), port, None);
    let cfg = config(
        dir.path(),
        "sensord.toml",
        &format!(
            "[export.syslog]\naddress = \"127.0.0.1:{port}\"\nformat = \"cef\"\nfacility = \"authpriv\"\n\
             [export.syslog.filter]\nsni = [\"cef-*\"]\n"
        ),
    );
    let mut daemon = Daemon::start(&["--config", cfg.to_str().unwrap()]);
    let tls = LocalServer::start();
    let name = unique_name("cef");
    tls.handshake(&name);
    rsyslog.wait_for(&name);
    let got = rsyslog.received();
    assert_eq!(got.len(), 1, "{got:#?}");
    let r = &got[0];
    assert_eq!(r.app, "sensord");
    assert!(r.pri / 8 == 10, "authpriv: {r:?}");
    let cef = r.msg.trim_start();
    let header: Vec<&str> = cef.splitn(8, '|').collect();
    assert_eq!(
        &header[..5],
        [
            "CEF:0",
            "sensor",
            "sensord",
            env!("CARGO_PKG_VERSION"),
            "untrusted"
        ],
        "{cef}"
    );
    assert!(header[6].parse::<u8>().is_ok_and(|s| s <= 10), "{cef}");
    let ext = header[7];
    assert!(ext.contains(&format!("dhost={name} ")), "{cef}");
    assert!(ext.contains("sproc=openssl "), "{cef}");
    assert!(ext.contains("cat=untrusted "), "{cef}");
    assert!(ext.contains("dst=127.0.0.1 "), "{cef}");
    assert!(daemon.interrupt().is_some_and(|s| s.success()));
}
